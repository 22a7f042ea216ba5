// kernels/cuda/ghost.cu: the reductions behind per-sample gradient similarity (ghost products) on the GPU:
// the block-wise Hadamard reduction of two gram matrices into K, and per-segment row dot products.
// Both are memory-bound single passes; sums are carried in double (as on the CPU), in a fixed order.
#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

// K[j, i] += sum_{t<tf, q<tr} A[(j*tf+t)*ld + i*tr + q] * G[same]; one warp per K entry, lanes over (t, q)
// (coalesced when tr is large).
__global__ void ghost_hadamard_warp_kernel(int64_t nf, int64_t nr, int64_t tf, int64_t tr,
                                           const float* __restrict__ a, const float* __restrict__ g, int64_t ld,
                                           float* k) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t o = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); o < nf * nr; o += warps) {
    const int64_t j = o / nr, i = o % nr;
    double s = 0;
    for (int64_t t = 0; t < tf; ++t) {
      const int64_t row = (j * tf + t) * ld + i * tr;
      for (int64_t q = lane; q < tr; q += 32) s += double(a[row + q]) * double(g[row + q]);
    }
    s = warp_sum(s);
    if (lane == 0) k[o] += float(s);
  }
}

// Small tr (Linear layers without a sequence axis have tr == 1): one thread per K entry, adjacent threads
// on adjacent i, so each row of the grams is read coalesced.
__global__ void ghost_hadamard_thread_kernel(int64_t nf, int64_t nr, int64_t tf, int64_t tr,
                                             const float* __restrict__ a, const float* __restrict__ g, int64_t ld,
                                             float* k) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < nf * nr; o += stride) {
    const int64_t j = o / nr, i = o % nr;
    double s = 0;
    for (int64_t t = 0; t < tf; ++t) {
      const int64_t row = (j * tf + t) * ld + i * tr;
      for (int64_t q = 0; q < tr; ++q) s += double(a[row + q]) * double(g[row + q]);
    }
    k[o] += float(s);
  }
}

// out[j] += sum over the contiguous seg*width block j of p*g: one warp (short blocks) or CTA per segment.
template <bool Cta>
__global__ void segment_rowdot_kernel(int64_t nseg, int64_t len, const float* __restrict__ p,
                                      const float* __restrict__ g, float* out) {
  __shared__ double sh[32];
  const RowWalk<Cta> w;
  for (int64_t j = w.first; j < nseg; j += w.step) {
    const float* pj = p + j * len;
    const float* gj = g + j * len;
    double s = 0;
    for (int64_t q = w.sub; q < len; q += w.width) s += double(pj[q]) * double(gj[q]);
    s = row_sum<Cta>(s, sh);
    if (w.sub == 0) out[j] += float(s);
  }
}

}  // namespace

void ghost_hadamard_reduce(const CudaCtx& ctx, int64_t nf, int64_t nr, int64_t tf, int64_t tr, const float* gram_a,
                           const float* gram_g, int64_t ld, float* k) {
  if (nf <= 0 || nr <= 0) return;
  use_device(ctx);
  if (tr >= 16) {
    ghost_hadamard_warp_kernel<<<grid_for(ctx, nf * nr * 32), kThreads, 0, stream_of(ctx)>>>(nf, nr, tf, tr, gram_a,
                                                                                            gram_g, ld, k);
    launch_check(ctx, "ghost_hadamard_warp_kernel");
  } else {
    ghost_hadamard_thread_kernel<<<grid_for(ctx, nf * nr), kThreads, 0, stream_of(ctx)>>>(nf, nr, tf, tr, gram_a,
                                                                                         gram_g, ld, k);
    launch_check(ctx, "ghost_hadamard_thread_kernel");
  }
}

void segment_rowdot(const CudaCtx& ctx, int64_t nseg, int64_t seg, int64_t width, const float* p, const float* g,
                    float* out) {
  if (nseg <= 0) return;
  use_device(ctx);
  const int64_t len = seg * width;
  if (len > 4096) {
    const unsigned grid = unsigned(nseg < 65535 * 4 ? nseg : 65535 * 4);
    segment_rowdot_kernel<true><<<grid, kThreads, 0, stream_of(ctx)>>>(nseg, len, p, g, out);
  } else {
    segment_rowdot_kernel<false><<<grid_for(ctx, nseg * 32), kThreads, 0, stream_of(ctx)>>>(nseg, len, p, g, out);
  }
  launch_check(ctx, "segment_rowdot_kernel");
}

}  // namespace hamu::kernels
