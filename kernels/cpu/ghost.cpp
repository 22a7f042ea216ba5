// kernels/cpu/ghost.cpp: the reductions behind per-sample gradient similarity (ghost products): the
// block-wise Hadamard reduction of two gram matrices into K, and per-segment row dot products.
//
// Both read their inputs exactly once and are memory-bound; sums are carried in double so the result
// does not depend on how the work is split.
#include <algorithm>

#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 14;
constexpr int64_t kTile = 64;  // K columns per task: stack accumulators, and a task's share of each gram row

}  // namespace

template <class T>
void ghost_hadamard_reduce(const CpuCtx&, int64_t nf, int64_t nr, int64_t tf, int64_t tr, const T* gram_a,
                           const T* gram_g, int64_t ld, T* k) {
  // Tasks are (forget sample j, tile of retain samples): disjoint entries of K, so no races even when
  // nf is small. Within a task the gram rows are walked in order, each touching a contiguous
  // stretch of kTile*tr elements.
  const int64_t tiles = (nr + kTile - 1) / kTile;
#pragma omp parallel for collapse(2) schedule(static) if (nf * tf * nr * tr >= kParallelMin)
  for (int64_t j = 0; j < nf; ++j) {
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t i0 = tile * kTile, ni = std::min(kTile, nr - i0);
      double acc[kTile] = {};
      for (int64_t t = 0; t < tf; ++t) {
        const T* a = gram_a + (j * tf + t) * ld + i0 * tr;
        const T* g = gram_g + (j * tf + t) * ld + i0 * tr;
        if (tr == 1) {
          // One retain row per sample (Linear without a sequence axis): a plain vectorisable fma over i.
#pragma omp simd
          for (int64_t i = 0; i < ni; ++i) acc[i] += double(a[i]) * double(g[i]);
        } else {
          for (int64_t i = 0; i < ni; ++i) {
            double s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t q = 0; q < tr; ++q) s += double(a[i * tr + q]) * double(g[i * tr + q]);
            acc[i] += s;
          }
        }
      }
      T* kj = k + j * nr + i0;
      for (int64_t i = 0; i < ni; ++i) kj[i] += T(acc[i]);
    }
  }
}

template <class T>
void segment_rowdot(const CpuCtx&, int64_t nseg, int64_t seg, int64_t width, const T* p, const T* g, T* out) {
  // Segment j is the contiguous block of seg rows of width columns starting at row j*seg.
  const int64_t len = seg * width;
#pragma omp parallel for schedule(static) if (nseg * len >= kParallelMin)
  for (int64_t j = 0; j < nseg; ++j) {
    const T* pj = p + j * len;
    const T* gj = g + j * len;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t q = 0; q < len; ++q) s += double(pj[q]) * double(gj[q]);
    out[j] += T(s);
  }
}

#define HAMU_INSTANTIATE(T)                                                                                   \
  template void ghost_hadamard_reduce<T>(const CpuCtx&, int64_t, int64_t, int64_t, int64_t, const T*,         \
                                         const T*, int64_t, T*);                                              \
  template void segment_rowdot<T>(const CpuCtx&, int64_t, int64_t, int64_t, const T*, const T*, T*);
HAMU_INSTANTIATE(float)
HAMU_INSTANTIATE(double)
#undef HAMU_INSTANTIATE

}  // namespace hamu::kernels
