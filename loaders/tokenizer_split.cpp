// loaders/tokenizer_split.cpp: the split regexes of byte-level tokenizers (GPT-2, Llama 3, Qwen2),
// hand-written as Oniguruma matches them: leftmost-first alternation, greedy with backtracking.
#include <algorithm>

#include "loaders/tokenizer_internal.h"
#include "loaders/unicode.h"

namespace hamu::tok {
namespace {

const char kGpt2[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char kLlama3[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kDigitTriples[] = "[0-9][0-9][0-9]";
const char kO200k[] =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)"
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)"
    R"(\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kTekken[] =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|)"
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|)"
    R"(\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kQwen2[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

enum Kind : uint8_t { kLetter, kNumber, kSpace, kOther };

bool is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

// (?i:x) for a lowercase ASCII letter x of the contractions: Unicode case folding adds only the
// uppercase letter, and U+017F (long s), which folds to 's'.
bool folds_to(uint32_t c, char x) { return c == uint32_t(x) || c == uint32_t(x - 32) || (x == 's' && c == 0x17F); }

// Length (in code points) of the contraction at i: 's 't 're 've 'm 'll 'd, or 0.
size_t contraction(const std::vector<uint32_t>& cps, size_t i, bool ignore_case) {
  const size_t n = cps.size();
  if (cps[i] != '\'' || i + 1 >= n) return 0;
  auto is = [&](size_t k, char x) { return k < n && (ignore_case ? folds_to(cps[k], x) : cps[k] == uint32_t(x)); };
  if (is(i + 1, 's') || is(i + 1, 't') || is(i + 1, 'm') || is(i + 1, 'd')) return 2;
  if ((is(i + 1, 'r') && is(i + 2, 'e')) || (is(i + 1, 'v') && is(i + 2, 'e')) || (is(i + 1, 'l') && is(i + 2, 'l'))) return 3;
  return 0;
}

}  // namespace

bool known_split_regex(std::string_view pattern, SplitRegex* kind) {
  if (pattern == kGpt2) *kind = SplitRegex::gpt2;
  else if (pattern == kLlama3) *kind = SplitRegex::llama3;
  else if (pattern == kQwen2) *kind = SplitRegex::qwen2;
  else if (pattern == kDigitTriples) *kind = SplitRegex::digit_triples;
  else if (pattern == kO200k) *kind = SplitRegex::o200k;
  else if (pattern == kTekken) *kind = SplitRegex::tekken;
  else return false;
  return true;
}

// Each position tries the alternatives in pattern order; the first that matches wins, and the next
// search starts where it ended.
void regex_split(SplitRegex pattern, std::string_view s, std::vector<std::pair<size_t, size_t>>& out) {
  if (pattern == SplitRegex::digit_triples) {
    auto digit = [&](size_t k) { return s[k] >= '0' && s[k] <= '9'; };
    for (size_t i = 0; i + 3 <= s.size();) {
      if (digit(i) && digit(i + 1) && digit(i + 2)) {
        out.emplace_back(i, i + 3);
        i += 3;
      } else {
        ++i;
      }
    }
    return;
  }
  // Code points with their byte offsets (offs has one extra entry, s.size()) and classes. Per-thread
  // scratch: this runs once per piece of text, and fresh vectors dominated its cost.
  thread_local std::vector<uint32_t> cps;
  thread_local std::vector<size_t> offs;
  thread_local std::vector<uint8_t> kind;
  cps.clear();
  offs.clear();
  kind.clear();
  for (size_t i = 0; i < s.size();) {
    int len = 1;
    const int32_t cp = unicode::decode_utf8(s, i, &len);
    const uint32_t c = cp < 0 ? 0xFFFD : uint32_t(cp);
    cps.push_back(c);
    offs.push_back(i);
    kind.push_back(unicode::is_letter(c) ? kLetter : unicode::is_number(c) ? kNumber : unicode::is_space(c) ? kSpace : kOther);
    i += len;
  }
  offs.push_back(s.size());
  const size_t n = cps.size();
  auto run = [&](size_t j, uint8_t k) {
    while (j < n && kind[j] == k) ++j;
    return j;
  };
  // \s+(?!\S) backs off one character when the run is followed by a non-space; a run of one
  // followed by a non-space falls through to \s+ and is matched whole.
  auto space_run = [&](size_t i) {
    const size_t k = run(i, kSpace);
    return (k < n && k - i >= 2) ? k - 1 : k;
  };
  const bool gpt2 = pattern == SplitRegex::gpt2;
  const bool cased = pattern == SplitRegex::o200k || pattern == SplitRegex::tekken;
  const bool contractions = pattern != SplitRegex::tekken;
  const size_t max_digits = pattern == SplitRegex::llama3 || pattern == SplitRegex::o200k ? 3 : gpt2 ? size_t(-1) : 1;
  // GPT-4o's classes: U = [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}], W = [\p{Ll}\p{Lm}\p{Lo}\p{M}] (marks are kOther).
  auto is_u = [&](size_t k) { return k < n && unicode::is_upper_or_mark(cps[k]); };
  auto is_w = [&](size_t k) { return k < n && unicode::is_lower_or_mark(cps[k]); };
  // After a cased word: the optional (?i:'s|...) contraction.
  auto with_contraction = [&](size_t e) { return contractions && e < n ? e + contraction(cps, e, true) : e; };
  // U*W+ from j: U* takes the longest run, then backs off until W+ can start.
  auto upper_then_lower = [&](size_t j) -> size_t {
    size_t k = j;
    while (is_u(k)) ++k;
    if (is_w(k)) {
      while (is_w(k)) ++k;
      return with_contraction(k);
    }
    while (k > j && !is_w(k - 1)) --k;  // the last W inside the U run (the ones after it are not W)
    return k > j ? with_contraction(k) : 0;
  };
  // U+W*: both greedy, nothing after them can fail.
  auto upper_plus = [&](size_t j) -> size_t {
    size_t k = j;
    while (is_u(k)) ++k;
    if (k == j) return 0;
    while (is_w(k)) ++k;
    return with_contraction(k);
  };
  size_t i = 0;
  while (i < n) {
    size_t end = cased ? i : i + contraction(cps, i, !gpt2);
    if (cased) {
      // [^\r\n\p{L}\p{N}]? before either word form: tried with the character first, then without.
      const bool prefix = kind[i] != kLetter && kind[i] != kNumber && !is_crlf(cps[i]);
      for (int form = 0; form < 2 && end == i; ++form) {
        auto word = [&](size_t j) { return std::max(i, form == 0 ? upper_then_lower(j) : upper_plus(j)); };
        if (prefix && i + 1 < n) end = word(i + 1);
        if (end == i) end = word(i);
      }
    }
    if (end == i && gpt2) {
      // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': an optional space, then a run of one class.
      const size_t j = cps[i] == ' ' && i + 1 < n ? i + 1 : i;
      if (kind[j] != kSpace) end = run(j, kind[j]);
    } else if (end == i) {
      // [^\r\n\p{L}\p{N}]?\p{L}+: one optional character of any other class, then letters.
      if (kind[i] == kLetter) end = run(i, kLetter);
      else if (kind[i] != kNumber && !is_crlf(cps[i]) && i + 1 < n && kind[i + 1] == kLetter) end = run(i + 1, kLetter);
      // \p{N}{1,3} (or \p{N})
      if (end == i && kind[i] == kNumber) end = std::min(run(i, kNumber), i + max_digits);
      // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
      if (end == i) {
        const size_t j = cps[i] == ' ' && i + 1 < n && kind[i + 1] == kOther ? i + 1 : i;
        if (kind[j] == kOther) {
          end = run(j, kOther);
          while (end < n && (is_crlf(cps[end]) || (cased && cps[end] == '/'))) ++end;
        }
      }
      // \s*[\r\n]+: the whitespace run backs off to its last line break.
      if (end == i && kind[i] == kSpace) {
        for (size_t k = run(i, kSpace); k > i; --k)
          if (is_crlf(cps[k - 1])) {
            end = k;
            break;
          }
      }
    }
    if (end == i) end = space_run(i);
    out.emplace_back(offs[i], offs[end]);
    i = end;
  }
}

}  // namespace hamu::tok
