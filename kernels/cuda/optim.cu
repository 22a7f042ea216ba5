// kernels/cuda/optim.cu: in-place SGD and AdamW steps, and dropout with the counter-based mask (CUDA).
// The formulas are kernels/cpu/optim.cpp's and kernels/cpu/dropout.cpp's, so masks are bit-identical to
// the CPU's and the optimizer trajectories agree to rounding.
#include <cmath>

#include "kernels/counter_hash.h"
#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

void sgd_step(const CudaCtx& ctx, int64_t n, float* p, const float* g, float* buf, float lr, float momentum,
              float dampening, float weight_decay, bool nesterov, bool first_step) {
  if (momentum == 0.f) {
    launch_map(ctx, "sgd_step_kernel", n, [=] __device__(int64_t i) { p[i] -= lr * (g[i] + weight_decay * p[i]); });
    return;
  }
  const float keep = 1.f - dampening;
  launch_map(ctx, "sgd_momentum_step_kernel", n, [=] __device__(int64_t i) {
    const float d = g[i] + weight_decay * p[i];
    const float b = first_step ? d : momentum * buf[i] + keep * d;
    buf[i] = b;
    p[i] -= lr * (nesterov ? d + momentum * b : b);
  });
}

namespace {
// One AdamW element update from the step's scalars: the shared body of both entry points.
__device__ __forceinline__ void adamw_update(int64_t i, float* p, const float* g, float* m, float* v, float step_size,
                                             float inv_sqrt_bc2, float decay, float beta1, float beta2, float eps) {
  const float gi = g[i];
  const float mi = beta1 * m[i] + (1.f - beta1) * gi;
  const float vi = beta2 * v[i] + (1.f - beta2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
}
}  // namespace

void adamw_step(const CudaCtx& ctx, int64_t n, float* p, const float* g, float* m, float* v, float lr, float beta1,
                float beta2, float eps, float weight_decay, int64_t step) {
  // Bias corrections on the host in double, exactly as the CPU backend forms them.
  const AdamwScalars<float> s = adamw_scalars(lr, beta1, beta2, weight_decay, step);
  launch_map(ctx, "adamw_step_kernel", n, [=] __device__(int64_t i) {
    adamw_update(i, p, g, m, v, s.step_size, s.inv_sqrt_bc2, s.decay, beta1, beta2, eps);
  });
}

void adamw_step_dev(const CudaCtx& ctx, int64_t n, float* p, const float* g, float* m, float* v, const float* scalars,
                    const float* skip, float beta1, float beta2, float eps) {
  launch_map(ctx, "adamw_step_dev_kernel", n, [=] __device__(int64_t i) {
    if (*skip != 0.f) return;
    adamw_update(i, p, g, m, v, scalars[0], scalars[1], scalars[2], beta1, beta2, eps);
  });
}

void dropout_forward(const CudaCtx& ctx, int64_t n, float p, uint64_t seed, const float* x, float* y, uint8_t* mask) {
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
  launch_map(ctx, "dropout_forward_kernel", n, [=] __device__(int64_t i) {
    const bool keep = counter_uniform(seed, uint64_t(i)) >= p;
    y[i] = keep ? x[i] * scale : 0.f;
    if (mask) mask[i] = keep ? 1 : 0;
  });
}

void dropout_backward(const CudaCtx& ctx, int64_t n, float p, const uint8_t* mask, const float* gy, float* gx) {
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
  launch_map(ctx, "dropout_backward_kernel", n, [=] __device__(int64_t i) { gx[i] = mask[i] ? gy[i] * scale : 0.f; });
}

}  // namespace hamu::kernels
