// kernels/cpu/reduce.cpp: axis reductions, dot products and norms, multi-tensor reductions and the
// two passes of the fused HAMU update.
//
// Full reductions are deterministic whatever the thread count: the input is cut into fixed chunks,
// each chunk is summed (in double) by whichever thread gets it, and the chunk sums are added in order.
#include <cmath>
#include <vector>

#include "kernels/hamu_math.h"
#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {

constexpr int64_t kChunk = 1 << 13;

// Sum over i < n of term(i), in double, deterministic.
template <class F> double chunked_sum(int64_t n, F term) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  if (chunks <= 1) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += term(i);
    return s;
  }
  std::vector<double> part(size_t(chunks), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kChunk, hi = lo + kChunk < n ? lo + kChunk : n;
    double s = 0;
    for (int64_t i = lo; i < hi; ++i) s += term(i);
    part[size_t(c)] = s;
  }
  double s = 0;
  for (double p : part) s += p;
  return s;
}

}  // namespace

template <class T>
void reduce_axis(const CpuCtx&, Reduce op, int64_t outer, int64_t n, int64_t inner, const T* x, T* y,
                 int32_t* argmax) {
#pragma omp parallel for schedule(static) if (outer * n * inner >= (1 << 14))
  for (int64_t o = 0; o < outer; ++o) {
    const T* xo = x + o * n * inner;
    T* yo = y + o * inner;
    if (op == Reduce::max) {
      for (int64_t j = 0; j < inner; ++j) {
        T best = xo[j];
        int32_t bi = 0;
        for (int64_t i = 1; i < n; ++i) {
          const T v = xo[i * inner + j];
          if (v > best || (v != v && best == best)) {  // NaN wins, as in PyTorch
            best = v;
            bi = int32_t(i);
          }
        }
        yo[j] = best;
        if (argmax) argmax[o * inner + j] = bi;
      }
    } else {
      const double scale = op == Reduce::mean ? 1.0 / double(n) : 1.0;
      for (int64_t j = 0; j < inner; ++j) {
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += xo[i * inner + j];
        yo[j] = T(s * scale);
      }
    }
  }
}

template <class T>
void reduce_axis_backward(const CpuCtx&, Reduce op, int64_t outer, int64_t n, int64_t inner, const T* gy,
                          const int32_t* argmax, T* gx) {
#pragma omp parallel for schedule(static) if (outer * n * inner >= (1 << 14))
  for (int64_t o = 0; o < outer; ++o) {
    T* go = gx + o * n * inner;
    const T* gyo = gy + o * inner;
    if (op == Reduce::max) {
      for (int64_t i = 0; i < n * inner; ++i) go[i] = T(0);
      for (int64_t j = 0; j < inner; ++j) go[int64_t(argmax[o * inner + j]) * inner + j] = gyo[j];
    } else {
      const T scale = op == Reduce::mean ? T(1) / T(n) : T(1);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < inner; ++j) go[i * inner + j] = gyo[j] * scale;
    }
  }
}

template <class T> void sum_all(const CpuCtx&, int64_t n, const T* x, T* out) {
  *out = T(chunked_sum(n, [&](int64_t i) { return double(x[i]); }));
}

template <class T> void dot(const CpuCtx&, int64_t n, const T* a, const T* b, T* out) {
  *out = T(chunked_sum(n, [&](int64_t i) { return double(a[i]) * double(b[i]); }));
}

template <class T> void sum_squares(const CpuCtx&, int64_t n, const T* x, T* out) {
  *out = T(chunked_sum(n, [&](int64_t i) { return double(x[i]) * double(x[i]); }));
}

template <class T> void nonfinite_any(const CpuCtx&, int64_t n, const T* x, T* out) {
  int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n >= (1 << 14))
  for (int64_t i = 0; i < n; ++i) bad |= !std::isfinite(x[i]);
  *out = T(bad ? 1 : 0);
}

template <class T> void multi_sum_squares(const CpuCtx& ctx, int count, const T* const* x, const int64_t* sizes, T* sq) {
  for (int i = 0; i < count; ++i) sum_squares(ctx, sizes[i], x[i], sq + i);
}

template <class T> void multi_scale(const CpuCtx&, int count, T* const* x, const int64_t* sizes, const T* scale) {
  for (int t = 0; t < count; ++t) {
    T* p = x[t];
    const T s = scale[t];
    const int64_t n = sizes[t];
#pragma omp parallel for schedule(static) if (n >= (1 << 14))
    for (int64_t i = 0; i < n; ++i) p[i] *= s;
  }
}

template <class T>
void hamu_block_stats(const CpuCtx&, int count, const T* const* r, const T* const* f, const int64_t* sizes,
                      double* stats) {
  for (int b = 0; b < count; ++b) {
    const T* rb = r[b];
    const T* fb = f[b];
    const int64_t n = sizes[b];
    stats[3 * b + 0] = chunked_sum(n, [&](int64_t i) { return double(rb[i]) * double(rb[i]); });
    stats[3 * b + 1] = chunked_sum(n, [&](int64_t i) { return double(fb[i]) * double(fb[i]); });
    stats[3 * b + 2] = chunked_sum(n, [&](int64_t i) { return double(rb[i]) * double(fb[i]); });
  }
}

void hamu_coefficients(const CpuCtx&, const HamuConfig& cfg, int count, const double* stats, double* coef,
                       HamuReport* report) {
  hamu_solve_step(cfg, count, stats, coef, report);
}

template <class T>
void hamu_apply(const CpuCtx&, int count, T* const* theta, const T* const* r, const T* const* f, const int64_t* sizes,
                const double* coef) {
  for (int b = 0; b < count; ++b) {
    T* p = theta[b];
    const T* rb = r[b];
    const T* fb = f[b];
    const T cr = T(coef[2 * b]), cf = T(coef[2 * b + 1]);
    if (cr == T(0) && cf == T(0)) continue;
    const int64_t n = sizes[b];
#pragma omp parallel for schedule(static) if (n >= (1 << 14))
    for (int64_t i = 0; i < n; ++i) p[i] += cr * rb[i] + cf * fb[i];
  }
}

#define HAMU_INSTANTIATE(T)                                                                                   \
  template void reduce_axis<T>(const CpuCtx&, Reduce, int64_t, int64_t, int64_t, const T*, T*, int32_t*);     \
  template void reduce_axis_backward<T>(const CpuCtx&, Reduce, int64_t, int64_t, int64_t, const T*,           \
                                        const int32_t*, T*);                                                  \
  template void sum_all<T>(const CpuCtx&, int64_t, const T*, T*);                                             \
  template void dot<T>(const CpuCtx&, int64_t, const T*, const T*, T*);                                       \
  template void sum_squares<T>(const CpuCtx&, int64_t, const T*, T*);                                         \
  template void nonfinite_any<T>(const CpuCtx&, int64_t, const T*, T*);                                       \
  template void multi_sum_squares<T>(const CpuCtx&, int, const T* const*, const int64_t*, T*);                \
  template void multi_scale<T>(const CpuCtx&, int, T* const*, const int64_t*, const T*);                      \
  template void hamu_block_stats<T>(const CpuCtx&, int, const T* const*, const T* const*, const int64_t*,      \
                                    double*);                                                               \
  template void hamu_apply<T>(const CpuCtx&, int, T* const*, const T* const*, const T* const*, const int64_t*, \
                              const double*);
HAMU_INSTANTIATE(float)
HAMU_INSTANTIATE(double)
#undef HAMU_INSTANTIATE

}  // namespace hamu::kernels
