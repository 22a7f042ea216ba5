// kernels/cuda/lm.cu: language-model kernels (CUDA): RMSNorm, rotary embeddings, GELU-tanh, SwiGLU, the
// masked causal attention softmax and token cross-entropy fused with the log-softmax. Same formulas as
// kernels/cpu/lm.cpp. Straightforward kernels: one CTA per row for the row-wise ones, a grid-stride map for
// the elementwise ones. The fused, tiled attention kernels are in kernels/cuda/attention.cu.
#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

constexpr int kRowThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }

// ---- RMSNorm
__global__ void rmsnorm_forward_kernel(int64_t rows, int64_t d, const float* __restrict__ x, const float* __restrict__ w,
                                       float eps, float* __restrict__ y, float* __restrict__ rstd) {
  __shared__ double sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    double ss = 0;
    for (int64_t k = threadIdx.x; k < d; k += blockDim.x) ss += double(xr[k]) * double(xr[k]);
    ss = block_sum(ss, sh);
    const float inv = 1.f / sqrtf(float(ss / double(d)) + eps);
    if (threadIdx.x == 0) rstd[r] = inv;
    for (int64_t k = threadIdx.x; k < d; k += blockDim.x) yr[k] = w[k] * (xr[k] * inv);
  }
}

__global__ void rmsnorm_backward_data_kernel(int64_t rows, int64_t d, const float* __restrict__ x,
                                             const float* __restrict__ gy, const float* __restrict__ w,
                                             const float* __restrict__ rstd, float* __restrict__ gx) {
  __shared__ double sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * d;
    const float* gr = gy + r * d;
    float* gxr = gx + r * d;
    const double s = rstd[r];
    double dot = 0;
    for (int64_t k = threadIdx.x; k < d; k += blockDim.x) dot += double(w[k]) * double(gr[k]) * double(xr[k]);
    dot = block_sum(dot, sh);
    const double c = dot * s * s * s / double(d);
    for (int64_t k = threadIdx.x; k < d; k += blockDim.x)
      gxr[k] = float(s * double(w[k]) * double(gr[k]) - double(xr[k]) * c);
  }
}

// One thread per column, rows in order: deterministic, like the CPU's column blocks.
__global__ void rmsnorm_backward_weight_kernel(int64_t rows, int64_t d, const float* __restrict__ x,
                                               const float* __restrict__ gy, const float* __restrict__ rstd,
                                               float* __restrict__ gw) {
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < d; k += int64_t(gridDim.x) * blockDim.x) {
    double acc = 0;
    for (int64_t r = 0; r < rows; ++r) acc += double(gy[r * d + k]) * double(x[r * d + k]) * double(rstd[r]);
    gw[k] += float(acc);
  }
}

// ---- attention softmax (causal + key padding mask); probs may alias scores
__global__ void attention_softmax_kernel(int64_t b, int64_t h, int64_t t, float scale, const int32_t* __restrict__ mask,
                                         const float* scores, float* probs) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const int64_t rows = b * h * t;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t i = r % t, batch = r / (h * t);
    const int32_t* km = mask ? mask + batch * t : nullptr;
    const float* sr = scores + r * t;
    float* pr = probs + r * t;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x)
      if (!km || km[j]) m = fmaxf(m, scale * sr[j]);
    m = block_max(m, shf, -INFINITY);
    if (m == -INFINITY) {
      for (int64_t j = threadIdx.x; j < t; j += blockDim.x) pr[j] = 0.f;
      continue;
    }
    double s = 0;
    for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
      const float e = (j <= i && (!km || km[j])) ? expf(scale * sr[j] - m) : 0.f;
      pr[j] = e;
      s += e;
    }
    const float inv = float(1.0 / block_sum(s, shd));
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) pr[j] *= inv;
  }
}

// ---- token cross-entropy
__device__ __forceinline__ int32_t target_of(const int32_t* labels, int64_t r, int64_t t, int64_t shift, int32_t ignore) {
  const int64_t i = r / t, j = r % t;
  return j + shift < t ? labels[i * t + j + shift] : ignore;
}

__global__ void token_ce_forward_kernel(int64_t rows, int64_t t, int64_t vocab, const float* __restrict__ logits,
                                        const int32_t* __restrict__ labels, int64_t shift, int32_t ignore,
                                        float* __restrict__ losses, float* __restrict__ lse) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = logits + r * vocab;
    float m = -INFINITY;
    for (int64_t k = threadIdx.x; k < vocab; k += blockDim.x) m = fmaxf(m, xr[k]);
    m = block_max(m, shf, -INFINITY);
    double s = 0;
    for (int64_t k = threadIdx.x; k < vocab; k += blockDim.x) s += exp(double(xr[k] - m));
    s = block_sum(s, shd);
    if (threadIdx.x == 0) {
      const double l = double(m) + log(s);
      lse[r] = float(l);
      const int32_t y = target_of(labels, r, t, shift, ignore);
      losses[r] = y == ignore ? 0.f : float(l - double(xr[y]));
    }
  }
}

__global__ void token_ce_backward_kernel(int64_t rows, int64_t t, int64_t vocab, const float* __restrict__ logits,
                                         const int32_t* __restrict__ labels, int64_t shift, int32_t ignore,
                                         const float* __restrict__ lse, const float* __restrict__ gloss,
                                         float* __restrict__ glogits) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = logits + r * vocab;
    float* gr = glogits + r * vocab;
    const int32_t y = target_of(labels, r, t, shift, ignore);
    const float g = y == ignore ? 0.f : gloss[r], l = lse[r];
    for (int64_t k = threadIdx.x; k < vocab; k += blockDim.x) {
      const float p = y == ignore ? 0.f : g * expf(xr[k] - l);
      gr[k] = k == y ? p - g : p;
    }
  }
}

unsigned row_grid(int64_t rows) { return unsigned(rows < 65535 * 16 ? (rows > 0 ? rows : 1) : 65535 * 16); }

}  // namespace

void rmsnorm_forward(const CudaCtx& ctx, int64_t rows, int64_t d, const float* x, const float* w, float eps, float* y,
                     float* rstd) {
  if (rows <= 0) return;
  use_device(ctx);
  rmsnorm_forward_kernel<<<row_grid(rows), kRowThreads, 0, stream_of(ctx)>>>(rows, d, x, w, eps, y, rstd);
  launch_check(ctx, "rmsnorm_forward");
}

void rmsnorm_backward(const CudaCtx& ctx, int64_t rows, int64_t d, const float* x, const float* gy, const float* w,
                      const float* rstd, float* gx, float* gw) {
  if (rows <= 0) return;
  use_device(ctx);
  rmsnorm_backward_data_kernel<<<row_grid(rows), kRowThreads, 0, stream_of(ctx)>>>(rows, d, x, gy, w, rstd, gx);
  launch_check(ctx, "rmsnorm_backward_data");
  if (!gw) return;
  rmsnorm_backward_weight_kernel<<<grid_for(ctx, d), kThreads, 0, stream_of(ctx)>>>(rows, d, x, gy, rstd, gw);
  launch_check(ctx, "rmsnorm_backward_weight");
}

void rope_forward(const CudaCtx& ctx, int64_t b, int64_t t, int64_t h, int64_t dh, const float* cos, const float* sin,
                  int64_t cs_batch_stride, const float* x, float* y) {
  const int64_t half = dh / 2;
  launch_map(ctx, "rope_forward", b * t * h * dh, [=] __device__(int64_t e) {
    const int64_t k = e % dh, row = e / dh, j = (row / h) % t, i = row / (h * t);
    const int64_t cs = i * cs_batch_stride + j * dh + k;
    const float rot = k < half ? -x[e + half] : x[e - half];
    y[e] = x[e] * cos[cs] + rot * sin[cs];
  });
}

void rope_backward(const CudaCtx& ctx, int64_t b, int64_t t, int64_t h, int64_t dh, const float* cos, const float* sin,
                   int64_t cs_batch_stride, const float* gy, float* gx) {
  const int64_t half = dh / 2;
  launch_map(ctx, "rope_backward", b * t * h * dh, [=] __device__(int64_t e) {
    const int64_t k = e % dh, row = e / dh, j = (row / h) % t, i = row / (h * t);
    const int64_t base = i * cs_batch_stride + j * dh;
    gx[e] = k < half ? gy[e] * cos[base + k] + gy[e + half] * sin[base + k + half]
                     : gy[e] * cos[base + k] - gy[e - half] * sin[base + k - half];
  });
}

void gelu_tanh_forward(const CudaCtx& ctx, int64_t n, const float* x, float* y) {
  launch_map(ctx, "gelu_tanh_forward", n, [=] __device__(int64_t i) {
    const float v = x[i];
    y[i] = 0.5f * v * (1.f + tanhf(kSqrt2OverPi * (v + kGeluCubic * v * v * v)));
  });
}

void gelu_tanh_backward(const CudaCtx& ctx, int64_t n, const float* x, const float* gy, float* gx) {
  launch_map(ctx, "gelu_tanh_backward", n, [=] __device__(int64_t i) {
    const float v = x[i];
    const float th = tanhf(kSqrt2OverPi * (v + kGeluCubic * v * v * v));
    const float dinner = kSqrt2OverPi * (1.f + 3.f * kGeluCubic * v * v);
    gx[i] = gy[i] * (0.5f * (1.f + th) + 0.5f * v * (1.f - th * th) * dinner);
  });
}

void swiglu_forward(const CudaCtx& ctx, int64_t n, const float* gate, const float* up, float* y) {
  launch_map(ctx, "swiglu_forward", n, [=] __device__(int64_t i) { y[i] = gate[i] * sigmoidf_(gate[i]) * up[i]; });
}

void swiglu_backward(const CudaCtx& ctx, int64_t n, const float* gate, const float* up, const float* gy, float* ggate,
                     float* gup) {
  launch_map(ctx, "swiglu_backward", n, [=] __device__(int64_t i) {
    const float g = gate[i], sg = sigmoidf_(g);
    gup[i] = gy[i] * g * sg;
    ggate[i] = gy[i] * up[i] * (sg * (1.f + g * (1.f - sg)));
  });
}

void attention_softmax_forward(const CudaCtx& ctx, int64_t b, int64_t h, int64_t t, float scale, const int32_t* key_mask,
                               const float* scores, float* probs) {
  const int64_t rows = b * h * t;
  if (rows <= 0) return;
  use_device(ctx);
  attention_softmax_kernel<<<row_grid(rows), kRowThreads, 0, stream_of(ctx)>>>(b, h, t, scale, key_mask, scores, probs);
  launch_check(ctx, "attention_softmax_forward");
}

void token_cross_entropy_forward(const CudaCtx& ctx, int64_t b, int64_t t, int64_t vocab, const float* logits,
                                 const int32_t* labels, int64_t shift, int32_t ignore_index, float* losses, float* lse) {
  const int64_t rows = b * t;
  if (rows <= 0) return;
  use_device(ctx);
  token_ce_forward_kernel<<<row_grid(rows), kRowThreads, 0, stream_of(ctx)>>>(rows, t, vocab, logits, labels, shift,
                                                                              ignore_index, losses, lse);
  launch_check(ctx, "token_cross_entropy_forward");
}

void token_cross_entropy_backward(const CudaCtx& ctx, int64_t b, int64_t t, int64_t vocab, const float* logits,
                                  const int32_t* labels, int64_t shift, int32_t ignore_index, const float* lse,
                                  const float* gloss, float* glogits) {
  const int64_t rows = b * t;
  if (rows <= 0) return;
  use_device(ctx);
  token_ce_backward_kernel<<<row_grid(rows), kRowThreads, 0, stream_of(ctx)>>>(rows, t, vocab, logits, labels, shift,
                                                                               ignore_index, lse, gloss, glogits);
  launch_check(ctx, "token_cross_entropy_backward");
}

}  // namespace hamu::kernels
