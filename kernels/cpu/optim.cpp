// kernels/cpu/optim.cpp: in-place SGD (momentum, dampening, weight decay, Nesterov) and AdamW steps,
// with PyTorch's update rules so a PyTorch user gets the same trajectory, and total-norm gradient clipping.
#include <cmath>

#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {
constexpr int64_t kParallelMin = 1 << 14;
}  // namespace

namespace {
// One SGD element update over the tensor: the shared body of both entry points.
template <class T>
void sgd_update(int64_t n, T* p, const T* g, T* buf, T lr, T momentum, T dampening, T weight_decay, bool nesterov,
                bool first_step) {
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
}  // namespace

template <class T>
void sgd_step(const CpuCtx&, int64_t n, T* p, const T* g, T* buf, T lr, T momentum, T dampening, T weight_decay,
              bool nesterov, bool first_step) {
  sgd_update(n, p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first_step);
}

template <class T>
void sgd_step_dev(const CpuCtx&, int64_t n, T* p, const T* g, T* buf, const T* lr, const T* first, const T* skip,
                  T momentum, T dampening, T weight_decay, bool nesterov) {
  if (*skip != T(0)) return;
  sgd_update(n, p, g, buf, *lr, momentum, dampening, weight_decay, nesterov, *first != T(0));
}

template <class T> void clip_coef(const CpuCtx&, int count, const T* sq, double max_norm, T* out, T* skip) {
  double total = 0;
  for (int i = 0; i < count; ++i) total += double(sq[i]);
  const double norm = std::sqrt(total);
  const double coef = max_norm / (norm + 1e-6);
  const bool finite = std::isfinite(norm);
  out[0] = finite && coef < 1.0 ? T(coef) : T(1);
  out[1] = T(norm);
  if (!finite && skip) *skip = T(1);
}

template <class T> void scale_by_coef(const CpuCtx&, int64_t n, T* x, const T* coef) {
  const T c = *coef;
  if (c == T(1)) return;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] *= c;
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
template void sgd_step_dev<float>(const CpuCtx&, int64_t, float*, const float*, float*, const float*, const float*,
                                  const float*, float, float, float, bool);
template void sgd_step_dev<double>(const CpuCtx&, int64_t, double*, const double*, double*, const double*,
                                   const double*, const double*, double, double, double, bool);
template void clip_coef<float>(const CpuCtx&, int, const float*, double, float*, float*);
template void clip_coef<double>(const CpuCtx&, int, const double*, double, double*, double*);
template void scale_by_coef<float>(const CpuCtx&, int64_t, float*, const float*);
template void scale_by_coef<double>(const CpuCtx&, int64_t, double*, const double*);
template void adamw_step<float>(const CpuCtx&, int64_t, float*, const float*, float*, float*, float, float, float,
                                float, float, int64_t);
template void adamw_step<double>(const CpuCtx&, int64_t, double*, const double*, double*, double*, double, double,
                                 double, double, double, int64_t);
template void adamw_step_dev<float>(const CpuCtx&, int64_t, float*, const float*, float*, float*, const float*,
                                    const float*, float, float, float);
template void adamw_step_dev<double>(const CpuCtx&, int64_t, double*, const double*, double*, double*, const double*,
                                     const double*, double, double, double);

}  // namespace hamu::kernels
