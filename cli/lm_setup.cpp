// cli/lm_setup.cpp: a language-model directory with its tokenizer, and the token a template's answer ends with.
#include "cli/lm_setup.h"

#include <filesystem>

namespace hamu::cli {

LmWithTokenizer load_lm_with_tokenizer(const std::string& dir, Device device) {
  namespace fs = std::filesystem;
  if (!fs::exists(dir)) throw InputError("--model: " + dir + " does not exist");
  if (!models::is_hf_dir(dir))
    throw InputError("--model: " + dir + " is not a Hugging Face model directory (no config.json)");
  const std::string tok_path = (fs::path(dir) / "tokenizer.json").string();
  if (!fs::exists(tok_path)) throw InputError("--model: " + dir + " has no tokenizer.json (the model's tokenizer is needed)");
  LmWithTokenizer out{models::load_hf_dir(dir, device).model, Tokenizer::load(tok_path)};
  const int64_t vocab = out.lm->config().vocab_size;
  if (out.tok.vocab_size() > vocab)
    throw InputError("--model: " + tok_path + " has " + std::to_string(out.tok.vocab_size()) +
                     " tokens, more than the model's vocabulary of " + std::to_string(vocab));
  return out;
}

PromptTemplate template_flag(const std::string& value) {
  try {
    return parse_template(value);
  } catch (const InputError& e) {
    throw InputError(std::string("--template: ") + e.what());
  }
}

int32_t template_stop_id(PromptTemplate tmpl, const Tokenizer& tok) {
  // chatml prompts are made of <|im_start|> / <|im_end|> turns: both must be single tokens.
  if (tmpl == PromptTemplate::chatml && tok.token_to_id("<|im_start|>") < 0)
    throw InputError("--template chatml needs token <|im_start|> (tokenizer " + tok.source() + " has none)");
  try {
    return template_end_id(tmpl, tok);
  } catch (const InputError& e) {
    throw InputError(std::string("--template: ") + e.what());
  }
}

}  // namespace hamu::cli
