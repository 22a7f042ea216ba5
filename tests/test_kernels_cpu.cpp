// tests/test_kernels_cpu.cpp: the CPU pooling, normalisation, softmax/cross-entropy, embedding, dropout,
// optimizer and ghost-product kernels against plain double-precision references, and hand-computed
// numbers where an update rule is the point. The backward kernels' central-difference checks run through
// the op table (tests/backend_ops_table.cpp); the ones kept here check what no engine op reaches (an
// ignore index that is a valid class, unused embedding rows exactly 0, a causal-softmax scale).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/counter_hash.h"
#include "kernels/kernels.h"

using namespace hamu::kernels;

namespace {

const CpuCtx cpu{};
using Vec = std::vector<double>;
inline size_t sz(int64_t n) { return size_t(n); }

template <class T> double tol() { return std::is_same_v<T, float> ? 1e-5 : 1e-12; }
constexpr double kFdTol = 1e-6;

// Random values with magnitude in [lo, hi) and a random sign: never zero, no exact ties in practice.
Vec random_vec(int64_t n, uint32_t seed, double lo = 0.1, double hi = 2.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> mag(lo, hi);
  std::bernoulli_distribution sign(0.5);
  Vec v(sz(n));
  for (auto& x : v) x = sign(gen) ? mag(gen) : -mag(gen);
  return v;
}

// Strictly positive values in [lo, hi) (variances).
Vec random_pos(int64_t n, uint32_t seed, double lo, double hi) {
  Vec v = random_vec(n, seed, lo, hi);
  for (auto& x : v) x = std::fabs(x);
  return v;
}

std::vector<int32_t> random_labels(int64_t n, int32_t classes, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> pick(0, classes - 1);
  std::vector<int32_t> v(sz(n));
  for (auto& x : v) x = pick(gen);
  return v;
}

template <class T> std::vector<T> cast(const Vec& v) { return std::vector<T>(v.begin(), v.end()); }
template <class T> Vec widen(const std::vector<T>& v) { return Vec(v.begin(), v.end()); }

// ||a - b|| / ||b|| (absolute when b is 0).
template <class A, class B> double rel_err(const std::vector<A>& a, const std::vector<B>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Central differences of sum(w * f(x)) with respect to x.
using Forward = std::function<Vec(const Vec&)>;
Vec fd_grad(const Vec& x, const Vec& w, const Forward& f, double h = 1e-6) {
  Vec g(x.size()), xp = x;
  auto weighted = [&](const Vec& y) {
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += w[i] * y[i];
    return s;
  };
  for (size_t i = 0; i < x.size(); ++i) {
    xp[i] = x[i] + h;
    const double up = weighted(f(xp));
    xp[i] = x[i] - h;
    const double down = weighted(f(xp));
    xp[i] = x[i];
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// ------------------------------------------------------------------------------------------------
// Pooling references: direct loops over every window cell, padding skipped.

struct MaxRef {
  Vec y;
  std::vector<int32_t> arg;
};

MaxRef maxpool_ref(const PoolShape& ps, const Vec& x) {
  const int64_t oh = ps.oh(), ow = ps.ow();
  MaxRef out{Vec(sz(ps.n * ps.c * oh * ow)), std::vector<int32_t>(sz(ps.n * ps.c * oh * ow))};
  for (int64_t p = 0; p < ps.n * ps.c; ++p)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        // PyTorch's rule: the window's first cell, then each later cell in scan order that is greater, or NaN
        // while the best so far is not (padding never takes part).
        double best = 0;
        int32_t arg = -1;
        for (int64_t ky = 0; ky < ps.r; ++ky)
          for (int64_t kx = 0; kx < ps.s; ++kx) {
            const int64_t iy = oy * ps.stride_h - ps.pad_h + ky, ix = ox * ps.stride_w - ps.pad_w + kx;
            if (iy < 0 || iy >= ps.h || ix < 0 || ix >= ps.w) continue;
            const double v = x[size_t(p * ps.h * ps.w + iy * ps.w + ix)];
            if (arg < 0 || v > best || (std::isnan(v) && !std::isnan(best))) {
              best = v;
              arg = int32_t(iy * ps.w + ix);
            }
          }
        const size_t o = size_t((p * oh + oy) * ow + ox);
        out.y[o] = best;
        out.arg[o] = arg;
      }
  return out;
}

Vec avgpool_ref(const PoolShape& ps, const Vec& x) {
  const int64_t oh = ps.oh(), ow = ps.ow();
  Vec y(sz(ps.n * ps.c * oh * ow));
  for (int64_t p = 0; p < ps.n * ps.c; ++p)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        double s = 0;
        for (int64_t ky = 0; ky < ps.r; ++ky)
          for (int64_t kx = 0; kx < ps.s; ++kx) {
            const int64_t iy = oy * ps.stride_h - ps.pad_h + ky, ix = ox * ps.stride_w - ps.pad_w + kx;
            if (iy >= 0 && iy < ps.h && ix >= 0 && ix < ps.w) s += x[size_t(p * ps.h * ps.w + iy * ps.w + ix)];
          }
        y[size_t((p * oh + oy) * ow + ox)] = s / double(ps.r * ps.s);
      }
  return y;
}

// Backward of avg pooling: each window spreads its gradient evenly over all r*s cells, padding included.
Vec avgpool_backward_ref(const PoolShape& ps, const Vec& gy) {
  const int64_t oh = ps.oh(), ow = ps.ow();
  Vec gx(sz(ps.n * ps.c * ps.h * ps.w), 0.0);
  for (int64_t p = 0; p < ps.n * ps.c; ++p)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t ky = 0; ky < ps.r; ++ky)
          for (int64_t kx = 0; kx < ps.s; ++kx) {
            const int64_t iy = oy * ps.stride_h - ps.pad_h + ky, ix = ox * ps.stride_w - ps.pad_w + kx;
            if (iy >= 0 && iy < ps.h && ix >= 0 && ix < ps.w)
              gx[size_t(p * ps.h * ps.w + iy * ps.w + ix)] +=
                  gy[size_t((p * oh + oy) * ow + ox)] / double(ps.r * ps.s);
          }
  return gx;
}

std::vector<PoolShape> pool_shapes() {
  PoolShape a;  // strided, asymmetric, padded
  a.n = 2, a.c = 3, a.h = 7, a.w = 13, a.r = 3, a.s = 2, a.stride_h = 2, a.stride_w = 3, a.pad_h = 1, a.pad_w = 1;
  PoolShape b;  // overlapping windows (stride 1): cells shared between windows
  b.n = 1, b.c = 5, b.h = 13, b.w = 7, b.r = 3, b.s = 3, b.stride_h = 1, b.stride_w = 1, b.pad_h = 1, b.pad_w = 1;
  PoolShape c;  // the classic 2x2/2 with odd sizes (last row/column dropped)
  c.n = 3, c.c = 2, c.h = 7, c.w = 9;
  PoolShape d;  // large enough for the parallel path
  d.n = 4, d.c = 13, d.h = 17, d.w = 19, d.r = 3, d.s = 3, d.stride_h = 2, d.stride_w = 2, d.pad_h = 1, d.pad_w = 1;
  return {a, b, c, d};
}

int64_t in_elems(const PoolShape& ps) { return ps.n * ps.c * ps.h * ps.w; }
int64_t out_elems(const PoolShape& ps) { return ps.n * ps.c * ps.oh() * ps.ow(); }

}  // namespace

TEST_CASE_TEMPLATE("maxpool2d forward/backward match direct loops", T, float, double) {
  uint32_t seed = 100;
  for (const PoolShape& ps : pool_shapes()) {
    const Vec x = widen(cast<T>(random_vec(in_elems(ps), seed++)));
    const Vec gy = widen(cast<T>(random_vec(out_elems(ps), seed++)));
    const std::vector<T> xt = cast<T>(x), gyt = cast<T>(gy);
    std::vector<T> y(sz(out_elems(ps))), gx(sz(in_elems(ps)), T(7));  // gx: garbage, overwritten
    std::vector<int32_t> arg(y.size());
    maxpool2d_forward(cpu, ps, xt.data(), y.data(), arg.data());
    const MaxRef ref = maxpool_ref(ps, x);
    CHECK(rel_err(y, ref.y) == 0.0);
    CHECK(arg == ref.arg);
    maxpool2d_backward(cpu, ps, gyt.data(), arg.data(), gx.data());
    Vec gref(gx.size(), 0.0);
    const int64_t hw = ps.h * ps.w, ohw = ps.oh() * ps.ow();
    for (size_t o = 0; o < y.size(); ++o) gref[size_t(int64_t(o) / ohw * hw + ref.arg[o])] += gy[o];
    CHECK(rel_err(gx, gref) <= tol<T>());
  }
}

TEST_CASE("maxpool2d: padding never wins") {
  PoolShape ps;
  ps.n = 1, ps.c = 2, ps.h = 7, ps.w = 5, ps.r = 3, ps.s = 3, ps.stride_h = 2, ps.stride_w = 2, ps.pad_h = 1,
  ps.pad_w = 1;
  Vec x = random_vec(in_elems(ps), 7);
  for (auto& v : x) v = -std::fabs(v);  // all negative: a zero pad would beat every real cell
  std::vector<double> y(sz(out_elems(ps)));
  std::vector<int32_t> arg(y.size());
  maxpool2d_forward(cpu, ps, x.data(), y.data(), arg.data());
  for (size_t o = 0; o < y.size(); ++o) {
    CHECK(y[o] < 0.0);
    REQUIRE(arg[o] >= 0);
    CHECK(arg[o] < ps.h * ps.w);
    CHECK(y[o] == x[size_t(int64_t(o) / (ps.oh() * ps.ow()) * ps.h * ps.w + arg[o])]);
  }
}

TEST_CASE_TEMPLATE("avgpool2d forward/backward match direct loops (count_include_pad)", T, float, double) {
  uint32_t seed = 200;
  for (const PoolShape& ps : pool_shapes()) {
    const Vec x = widen(cast<T>(random_vec(in_elems(ps), seed++)));
    const Vec gy = widen(cast<T>(random_vec(out_elems(ps), seed++)));
    const std::vector<T> xt = cast<T>(x), gyt = cast<T>(gy);
    std::vector<T> y(sz(out_elems(ps))), gx(sz(in_elems(ps)), T(7));
    avgpool2d_forward(cpu, ps, xt.data(), y.data());
    CHECK(rel_err(y, avgpool_ref(ps, x)) <= tol<T>());
    avgpool2d_backward(cpu, ps, gyt.data(), gx.data());
    CHECK(rel_err(gx, avgpool_backward_ref(ps, gy)) <= tol<T>());
  }
}

// ------------------------------------------------------------------------------------------------
// BatchNorm: x [n, c, hw]

namespace {

struct BnRef {
  Vec y, mean, invstd, var_biased, var_unbiased;
};

size_t bn_at(int64_t c, int64_t hw, int64_t i, int64_t ch, int64_t k) { return size_t((i * c + ch) * hw + k); }

BnRef bn_train_ref(int64_t n, int64_t c, int64_t hw, const Vec& x, const Vec& gamma, const Vec& beta, double eps) {
  BnRef r{Vec(x.size()), Vec(sz(c)), Vec(sz(c)), Vec(sz(c)), Vec(sz(c))};
  const double count = double(n * hw);
  for (int64_t ch = 0; ch < c; ++ch) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < hw; ++k) s += x[bn_at(c, hw, i, ch, k)];
    const double mu = s / count;
    double q = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < hw; ++k) q += (x[bn_at(c, hw, i, ch, k)] - mu) * (x[bn_at(c, hw, i, ch, k)] - mu);
    const double var = q / count, inv = 1.0 / std::sqrt(var + eps);
    r.mean[size_t(ch)] = mu;
    r.var_biased[size_t(ch)] = var;
    r.var_unbiased[size_t(ch)] = q / (count - 1);
    r.invstd[size_t(ch)] = inv;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < hw; ++k) {
        const size_t at = bn_at(c, hw, i, ch, k);
        r.y[at] = (x[at] - mu) * inv * gamma[size_t(ch)] + beta[size_t(ch)];
      }
  }
  return r;
}

// The textbook chain rule through mean and variance (a different arrangement from the kernel's).
void bn_backward_ref(int64_t n, int64_t c, int64_t hw, const Vec& x, const Vec& gy, const Vec& gamma, double eps,
                     Vec& gx, Vec& ggamma, Vec& gbeta) {
  const BnRef f = bn_train_ref(n, c, hw, x, gamma, Vec(sz(c), 0.0), eps);
  const double count = double(n * hw);
  gx.assign(x.size(), 0.0);
  ggamma.assign(sz(c), 0.0);
  gbeta.assign(sz(c), 0.0);
  for (int64_t ch = 0; ch < c; ++ch) {
    const double mu = f.mean[size_t(ch)], inv = f.invstd[size_t(ch)], g = gamma[size_t(ch)];
    double dvar = 0, dmu = 0, sum_dev = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < hw; ++k) {
        const size_t at = bn_at(c, hw, i, ch, k);
        dvar += gy[at] * g * (x[at] - mu) * -0.5 * inv * inv * inv;
        dmu += -gy[at] * g * inv;
        sum_dev += -2.0 * (x[at] - mu);
        ggamma[size_t(ch)] += gy[at] * (x[at] - mu) * inv;
        gbeta[size_t(ch)] += gy[at];
      }
    dmu += dvar * sum_dev / count;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < hw; ++k) {
        const size_t at = bn_at(c, hw, i, ch, k);
        gx[at] = gy[at] * g * inv + dvar * 2.0 * (x[at] - mu) / count + dmu / count;
      }
  }
}

}  // namespace

TEST_CASE("batchnorm running statistics: hand-computed values") {
  // One channel, x = {1, 2, 3, 6}: mean 3, biased variance 14/4 = 3.5, unbiased 14/3.
  const std::vector<double> x = {1, 2, 3, 6}, gamma = {2}, beta = {0.5};
  std::vector<double> y(4), sm(1), si(1), rm = {0.5}, rv = {2.0};
  batchnorm_forward_train(cpu, 2, 1, 2, x.data(), gamma.data(), beta.data(), 1e-5, 0.1, y.data(), sm.data(),
                          si.data(), rm.data(), rv.data());
  CHECK(sm[0] == doctest::Approx(3.0).epsilon(1e-15));
  CHECK(si[0] == doctest::Approx(1.0 / std::sqrt(3.5 + 1e-5)).epsilon(1e-14));
  CHECK(rm[0] == doctest::Approx(0.75).epsilon(1e-15));                    // 0.9*0.5 + 0.1*3
  CHECK(rv[0] == doctest::Approx(2.2666666666666666).epsilon(1e-14));      // 0.9*2 + 0.1*14/3
  CHECK(y[3] == doctest::Approx(2.0 * 3.0 / std::sqrt(3.5 + 1e-5) + 0.5).epsilon(1e-14));
  // Second step from the updated buffers, float this time.
  const std::vector<float> xf = {1, 2, 3, 6}, gf = {2}, bf = {0.5f};
  std::vector<float> yf(4), smf(1), sif(1), rmf = {0.75f}, rvf = {2.2666667f};
  batchnorm_forward_train(cpu, 2, 1, 2, xf.data(), gf.data(), bf.data(), 1e-5f, 0.1f, yf.data(), smf.data(),
                          sif.data(), rmf.data(), rvf.data());
  CHECK(rmf[0] == doctest::Approx(0.975).epsilon(1e-6));                    // 0.9*0.75 + 0.1*3
  CHECK(rvf[0] == doctest::Approx(2.5066666666666667).epsilon(1e-6));       // 0.9*2.2667 + 0.1*14/3
}

TEST_CASE_TEMPLATE("batchnorm train/infer/backward match double references", T, float, double) {
  const int64_t n = 3, c = 7, hw = 5;
  const double eps = 1e-5, momentum = 0.1;
  Vec x = random_vec(n * c * hw, 400);
  for (size_t i = 0; i < x.size(); ++i) x[i] += double(i % size_t(c));  // per-element offsets: nonzero means
  x = widen(cast<T>(x));
  const Vec gamma = widen(cast<T>(random_vec(c, 401))), beta = widen(cast<T>(random_vec(c, 402)));
  const Vec gy = widen(cast<T>(random_vec(n * c * hw, 403)));
  const Vec rm0 = widen(cast<T>(random_vec(c, 404))), rv0 = widen(cast<T>(random_pos(c, 405, 0.5, 2.0)));
  const std::vector<T> xt = cast<T>(x), gt = cast<T>(gamma), bt = cast<T>(beta), gyt = cast<T>(gy);

  std::vector<T> y(x.size()), sm(sz(c)), si(sz(c)), rm = cast<T>(rm0), rv = cast<T>(rv0);
  batchnorm_forward_train(cpu, n, c, hw, xt.data(), gt.data(), bt.data(), T(eps), T(momentum), y.data(), sm.data(),
                          si.data(), rm.data(), rv.data());
  const BnRef ref = bn_train_ref(n, c, hw, x, gamma, beta, eps);
  CHECK(rel_err(y, ref.y) <= tol<T>());
  CHECK(rel_err(sm, ref.mean) <= tol<T>());
  CHECK(rel_err(si, ref.invstd) <= tol<T>());
  Vec rm_ref(sz(c)), rv_ref(sz(c));
  for (size_t ch = 0; ch < size_t(c); ++ch) {
    rm_ref[ch] = (1 - momentum) * rm0[ch] + momentum * ref.mean[ch];
    rv_ref[ch] = (1 - momentum) * rv0[ch] + momentum * ref.var_unbiased[ch];
  }
  CHECK(rel_err(rm, rm_ref) <= tol<T>());
  CHECK(rel_err(rv, rv_ref) <= tol<T>());

  // Backward through batch statistics; parameter gradients accumulate onto what is there.
  const Vec gg0 = random_vec(c, 406), gb0 = random_vec(c, 407);
  std::vector<T> gx(x.size(), T(9)), gg = cast<T>(gg0), gb = cast<T>(gb0);
  batchnorm_backward(cpu, n, c, hw, true, xt.data(), gyt.data(), gt.data(), sm.data(), si.data(), gx.data(), gg.data(),
                     gb.data());
  Vec gx_ref, gg_ref, gb_ref;
  bn_backward_ref(n, c, hw, x, gy, gamma, eps, gx_ref, gg_ref, gb_ref);
  for (size_t ch = 0; ch < size_t(c); ++ch) {
    gg_ref[ch] += double(T(gg0[ch]));
    gb_ref[ch] += double(T(gb0[ch]));
  }
  CHECK(rel_err(gx, gx_ref) <= tol<T>());
  CHECK(rel_err(gg, gg_ref) <= tol<T>());
  CHECK(rel_err(gb, gb_ref) <= tol<T>());

  // Inference with running statistics, then the fixed-statistics backward (a per-channel affine map).
  const std::vector<T> rmt = cast<T>(rm0), rvt = cast<T>(rv0);
  batchnorm_forward_infer(cpu, n, c, hw, xt.data(), gt.data(), bt.data(), rmt.data(), rvt.data(), T(eps), y.data(),
                          sm.data(), si.data());
  Vec yi_ref(x.size()), gxi_ref(x.size()), ggi_ref(sz(c), 0.0), gbi_ref(sz(c), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t k = 0; k < hw; ++k) {
        const size_t at = bn_at(c, hw, i, ch, k), cc = size_t(ch);
        const double inv = 1.0 / std::sqrt(rv0[cc] + eps), xhat = (x[at] - rm0[cc]) * inv;
        yi_ref[at] = xhat * gamma[cc] + beta[cc];
        gxi_ref[at] = gy[at] * gamma[cc] * inv;
        ggi_ref[cc] += gy[at] * xhat;
        gbi_ref[cc] += gy[at];
      }
  CHECK(rel_err(y, yi_ref) <= tol<T>());
  CHECK(rel_err(sm, rm0) <= tol<T>());
  std::fill(gg.begin(), gg.end(), T(0));
  std::fill(gb.begin(), gb.end(), T(0));
  batchnorm_backward(cpu, n, c, hw, false, xt.data(), gyt.data(), gt.data(), sm.data(), si.data(), gx.data(),
                     gg.data(), gb.data());
  CHECK(rel_err(gx, gxi_ref) <= tol<T>());
  CHECK(rel_err(gg, ggi_ref) <= tol<T>());
  CHECK(rel_err(gb, gbi_ref) <= tol<T>());
}

// ------------------------------------------------------------------------------------------------
// LayerNorm over the last dim

namespace {

void ln_ref(int64_t rows, int64_t d, const Vec& x, const Vec& gamma, const Vec& beta, double eps, const Vec& gy,
            Vec& y, Vec& mean, Vec& rstd, Vec& gx, Vec& gg, Vec& gb) {
  y.assign(x.size(), 0.0);
  gx.assign(x.size(), 0.0);
  mean.assign(sz(rows), 0.0);
  rstd.assign(sz(rows), 0.0);
  gg.assign(sz(d), 0.0);
  gb.assign(sz(d), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x.data() + r * d;
    double mu = 0, var = 0;
    for (int64_t k = 0; k < d; ++k) mu += xr[k];
    mu /= double(d);
    for (int64_t k = 0; k < d; ++k) var += (xr[k] - mu) * (xr[k] - mu);
    var /= double(d);
    const double rs = 1.0 / std::sqrt(var + eps);
    mean[size_t(r)] = mu;
    rstd[size_t(r)] = rs;
    // Textbook chain rule: dvar, dmean, then dx.
    double dvar = 0, dmu = 0;
    for (int64_t k = 0; k < d; ++k) {
      const size_t at = size_t(r * d + k);
      y[at] = (xr[k] - mu) * rs * gamma[size_t(k)] + beta[size_t(k)];
      const double dxhat = gy[at] * gamma[size_t(k)];
      dvar += dxhat * (xr[k] - mu) * -0.5 * rs * rs * rs;
      dmu += -dxhat * rs;
      gg[size_t(k)] += gy[at] * (xr[k] - mu) * rs;
      gb[size_t(k)] += gy[at];
    }
    for (int64_t k = 0; k < d; ++k) {
      const size_t at = size_t(r * d + k);
      gx[at] = gy[at] * gamma[size_t(k)] * rs + dvar * 2.0 * (xr[k] - mu) / double(d) + dmu / double(d);
    }
  }
}

}  // namespace

TEST_CASE_TEMPLATE("layernorm forward/backward match double references", T, float, double) {
  const double eps = 1e-5;
  // Small, and one wide enough for several column blocks and the parallel path.
  for (auto [rows, d] : {std::pair<int64_t, int64_t>{7, 13}, {61, 301}}) {
    CAPTURE(d);
    Vec x = random_vec(rows * d, 600);
    for (size_t i = 0; i < x.size(); ++i) x[i] += 3.0;  // a mean far from zero
    x = widen(cast<T>(x));
    const Vec gamma = widen(cast<T>(random_vec(d, 601))), beta = widen(cast<T>(random_vec(d, 602)));
    const Vec gy = widen(cast<T>(random_vec(rows * d, 603)));
    const Vec gg0 = widen(cast<T>(random_vec(d, 604))), gb0 = widen(cast<T>(random_vec(d, 605)));
    const std::vector<T> xt = cast<T>(x), gt = cast<T>(gamma), bt = cast<T>(beta), gyt = cast<T>(gy);
    std::vector<T> y(x.size()), mean(sz(rows)), rstd(sz(rows)), gx(x.size(), T(5));
    std::vector<T> gg = cast<T>(gg0), gb = cast<T>(gb0);
    layernorm_forward(cpu, rows, d, xt.data(), gt.data(), bt.data(), T(eps), y.data(), mean.data(), rstd.data());
    layernorm_backward(cpu, rows, d, xt.data(), gyt.data(), gt.data(), mean.data(), rstd.data(), gx.data(),
                       gg.data(), gb.data());
    Vec y_ref, mean_ref, rstd_ref, gx_ref, gg_ref, gb_ref;
    ln_ref(rows, d, x, gamma, beta, eps, gy, y_ref, mean_ref, rstd_ref, gx_ref, gg_ref, gb_ref);
    for (size_t k = 0; k < size_t(d); ++k) {
      gg_ref[k] += gg0[k];
      gb_ref[k] += gb0[k];
    }
    CHECK(rel_err(y, y_ref) <= tol<T>());
    CHECK(rel_err(mean, mean_ref) <= tol<T>());
    CHECK(rel_err(rstd, rstd_ref) <= tol<T>());
    CHECK(rel_err(gx, gx_ref) <= tol<T>());
    CHECK(rel_err(gg, gg_ref) <= tol<T>());
    CHECK(rel_err(gb, gb_ref) <= tol<T>());
  }
}

// ------------------------------------------------------------------------------------------------
// Softmax family

namespace {

// Softmax of each row of [rows, d] in double, via a long-double max-shifted sum.
Vec softmax_ref(int64_t rows, int64_t d, const Vec& x) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double m = x[size_t(r * d)];
    for (int64_t k = 1; k < d; ++k) m = std::max(m, x[size_t(r * d + k)]);
    long double s = 0;
    for (int64_t k = 0; k < d; ++k) s += std::exp((long double)(x[size_t(r * d + k)] - m));
    for (int64_t k = 0; k < d; ++k)
      y[size_t(r * d + k)] = double(std::exp((long double)(x[size_t(r * d + k)] - m)) / s);
  }
  return y;
}

Vec log_softmax_ref(int64_t rows, int64_t d, const Vec& x) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double m = x[size_t(r * d)];
    for (int64_t k = 1; k < d; ++k) m = std::max(m, x[size_t(r * d + k)]);
    long double s = 0;
    for (int64_t k = 0; k < d; ++k) s += std::exp((long double)(x[size_t(r * d + k)] - m));
    for (int64_t k = 0; k < d; ++k)
      y[size_t(r * d + k)] = double((long double)(x[size_t(r * d + k)] - m) - std::log(s));
  }
  return y;
}

// Logits with a few rows shifted far out: exp would overflow without the max subtraction.
Vec logits_with_outliers(int64_t rows, int64_t d, uint32_t seed) {
  Vec x = random_vec(rows * d, seed, 0.1, 4.0);
  for (int64_t k = 0; k < d; ++k) {
    x[size_t(k)] += 1000.0;
    if (rows > 2) x[size_t(2 * d + k)] -= 800.0;
  }
  return x;
}

}  // namespace

TEST_CASE_TEMPLATE("softmax and log-softmax match references, stable for large logits", T, float, double) {
  for (auto [rows, d] : {std::pair<int64_t, int64_t>{7, 13}, {131, 97}}) {
    const Vec x = widen(cast<T>(logits_with_outliers(rows, d, 800)));
    const Vec gy = widen(cast<T>(random_vec(rows * d, 801)));
    const std::vector<T> xt = cast<T>(x), gyt = cast<T>(gy);
    std::vector<T> y(x.size()), gx(x.size());
    softmax_forward(cpu, rows, d, xt.data(), y.data());
    const Vec sref = softmax_ref(rows, d, x);
    CHECK(rel_err(y, sref) <= tol<T>());
    softmax_backward(cpu, rows, d, y.data(), gyt.data(), gx.data());
    Vec gref(x.size());
    for (int64_t r = 0; r < rows; ++r) {
      double dot = 0;
      for (int64_t k = 0; k < d; ++k) dot += sref[size_t(r * d + k)] * gy[size_t(r * d + k)];
      for (int64_t k = 0; k < d; ++k) gref[size_t(r * d + k)] = sref[size_t(r * d + k)] * (gy[size_t(r * d + k)] - dot);
    }
    CHECK(rel_err(gx, gref) <= tol<T>());

    log_softmax_forward(cpu, rows, d, xt.data(), y.data());
    const Vec lref = log_softmax_ref(rows, d, x);
    CHECK(rel_err(y, lref) <= tol<T>());
    log_softmax_backward(cpu, rows, d, y.data(), gyt.data(), gx.data());
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t k = 0; k < d; ++k) s += gy[size_t(r * d + k)];
      for (int64_t k = 0; k < d; ++k) gref[size_t(r * d + k)] = gy[size_t(r * d + k)] - sref[size_t(r * d + k)] * s;
    }
    CHECK(rel_err(gx, gref) <= tol<T>());
  }
}

TEST_CASE_TEMPLATE("cross-entropy with ignore_index matches the reference (fused loss and gradient)", T, float, double) {
  const int64_t rows = 11, classes = 13;
  const int32_t ignore = -100;
  const Vec x = widen(cast<T>(logits_with_outliers(rows, classes, 1000)));
  std::vector<int32_t> labels = random_labels(rows, int32_t(classes), 1001);
  labels[3] = ignore;
  labels[8] = ignore;
  const Vec gloss = widen(cast<T>(random_vec(rows, 1002)));
  const std::vector<T> xt = cast<T>(x), glt = cast<T>(gloss);
  std::vector<T> losses(sz(rows), T(9)), grad(x.size(), T(9)), glogits(x.size(), T(9));
  cross_entropy_forward(cpu, rows, classes, xt.data(), labels.data(), ignore, losses.data(), grad.data());
  const Vec lref = log_softmax_ref(rows, classes, x);
  Vec loss_ref(sz(rows)), dref(x.size(), 0.0), gref(x.size(), 0.0), mref(x.size(), 0.0);
  int64_t kept = 0;
  for (int64_t r = 0; r < rows; ++r) kept += labels[size_t(r)] != ignore;
  for (int64_t r = 0; r < rows; ++r) {
    if (labels[size_t(r)] == ignore) continue;
    loss_ref[size_t(r)] = -lref[size_t(r * classes + labels[size_t(r)])];
    for (int64_t k = 0; k < classes; ++k) {
      const size_t e = size_t(r * classes + k);
      dref[e] = std::exp(lref[e]) - (k == labels[size_t(r)] ? 1.0 : 0.0);
      gref[e] = gloss[size_t(r)] * dref[e];
      mref[e] = gloss[0] / double(kept) * dref[e];
    }
  }
  CHECK(rel_err(losses, loss_ref) <= tol<T>());
  CHECK(rel_err(grad, dref) <= tol<T>());  // the saved gradient: softmax - onehot, zero rows where ignored
  CHECK(losses[3] == T(0));
  CHECK(losses[8] == T(0));
  for (int64_t k = 0; k < classes; ++k) {
    CHECK(grad[size_t(3 * classes + k)] == T(0));
    CHECK(grad[size_t(8 * classes + k)] == T(0));
  }
  // Without a saved buffer the losses are the same to the bit (evaluation reports what training does).
  std::vector<T> losses2(sz(rows), T(9));
  cross_entropy_forward(cpu, rows, classes, xt.data(), labels.data(), ignore, losses2.data(), (T*)nullptr);
  CHECK(losses2 == losses);

  // Per-row upstream gradients (stride 1) into a separate buffer; an ignored row stays 0 even under an
  // infinite upstream value.
  std::vector<T> gl = glt;
  gl[3] = std::numeric_limits<T>::infinity();
  cross_entropy_backward(cpu, rows, classes, grad.data(), labels.data(), ignore, gl.data(), 1, (const T*)nullptr,
                         glogits.data());
  CHECK(rel_err(glogits, gref) <= tol<T>());
  for (int64_t k = 0; k < classes; ++k) {
    CHECK(glogits[size_t(3 * classes + k)] == T(0));
    CHECK(glogits[size_t(8 * classes + k)] == T(0));
  }
  // The mean over the kept rows, and its form of the backward: one upstream scalar (stride 0) times 1/count,
  // scaled in place.
  T mean = T(9), inv_count = T(9);
  cross_entropy_mean(cpu, rows, losses.data(), labels.data(), ignore, &mean, &inv_count);
  double mean_ref = 0;
  for (double l : loss_ref) mean_ref += l / double(kept);
  CHECK(std::fabs(double(mean) - mean_ref) <= tol<T>() * mean_ref);
  CHECK(inv_count == T(1.0 / double(kept)));
  std::vector<T> inplace = grad;
  cross_entropy_backward(cpu, rows, classes, inplace.data(), labels.data(), ignore, glt.data(), 0, &inv_count,
                         inplace.data());
  CHECK(rel_err(inplace, mref) <= tol<T>());
  // Every row ignored: mean 0 and 1/count 0 (a zero gradient), not a division by zero.
  const std::vector<int32_t> none(sz(rows), ignore);
  cross_entropy_mean(cpu, rows, losses.data(), none.data(), ignore, &mean, &inv_count);
  CHECK(mean == T(0));
  CHECK(inv_count == T(0));
}

TEST_CASE("cross-entropy backward matches finite differences") {
  const int64_t rows = 6, classes = 7;
  const int32_t ignore = 2;  // an ignore index that is also a valid class id: only the rows labelled 2 drop out
  const Vec x = random_vec(rows * classes, 1100, 0.1, 3.0), gloss = random_vec(rows, 1101);
  const std::vector<int32_t> labels = {0, 2, 6, 3, 2, 5};
  Vec losses(sz(rows)), saved(x.size()), gx(x.size());
  cross_entropy_forward(cpu, rows, classes, x.data(), labels.data(), ignore, losses.data(), saved.data());
  CHECK(losses[1] == 0.0);
  CHECK(losses[4] == 0.0);
  CHECK(losses[0] > 0.0);
  auto forward = [&](const Vec& v) {
    Vec l(sz(rows)), p(v.size());
    cross_entropy_forward(cpu, rows, classes, v.data(), labels.data(), ignore, l.data(), p.data());
    return l;
  };
  // Per-row upstream gradients.
  const double* no_scale = nullptr;
  cross_entropy_backward(cpu, rows, classes, saved.data(), labels.data(), ignore, gloss.data(), 1, no_scale, gx.data());
  CHECK(rel_err(gx, fd_grad(x, gloss, forward)) <= kFdTol);
  // One upstream scalar broadcast over the rows and scaled (the mean: 1/4 of 4 kept rows), in place.
  const double up = gloss[0], scale = 0.25;
  cross_entropy_backward(cpu, rows, classes, saved.data(), labels.data(), ignore, &up, 0, &scale, saved.data());
  CHECK(rel_err(saved, fd_grad(x, Vec(sz(rows), up * scale), forward)) <= kFdTol);
}

namespace {

Vec causal_ref(int64_t batch, int64_t t, double scale, const Vec& s) {
  Vec p(s.size(), 0.0);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < t; ++i) {
      const size_t row = size_t((b * t + i) * t);
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j <= i; ++j) m = std::max(m, scale * s[row + size_t(j)]);
      long double z = 0;
      for (int64_t j = 0; j <= i; ++j) z += std::exp((long double)(scale * s[row + size_t(j)] - m));
      for (int64_t j = 0; j <= i; ++j)
        p[row + size_t(j)] = double(std::exp((long double)(scale * s[row + size_t(j)] - m)) / z);
    }
  return p;
}

}  // namespace

TEST_CASE_TEMPLATE("causal softmax: reference, exact zeros above the diagonal", T, float, double) {
  for (auto [batch, t, scale] : {std::tuple<int64_t, int64_t, double>{3, 7, 0.37}, {2, 13, -0.5}, {5, 61, 0.125}}) {
    CAPTURE(t);
    const Vec s = widen(cast<T>(random_vec(batch * t * t, 1200, 0.1, 6.0)));
    const Vec gp = widen(cast<T>(random_vec(batch * t * t, 1201)));
    const std::vector<T> st = cast<T>(s), gpt = cast<T>(gp);
    std::vector<T> p(s.size(), T(9)), gs(s.size(), T(9));
    causal_softmax_forward(cpu, batch, t, T(scale), st.data(), p.data());
    const Vec pref = causal_ref(batch, t, double(T(scale)), s);
    CHECK(rel_err(p, pref) <= tol<T>());
    causal_softmax_backward(cpu, batch, t, T(scale), p.data(), gpt.data(), gs.data());
    Vec gref(s.size(), 0.0);
    bool masked_zero = true;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < t; ++i) {
        const size_t row = size_t((b * t + i) * t);
        double dot = 0;
        for (int64_t j = 0; j <= i; ++j) dot += pref[row + size_t(j)] * gp[row + size_t(j)];
        for (int64_t j = 0; j <= i; ++j)
          gref[row + size_t(j)] = double(T(scale)) * pref[row + size_t(j)] * (gp[row + size_t(j)] - dot);
        for (int64_t j = i + 1; j < t; ++j)
          masked_zero = masked_zero && p[row + size_t(j)] == T(0) && gs[row + size_t(j)] == T(0);
      }
    CHECK(masked_zero);
    CHECK(rel_err(gs, gref) <= tol<T>());
  }
}

TEST_CASE("causal softmax backward matches finite differences (scale included)") {
  const int64_t batch = 2, t = 6;
  const double scale = 0.37;
  const Vec s = random_vec(batch * t * t, 1300, 0.1, 3.0), w = random_vec(batch * t * t, 1301);
  Vec p(s.size()), gs(s.size());
  causal_softmax_forward(cpu, batch, t, scale, s.data(), p.data());
  causal_softmax_backward(cpu, batch, t, scale, p.data(), w.data(), gs.data());
  CHECK(rel_err(gs, fd_grad(s, w, [&](const Vec& v) {
          Vec o(v.size());
          causal_softmax_forward(cpu, batch, t, scale, v.data(), o.data());
          return o;
        })) <= kFdTol);
}

// ------------------------------------------------------------------------------------------------
// Embedding

TEST_CASE_TEMPLATE("embedding gather and deterministic scatter-add with repeated indices", T, float, double) {
  // Small, then large enough for the parallel path; vocab 13 with many repeats in both.
  for (auto [n_idx, dim] : {std::pair<int64_t, int64_t>{29, 7}, {3001, 11}}) {
    const int64_t vocab = 13;
    const std::vector<int32_t> idx = random_labels(n_idx, int32_t(vocab), 1400);
    const Vec table = widen(cast<T>(random_vec(vocab * dim, 1401)));
    const Vec gout = widen(cast<T>(random_vec(n_idx * dim, 1402)));
    const Vec g0 = widen(cast<T>(random_vec(vocab * dim, 1403)));
    const std::vector<T> tt = cast<T>(table), got = cast<T>(gout);
    std::vector<T> out(sz(n_idx * dim));
    embedding_forward(cpu, n_idx, dim, idx.data(), tt.data(), out.data());
    bool gathered = true;
    for (int64_t i = 0; i < n_idx; ++i)
      for (int64_t k = 0; k < dim; ++k)
        gathered = gathered && out[size_t(i * dim + k)] == tt[size_t(idx[size_t(i)] * dim + k)];
    CHECK(gathered);

    std::vector<T> gt = cast<T>(g0);
    embedding_backward(cpu, n_idx, dim, vocab, idx.data(), got.data(), gt.data());
    Vec gref = g0;
    std::vector<T> serial = cast<T>(g0);  // the same sums in the same order, one thread
    for (int64_t i = 0; i < n_idx; ++i)
      for (int64_t k = 0; k < dim; ++k) {
        gref[size_t(idx[size_t(i)] * dim + k)] += gout[size_t(i * dim + k)];
        serial[size_t(idx[size_t(i)] * dim + k)] += got[size_t(i * dim + k)];
      }
    CHECK(rel_err(gt, gref) <= tol<T>());
    CHECK(gt == serial);  // bit-identical to the serial order, whatever the thread count
  }
}

TEST_CASE("embedding backward matches finite differences") {
  const int64_t n_idx = 9, dim = 4, vocab = 5;
  const std::vector<int32_t> idx = {4, 0, 4, 2, 4, 0, 1, 2, 4};  // row 3 unused, row 4 four times
  const Vec table = random_vec(vocab * dim, 1500), w = random_vec(n_idx * dim, 1501);
  Vec g(table.size(), 0.0);
  embedding_backward(cpu, n_idx, dim, vocab, idx.data(), w.data(), g.data());
  CHECK(rel_err(g, fd_grad(table, w, [&](const Vec& v) {
          Vec o(sz(n_idx * dim));
          embedding_forward(cpu, n_idx, dim, idx.data(), v.data(), o.data());
          return o;
        })) <= kFdTol);
  for (int64_t k = 0; k < dim; ++k) CHECK(g[size_t(3 * dim + k)] == 0.0);
}

// ------------------------------------------------------------------------------------------------
// Dropout

TEST_CASE_TEMPLATE("dropout: counter mask, keep fraction, scaling, seeds", T, float, double) {
  const int64_t n = 100000;
  const T p = T(0.3);
  const std::vector<T> x = cast<T>(random_vec(n, 1600));
  std::vector<T> y(sz(n)), y2(sz(n)), gx(sz(n));
  std::vector<uint8_t> mask(sz(n)), mask2(sz(n)), mask3(sz(n));
  dropout_forward(cpu, n, p, 42, x.data(), y.data(), mask.data());
  int64_t kept = 0;
  bool consistent = true;
  const T scale = T(1) / (T(1) - p);
  for (int64_t i = 0; i < n; ++i) {
    const size_t s = size_t(i);
    const bool keep = T(counter_uniform(42, uint64_t(i))) >= p;
    kept += mask[s];
    consistent = consistent && mask[s] == (keep ? 1 : 0) && y[s] == (keep ? x[s] * scale : T(0));
  }
  CHECK(consistent);
  // Binomial standard deviation sqrt(0.21 / 1e5) ~ 0.00145; allow ~4 of them.
  CHECK(std::fabs(double(kept) / double(n) - 0.7) < 0.006);

  dropout_forward(cpu, n, p, 42, x.data(), y2.data(), mask2.data());
  CHECK(mask2 == mask);
  CHECK(y2 == y);
  dropout_forward(cpu, n, p, 43, x.data(), y2.data(), mask3.data());
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += mask3[size_t(i)] != mask[size_t(i)];
  CHECK(std::fabs(double(differ) / double(n) - 2 * 0.3 * 0.7) < 0.01);  // independent masks disagree at 2p(1-p)

  const std::vector<T> gy = cast<T>(random_vec(n, 1601));
  dropout_backward(cpu, n, p, mask.data(), gy.data(), gx.data());
  bool back = true;
  for (int64_t i = 0; i < n; ++i) back = back && gx[size_t(i)] == (mask[size_t(i)] ? gy[size_t(i)] * scale : T(0));
  CHECK(back);

  // p == 0 keeps everything, unscaled.
  dropout_forward(cpu, n, T(0), 7, x.data(), y.data(), mask.data());
  CHECK(y == x);
  int64_t all = 0;
  for (uint8_t m : mask) all += m;
  CHECK(all == n);
}

// ------------------------------------------------------------------------------------------------
// Optimizers: numbers from PyTorch's update rules worked through by hand (see the comments).

namespace {
const Vec kP0 = {1.0, -2.0, 0.5};
const std::vector<Vec> kGrads = {{0.5, -0.25, 2.0}, {0.1, 0.3, -1.5}, {-0.2, 0.4, 0.75}};
}  // namespace

TEST_CASE_TEMPLATE("sgd_step: momentum, dampening, weight decay, nesterov over 3 steps", T, float, double) {
  const double t = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  // lr 0.1, momentum 0.9, weight decay 0.01, nesterov (dampening 0). Step 1 for element 0:
  // g' = 0.5 + 0.01*1 = 0.51, buf = g' = 0.51, p = 1 - 0.1*(0.51 + 0.9*0.51) = 0.9031.
  const std::vector<Vec> nest_p = {{0.9031, -1.9487, 0.11905},
                                   {0.84107411, -1.98012747, 0.241418805},
                                   {0.831465558191, -2.055403780807, 0.0736991787705}};
  const std::vector<Vec> nest_buf = {{0.51, -0.27, 2.005},
                                     {0.568031, 0.037513, 0.3056905},
                                     {0.3196386411, 0.4139604253, 1.02753563805}};
  // lr 0.1, momentum 0.9, dampening 0.25, weight decay 0.01, no nesterov (buf of step 1 is undamped).
  const std::vector<Vec> damp_p = {{0.949, -1.973, 0.2995},
                                   {0.89488825, -1.96972025, 0.231325375},
                                   {0.8605165088125, -1.9952911848125, 0.11354471846875}};
  for (bool nesterov : {true, false}) {
    CAPTURE(nesterov);
    std::vector<T> p = cast<T>(kP0), buf(3, T(123));  // buf garbage before the first step
    for (size_t s = 0; s < 3; ++s) {
      const std::vector<T> g = cast<T>(kGrads[s]);
      sgd_step(cpu, 3, p.data(), g.data(), buf.data(), T(0.1), T(0.9), T(nesterov ? 0 : 0.25), T(0.01), nesterov,
               s == 0);
      CHECK(rel_err(p, nesterov ? nest_p[s] : damp_p[s]) <= t);
      if (nesterov) CHECK(rel_err(buf, nest_buf[s]) <= t);
    }
  }
  // Momentum 0: plain (decayed) gradient step, buf never touched.
  std::vector<T> p = cast<T>(kP0);
  const std::vector<T> g = cast<T>(kGrads[0]);
  sgd_step(cpu, 3, p.data(), g.data(), (T*)nullptr, T(0.1), T(0), T(0), T(0.01), false, true);
  CHECK(rel_err(p, Vec{1 - 0.1 * 0.51, -2 - 0.1 * (-0.25 - 0.02), 0.5 - 0.1 * (2.0 + 0.005)}) <= t);
}

TEST_CASE_TEMPLATE("adamw_step: bias correction and decoupled decay over 3 steps", T, float, double) {
  const double t = std::is_same_v<T, float> ? 1e-6 : 1e-13;
  // lr 0.01, betas (0.9, 0.999), eps 1e-8, weight decay 0.1. Step 1 for element 0:
  // p = 1*(1 - 0.001) = 0.999; m = 0.05, v = 0.00025; m/(1-0.9) = 0.5, sqrt(v/(1-0.999)) = 0.5;
  // p = 0.999 - 0.01 * 0.5/(0.5 + 1e-8) = 0.9890000000200.
  const std::vector<Vec> want_p = {{0.98900000020000001, -1.9880000004, 0.48950000004999999},
                                   {0.97998059063826526, -1.9874414476543747, 0.48811724998095024},
                                   {0.97555707259271063, -1.9907981747851149, 0.48513081368068628}};
  const std::vector<Vec> want_m = {{0.05, -0.025, 0.2}, {0.055, 0.0075, 0.03}, {0.0295, 0.04675, 0.102}};
  const std::vector<Vec> want_v = {{0.00025, 6.25e-05, 0.004},
                                   {0.00025975, 0.0001524375, 0.006246},
                                   {0.00029949025, 0.0003122850625, 0.006802254}};
  std::vector<T> p = cast<T>(kP0), m(3, T(0)), v(3, T(0));
  for (size_t s = 0; s < 3; ++s) {
    const std::vector<T> g = cast<T>(kGrads[s]);
    adamw_step(cpu, 3, p.data(), g.data(), m.data(), v.data(), T(0.01), T(0.9), T(0.999), T(1e-8), T(0.1),
               int64_t(s + 1));
    CHECK(rel_err(p, want_p[s]) <= t);
    CHECK(rel_err(m, want_m[s]) <= t);
    // In float, 1 - beta2 is 1 - 0.999f = 0.00099998713: v carries that 1.3e-5 shift (p does not: the
    // bias correction 1 - beta2^t shifts by the same factor and cancels it).
    CHECK(rel_err(v, want_v[s]) <= (std::is_same_v<T, float> ? 2e-5 : t));
  }
}

// ------------------------------------------------------------------------------------------------
// Ghost products

TEST_CASE_TEMPLATE("ghost_hadamard_reduce and segment_rowdot match direct loops", T, float, double) {
  struct Case {
    int64_t nf, nr, tf, tr, pad;
  };
  // Sequence axes on both sides; tr == 1 (the vectorised path); more than one K tile; a parallel-size case.
  for (const Case& c : {Case{3, 7, 4, 3, 5}, Case{5, 13, 3, 1, 0}, Case{2, 70, 1, 2, 3}, Case{5, 131, 9, 3, 1}}) {
    CAPTURE(c.nr);
    const int64_t ld = c.nr * c.tr + c.pad, rows = c.nf * c.tf;
    const Vec a = widen(cast<T>(random_vec(rows * ld, 1800))), g = widen(cast<T>(random_vec(rows * ld, 1801)));
    const Vec k0 = widen(cast<T>(random_vec(c.nf * c.nr, 1802)));
    const std::vector<T> at = cast<T>(a), gt = cast<T>(g);
    std::vector<T> k = cast<T>(k0);
    ghost_hadamard_reduce(cpu, c.nf, c.nr, c.tf, c.tr, at.data(), gt.data(), ld, k.data());
    Vec kref = k0;
    for (int64_t j = 0; j < c.nf; ++j)
      for (int64_t i = 0; i < c.nr; ++i)
        for (int64_t t = 0; t < c.tf; ++t)
          for (int64_t s = 0; s < c.tr; ++s) {
            const size_t at_ = size_t((j * c.tf + t) * ld + i * c.tr + s);
            kref[size_t(j * c.nr + i)] += a[at_] * g[at_];
          }
    CHECK(rel_err(k, kref) <= tol<T>());
  }
  for (auto [nseg, seg, width] : {std::tuple<int64_t, int64_t, int64_t>{5, 3, 13}, {7, 1, 1}, {17, 9, 131}}) {
    const Vec p = widen(cast<T>(random_vec(nseg * seg * width, 1900)));
    const Vec g = widen(cast<T>(random_vec(nseg * seg * width, 1901)));
    const Vec o0 = widen(cast<T>(random_vec(nseg, 1902)));
    const std::vector<T> pt = cast<T>(p), gt = cast<T>(g);
    std::vector<T> out = cast<T>(o0);
    segment_rowdot(cpu, nseg, seg, width, pt.data(), gt.data(), out.data());
    Vec ref = o0;
    for (int64_t j = 0; j < nseg; ++j)
      for (int64_t t = 0; t < seg; ++t)
        for (int64_t w = 0; w < width; ++w) {
          const size_t at_ = size_t((j * seg + t) * width + w);
          ref[size_t(j)] += p[at_] * g[at_];
        }
    CHECK(rel_err(out, ref) <= tol<T>());
  }
}

TEST_CASE_TEMPLATE("maxpool2d: many ties, NaN and -inf, every path (2x2/2 rows of 8-output vectors with tails, the "
                   "general windows) against PyTorch's rule (maxpool_ref)",
                   T, float, double) {
  std::mt19937 g(4242);
  const T specials[] = {T(-1), T(0), T(1), T(2), -std::numeric_limits<T>::infinity(),
                        std::numeric_limits<T>::quiet_NaN()};
  std::vector<PoolShape> shapes;
  for (int64_t w : {16, 17, 30, 35, 7}) {  // 2x2/2: 8, 8, 15, 17, 3 outputs per row
    PoolShape ps;
    ps.n = 2, ps.c = 3, ps.h = 5, ps.w = w;
    shapes.push_back(ps);
  }
  for (PoolShape ps : pool_shapes()) shapes.push_back(ps);
  for (const PoolShape& ps : shapes) {
    CAPTURE(ps.w);
    CAPTURE(ps.r);
    std::vector<T> x(sz(in_elems(ps)));
    // Mostly four values (ties everywhere), some -inf and NaN.
    for (T& v : x) {
      const uint32_t r = g() % 20;
      v = specials[r < 17 ? r % 4 : (r < 19 ? 4 : 5)];
    }
    std::vector<T> y(sz(out_elems(ps)));
    std::vector<int32_t> arg(y.size());
    maxpool2d_forward(cpu, ps, x.data(), y.data(), arg.data());
    const MaxRef ref = maxpool_ref(ps, widen(x));  // widening keeps NaN, -inf and every comparison
    CHECK(arg == ref.arg);
    bool same = true;
    for (size_t o = 0; o < y.size(); ++o)
      same = same && (std::isnan(ref.y[o]) ? std::isnan(y[o]) : double(y[o]) == ref.y[o]);
    CHECK(same);
  }
}

TEST_CASE("maxpool2d 2x2/2: ties keep the first maximum, NaN wins (the fast path and the general one agree)") {
  PoolShape ps;  // 1 plane, 2x4 -> 1x2
  ps.h = 2, ps.w = 4;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // window 0: all equal (first wins: index 0); window 1: a NaN at its third cell (index 6) wins.
  const std::vector<float> x = {1.f, 1.f, 3.f, 5.f, 1.f, 1.f, nan, 2.f};
  std::vector<float> y(2);
  std::vector<int32_t> arg(2);
  maxpool2d_forward(cpu, ps, x.data(), y.data(), arg.data());
  CHECK(arg[0] == 0);
  CHECK(y[0] == 1.f);
  CHECK(arg[1] == 6);
  CHECK(std::isnan(y[1]));
  // A tie through the general path (stride 1 is not the 2x2/2 fast path).
  PoolShape one;
  one.h = 2, one.w = 2, one.stride_h = 1, one.stride_w = 1;
  const std::vector<float> tie = {1.f, 1.f, 1.f, 1.f};
  float y1 = 0;
  int32_t a1 = -5;
  maxpool2d_forward(cpu, one, tie.data(), &y1, &a1);
  CHECK(a1 == 0);
}
