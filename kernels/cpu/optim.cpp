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

namespace {
// One AdamW element update from the step's scalars (adamw_scalars): the shared body of both entry points.
template <class T>
void adamw_update(int64_t n, T* p, const T* g, T* m, T* v, T step_size, T inv_sqrt_bc2, T decay, T beta1, T beta2,
                  T eps) {
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
}  // namespace

template <class T>
void adamw_step(const CpuCtx&, int64_t n, T* p, const T* g, T* m, T* v, T lr, T beta1, T beta2, T eps,
                T weight_decay, int64_t step) {
  const AdamwScalars<T> s = adamw_scalars(lr, beta1, beta2, weight_decay, step);
  adamw_update(n, p, g, m, v, s.step_size, s.inv_sqrt_bc2, s.decay, beta1, beta2, eps);
}

template <class T>
void adamw_step_dev(const CpuCtx&, int64_t n, T* p, const T* g, T* m, T* v, const T* scalars, const T* skip, T beta1,
                    T beta2, T eps) {
  if (*skip != T(0)) return;
  adamw_update(n, p, g, m, v, scalars[0], scalars[1], scalars[2], beta1, beta2, eps);
}

template void sgd_step<float>(const CpuCtx&, int64_t, float*, const float*, float*, float, float, float, float, bool,
                              bool);
template void sgd_step<double>(const CpuCtx&, int64_t, double*, const double*, double*, double, double, double,
                               double, bool, bool);
template void adamw_step<float>(const CpuCtx&, int64_t, float*, const float*, float*, float*, float, float, float,
                                float, float, int64_t);
template void adamw_step<double>(const CpuCtx&, int64_t, double*, const double*, double*, double*, double, double,
                                 double, double, double, int64_t);
template void adamw_step_dev<float>(const CpuCtx&, int64_t, float*, const float*, float*, float*, const float*,
                                    const float*, float, float, float);
template void adamw_step_dev<double>(const CpuCtx&, int64_t, double*, const double*, double*, double*, const double*,
                                     const double*, double, double, double);

}  // namespace hamu::kernels
