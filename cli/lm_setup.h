// cli/lm_setup.h: what the language-model paths of the commands share: what `--model DIR [--lora X]` names
// (a Hugging Face directory, a PEFT adapter directory and its base, or a base plus an adapter or a fresh
// adapter spec), loaded with its tokenizer, and the token that ends an answer under a prompt template.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "cli/args.h"
#include "loaders/template.h"
#include "loaders/tokenizer.h"
#include "models/lm/lm.h"

namespace hamu::cli {

// True when DIR holds a PEFT adapter (adapter_config.json).
bool is_adapter_dir(const std::string& path);
// A Hugging Face model directory or a PEFT adapter directory: what --model may name for a language model.
bool is_lm_path(const std::string& path);

// The base model an adapter directory names (base_model_name_or_path): an absolute path as it is; a relative
// one as peft reads it (against the working directory), else against the adapter directory. InputError naming
// the adapter and the field when it is absent, or when neither place is a Hugging Face directory.
std::string adapter_base_dir(const std::string& adapter_dir);

// What `--model M [--lora L]` names for a language model.
struct LmSource {
  std::string base;     // the Hugging Face directory (config.json, weights, tokenizer.json)
  std::string adapter;  // a PEFT adapter directory on top of it ("" = none)
  std::string spec;     // or a --lora spec: fresh adapters ("" = none)
  uint64_t seed = 0;    // fresh adapters' initialisation and every adapter's dropout stream
  DType base_dtype = DType::f32;  // --base-dtype: bf16 stores the frozen base Linear weights in bfloat16 (CUDA)
  bool has_lora() const { return !adapter.empty() || !spec.empty(); }
  std::string describe() const;  // "BASE", "BASE + adapter DIR" or "BASE + new LoRA SPEC"
};
// M is an adapter directory (its base resolved; then L must be empty) or a Hugging Face directory; L is an
// adapter directory or, when `allow_spec` (training), a spec. InputError naming --model / --lora: L with an
// image model or an adapter --model, a directory L that is no adapter, a spec where only adapters make sense.
LmSource resolve_lm_source(const std::string& model, const std::string& lora, bool allow_spec, uint64_t seed = 0);
// The base loaded (memory-mapped, copied to `device`) with the adapter attached (base frozen; its
// parameters() are then the adapters' A and B only), in eval mode: adapter dropout off until train(). With
// base_dtype bf16 the frozen base Linear weights are converted on the device one at a time
// (models::cast_frozen_linear_weights), so the float32 base never sits whole on the GPU.
std::shared_ptr<models::CausalLM> load_lm_source(const LmSource& src, Device device);

struct LmWithTokenizer {
  std::shared_ptr<models::CausalLM> lm;
  Tokenizer tok;
  LmSource source;
};
// The model --model DIR [--lora L] names (resolve_lm_source: L an adapter directory, or with `allow_spec` a spec
// for fresh adapters seeded by `seed`), with the base directory's tokenizer.json. InputError naming --model and
// the cause: DIR missing, not a Hugging Face or adapter directory, no tokenizer.json, or a tokenizer with more
// tokens than the model's vocabulary; --lora's errors name --lora, the adapter's name its files.
// base_dtype: what --base-dtype asked for (base_dtype_flag); check_base_dtype's refusals apply.
LmWithTokenizer load_lm_with_tokenizer(const std::string& dir, Device device, const std::string& lora = "",
                                       bool allow_spec = false, uint64_t seed = 0, DType base_dtype = DType::f32);

// --base-dtype float32|bfloat16 (issue #10's mixed precision): bfloat16 keeps a LoRA model's frozen base Linear
// weights in bfloat16 on CUDA (half their memory, tensor-core GEMMs accumulating in float32); everything trained or
// measured stays float32. InputError naming the flag for another value.
DType base_dtype_flag(const std::string& value);
// InputError naming --base-dtype when bfloat16 is asked for without LoRA adapters or on a CPU device
// (load_lm_with_tokenizer and load_lm_source check it too).
void check_base_dtype(DType base_dtype, bool has_lora, Device device);
// Its help line (default float32), for the commands that load a language model with --lora.
Flag base_dtype_help();

// --template VALUE, as an InputError naming the flag when it is not plain, llama2-chat or chatml.
PromptTemplate template_flag(const std::string& value);

// The id that ends an answer under `tmpl` (EOS; <|im_end|> for chatml). InputError naming --template when the
// tokenizer cannot express the template (no EOS; chatml without <|im_start|> or <|im_end|>).
int32_t template_stop_id(PromptTemplate tmpl, const Tokenizer& tok);

// The ids a greedy answer stops at (`hamu generate`, evaluation's answers): the base directory's end-of-sequence
// ids as transformers' generate() reads them (generation_config.json, else config.json:
// models::load_generation_defaults), then the template's end token (template_stop_id) when they lack it: an answer
// trained under the template ends there even where the model's own config says otherwise (chatml on a GPT-2
// base). Warns once on stderr about generation_config.json fields that hamu's plain argmax does not apply.
std::vector<int32_t> generation_stop_ids(const LmSource& src, const models::CausalLM& lm, PromptTemplate tmpl,
                                         const Tokenizer& tok);

}  // namespace hamu::cli
