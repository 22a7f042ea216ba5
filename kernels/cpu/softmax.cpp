// kernels/cpu/softmax.cpp: softmax and log-softmax over the last dim, cross-entropy with an ignore
// index, and the causal (lower-triangular) softmax of attention, forward and backward.
//
// Every row subtracts its maximum before exponentiating, so large logits never overflow; row sums are
// accumulated in double. Rows are independent and are the unit of parallel work.
#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 13;

template <class T> inline T row_max(int64_t d, const T* x) {
  T m = x[0];
  for (int64_t k = 1; k < d; ++k) m = x[k] > m ? x[k] : m;
  return m;
}

// y[k] = exp(scale * x[k] - max) / sum over k < d; max is of scale * x.
template <class T> void softmax_row(int64_t d, T scale, const T* x, T* y) {
  const T m = scale * row_max(d, x);  // scale > 0 keeps the maximum where it was
  double s = 0;
  for (int64_t k = 0; k < d; ++k) {
    y[k] = std::exp(scale * x[k] - m);
    s += y[k];
  }
  const T inv = T(1.0 / s);
  for (int64_t k = 0; k < d; ++k) y[k] *= inv;
}

// log(sum exp(x - max)) + max.
template <class T> double log_sum_exp(int64_t d, const T* x) {
  const T m = row_max(d, x);
  double s = 0;
  for (int64_t k = 0; k < d; ++k) s += std::exp(double(x[k] - m));
  return double(m) + std::log(s);
}

}  // namespace

template <class T> void softmax_forward(const CpuCtx&, int64_t rows, int64_t d, const T* x, T* y) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) softmax_row(d, T(1), x + r * d, y + r * d);
}

template <class T> void softmax_backward(const CpuCtx&, int64_t rows, int64_t d, const T* y, const T* gy, T* gx) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * d;
    const T* gr = gy + r * d;
    T* gxr = gx + r * d;
    double dot = 0;
    for (int64_t k = 0; k < d; ++k) dot += double(yr[k]) * double(gr[k]);
    const T t = T(dot);
    for (int64_t k = 0; k < d; ++k) gxr[k] = yr[k] * (gr[k] - t);
  }
}

template <class T> void log_softmax_forward(const CpuCtx&, int64_t rows, int64_t d, const T* x, T* y) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    const T m = row_max(d, xr);
    double s = 0;
    for (int64_t k = 0; k < d; ++k) s += std::exp(double(xr[k] - m));
    const T shift = T(std::log(s));
    // (x - m) - log s: subtracting the maximum first keeps the small log-probabilities exact.
    for (int64_t k = 0; k < d; ++k) yr[k] = (xr[k] - m) - shift;
  }
}

template <class T>
void log_softmax_backward(const CpuCtx&, int64_t rows, int64_t d, const T* y, const T* gy, T* gx) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * d;
    const T* gr = gy + r * d;
    T* gxr = gx + r * d;
    double s = 0;
    for (int64_t k = 0; k < d; ++k) s += gr[k];
    const T t = T(s);
    for (int64_t k = 0; k < d; ++k) gxr[k] = gr[k] - std::exp(yr[k]) * t;
  }
}

// One pass per row gives the loss and, with a grad buffer, its gradient p - onehot (p_k = exp(x_k - m) / s);
// the loss log s - (x_y - m) comes from the same m and s whether or not grad is asked, so evaluation and
// training report the same bits (those of the log-softmax the forward saved before the fusion).
template <class T>
void cross_entropy_forward(const CpuCtx&, int64_t rows, int64_t classes, const T* logits, const int32_t* labels,
                           int32_t ignore_index, T* losses, T* grad) {
#pragma omp parallel for schedule(static) if (rows * classes >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = logits + r * classes;
    T* gr = grad ? grad + r * classes : nullptr;
    const int32_t lab = labels[r];
    if (lab == ignore_index) {
      losses[r] = T(0);
      if (gr) std::fill(gr, gr + classes, T(0));
      continue;
    }
    const T m = row_max(classes, xr);
    double s = 0;
    for (int64_t k = 0; k < classes; ++k) {
      const double e = std::exp(double(xr[k] - m));
      s += e;
      if (gr) gr[k] = T(e);
    }
    losses[r] = T(std::log(s)) - (xr[lab] - m);
    if (!gr) continue;
    const T inv = T(1.0 / s);
    for (int64_t k = 0; k < classes; ++k) gr[k] *= inv;
    gr[lab] -= T(1);
  }
}

template <class T>
void cross_entropy_mean(const CpuCtx&, int64_t rows, const T* losses, const int32_t* labels, int32_t ignore_index,
                        T* loss, T* inv_count) {
  double s = 0;
  int64_t n = 0;
  for (int64_t r = 0; r < rows; ++r)
    if (labels[r] != ignore_index) {
      s += losses[r];
      ++n;
    }
  *loss = n ? T(s / double(n)) : T(0);
  *inv_count = n ? T(1.0 / double(n)) : T(0);
}

template <class T>
void cross_entropy_backward(const CpuCtx&, int64_t rows, int64_t classes, const T* grad, const int32_t* labels,
                            int32_t ignore_index, const T* gloss, int64_t gloss_stride, const T* scale, T* glogits) {
  const T sc = scale ? *scale : T(1);
#pragma omp parallel for schedule(static) if (rows * classes >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* sr = grad + r * classes;
    T* gr = glogits + r * classes;
    // An ignored row's gradient is 0 whatever reaches it (also an infinite or NaN upstream value).
    if (labels[r] == ignore_index) {
      std::fill(gr, gr + classes, T(0));
      continue;
    }
    const T g = gloss[r * gloss_stride] * sc;
    for (int64_t k = 0; k < classes; ++k) gr[k] = g * sr[k];
  }
}

template <class T>
void causal_softmax_forward(const CpuCtx&, int64_t batch, int64_t t, T scale, const T* scores, T* probs) {
  const int64_t rows = batch * t;
#pragma omp parallel for schedule(static) if (rows * t >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r % t;  // query position: attends to keys 0..i
    const T* sr = scores + r * t;
    T* pr = probs + r * t;
    if (scale > T(0)) {
      softmax_row(i + 1, scale, sr, pr);
    } else {
      // A non-positive scale moves the maximum; scale into the output first, then normalise in place.
      for (int64_t j = 0; j <= i; ++j) pr[j] = scale * sr[j];
      softmax_row(i + 1, T(1), pr, pr);
    }
    std::fill(pr + i + 1, pr + t, T(0));
  }
}

template <class T>
void causal_softmax_backward(const CpuCtx&, int64_t batch, int64_t t, T scale, const T* probs, const T* gprobs,
                             T* gscores) {
  const int64_t rows = batch * t;
#pragma omp parallel for schedule(static) if (rows * t >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r % t;
    const T* pr = probs + r * t;
    const T* gr = gprobs + r * t;
    T* gsr = gscores + r * t;
    // Masked probabilities are constant 0, so their incoming gradient does not enter the sum.
    double dot = 0;
    for (int64_t j = 0; j <= i; ++j) dot += double(pr[j]) * double(gr[j]);
    const T dt = T(dot);
    for (int64_t j = 0; j <= i; ++j) gsr[j] = scale * pr[j] * (gr[j] - dt);
    std::fill(gsr + i + 1, gsr + t, T(0));
  }
}

#define HAMU_INSTANTIATE(T)                                                                                   \
  template void softmax_forward<T>(const CpuCtx&, int64_t, int64_t, const T*, T*);                            \
  template void softmax_backward<T>(const CpuCtx&, int64_t, int64_t, const T*, const T*, T*);                 \
  template void log_softmax_forward<T>(const CpuCtx&, int64_t, int64_t, const T*, T*);                        \
  template void log_softmax_backward<T>(const CpuCtx&, int64_t, int64_t, const T*, const T*, T*);             \
  template void cross_entropy_forward<T>(const CpuCtx&, int64_t, int64_t, const T*, const int32_t*, int32_t,  \
                                         T*, T*);                                                             \
  template void cross_entropy_mean<T>(const CpuCtx&, int64_t, const T*, const int32_t*, int32_t, T*, T*);      \
  template void cross_entropy_backward<T>(const CpuCtx&, int64_t, int64_t, const T*, const int32_t*, int32_t, \
                                          const T*, int64_t, const T*, T*);                                   \
  template void causal_softmax_forward<T>(const CpuCtx&, int64_t, int64_t, T, const T*, T*);                  \
  template void causal_softmax_backward<T>(const CpuCtx&, int64_t, int64_t, T, const T*, const T*, T*);
HAMU_INSTANTIATE(float)
HAMU_INSTANTIATE(double)
#undef HAMU_INSTANTIATE

}  // namespace hamu::kernels
