// tests/test_text_answer.cpp: the answer text of a greedy continuation (loaders/template.h qa_answer_text).
// Under TOFU's tokenisation rule the last prompt token can hold the answer's first word (the plain template's
// trailing space merged with it); generating the pair's own answer tokens must give back the whole answer,
// first word included, for every fixture tokenizer and template it can express.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "loaders/template.h"
#include "loaders/tokenizer.h"

using namespace hamu;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(__FILE__).parent_path() / "fixtures";

// The answer text when the model generates exactly the pair's answer tokens (end token excluded).
std::string regenerated(const Tokenizer& tok, PromptTemplate t, const std::string& q, const std::string& a,
                        bool* straddles) {
  const QaTokens s = tokenize_qa(tok, t, q, a, {});
  const std::vector<int32_t> prompt(s.ids.begin(), s.ids.begin() + s.n_prompt);
  const std::vector<int32_t> generated(s.ids.begin() + s.n_prompt, s.ids.end() - 1);
  *straddles = tok.decode(generated, true).find(a) == std::string::npos;
  return qa_answer_text(tok, template_prompt(t, q), prompt, generated);
}

}  // namespace

TEST_CASE("qa_answer_text: the first answer word held by the last prompt token is kept") {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"Who wrote the novel about the river city?", "Alice wrote it in 1999."},
      {"Where was the famous teacher born?", "She was born in Paris."},
      {"What is a soldierfish?", "the larger squirrelfishes"},
      {"When did Carol win the award?", "In the year 2024, after her second novel."}};
  int straddled = 0;
  for (const char* name : {"gpt2", "llama"}) {
    const Tokenizer tok = Tokenizer::load((kFixtures / "lm_text" / name).string());
    for (PromptTemplate t : {PromptTemplate::plain, PromptTemplate::llama2_chat}) {
      for (const auto& [q, a] : pairs) {
        bool straddles = false;
        CAPTURE(name);
        CAPTURE(template_name(t));
        CAPTURE(q);
        CHECK(regenerated(tok, t, q, a, &straddles) == a);
        straddled += straddles;
      }
    }
  }
  // The case the function exists for occurs in the fixtures (decoding the generated ids alone loses a word).
  CHECK(straddled > 0);
  // Nothing generated: an empty answer, not the prompt's tail.
  const Tokenizer tok = Tokenizer::load((kFixtures / "lm_text" / "gpt2").string());
  const std::string prompt = template_prompt(PromptTemplate::plain, "Who?");
  CHECK(qa_answer_text(tok, prompt, tok.encode(prompt, true), {}) == "");
}
