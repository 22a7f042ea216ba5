// kernels/cpu/lm.cpp: language-model kernels: RMSNorm, rotary embeddings, GELU-tanh, SwiGLU, the masked
// attention softmax and token cross-entropy fused with the log-softmax, forward and backward.
//
// The reference for kernels/cuda/lm.cu. Row sums are accumulated in double; rows are the unit of parallel
// work, and every parameter-gradient reduction runs over disjoint column blocks, so results do not depend
// on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 14;
constexpr int64_t kColumnBlock = 256;  // RMSNorm weight-gradient columns per task

template <class T> inline T sigmoid_of(T x) { return T(1) / (T(1) + std::exp(-x)); }

constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluCubic = 0.044715;

}  // namespace

// ------------------------------------------------------------------------------------------------
// RMSNorm

template <class T>
void rmsnorm_forward(const CpuCtx&, int64_t rows, int64_t d, const T* x, const T* w, T eps, T* y, T* rstd) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    double ss = 0;
    for (int64_t k = 0; k < d; ++k) ss += double(xr[k]) * double(xr[k]);
    // As Hugging Face: rsqrt(mean + eps) in the working precision, then x * rstd, then * weight.
    const T inv = T(1) / std::sqrt(T(ss / double(d)) + eps);
    rstd[r] = inv;
    for (int64_t k = 0; k < d; ++k) yr[k] = w[k] * (xr[k] * inv);
  }
}

template <class T>
void rmsnorm_backward(const CpuCtx&, int64_t rows, int64_t d, const T* x, const T* gy, const T* w, const T* rstd,
                      T* gx, T* gw) {
  // y_k = w_k x_k s with s = (mean(x^2) + eps)^(-1/2): dx_j = s (w_j gy_j) - x_j s^3 / d * sum_k w_k gy_k x_k.
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    const T* gr = gy + r * d;
    T* gxr = gx + r * d;
    const double s = rstd[r];
    double dot = 0;
    for (int64_t k = 0; k < d; ++k) dot += double(w[k]) * double(gr[k]) * double(xr[k]);
    const double c = dot * s * s * s / double(d);
    for (int64_t k = 0; k < d; ++k) gxr[k] = T(s * double(w[k]) * double(gr[k]) - double(xr[k]) * c);
  }
  if (!gw) return;
  const int64_t blocks = (d + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t k0 = blk * kColumnBlock, k1 = std::min(d, k0 + kColumnBlock);
    double acc[kColumnBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * d;
      const T* gr = gy + r * d;
      const double s = rstd[r];
      for (int64_t k = k0; k < k1; ++k) acc[k - k0] += double(gr[k]) * double(xr[k]) * s;
    }
    for (int64_t k = k0; k < k1; ++k) gw[k] += T(acc[k - k0]);
  }
}

// ------------------------------------------------------------------------------------------------
// Rotary embeddings

namespace {

// Calls f(c, s, off) for every (batch, position, head) row of x [b, t, h, dh]: c, s point at the
// position's tables, off at the row.
template <class T, class F>
void for_each_rope_row(int64_t b, int64_t t, int64_t h, int64_t dh, const T* cos, const T* sin, int64_t cs_batch_stride,
                       F f) {
#pragma omp parallel for collapse(2) schedule(static) if (b * t * h * dh >= kParallelMin)
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < t; ++j)
      for (int64_t head = 0; head < h; ++head)
        f(cos + i * cs_batch_stride + j * dh, sin + i * cs_batch_stride + j * dh, ((i * t + j) * h + head) * dh);
}

}  // namespace

template <class T>
void rope_forward(const CpuCtx&, int64_t b, int64_t t, int64_t h, int64_t dh, const T* cos, const T* sin,
                  int64_t cs_batch_stride, const T* x, T* y) {
  const int64_t half = dh / 2;
  for_each_rope_row(b, t, h, dh, cos, sin, cs_batch_stride, [&](const T* c, const T* s, int64_t off) {
    const T* xr = x + off;
    T* yr = y + off;
    for (int64_t k = 0; k < half; ++k) yr[k] = xr[k] * c[k] - xr[k + half] * s[k];
    for (int64_t k = half; k < dh; ++k) yr[k] = xr[k] * c[k] + xr[k - half] * s[k];
  });
}

template <class T>
void rope_backward(const CpuCtx&, int64_t b, int64_t t, int64_t h, int64_t dh, const T* cos, const T* sin,
                   int64_t cs_batch_stride, const T* gy, T* gx) {
  const int64_t half = dh / 2;
  for_each_rope_row(b, t, h, dh, cos, sin, cs_batch_stride, [&](const T* c, const T* s, int64_t off) {
    const T* g = gy + off;
    T* gxr = gx + off;
    // x_k (k < half) feeds y_k through cos_k and y_{k+half} through +sin_{k+half};
    // x_k (k >= half) feeds y_k through cos_k and y_{k-half} through -sin_{k-half}.
    for (int64_t k = 0; k < half; ++k) gxr[k] = g[k] * c[k] + g[k + half] * s[k + half];
    for (int64_t k = half; k < dh; ++k) gxr[k] = g[k] * c[k] - g[k - half] * s[k - half];
  });
}

// ------------------------------------------------------------------------------------------------
// Activations

template <class T> void gelu_tanh_forward(const CpuCtx&, int64_t n, const T* x, T* y) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    y[i] = T(0.5) * v * (T(1) + std::tanh(T(kSqrt2OverPi) * (v + T(kGeluCubic) * v * v * v)));
  }
}

template <class T> void gelu_tanh_backward(const CpuCtx&, int64_t n, const T* x, const T* gy, T* gx) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    const T th = std::tanh(T(kSqrt2OverPi) * (v + T(kGeluCubic) * v * v * v));
    const T dinner = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * v * v);
    gx[i] = gy[i] * (T(0.5) * (T(1) + th) + T(0.5) * v * (T(1) - th * th) * dinner);
  }
}

template <class T> void swiglu_forward(const CpuCtx&, int64_t n, const T* gate, const T* up, T* y) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = gate[i] * sigmoid_of(gate[i]) * up[i];
}

template <class T>
void swiglu_backward(const CpuCtx&, int64_t n, const T* gate, const T* up, const T* gy, T* ggate, T* gup) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i], sg = sigmoid_of(g);
    const T silu = g * sg;
    gup[i] = gy[i] * silu;
    ggate[i] = gy[i] * up[i] * (sg * (T(1) + g * (T(1) - sg)));
  }
}

// ------------------------------------------------------------------------------------------------
// Attention softmax with causal and key-padding masks

template <class T>
void attention_softmax_forward(const CpuCtx&, int64_t b, int64_t h, int64_t t, T scale, const int32_t* key_mask,
                               const T* scores, T* probs) {
  const int64_t rows = b * h * t;
#pragma omp parallel for schedule(static) if (rows * t >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r % t, batch = r / (h * t);
    const int64_t keys = i + 1;  // causal: keys [0, i]; the mask may drop some of them
    const int32_t* km = key_mask ? key_mask + batch * t : nullptr;
    const T* sr = scores + r * t;
    T* pr = probs + r * t;
    T m = -INFINITY;
    for (int64_t j = 0; j < keys; ++j)
      if (!km || km[j]) m = std::max(m, scale * sr[j]);
    if (m == -INFINITY) {  // nothing visible (a padding query under left padding): no attention at all
      std::fill(pr, pr + t, T(0));
      continue;
    }
    double s = 0;
    for (int64_t j = 0; j < keys; ++j) {
      const T e = (!km || km[j]) ? std::exp(scale * sr[j] - m) : T(0);
      pr[j] = e;
      s += e;
    }
    const T inv = T(1.0 / s);
    for (int64_t j = 0; j < keys; ++j) pr[j] *= inv;
    std::fill(pr + keys, pr + t, T(0));
  }
}

// ------------------------------------------------------------------------------------------------
// Token cross-entropy

template <class T>
void token_cross_entropy_forward(const CpuCtx&, int64_t b, int64_t t, int64_t vocab, const T* logits,
                                 const int32_t* labels, int64_t shift, int32_t ignore_index, T* losses, T* lse) {
  const int64_t rows = b * t;
#pragma omp parallel for schedule(static) if (rows * vocab >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r / t, j = r % t;
    const T* xr = logits + r * vocab;
    T m = xr[0];
    for (int64_t k = 1; k < vocab; ++k) m = xr[k] > m ? xr[k] : m;
    double s = 0;
    for (int64_t k = 0; k < vocab; ++k) s += std::exp(double(xr[k] - m));
    const double l = double(m) + std::log(s);
    lse[r] = T(l);
    const int32_t y = j + shift < t ? labels[i * t + j + shift] : ignore_index;
    losses[r] = y == ignore_index ? T(0) : T(l - double(xr[y]));
  }
}

template <class T>
void token_cross_entropy_backward(const CpuCtx&, int64_t b, int64_t t, int64_t vocab, const T* logits,
                                  const int32_t* labels, int64_t shift, int32_t ignore_index, const T* lse,
                                  const T* gloss, T* glogits) {
  const int64_t rows = b * t;
#pragma omp parallel for schedule(static) if (rows * vocab >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r / t, j = r % t;
    const T* xr = logits + r * vocab;
    T* gr = glogits + r * vocab;
    const int32_t y = j + shift < t ? labels[i * t + j + shift] : ignore_index;
    if (y == ignore_index) {
      std::fill(gr, gr + vocab, T(0));
      continue;
    }
    const T g = gloss[r], l = lse[r];
    for (int64_t k = 0; k < vocab; ++k) gr[k] = g * std::exp(xr[k] - l);
    gr[y] -= g;
  }
}

#define HAMU_INSTANTIATE(T)                                                                                     \
  template void rmsnorm_forward<T>(const CpuCtx&, int64_t, int64_t, const T*, const T*, T, T*, T*);             \
  template void rmsnorm_backward<T>(const CpuCtx&, int64_t, int64_t, const T*, const T*, const T*, const T*, T*, \
                                    T*);                                                                        \
  template void rope_forward<T>(const CpuCtx&, int64_t, int64_t, int64_t, int64_t, const T*, const T*, int64_t, \
                                const T*, T*);                                                                  \
  template void rope_backward<T>(const CpuCtx&, int64_t, int64_t, int64_t, int64_t, const T*, const T*, int64_t, \
                                 const T*, T*);                                                                 \
  template void gelu_tanh_forward<T>(const CpuCtx&, int64_t, const T*, T*);                                     \
  template void gelu_tanh_backward<T>(const CpuCtx&, int64_t, const T*, const T*, T*);                          \
  template void swiglu_forward<T>(const CpuCtx&, int64_t, const T*, const T*, T*);                              \
  template void swiglu_backward<T>(const CpuCtx&, int64_t, const T*, const T*, const T*, T*, T*);               \
  template void attention_softmax_forward<T>(const CpuCtx&, int64_t, int64_t, int64_t, T, const int32_t*,       \
                                             const T*, T*);                                                     \
  template void token_cross_entropy_forward<T>(const CpuCtx&, int64_t, int64_t, int64_t, const T*,             \
                                               const int32_t*, int64_t, int32_t, T*, T*);                       \
  template void token_cross_entropy_backward<T>(const CpuCtx&, int64_t, int64_t, int64_t, const T*,            \
                                                const int32_t*, int64_t, int32_t, const T*, const T*, T*);
HAMU_INSTANTIATE(float)
HAMU_INSTANTIATE(double)
#undef HAMU_INSTANTIATE

}  // namespace hamu::kernels
