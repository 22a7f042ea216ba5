// engine/kv_cache.h: the key/value cache of incremental (token-by-token) decoding, and the attention of
// new queries against it. Inference only (nothing here is differentiable).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace hamu {

// Keys and values of every attention layer for the tokens decoded so far, preallocated to `capacity`
// positions per sequence ([B, Hkv, capacity, Dh] per layer, allocated on a layer's first use), so a decoding
// step writes one column and reads the prefix in place: nothing is recomputed and nothing is copied.
// Grouped-query models cache only their key/value heads.
class KvCache {
 public:
  explicit KvCache(int64_t capacity);

  int64_t capacity() const { return capacity_; }
  // Tokens cached per sequence (the same for every layer once a forward pass has gone through them all).
  int64_t length() const { return layers_.empty() ? 0 : layers_[0].length; }

  // Layer `layer`: appends the keys and values of Tn new tokens (k, v [B,Hkv,Tn,Dh]) after the cached ones
  // and returns the attention of their queries q [B,H,Tn,Dh] (H % Hkv == 0, scale 1/sqrt(Dh)) over every
  // cached key: new token i sits at position length()+i and sees keys j <= length()+i whose key_mask
  // [B, length()+Tn] (int32, 1 token / 0 padding) is 1. An empty cache takes the whole-sequence path
  // (gqa_attention), so a prefill gives exactly the uncached result. Error when a tensor requires a
  // gradient (run under NoGradGuard); InputError on shapes that do not fit or on overflowing the capacity.
  Tensor attend(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask);

 private:
  struct Layer {
    Tensor k, v;  // [B, Hkv, capacity, Dh]
    int64_t length = 0;
  };
  int64_t capacity_;
  std::vector<Layer> layers_;
};

}  // namespace hamu
