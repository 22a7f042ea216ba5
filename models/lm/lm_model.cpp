// models/lm/lm_model.cpp: what the language-model families share: building by family, input checks, head
// splitting.
#include "engine/ops.h"
#include "models/lm/families.h"

namespace hamu::models {

std::shared_ptr<CausalLM> build_lm(const LmConfig& cfg, Rng& rng) {
  cfg.validate(cfg.model_type);
  std::shared_ptr<CausalLM> m =
      cfg.family == LmFamily::gpt2 ? lm_detail::build_gpt2(cfg, rng) : lm_detail::build_llama(cfg, rng);
  m->assign_names();
  return m;
}

namespace lm_detail {

void check_lm_inputs(const LmConfig& cfg, const Tensor& ids, const Tensor& attention_mask, const Tensor& positions) {
  const std::string who = cfg.model_type;
  if (!ids.defined() || ids.dtype() != DType::i32 || ids.dim() != 2 || ids.shape()[0] < 1 || ids.shape()[1] < 1)
    throw InputError(who + ": token ids must be a non-empty int32 [B,T] tensor" +
                     (ids.defined() ? ", got " + std::string(dtype_name(ids.dtype())) + " " + shape_str(ids.shape()) : ""));
  if (attention_mask.defined() &&
      (attention_mask.dtype() != DType::i32 || attention_mask.shape() != ids.shape() || attention_mask.device() != ids.device()))
    throw InputError(who + ": attention_mask must be int32 " + shape_str(ids.shape()) + " on " + ids.device().str());
  if (positions.defined()) {
    const bool shape_ok = (positions.dim() == 1 && positions.shape()[0] == ids.shape()[1]) || positions.shape() == ids.shape();
    if (positions.dtype() != DType::i32 || !shape_ok)
      throw InputError(who + ": positions must be int32 [T] or [B,T] for ids " + shape_str(ids.shape()));
  }
}

void check_cached_inputs(const LmConfig& cfg, const Tensor& ids, const Tensor& key_mask, const Tensor& positions,
                         const KvCache& cache) {
  check_lm_inputs(cfg, ids, Tensor(), positions);
  if (!positions.defined()) throw InputError(cfg.model_type + ": incremental decoding needs explicit positions");
  const Shape want = {ids.shape()[0], cache.length() + ids.shape()[1]};
  if (!key_mask.defined() || key_mask.dtype() != DType::i32 || key_mask.shape() != want || key_mask.device() != ids.device())
    throw InputError(cfg.model_type + ": key_mask must be int32 " + shape_str(want) + " (cached and new tokens) on " +
                     ids.device().str());
}

Tensor default_positions(int64_t t, Device device) {
  std::vector<int32_t> p(static_cast<size_t>(t));
  for (int64_t i = 0; i < t; ++i) p[size_t(i)] = int32_t(i);
  return Tensor::from_vector<int32_t>(p, {t}, device);
}

Tensor split_heads(const Tensor& x, int64_t heads, int64_t head_dim) {
  return permute(x.reshape({x.shape()[0], x.shape()[1], heads, head_dim}), {0, 2, 1, 3});
}

Tensor merge_heads(const Tensor& x) {
  const int64_t b = x.shape()[0], h = x.shape()[1], t = x.shape()[2], d = x.shape()[3];
  return permute(x, {0, 2, 1, 3}).reshape({b, t, h * d});
}

}  // namespace lm_detail
}  // namespace hamu::models
