// unlearn/method.cpp: the default objectives of a method (cross-entropy on each side) and the losses
// shared by images and text (task_loss, sample_nll, task_kl).
#include "unlearn/method.h"

#include "engine/ops.h"

#include <vector>

namespace hamu {

Tensor Method::retain_objective(const MethodParams& p, const Tensor& logits, const Tensor& labels,
                                const Tensor& original_logits) const {
  return task_loss(logits, labels);
}

Tensor Method::forget_objective(const MethodParams& p, const Tensor& logits, const Tensor& labels,
                                const Tensor& original_logits) const {
  return task_loss(logits, labels);
}

namespace {

bool is_text(const Tensor& logits, const Tensor& labels) {
  if (logits.dim() == 2) return false;
  if (logits.dim() != 3 || labels.dim() != 2 || labels.shape()[0] != logits.shape()[0] ||
      labels.shape()[1] != logits.shape()[1])
    throw Error("unlearn: logits of rank " + std::to_string(logits.dim()) + " and labels of rank " +
                std::to_string(labels.dim()) + " are neither [N,C]/[N] (images) nor [B,T,V]/[B,T] (text)");
  return true;
}

// 1 at the positions (b, t) whose next label (b, t+1) is scored, else 0: [B*T] in the logits' dtype and device.
Tensor answer_position_mask(const Tensor& labels, DType dtype, const Device& device, int64_t* count) {
  const std::vector<int32_t> l = labels.to_vector<int32_t>();
  const int64_t b = labels.shape()[0], t = labels.shape()[1];
  std::vector<double> m(size_t(b * t), 0.0);
  int64_t n = 0;
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j + 1 < t; ++j)
      if (l[size_t(i * t + j + 1)] != -100) {
        m[size_t(i * t + j)] = 1.0;
        ++n;
      }
  *count = n;
  return Tensor::from_doubles(m, {b * t}, dtype, device);
}

}  // namespace

Tensor task_loss(const Tensor& logits, const Tensor& labels) {
  if (!is_text(logits, labels)) return cross_entropy(logits, labels);
  const int64_t n = count_scored_tokens(labels, 1, -100);
  return mul_scalar(sum(token_cross_entropy(logits, labels, 1, -100)), n ? 1.0 / double(n) : 0.0);
}

Tensor sample_nll(const Tensor& logits, const Tensor& labels) {
  if (!is_text(logits, labels)) return cross_entropy_per_sample(logits, labels);
  return sum(token_cross_entropy(logits, labels, 1, -100), 1);
}

Tensor task_kl(const Tensor& original_logits, const Tensor& logits, const Tensor& labels) {
  if (!is_text(logits, labels)) return mean(kl_div_per_sample(original_logits, logits));
  const int64_t b = logits.shape()[0], t = logits.shape()[1], v = logits.shape()[2];
  Tensor kl = kl_div_per_sample(original_logits.reshape({b * t, v}), logits.reshape({b * t, v}));
  int64_t n = 0;
  Tensor mask = answer_position_mask(labels.is_cuda() ? labels.to(Device{}) : labels, logits.dtype(), logits.device(), &n);
  return mul_scalar(sum(mul(kl, mask)), n ? 1.0 / double(n) : 0.0);
}

}  // namespace hamu
