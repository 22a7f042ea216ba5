// models/lm/lm.h: decoder-only language models (gpt2 and llama families) whose parameters carry Hugging
// Face's state-dict names, our own small config (gpt-small), the causal-LM loss, and Hugging Face model
// directories (config.json + model.safetensors or a sharded index), loaded and saved.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/json.h"
#include "engine/kv_cache.h"
#include "engine/nn.h"
#include "engine/rng.h"
#include "models/checkpoint.h"

namespace hamu::models {

enum class LmFamily { gpt2, llama };

// The architecture of a language model, in Hugging Face's terms.
struct LmConfig {
  LmFamily family = LmFamily::gpt2;
  // GPT2LMHeadModel | LlamaForCausalLM | MistralForCausalLM | Qwen2ForCausalLM (the last three: family llama)
  std::string architecture = "GPT2LMHeadModel";
  std::string model_type = "gpt2";  // gpt2 | llama | mistral | qwen2
  int64_t vocab_size = 0, hidden_size = 0, num_layers = 0, num_heads = 0;
  int64_t num_kv_heads = 0;       // llama: grouped-query attention (== num_heads for plain multi-head)
  int64_t head_dim = 0;           // hidden_size / num_heads unless the config says otherwise (llama)
  int64_t intermediate_size = 0;  // MLP width (gpt2: n_inner or 4 * hidden)
  int64_t max_positions = 0;      // gpt2: n_positions (learned); llama: max_position_embeddings
  double norm_eps = 1e-5;         // layer_norm_epsilon | rms_norm_eps
  double rope_theta = 10000.0;
  bool tie_word_embeddings = true;
  int64_t sliding_window = 0;     // mistral, qwen2: 0 when absent; longer sequences are refused
  // gpt2: activation_function (gelu_new, gelu_pytorch_tanh, gelu, relu) and attention scores divided by the
  // layer number (scale_attn_by_inverse_layer_idx).
  std::string activation = "gelu_new";
  bool scale_attn_by_inverse_layer_idx = false;
  bool scale_attn_weights = true;  // gpt2: false leaves the scores unscaled by 1/sqrt(head_dim)
  // llama family: biases on q/k/v (llama attention_bias, qwen2 always), on o_proj (llama attention_bias), on the
  // MLP projections (llama mlp_bias).
  bool qkv_bias = false, o_bias = false, mlp_bias = false;
  // llama family: rotary scaling (rope_scaling / rope_parameters): default | linear | dynamic | llama3 | yarn and
  // their parameters (factor; original_max_position_embeddings; llama3's low/high_freq_factor; yarn's beta_fast,
  // beta_slow, truncate and the attention factor that multiplies cos and sin).
  std::string rope_type = "default";
  double rope_factor = 1.0, rope_low_freq_factor = 1.0, rope_high_freq_factor = 4.0;
  int64_t rope_original_max_positions = 0;
  double rope_beta_fast = 32.0, rope_beta_slow = 1.0, rope_attention_factor = 1.0;
  bool rope_truncate = true;
  int64_t bos_token_id = -1, eos_token_id = -1;
  // The config.json this came from (written back on save so fields we do not use survive); null for
  // configs made here.
  Json source;

  std::string describe() const;  // "llama (2 layers, hidden 64, 4/2 heads, vocab 256)"
  // Checks sizes for consistency; InputError naming `where` and the field.
  void validate(const std::string& where) const;
  // llama family: the rotary inverse frequencies (head_dim / 2) as transformers computes them for rope_type,
  // in float32 arithmetic when `single` (a float32 model), else in double.
  std::vector<double> rope_inv_freq(bool single) const;
  // A config.json for this model that transformers' from_pretrained reads.
  Json to_hf_json() const;
  // Parses and validates a config.json: an unknown architecture or model_type is an InputError naming it,
  // a missing field an InputError naming the field (`where` is the file).
  static LmConfig from_hf_json(const Json& j, const std::string& where);
};

// Our own small configs, buildable by name: "gpt-small" = a GPT-2-style decoder that trains from scratch
// on the CPU in minutes (4 layers, 4 heads, hidden 128, context 128).
const std::vector<std::string>& lm_names();
LmConfig lm_config_by_name(const std::string& name, int64_t vocab_size);

// A causal language model. Parameters are named exactly as in Hugging Face's state dict
// ("transformer.h.0.attn.c_attn.weight", "model.layers.0.self_attn.q_proj.weight", "lm_head.weight"), all
// nn::Linear in [out, in] layout; GPT-2's Conv1D weights ([in, out] in Hugging Face files) are transposed
// when a directory is read or written (hf_transposed says which). Dropout is not applied (eval behaviour).
class CausalLM : public nn::Module {
 public:
  // ids: int32 [B,T] -> logits [B,T,V]. attention_mask: int32 [B,T] (1 token, 0 padding) or undefined;
  // positions: int32 [T] or [B,T], or undefined for 0..T-1 (Hugging Face's default without position_ids).
  virtual Tensor logits(const Tensor& ids, const Tensor& attention_mask = {}, const Tensor& positions = {}) = 0;
  // Incremental decoding (inference only, under NoGradGuard): ids [B,Tn] are the tokens that follow the
  // cache.length() tokens already in `cache`; key_mask int32 [B, cache.length()+Tn] (1 token, 0 padding) covers
  // the cached and the new tokens; positions int32 [B,Tn]. Appends the new tokens' keys and values to the cache
  // and returns the logits of the last new token, [B,V]. On an empty cache it computes what logits() does.
  virtual Tensor next_token_logits(const Tensor& ids, const Tensor& key_mask, const Tensor& positions, KvCache& cache) = 0;
  Tensor forward(const Tensor& ids) override { return logits(ids); }
  const LmConfig& config() const { return cfg_; }
  // True for parameters whose Hugging Face layout is the transpose of ours.
  virtual bool hf_transposed(const std::string& name) const { return false; }

 protected:
  explicit CausalLM(LmConfig cfg) : cfg_(std::move(cfg)) {}
  LmConfig cfg_;
};

// A freshly initialised model (Hugging Face's initialisation: N(0, 0.02) weights, zero biases, unit norms;
// gpt2's residual projections scaled by 1/sqrt(2 * layers)).
std::shared_ptr<CausalLM> build_lm(const LmConfig& cfg, Rng& rng);

// Per-token next-token losses [B,T] of logits [B,T,V] against labels [B,T] (int32, -100 = no loss), shifted
// as Hugging Face does (position t predicts labels[:, t+1]; the last position carries no loss).
Tensor lm_token_losses(const Tensor& logits, const Tensor& labels);
// The mean of those over the scored tokens (Hugging Face's loss); 0 when none is scored.
Tensor lm_loss(const Tensor& logits, const Tensor& labels);
// Per-sequence sums [B] (for sequence-level losses).
Tensor lm_sequence_losses(const Tensor& logits, const Tensor& labels);

// ---- Hugging Face directories (models/lm/hf_dir.cpp)

// True when `path` is a directory holding a config.json.
bool is_hf_dir(const std::string& path);
// Reads and validates DIR/config.json.
LmConfig load_hf_config(const std::string& dir);

struct LoadedLm {
  std::shared_ptr<CausalLM> model;
  std::string path;
};
// Loads config.json and the weights (model.safetensors, or the shards of model.safetensors.index.json),
// memory-mapped and converted (F32/F16/BF16) to float32, then moved to `device`. A missing tensor, a shape
// mismatch, a shard the index names but that is absent or truncated, or an unexpected tensor is an
// InputError naming the file and the tensor; known buffers (attn.bias, attn.masked_bias,
// rotary_emb.inv_freq) are skipped.
LoadedLm load_hf_dir(const std::string& dir, Device device = {});
// Writes DIR/config.json and DIR/model.safetensors (float32, {"format": "pt"} metadata, tied weights once,
// Hugging Face layout), each atomically; creates DIR when needed.
void save_hf_dir(const std::string& dir, CausalLM& model);

// Whatever `--model PATH` names: a Hugging Face directory (lm set) or a hamu checkpoint file (checkpoint
// set); module is the model either way.
struct AnyModel {
  std::shared_ptr<nn::Module> module;
  std::shared_ptr<CausalLM> lm;
  std::shared_ptr<LoadedModel> checkpoint;
};
AnyModel load_any(const std::string& path, Device device = {});

}  // namespace hamu::models
