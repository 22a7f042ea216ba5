// kernels/cpu/norm.cpp: BatchNorm (train, inference, backward with batch or fixed statistics), the fused
// BatchNorm(fixed statistics) + residual add + ReLU pass, and LayerNorm over the last dim, forward and backward.
//
// Statistics are accumulated in double and the variance is two-pass (mean first, then squared
// deviations), so float inputs with a large mean do not lose the variance to cancellation.
// gamma/beta may be null (taken as 1 and 0), and so may ggamma/gbeta and the running buffers (skipped):
// frozen or non-affine layers then need no dummy buffers.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/bn_act.h"
#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 14;
constexpr int64_t kColumnBlock = 256;  // LayerNorm parameter-gradient columns per task (stack accumulators)

template <class T> inline T gamma_at(const T* gamma, int64_t i) { return gamma ? gamma[i] : T(1); }
template <class T> inline T beta_at(const T* beta, int64_t i) { return beta ? beta[i] : T(0); }

// Mean and biased variance of channel ch of x [n, c, hw]. The sums are SIMD reductions (several partial sums,
// combined in a fixed order: deterministic, no thread count involved): one serial chain of double additions
// made training-mode BatchNorm a third of a cnn training step.
template <class T> void channel_moments(int64_t n, int64_t c, int64_t hw, const T* x, int64_t ch, double& mean,
                                        double& var) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T* xp = x + (i * c + ch) * hw;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < hw; ++k) s += double(xp[k]);
  }
  const double count = double(n * hw);
  mean = s / count;
  double q = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T* xp = x + (i * c + ch) * hw;
#pragma omp simd reduction(+ : q)
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

namespace {

// Training-mode BatchNorm forward, optionally followed by the residual add and the ReLU (batch_norm_train_act)
// applied to each value while it is in a register; without them the plain affine pass.
template <class T>
void bn_train_forward(int64_t n, int64_t c, int64_t hw, const T* x, const T* gamma, const T* beta, T eps, T momentum,
                      const T* residual, bool relu, T* y, T* save_mean, T* save_invstd, T* running_mean,
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
    if (!residual && !relu) {
      channel_affine(n, c, hw, x, ch, T(mean), T(scale), beta_at(beta, ch), y);
    } else {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t off = (i * c + ch) * hw;
        bn_act::plane_any(hw, x + off, residual ? residual + off : nullptr, T(mean), T(scale), beta_at(beta, ch), relu,
                          y + off);
      }
    }
    if (running_mean) running_mean[ch] = T((1.0 - double(momentum)) * running_mean[ch] + double(momentum) * mean);
    if (running_var) {
      // A single value per channel has no unbiased variance; keep the biased one (0) rather than divide by 0.
      const double unbiased = count > 1 ? var * double(count) / double(count - 1) : var;
      running_var[ch] = T((1.0 - double(momentum)) * running_var[ch] + double(momentum) * unbiased);
    }
  }
}

}  // namespace

template <class T>
void batchnorm_forward_train(const CpuCtx&, int64_t n, int64_t c, int64_t hw, const T* x, const T* gamma,
                             const T* beta, T eps, T momentum, T* y, T* save_mean, T* save_invstd, T* running_mean,
                             T* running_var) {
  bn_train_forward(n, c, hw, x, gamma, beta, eps, momentum, static_cast<const T*>(nullptr), false, y, save_mean,
                   save_invstd, running_mean, running_var);
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

namespace {

// The input gradient of channel ch with batch statistics: gx = gamma*invstd * (g - mean(g) - xhat * mean(g*xhat)),
// xhat = (x - mean) * invstd, folded into gx = a*g + b*(x - mean) + d. g may be gx itself (read before written).
template <class T>
void batch_stats_gx(int64_t n, int64_t c, int64_t hw, int64_t ch, const T* x, const T* g, T* gx, double mean,
                    double invstd, double scale, double mean_g, double mean_g_xhat) {
  const double a = scale, b = -scale * mean_g_xhat * invstd, d = -scale * mean_g;
  for (int64_t i = 0; i < n; ++i) {
    const T* xp = x + (i * c + ch) * hw;
    const T* gp = g + (i * c + ch) * hw;
    T* gxp = gx + (i * c + ch) * hw;
    for (int64_t k = 0; k < hw; ++k) gxp[k] = T(a * double(gp[k]) + b * (double(xp[k]) - mean) + d);
  }
}

// The ReLU backward's mask from its output, as bits: gcc keeps a float select feeding double sums as a branch
// (mispredicted half the time on a random sign pattern, slower than the whole pass); an AND vectorises. Passes g
// where !(y <= 0), NaN included, and gives an exact 0 elsewhere, as the unfused relu backward does.
template <bool Relu, class T> inline T relu_masked(T g, T y) {
  if constexpr (!Relu) {
    return g;
  } else {
    using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    const Bits keep = !(y <= T(0)) ? ~Bits(0) : Bits(0);
    return std::bit_cast<T>(std::bit_cast<Bits>(g) & keep);
  }
}

}  // namespace

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
#pragma omp simd reduction(+ : sum_gy, sum_gy_xhat)  // as channel_moments
      for (int64_t k = 0; k < hw; ++k) {
        sum_gy += double(gp[k]);
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
    batch_stats_gx(n, c, hw, ch, x, gy, gx, mean, invstd, scale, sum_gy / count, sum_gy_xhat / count);
  }
}

// ---- Fused BatchNorm on fixed statistics + residual add + ReLU ----------------------------------------

namespace {

// Backward of one plane: gz = gy masked by y (the ReLU passed where its output is not <= 0, which is
// exactly where its input was not <= 0: the unfused relu's rule), written where asked; returns the sums.
template <bool Relu, bool Res, bool Gz, class T>
void bn_act_plane_backward(int64_t hw, const T* xp, const T* yp, const T* gp, double mean, T scale, T* gxp, T* grp,
                           T* gzp, double& sum_gz, double& sum_gz_xc) {
  double s = 0, sx = 0;
#pragma omp simd reduction(+ : s, sx)
  for (int64_t k = 0; k < hw; ++k) {
    const T g = relu_masked<Relu>(gp[k], Relu ? yp[k] : T(1));
    gxp[k] = g * scale;
    if constexpr (Res) grp[k] = g;
    if constexpr (Gz) gzp[k] = g;
    s += double(g);
    sx += double(g) * (double(xp[k]) - mean);
  }
  sum_gz += s;
  sum_gz_xc += sx;
}

template <bool Relu, bool Res, bool Gz, class T>
void bn_act_backward_impl(int64_t n, int64_t c, int64_t hw, int64_t split, const T* x, const T* y, const T* gy,
                          const T* gamma, const T* save_mean, const T* save_invstd, T* gx, T* gresidual, T* gz,
                          T* ggamma, T* gbeta, T* ggamma2, T* gbeta2) {
  // Channels in parallel: each task owns its channel's sums (race-free, deterministic order).
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
  for (int64_t ch = 0; ch < c; ++ch) {
    const double mean = save_mean[ch], invstd = save_invstd[ch];
    const T scale = T(double(gamma_at(gamma, ch)) * invstd);
    double sum[2] = {0, 0}, sum_xc[2] = {0, 0};
    for (int64_t i = 0; i < n; ++i) {
      const int64_t off = (i * c + ch) * hw;
      const int h = i >= split;
      bn_act_plane_backward<Relu, Res, Gz>(hw, x + off, Relu ? y + off : nullptr, gy + off, mean, scale, gx + off,
                                           Res ? gresidual + off : nullptr, Gz ? gz + off : nullptr, sum[h],
                                           sum_xc[h]);
    }
    if (ggamma) ggamma[ch] += T(sum_xc[0] * invstd);
    if (gbeta) gbeta[ch] += T(sum[0]);
    if (split < n) {
      if (ggamma2) ggamma2[ch] += T(sum_xc[1] * invstd);
      if (gbeta2) gbeta2[ch] += T(sum[1]);
    }
  }
}

// Calls run(relu, residual, keep) with the three run-time flags as std::bool_constant (each variant a branch-free
// template instance).
template <class F> void with_flags(bool relu, bool res, bool keep, F&& run) {
  using Y = std::true_type;
  using N = std::false_type;
  if (relu) {
    if (res) keep ? run(Y{}, Y{}, Y{}) : run(Y{}, Y{}, N{});
    else keep ? run(Y{}, N{}, Y{}) : run(Y{}, N{}, N{});
  } else {
    if (res) keep ? run(N{}, Y{}, Y{}) : run(N{}, Y{}, N{});
    else keep ? run(N{}, N{}, Y{}) : run(N{}, N{}, N{});
  }
}

}  // namespace

int64_t batchnorm_act_workspace_elems(const CpuCtx&, int64_t, int64_t, int64_t) { return 0; }

template <class T>
void batchnorm_act_forward(const CpuCtx&, int64_t n, int64_t c, int64_t hw, const T* x, const T* gamma,
                           const T* beta, const T* running_mean, const T* running_var, T eps, const T* residual,
                           bool relu, T* y, T* save_mean, T* save_invstd) {
  for (int64_t ch = 0; ch < c; ++ch) {
    save_mean[ch] = running_mean[ch];
    save_invstd[ch] = T(1.0 / std::sqrt(double(running_var[ch]) + double(eps)));
  }
  // Planes (sample, channel) in parallel: one read of x (and the residual), one write of y.
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
  for (int64_t p = 0; p < n * c; ++p) {
    const int64_t ch = p % c;
    const T* rp = residual ? residual + p * hw : nullptr;
    bn_act::plane_any(hw, x + p * hw, rp, running_mean[ch], bn_act::scale_of(gamma, running_var, eps, ch),
                      beta_at(beta, ch), relu, y + p * hw);
  }
}

template <class T>
void batchnorm_act_backward(const CpuCtx&, int64_t n, int64_t c, int64_t hw, int64_t split, const T* x, const T* y,
                            const T* gy, bool relu, const T* gamma, const T* save_mean, const T* save_invstd, T* gx,
                            T* gresidual, T* gz, T* ggamma, T* gbeta, T* ggamma2, T* gbeta2, T*) {
  const bool res = gresidual != nullptr, keep = gz != nullptr;
  auto run = [&](auto relu_c, auto res_c, auto gz_c) {
    bn_act_backward_impl<decltype(relu_c)::value, decltype(res_c)::value, decltype(gz_c)::value>(
        n, c, hw, split, x, y, gy, gamma, save_mean, save_invstd, gx, gresidual, gz, ggamma, gbeta, ggamma2, gbeta2);
  };
  with_flags(relu, res, keep, run);
}

// ---- Training-mode BatchNorm + residual add + ReLU ------------------------------------------------------

template <class T>
void batchnorm_train_act_forward(const CpuCtx&, int64_t n, int64_t c, int64_t hw, const T* x, const T* gamma,
                                 const T* beta, T eps, T momentum, const T* residual, bool relu, T* y, T* save_mean,
                                 T* save_invstd, T* running_mean, T* running_var) {
  bn_train_forward(n, c, hw, x, gamma, beta, eps, momentum, residual, relu, y, save_mean, save_invstd, running_mean,
                   running_var);
}

namespace {

// Pass 1 over one plane: gz = gy masked as bn_act_plane_backward masks it, written into gx (and gresidual / gz
// where asked), and added to the channel's sums. The sums are reductions that start from the channel's running
// values, as batchnorm_backward's are, so they round as the unfused ops' do.
template <bool Relu, bool Res, bool Gz, class T>
void bn_train_act_plane(int64_t hw, const T* xp, const T* yp, const T* gp, double mean, T* gxp, T* grp, T* gzp,
                        double& sum_gz, double& sum_gz_xc) {
  double s = sum_gz, sx = sum_gz_xc;
#pragma omp simd reduction(+ : s, sx)
  for (int64_t k = 0; k < hw; ++k) {
    const T g = relu_masked<Relu>(gp[k], Relu ? yp[k] : T(1));
    gxp[k] = g;
    if constexpr (Res) grp[k] = g;
    if constexpr (Gz) gzp[k] = g;
    s += double(g);
    sx += double(g) * (double(xp[k]) - mean);
  }
  sum_gz = s;
  sum_gz_xc = sx;
}

// Pass 1 of one channel (bn_train_act_plane over its planes); pass 2: gx from gz, x and the sums, as
// batchnorm_backward.
template <bool Relu, bool Res, bool Gz, class T>
void bn_train_act_backward_impl(int64_t n, int64_t c, int64_t hw, const T* x, const T* y, const T* gy, const T* gamma,
                                const T* save_mean, const T* save_invstd, T* gx, T* gresidual, T* gz, T* ggamma,
                                T* gbeta) {
  const double count = double(n * hw);
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
  for (int64_t ch = 0; ch < c; ++ch) {
    const double mean = save_mean[ch], invstd = save_invstd[ch];
    double sum_gz = 0, sum_gz_xc = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t off = (i * c + ch) * hw;
      bn_train_act_plane<Relu, Res, Gz>(hw, x + off, Relu ? y + off : nullptr, gy + off, mean, gx + off,
                                        Res ? gresidual + off : nullptr, Gz ? gz + off : nullptr, sum_gz, sum_gz_xc);
    }
    const double sum_gz_xhat = sum_gz_xc * invstd;
    if (ggamma) ggamma[ch] += T(sum_gz_xhat);
    if (gbeta) gbeta[ch] += T(sum_gz);
    const double scale = double(gamma_at(gamma, ch)) * invstd;
    batch_stats_gx(n, c, hw, ch, x, static_cast<const T*>(gx), gx, mean, invstd, scale, sum_gz / count,
                   sum_gz_xhat / count);
  }
}

}  // namespace

template <class T>
void batchnorm_train_act_backward(const CpuCtx&, int64_t n, int64_t c, int64_t hw, const T* x, const T* y,
                                  const T* gy, bool relu, const T* gamma, const T* save_mean, const T* save_invstd,
                                  T* gx, T* gresidual, T* gz, T* ggamma, T* gbeta) {
  const bool res = gresidual != nullptr, keep = gz != nullptr;
  auto run = [&](auto relu_c, auto res_c, auto gz_c) {
    bn_train_act_backward_impl<decltype(relu_c)::value, decltype(res_c)::value, decltype(gz_c)::value>(
        n, c, hw, x, y, gy, gamma, save_mean, save_invstd, gx, gresidual, gz, ggamma, gbeta);
  };
  with_flags(relu, res, keep, run);
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
  template void batchnorm_act_forward<T>(const CpuCtx&, int64_t, int64_t, int64_t, const T*, const T*,        \
                                         const T*, const T*, const T*, T, const T*, bool, T*, T*, T*);        \
  template void batchnorm_act_backward<T>(const CpuCtx&, int64_t, int64_t, int64_t, int64_t, const T*,        \
                                          const T*, const T*, bool, const T*, const T*, const T*, T*, T*, T*, \
                                          T*, T*, T*, T*, T*);                                                \
  template void batchnorm_train_act_forward<T>(const CpuCtx&, int64_t, int64_t, int64_t, const T*, const T*,  \
                                               const T*, T, T, const T*, bool, T*, T*, T*, T*, T*);           \
  template void batchnorm_train_act_backward<T>(const CpuCtx&, int64_t, int64_t, int64_t, const T*, const T*, \
                                                const T*, bool, const T*, const T*, const T*, T*, T*, T*, T*, \
                                                T*);                                                          \
  template void layernorm_forward<T>(const CpuCtx&, int64_t, int64_t, const T*, const T*, const T*, T, T*,   \
                                     T*, T*);                                                                 \
  template void layernorm_backward<T>(const CpuCtx&, int64_t, int64_t, const T*, const T*, const T*,          \
                                      const T*, const T*, T*, T*, T*);
HAMU_INSTANTIATE(float)
HAMU_INSTANTIATE(double)
#undef HAMU_INSTANTIATE

}  // namespace hamu::kernels
