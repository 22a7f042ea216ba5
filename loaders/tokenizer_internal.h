// loaders/tokenizer_internal.h: pieces shared by the tokenizer loader, the BPE model and the trainer.
#pragma once
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace hamu::tok {

// A string-keyed hash map that looks up by string_view without building a std::string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

inline int32_t find_id(const StringIdMap& m, std::string_view s) {
  const auto it = m.find(s);
  return it == m.end() ? -1 : it->second;
}

// GPT-2's reversible byte <-> printable-character map: bytes 33-126, 161-172 and 174-255 stand for
// themselves, the other 68 bytes for U+0100 onwards in byte order.
const std::string& byte_char(uint8_t b);        // UTF-8 of the character standing for byte b
int char_byte(uint32_t cp);                     // the byte a character stands for, -1 if none
std::string bytes_to_chars(std::string_view s);  // every byte of s mapped

// The split regexes that published byte-level tokenizers use, hand-written (no regex library) and
// matched leftmost-first as Oniguruma does (loaders/tokenizer_split.cpp):
//   gpt2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//           (ByteLevel's use_regex, and GPT-2-style Split pre-tokenizers)
//   llama3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//           \s*[\r\n]+|\s+(?!\S)|\s+   (Llama 3)
//   qwen2   the same with \p{N} for \p{N}{1,3} (Qwen2, Qwen2.5)
//   o200k   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
//           [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
//           \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+   (GPT-4o's o200k, Phi-4)
//   tekken  the same without the contractions and with \p{N} for \p{N}{1,3} (Mistral's Tekken)
//   digit_triples  [0-9][0-9][0-9] (Falcon)
enum class SplitRegex { gpt2, llama3, qwen2, o200k, tekken, digit_triples };
// The pattern's kind when its text is exactly one of the above; false otherwise.
bool known_split_regex(std::string_view pattern, SplitRegex* kind);
// Appends the [begin, end) byte ranges of the matches in `s` (valid UTF-8), in order. All but
// digit_triples match any character, so their ranges cover `s` exactly.
void regex_split(SplitRegex kind, std::string_view s, std::vector<std::pair<size_t, size_t>>& out);
inline void gpt2_split(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) { regex_split(SplitRegex::gpt2, s, out); }

// A BPE model as the library runs it (merge queue by rank then position).
struct BpeModel {
  StringIdMap vocab;
  std::vector<std::string> id_to_token;  // "" for ids without a token
  std::vector<bool> has_id;
  // (left id, right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  int32_t unk_id = -1;  // -1 when there is no unk_token
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  int32_t byte_ids[256];  // id of "<0xNN>" or -1 (byte_fallback)

  // Appends the ids of one pre-tokenized piece.
  void tokenize(std::string_view piece, std::vector<int32_t>& out) const;

  static uint64_t pair_key(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }

 private:
  void merge_word(std::string_view piece, std::vector<int32_t>& ids) const;
  // Words seen before, as the library caches them (bounded; results never depend on it).
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace hamu::tok
