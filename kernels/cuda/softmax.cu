// kernels/cuda/softmax.cu: softmax and log-softmax over the last dim, fused cross-entropy (the per-row loss
// and its gradient in one pass over the logits), and the causal softmax of attention, forward and backward
// (CUDA). Same formulas as kernels/cpu/softmax.cpp: maximum subtracted first, row sums in double.
//
// A row is handled by one warp (rows up to kWarpRowMax long) or by one CTA (longer rows, e.g. a
// vocabulary of logits).
#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

constexpr int64_t kWarpRowMax = 1024;

// RowWalk and row_sum (one row per warp or per CTA) are in cuda_common.cuh.
template <bool Cta> __device__ __forceinline__ float row_max(float v, float* sh) {
  if constexpr (Cta) return block_max(v, sh, -INFINITY);
  else return warp_max(v);
}

// Max of the row (NaN-free rows: as the CPU's scan; -inf for an empty row).
template <bool Cta> __device__ __forceinline__ float max_of(const float* xr, int64_t d, float scale, const RowWalk<Cta>& w,
                                                            float* sh) {
  float m = -INFINITY;
  for (int64_t k = w.sub; k < d; k += w.width) {
    const float v = scale * xr[k];
    m = v > m ? v : m;
  }
  return row_max<Cta>(m, sh);
}

// Every row-kernel below loops over rows with RowWalk; CTA-wide reductions keep the loop uniform per CTA.

template <bool Cta>
__global__ void softmax_forward_kernel(int64_t rows, int64_t d, const float* __restrict__ x, float* __restrict__ y) {
  __shared__ double shd[32];
  __shared__ float shf[32];
  const RowWalk<Cta> w;
  for (int64_t r = w.first; r < rows; r += w.step) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    const float m = max_of<Cta>(xr, d, 1.f, w, shf);
    double s = 0;
    for (int64_t k = w.sub; k < d; k += w.width) {
      const float e = expf(xr[k] - m);
      yr[k] = e;
      s += e;
    }
    const float inv = float(1.0 / row_sum<Cta>(s, shd));
    for (int64_t k = w.sub; k < d; k += w.width) yr[k] *= inv;
  }
}

template <bool Cta>
__global__ void softmax_backward_kernel(int64_t rows, int64_t d, const float* __restrict__ y,
                                        const float* __restrict__ gy, float* __restrict__ gx) {
  __shared__ double shd[32];
  const RowWalk<Cta> w;
  for (int64_t r = w.first; r < rows; r += w.step) {
    const float* yr = y + r * d;
    const float* gr = gy + r * d;
    double s = 0;
    for (int64_t k = w.sub; k < d; k += w.width) s += double(yr[k]) * double(gr[k]);
    const float t = float(row_sum<Cta>(s, shd));
    for (int64_t k = w.sub; k < d; k += w.width) gx[r * d + k] = yr[k] * (gr[k] - t);
  }
}

template <bool Cta>
__global__ void log_softmax_kernel(int64_t rows, int64_t d, const float* __restrict__ x, float* __restrict__ y) {
  __shared__ double shd[32];
  __shared__ float shf[32];
  const RowWalk<Cta> w;
  for (int64_t r = w.first; r < rows; r += w.step) {
    const float* xr = x + r * d;
    const float m = max_of<Cta>(xr, d, 1.f, w, shf);
    double s = 0;
    for (int64_t k = w.sub; k < d; k += w.width) s += double(expf(xr[k] - m));
    const float shift = float(log(row_sum<Cta>(s, shd)));
    for (int64_t k = w.sub; k < d; k += w.width) y[r * d + k] = (xr[k] - m) - shift;
  }
}

// Cross-entropy fused with its gradient (kernels.h): the row's maximum, its sum of exponentials, the loss
// from both as on the CPU, and with grad one more sweep writing softmax - onehot. The label, and so the
// skip of an ignored row, is the same for the whole warp or CTA, which keeps the reductions uniform.
template <bool Cta>
__global__ void cross_entropy_kernel(int64_t rows, int64_t d, const float* __restrict__ x,
                                     const int32_t* __restrict__ labels, int32_t ignore_index,
                                     float* __restrict__ losses, float* __restrict__ grad) {
  __shared__ double shd[32];
  __shared__ float shf[32];
  const RowWalk<Cta> w;
  for (int64_t r = w.first; r < rows; r += w.step) {
    const int32_t lab = labels[r];
    float* gr = grad ? grad + r * d : nullptr;
    if (lab == ignore_index) {
      if (w.sub == 0) losses[r] = 0.f;
      if (gr)
        for (int64_t k = w.sub; k < d; k += w.width) gr[k] = 0.f;
      continue;
    }
    const float* xr = x + r * d;
    const float m = max_of<Cta>(xr, d, 1.f, w, shf);
    double s = 0;
    for (int64_t k = w.sub; k < d; k += w.width) s += double(expf(xr[k] - m));
    s = row_sum<Cta>(s, shd);
    if (w.sub == 0) losses[r] = float(log(s)) - (xr[lab] - m);
    if (!gr) continue;
    const float inv = float(1.0 / s);
    for (int64_t k = w.sub; k < d; k += w.width) gr[k] = expf(xr[k] - m) * inv - (k == lab ? 1.f : 0.f);
  }
}

// Launched with one CTA (cross_entropy_mean): sum and count of the rows not ignored, in double.
__global__ void cross_entropy_mean_kernel(int64_t rows, const float* __restrict__ losses,
                                          const int32_t* __restrict__ labels, int32_t ignore_index,
                                          float* __restrict__ loss, float* __restrict__ inv_count) {
  __shared__ double shd[32];
  double s = 0, n = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x)
    if (labels[r] != ignore_index) {
      s += losses[r];
      n += 1;
    }
  s = block_sum(s, shd);
  n = block_sum(n, shd);
  if (threadIdx.x == 0) {
    *loss = n > 0 ? float(s / n) : 0.f;
    *inv_count = n > 0 ? float(1.0 / n) : 0.f;
  }
}

template <bool Cta>
__global__ void log_softmax_backward_kernel(int64_t rows, int64_t d, const float* __restrict__ y,
                                            const float* __restrict__ gy, float* __restrict__ gx) {
  __shared__ double shd[32];
  const RowWalk<Cta> w;
  for (int64_t r = w.first; r < rows; r += w.step) {
    const float* yr = y + r * d;
    const float* gr = gy + r * d;
    double s = 0;
    for (int64_t k = w.sub; k < d; k += w.width) s += gr[k];
    const float t = float(row_sum<Cta>(s, shd));
    for (int64_t k = w.sub; k < d; k += w.width) gx[r * d + k] = gr[k] - expf(yr[k]) * t;
  }
}

// Causal: row r = (b, i) attends to keys 0..i; v_j = scale * s_j, softmax over j <= i, zeros after.
template <bool Cta>
__global__ void causal_softmax_forward_kernel(int64_t rows, int64_t t, float scale, const float* __restrict__ scores,
                                              float* __restrict__ probs) {
  __shared__ double shd[32];
  __shared__ float shf[32];
  const RowWalk<Cta> w;
  for (int64_t r = w.first; r < rows; r += w.step) {
    const int64_t len = r % t + 1;
    const float* sr = scores + r * t;
    float* pr = probs + r * t;
    const float m = max_of<Cta>(sr, len, scale, w, shf);
    double s = 0;
    for (int64_t k = w.sub; k < len; k += w.width) {
      const float e = expf(scale * sr[k] - m);
      pr[k] = e;
      s += e;
    }
    const float inv = float(1.0 / row_sum<Cta>(s, shd));
    for (int64_t k = w.sub; k < t; k += w.width) pr[k] = k < len ? pr[k] * inv : 0.f;
  }
}

template <bool Cta>
__global__ void causal_softmax_backward_kernel(int64_t rows, int64_t t, float scale, const float* __restrict__ probs,
                                               const float* __restrict__ gprobs, float* __restrict__ gscores) {
  __shared__ double shd[32];
  const RowWalk<Cta> w;
  for (int64_t r = w.first; r < rows; r += w.step) {
    const int64_t len = r % t + 1;
    const float* pr = probs + r * t;
    const float* gr = gprobs + r * t;
    double s = 0;
    for (int64_t k = w.sub; k < len; k += w.width) s += double(pr[k]) * double(gr[k]);
    const float dt = float(row_sum<Cta>(s, shd));
    for (int64_t k = w.sub; k < t; k += w.width) gscores[r * t + k] = k < len ? scale * pr[k] * (gr[k] - dt) : 0.f;
  }
}

// Launches kernel<true> (a CTA per row) or kernel<false> (a warp per row) by row length.
#define HAMU_ROW_LAUNCH(ctx, kernel, rows, d, ...)                                                        \
  do {                                                                                                   \
    if ((rows) <= 0) break;                                                                              \
    use_device(ctx);                                                                                     \
    if ((d) > kWarpRowMax) {                                                                             \
      const unsigned g_ = unsigned((rows) < 65535 * 4 ? (rows) : 65535 * 4);                              \
      kernel<true><<<g_, kThreads, 0, stream_of(ctx)>>>(__VA_ARGS__);                                     \
    } else {                                                                                             \
      kernel<false><<<grid_for(ctx, (rows) * 32), kThreads, 0, stream_of(ctx)>>>(__VA_ARGS__);           \
    }                                                                                                    \
    launch_check(ctx, #kernel);                                                                          \
  } while (0)

}  // namespace

void softmax_forward(const CudaCtx& ctx, int64_t rows, int64_t d, const float* x, float* y) {
  HAMU_ROW_LAUNCH(ctx, softmax_forward_kernel, rows, d, rows, d, x, y);
}

void softmax_backward(const CudaCtx& ctx, int64_t rows, int64_t d, const float* y, const float* gy, float* gx) {
  HAMU_ROW_LAUNCH(ctx, softmax_backward_kernel, rows, d, rows, d, y, gy, gx);
}

void log_softmax_forward(const CudaCtx& ctx, int64_t rows, int64_t d, const float* x, float* y) {
  HAMU_ROW_LAUNCH(ctx, log_softmax_kernel, rows, d, rows, d, x, y);
}

void log_softmax_backward(const CudaCtx& ctx, int64_t rows, int64_t d, const float* y, const float* gy, float* gx) {
  HAMU_ROW_LAUNCH(ctx, log_softmax_backward_kernel, rows, d, rows, d, y, gy, gx);
}

void cross_entropy_forward(const CudaCtx& ctx, int64_t rows, int64_t classes, const float* logits,
                           const int32_t* labels, int32_t ignore_index, float* losses, float* grad) {
  HAMU_ROW_LAUNCH(ctx, cross_entropy_kernel, rows, classes, rows, classes, logits, labels, ignore_index, losses, grad);
}

// One CTA: the batch's losses are few (one per sample), and a fixed reduction order keeps it deterministic.
void cross_entropy_mean(const CudaCtx& ctx, int64_t rows, const float* losses, const int32_t* labels,
                        int32_t ignore_index, float* loss, float* inv_count) {
  use_device(ctx);
  cross_entropy_mean_kernel<<<1, kThreads, 0, stream_of(ctx)>>>(rows, losses, labels, ignore_index, loss, inv_count);
  launch_check(ctx, "cross_entropy_mean_kernel");
}

// The whole backward: one elementwise launch that scales the saved gradient (in place when glogits == grad).
void cross_entropy_backward(const CudaCtx& ctx, int64_t rows, int64_t classes, const float* grad,
                            const int32_t* labels, int32_t ignore_index, const float* gloss, int64_t gloss_stride,
                            const float* scale, float* glogits) {
  launch_map(ctx, "cross_entropy_backward_kernel", rows * classes, [=] __device__(int64_t e) {
    const int64_t r = e / classes;
    const float g = gloss[r * gloss_stride] * (scale ? *scale : 1.f);
    glogits[e] = labels[r] == ignore_index ? 0.f : g * grad[e];
  });
}

void causal_softmax_forward(const CudaCtx& ctx, int64_t batch, int64_t t, float scale, const float* scores,
                            float* probs) {
  const int64_t rows = batch * t;
  HAMU_ROW_LAUNCH(ctx, causal_softmax_forward_kernel, rows, t, rows, t, scale, scores, probs);
}

void causal_softmax_backward(const CudaCtx& ctx, int64_t batch, int64_t t, float scale, const float* probs,
                             const float* gprobs, float* gscores) {
  const int64_t rows = batch * t;
  HAMU_ROW_LAUNCH(ctx, causal_softmax_backward_kernel, rows, t, rows, t, scale, probs, gprobs, gscores);
}

}  // namespace hamu::kernels
