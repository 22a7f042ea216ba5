// kernels/cpu/embedding.cpp: embedding lookup (row gather) and its backward (row scatter-add).
#include <algorithm>
#include <cstring>

#include <omp.h>

#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {
constexpr int64_t kParallelMin = 1 << 14;
}  // namespace

template <class T>
void embedding_forward(const CpuCtx&, int64_t n_idx, int64_t dim, const int32_t* idx, const T* table, T* out) {
#pragma omp parallel for schedule(static) if (n_idx * dim >= kParallelMin)
  for (int64_t i = 0; i < n_idx; ++i) {
    std::memcpy(out + i * dim, table + int64_t(idx[i]) * dim, size_t(dim) * sizeof(T));
  }
}

template <class T>
void embedding_backward(const CpuCtx&, int64_t n_idx, int64_t dim, int64_t vocab, const int32_t* idx, const T* gout,
                        T* gtable) {
  // Repeated indices make a plain parallel scatter race. Instead each task owns a disjoint range of
  // vocabulary rows and scans every index, adding only its own rows, in index order: every table row
  // receives its contributions in the same order as a serial loop, whatever the thread count.
  const int64_t tasks = n_idx * dim >= kParallelMin ? std::min<int64_t>(omp_get_max_threads(), vocab) : 1;
#pragma omp parallel for schedule(static) if (tasks > 1)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t lo = vocab * task / tasks, hi = vocab * (task + 1) / tasks;
    for (int64_t i = 0; i < n_idx; ++i) {
      const int64_t v = idx[i];
      if (v < lo || v >= hi) continue;
      T* dst = gtable + v * dim;
      const T* src = gout + i * dim;
      for (int64_t k = 0; k < dim; ++k) dst[k] += src[k];
    }
  }
}

#define HAMU_INSTANTIATE(T)                                                                                   \
  template void embedding_forward<T>(const CpuCtx&, int64_t, int64_t, const int32_t*, const T*, T*);          \
  template void embedding_backward<T>(const CpuCtx&, int64_t, int64_t, int64_t, const int32_t*, const T*, T*);
HAMU_INSTANTIATE(float)
HAMU_INSTANTIATE(double)
#undef HAMU_INSTANTIATE

}  // namespace hamu::kernels
