// models/lm/families.h: internal to models/lm: the family builders and the small modules they share.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/lm/lm.h"

namespace hamu::models::lm_detail {

std::shared_ptr<CausalLM> build_gpt2(const LmConfig& cfg, Rng& rng);
std::shared_ptr<CausalLM> build_llama(const LmConfig& cfg, Rng& rng);

// Children named "0", "1", ... called directly by their owner (blocks take more than one input).
template <class M> class ModuleList : public nn::Module {
 public:
  std::shared_ptr<M> add(std::shared_ptr<M> m) {
    items.push_back(m);
    return register_module(std::to_string(items.size() - 1), m);
  }
  Tensor forward(const Tensor&) override { throw Error("ModuleList: call its items, not the list"); }
  std::vector<std::shared_ptr<M>> items;
};

// ids [B,T] -> validated [B,T] int32 on the model's device; positions default to 0..T-1 ([T]).
void check_lm_inputs(const LmConfig& cfg, const Tensor& ids, const Tensor& attention_mask, const Tensor& positions);
Tensor default_positions(int64_t t, Device device);
// The inputs of CausalLM::next_token_logits: ids int32 [B,Tn], key_mask int32 [B, cache.length()+Tn] and
// positions int32 [B,Tn] or [Tn], on one device; InputError naming what does not fit.
void check_cached_inputs(const LmConfig& cfg, const Tensor& ids, const Tensor& key_mask, const Tensor& positions,
                         const KvCache& cache);

// [B,T,H*Dh] -> [B,H,T,Dh] and back (contiguous copies).
Tensor split_heads(const Tensor& x, int64_t heads, int64_t head_dim);
Tensor merge_heads(const Tensor& x);

}  // namespace hamu::models::lm_detail
