// loaders/unicode.cpp: UTF-8 decoding/encoding, lossy repair, and code-point class lookups.
#include "loaders/unicode.h"

#include <algorithm>
#include <iterator>
#include <unordered_map>
#include <vector>

#include "loaders/unicode_tables.h"

namespace hamu::unicode {
namespace {

using unicode_tables::CodeRange;

template <size_t N>
bool in_table(const CodeRange (&table)[N], uint32_t cp) {
  const CodeRange* end = table + N;
  const CodeRange* it = std::upper_bound(table, end, cp, [](uint32_t c, const CodeRange& r) { return c < r.lo; });
  return it != table && cp <= std::prev(it)->hi;
}

// The valid range of the second byte of a sequence with this lead byte (Unicode Table 3-7), and the
// sequence length; length 0 marks a byte that cannot start a sequence.
struct LeadInfo {
  int len;
  uint8_t lo, hi;
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Length of the valid prefix of the sequence at s[i] (1..4); `complete` tells whether it is a whole
// code point.
int valid_prefix(std::string_view s, size_t i, bool* complete) {
  const LeadInfo info = lead_info(uint8_t(s[i]));
  *complete = info.len == 1;
  if (info.len <= 1) return 1;
  int got = 1;
  for (int k = 1; k < info.len; ++k) {
    if (i + k >= s.size()) return got;
    const uint8_t c = uint8_t(s[i + k]);
    const uint8_t lo = k == 1 ? info.lo : 0x80, hi = k == 1 ? info.hi : 0xBF;
    if (c < lo || c > hi) return got;
    ++got;
  }
  *complete = true;
  return got;
}

}  // namespace

int32_t decode_utf8(std::string_view s, size_t i, int* len) {
  bool complete = false;
  const int n = valid_prefix(s, i, &complete);
  if (!complete) {
    *len = 1;
    return -1;
  }
  *len = n;
  const uint8_t b0 = uint8_t(s[i]);
  if (n == 1) return b0;
  uint32_t cp = b0 & (0x7F >> n);
  for (int k = 1; k < n; ++k) cp = cp << 6 | (uint8_t(s[i + k]) & 0x3F);
  return int32_t(cp);
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | cp >> 6);
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | cp >> 12);
    out += char(0x80 | (cp >> 6 & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | cp >> 18);
    out += char(0x80 | (cp >> 12 & 0x3F));
    out += char(0x80 | (cp >> 6 & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

size_t invalid_utf8_at(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (uint8_t(s[i]) < 0x80) {
      ++i;
      continue;
    }
    bool complete = false;
    const int n = valid_prefix(s, i, &complete);
    if (!complete) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    bool complete = false;
    const int n = valid_prefix(s, i, &complete);
    if (complete) {
      out.append(s.substr(i, n));
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD for the maximal invalid subpart
    }
    i += n;
  }
  return out;
}

bool is_letter(uint32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_table(unicode_tables::kLetter, cp);
}

bool is_number(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_table(unicode_tables::kNumber, cp);
}

bool is_upper_or_mark(uint32_t cp) {
  if (cp < 0x80) return cp >= 'A' && cp <= 'Z';
  return in_table(unicode_tables::kUpperOrMark, cp);
}

bool is_lower_or_mark(uint32_t cp) {
  if (cp < 0x80) return cp >= 'a' && cp <= 'z';
  return in_table(unicode_tables::kLowerOrMark, cp);
}

bool is_word(uint32_t cp) {
  if (cp < 0x80) return is_letter(cp) || is_number(cp) || cp == '_';
  return in_table(unicode_tables::kWord, cp);
}

bool is_numeric(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_table(unicode_tables::kNumeric, cp);
}

bool is_punctuation(uint32_t cp) {
  if (cp < 0x80) return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) || (cp >= 0x7B && cp <= 0x7E);
  return in_table(unicode_tables::kPunctuation, cp);
}

bool is_space(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// ------------------------------------------------------------------------------------------------
// Normalization (NFD, NFC) as the unicode-normalization crate the library uses runs it.

namespace {

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

struct NormTables {
  std::unordered_map<uint32_t, std::pair<uint32_t, uint32_t>> decomposition;  // cp -> (offset, length) in kDecomposition
  std::unordered_map<uint64_t, uint32_t> composition;                          // (first, second) -> composed
  NormTables() {
    const size_t n = std::size(unicode_tables::kDecomposition);
    for (size_t i = 0; i < n; i += 2 + unicode_tables::kDecomposition[i + 1])
      decomposition.emplace(unicode_tables::kDecomposition[i], std::make_pair(uint32_t(i + 2), unicode_tables::kDecomposition[i + 1]));
    for (const auto& c : unicode_tables::kComposition) composition.emplace(uint64_t(c.first) << 32 | c.second, c.composed);
  }
};

const NormTables& norm_tables() {
  static const NormTables tables;
  return tables;
}

uint8_t combining_class(uint32_t cp) {
  const auto* table = unicode_tables::kCombiningClass;
  const auto* end = table + std::size(unicode_tables::kCombiningClass);
  const auto* it = std::upper_bound(table, end, cp, [](uint32_t c, const unicode_tables::ClassRange& r) { return c < r.lo; });
  return it != table && cp <= std::prev(it)->hi ? std::prev(it)->ccc : 0;
}

// Full canonical decomposition, then the canonical ordering (a stable sort of each run of marks by
// class).
std::vector<uint32_t> decompose(std::string_view s) {
  const NormTables& t = norm_tables();
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    int len = 1;
    const int32_t cp = decode_utf8(s, i, &len);
    i += size_t(len);
    const uint32_t c = cp < 0 ? 0xFFFD : uint32_t(cp);
    if (c >= kSBase && c < kSBase + kSCount) {
      const uint32_t k = c - kSBase;
      out.push_back(kLBase + k / kNCount);
      out.push_back(kVBase + k % kNCount / kTCount);
      if (k % kTCount) out.push_back(kTBase + k % kTCount);
      continue;
    }
    const auto it = t.decomposition.find(c);
    if (it == t.decomposition.end()) {
      out.push_back(c);
    } else {
      out.insert(out.end(), unicode_tables::kDecomposition + it->second.first,
                 unicode_tables::kDecomposition + it->second.first + it->second.second);
    }
  }
  for (size_t i = 0; i < out.size();) {
    if (!combining_class(out[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < out.size() && combining_class(out[j])) ++j;
    std::stable_sort(out.begin() + std::ptrdiff_t(i), out.begin() + std::ptrdiff_t(j),
                     [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  return out;
}

int64_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto& m = norm_tables().composition;
  const auto it = m.find(uint64_t(a) << 32 | b);
  return it == m.end() ? int64_t(-1) : int64_t(it->second);
}

std::string encode(const std::vector<uint32_t>& cps) {
  std::string out;
  out.reserve(cps.size() * 2);
  for (const uint32_t c : cps) append_utf8(out, c);
  return out;
}

}  // namespace

std::string nfd(std::string_view s) { return encode(decompose(s)); }

std::string nfc(std::string_view s) {
  const std::vector<uint32_t> d = decompose(s);
  std::vector<uint32_t> out;
  out.reserve(d.size());
  // The last starter in `out` and the class of the character after it that came last (-1: none
  // yet, so the next character is adjacent to the starter). A character composes with the starter
  // unless a character of the same or a higher class stands between them.
  int64_t starter = -1;
  int last_class = -1;
  for (const uint32_t c : d) {
    const int cls = combining_class(c);
    if (starter >= 0 && (last_class < 0 || last_class < cls)) {
      const int64_t composed = compose_pair(out[size_t(starter)], c);
      if (composed >= 0) {
        out[size_t(starter)] = uint32_t(composed);
        continue;
      }
    }
    if (cls == 0) {
      starter = int64_t(out.size());
      last_class = -1;
    } else {
      last_class = cls;
    }
    out.push_back(c);
  }
  return encode(out);
}

const char* tables_version() { return unicode_tables::kTokenizersVersion; }

}  // namespace hamu::unicode
