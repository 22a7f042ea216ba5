// loaders/tokenizer.cpp: tokenizer.json loading and validation, and the encode/decode pipeline
// (added-token split, normalizer, pre-tokenizer, BPE, post-processor; decoders) as `tokenizers` runs it.
#include "loaders/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "engine/error.h"
#include "engine/json.h"
#include "loaders/tokenizer_internal.h"
#include "loaders/unicode.h"

namespace hamu {
namespace {

using tok::BpeModel;
using tok::find_id;

// Bounds against hostile files, far above any published tokenizer (the largest have ~260k tokens,
// ~2M JSON values and ~30 MB): a parsed value costs up to ~100 bytes, so the value cap bounds memory
// at under 1 GB whatever the file holds.
constexpr int64_t kMaxVocab = int64_t(1) << 22;
constexpr size_t kMaxFileBytes = size_t(64) << 20;
constexpr size_t kMaxJsonValues = size_t(1) << 23;
constexpr int64_t kMaxAddedTokens = 1 << 20;

const std::string kMetaspaceChar = "\xE2\x96\x81";  // U+2581 "▁"

enum class Prepend { always, first, never };

struct NormStep {
  enum Kind { prepend, replace, strip, nfc, nfd } kind;
  std::string a, b;  // prepend: a; replace: a -> b
  bool left = false, right = false;  // strip
};

// How a Split (or Digits) pre-tokenizer treats its matches (the library's SplitDelimiterBehavior).
enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

struct PreStep {
  enum Kind { byte_level, metaspace, split_pattern, digits, punctuation } kind = byte_level;
  bool add_prefix_space = false, use_regex = true;  // byte_level
  std::string replacement;                          // metaspace
  Prepend scheme = Prepend::always;
  bool split = true;
  // split: a known regex, or a literal string when `literal` is set; digits, punctuation: each such
  // character is a match.
  tok::SplitRegex regex = tok::SplitRegex::gpt2;
  bool is_literal = false;
  std::string literal;
  Behavior behavior = Behavior::isolated;
  bool invert = false;
  bool individual_digits = false;
};

struct DecStep {
  enum Kind { byte_level, metaspace, replace, byte_fallback, fuse, strip } kind = fuse;
  std::string a, b;  // metaspace: a = replacement; replace: a -> b; strip: a = content character
  Prepend scheme = Prepend::always;
  int64_t start = 0, stop = 0;
};

// One piece of text on its way through the pipeline: either still text, or an added token's id.
struct Piece {
  std::string text;
  int32_t id = -1;
  bool at_origin = false;  // starts at byte 0 of the original input (Metaspace prepend_scheme "first")
};

// Leftmost-longest matching of the added tokens (the library uses an Aho-Corasick automaton with
// MatchKind::LeftmostLongest; a byte trie walked from each position finds the same matches).
class AddedMatcher {
 public:
  AddedMatcher() : nodes_(1) {}
  void add(const std::string& pattern, int32_t token_index) {
    first_[uint8_t(pattern[0])] = true;
    int node = 0;
    for (const char c : pattern) {
      auto& next = nodes_[node].next;
      const auto it = next.find(uint8_t(c));
      if (it != next.end()) {
        node = it->second;
      } else {
        next.emplace(uint8_t(c), int(nodes_.size()));
        node = int(nodes_.size());
        nodes_.emplace_back();
      }
    }
    // The first pattern registered wins a tie (special tokens are registered before the others).
    if (nodes_[node].token < 0) nodes_[node].token = token_index;
  }
  bool empty() const { return nodes_.size() == 1; }
  // Longest pattern starting at s[i]: returns its token index and sets `end`, or -1.
  int32_t match_at(std::string_view s, size_t i, size_t* end) const {
    if (!first_[uint8_t(s[i])]) return -1;  // most positions: no pattern starts with this byte
    int node = 0;
    int32_t best = -1;
    for (size_t j = i; j < s.size(); ++j) {
      const auto& next = nodes_[node].next;
      const auto it = next.find(uint8_t(s[j]));
      if (it == next.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        *end = j + 1;
      }
    }
    return best;
  }

 private:
  struct Node {
    std::map<uint8_t, int> next;
    int32_t token = -1;
  };
  std::vector<Node> nodes_;
  bool first_[256] = {};
};

uint32_t first_cp(std::string_view s) {
  int len = 1;
  return uint32_t(std::max(0, unicode::decode_utf8(s, 0, &len)));
}

uint32_t last_cp(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (uint8_t(s[i]) & 0xC0) == 0x80) --i;
  int len = 1;
  return uint32_t(std::max(0, unicode::decode_utf8(s, i, &len)));
}

// Start of the whitespace run that ends `s` (regex \s*$).
size_t space_run_start(std::string_view s) {
  size_t i = s.size();
  while (i > 0) {
    size_t j = i - 1;
    while (j > 0 && (uint8_t(s[j]) & 0xC0) == 0x80) --j;
    if (!unicode::is_space(first_cp(s.substr(j)))) break;
    i = j;
  }
  return i;
}

// End of the whitespace run that starts `s` (regex ^\s*).
size_t space_run_end(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    int len = 1;
    const int32_t cp = unicode::decode_utf8(s, i, &len);
    if (cp < 0 || !unicode::is_space(uint32_t(cp))) break;
    i += len;
  }
  return i;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(s);
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  for (;;) {
    const size_t j = s.find(from, i);
    if (j == std::string_view::npos) break;
    out.append(s.substr(i, j - i));
    out.append(to);
    i = j + from.size();
  }
  out.append(s.substr(i));
  return out;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// One stretch of a piece of text: [a, b) bytes, and whether the pattern matched it.
struct Stretch {
  size_t a, b;
  bool match;
};

// The matches of a Split or Digits pre-tokenizer in `s` with the stretches between them, covering
// `s` (the library's Pattern::find_matches, inverted when `invert`).
void find_matches(const PreStep& step, std::string_view s, std::vector<Stretch>& out) {
  std::vector<std::pair<size_t, size_t>> ranges;
  if (step.kind == PreStep::digits || step.kind == PreStep::punctuation) {
    const auto is_match = step.kind == PreStep::digits ? unicode::is_numeric : unicode::is_punctuation;
    for (size_t i = 0; i < s.size();) {
      int len = 1;
      const int32_t cp = unicode::decode_utf8(s, i, &len);
      if (cp >= 0 && is_match(uint32_t(cp))) ranges.emplace_back(i, i + size_t(len));
      i += size_t(len);
    }
  } else if (step.is_literal) {
    for (size_t j = s.find(step.literal); j != std::string_view::npos; j = s.find(step.literal, j + step.literal.size()))
      ranges.emplace_back(j, j + step.literal.size());
  } else {
    tok::regex_split(step.regex, s, ranges);
  }
  size_t prev = 0;
  for (const auto& [a, b] : ranges) {
    if (prev != a) out.push_back({prev, a, step.invert});
    out.push_back({a, b, !step.invert});
    prev = b;
  }
  if (prev != s.size()) out.push_back({prev, s.size(), step.invert});
}

// NormalizedString::split: the stretches combined as the behavior says; appends the kept ranges.
void split_by_behavior(const std::vector<Stretch>& m, Behavior behavior, std::vector<std::pair<size_t, size_t>>& out) {
  bool previous = false;
  switch (behavior) {
    case Behavior::isolated:
      for (const Stretch& x : m) out.emplace_back(x.a, x.b);
      break;
    case Behavior::removed:
      for (const Stretch& x : m)
        if (!x.match) out.emplace_back(x.a, x.b);
      break;
    case Behavior::contiguous:
    case Behavior::merged_with_previous:
      for (const Stretch& x : m) {
        const bool join = behavior == Behavior::contiguous ? x.match == previous : x.match && !previous;
        if (join && !out.empty()) out.back().second = x.b;
        else out.emplace_back(x.a, x.b);
        previous = x.match;
      }
      break;
    case Behavior::merged_with_next: {
      const size_t first = out.size();
      for (size_t k = m.size(); k-- > 0;) {
        const Stretch& x = m[k];
        if (x.match && !previous && out.size() > first) out.back().first = x.a;
        else out.emplace_back(x.a, x.b);
        previous = x.match;
      }
      std::reverse(out.begin() + std::ptrdiff_t(first), out.end());
      break;
    }
  }
}

}  // namespace

struct Tokenizer::Impl {
  std::string source;
  BpeModel model;
  bool has_normalizer = false;
  std::vector<NormStep> normalizer;
  std::vector<PreStep> pre;
  bool has_decoder = false;
  std::vector<DecStep> decoder;
  std::vector<int32_t> prefix, suffix;  // post-processor ids around a single sequence
  std::vector<AddedToken> added;
  std::vector<std::string> added_text;  // what id_to_token gives for each added token
  std::unordered_map<int32_t, size_t> added_by_id;
  tok::StringIdMap added_by_content;
  std::unordered_set<std::string> special_contents;
  AddedMatcher raw_matcher, norm_matcher;
  int32_t bos = -1, eos = -1;
  int64_t vocab_size = 0;

  std::string normalize(std::string s) const;
  void split_added(const Piece& in, const AddedMatcher& matcher, std::vector<Piece>& out) const;
  void pre_tokenize(const Piece& in, std::vector<Piece>& out) const;
  std::string decode_tokens(std::vector<std::string> tokens) const;
};

// ------------------------------------------------------------------------------------------------
// Encoding

std::string Tokenizer::Impl::normalize(std::string s) const {
  for (const NormStep& step : normalizer) {
    if (step.kind == NormStep::prepend) {
      if (!s.empty()) s = step.a + s;
    } else if (step.kind == NormStep::nfc) {
      s = unicode::nfc(s);
    } else if (step.kind == NormStep::nfd) {
      s = unicode::nfd(s);
    } else if (step.kind == NormStep::strip) {
      // char::is_whitespace is the White_Space property, as unicode::is_space.
      const size_t a = step.left ? space_run_end(s) : 0;
      const size_t b = step.right ? std::max(a, space_run_start(s)) : s.size();
      s = s.substr(a, b - a);
    } else {
      s = replace_all(s, step.a, step.b);
    }
  }
  return s;
}

// AddedVocabulary::find_matches: non-overlapping leftmost-longest matches, filtered by single_word,
// widened by lstrip/rstrip; the text between them stays text. Empty pieces are dropped.
void Tokenizer::Impl::split_added(const Piece& in, const AddedMatcher& matcher, std::vector<Piece>& out) const {
  const std::string_view s = in.text;
  auto emit = [&](size_t a, size_t b, int32_t id) {
    if (b <= a) return;
    out.push_back({std::string(s.substr(a, b - a)), id, in.at_origin && a == 0});
  };
  if (matcher.empty()) {
    emit(0, s.size(), -1);
    return;
  }
  size_t start_offset = 0;
  for (size_t i = 0; i < s.size();) {
    size_t end = 0;
    const int32_t index = matcher.match_at(s, i, &end);
    if (index < 0) {
      ++i;
      continue;
    }
    const AddedToken& t = added[size_t(index)];
    size_t start = i, stop = end;
    i = end;  // the search resumes after the match whether or not it is used
    if (t.single_word) {
      const bool start_ok = start == 0 || !unicode::is_word(last_cp(s.substr(0, start)));
      const bool stop_ok = stop == s.size() || !unicode::is_word(first_cp(s.substr(stop)));
      if (!start_ok || !stop_ok) continue;
    }
    if (t.lstrip) start = std::max(space_run_start(s.substr(0, start)), start_offset);
    if (t.rstrip) stop += space_run_end(s.substr(stop));
    if (start_offset < start) emit(start_offset, start, -1);
    emit(start, stop, t.id);
    start_offset = stop;
  }
  if (start_offset < s.size()) emit(start_offset, s.size(), -1);
}

void Tokenizer::Impl::pre_tokenize(const Piece& in, std::vector<Piece>& out) const {
  std::vector<Piece> cur{in}, next;
  std::vector<std::pair<size_t, size_t>> ranges;
  std::vector<Stretch> stretches;
  for (const PreStep& step : pre) {
    next.clear();
    for (Piece& p : cur) {
      if (step.kind == PreStep::split_pattern || step.kind == PreStep::digits || step.kind == PreStep::punctuation) {
        stretches.clear();
        ranges.clear();
        find_matches(step, p.text, stretches);
        split_by_behavior(stretches, step.behavior, ranges);
        for (const auto& [a, b] : ranges)
          if (b > a) next.push_back({p.text.substr(a, b - a), -1, p.at_origin && a == 0});
      } else if (step.kind == PreStep::byte_level) {
        if (step.add_prefix_space && !starts_with(p.text, " ")) p.text.insert(0, 1, ' ');
        ranges.clear();
        if (step.use_regex) {
          tok::gpt2_split(p.text, ranges);
        } else {
          ranges.emplace_back(0, p.text.size());
        }
        for (const auto& [a, b] : ranges)
          if (b > a)
            next.push_back({tok::bytes_to_chars(std::string_view(p.text).substr(a, b - a)), -1, p.at_origin && a == 0});
      } else {
        std::string s = replace_all(p.text, " ", step.replacement);
        const bool needs = !starts_with(s, step.replacement);
        if ((step.scheme == Prepend::always && needs) || (step.scheme == Prepend::first && needs && p.at_origin))
          s = step.replacement + s;
        if (!step.split) {
          if (!s.empty()) next.push_back({std::move(s), -1, p.at_origin});
          continue;
        }
        // MergedWithNext: every replacement character starts a new piece.
        size_t begin = 0;
        for (size_t j = s.find(step.replacement, 1); j != std::string::npos; j = s.find(step.replacement, j + 1)) {
          next.push_back({s.substr(begin, j - begin), -1, p.at_origin && begin == 0});
          begin = j;
        }
        if (begin < s.size()) next.push_back({s.substr(begin), -1, p.at_origin && begin == 0});
      }
    }
    cur.swap(next);
  }
  for (Piece& p : cur)
    if (!p.text.empty()) out.push_back(std::move(p));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  const size_t bad = unicode::invalid_utf8_at(text);
  if (bad != std::string_view::npos)
    throw InputError("tokenizer " + m.source + ": text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  std::vector<Piece> raw, norm, words;
  m.split_added({std::string(text), -1, true}, m.raw_matcher, raw);
  for (Piece& p : raw) {
    if (p.id >= 0) {
      norm.push_back(std::move(p));
      continue;
    }
    if (m.has_normalizer) p.text = m.normalize(std::move(p.text));
    m.split_added(p, m.norm_matcher, norm);
  }
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = m.prefix;
  for (const Piece& p : norm) {
    if (p.id >= 0) {
      ids.push_back(p.id);
      continue;
    }
    words.clear();
    m.pre_tokenize(p, words);
    for (const Piece& w : words) m.model.tokenize(w.text, ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), m.suffix.begin(), m.suffix.end());
  return ids;
}

// ------------------------------------------------------------------------------------------------
// Decoding

std::string Tokenizer::Impl::decode_tokens(std::vector<std::string> tokens) const {
  if (!has_decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const DecStep& step : decoder) {
    switch (step.kind) {
      case DecStep::byte_level: {
        std::string bytes;
        for (const std::string& t : tokens) {
          std::string mapped;
          bool all = true;
          for (size_t i = 0; i < t.size() && all;) {
            int len = 1;
            const int32_t cp = unicode::decode_utf8(t, i, &len);
            const int b = cp < 0 ? -1 : tok::char_byte(uint32_t(cp));
            if (b < 0) all = false;
            else mapped += char(b);
            i += len;
          }
          bytes += all ? mapped : t;
        }
        tokens.assign(1, unicode::utf8_lossy(bytes));
        break;
      }
      case DecStep::metaspace:
        for (size_t i = 0; i < tokens.size(); ++i)
          tokens[i] = replace_all(tokens[i], step.a, i == 0 && step.scheme != Prepend::never ? "" : " ");
        break;
      case DecStep::replace:
        for (std::string& t : tokens) t = replace_all(t, step.a, step.b);
        break;
      case DecStep::byte_fallback: {
        std::vector<std::string> out;
        std::string pending;
        int pending_count = 0;
        auto flush = [&] {
          if (!pending_count) return;
          if (unicode::invalid_utf8_at(pending) == std::string::npos) {
            out.push_back(pending);
          } else {
            for (int k = 0; k < pending_count; ++k) out.push_back("\xEF\xBF\xBD");
          }
          pending.clear();
          pending_count = 0;
        };
        for (std::string& t : tokens) {
          // "<0xNN>" as Rust's u8::from_str_radix(&t[3..5], 16) reads it (which allows a '+' sign).
          int byte = -1;
          if (t.size() == 6 && starts_with(t, "<0x") && t[5] == '>') {
            auto hex = [](char c) {
              return c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
            };
            const int hi = hex(t[3]), lo = hex(t[4]);
            if (hi >= 0 && lo >= 0) byte = hi * 16 + lo;
            else if (t[3] == '+' && lo >= 0) byte = lo;
          }
          if (byte >= 0) {
            pending += char(byte);
            ++pending_count;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens.swap(out);
        break;
      }
      case DecStep::fuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, all);
        break;
      }
      case DecStep::strip:
        for (std::string& t : tokens) {
          size_t a = 0, b = t.size();
          for (int64_t k = 0; k < step.start && starts_with(std::string_view(t).substr(a), step.a); ++k) a += step.a.size();
          for (int64_t k = 0; k < step.stop && b >= a + step.a.size() && t.compare(b - step.a.size(), step.a.size(), step.a) == 0; ++k)
            b -= step.a.size();
          t = t.substr(a, b - a);
        }
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    std::string t = id_to_token(id);
    const bool known = (id >= 0 && size_t(id) < m.model.has_id.size() && m.model.has_id[size_t(id)]) || m.added_by_id.count(id);
    if (!known) continue;
    if (skip_special_tokens && m.special_contents.count(t)) continue;
    tokens.push_back(std::move(t));
  }
  return m.decode_tokens(std::move(tokens));
}

// ------------------------------------------------------------------------------------------------
// Accessors

int32_t Tokenizer::token_to_id(std::string_view token) const {
  const int32_t a = find_id(impl_->added_by_content, token);
  return a >= 0 ? a : find_id(impl_->model.vocab, token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  const auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return impl_->added_text[it->second];
  if (id >= 0 && size_t(id) < impl_->model.id_to_token.size()) return impl_->model.id_to_token[size_t(id)];
  return "";
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
const std::vector<int32_t>& Tokenizer::prefix_ids() const { return impl_->prefix; }
const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
const std::string& Tokenizer::source() const { return impl_->source; }

// ------------------------------------------------------------------------------------------------
// Loading

namespace {

std::string type_of(const Json& j, const char* what) {
  if (!j.is_object()) throw InputError(std::string(what) + " must be an object, found " + Json::type_name(j.type()));
  return j.get_or("type", "");
}

[[noreturn]] void unsupported(const char* what, const std::string& type) {
  throw InputError("unsupported " + std::string(what) + " type '" + type + "'");
}

std::string string_pattern(const Json& pattern, const char* what) {
  if (pattern.is_object() && pattern.contains("String")) return pattern.at("String").as_string();
  if (pattern.is_object() && pattern.contains("Regex"))
    throw InputError(std::string(what) + " with a Regex pattern is not supported (string patterns only)");
  throw InputError(std::string(what) + ": pattern must be {\"String\": ...}");
}

Prepend parse_prepend(const Json& j) {
  const Json* scheme = j.find("prepend_scheme");
  if (scheme && !scheme->is_null()) {
    const std::string& s = scheme->as_string();
    if (s == "always") return Prepend::always;
    if (s == "first") return Prepend::first;
    if (s == "never") return Prepend::never;
    throw InputError("Metaspace: unknown prepend_scheme '" + s + "'");
  }
  return j.get_or("add_prefix_space", true) ? Prepend::always : Prepend::never;
}

std::string one_char(const Json& j, const char* key, const char* what) {
  const std::string s = j.get_or(key, kMetaspaceChar.c_str());
  int len = 0;
  if (s.empty() || unicode::decode_utf8(s, 0, &len) < 0 || size_t(len) != s.size())
    throw InputError(std::string(what) + ": '" + key + "' must be one character");
  return s;
}

Behavior parse_behavior(const Json& j, const std::string& what) {
  const std::string& b = j.as_string();
  if (b == "Removed") return Behavior::removed;
  if (b == "Isolated") return Behavior::isolated;
  if (b == "MergedWithPrevious") return Behavior::merged_with_previous;
  if (b == "MergedWithNext") return Behavior::merged_with_next;
  if (b == "Contiguous") return Behavior::contiguous;
  throw InputError(what + " pre-tokenizer: unknown behavior '" + b + "'");
}

void parse_normalizer(const Json& j, std::vector<NormStep>& out) {
  const std::string type = type_of(j, "normalizer");
  if (type == "Sequence") {
    for (const Json& n : j.at("normalizers").as_array()) parse_normalizer(n, out);
  } else if (type == "Prepend") {
    out.push_back({NormStep::prepend, j.at("prepend").as_string(), ""});
  } else if (type == "Replace") {
    out.push_back({NormStep::replace, string_pattern(j.at("pattern"), "Replace normalizer"), j.at("content").as_string()});
  } else if (type == "NFC" || type == "NFD") {
    out.push_back({type == "NFC" ? NormStep::nfc : NormStep::nfd, "", ""});
  } else if (type == "Strip") {
    NormStep s{NormStep::strip, "", ""};
    s.left = j.get_or("strip_left", true);
    s.right = j.get_or("strip_right", true);
    out.push_back(s);
  } else {
    unsupported("normalizer", type);
  }
}

void parse_pre_tokenizer(const Json& j, std::vector<PreStep>& out) {
  const std::string type = type_of(j, "pre_tokenizer");
  if (type == "Sequence") {
    for (const Json& p : j.at("pretokenizers").as_array()) parse_pre_tokenizer(p, out);
  } else if (type == "ByteLevel") {
    PreStep s;
    s.kind = PreStep::byte_level;
    s.add_prefix_space = j.get_or("add_prefix_space", true);
    s.use_regex = j.get_or("use_regex", true);
    out.push_back(s);
  } else if (type == "Metaspace") {
    PreStep s;
    s.kind = PreStep::metaspace;
    s.replacement = one_char(j, "replacement", "Metaspace");
    s.scheme = parse_prepend(j);
    s.split = j.get_or("split", true);
    out.push_back(s);
  } else if (type == "Split") {
    PreStep s;
    s.kind = PreStep::split_pattern;
    const Json& pattern = j.at("pattern");
    if (pattern.is_object() && pattern.contains("String")) {
      s.is_literal = true;
      s.literal = pattern.at("String").as_string();
      if (s.literal.empty()) throw InputError("Split pre-tokenizer: the String pattern is empty");
    } else if (pattern.is_object() && pattern.contains("Regex")) {
      const std::string& re = pattern.at("Regex").as_string();
      if (!tok::known_split_regex(re, &s.regex))
        throw InputError("Split pre-tokenizer: unsupported Regex pattern " + Json(re).dump() +
                         " (hamu knows the GPT-2, Llama 3, Qwen2, GPT-4o, Tekken and Falcon patterns, and String patterns)");
    } else {
      throw InputError("Split pre-tokenizer: pattern must be {\"String\": ...} or {\"Regex\": ...}");
    }
    s.behavior = parse_behavior(j.at("behavior"), type);
    s.invert = j.get_or("invert", false);
    out.push_back(s);
  } else if (type == "Digits") {
    PreStep s;
    s.kind = PreStep::digits;
    s.individual_digits = j.get_or("individual_digits", false);
    s.behavior = s.individual_digits ? Behavior::isolated : Behavior::contiguous;
    out.push_back(s);
  } else if (type == "Punctuation") {
    PreStep s;
    s.kind = PreStep::punctuation;
    const Json* behavior = j.find("behavior");
    s.behavior = behavior && !behavior->is_null() ? parse_behavior(*behavior, type) : Behavior::isolated;
    out.push_back(s);
  } else {
    unsupported("pre_tokenizer", type);
  }
}

void parse_decoder(const Json& j, std::vector<DecStep>& out) {
  const std::string type = type_of(j, "decoder");
  DecStep s;
  s.kind = DecStep::fuse;
  if (type == "Sequence") {
    for (const Json& d : j.at("decoders").as_array()) parse_decoder(d, out);
    return;
  } else if (type == "ByteLevel") {
    s.kind = DecStep::byte_level;
  } else if (type == "Metaspace") {
    s.kind = DecStep::metaspace;
    s.a = one_char(j, "replacement", "Metaspace decoder");
    s.scheme = parse_prepend(j);
  } else if (type == "Replace") {
    s.kind = DecStep::replace;
    s.a = string_pattern(j.at("pattern"), "Replace decoder");
    s.b = j.at("content").as_string();
  } else if (type == "ByteFallback") {
    s.kind = DecStep::byte_fallback;
  } else if (type == "Fuse") {
    s.kind = DecStep::fuse;
  } else if (type == "Strip") {
    s.kind = DecStep::strip;
    s.a = one_char(j, "content", "Strip decoder");
    s.start = j.get_or<int64_t>("start", 0);
    s.stop = j.get_or<int64_t>("stop", 0);
    if (s.start < 0 || s.stop < 0 || s.start > 1 << 20 || s.stop > 1 << 20)
      throw InputError("Strip decoder: start/stop out of range");
  } else {
    unsupported("decoder", type);
  }
  out.push_back(s);
}

// The id of a RobertaProcessing/BertProcessing "cls" or "sep" entry: ["token", id].
int32_t processor_token(const Json& j, const char* key, const char* what) {
  const Json& e = j.at(key);
  if (!e.is_array() || e.size() != 2 || !e.at(size_t(0)).is_string() || !e.at(size_t(1)).is_integer())
    throw InputError(std::string(what) + ": '" + key + "' must be [\"token\", id]");
  const int64_t v = e.at(size_t(1)).as_int();
  if (v < 0 || v >= kMaxVocab) throw InputError(std::string(what) + ": id " + std::to_string(v) + " out of range");
  return int32_t(v);
}

// Post-processors that add tokens wrap what the ones before them produced. `after_template` tells
// that a TemplateProcessing came before: the library then panics (a second template) or splits the
// template's output into separate sequences (RobertaProcessing), so that is refused.
void parse_post_processor(const Json& j, Tokenizer::Impl& m, bool* after_template) {
  const std::string type = type_of(j, "post_processor");
  if (type == "Sequence") {
    for (const Json& p : j.at("processors").as_array()) parse_post_processor(p, m, after_template);
    return;
  }
  if (type == "ByteLevel") return;  // only trims offsets; the ids are unchanged
  std::vector<int32_t> prefix, suffix;
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    prefix.push_back(processor_token(j, "cls", type.c_str()));
    suffix.push_back(processor_token(j, "sep", type.c_str()));
  } else if (type == "TemplateProcessing") {
    const Json& specials = j.at("special_tokens");
    if (!specials.is_object()) throw InputError("TemplateProcessing: special_tokens must be an object");
    const Json& single = j.at("single");
    if (!single.is_array()) throw InputError("TemplateProcessing: 'single' must be a list of pieces");
    std::vector<int32_t>* side = &prefix;
    int sequences = 0;
    for (const Json& item : single.as_array()) {
      if (item.is_object() && item.contains("Sequence")) {
        const std::string id = item.at("Sequence").get_or("id", "A");
        if (id != "A") throw InputError("TemplateProcessing: single template uses sequence '" + id + "'");
        if (++sequences > 1) throw InputError("TemplateProcessing: single template holds $A twice");
        side = &suffix;
      } else if (item.is_object() && item.contains("SpecialToken")) {
        const std::string name = item.at("SpecialToken").at("id").as_string();
        const Json* def = specials.find(name);
        if (!def) throw InputError("TemplateProcessing: special token '" + name + "' is not in special_tokens");
        for (const Json& id : def->at("ids").as_array()) {
          const int64_t v = id.as_int();
          if (v < 0 || v >= kMaxVocab) throw InputError("TemplateProcessing: id " + std::to_string(v) + " out of range");
          side->push_back(int32_t(v));
        }
      } else {
        throw InputError("TemplateProcessing: a template piece must be {\"Sequence\"} or {\"SpecialToken\"}");
      }
    }
    if (sequences != 1) throw InputError("TemplateProcessing: single template has no $A");
  } else {
    unsupported("post_processor", type);
  }
  if (*after_template)
    throw InputError("post_processor: " + type + " after a TemplateProcessing in one Sequence is not supported (the tokenizers library panics or splits the template's output)");
  *after_template = type == "TemplateProcessing";
  m.prefix.insert(m.prefix.begin(), prefix.begin(), prefix.end());
  m.suffix.insert(m.suffix.end(), suffix.begin(), suffix.end());
}

void parse_bpe(const Json& j, BpeModel& bpe) {
  const Json* dropout = j.find("dropout");
  if (dropout && !dropout->is_null() && dropout->as_number() != 0.0)
    throw InputError("BPE dropout " + dropout->dump() + " is not supported (encoding would be random)");
  const Json& vocab = j.at("vocab");
  if (!vocab.is_object()) throw InputError("model.vocab must be an object of token -> id");
  const int64_t count = int64_t(vocab.size());
  if (count == 0) throw InputError("model.vocab is empty");
  if (count > kMaxVocab) throw InputError("model.vocab has " + std::to_string(count) + " tokens, more than the " + std::to_string(kMaxVocab) + " allowed");
  // Ids may have gaps (the library keeps a hash map), but not so many that id_to_token explodes.
  const int64_t id_limit = std::min<int64_t>(kMaxVocab, 2 * count + 1024);
  bpe.vocab.reserve(size_t(count));
  for (const auto& [token, value] : vocab.members()) {
    if (!value.is_integer()) throw InputError("model.vocab: id of '" + token + "' is not an integer");
    const int64_t id = value.as_int();
    if (id < 0 || id >= id_limit)
      throw InputError("model.vocab: id " + std::to_string(id) + " of '" + token + "' is out of range (0.." + std::to_string(id_limit - 1) + " for " + std::to_string(count) + " tokens)");
    if (size_t(id) >= bpe.id_to_token.size()) {
      bpe.id_to_token.resize(size_t(id) + 1);
      bpe.has_id.resize(size_t(id) + 1, false);
    }
    if (bpe.has_id[size_t(id)])
      throw InputError("model.vocab: duplicate id " + std::to_string(id) + " for '" + bpe.id_to_token[size_t(id)] + "' and '" + token + "'");
    bpe.has_id[size_t(id)] = true;
    bpe.id_to_token[size_t(id)] = token;
    bpe.vocab.emplace(token, int32_t(id));
  }
  // Merges: "a b" strings (older files) or ["a", "b"] pairs. A repeated pair keeps its last rank, as
  // the library's map does.
  const Json* merges = j.find("merges");
  if (merges && !merges->is_null()) {
    if (!merges->is_array()) throw InputError("model.merges must be a list");
    if (int64_t(merges->size()) > count) throw InputError("model.merges has more entries than the vocabulary has tokens");
    bpe.merges.reserve(merges->size());
    int32_t rank = 0;
    std::string merged;
    for (const Json& e : merges->as_array()) {
      std::string_view a, b;
      if (e.is_string()) {
        const std::string& s = e.as_string();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          throw InputError("model.merges[" + std::to_string(rank) + "]: '" + s + "' is not two tokens separated by one space");
        a = std::string_view(s).substr(0, sp);
        b = std::string_view(s).substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e.at(size_t(0)).is_string() && e.at(size_t(1)).is_string()) {
        a = e.at(size_t(0)).as_string();
        b = e.at(size_t(1)).as_string();
      } else {
        throw InputError("model.merges[" + std::to_string(rank) + "]: expected \"a b\" or [\"a\", \"b\"], found " + e.dump());
      }
      const int32_t ia = find_id(bpe.vocab, a), ib = find_id(bpe.vocab, b);
      if (ia < 0 || ib < 0)
        throw InputError("model.merges[" + std::to_string(rank) + "]: token '" + std::string(ia < 0 ? a : b) + "' is not in the vocabulary");
      const std::string_view tail = starts_with(b, bpe.continuing_subword_prefix) ? b.substr(bpe.continuing_subword_prefix.size()) : b;
      merged.assign(a);
      merged.append(tail);
      const int32_t id = find_id(bpe.vocab, merged);
      if (id < 0) throw InputError("model.merges[" + std::to_string(rank) + "]: merged token '" + merged + "' is not in the vocabulary");
      bpe.merges[BpeModel::pair_key(ia, ib)] = {rank, id};
      ++rank;
    }
  }
  const Json* unk = j.find("unk_token");
  if (unk && !unk->is_null()) {
    bpe.unk_id = find_id(bpe.vocab, unk->as_string());
    if (bpe.unk_id < 0) throw InputError("model.unk_token '" + unk->as_string() + "' is not in the vocabulary");
  }
  bpe.fuse_unk = j.get_or("fuse_unk", false);
  bpe.byte_fallback = j.get_or("byte_fallback", false);
  bpe.ignore_merges = j.get_or("ignore_merges", false);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    bpe.byte_ids[b] = find_id(bpe.vocab, name);
  }
}

void parse_added_tokens(const Json& list, Tokenizer::Impl& m) {
  if (!list.is_array()) throw InputError("added_tokens must be a list");
  if (int64_t(list.size()) > kMaxAddedTokens) throw InputError("added_tokens has too many entries");
  int64_t max_added = -1;
  for (const Json& e : list.as_array()) {
    if (!e.is_object()) throw InputError("added_tokens: each entry must be an object");
    AddedToken t;
    t.content = e.at("content").as_string();
    const int64_t id = e.at("id").as_int();
    if (t.content.empty()) continue;  // the library ignores empty tokens
    t.special = e.get_or("special", false);
    t.lstrip = e.get_or("lstrip", false);
    t.rstrip = e.get_or("rstrip", false);
    t.single_word = e.get_or("single_word", false);
    t.normalized = e.get_or("normalized", !t.special);
    if (id < 0 || id > int64_t(UINT32_MAX)) throw InputError("added token '" + t.content + "': id " + std::to_string(id) + " is out of range");
    if (m.added_by_content.count(t.content)) continue;  // a repeat is ignored (the library's files never hold one)
    // The library ignores the id written in the file (it only warns when they differ): a token the
    // model knows takes the model's id; a new one takes the vocabulary size (entries, not the
    // largest id + 1), or one past the largest added id once that is at or above it.
    const int32_t model_id = find_id(m.model.vocab, t.content);
    if (model_id >= 0) {
      t.id = model_id;
    } else {
      const int64_t model_size = int64_t(m.model.vocab.size());
      t.id = int32_t(max_added < 0 ? model_size : max_added >= model_size ? max_added + 1 : model_size);
      if (t.id >= kMaxVocab) throw InputError("added token '" + t.content + "': id " + std::to_string(t.id) + " is out of range");
      if (size_t(t.id) < m.model.has_id.size() && m.model.has_id[size_t(t.id)])
        throw InputError("added token '" + t.content + "' gets id " + std::to_string(t.id) + " (the library's rule), which is already '" +
                         m.model.id_to_token[size_t(t.id)] + "' in the vocabulary");
    }
    max_added = std::max<int64_t>(max_added, t.id);
    m.added_by_id[t.id] = m.added.size();
    m.added_by_content.emplace(t.content, t.id);
    if (t.special) m.special_contents.insert(t.content);
    m.added.push_back(t);
  }
  // The library's id -> token map holds a normalized token in its normalized form, so decoding
  // shows that form (and skip_special_tokens, which compares that text, keeps a special one whose
  // normalized form differs from its content).
  for (const AddedToken& t : m.added)
    m.added_text.push_back(t.normalized && m.has_normalizer ? m.normalize(t.content) : t.content);
  // Matchers: special tokens first, then the others (the library's order), split by `normalized`;
  // normalized tokens are matched in their normalized form.
  for (const bool special : {true, false})
    for (size_t i = 0; i < m.added.size(); ++i) {
      const AddedToken& t = m.added[i];
      if (t.special != special) continue;
      if (t.normalized) {
        const std::string& pattern = m.added_text[i];
        // The library matches an empty pattern between every two bytes (it splits ASCII text into
        // single characters and panics inside a multi-byte one): no way to tokenise like it.
        if (pattern.empty())
          throw InputError("added token " + Json(t.content).dump() + " is normalized to an empty string (the tokenizers library then cuts the text at every byte)");
        m.norm_matcher.add(pattern, int32_t(i));
      } else {
        m.raw_matcher.add(t.content, int32_t(i));
      }
    }
}

// bos/eos: tokenizer_config.json beside the file names them; otherwise the post-processor's first
// prefix token is the BOS, and the usual names are tried.
void find_bos_eos(Tokenizer::Impl& m, const Tokenizer& t, const std::string& config_path) {
  auto token_name = [](const Json* v) -> std::string {
    if (!v || v->is_null()) return "";
    if (v->is_string()) return v->as_string();
    if (v->is_object()) return v->get_or("content", "");
    return "";
  };
  std::string bos, eos;
  std::error_code ec;
  if (!config_path.empty() && std::filesystem::is_regular_file(config_path, ec)) {
    const Json config = load_json(config_path);
    if (!config.is_object()) throw InputError(config_path + ": expected a JSON object");
    bos = token_name(config.find("bos_token"));
    eos = token_name(config.find("eos_token"));
    if (!bos.empty() && t.token_to_id(bos) < 0) throw InputError(config_path + ": bos_token '" + bos + "' is not a token of the tokenizer");
    if (!eos.empty() && t.token_to_id(eos) < 0) throw InputError(config_path + ": eos_token '" + eos + "' is not a token of the tokenizer");
  }
  m.bos = bos.empty() ? -1 : t.token_to_id(bos);
  m.eos = eos.empty() ? -1 : t.token_to_id(eos);
  if (m.bos < 0 && !m.prefix.empty()) m.bos = m.prefix.front();
  for (const char* name : {"<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"})
    if (m.bos < 0) m.bos = t.token_to_id(name);
  for (const char* name : {"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"})
    if (m.eos < 0) m.eos = t.token_to_id(name);
}

std::string read_text_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw InputError(path + ": no such file");
  if (!std::filesystem::is_regular_file(path, ec)) throw InputError(path + ": not a regular file");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw InputError(path + ": cannot read: " + ec.message());
  if (size > kMaxFileBytes) throw InputError(path + ": " + std::to_string(size) + " bytes is more than the " + std::to_string(kMaxFileBytes) + " allowed for a tokenizer.json");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open");
  std::string text(size, '\0');
  in.read(text.data(), std::streamsize(size));
  if (size_t(in.gcount()) != size) throw InputError(path + ": read failed (file shrank)");
  return text;
}

}  // namespace

Tokenizer Tokenizer::from_json_text(std::string_view text, const std::string& source) { return build(text, source, ""); }

Tokenizer Tokenizer::load(const std::string& path) {
  std::error_code ec;
  const bool dir = std::filesystem::is_directory(path, ec);
  const std::string file = dir ? (std::filesystem::path(path) / "tokenizer.json").string() : path;
  const std::string config = (std::filesystem::path(file).parent_path() / "tokenizer_config.json").string();
  return build(read_text_file(file), file, config);
}

// The one place a Tokenizer gets its state; errors are prefixed with the file once.
Tokenizer Tokenizer::build(std::string_view text, const std::string& source, const std::string& config_path) {
  auto impl = std::make_shared<Tokenizer::Impl>();
  Tokenizer::Impl& m = *impl;
  m.source = source;
  try {
    JsonParseOptions options;
    options.source = source;
    options.max_values = kMaxJsonValues;
    const Json j = Json::parse(text, options);
    if (!j.is_object()) throw InputError("expected a JSON object");
    const Json& model = j.at("model");
    if (!model.is_object()) throw InputError("'model' must be an object");
    // Files from older versions may leave model.type out; a vocab with merges is BPE.
    const std::string type = model.get_or("type", model.contains("merges") ? "BPE" : "");
    if (type != "BPE")
      throw InputError("unsupported model type '" + type + "' (hamu reads BPE tokenizers: GPT-2 byte-level and SentencePiece-style)");
    const Json* prefix = model.find("continuing_subword_prefix");
    if (prefix && !prefix->is_null()) m.model.continuing_subword_prefix = prefix->as_string();
    const Json* suffix = model.find("end_of_word_suffix");
    if (suffix && !suffix->is_null()) m.model.end_of_word_suffix = suffix->as_string();
    parse_bpe(model, m.model);
    const Json* norm = j.find("normalizer");
    if (norm && !norm->is_null()) {
      parse_normalizer(*norm, m.normalizer);
      m.has_normalizer = true;
    }
    const Json* pre = j.find("pre_tokenizer");
    if (pre && !pre->is_null()) parse_pre_tokenizer(*pre, m.pre);
    const Json* post = j.find("post_processor");
    bool after_template = false;
    if (post && !post->is_null()) parse_post_processor(*post, m, &after_template);
    const Json* dec = j.find("decoder");
    if (dec && !dec->is_null()) {
      parse_decoder(*dec, m.decoder);
      m.has_decoder = true;
    }
    const Json* added = j.find("added_tokens");
    if (added && !added->is_null()) parse_added_tokens(*added, m);
    m.vocab_size = int64_t(m.model.id_to_token.size());
    for (const AddedToken& t : m.added) m.vocab_size = std::max<int64_t>(m.vocab_size, int64_t(t.id) + 1);
    for (const int32_t id : m.prefix)
      if (id >= m.vocab_size) throw InputError("post_processor id " + std::to_string(id) + " is not a token");
    for (const int32_t id : m.suffix)
      if (id >= m.vocab_size) throw InputError("post_processor id " + std::to_string(id) + " is not a token");
  } catch (const InputError& e) {
    const std::string what = e.what();
    if (starts_with(what, source)) throw;
    throw InputError(source + ": " + what);
  }
  Tokenizer t(impl);
  find_bos_eos(m, t, config_path);
  return t;
}

}  // namespace hamu
