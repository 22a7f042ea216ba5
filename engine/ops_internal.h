// engine/ops_internal.h: helpers shared by the op implementations (not part of the public API).
#pragma once
#include "engine/capture.h"
#include "engine/tensor.h"
#include "kernels/perf.h"

namespace hamu {

Tensor empty_like(const Tensor& x);
Tensor zeros_like(const Tensor& x);
// Broadcast x to `shape` (a materialised copy; differentiable).
Tensor expand_to(const Tensor& x, const Shape& shape);

// A tensor an op keeps for its backward. When the run chose bfloat16 activations
// (kernels::PerfOptions::bf16_activations, set by --base-dtype bfloat16), a float32 tensor is kept as a
// bfloat16 copy, half the memory between the forward and the backward, and widened back to float32 (rounded
// to bfloat16's 8 bits) when the backward reads it; otherwise it is the tensor itself, detached. Decided when
// the forward saves it, so a backward sees what its forward kept. Ops that save the same tensor (the q, k
// and v adapters of one normalised input) share one bfloat16 copy while it is alive, as they share the
// float32 tensor otherwise.
class SavedTensor {
 public:
  SavedTensor() = default;
  explicit SavedTensor(const Tensor& t);
  Tensor get() const { return narrowed_ ? t_.to(DType::f32) : t_; }
  bool narrowed() const { return narrowed_; }

 private:
  Tensor t_;
  bool narrowed_ = false;
};

}  // namespace hamu
