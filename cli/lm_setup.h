// cli/lm_setup.h: what `hamu generate` and the text path of `hamu eval` share: a Hugging Face model directory
// loaded with its tokenizer, and the token that ends an answer under a prompt template.
#pragma once
#include <memory>
#include <string>

#include "loaders/template.h"
#include "loaders/tokenizer.h"
#include "models/lm/lm.h"

namespace hamu::cli {

struct LmWithTokenizer {
  std::shared_ptr<models::CausalLM> lm;
  Tokenizer tok;
};
// DIR/config.json + weights and DIR/tokenizer.json. InputError naming --model and the cause: DIR missing, not
// a Hugging Face directory, no tokenizer.json, or a tokenizer with more tokens than the model's vocabulary.
LmWithTokenizer load_lm_with_tokenizer(const std::string& dir, Device device);

// --template VALUE, as an InputError naming the flag when it is not plain, llama2-chat or chatml.
PromptTemplate template_flag(const std::string& value);

// The id that ends an answer under `tmpl` (EOS; <|im_end|> for chatml). InputError naming --template when the
// tokenizer cannot express the template (no EOS; chatml without <|im_start|> or <|im_end|>).
int32_t template_stop_id(PromptTemplate tmpl, const Tokenizer& tok);

}  // namespace hamu::cli
