// kernels/cuda/optim.cu: in-place SGD and AdamW steps, total-norm gradient clipping, and dropout with the
// counter-based mask (CUDA).
// The formulas are kernels/cpu/optim.cpp's and kernels/cpu/dropout.cpp's, so masks are bit-identical to
// the CPU's and the optimizer trajectories agree to rounding.
#include <cmath>

#include "kernels/counter_hash.h"
#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {
// One SGD element update: the shared body of both entry points (momentum != 0; keep = 1 - dampening).
__device__ __forceinline__ void sgd_momentum_update(int64_t i, float* p, const float* g, float* buf, float lr,
                                                    float momentum, float keep, float weight_decay, bool nesterov,
                                                    bool first_step) {
  const float d = g[i] + weight_decay * p[i];
  const float b = first_step ? d : momentum * buf[i] + keep * d;
  buf[i] = b;
  p[i] -= lr * (nesterov ? d + momentum * b : b);
}
__device__ __forceinline__ void sgd_plain_update(int64_t i, float* p, const float* g, float lr, float weight_decay) {
  p[i] -= lr * (g[i] + weight_decay * p[i]);
}
}  // namespace

void sgd_step(const CudaCtx& ctx, int64_t n, float* p, const float* g, float* buf, float lr, float momentum,
              float dampening, float weight_decay, bool nesterov, bool first_step) {
  if (momentum == 0.f) {
    launch_map(ctx, "sgd_step_kernel", n, [=] __device__(int64_t i) { sgd_plain_update(i, p, g, lr, weight_decay); });
    return;
  }
  const float keep = 1.f - dampening;
  launch_map(ctx, "sgd_momentum_step_kernel", n, [=] __device__(int64_t i) {
    sgd_momentum_update(i, p, g, buf, lr, momentum, keep, weight_decay, nesterov, first_step);
  });
}

void sgd_step_dev(const CudaCtx& ctx, int64_t n, float* p, const float* g, float* buf, const float* lr,
                  const float* first, const float* skip, float momentum, float dampening, float weight_decay,
                  bool nesterov) {
  if (momentum == 0.f) {
    launch_map(ctx, "sgd_step_dev_kernel", n, [=] __device__(int64_t i) {
      if (*skip != 0.f) return;
      sgd_plain_update(i, p, g, *lr, weight_decay);
    });
    return;
  }
  const float keep = 1.f - dampening;
  launch_map(ctx, "sgd_momentum_step_dev_kernel", n, [=] __device__(int64_t i) {
    if (*skip != 0.f) return;
    sgd_momentum_update(i, p, g, buf, *lr, momentum, keep, weight_decay, nesterov, *first != 0.f);
  });
}

// The norm and coefficient in double, one thread, the partials in order: kernels/cpu/optim.cpp's arithmetic
// (IEEE double sqrt and division on both), so the coefficient has the same bits as the CPU's.
void clip_coef(const CudaCtx& ctx, int count, const float* sq, double max_norm, float* out, float* skip) {
  launch_map(ctx, "clip_coef_kernel", 1, [=] __device__(int64_t) {
    double total = 0;
    for (int i = 0; i < count; ++i) total += double(sq[i]);
    const double norm = sqrt(total);
    const double coef = max_norm / (norm + 1e-6);
    const bool finite = isfinite(norm);
    out[0] = finite && coef < 1.0 ? float(coef) : 1.f;
    out[1] = float(norm);
    if (!finite && skip) *skip = 1.f;
  });
}

void scale_by_coef(const CudaCtx& ctx, int64_t n, float* x, const float* coef) {
  launch_map(ctx, "scale_by_coef_kernel", n, [=] __device__(int64_t i) {
    const float c = *coef;
    if (c != 1.f) x[i] *= c;
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
