// kernels/cuda/reduce.cu: axis reductions (sum/mean/max with argmax) and their backward, and the full
// reductions sum_all/dot/sum_squares/nonfinite_any (CUDA).
//
// Full reductions are deterministic: a fixed grid (a function of n only) accumulates in double, each CTA
// writes one partial, and the last CTA to finish adds the partials in a fixed order (one launch).
#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

// ---- full reductions ---------------------------------------------------------------------------

constexpr int kMaxReduceCtas = 1024;

template <class Term, class Fin>
__global__ void grid_sum_kernel(int64_t n, Term term, Fin fin, double* partials, unsigned* counter, float* out) {
  __shared__ double sh[32];
  __shared__ bool last;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) s += term(i);
  s = block_sum(s, sh);
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = s;
    __threadfence();  // the partial is visible before the counter says so
    last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  double t = 0;
  for (int k = threadIdx.x; k < int(gridDim.x); k += blockDim.x) t += __ldcg(partials + k);
  t = block_sum(t, sh);
  if (threadIdx.x == 0) {
    *out = fin(t);
    *counter = 0;  // ready for the next reduction on this stream
  }
}

template <class Term, class Fin>
void grid_sum(const CudaCtx& ctx, const char* name, int64_t n, Term term, Fin fin, float* out) {
  use_device(ctx);
  Scratch& s = scratch(ctx);  // this stream's: passes on other streams may be in flight
  unsigned grid = grid_for(ctx, n);
  if (grid > unsigned(kMaxReduceCtas)) grid = kMaxReduceCtas;
  grid_sum_kernel<<<grid, kThreads, 0, stream_of(ctx)>>>(n, term, fin, s.red_partials, s.red_counter, out);
  launch_check(ctx, name);
}

// ---- axis reductions ---------------------------------------------------------------------------

// Is (a, ia) the better max candidate than (b, ib)? The first NaN wins; otherwise the largest value,
// the first index among equals: exactly the sequential CPU scan.
__device__ __forceinline__ bool max_better(float a, int ia, float b, int ib) {
  const bool an = a != a, bn = b != b;
  if (an || bn) return (an && bn) ? ia < ib : an;
  if (a != b) return a > b;
  return ia < ib;
}

__device__ __forceinline__ void warp_argmax(float& v, int& idx) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    const int wi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (max_better(w, wi, v, idx)) {
      v = w;
      idx = wi;
    }
  }
}

// inner == 1: one warp (n small) or one CTA (n large) per row.
template <bool IsMax>
__global__ void reduce_rows_kernel(int64_t outer, int64_t n, double scale, const float* x, float* y,
                                   int32_t* argmax) {
  __shared__ double shd[32];
  __shared__ float shv[32];
  __shared__ int shi[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool cta_rows = blockDim.x > 32 && n > 1024;  // uniform across the grid
  const int width = cta_rows ? blockDim.x : 32;
  const int rows_per_cta = cta_rows ? 1 : blockDim.x / 32;
  const int sub = cta_rows ? threadIdx.x : lane;
  const int64_t row_in = cta_rows ? 0 : warp;
  for (int64_t o = int64_t(blockIdx.x) * rows_per_cta + row_in; o - row_in < outer;
       o += int64_t(gridDim.x) * rows_per_cta) {
    const bool active = o < outer;
    const float* xo = x + (active ? o : 0) * n;
    if constexpr (IsMax) {
      float best = 0.f;
      int bi = INT32_MAX;
      bool have = false;
      if (active)
        for (int64_t i = sub; i < n; i += width) {
          const float v = xo[i];
          if (!have || max_better(v, int(i), best, bi)) {
            best = v;
            bi = int(i);
            have = true;
          }
        }
      if (!have) {
        best = -INFINITY;
        bi = INT32_MAX;
      }
      warp_argmax(best, bi);
      if (cta_rows) {
        __syncthreads();
        if (lane == 0) {
          shv[warp] = best;
          shi[warp] = bi;
        }
        __syncthreads();
        if (warp == 0) {
          const int nw = blockDim.x >> 5;
          best = lane < nw ? shv[lane] : -INFINITY;
          bi = lane < nw ? shi[lane] : INT32_MAX;
          warp_argmax(best, bi);
        }
      }
      if (active && sub == 0) {
        y[o] = best;
        if (argmax) argmax[o] = bi;
      }
    } else {
      double s = 0;
      if (active)
        for (int64_t i = sub; i < n; i += width) s += double(xo[i]);
      s = cta_rows ? block_sum(s, shd) : warp_sum(s);
      if (active && sub == 0) y[o] = float(s * scale);
    }
    if (cta_rows) __syncthreads();
  }
}

// inner > 1: a (32 x 8) CTA covers 32 adjacent columns of one outer slice; the 8 rows of threads split
// the reduced axis and are combined in a fixed order.
template <bool IsMax>
__global__ void reduce_cols_kernel(int64_t outer, int64_t n, int64_t inner, double scale, const float* x, float* y,
                                   int32_t* argmax) {
  __shared__ double shd[8][33];
  __shared__ float shv[8][33];
  __shared__ int shi[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = int64_t(blockIdx.x) * 32 + tx;
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    const float* xo = x + o * n * inner;
    if constexpr (IsMax) {
      float best = -INFINITY;
      int bi = INT32_MAX;
      bool have = false;
      if (j < inner)
        for (int64_t i = ty; i < n; i += 8) {
          const float v = xo[i * inner + j];
          if (!have || max_better(v, int(i), best, bi)) {
            best = v;
            bi = int(i);
            have = true;
          }
        }
      shv[ty][tx] = best;
      shi[ty][tx] = bi;
      __syncthreads();
      if (ty == 0 && j < inner) {
        for (int k = 1; k < 8; ++k)
          if (shi[k][tx] != INT32_MAX && max_better(shv[k][tx], shi[k][tx], best, bi)) {
            best = shv[k][tx];
            bi = shi[k][tx];
          }
        y[o * inner + j] = best;
        if (argmax) argmax[o * inner + j] = bi;
      }
    } else {
      double s = 0;
      if (j < inner)
        for (int64_t i = ty; i < n; i += 8) s += double(xo[i * inner + j]);
      shd[ty][tx] = s;
      __syncthreads();
      if (ty == 0 && j < inner) {
        for (int k = 1; k < 8; ++k) s += shd[k][tx];
        y[o * inner + j] = float(s * scale);
      }
    }
    __syncthreads();
  }
}

}  // namespace

void reduce_axis(const CudaCtx& ctx, Reduce op, int64_t outer, int64_t n, int64_t inner, const float* x, float* y,
                 int32_t* argmax) {
  if (outer <= 0 || inner <= 0) return;
  use_device(ctx);
  const bool is_max = op == Reduce::max;
  const double scale = op == Reduce::mean ? 1.0 / double(n) : 1.0;
  if (n == 0) {  // an empty sum is 0 (max over nothing is the caller's error)
    fill(ctx, outer * inner, 0.f, y);
    return;
  }
  if (inner == 1) {
    const bool cta_rows = n > 1024;
    const int64_t rows_per_cta = cta_rows ? 1 : kThreads / 32;
    int64_t blocks = ceil_div(outer, rows_per_cta);
    if (blocks > 65535 * 8) blocks = 65535 * 8;
    if (is_max) reduce_rows_kernel<true><<<unsigned(blocks), kThreads, 0, stream_of(ctx)>>>(outer, n, scale, x, y, argmax);
    else reduce_rows_kernel<false><<<unsigned(blocks), kThreads, 0, stream_of(ctx)>>>(outer, n, scale, x, y, argmax);
    launch_check(ctx, "reduce_rows_kernel");
    return;
  }
  const int64_t gx = ceil_div(inner, 32);
  if (gx > 0x7fffffff) throw std::runtime_error("reduce_axis: inner dimension too large");
  const unsigned gy = unsigned(outer < 65535 ? outer : 65535);
  dim3 grid(unsigned(gx), gy), block(32, 8);
  if (is_max) reduce_cols_kernel<true><<<grid, block, 0, stream_of(ctx)>>>(outer, n, inner, scale, x, y, argmax);
  else reduce_cols_kernel<false><<<grid, block, 0, stream_of(ctx)>>>(outer, n, inner, scale, x, y, argmax);
  launch_check(ctx, "reduce_cols_kernel");
}

void reduce_axis_backward(const CudaCtx& ctx, Reduce op, int64_t outer, int64_t n, int64_t inner, const float* gy,
                          const int32_t* argmax, float* gx) {
  const int64_t total = outer * n * inner;
  if (op == Reduce::max) {
    launch_map(ctx, "reduce_axis_backward_kernel", total, [=] __device__(int64_t e) {
      const int64_t j = e % inner, i = (e / inner) % n, o = e / (inner * n);
      const int64_t k = o * inner + j;
      gx[e] = int64_t(argmax[k]) == i ? gy[k] : 0.f;
    });
  } else {
    const float scale = op == Reduce::mean ? 1.f / float(n) : 1.f;
    launch_map(ctx, "reduce_axis_backward_kernel", total, [=] __device__(int64_t e) {
      const int64_t j = e % inner, o = e / (inner * n);
      gx[e] = gy[o * inner + j] * scale;
    });
  }
}

namespace {
struct ToFloat {
  __device__ float operator()(double t) const { return float(t); }
};
struct AnyNonzero {
  __device__ float operator()(double t) const { return t > 0 ? 1.f : 0.f; }
};
}  // namespace

void sum_all(const CudaCtx& ctx, int64_t n, const float* x, float* out) {
  grid_sum(ctx, "sum_all_kernel", n, [=] __device__(int64_t i) { return double(x[i]); }, ToFloat{}, out);
}

void dot(const CudaCtx& ctx, int64_t n, const float* a, const float* b, float* out) {
  grid_sum(ctx, "dot_kernel", n, [=] __device__(int64_t i) { return double(a[i]) * double(b[i]); }, ToFloat{}, out);
}

void sum_squares(const CudaCtx& ctx, int64_t n, const float* x, float* out) {
  grid_sum(ctx, "sum_squares_kernel", n, [=] __device__(int64_t i) {
    const double v = x[i];
    return v * v;
  }, ToFloat{}, out);
}

void nonfinite_any(const CudaCtx& ctx, int64_t n, const float* x, float* out) {
  grid_sum(ctx, "nonfinite_any_kernel", n, [=] __device__(int64_t i) { return isfinite(x[i]) ? 0.0 : 1.0; },
           AnyNonzero{}, out);
}

}  // namespace hamu::kernels
