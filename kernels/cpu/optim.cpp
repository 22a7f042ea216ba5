// kernels/cpu/optim.cpp: in-place SGD (momentum, dampening, weight decay, Nesterov) and AdamW steps,
// with PyTorch's update rules so a PyTorch user gets the same trajectory.
#include <cmath>

#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {
constexpr int64_t kParallelMin = 1 << 14;
}  // namespace

template <class T>
void sgd_step(const CpuCtx&, int64_t n, T* p, const T* g, T* buf, T lr, T momentum, T dampening, T weight_decay,
              bool nesterov, bool first_step) {
  if (momentum == T(0)) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + weight_decay * p[i]);
    return;
  }
  const T keep = T(1) - dampening;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T d = g[i] + weight_decay * p[i];
    // The first step seeds the buffer with the gradient itself, undamped (PyTorch's clone).
    const T b = first_step ? d : momentum * buf[i] + keep * d;
    buf[i] = b;
    p[i] -= lr * (nesterov ? d + momentum * b : b);
  }
}

template <class T>
void adamw_step(const CpuCtx&, int64_t n, T* p, const T* g, T* m, T* v, T lr, T beta1, T beta2, T eps,
                T weight_decay, int64_t step) {
  // Bias corrections in double: for beta2 near 1 and small step, 1 - beta2^t loses digits in float.
  const double bc1 = 1.0 - std::pow(double(beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(beta2), double(step));
  const T step_size = T(double(lr) / bc1);
  const T inv_sqrt_bc2 = T(1.0 / std::sqrt(bc2));
  const T decay = T(1) - lr * weight_decay;
  const T c1 = T(1) - beta1, c2 = T(1) - beta2;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T mi = beta1 * m[i] + c1 * gi;
    const T vi = beta2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    // Decay first, from the pre-step weights, as PyTorch's AdamW does.
    p[i] = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}

template void sgd_step<float>(const CpuCtx&, int64_t, float*, const float*, float*, float, float, float, float, bool,
                              bool);
template void sgd_step<double>(const CpuCtx&, int64_t, double*, const double*, double*, double, double, double,
                               double, bool, bool);
template void adamw_step<float>(const CpuCtx&, int64_t, float*, const float*, float*, float*, float, float, float,
                                float, float, int64_t);
template void adamw_step<double>(const CpuCtx&, int64_t, double*, const double*, double*, double*, double, double,
                                 double, double, double, int64_t);

}  // namespace hamu::kernels
