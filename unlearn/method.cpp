// unlearn/method.cpp: the default objectives of a method (cross-entropy on each side).
#include "unlearn/method.h"

#include "engine/ops.h"

namespace hamu {

Tensor Method::retain_objective(const MethodParams& p, const Tensor& logits, const Tensor& labels,
                                const Tensor& original_logits) const {
  return cross_entropy(logits, labels);
}

Tensor Method::forget_objective(const MethodParams& p, const Tensor& logits, const Tensor& labels,
                                const Tensor& original_logits) const {
  return cross_entropy(logits, labels);
}

}  // namespace hamu
