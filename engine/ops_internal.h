// engine/ops_internal.h: helpers shared by the op implementations (not part of the public API).
#pragma once
#include "engine/capture.h"
#include "engine/tensor.h"

namespace hamu {

Tensor empty_like(const Tensor& x);
Tensor zeros_like(const Tensor& x);
// Broadcast x to `shape` (a materialised copy; differentiable).
Tensor expand_to(const Tensor& x, const Shape& shape);

}  // namespace hamu
