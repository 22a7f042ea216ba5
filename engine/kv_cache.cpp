// engine/kv_cache.cpp: the key/value cache of incremental decoding and the attention that reads it in place.
#include "engine/kv_cache.h"

#include <cmath>
#include <limits>
#include <string>

#include "engine/dispatch.h"
#include "engine/ops.h"

namespace hamu {

KvCache::KvCache(int64_t capacity) : capacity_(capacity) {
  if (capacity < 1) throw InputError("KV cache: capacity must be at least 1, got " + std::to_string(capacity));
}

Tensor KvCache::attend(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask) {
  const char* op = "kv_cache_attention";
  if (needs_grad({&q, &k, &v})) throw Error(std::string(op) + ": inference only; run it under NoGradGuard");
  check_same(op, q, k);
  check_same(op, q, v);
  if (q.dim() != 4 || k.dim() != 4 || k.shape() != v.shape() || k.shape()[0] != q.shape()[0] ||
      k.shape()[2] != q.shape()[2] || k.shape()[3] != q.shape()[3] || k.shape()[1] < 1 || q.shape()[1] % k.shape()[1])
    throw InputError(std::string(op) + ": q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " +
                     shape_str(v.shape()) + " must be [B,H,Tn,Dh], [B,Hkv,Tn,Dh], [B,Hkv,Tn,Dh] with H % Hkv == 0");
  if (layer < 0 || layer > int64_t(layers_.size()))
    throw InputError(std::string(op) + ": layer " + std::to_string(layer) + " used before layer " +
                     std::to_string(layers_.size()));
  const int64_t b = q.shape()[0], h = q.shape()[1], tn = q.shape()[2], dh = q.shape()[3], hkv = k.shape()[1];
  const bool fresh = layer == int64_t(layers_.size());
  if (!fresh) {
    const Tensor& ck = layers_[size_t(layer)].k;
    if (ck.shape()[0] != b || ck.shape()[1] != hkv || ck.shape()[3] != dh || ck.dtype() != q.dtype() ||
        ck.device() != q.device())
      throw InputError(std::string(op) + ": layer " + std::to_string(layer) + " caches " + shape_str(ck.shape()) +
                       ", the new keys are " + shape_str(k.shape()));
  }
  const int64_t start = fresh ? 0 : layers_[size_t(layer)].length, total = start + tn;
  if (total > capacity_)
    throw InputError(std::string(op) + ": " + std::to_string(total) + " tokens exceed the cache capacity " +
                     std::to_string(capacity_));
  if (!key_mask.defined() || key_mask.dtype() != DType::i32 || key_mask.shape() != Shape{b, total} ||
      key_mask.device() != q.device())
    throw InputError(std::string(op) + ": key_mask must be int32 [" + std::to_string(b) + "," + std::to_string(total) +
                     "] on " + q.device().str() + " (cached and new tokens)");
  if (fresh)
    layers_.push_back({Tensor::empty({b, hkv, capacity_, dh}, q.dtype(), q.device()),
                       Tensor::empty({b, hkv, capacity_, dh}, q.dtype(), q.device()), 0});
  Layer& c = layers_[size_t(layer)];
  const Tensor kc = k.contiguous(), vc = v.contiguous(), qc = q.contiguous();
  // The new columns: one [Tn*Dh] run per (batch, kv head), at position `start` of its [capacity*Dh] slab.
  dispatch(op, qc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::copy_rows(ctx, b * hkv, tn * dh, kc.data<T>(), tn * dh, c.k.data<T>() + start * dh, capacity_ * dh);
    kernels::copy_rows(ctx, b * hkv, tn * dh, vc.data<T>(), tn * dh, c.v.data<T>() + start * dh, capacity_ * dh);
  });
  c.length = total;
  if (start == 0) return gqa_attention(qc, kc, vc, key_mask);

  // The g query heads of one key/value head are adjacent in [B,H,Tn,Dh]: one [g*Tn, Dh] x [Dh, total] GEMM per
  // (batch, kv head) straight from the cache's slab (leading dimension Dh, batch stride capacity*Dh).
  const int64_t g = h / hkv;
  const double scale = 1.0 / std::sqrt(double(dh));
  Tensor scores = Tensor::empty({b, hkv, g, tn, total}, q.dtype(), q.device());
  dispatch(op, qc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::gemm_batched(ctx, false, true, g * tn, total, dh, T(scale), qc.data<T>(), dh, g * tn * dh, c.k.data<T>(), dh,
                          capacity_ * dh, T(0), scores.data<T>(), total, g * tn * total, b * hkv);
  });
  // Visibility as an additive bias: 0 where new token i may see key j (causal and not padding), the lowest
  // finite value elsewhere (finite, so a row with nothing visible stays finite instead of NaN).
  const std::vector<int32_t> mask = key_mask.to_vector<int32_t>();
  std::vector<double> bias(size_t(b * tn * total));
  const double hidden = std::numeric_limits<float>::lowest();
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t i = 0; i < tn; ++i)
      for (int64_t j = 0; j < total; ++j)
        bias[size_t((bi * tn + i) * total + j)] = (j <= start + i && mask[size_t(bi * total + j)]) ? 0.0 : hidden;
  const Tensor probs = softmax(add(scores, Tensor::from_doubles(bias, {b, 1, 1, tn, total}, q.dtype(), q.device())));
  Tensor y = Tensor::empty({b, h, tn, dh}, q.dtype(), q.device());
  dispatch(op, qc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::gemm_batched(ctx, false, false, g * tn, dh, total, T(1), probs.data<T>(), total, g * tn * total,
                          c.v.data<T>(), dh, capacity_ * dh, T(0), y.data<T>(), dh, g * tn * dh, b * hkv);
  });
  return y;
}

}  // namespace hamu
