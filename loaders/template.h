// loaders/template.h: prompt templates (plain, llama2-chat, chatml) and the completion-only
// tokenisation of a QA pair (prompt tokens carry no loss), the same in training, evaluation and generation.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "loaders/tokenizer.h"

namespace hamu {

enum class PromptTemplate { plain, llama2_chat, chatml };

// "plain", "llama2-chat", "chatml"; anything else is an InputError listing these.
PromptTemplate parse_template(std::string_view name);
const char* template_name(PromptTemplate t);

// The prompt text for a question:
//   plain        "Question: {q}\nAnswer: "
//   llama2-chat  "[INST] {q} [/INST] "   (the BOS comes from the tokenizer's post-processor)
//   chatml       "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
std::string template_prompt(PromptTemplate t, std::string_view question);

// Id that ends an answer: EOS for plain and llama2-chat, <|im_end|> for chatml. InputError when the
// tokenizer lacks it ("template chatml needs token <|im_end|>").
int32_t template_end_id(PromptTemplate t, const Tokenizer& tok);

// What to do with a pair longer than max_length tokens.
enum class Overlong {
  truncate,  // keep the first max_length tokens (the right end, answer first, is cut) and count it
  refuse,    // InputError naming the pair's length and the limit
};

struct QaTemplateOptions {
  int64_t max_length = 0;  // 0: no limit
  Overlong overlong = Overlong::truncate;
};

// One tokenised QA pair. labels[i] is ids[i] for answer and end tokens and -100 for prompt tokens
// (unshifted, as Hugging Face labels are: the model shifts them when it scores token i+1 from i).
struct QaTokens {
  std::vector<int32_t> ids;
  std::vector<int32_t> labels;
  int64_t n_prompt = 0;     // tokens carrying no loss (after truncation: at most ids.size())
  bool truncated = false;
  int64_t length() const { return int64_t(ids.size()); }  // attention mask: ones over [0, length)
};

inline constexpr int32_t kIgnoreLabel = -100;

// The rule of the published code (TOFU's convert_raw_data_to_model_format): the whole text
// prompt + answer is tokenised once with special tokens (BOS first where the post-processor adds
// one) and the end id appended; the first len(tokenise(prompt)) tokens are the prompt and carry no
// loss, every later token (the answer and the end token) does. The boundary is taken from the prompt
// alone, so a merge across it (e.g. Llama's "▁" + answer) counts on the prompt's side, as there.
QaTokens tokenize_qa(const Tokenizer& tok, PromptTemplate t, std::string_view question, std::string_view answer,
                     const QaTemplateOptions& options = {});

// Many pairs: the same, plus how many were truncated (one warning line for the caller to print, or
// "" when none was).
struct QaBatchTokens {
  std::vector<QaTokens> pairs;
  int64_t truncated = 0;
  std::string warning;
};
QaBatchTokens tokenize_qa_pairs(const Tokenizer& tok, PromptTemplate t,
                                const std::vector<std::pair<std::string, std::string>>& pairs,
                                const QaTemplateOptions& options = {});

// The answer text of a greedy continuation: decode(prompt ids + generated) after the text of `prompt` (the
// template's prompt) tokenised alone, trimmed. Under TOFU's rule (prompt + answer tokenised in one piece,
// n_prompt = the prompt's own token count) a byte-level BPE merges the plain template's trailing space with
// the answer's first word, so the last prompt token already holds that word: decoding only the generated ids
// lost it. Where the decoded sequence does not start with that text, the generated ids alone.
std::string qa_answer_text(const Tokenizer& tok, const std::string& prompt, const std::vector<int32_t>& prompt_ids,
                           const std::vector<int32_t>& generated);

}  // namespace hamu
