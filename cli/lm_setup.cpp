// cli/lm_setup.cpp: a language model as --model [--lora] names it (base directory, PEFT adapter), with its
// tokenizer, and the token a template's answer ends with.
#include "cli/lm_setup.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "kernels/perf.h"
#include "models/lm/generate.h"
#include "models/lm/lora.h"

namespace hamu::cli {

namespace fs = std::filesystem;

bool is_adapter_dir(const std::string& path) {
  std::error_code ec;
  return !path.empty() && fs::is_regular_file(fs::path(path) / "adapter_config.json", ec);
}

bool is_lm_path(const std::string& path) { return models::is_hf_dir(path) || is_adapter_dir(path); }

std::string adapter_base_dir(const std::string& adapter_dir) {
  const std::string cfg_path = (fs::path(adapter_dir) / "adapter_config.json").string();
  const Json cfg = load_json(cfg_path);
  const Json* b = cfg.is_object() ? cfg.find("base_model_name_or_path") : nullptr;
  if (!b || !b->is_string() || b->as_string().empty())
    throw InputError("--model: " + cfg_path + " names no base model (base_model_name_or_path): give it with --model BASE --lora " +
                     adapter_dir);
  const std::string base = b->as_string();
  if (fs::path(base).is_absolute()) {
    if (!models::is_hf_dir(base))
      throw InputError("--model: the base model of adapter " + adapter_dir + ", " + base +
                       " (base_model_name_or_path), is not a Hugging Face directory (missing, or no config.json)");
    return base;
  }
  if (models::is_hf_dir(base)) return base;  // peft's reading: relative to the working directory
  const std::string beside = (fs::path(adapter_dir) / base).lexically_normal().string();
  if (models::is_hf_dir(beside)) return beside;
  throw InputError("--model: the base model of adapter " + adapter_dir + ", '" + base +
                   "' (base_model_name_or_path), is not a Hugging Face directory, neither from the working directory nor as " +
                   beside + ": give it with --model BASE --lora " + adapter_dir);
}

std::string LmSource::describe() const {
  if (!adapter.empty()) return base + " + adapter " + adapter;
  if (!spec.empty()) return base + " + new LoRA " + spec;
  return base;
}

LmSource resolve_lm_source(const std::string& model, const std::string& lora, bool allow_spec, uint64_t seed) {
  LmSource src;
  src.seed = seed;
  if (is_adapter_dir(model)) {
    if (!lora.empty())
      throw InputError("--lora: --model " + model + " is an adapter already (give its base as --model to use another adapter)");
    src.base = adapter_base_dir(model);
    src.adapter = model;
    return src;
  }
  if (!lora.empty() && !models::is_hf_dir(model))
    throw InputError("--lora: LoRA adapts language models: --model must be a Hugging Face directory (gpt2 or llama family) "
                     "or an adapter directory, not '" + model + "'");
  src.base = model;
  if (lora.empty()) return src;
  std::error_code ec;
  if (is_adapter_dir(lora)) src.adapter = lora;
  else if (fs::is_directory(lora, ec))
    throw InputError("--lora: directory " + lora + " holds no adapter_config.json (not a PEFT adapter)");
  else if (!allow_spec)
    throw InputError("--lora: '" + lora + "' is not an adapter directory (a new adapter spec makes sense only when training or unlearning)");
  else src.spec = lora;
  if (!src.spec.empty()) models::parse_lora_spec(src.spec);  // a bad spec fails before the model loads
  return src;
}

void check_base_dtype(DType base_dtype, bool has_lora, Device device) {
  if (base_dtype != DType::bf16) return;
  if (!has_lora)
    throw InputError("--base-dtype bfloat16: only a LoRA model's frozen base is stored in bfloat16: give --lora (or an "
                     "adapter directory as --model)");
  if (!device.is_cuda())
    throw InputError("--base-dtype bfloat16: bfloat16 base weights are CUDA-only (give --device cuda); on the CPU the "
                     "base is float32");
}

std::shared_ptr<models::CausalLM> load_lm_source(const LmSource& src, Device device) {
  const bool bf16 = src.base_dtype == DType::bf16;
  check_base_dtype(src.base_dtype, src.has_lora(), device);
  // A bfloat16 base is read on the CPU and converted on the device weight by weight (below).
  std::shared_ptr<models::CausalLM> lm = models::load_hf_dir(src.base, bf16 ? Device{} : device).model;
  if (!src.adapter.empty()) {
    // An adapter file whose stored base weight replaces the base's (as peft loads it): said once per process,
    // though the working copy and the frozen original load the same adapter.
    static std::set<std::string> said;
    for (const std::string& note : models::load_lora(src.adapter, *lm, src.seed))
      if (said.insert(note).second) std::fprintf(stderr, "hamu: warning: %s\n", note.c_str());
  }
  if (!src.spec.empty()) {
    try {
      models::LoraSpec spec = models::parse_lora_spec(src.spec);
      // The default targets are Llama's seven projections; GPT-2 has no gate projection, so a spec that names
      // no targets takes the other six there (q, k, v -> c_attn, o, up, down) instead of failing on "gate".
      const bool named = src.spec.find("targets") != std::string::npos || src.spec.find("target_modules") != std::string::npos;
      if (!named && lm->config().family == models::LmFamily::gpt2) spec.targets = {"q", "k", "v", "o", "up", "down"};
      models::add_lora(*lm, spec, src.seed);
    } catch (const InputError& e) {
      const std::string what = e.what();
      if (what.rfind("--lora", 0) == 0) throw;
      throw InputError("--lora: " + (what.rfind("LoRA: ", 0) == 0 ? what.substr(6) : what));
    }
  }
  if (bf16) {
    models::cast_frozen_linear_weights(*lm, DType::bf16, device);
    lm->to(device);
    // The run opted into bfloat16: attention goes to the tensor cores too (f32 in and out, bf16 products), and
    // the activations ops keep for the backward are stored in bfloat16.
    kernels::PerfOptions perf = kernels::perf_options();
    perf.bf16_attention = true;
    perf.bf16_activations = true;
    kernels::set_perf_options(perf);
  }
  // Inference mode (adapter dropout off) for evaluation and generation; training and the unlearning steps switch it
  // on (unlearn/runner.cpp: the published step draws dropout, hence two passes), evaluations switch it off again.
  lm->eval();
  return lm;
}

LmWithTokenizer load_lm_with_tokenizer(const std::string& dir, Device device, const std::string& lora, bool allow_spec,
                                       uint64_t seed, DType base_dtype) {
  if (lora.empty()) {  // with --lora, resolve_lm_source says what --lora needs of --model
    if (!fs::exists(dir)) throw InputError("--model: " + dir + " does not exist");
    if (!is_lm_path(dir))
      throw InputError("--model: " + dir + " is not a Hugging Face model directory (no config.json) nor a LoRA adapter "
                       "(no adapter_config.json)");
  }
  LmSource src = resolve_lm_source(dir, lora, allow_spec, seed);
  src.base_dtype = base_dtype;
  check_base_dtype(src.base_dtype, src.has_lora(), device);  // before the tokenizer and the weights are read
  const std::string tok_path = (fs::path(src.base) / "tokenizer.json").string();
  if (!fs::exists(tok_path))
    throw InputError("--model: " + src.base + " has no tokenizer.json (the model's tokenizer is needed)");
  Tokenizer tok = Tokenizer::load(tok_path);  // before the weights: a bad tokenizer fails fast
  LmWithTokenizer out{load_lm_source(src, device), std::move(tok), std::move(src)};
  const int64_t vocab = out.lm->config().vocab_size;
  if (out.tok.vocab_size() > vocab)
    throw InputError("--model: " + tok_path + " has " + std::to_string(out.tok.vocab_size()) +
                     " tokens, more than the model's vocabulary of " + std::to_string(vocab));
  return out;
}

DType base_dtype_flag(const std::string& value) {
  if (value == "float32") return DType::f32;
  if (value != "bfloat16") throw InputError("--base-dtype: '" + value + "' is not float32 or bfloat16");
  return DType::bf16;
}

Flag base_dtype_help() {
  return {"--base-dtype", "T",
          "LoRA: float32, or bfloat16 for the frozen base Linear weights on cuda (half their memory, bf16 GEMMs "
          "accumulating in float32, attention on the tensor cores in bf16, activations kept for the backward in bf16; "
          "adapters, gradients and statistics stay float32)",
          "float32"};
}

PromptTemplate template_flag(const std::string& value) {
  try {
    return parse_template(value);
  } catch (const InputError& e) {
    throw InputError(std::string("--template: ") + e.what());
  }
}

std::vector<int32_t> generation_stop_ids(const LmSource& src, const models::CausalLM& lm, PromptTemplate tmpl,
                                         const Tokenizer& tok) {
  const models::GenerationDefaults d = models::load_generation_defaults(src.base, lm.config().vocab_size);
  if (!d.unapplied.empty()) {
    std::string fields;
    for (const std::string& f : d.unapplied) fields += (fields.empty() ? "" : ", ") + f;
    std::fprintf(stderr, "hamu: warning: %s sets %s, which hamu's greedy decoding does not apply: answers may differ "
                 "from transformers' generate() with that config\n", d.eos_from.c_str(), fields.c_str());
  }
  std::vector<int32_t> ids = d.eos_ids;
  const int32_t end = template_stop_id(tmpl, tok);
  if (std::find(ids.begin(), ids.end(), end) == ids.end()) ids.push_back(end);
  return ids;
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
