// kernels/cpu/elementwise.cpp: fills, copies, casts, same-shape and broadcast binary ops, unary
// activations and their backward, and the broadcast-reversing sum_to.
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <cstring>

#include "kernels/bf16.h"
#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 14;  // below this, threads cost more than they save

template <class T> inline T apply_binary(Binary op, T a, T b) {
  switch (op) {
    case Binary::add: return a + b;
    case Binary::sub: return a - b;
    case Binary::mul: return a * b;
    case Binary::div: return a / b;
    // NaN in either operand gives NaN, as torch.maximum / torch.minimum do.
    case Binary::max: return (a > b || a != a) ? a : b;
    case Binary::min: return (a < b || a != a) ? a : b;
  }
  return T(0);
}

template <class T> inline T gelu(T x) { return T(0.5) * x * (T(1) + std::erf(x * T(M_SQRT1_2))); }
template <class T> inline T gelu_grad(T x) {
  const T cdf = T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
  const T pdf = std::exp(T(-0.5) * x * x) * T(0.3989422804014327);  // 1/sqrt(2 pi)
  return cdf + x * pdf;
}

template <class T, class F> void parallel_map(int64_t n, F f) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) f(i);
}

}  // namespace

template <class T> void fill(const CpuCtx&, int64_t n, T value, T* y) {
  parallel_map<T>(n, [&](int64_t i) { y[i] = value; });
}

template <class T> void copy(const CpuCtx&, int64_t n, const T* x, T* y) {
  if (n >= kParallelMin * 16) {
    parallel_map<T>(n, [&](int64_t i) { y[i] = x[i]; });
  } else if (n > 0) {
    std::memcpy(y, x, size_t(n) * sizeof(T));
  }
}

template <class T>
void strided_copy(const CpuCtx&, int ndim, const int64_t* shape, const int64_t* strides, const T* x, T* y) {
  if (ndim == 0) {
    y[0] = x[0];
    return;
  }
  // An empty tensor copies nothing: without this, [2^30, 2^32, 0] would loop over 2^62 empty rows.
  for (int d = 0; d < ndim; ++d)
    if (shape[d] == 0) return;
  // Rows of the last dim; each row's start is found from its multi-index.
  int64_t rows = 1;
  for (int d = 0; d < ndim - 1; ++d) rows *= shape[d];
  const int64_t cols = shape[ndim - 1], cs = strides[ndim - 1];
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, off = 0;
    for (int d = ndim - 2; d >= 0; --d) {
      off += (rem % shape[d]) * strides[d];
      rem /= shape[d];
    }
    const T* src = x + off;
    T* dst = y + r * cols;
    for (int64_t c = 0; c < cols; ++c) dst[c] = src[c * cs];
  }
}

template <class T>
void copy_rows(const CpuCtx&, int64_t rows, int64_t cols, const T* x, int64_t ldx, T* y, int64_t ldy) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) std::memcpy(y + r * ldy, x + r * ldx, size_t(cols) * sizeof(T));
}

template <class T> void axpby(const CpuCtx&, int64_t n, T a, const T* x, T b, T* y) {
  if (b == T(0)) parallel_map<T>(n, [&](int64_t i) { y[i] = a * x[i]; });
  else parallel_map<T>(n, [&](int64_t i) { y[i] = a * x[i] + b * y[i]; });
}

template <class T> void affine(const CpuCtx&, int64_t n, const T* x, T a, T b, T* y) {
  parallel_map<T>(n, [&](int64_t i) { y[i] = a * x[i] + b; });
}

void cast_f32_f64(const CpuCtx&, int64_t n, const float* x, double* y) {
  parallel_map<double>(n, [&](int64_t i) { y[i] = double(x[i]); });
}
void cast_f64_f32(const CpuCtx&, int64_t n, const double* x, float* y) {
  parallel_map<float>(n, [&](int64_t i) { y[i] = float(x[i]); });
}
void cast_f32_bf16(const CpuCtx&, int64_t n, const float* x, uint16_t* y) {
  parallel_map<float>(n, [&](int64_t i) { y[i] = float_to_bf16(x[i]); });
}
void cast_bf16_f32(const CpuCtx&, int64_t n, const uint16_t* x, float* y) {
  parallel_map<float>(n, [&](int64_t i) { y[i] = bf16_to_float(x[i]); });
}

template <class T> void binary(const CpuCtx&, Binary op, int64_t n, const T* a, const T* b, T* y) {
  switch (op) {
    case Binary::add: parallel_map<T>(n, [&](int64_t i) { y[i] = a[i] + b[i]; }); break;
    case Binary::sub: parallel_map<T>(n, [&](int64_t i) { y[i] = a[i] - b[i]; }); break;
    case Binary::mul: parallel_map<T>(n, [&](int64_t i) { y[i] = a[i] * b[i]; }); break;
    case Binary::div: parallel_map<T>(n, [&](int64_t i) { y[i] = a[i] / b[i]; }); break;
    default: parallel_map<T>(n, [&](int64_t i) { y[i] = apply_binary(op, a[i], b[i]); }); break;
  }
}

template <class T>
void binary_bcast(const CpuCtx&, Binary op, int ndim, const int64_t* shape, const int64_t* sa, const int64_t* sb,
                  const T* a, const T* b, T* y) {
  if (ndim == 0) {
    y[0] = apply_binary(op, a[0], b[0]);
    return;
  }
  int64_t rows = 1;
  for (int d = 0; d < ndim - 1; ++d) rows *= shape[d];
  const int64_t cols = shape[ndim - 1], ca = sa[ndim - 1], cb = sb[ndim - 1];
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, oa = 0, ob = 0;
    for (int d = ndim - 2; d >= 0; --d) {
      const int64_t i = rem % shape[d];
      rem /= shape[d];
      oa += i * sa[d];
      ob += i * sb[d];
    }
    const T* pa = a + oa;
    const T* pb = b + ob;
    T* py = y + r * cols;
    if (op == Binary::add && ca == 1 && cb == 1) {
      for (int64_t c = 0; c < cols; ++c) py[c] = pa[c] + pb[c];
    } else if (op == Binary::add && ca == 1 && cb == 0) {
      const T v = pb[0];
      for (int64_t c = 0; c < cols; ++c) py[c] = pa[c] + v;
    } else if (op == Binary::mul && ca == 1 && cb == 0) {
      const T v = pb[0];
      for (int64_t c = 0; c < cols; ++c) py[c] = pa[c] * v;
    } else {
      for (int64_t c = 0; c < cols; ++c) py[c] = apply_binary(op, pa[c * ca], pb[c * cb]);
    }
  }
}

template <class T>
void sum_to(const CpuCtx&, int ndim, const int64_t* in_shape, const int64_t* out_shape, const T* x, T* y) {
  // For every output element, sum the input elements that broadcast onto it. Strides of the input
  // for the kept dims (out) and the reduced dims (red) let both loops run without index division.
  int64_t out_n = 1, red_n = 1;
  int64_t in_strides[16];
  int64_t acc = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    in_strides[d] = acc;
    acc *= in_shape[d];
  }
  int kept[16], red[16], nk = 0, nr = 0;
  for (int d = 0; d < ndim; ++d) {
    if (out_shape[d] == 1 && in_shape[d] != 1) {
      red[nr++] = d;
      red_n *= in_shape[d];
    } else {
      kept[nk++] = d;
      out_n *= in_shape[d];
    }
  }
#pragma omp parallel for schedule(static) if (out_n * red_n >= kParallelMin)
  for (int64_t o = 0; o < out_n; ++o) {
    int64_t rem = o, base = 0;
    for (int k = nk - 1; k >= 0; --k) {
      const int d = kept[k];
      base += (rem % in_shape[d]) * in_strides[d];
      rem /= in_shape[d];
    }
    T s = 0;
    for (int64_t r = 0; r < red_n; ++r) {
      int64_t rr = r, off = base;
      for (int k = nr - 1; k >= 0; --k) {
        const int d = red[k];
        off += (rr % in_shape[d]) * in_strides[d];
        rr /= in_shape[d];
      }
      s += x[off];
    }
    y[o] = s;
  }
}

template <class T> void unary(const CpuCtx&, Unary op, int64_t n, const T* x, T* y) {
  switch (op) {
    case Unary::neg: parallel_map<T>(n, [&](int64_t i) { y[i] = -x[i]; }); break;
    // NaN passes through, as in PyTorch: a NaN weight must not turn into a plausible 0 activation.
    case Unary::relu: parallel_map<T>(n, [&](int64_t i) { y[i] = (x[i] > T(0) || x[i] != x[i]) ? x[i] : T(0); }); break;
    case Unary::gelu: parallel_map<T>(n, [&](int64_t i) { y[i] = gelu(x[i]); }); break;
    case Unary::tanh: parallel_map<T>(n, [&](int64_t i) { y[i] = std::tanh(x[i]); }); break;
    case Unary::exp: parallel_map<T>(n, [&](int64_t i) { y[i] = std::exp(x[i]); }); break;
    case Unary::log: parallel_map<T>(n, [&](int64_t i) { y[i] = std::log(x[i]); }); break;
    case Unary::sigmoid: parallel_map<T>(n, [&](int64_t i) { y[i] = T(1) / (T(1) + std::exp(-x[i])); }); break;
    case Unary::sqrt: parallel_map<T>(n, [&](int64_t i) { y[i] = std::sqrt(x[i]); }); break;
    case Unary::square: parallel_map<T>(n, [&](int64_t i) { y[i] = x[i] * x[i]; }); break;
    case Unary::abs: parallel_map<T>(n, [&](int64_t i) { y[i] = std::fabs(x[i]); }); break;
  }
}

template <class T>
void unary_backward(const CpuCtx&, Unary op, int64_t n, const T* x, const T* y, const T* gy, T* gx) {
  switch (op) {
    case Unary::neg: parallel_map<T>(n, [&](int64_t i) { gx[i] = -gy[i]; }); break;
    // PyTorch's threshold_backward: zero only where x <= 0, so a NaN input passes the gradient on.
    case Unary::relu: {
      // The mask as bits (an AND vectorises; gcc may keep the float select as a branch, mispredicted half
      // the time on a random sign pattern): gy where !(x <= 0), NaN included, an exact +0 elsewhere.
      using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
      parallel_map<T>(n, [&](int64_t i) {
        const Bits keep = !(x[i] <= T(0)) ? ~Bits(0) : Bits(0);
        gx[i] = std::bit_cast<T>(std::bit_cast<Bits>(gy[i]) & keep);
      });
      break;
    }
    case Unary::gelu: parallel_map<T>(n, [&](int64_t i) { gx[i] = gy[i] * gelu_grad(x[i]); }); break;
    case Unary::tanh: parallel_map<T>(n, [&](int64_t i) { gx[i] = gy[i] * (T(1) - y[i] * y[i]); }); break;
    case Unary::exp: parallel_map<T>(n, [&](int64_t i) { gx[i] = gy[i] * y[i]; }); break;
    case Unary::log: parallel_map<T>(n, [&](int64_t i) { gx[i] = gy[i] / x[i]; }); break;
    case Unary::sigmoid: parallel_map<T>(n, [&](int64_t i) { gx[i] = gy[i] * y[i] * (T(1) - y[i]); }); break;
    case Unary::sqrt: parallel_map<T>(n, [&](int64_t i) { gx[i] = gy[i] * T(0.5) / y[i]; }); break;
    case Unary::square: parallel_map<T>(n, [&](int64_t i) { gx[i] = gy[i] * T(2) * x[i]; }); break;
    case Unary::abs:
      parallel_map<T>(n, [&](int64_t i) { gx[i] = x[i] > T(0) ? gy[i] : (x[i] < T(0) ? -gy[i] : T(0)); });
      break;
  }
}

#define HAMU_INSTANTIATE(T)                                                                                   \
  template void fill<T>(const CpuCtx&, int64_t, T, T*);                                                       \
  template void copy<T>(const CpuCtx&, int64_t, const T*, T*);                                                \
  template void strided_copy<T>(const CpuCtx&, int, const int64_t*, const int64_t*, const T*, T*);            \
  template void copy_rows<T>(const CpuCtx&, int64_t, int64_t, const T*, int64_t, T*, int64_t);                \
  template void axpby<T>(const CpuCtx&, int64_t, T, const T*, T, T*);                                         \
  template void affine<T>(const CpuCtx&, int64_t, const T*, T, T, T*);                                        \
  template void binary<T>(const CpuCtx&, Binary, int64_t, const T*, const T*, T*);                            \
  template void binary_bcast<T>(const CpuCtx&, Binary, int, const int64_t*, const int64_t*, const int64_t*,   \
                                const T*, const T*, T*);                                                      \
  template void sum_to<T>(const CpuCtx&, int, const int64_t*, const int64_t*, const T*, T*);                  \
  template void unary<T>(const CpuCtx&, Unary, int64_t, const T*, T*);                                        \
  template void unary_backward<T>(const CpuCtx&, Unary, int64_t, const T*, const T*, const T*, T*);
HAMU_INSTANTIATE(float)
HAMU_INSTANTIATE(double)
#undef HAMU_INSTANTIATE

}  // namespace hamu::kernels
