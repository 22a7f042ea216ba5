// models/lm/gpt2.cpp: the GPT-2 family (GPT2LMHeadModel): learned positions, pre-LayerNorm blocks, fused qkv
// projection, GELU-tanh (or exact GELU, ReLU) MLP, lm_head tied to the token embedding unless the config unties
// it. Names as Hugging Face's state dict.
#include <algorithm>
#include <cmath>

#include "engine/ops.h"
#include "models/lm/families.h"

namespace hamu::models::lm_detail {
namespace {

using nn::LayerNorm;
using nn::Linear;

class Gpt2Attention : public nn::Module {
 public:
  Gpt2Attention(const LmConfig& c, int64_t layer, Rng& rng)
      : heads(c.num_heads), head_dim(c.head_dim),
        q_scale((c.scale_attn_weights ? 1.0 : std::sqrt(double(c.head_dim))) /
                (c.scale_attn_by_inverse_layer_idx ? double(layer + 1) : 1.0)) {
    c_attn = register_module("c_attn", std::make_shared<Linear>(c.hidden_size, 3 * c.hidden_size, true, rng));
    c_proj = register_module("c_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true, rng));
  }
  Tensor forward(const Tensor&) override { throw Error("Gpt2Attention: use attend()"); }
  // cache: null for a whole-sequence pass, else the decoding cache whose layer `layer` this is.
  Tensor attend(const Tensor& x, const Tensor& mask, KvCache* cache, int64_t layer) {
    const int64_t b = x.shape()[0], t = x.shape()[1];
    // [B,T,3C] -> [3,B,H,T,Dh] in one copy; q, k, v are contiguous slices of it.
    Tensor qkv = permute((*c_attn)(x).reshape({b, t, 3, heads, head_dim}), {2, 0, 3, 1, 4});
    auto part = [&](int i) { return qkv.narrow(0, i, 1).reshape({b, heads, t, head_dim}); };
    // The attention scales scores by 1/sqrt(head_dim); scale_attn_weights false undoes that and
    // scale_attn_by_inverse_layer_idx divides them by layer + 1: both the same as scaling q.
    const Tensor q = q_scale == 1.0 ? part(0) : mul_scalar(part(0), q_scale);
    const Tensor y = cache ? cache->attend(layer, q, part(1), part(2), mask) : gqa_attention(q, part(1), part(2), mask);
    return (*c_proj)(merge_heads(y));
  }
  std::shared_ptr<Linear> c_attn, c_proj;
  int64_t heads, head_dim;
  double q_scale;
};

class Gpt2Mlp : public nn::Module {
 public:
  Gpt2Mlp(const LmConfig& c, Rng& rng) : activation(c.activation) {
    c_fc = register_module("c_fc", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, true, rng));
    c_proj = register_module("c_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, true, rng));
  }
  Tensor forward(const Tensor& x) override {
    const Tensor h = (*c_fc)(x);
    return (*c_proj)(activation == "gelu" ? gelu(h) : activation == "relu" ? relu(h) : gelu_tanh(h));
  }
  std::shared_ptr<Linear> c_fc, c_proj;
  std::string activation;  // gelu_new (tanh), gelu (erf) or relu
};

class Gpt2Block : public nn::Module {
 public:
  Gpt2Block(const LmConfig& c, int64_t layer, Rng& rng) {
    ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(c.hidden_size, c.norm_eps));
    attn = register_module("attn", std::make_shared<Gpt2Attention>(c, layer, rng));
    ln_2 = register_module("ln_2", std::make_shared<LayerNorm>(c.hidden_size, c.norm_eps));
    mlp = register_module("mlp", std::make_shared<Gpt2Mlp>(c, rng));
  }
  Tensor forward(const Tensor&) override { throw Error("Gpt2Block: use run()"); }
  Tensor run(const Tensor& h, const Tensor& mask, KvCache* cache, int64_t layer) {
    Tensor x = add(h, attn->attend((*ln_1)(h), mask, cache, layer));
    return add(x, (*mlp)((*ln_2)(x)));
  }
  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<Gpt2Attention> attn;
  std::shared_ptr<Gpt2Mlp> mlp;
};

class Gpt2Body : public nn::Module {
 public:
  Gpt2Body(const LmConfig& c, Rng& rng) {
    wte = register_module("wte", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, rng));
    wpe = register_module("wpe", std::make_shared<nn::Embedding>(c.max_positions, c.hidden_size, rng));
    h = register_module("h", std::make_shared<ModuleList<Gpt2Block>>());
    for (int64_t i = 0; i < c.num_layers; ++i) h->add(std::make_shared<Gpt2Block>(c, i, rng));
    ln_f = register_module("ln_f", std::make_shared<LayerNorm>(c.hidden_size, c.norm_eps));
  }
  Tensor forward(const Tensor&) override { throw Error("Gpt2Body: called through Gpt2LMHeadModel"); }
  std::shared_ptr<nn::Embedding> wte, wpe;
  std::shared_ptr<ModuleList<Gpt2Block>> h;
  std::shared_ptr<LayerNorm> ln_f;
};

class Gpt2LMHeadModel : public CausalLM {
 public:
  Gpt2LMHeadModel(const LmConfig& c, Rng& rng) : CausalLM(c) {
    transformer = register_module("transformer", std::make_shared<Gpt2Body>(c, rng));
    if (!c.tie_word_embeddings) lm_head = register_module("lm_head", std::make_shared<Linear>(c.hidden_size, c.vocab_size, false, rng));
    // Hugging Face's _init_weights: N(0, 0.02) for weights and embeddings, zero biases, unit LayerNorms,
    // and c_proj weights N(0, 0.02 / sqrt(2 * n_layer)).
    for (auto& [name, t] : named_parameters()) {
      Tensor p = t;
      const bool is_norm = name.find(".ln_") != std::string::npos;
      if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) p.fill_(0.0);
      else if (is_norm) p.fill_(1.0);
      else if (name.find("c_proj.weight") != std::string::npos)
        rng.fill_normal(p, 0.0, 0.02 / std::sqrt(2.0 * double(c.num_layers)));
      else rng.fill_normal(p, 0.0, 0.02);
    }
  }
  Tensor logits(const Tensor& ids, const Tensor& attention_mask, const Tensor& positions) override {
    check_lm_inputs(cfg_, ids, attention_mask, positions);
    const int64_t t = ids.shape()[1];
    if (t > cfg_.max_positions)
      throw InputError("gpt2: sequence of " + std::to_string(t) + " tokens exceeds n_positions " +
                       std::to_string(cfg_.max_positions));
    return head(hidden(ids, attention_mask, positions.defined() ? positions : default_positions(t, ids.device()), nullptr));
  }
  Tensor next_token_logits(const Tensor& ids, const Tensor& key_mask, const Tensor& positions, KvCache& cache) override {
    check_cached_inputs(cfg_, ids, key_mask, positions, cache);
    const int64_t t = ids.shape()[1];
    // Left padding makes the cache longer than any row's positions: only the positions must fit the table.
    const std::vector<int32_t> pos = positions.to(Device{}).to_vector<int32_t>();
    const int32_t last = pos.empty() ? 0 : *std::max_element(pos.begin(), pos.end());
    if (last >= cfg_.max_positions)
      throw InputError("gpt2: position " + std::to_string(last) + " is beyond n_positions " + std::to_string(cfg_.max_positions));
    return head(hidden(ids, key_mask, positions, &cache).narrow(1, t - 1, 1)).reshape({ids.shape()[0], cfg_.vocab_size});
  }
  // The final hidden states [B,T,C]; cache as in Gpt2Attention::attend.
  Tensor hidden(const Tensor& ids, const Tensor& mask, const Tensor& positions, KvCache* cache) {
    Tensor h = add((*transformer->wte)(ids), (*transformer->wpe)(positions));
    for (size_t i = 0; i < transformer->h->items.size(); ++i) h = transformer->h->items[i]->run(h, mask, cache, int64_t(i));
    return (*transformer->ln_f)(h);
  }
  Tensor head(const Tensor& h) { return lm_head ? (*lm_head)(h) : linear(h, transformer->wte->weight, Tensor()); }
  bool hf_transposed(const std::string& name) const override {
    // Conv1D layers store [in, out].
    for (const char* s : {".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"}) {
      const std::string suffix(s);
      if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) return true;
    }
    return false;
  }
  std::shared_ptr<Gpt2Body> transformer;
  std::shared_ptr<Linear> lm_head;  // only when tie_word_embeddings is false
};

}  // namespace

std::shared_ptr<CausalLM> build_gpt2(const LmConfig& cfg, Rng& rng) { return std::make_shared<Gpt2LMHeadModel>(cfg, rng); }

}  // namespace hamu::models::lm_detail
