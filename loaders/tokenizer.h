// loaders/tokenizer.h: Hugging Face tokenizer.json (BPE: byte-level GPT-2 style and SentencePiece
// style), encoding and decoding with the same ids as the `tokenizers` library, and a small trainer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hamu {

class Json;

// One entry of tokenizer.json's `added_tokens`, with the flags as the library applies them.
struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;       // swallow whitespace on the left of a match
  bool rstrip = false;       // swallow whitespace on the right
  bool single_word = false;  // match only when not inside a word
  bool normalized = true;    // match against the normalized text (content normalized too)
};

// A loaded tokenizer. Immutable after loading (the per-word merge cache is internal and locked), so
// copies are cheap and may be shared between threads.
//
// Supported (anything else is an InputError naming the file and the unsupported type):
//   model        BPE (vocab; merges as "a b" strings or ["a","b"] pairs; unk_token, fuse_unk,
//                byte_fallback, ignore_merges, continuing_subword_prefix, end_of_word_suffix;
//                dropout null or 0)
//   normalizer   null, Sequence, Prepend, Replace (string pattern), Strip, NFC, NFD
//   pre_tokenizer null, Sequence, ByteLevel (add_prefix_space, use_regex: the GPT-2 split),
//                Metaspace (replacement, prepend_scheme always/first/never or add_prefix_space, split),
//                Split (a String pattern, or the GPT-2, Llama 3, Qwen2, GPT-4o, Tekken or Falcon
//                Regex; every behavior, invert), Digits (individual_digits), Punctuation (behavior)
//   post_processor null, Sequence, ByteLevel (ids unchanged), TemplateProcessing (single template),
//                RobertaProcessing, BertProcessing (nested in a Sequence; none after a template)
//   decoder      null, Sequence, ByteLevel, Metaspace, Replace (string), ByteFallback, Fuse, Strip
// Refused, among others: the WordPiece and Unigram models, NFKC/NFKD/Lowercase/BertNormalizer and
// Regex Replace normalizers, Whitespace/BertPreTokenizer pre-tokenizers, any other Split
// regex, and a normalized added token that normalizes to "" (the library then cuts text at every
// byte). Added tokens take the ids the library gives them, not the ids written in the file (they
// agree in every file the library wrote).
// `truncation` and `padding` are ignored (hamu truncates in the prompt templates instead).
class Tokenizer {
 public:
  // `path` is a tokenizer.json file or a folder holding one. A tokenizer_config.json beside it, when
  // present, names the BOS and EOS tokens (`bos_token`, `eos_token`).
  static Tokenizer load(const std::string& path);
  // From tokenizer.json text; `source` names it in errors.
  static Tokenizer from_json_text(std::string_view text, const std::string& source);

  // Token ids of `text` (valid UTF-8, else InputError). add_special_tokens applies the
  // post-processor (Llama's BOS); special tokens written in the text are recognised either way.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Text of `ids`; unknown ids are skipped, as the library does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int32_t token_to_id(std::string_view token) const;  // -1 when absent
  std::string id_to_token(int32_t id) const;          // "" when absent
  // One past the largest id (model vocabulary and added tokens).
  int64_t vocab_size() const;
  int32_t bos_id() const;  // -1 when the tokenizer has none
  int32_t eos_id() const;  // -1 when the tokenizer has none
  // Ids the post-processor puts before a single sequence (Llama: {BOS}; GPT-2: none).
  const std::vector<int32_t>& prefix_ids() const;
  const std::vector<AddedToken>& added_tokens() const;
  const std::string& source() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  static Tokenizer build(std::string_view text, const std::string& source, const std::string& config_path);
  std::shared_ptr<const Impl> impl_;
};

// ------------------------------------------------------------------------------------------------
// Byte-level BPE training (GPT-2 style), so hamu's own small models get a vocabulary from their corpus.
struct BpeTrainOptions {
  int64_t vocab_size = 1000;  // special tokens + 256 byte symbols + merges
  std::vector<std::string> special_tokens = {"<|endoftext|>"};
  int64_t min_frequency = 2;  // a pair seen fewer times is never merged (training stops there)
  bool add_prefix_space = false;
};

struct BpeTrainResult {
  std::string json;          // tokenizer.json text that hamu and the `tokenizers` library both load
  int64_t merges = 0;        // merges learned
  int64_t corpus_tokens = 0;  // tokens of the corpus (special tokens aside) after all merges
  int64_t corpus_bytes = 0;   // bytes of the same text (tokens before any merge)
};

// Learns merges from `corpus` (one document per entry; special tokens in it are split out first,
// never merged across). Deterministic: the most frequent pair wins, ties go to the pair whose left
// token, then right token, is smallest byte-wise; the same corpus and options give byte-identical
// output. Ids: special tokens first, then the 256 byte symbols in byte order, then merges in order.
BpeTrainResult train_bpe(const std::vector<std::string>& corpus, const BpeTrainOptions& options = {});

}  // namespace hamu
