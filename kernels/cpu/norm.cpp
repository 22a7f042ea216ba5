// kernels/cpu/norm.cpp: BatchNorm (train, inference, backward with batch or fixed statistics) and
// LayerNorm over the last dim, forward and backward.
//
// Statistics are accumulated in double and the variance is two-pass (mean first, then squared
// deviations), so float inputs with a large mean do not lose the variance to cancellation.
// gamma/beta may be null (taken as 1 and 0), and so may ggamma/gbeta and the running buffers (skipped):
// frozen or non-affine layers then need no dummy buffers.
#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 14;
constexpr int64_t kColumnBlock = 256;  // LayerNorm parameter-gradient columns per task (stack accumulators)

template <class T> inline T gamma_at(const T* gamma, int64_t i) { return gamma ? gamma[i] : T(1); }
template <class T> inline T beta_at(const T* beta, int64_t i) { return beta ? beta[i] : T(0); }

// Mean and biased variance of channel ch of x [n, c, hw].
template <class T> void channel_moments(int64_t n, int64_t c, int64_t hw, const T* x, int64_t ch, double& mean,
                                        double& var) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T* xp = x + (i * c + ch) * hw;
    for (int64_t k = 0; k < hw; ++k) s += xp[k];
  }
  const double count = double(n * hw);
  mean = s / count;
  double q = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T* xp = x + (i * c + ch) * hw;
    for (int64_t k = 0; k < hw; ++k) {
      const double d = double(xp[k]) - mean;
      q += d * d;
    }
  }
  var = q / count;
}

// y = (x - mean) * scale + shift over channel ch. Centring first (rather than folding the mean into the
// shift) keeps float precision when the mean is large against the spread.
template <class T>
void channel_affine(int64_t n, int64_t c, int64_t hw, const T* x, int64_t ch, T mean, T scale, T shift, T* y) {
  for (int64_t i = 0; i < n; ++i) {
    const T* xp = x + (i * c + ch) * hw;
    T* yp = y + (i * c + ch) * hw;
    for (int64_t k = 0; k < hw; ++k) yp[k] = (xp[k] - mean) * scale + shift;
  }
}

}  // namespace

template <class T>
void batchnorm_forward_train(const CpuCtx&, int64_t n, int64_t c, int64_t hw, const T* x, const T* gamma,
                             const T* beta, T eps, T momentum, T* y, T* save_mean, T* save_invstd, T* running_mean,
                             T* running_var) {
  const int64_t count = n * hw;
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
  for (int64_t ch = 0; ch < c; ++ch) {
    double mean, var;
    channel_moments(n, c, hw, x, ch, mean, var);
    const double invstd = 1.0 / std::sqrt(var + double(eps));
    save_mean[ch] = T(mean);
    save_invstd[ch] = T(invstd);
    const double scale = double(gamma_at(gamma, ch)) * invstd;
    channel_affine(n, c, hw, x, ch, T(mean), T(scale), beta_at(beta, ch), y);
    if (running_mean) running_mean[ch] = T((1.0 - double(momentum)) * running_mean[ch] + double(momentum) * mean);
    if (running_var) {
      // A single value per channel has no unbiased variance; keep the biased one (0) rather than divide by 0.
      const double unbiased = count > 1 ? var * double(count) / double(count - 1) : var;
      running_var[ch] = T((1.0 - double(momentum)) * running_var[ch] + double(momentum) * unbiased);
    }
  }
}

template <class T>
void batchnorm_forward_infer(const CpuCtx&, int64_t n, int64_t c, int64_t hw, const T* x, const T* gamma,
                             const T* beta, const T* running_mean, const T* running_var, T eps, T* y, T* save_mean,
                             T* save_invstd) {
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
  for (int64_t ch = 0; ch < c; ++ch) {
    const double mean = running_mean[ch];
    const double invstd = 1.0 / std::sqrt(double(running_var[ch]) + double(eps));
    if (save_mean) save_mean[ch] = T(mean);
    if (save_invstd) save_invstd[ch] = T(invstd);
    const double scale = double(gamma_at(gamma, ch)) * invstd;
    channel_affine(n, c, hw, x, ch, T(mean), T(scale), beta_at(beta, ch), y);
  }
}

template <class T>
void batchnorm_backward(const CpuCtx&, int64_t n, int64_t c, int64_t hw, bool batch_stats, const T* x, const T* gy,
                        const T* gamma, const T* save_mean, const T* save_invstd, T* gx, T* ggamma, T* gbeta) {
  const double count = double(n * hw);
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
  for (int64_t ch = 0; ch < c; ++ch) {
    const double mean = save_mean[ch], invstd = save_invstd[ch];
    double sum_gy = 0, sum_gy_xhat = 0;
    for (int64_t i = 0; i < n; ++i) {
      const T* xp = x + (i * c + ch) * hw;
      const T* gp = gy + (i * c + ch) * hw;
      for (int64_t k = 0; k < hw; ++k) {
        sum_gy += gp[k];
        sum_gy_xhat += double(gp[k]) * (double(xp[k]) - mean);
      }
    }
    sum_gy_xhat *= invstd;
    if (ggamma) ggamma[ch] += T(sum_gy_xhat);
    if (gbeta) gbeta[ch] += T(sum_gy);
    const double scale = double(gamma_at(gamma, ch)) * invstd;
    if (!batch_stats) {
      // Fixed statistics: y is an affine map of x, so gx = gy * gamma * invstd.
      for (int64_t i = 0; i < n; ++i) {
        const T* gp = gy + (i * c + ch) * hw;
        T* gxp = gx + (i * c + ch) * hw;
        for (int64_t k = 0; k < hw; ++k) gxp[k] = T(double(gp[k]) * scale);
      }
      continue;
    }
    // gx = gamma*invstd * (gy - mean(gy) - xhat * mean(gy*xhat)), with xhat = (x - mean) * invstd;
    // folded into gx = a*gy + b*(x - mean) + d per channel.
    const double mean_gy = sum_gy / count, mean_gy_xhat = sum_gy_xhat / count;
    const double a = scale, b = -scale * mean_gy_xhat * invstd, d = -scale * mean_gy;
    for (int64_t i = 0; i < n; ++i) {
      const T* xp = x + (i * c + ch) * hw;
      const T* gp = gy + (i * c + ch) * hw;
      T* gxp = gx + (i * c + ch) * hw;
      for (int64_t k = 0; k < hw; ++k) gxp[k] = T(a * double(gp[k]) + b * (double(xp[k]) - mean) + d);
    }
  }
}

template <class T>
void layernorm_forward(const CpuCtx&, int64_t rows, int64_t d, const T* x, const T* gamma, const T* beta, T eps, T* y,
                       T* mean, T* rstd) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    double s = 0;
    for (int64_t k = 0; k < d; ++k) s += xr[k];
    const double mu = s / double(d);
    double q = 0;
    for (int64_t k = 0; k < d; ++k) {
      const double dev = double(xr[k]) - mu;
      q += dev * dev;
    }
    const double rs = 1.0 / std::sqrt(q / double(d) + double(eps));
    if (mean) mean[r] = T(mu);
    if (rstd) rstd[r] = T(rs);
    for (int64_t k = 0; k < d; ++k) {
      yr[k] = T((double(xr[k]) - mu) * rs * double(gamma_at(gamma, k)) + double(beta_at(beta, k)));
    }
  }
}

template <class T>
void layernorm_backward(const CpuCtx&, int64_t rows, int64_t d, const T* x, const T* gy, const T* gamma,
                        const T* mean, const T* rstd, T* gx, T* ggamma, T* gbeta) {
  // Pass 1, rows in parallel: gx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = gy*gamma.
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    const T* gr = gy + r * d;
    T* gxr = gx + r * d;
    const double mu = mean[r], rs = rstd[r];
    double sum_dxhat = 0, sum_dxhat_xhat = 0;
    for (int64_t k = 0; k < d; ++k) {
      const double dxhat = double(gr[k]) * double(gamma_at(gamma, k));
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * (double(xr[k]) - mu) * rs;
    }
    const double m1 = sum_dxhat / double(d), m2 = sum_dxhat_xhat / double(d);
    for (int64_t k = 0; k < d; ++k) {
      const double dxhat = double(gr[k]) * double(gamma_at(gamma, k));
      const double xhat = (double(xr[k]) - mu) * rs;
      gxr[k] = T(rs * (dxhat - m1 - xhat * m2));
    }
  }
  if (!ggamma && !gbeta) return;
  // Pass 2, column blocks in parallel: the parameter gradients reduce over rows, so each task owns a
  // block of columns and walks every row in order (race-free, deterministic, row-contiguous reads).
  const int64_t blocks = (d + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t lo = blk * kColumnBlock, hi = std::min(d, lo + kColumnBlock), w = hi - lo;
    double acc_g[kColumnBlock] = {}, acc_b[kColumnBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * d + lo;
      const T* gr = gy + r * d + lo;
      const double mu = mean[r], rs = rstd[r];
      for (int64_t k = 0; k < w; ++k) {
        acc_g[k] += double(gr[k]) * (double(xr[k]) - mu) * rs;
        acc_b[k] += double(gr[k]);
      }
    }
    for (int64_t k = 0; k < w; ++k) {
      if (ggamma) ggamma[lo + k] += T(acc_g[k]);
      if (gbeta) gbeta[lo + k] += T(acc_b[k]);
    }
  }
}

#define HAMU_INSTANTIATE(T)                                                                                   \
  template void batchnorm_forward_train<T>(const CpuCtx&, int64_t, int64_t, int64_t, const T*, const T*,      \
                                           const T*, T, T, T*, T*, T*, T*, T*);                               \
  template void batchnorm_forward_infer<T>(const CpuCtx&, int64_t, int64_t, int64_t, const T*, const T*,      \
                                           const T*, const T*, const T*, T, T*, T*, T*);                      \
  template void batchnorm_backward<T>(const CpuCtx&, int64_t, int64_t, int64_t, bool, const T*, const T*,     \
                                      const T*, const T*, const T*, T*, T*, T*);                              \
  template void layernorm_forward<T>(const CpuCtx&, int64_t, int64_t, const T*, const T*, const T*, T, T*,   \
                                     T*, T*);                                                                 \
  template void layernorm_backward<T>(const CpuCtx&, int64_t, int64_t, const T*, const T*, const T*,          \
                                      const T*, const T*, T*, T*, T*);
HAMU_INSTANTIATE(float)
HAMU_INSTANTIATE(double)
#undef HAMU_INSTANTIATE

}  // namespace hamu::kernels
