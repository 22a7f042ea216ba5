// kernels/cpu/dropout.cpp: dropout with the counter-based mask shared by every backend.
#include "kernels/counter_hash.h"
#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {
constexpr int64_t kParallelMin = 1 << 14;
}  // namespace

template <class T> void dropout_forward(const CpuCtx&, int64_t n, T p, uint64_t seed, const T* x, T* y, uint8_t* mask) {
  // p == 1 drops everything; the scale would be inf, and 0 * inf must not reach y.
  const T scale = p < T(1) ? T(1) / (T(1) - p) : T(0);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    // Compared in T, as the CUDA float kernel does for float; u has 24 bits, so p == 0 keeps all.
    const bool keep = T(counter_uniform(seed, uint64_t(i))) >= p;
    y[i] = keep ? x[i] * scale : T(0);
    if (mask) mask[i] = keep ? 1 : 0;
  }
}

template <class T> void dropout_backward(const CpuCtx&, int64_t n, T p, const uint8_t* mask, const T* gy, T* gx) {
  const T scale = p < T(1) ? T(1) / (T(1) - p) : T(0);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) gx[i] = mask[i] ? gy[i] * scale : T(0);
}

template void dropout_forward<float>(const CpuCtx&, int64_t, float, uint64_t, const float*, float*, uint8_t*);
template void dropout_forward<double>(const CpuCtx&, int64_t, double, uint64_t, const double*, double*, uint8_t*);
template void dropout_backward<float>(const CpuCtx&, int64_t, float, const uint8_t*, const float*, float*);
template void dropout_backward<double>(const CpuCtx&, int64_t, double, const uint8_t*, const double*, double*);

}  // namespace hamu::kernels
