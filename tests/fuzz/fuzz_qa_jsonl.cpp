// tests/fuzz/fuzz_qa_jsonl.cpp: bytes -> the QA reader (JSON lines or a JSON array; default and
// renamed fields); what it accepts must hold its promises (trimmed, non-empty fields, lines in order)
// and split into disjoint forget/retain/holdout sets with semantic duplicates.
#include <string>
#include <string_view>

#include "loaders/qa.h"
#include "loaders/text_split.h"
#include "tests/fuzz/fuzz.h"

namespace {

bool trimmed_nonempty(const std::string& s) {
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  return !s.empty() && !blank(s.front()) && !blank(s.back());
}

void check(const hamu::QaDataset& d) {
  int64_t last_line = 0;
  for (const auto& p : d.pairs) {
    if (!trimmed_nonempty(p.question) || !trimmed_nonempty(p.answer) || p.line < last_line) std::abort();  // array elements may share a line
    for (const auto& para : p.paraphrases)
      if (!trimmed_nonempty(para.question) || !trimmed_nonempty(para.answer)) std::abort();
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
