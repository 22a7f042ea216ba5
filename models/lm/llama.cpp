// models/lm/llama.cpp: the Llama family (LlamaForCausalLM, also Mistral-, Qwen2- and TinyLlama-style
// checkpoints): RMSNorm, rotary embeddings with rope_theta (and linear / dynamic / llama3 / yarn scaling),
// grouped-query attention, SwiGLU MLP, biases where the config asks (Llama's attention_bias / mlp_bias, Qwen2's q/k/v),
// optionally tied lm_head. Names as Hugging Face's state dict.
#include <cmath>

#include "engine/ops.h"
#include "models/lm/families.h"

namespace hamu::models::lm_detail {
namespace {

using nn::Linear;

// Rotary tables [1 or B, T, head_dim] for positions int32 [T] or [B,T] (host) and the given inverse frequencies,
// computed as engine's rope_tables computes them for rope_theta (angles in F: float32 for a float32 model;
// emb = cat(freqs, freqs)), cos and sin multiplied by `scale` (yarn's attention factor) as transformers does.
// For the scaled rope types, whose frequencies the config determines.
template <class F>
RopeTables scaled_rope_tables(const Tensor& positions, const std::vector<double>& inv_freq, double scale, Device device) {
  const int64_t b = positions.dim() == 2 ? positions.shape()[0] : 1, t = positions.shape().back();
  const int64_t half = int64_t(inv_freq.size()), dim = 2 * half;
  const std::vector<int32_t> pos = positions.to_vector<int32_t>();
  std::vector<F> c(pos.size() * size_t(dim)), s(c.size());
  for (size_t p = 0; p < pos.size(); ++p) {
    if (pos[p] < 0) throw InputError("rope: negative position " + std::to_string(pos[p]));
    for (int64_t i = 0; i < half; ++i) {
      const F angle = F(pos[p]) * F(inv_freq[size_t(i)]);
      c[p * size_t(dim) + size_t(i)] = c[p * size_t(dim) + size_t(i + half)] = F(std::cos(angle)) * F(scale);
      s[p * size_t(dim) + size_t(i)] = s[p * size_t(dim) + size_t(i + half)] = F(std::sin(angle)) * F(scale);
    }
  }
  return {Tensor::from_vector(c, {b, t, dim}, device), Tensor::from_vector(s, {b, t, dim}, device)};
}

class RMSNorm : public nn::Module {
 public:
  RMSNorm(int64_t dim, double eps) : eps(eps) {
    weight = Tensor::full({dim}, 1.0);
    register_parameter("weight", &weight);
  }
  Tensor forward(const Tensor& x) override { return rms_norm(x, weight, eps); }
  Tensor weight;
  double eps;
};

class LlamaAttention : public nn::Module {
 public:
  LlamaAttention(const LmConfig& c, Rng& rng) : heads(c.num_heads), kv_heads(c.num_kv_heads), head_dim(c.head_dim) {
    q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, heads * head_dim, c.qkv_bias, rng));
    k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, kv_heads * head_dim, c.qkv_bias, rng));
    v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, kv_heads * head_dim, c.qkv_bias, rng));
    o_proj = register_module("o_proj", std::make_shared<Linear>(heads * head_dim, c.hidden_size, c.o_bias, rng));
  }
  Tensor forward(const Tensor&) override { throw Error("LlamaAttention: use attend()"); }
  // cache: null for a whole-sequence pass, else the decoding cache whose layer `layer` this is.
  Tensor attend(const Tensor& x, const RopeTables& rot, const Tensor& mask, KvCache* cache, int64_t layer) {
    const int64_t b = x.shape()[0], t = x.shape()[1];
    // Rotary on the projection's own [B,T,H,Dh] layout, then heads first for the attention GEMMs.
    Tensor q = permute(rope((*q_proj)(x).reshape({b, t, heads, head_dim}), rot), {0, 2, 1, 3});
    Tensor k = permute(rope((*k_proj)(x).reshape({b, t, kv_heads, head_dim}), rot), {0, 2, 1, 3});
    Tensor v = split_heads((*v_proj)(x), kv_heads, head_dim);
    return (*o_proj)(merge_heads(cache ? cache->attend(layer, q, k, v, mask) : gqa_attention(q, k, v, mask)));
  }
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;
  int64_t heads, kv_heads, head_dim;
};

class LlamaMlp : public nn::Module {
 public:
  LlamaMlp(const LmConfig& c, Rng& rng) {
    gate_proj = register_module("gate_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, c.mlp_bias, rng));
    up_proj = register_module("up_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, c.mlp_bias, rng));
    down_proj = register_module("down_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, c.mlp_bias, rng));
  }
  Tensor forward(const Tensor& x) override { return (*down_proj)(swiglu((*gate_proj)(x), (*up_proj)(x))); }
  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;
};

class LlamaDecoderLayer : public nn::Module {
 public:
  LlamaDecoderLayer(const LmConfig& c, Rng& rng) {
    self_attn = register_module("self_attn", std::make_shared<LlamaAttention>(c, rng));
    mlp = register_module("mlp", std::make_shared<LlamaMlp>(c, rng));
    input_layernorm = register_module("input_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.norm_eps));
    post_attention_layernorm =
        register_module("post_attention_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.norm_eps));
  }
  Tensor forward(const Tensor&) override { throw Error("LlamaDecoderLayer: use run()"); }
  Tensor run(const Tensor& h, const RopeTables& rot, const Tensor& mask, KvCache* cache, int64_t layer) {
    Tensor x = add(h, self_attn->attend((*input_layernorm)(h), rot, mask, cache, layer));
    return add(x, (*mlp)((*post_attention_layernorm)(x)));
  }
  std::shared_ptr<LlamaAttention> self_attn;
  std::shared_ptr<LlamaMlp> mlp;
  std::shared_ptr<RMSNorm> input_layernorm, post_attention_layernorm;
};

class LlamaBody : public nn::Module {
 public:
  LlamaBody(const LmConfig& c, Rng& rng) {
    embed_tokens = register_module("embed_tokens", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, rng));
    layers = register_module("layers", std::make_shared<ModuleList<LlamaDecoderLayer>>());
    for (int64_t i = 0; i < c.num_layers; ++i) layers->add(std::make_shared<LlamaDecoderLayer>(c, rng));
    norm = register_module("norm", std::make_shared<RMSNorm>(c.hidden_size, c.norm_eps));
  }
  Tensor forward(const Tensor&) override { throw Error("LlamaBody: called through LlamaForCausalLM"); }
  std::shared_ptr<nn::Embedding> embed_tokens;
  std::shared_ptr<ModuleList<LlamaDecoderLayer>> layers;
  std::shared_ptr<RMSNorm> norm;
};

class LlamaForCausalLM : public CausalLM {
 public:
  LlamaForCausalLM(const LmConfig& c, Rng& rng) : CausalLM(c) {
    model = register_module("model", std::make_shared<LlamaBody>(c, rng));
    if (!c.tie_word_embeddings) lm_head = register_module("lm_head", std::make_shared<Linear>(c.hidden_size, c.vocab_size, false, rng));
    // Hugging Face's _init_weights: N(0, initializer_range = 0.02) for every weight, ones for the norms, zero
    // biases.
    for (auto& [name, t] : named_parameters()) {
      Tensor p = t;
      if (name.find("norm.weight") != std::string::npos) p.fill_(1.0);
      else if (name.ends_with(".bias")) p.fill_(0.0);
      else rng.fill_normal(p, 0.0, 0.02);
    }
  }
  Tensor logits(const Tensor& ids, const Tensor& attention_mask, const Tensor& positions) override {
    check_lm_inputs(cfg_, ids, attention_mask, positions);
    const int64_t t = ids.shape()[1];
    if (cfg_.sliding_window > 0 && t > cfg_.sliding_window)
      throw InputError(cfg_.model_type + ": sequence of " + std::to_string(t) + " tokens is longer than sliding_window " +
                       std::to_string(cfg_.sliding_window) + " (sliding-window attention is not implemented)");
    return head(hidden(ids, attention_mask, positions.defined() ? positions : default_positions(t, Device{}), nullptr));
  }
  Tensor next_token_logits(const Tensor& ids, const Tensor& key_mask, const Tensor& positions, KvCache& cache) override {
    check_cached_inputs(cfg_, ids, key_mask, positions, cache);
    const int64_t t = ids.shape()[1];
    if (cfg_.sliding_window > 0 && cache.length() + t > cfg_.sliding_window)
      throw InputError(cfg_.model_type + ": " + std::to_string(cache.length() + t) + " tokens are more than sliding_window " +
                       std::to_string(cfg_.sliding_window) + " (sliding-window attention is not implemented)");
    return head(hidden(ids, key_mask, positions, &cache).narrow(1, t - 1, 1)).reshape({ids.shape()[0], cfg_.vocab_size});
  }
  // The final hidden states [B,T,C]; cache as in LlamaAttention::attend.
  Tensor hidden(const Tensor& ids, const Tensor& mask, const Tensor& positions, KvCache* cache) {
    Tensor h = (*model->embed_tokens)(ids);
    const RopeTables rot = rotary(positions.is_cuda() ? positions.to(Device{}) : positions, h);
    for (size_t i = 0; i < model->layers->items.size(); ++i) h = model->layers->items[i]->run(h, rot, mask, cache, int64_t(i));
    return (*model->norm)(h);
  }
  // The rotary tables for host positions: rope_theta's, or the scaled frequencies of rope_type.
  RopeTables rotary(const Tensor& positions, const Tensor& h) const {
    if (cfg_.rope_type == "dynamic") {
      // transformers recomputes dynamic frequencies only past max_position_embeddings; within it they are the
      // default ones. Longer contexts are not implemented.
      const std::vector<int32_t> pos = positions.to_vector<int32_t>();
      for (int32_t p : pos)
        if (p >= cfg_.max_positions)
          throw InputError(cfg_.model_type + ": position " + std::to_string(p) +
                           " is beyond max_position_embeddings " + std::to_string(cfg_.max_positions) +
                           " (rope_type 'dynamic' rescaling is not implemented)");
    }
    if (cfg_.rope_type == "default" || cfg_.rope_type == "dynamic")
      return rope_tables(positions, cfg_.head_dim, cfg_.rope_theta, h.dtype(), h.device());
    const std::vector<double> inv = cfg_.rope_inv_freq(h.dtype() == DType::f32);
    const double scale = cfg_.rope_attention_factor;
    return h.dtype() == DType::f32 ? scaled_rope_tables<float>(positions, inv, scale, h.device())
                                   : scaled_rope_tables<double>(positions, inv, scale, h.device());
  }
  Tensor head(const Tensor& h) { return lm_head ? (*lm_head)(h) : linear(h, model->embed_tokens->weight, Tensor()); }
  std::shared_ptr<LlamaBody> model;
  std::shared_ptr<Linear> lm_head;
};

}  // namespace

std::shared_ptr<CausalLM> build_llama(const LmConfig& cfg, Rng& rng) { return std::make_shared<LlamaForCausalLM>(cfg, rng); }

}  // namespace hamu::models::lm_detail
