// tests/fuzz/fuzz_tokenizer.cpp: bytes -> a Hugging Face tokenizer.json (BPE: byte-level and
// SentencePiece-style, normalizers, pre-tokenizers, post-processors, decoders, added tokens). What it
// accepts must encode fixed and input-derived UTF-8 text to ids inside its vocabulary, in bounded
// time, and decode them without crashing.
#include <string>
#include <string_view>

#include "loaders/tokenizer.h"
#include "tests/fuzz/fuzz.h"

namespace {

void exercise(const hamu::Tokenizer& tok, std::string_view text) {
  for (bool special : {true, false}) {
    const std::vector<int32_t> ids = tok.encode(text, special);
    for (int32_t id : ids)
      if (id < 0 || id >= tok.vocab_size()) std::abort();
    (void)tok.decode(ids, false);
    (void)tok.decode(ids, true);
  }
}

}  // namespace

HAMU_FUZZ_TARGET(tokenizer) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const hamu::Tokenizer tok = hamu::Tokenizer::from_json_text(text, "fuzz/tokenizer.json");
  exercise(tok, "Question: Who wrote it?\nAnswer: Alice, in 1999.  Ünïcödé \xE2\x96\x81 <|endoftext|> 12345\t\n");
  exercise(tok, "");
  // The input's own last bytes as text, when they are valid UTF-8 (encode refuses the rest by InputError).
  const size_t tail = size < 64 ? size : 64;
  try {
    exercise(tok, text.substr(size - tail));
  } catch (const hamu::InputError&) {
  }
  // Ids outside the vocabulary are skipped by decode, as the library does.
  (void)tok.decode({-1, int32_t(tok.vocab_size()), 0, 2147483647}, false);
}
