// tests/fuzz/fuzz_qa_jsonl.cpp: bytes -> the QA reader (JSON lines or a JSON array; default and
// renamed fields); what it accepts must hold its promises (fields kept verbatim but never blank, lines in order)
// and split into disjoint forget/retain/holdout sets with semantic duplicates.
#include <string>
#include <string_view>

#include "loaders/qa.h"
#include "loaders/text_split.h"
#include "tests/fuzz/fuzz.h"

namespace {

// Not empty and not whitespace alone (the text itself is kept verbatim, surrounding whitespace included, as the
// published code and transformers tokenise it).
bool not_blank(const std::string& s) {
  return s.find_first_not_of(" \t\r\n") != std::string::npos;
}

void check(const hamu::QaDataset& d) {
  int64_t last_line = 0;
  for (const auto& p : d.pairs) {
    if (!not_blank(p.question) || !not_blank(p.answer) || p.line < last_line) std::abort();  // array elements may share a line
    for (const auto& para : p.paraphrases)
      if (!not_blank(para.question) || !not_blank(para.answer)) std::abort();
    last_line = p.line;
  }
}

}  // namespace

HAMU_FUZZ_TARGET(qa_jsonl) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  hamu::QaFields renamed;
  renamed.question = "q";
  renamed.answer = "a";
  try {
    check(hamu::parse_qa_text(text, "fuzz.jsonl", renamed));
  } catch (const hamu::InputError&) {
  }
  const hamu::QaDataset d = hamu::parse_qa_text(text, "fuzz.jsonl");
  check(d);
  bool any_paraphrase = false;
  for (const auto& p : d.pairs) any_paraphrase = any_paraphrase || !p.paraphrases.empty();
  hamu::TextSplitOptions opt;
  opt.duplicates = any_paraphrase ? "semantic" : "exact";
  const hamu::TextSplit s = hamu::make_text_split("fraction=0.5,holdout=0.25,seed=7", d, opt);
  if (s.forget.empty() || s.forget.size() + s.retain.size() + s.test.size() != d.pairs.size() + s.duplicate.size())
    std::abort();
}
