// tests/test_unlearn.cpp: the HAMU block solver against a brute-force optimum, the fused update end to
// end (Q/U, layer/global scope, every constraint split, clipping), infeasibility and the one-sided
// stopping criterion, the baselines' step rules, ROC-AUC with ties, and unlearning a Fashion-MNIST class.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/rng.h"
#include "kernels/hamu_math.h"
#include "loaders/data.h"
#include "models/models.h"
#include "unlearn/method_registry.h"
#include "unlearn/methods/baseline.h"
#include "unlearn/metrics.h"
#include "unlearn/runner.h"
#include "train/train.h"
#include "unlearn/update.h"

using namespace hamu;
namespace K = hamu::kernels;

namespace {

using Vec = std::vector<double>;

double dotv(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
double normv(const Vec& a) { return std::sqrt(dotv(a, a)); }
Vec lin(double x, const Vec& a, double y, const Vec& b) {  // x*a + y*b
  Vec o(a.size());
  for (size_t i = 0; i < a.size(); ++i) o[i] = x * a[i] + y * b[i];
  return o;
}
Vec scaled(double x, const Vec& a) { return lin(x, a, 0.0, a); }
Vec concat(const std::vector<Vec>& parts) {
  Vec o;
  for (const Vec& p : parts) o.insert(o.end(), p.begin(), p.end());
  return o;
}
Vec random_vec(Rng& rng, size_t n, double scale) {
  Vec v(n);
  for (double& x : v) x = scale * rng.normal();
  return v;
}

// The block solution as a vector: alpha * c + beta * a.
Vec block_delta(const K::HamuBlockSolution& s, const Vec& a, const Vec& c) { return lin(s.alpha, c, s.beta, a); }

K::HamuBlockSolution solve(const Vec& a, const Vec& c, double b, double R, bool cont = false) {
  return K::hamu_solve_block(dotv(a, a), dotv(c, c), dotv(a, c), b, R, cont);
}

constexpr double kInf = std::numeric_limits<double>::infinity();

// |got - want| <= rel * |want| + abs_tol (doctest's Approx scales its epsilon, which is not an absolute floor).
bool near(double got, double want, double rel, double abs_tol) { return std::fabs(got - want) <= rel * std::fabs(want) + abs_tol; }
#define CHECK_NEAR(got, want, rel, abs_tol) \
  CHECK_MESSAGE(near((got), (want), (rel), (abs_tol)), (got) << " vs " << (want))

// Brute force: min <a,D> s.t. <c,D> >= b, ||D|| <= R (+inf when nothing is feasible). The optimum lies
// in span{a, c} (the part of D outside it changes neither <a,D> nor <c,D> and only spends norm), and a
// linear objective is minimised on the boundary of the feasible set, so a dense search of the circle
// arc and the chord of that 2-D slice finds it up to the grid spacing.
struct Circle {
  static constexpr int n = 100000;
  std::vector<double> cos_, sin_;
  Circle() {
    for (int k = 0; k < n; ++k) {
      cos_.push_back(std::cos(2 * M_PI * k / n));
      sin_.push_back(std::sin(2 * M_PI * k / n));
    }
  }
};

double brute_force_min(const Vec& a, const Vec& c, double b, double R) {
  static const Circle circle;
  const int n = Circle::n;
  const double nc = normv(c);
  double best = kInf;
  if (nc == 0.0) {
    if (b > 0) return kInf;
    for (int k = 0; k < n; ++k) best = std::min(best, normv(a) * R * circle.cos_[size_t(k)]);
    return best;
  }
  const double a1 = dotv(a, c) / nc;                 // a's coordinate along c
  const double a2 = std::sqrt(std::max(0.0, dotv(a, a) - a1 * a1));  // and orthogonal to it
  const double x0 = b / nc;                          // feasible: x >= x0
  if (x0 > R) return kInf;
  for (int k = 0; k < n; ++k) {
    const double x = R * circle.cos_[size_t(k)], y = R * circle.sin_[size_t(k)];
    if (x >= x0) best = std::min(best, a1 * x + a2 * y);
  }
  const double h = std::sqrt(std::max(0.0, R * R - x0 * x0));
  for (int k = 0; k <= n; ++k) {
    const double y = -h + 2 * h * k / n;
    best = std::min(best, a1 * x0 + a2 * y);
  }
  return best;
}

// Random points of the n-dimensional ball: none feasible may beat the closed form.
double sampled_min(Rng& rng, const Vec& a, const Vec& c, double b, double R, int samples) {
  double best = kInf;
  for (int k = 0; k < samples; ++k) {
    Vec d = random_vec(rng, a.size(), 1.0);
    const double len = R * std::pow(rng.uniform(), 1.0 / double(a.size())) / normv(d);
    d = scaled(len, d);
    if (dotv(c, d) >= b) best = std::min(best, dotv(a, d));
  }
  return best;
}

const char* branch_label(int b) {
  static const char* names[] = {"direct", "rectified", "colinear", "infeasible", "zero_constraint"};
  return names[b];
}

}  // namespace

// ---- the block solver ----------------------------------------------------------------------------

TEST_CASE("hamu solver: closed form matches a brute-force optimum in every branch") {
  Rng rng(11);
  int hits[5] = {0, 0, 0, 0, 0};
  for (int trial = 0; trial < 400; ++trial) {
    const size_t n = 2 + size_t(trial % 3);  // 2, 3 and 4 dimensions
    Vec a = random_vec(rng, n, std::exp(rng.uniform(-1.5, 1.5)));
    Vec c = random_vec(rng, n, std::exp(rng.uniform(-1.5, 1.5)));
    const double R = rng.uniform(0.1, 2.0);
    const int kind = trial % 8;
    if (kind == 5) c = scaled(std::exp(rng.uniform(-1, 1)), a);          // colinear (same direction)
    if (kind == 6) c.assign(n, 0.0);                                      // no constraint gradient
    if (kind == 7) c = lin(-1.0, a, 0.2, random_vec(rng, n, normv(a)));   // nearly opposed: direct
    double b = 0;
    if (kind == 1 || kind == 6) b = 0;
    else b = rng.uniform(0.0, 1.25) * R * normv(c);                      // some beyond reach: infeasible
    if (kind == 6 && trial % 16 == 14) b = 0.3;                           // zero constraint gradient, B > 0
    const K::HamuBlockSolution s = solve(a, c, b, R);
    ++hits[s.branch];
    const double brute = brute_force_min(a, c, b, R);
    CAPTURE(trial);
    CAPTURE(branch_label(s.branch));
    if (s.branch == K::branch_infeasible) {
      CHECK(brute == kInf);
      CHECK(s.alpha == 0.0);
      CHECK(s.beta == 0.0);
      continue;
    }
    REQUIRE(brute < kInf);
    const Vec d = block_delta(s, a, c);
    const double scale = R * normv(a) + 1e-12;
    CHECK(normv(d) <= R * (1 + 1e-9) + 1e-15);                 // within the radius
    CHECK(dotv(c, d) >= b - 1e-9 * (b + R * normv(c)) - 1e-15);  // guaranteed forget gain
    CHECK(dotv(a, d) <= brute + 2e-4 * scale);                 // as good as the dense search ...
    CHECK(dotv(a, d) >= brute - 1e-9 * scale);                 // ... and the search cannot beat it
    CHECK(dotv(a, d) <= sampled_min(rng, a, c, b, R, 400) + 1e-9 * scale);
  }
  for (int b = 0; b < 5; ++b) {
    CAPTURE(branch_label(b));
    CHECK(hits[b] > 0);
  }
}

TEST_CASE("hamu solver: rectified branch spends exactly B and R") {
  Rng rng(5);
  int rectified = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 2 + size_t(trial % 5);
    const Vec a = random_vec(rng, n, 1.0);
    const Vec c = lin(0.7, a, 1.0, random_vec(rng, n, 1.0));  // mostly acute: rectified
    const double R = rng.uniform(0.05, 1.0);
    const double b = (trial % 4 == 0) ? 0.0 : rng.uniform(0.0, 0.95) * R * normv(c);
    const K::HamuBlockSolution s = solve(a, c, b, R);
    if (s.branch != K::branch_rectified) continue;
    ++rectified;
    const Vec d = block_delta(s, a, c);
    CHECK_NEAR(dotv(c, d), b, 1e-10, 1e-12 * R * normv(c));
    CHECK_NEAR(normv(d), R, 1e-10, 0.0);
  }
  CHECK(rectified > 100);
}

TEST_CASE("hamu solver: special branches by hand") {
  const Vec a = {3, 4}, c = {1, 0};
  SUBCASE("zero constraint gradient, B = 0: plain descent of length R") {
    const K::HamuBlockSolution s = solve(a, {0, 0}, 0.0, 2.0);
    CHECK(s.branch == K::branch_zero_constraint);
    const Vec d = block_delta(s, a, {0, 0});
    CHECK(d[0] == doctest::Approx(-1.2));
    CHECK(d[1] == doctest::Approx(-1.6));
  }
  SUBCASE("zero constraint gradient, B > 0: infeasible, nothing moves even when continuing") {
    const K::HamuBlockSolution s = solve(a, {0, 0}, 0.1, 2.0, true);
    CHECK(s.branch == K::branch_infeasible);
    CHECK(s.alpha == 0.0);
    CHECK(s.beta == 0.0);
  }
  SUBCASE("infeasible with continue: pure ascent (B/|c|^2) c") {
    const K::HamuBlockSolution s = solve(a, {2, 0}, 5.0, 1.0, true);  // needs <c,D> = 5 > R |c| = 2
    CHECK(s.branch == K::branch_infeasible);
    CHECK(s.alpha == doctest::Approx(5.0 / 4.0));
    CHECK(s.beta == 0.0);
  }
  SUBCASE("direct at the kappa1 threshold") {
    // kappa1 = -B |a| / R = -0.5 * 5 / 1 = -2.5 and d = <(3,4), (-0.5,-0.25)> = -2.5, both exact.
    const K::HamuBlockSolution s = solve(a, {-0.5, -0.25}, 0.5, 1.0);
    CHECK(s.branch == K::branch_direct);
    CHECK(s.beta == doctest::Approx(-1.0 / 5.0));
  }
  SUBCASE("colinear: the smallest ascent (B/|c|^2) c") {
    const K::HamuBlockSolution s = solve({2, 0}, {1, 0}, 0.3, 1.0);
    CHECK(s.branch == K::branch_colinear);
    const Vec d = block_delta(s, {2, 0}, {1, 0});
    CHECK(d[0] == doctest::Approx(0.3));
    CHECK(d[1] == doctest::Approx(0.0));
  }
  SUBCASE("rectified, hand-computed") {
    // a = (3,4), c = (1,0), B = 0.6, R = 1: D = (0.6, -0.8), <a,D> = 1.8 - 3.2 = -1.4.
    const K::HamuBlockSolution s = solve(a, c, 0.6, 1.0);
    CHECK(s.branch == K::branch_rectified);
    const Vec d = block_delta(s, a, c);
    CHECK(d[0] == doctest::Approx(0.6));
    CHECK(d[1] == doctest::Approx(-0.8));
  }
}

// ---- the whole coefficient phase (hamu_solve_step) -----------------------------------------------

namespace {

struct Grads {
  std::vector<Vec> r, f;  // per block
};

Grads random_grads(Rng& rng, const std::vector<size_t>& sizes, double correlation, double scale) {
  Grads g;
  for (size_t n : sizes) {
    const double s = scale * std::exp(rng.uniform(-1, 1));
    Vec r = random_vec(rng, n, s);
    Vec f = lin(correlation, r, 1.0, random_vec(rng, n, s));
    g.r.push_back(r);
    g.f.push_back(f);
  }
  return g;
}

std::vector<double> stats_of(const Grads& g) {
  std::vector<double> st;
  for (size_t i = 0; i < g.r.size(); ++i) {
    st.push_back(dotv(g.r[i], g.r[i]));
    st.push_back(dotv(g.f[i], g.f[i]));
    st.push_back(dotv(g.r[i], g.f[i]));
  }
  return st;
}

struct Expected {
  std::vector<Vec> delta;  // per block
  bool applied = true;
  int infeasible = 0, rectified = 0, colinear = 0, direct = 0;
  bool criterion = false;
  std::vector<double> b_l;  // per-block constraints (layer scope)
};

// An independent statement of HAMU.md §1, §3, §4 on explicit vectors (the per-block solver itself is
// checked against brute force above).
Expected expected_step(const K::HamuConfig& cfg, const Grads& g) {
  const size_t nb = g.r.size();
  double rr = 0, ff = 0;
  for (size_t i = 0; i < nb; ++i) {
    rr += dotv(g.r[i], g.r[i]);
    ff += dotv(g.f[i], g.f[i]);
  }
  double sr = 1, sf = 1;
  if (cfg.clip > 0) {
    sr = std::min(1.0, cfg.clip / (std::sqrt(rr) + 1e-6));
    sf = std::min(1.0, cfg.clip / (std::sqrt(ff) + 1e-6));
  }
  std::vector<Vec> a(nb), c(nb);
  for (size_t i = 0; i < nb; ++i) {
    const Vec r = scaled(sr, g.r[i]), f = scaled(sf, g.f[i]);
    a[i] = cfg.variant == K::hamu_q ? r : scaled(-1, f);
    c[i] = cfg.variant == K::hamu_q ? f : scaled(-1, r);
  }
  Expected e;
  const double B = cfg.constraint;
  auto radius = [&](const Vec& av) { return cfg.fixed_radius ? cfg.radius : cfg.lr * normv(av); };
  auto capacity = [&](const Vec& av, const Vec& cv, double R) {  // one-sided retain-neutral capacity
    const double d = dotv(av, cv);
    if (d <= 0) return R * normv(cv);
    return R * std::sqrt(std::max(0.0, dotv(av, av) * dotv(cv, cv) - d * d)) / normv(av);
  };
  auto count = [&](int branch) {
    if (branch == K::branch_direct || branch == K::branch_zero_constraint) ++e.direct;
    else if (branch == K::branch_rectified) ++e.rectified;
    else if (branch == K::branch_colinear) ++e.colinear;
    else ++e.infeasible;
  };
  double cap = 0;
  if (cfg.scope == K::scope_global) {
    const Vec A = concat(a), C = concat(c);
    const double R = radius(A);
    const K::HamuBlockSolution s = solve(A, C, B, R, cfg.continue_on_infeasible);
    const Vec D = block_delta(s, A, C);
    size_t off = 0;
    for (size_t i = 0; i < nb; ++i) {
      e.delta.push_back(Vec(D.begin() + long(off), D.begin() + long(off + a[i].size())));
      off += a[i].size();
      count(s.branch);
    }
    cap = capacity(A, C, R);
  } else {
    std::vector<double> w(nb);
    for (size_t i = 0; i < nb; ++i) {
      if (cfg.split == K::split_grad_norm) w[i] = normv(a[i]) * normv(c[i]);
      else if (cfg.split == K::split_uniform) w[i] = 1.0;
      else w[i] = std::exp(-dotv(a[i], c[i]));
    }
    const double wsum = std::accumulate(w.begin(), w.end(), 0.0);
    for (size_t i = 0; i < nb; ++i) {
      const double b = B * w[i] / wsum, R = radius(a[i]);
      e.b_l.push_back(b);
      const K::HamuBlockSolution s = solve(a[i], c[i], b, R, cfg.continue_on_infeasible);
      e.delta.push_back(block_delta(s, a[i], c[i]));
      count(s.branch);
      cap += capacity(a[i], c[i], R);
    }
  }
  e.criterion = cap < B;
  if ((e.infeasible > 0 && !cfg.continue_on_infeasible) || (e.criterion && cfg.stop_on_criterion)) {
    e.applied = false;
    for (Vec& d : e.delta) d.assign(d.size(), 0.0);
  }
  return e;
}

// The fused path on CPU in double precision: parameters theta, hand-set r and f buffers.
struct FusedCase {
  std::vector<Tensor> params;
  std::unique_ptr<FusedUpdate> update;
  std::vector<Vec> theta0;

  FusedCase(const Grads& g, Rng& rng) {
    for (size_t i = 0; i < g.r.size(); ++i) {
      Vec t = random_vec(rng, g.r[i].size(), 1.0);
      theta0.push_back(t);
      // Alternate 1-D and 2-D shapes: blocks are whole tensors whatever their shape.
      const int64_t n = int64_t(t.size());
      const Shape shape = (n % 2 == 0 && i % 2 == 0) ? Shape{2, n / 2} : Shape{n};
      params.push_back(Tensor::from_doubles(t, shape, DType::f64).requires_grad_());
    }
    update = std::make_unique<FusedUpdate>(params);
    for (size_t i = 0; i < g.r.size(); ++i) {
      update->retain_grads()[i].copy_(Tensor::from_doubles(g.r[i], params[i].shape(), DType::f64));
      update->forget_grads()[i].copy_(Tensor::from_doubles(g.f[i], params[i].shape(), DType::f64));
    }
  }
  Vec moved(size_t i) const {
    const Vec now = params[i].to_vector<double>();
    return lin(1.0, now, -1.0, theta0[i]);
  }
};

}  // namespace

TEST_CASE("fused HAMU update moves theta by the expected step (Q/U, scopes, splits, clipping)") {
  Rng rng(2026);
  const std::vector<size_t> sizes = {6, 3, 10, 1, 4};
  int cases = 0, all_rectified_layer = 0;
  for (int variant : {K::hamu_q, K::hamu_u})
    for (int scope : {K::scope_layer, K::scope_global})
      for (int split : {K::split_grad_norm, K::split_uniform, K::split_softmax_dp})
        for (double clip : {0.0, 1.0})
          for (int rep = 0; rep < 3; ++rep) {
            if (scope == K::scope_global && split != K::split_grad_norm) continue;  // the split is layer-scope only
            // rep 0: correlated gradients (rectified everywhere); rep 1: independent; rep 2: fixed radius.
            const Grads g = random_grads(rng, sizes, rep == 0 ? 0.8 : 0.0, 0.6);
            K::HamuConfig cfg;
            cfg.variant = variant;
            cfg.scope = scope;
            cfg.split = split;
            cfg.clip = clip;
            cfg.lr = 0.05;
            cfg.constraint = 0.1 * cfg.lr;
            if (rep == 2) {
              cfg.fixed_radius = 1;
              cfg.radius = 0.02;
              cfg.constraint = 0.002;
            }
            CAPTURE(variant);
            CAPTURE(scope);
            CAPTURE(split);
            CAPTURE(clip);
            CAPTURE(rep);
            FusedCase fc(g, rng);
            fc.update->compute_stats();
            const std::vector<double> st = fc.update->stats_host();
            const std::vector<double> want_st = stats_of(g);
            for (size_t k = 0; k < st.size(); ++k) CHECK(st[k] == doctest::Approx(want_st[k]).epsilon(1e-12));
            const K::HamuReport rep_ = fc.update->hamu_step(cfg);
            const Expected e = expected_step(cfg, g);
            CHECK(rep_.applied == (e.applied ? 1 : 0));
            CHECK(rep_.n_infeasible == e.infeasible);
            CHECK(rep_.n_rectified == e.rectified);
            CHECK(rep_.n_colinear == e.colinear);
            CHECK(rep_.n_direct == e.direct);
            CHECK(rep_.criterion_met == (e.criterion ? 1 : 0));
            double worst = 0;
            for (size_t i = 0; i < sizes.size(); ++i) {
              const Vec d = fc.moved(i);
              for (size_t k = 0; k < d.size(); ++k) worst = std::max(worst, std::fabs(d[k] - e.delta[i][k]));
            }
            CHECK(worst < 1e-12);
            // The whole step's guarantees: global norm and the total first-order forget gain.
            if (e.applied && e.infeasible == 0) {
              std::vector<Vec> a, c;
              double gain = 0, dn2 = 0;
              for (size_t i = 0; i < sizes.size(); ++i) {
                const Vec r = scaled(rep_.retain_scale, g.r[i]), f = scaled(rep_.forget_scale, g.f[i]);
                const Vec ci = variant == K::hamu_q ? f : scaled(-1, r);
                const Vec d = fc.moved(i);
                gain += dotv(ci, d);
                dn2 += dotv(d, d);
              }
              CHECK(gain >= cfg.constraint * (1 - 1e-9));  // sum_l <c_l, D_l> >= sum_l B_l = B
              if (e.rectified + e.colinear == int(sizes.size())) {
                // Rectified (or colinear, e.g. the one-element block) everywhere: exactly B in total.
                CHECK_NEAR(gain, cfg.constraint, 1e-9, 0.0);
                if (scope == K::scope_layer) ++all_rectified_layer;
              }
              if (scope == K::scope_global && !cfg.fixed_radius) {
                double aa = 0;
                for (size_t i = 0; i < sizes.size(); ++i) {
                  const Vec ai = variant == K::hamu_q ? scaled(rep_.retain_scale, g.r[i])
                                                      : scaled(-rep_.forget_scale, g.f[i]);
                  aa += dotv(ai, ai);
                }
                CHECK(std::sqrt(dn2) <= cfg.lr * std::sqrt(aa) * (1 + 1e-9));  // global scope never exceeds R
              }
            }
            ++cases;
          }
  CHECK(cases == 2 * (3 * 2 * 3 + 2 * 3));
  CHECK(all_rectified_layer > 0);
}

TEST_CASE("hamu: Q/U symmetry") {
  // HAMU-U on (r, f) is HAMU-Q on (r', f') = (-f, -r): same branches, coefficients swapped and negated.
  Rng rng(77);
  for (int scope : {K::scope_layer, K::scope_global})
    for (int trial = 0; trial < 20; ++trial) {
      const Grads g = random_grads(rng, {5, 2, 7}, trial % 2 ? 0.6 : -0.3, 0.5);
      Grads swapped;
      for (size_t i = 0; i < g.r.size(); ++i) {
        swapped.r.push_back(scaled(-1, g.f[i]));
        swapped.f.push_back(scaled(-1, g.r[i]));
      }
      K::HamuConfig cu;
      cu.variant = K::hamu_u;
      cu.scope = scope;
      cu.clip = 1.0;
      cu.lr = 0.1;
      cu.constraint = 0.02;
      K::HamuConfig cq = cu;
      cq.variant = K::hamu_q;
      const std::vector<double> su = stats_of(g), sq = stats_of(swapped);
      std::vector<double> coef_u(6), coef_q(6);
      K::HamuReport ru, rq;
      K::hamu_solve_step(cu, 3, su.data(), coef_u.data(), &ru);
      K::hamu_solve_step(cq, 3, sq.data(), coef_q.data(), &rq);
      CHECK(ru.n_direct == rq.n_direct);
      CHECK(ru.n_rectified == rq.n_rectified);
      CHECK(ru.n_infeasible == rq.n_infeasible);
      CHECK(ru.applied == rq.applied);
      CHECK(ru.stopping_margin == doctest::Approx(rq.stopping_margin));
      for (size_t i = 0; i < 3; ++i) {
        // U: D = cu_r r + cu_f f. Q on swapped: D = cq_r (-f) + cq_f (-r).
        const Vec du = lin(coef_u[2 * i], g.r[i], coef_u[2 * i + 1], g.f[i]);
        const Vec dq = lin(coef_q[2 * i], swapped.r[i], coef_q[2 * i + 1], swapped.f[i]);
        for (size_t k = 0; k < du.size(); ++k) CHECK_NEAR(du[k], dq[k], 1e-12, 1e-15);
      }
    }
}

TEST_CASE("hamu: the constraint splits sum to B") {
  Rng rng(9);
  for (int split : {K::split_grad_norm, K::split_uniform, K::split_softmax_dp})
    for (int trial = 0; trial < 10; ++trial) {
      const Grads g = random_grads(rng, {3, 8, 1, 5, 2, 4}, 0.3, 0.8);
      K::HamuConfig cfg;
      cfg.split = split;
      cfg.constraint = 0.037;
      for (int variant : {K::hamu_q, K::hamu_u}) {
        cfg.variant = variant;
        const std::vector<double> st = stats_of(g);
        const int n = int(g.r.size());
        // The normalisers as hamu_solve_step forms them (softmax-dp shifted by max(-d) for stability).
        double norm_sum = 0, shift = -1e300;
        for (int i = 0; i < n; ++i) {
          double aa, cc, d;
          K::hamu_effective(variant, &st[size_t(3 * i)], aa, cc, d);
          norm_sum += split == K::split_softmax_dp ? 0.0 : std::sqrt(aa) * std::sqrt(cc);
          shift = std::max(shift, -d);
        }
        if (split == K::split_softmax_dp)
          for (int i = 0; i < n; ++i) {
            double aa, cc, d;
            K::hamu_effective(variant, &st[size_t(3 * i)], aa, cc, d);
            norm_sum += std::exp(-d - shift);
          }
        double total = 0;
        const Expected e = expected_step(cfg, g);
        for (int i = 0; i < n; ++i) {
          double aa, cc, d;
          K::hamu_effective(variant, &st[size_t(3 * i)], aa, cc, d);
          const double b = K::hamu_block_constraint(cfg, aa, cc, d, n, norm_sum, shift);
          CHECK(b == doctest::Approx(e.b_l[size_t(i)]).epsilon(1e-12));  // the formula of HAMU.md §4
          total += b;
        }
        CHECK(total == doctest::Approx(cfg.constraint).epsilon(1e-12));
      }
    }
}

TEST_CASE("hamu: infeasible steps move nothing unless continuing") {
  Rng rng(3);
  const Grads g = random_grads(rng, {4, 4}, 0.5, 0.05);  // small gradients: B beyond lr * sum |a||c|
  K::HamuConfig cfg;
  cfg.lr = 0.1;
  cfg.constraint = 0.9 * cfg.lr;
  cfg.clip = 1.0;
  {
    FusedCase fc(g, rng);
    fc.update->compute_stats();
    const K::HamuReport rep = fc.update->hamu_step(cfg);
    CHECK(rep.n_infeasible == 2);  // grad-norm split: every block becomes infeasible at once (HAMU.md §4)
    CHECK(rep.applied == 0);
    CHECK(rep.feasibility_margin < 0);
    for (size_t i = 0; i < 2; ++i)
      for (double x : fc.moved(i)) CHECK(x == 0.0);
  }
  {
    cfg.continue_on_infeasible = 1;
    FusedCase fc(g, rng);
    fc.update->compute_stats();
    const K::HamuReport rep = fc.update->hamu_step(cfg);
    CHECK(rep.applied == 1);
    const Expected e = expected_step(cfg, g);
    for (size_t i = 0; i < 2; ++i) {
      const Vec d = fc.moved(i);
      // Pure ascent (B_l/|c_l|^2) c_l: parallel to f, no retain component.
      const double b = e.b_l[i];
      const Vec want = scaled(b / dotv(g.f[i], g.f[i]), g.f[i]);
      for (size_t k = 0; k < d.size(); ++k) CHECK(d[k] == doctest::Approx(want[k]).epsilon(1e-10));
    }
  }
}

TEST_CASE("hamu: one-sided stopping criterion") {
  Rng rng(4);
  K::HamuConfig cfg;
  cfg.lr = 0.1;
  cfg.constraint = 0.05;
  cfg.clip = 0;
  SUBCASE("opposed gradients (d < 0) never fire the criterion") {
    // |sin| is tiny, so the two-sided rule R|a||c||sin|/|a| < B would stop here; ours must not.
    Grads g;
    g.r = {{1.0, 0.01}};
    g.f = {{-1.0, 0.0}};
    cfg.stop_on_criterion = 1;
    FusedCase fc(g, rng);
    fc.update->compute_stats();
    const K::HamuReport rep = fc.update->hamu_step(cfg);
    const double R = 0.1 * normv(g.r[0]);
    CHECK(rep.criterion_met == 0);
    CHECK(rep.applied == 1);
    CHECK(rep.n_direct == 1);
    CHECK(rep.stopping_margin == doctest::Approx(R * 1.0 - 0.05));
    CHECK(R * 1.0 * 0.01 / normv(g.r[0]) < 0.05);  // the two-sided capacity really is below B
  }
  SUBCASE("aligned gradients fire it; the step is skipped only with --stop-on-criterion") {
    Grads g;
    g.r = {{1.0, 0.01}};
    g.f = {{1.0, 0.0}};
    for (int stop : {0, 1}) {
      cfg.stop_on_criterion = stop;
      FusedCase fc(g, rng);
      fc.update->compute_stats();
      const K::HamuReport rep = fc.update->hamu_step(cfg);
      CAPTURE(stop);
      CHECK(rep.criterion_met == 1);
      CHECK(rep.stopping_margin < 0);
      CHECK(rep.n_collateral == 1);  // kappa > kappa2: forgetting must cost retain loss
      CHECK(rep.applied == (stop ? 0 : 1));
      const Vec d = fc.moved(0);
      if (stop) CHECK(normv(d) == 0.0);
      else CHECK(normv(d) > 0.0);
    }
  }
}

// ---- baselines ----------------------------------------------------------------------------------

namespace {

// theta moves by coef_r * r + coef_f * f (raw, unclipped gradients).
Vec baseline_delta(const std::string& m, const MethodParams& p, const Vec& r, const Vec& f, BaselineStep* out = nullptr) {
  const BaselineStep s = baseline_step(parse_method(m), p, dotv(r, r), dotv(f, f), dotv(r, f));
  if (out) *out = s;
  return lin(s.coef_r, r, s.coef_f, f);
}

void check_vec(const Vec& got, const Vec& want) {
  for (size_t k = 0; k < got.size(); ++k) CHECK_NEAR(got[k], want[k], 1e-12, 1e-15);
}

}  // namespace

TEST_CASE("baselines: step directions against HAMU.md §6 on hand-made gradients") {
  MethodParams p;
  p.lr = 0.1;
  p.clip = 1.0;
  const Vec r = {2.0, 0.0, 1.0}, f_conflict = {1.0, 3.0, 0.5}, f_easy = {-1.0, 2.0, -0.5};
  for (const Vec& f : {f_conflict, f_easy}) {
    const double sr = 1.0 / (normv(r) + 1e-6), sf = 1.0 / (normv(f) + 1e-6);  // both norms exceed the clip
    const Vec rc = scaled(sr, r), fc = scaled(sf, f);
    const bool conflict = dotv(r, f) > 0;
    CAPTURE(conflict);
    const double eta = p.lr;
    check_vec(baseline_delta("ft", p, r, f), scaled(-eta, rc));
    check_vec(baseline_delta("ga", p, r, f), scaled(eta, fc));
    for (const char* m : {"gdiff", "kl", "scrub"})  // -eta * 1/2 (g_r - g_f), per objective
      check_vec(baseline_delta(m, p, r, f), scaled(-eta / 2, lin(1, rc, -1, fc)));
    check_vec(baseline_delta("npo", p, r, f), scaled(-eta / 2, lin(1, rc, 1, fc)));  // f = grad of the NPO loss

    // GRU: ascent on u = f, minus its part along r when they conflict.
    for (bool compat : {false, true}) {
      MethodParams q = p;
      q.paper_compat = compat;
      const bool project = compat ? dotv(r, f) < 0 : conflict;
      const Vec u = project ? lin(1, fc, -dotv(rc, fc) / dotv(rc, rc), rc) : fc;
      BaselineStep s;
      const Vec d = baseline_delta("gru", q, r, f, &s);
      CAPTURE(compat);
      CHECK(s.projected == project);
      check_vec(d, scaled(eta, u));
      if (project) CHECK_NEAR(dotv(d, r), 0.0, 0.0, 1e-15);  // no first-order retain change
    }
    // PCGrad on the objectives (L_r, -L_f): g1 = r, g2 = -f; they conflict when <g1, g2> < 0.
    for (bool compat : {false, true}) {
      MethodParams q = p;
      q.paper_compat = compat;
      const Vec g1 = rc, g2 = scaled(-1, fc);
      const bool project = compat ? dotv(r, f) < 0 : dotv(g1, g2) < 0;
      Vec geq = scaled(0.5, lin(1, g1, 1, g2));
      if (project) {
        const Vec p1 = lin(1, g1, -dotv(g1, g2) / dotv(g2, g2), g2);
        const Vec p2 = lin(1, g2, -dotv(g2, g1) / dotv(g1, g1), g1);
        geq = scaled(0.5, lin(1, p1, 1, p2));
      }
      BaselineStep s;
      const Vec d = baseline_delta("pcgrad", q, r, f, &s);
      CAPTURE(compat);
      CHECK(s.projected == project);
      check_vec(d, scaled(-eta, geq));
    }
  }
  SUBCASE("no clipping below the clip norm, and clip 0 turns it off") {
    const Vec rs = {0.3, 0.4, 0.0}, fs = {0.0, 0.6, 0.0};
    check_vec(baseline_delta("gdiff", p, rs, fs), scaled(-0.05, lin(1, rs, -1, fs)));
    MethodParams q = p;
    q.clip = 0;
    check_vec(baseline_delta("ga", q, r, f_conflict), scaled(0.1, f_conflict));
  }
  CHECK_THROWS(baseline_step(parse_method("hamu-q"), p, 1, 1, 0));
}

TEST_CASE("baselines: objectives at the original model") {
  // At theta = theta_orig: KL terms vanish with zero gradient, and the NPO forget loss is (2/beta) log 2
  // with gradient -grad CE (pure ascent), so npo starts exactly like gradient ascent.
  const std::vector<double> z = {0.2, -1.0, 0.5, 1.5, 0.3, -0.2, -0.7, 0.9, 0.1, 0.0, 2.0, -1.0};
  const Tensor labels = Tensor::from_vector<int32_t>({0, 2, 1, 1}, {4});
  MethodParams p;
  auto grad_of = [&](auto objective) {
    Tensor logits = Tensor::from_doubles(z, {4, 3}, DType::f64);
    logits.requires_grad_();
    Tensor obj = objective(logits);
    obj.backward();
    return std::make_pair(obj.item(), logits.grad().to_vector<double>());
  };
  const auto ce = grad_of([&](const Tensor& l) { return cross_entropy(l, labels); });
  const auto npo = grad_of([&](const Tensor& l) { return parse_method("npo").forget_objective(p, l, labels, l.detach()); });
  CHECK(npo.first == doctest::Approx(2.0 / p.npo_beta * std::log(2.0)));
  for (size_t k = 0; k < z.size(); ++k) CHECK(npo.second[k] == doctest::Approx(-ce.second[k]).epsilon(1e-10));
  const auto kl = grad_of([&](const Tensor& l) { return parse_method("kl").retain_objective(p, l, labels, l.detach()); });
  CHECK_NEAR(kl.first, 0.0, 0.0, 1e-14);
  for (double g : kl.second) CHECK_NEAR(g, 0.0, 0.0, 1e-14);
  const auto scrub_f = grad_of([&](const Tensor& l) { return parse_method("scrub").forget_objective(p, l, labels, l.detach()); });
  for (double g : scrub_f.second) CHECK_NEAR(g, 0.0, 0.0, 1e-14);
  const auto scrub_r = grad_of([&](const Tensor& l) { return parse_method("scrub").retain_objective(p, l, labels, l.detach()); });
  for (size_t k = 0; k < z.size(); ++k)
    CHECK(scrub_r.second[k] == doctest::Approx(p.scrub_gamma * ce.second[k]).epsilon(1e-10));
  const auto ga = grad_of([&](const Tensor& l) { return parse_method("ga").forget_objective(p, l, labels, Tensor()); });
  for (size_t k = 0; k < z.size(); ++k) CHECK(ga.second[k] == doctest::Approx(ce.second[k]).epsilon(1e-12));
}

TEST_CASE("methods: names round-trip and unknown names are rejected") {
  for (const std::string& n : method_names()) CHECK(std::string(method_name(parse_method(n))) == n);
  CHECK_THROWS_AS(parse_method("hamu"), InputError);
}

// ---- metrics -----------------------------------------------------------------------------------

TEST_CASE("roc_auc: hand-computed case with ties") {
  // P(pos > neg) + 0.5 P(pos == neg) over the 12 pairs:
  //   pos 0.4: > 0.1 (1), = 0.4 twice (0.5 + 0.5), < 0.8 (0) -> 2
  //   pos 0.9: > all four                                  -> 4
  //   pos 0.1: = 0.1 (0.5)                                 -> 0.5          total 6.5 / 12
  const std::vector<float> neg = {0.1f, 0.4f, 0.4f, 0.8f}, pos = {0.4f, 0.9f, 0.1f};
  CHECK(roc_auc(neg, pos) == doctest::Approx(6.5 / 12.0));
  CHECK(roc_auc(pos, neg) == doctest::Approx(1.0 - 6.5 / 12.0));
  CHECK(roc_auc({1, 2}, {3, 4}) == doctest::Approx(1.0));
  CHECK(roc_auc({3, 4}, {1, 2}) == doctest::Approx(0.0));
  CHECK(roc_auc({5, 5, 5}, {5, 5}) == doctest::Approx(0.5));
  CHECK(roc_auc({}, {1}) == 0.5);
  CHECK(roc_auc({1}, {}) == 0.5);
  // NaN scores count as 0 (as the reference does): NaN vs 0 is a tie.
  CHECK(roc_auc({0.0f}, {std::nanf("")}) == doctest::Approx(0.5));
}

// ---- end to end ---------------------------------------------------------------------------------

TEST_CASE("end to end: hamu-q forgets a Fashion-MNIST class and keeps the rest") {
  const std::string dir = kFashionMnistDir;
  if (!std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz") &&
      !std::filesystem::exists(dir + "/train-images-idx3-ubyte")) {
    MESSAGE("skipped: Fashion-MNIST is not installed in " << dir << " (apt-get install dataset-fashion-mnist)");
    return;
  }
  // One thread: the run is then the same on every machine (DESIGN.md: same seed and thread count, same
  // result), and these small batches gain little from more while other jobs share the cores.
  struct OneThread {
    int saved = omp_get_max_threads();
    OneThread() { omp_set_num_threads(1); }
    ~OneThread() { omp_set_num_threads(saved); }
  } one_thread;
  const DataBundle data = load_data("fashion-mnist:" + dir);
  // A 3,000-image subset: every 20th training image; forget class 0 (T-shirt/top) within it.
  std::vector<int64_t> subset;
  for (int64_t i = 0; i < data.train.n && subset.size() < 3000; i += 20) subset.push_back(i);
  Split split;
  for (int64_t i : subset) (data.train.labels[size_t(i)] == 0 ? split.forget : split.retain).push_back(i);
  split.spec = "class=0 (subset)";
  REQUIRE(split.forget.size() > 200);
  std::vector<int64_t> test;
  for (int64_t i = 0; i < 2000; ++i) test.push_back(i);

  const Normalizer norm = compute_normalizer(data.train, subset);
  Rng rng(1);
  auto model = models::build_model({"mlp", 1, 28, 28, 10}, rng);
  TrainOptions to;
  to.epochs = 4;
  to.batch = 64;
  to.lr = 2e-3;
  to.seed = 1;
  to.progress = false;
  train_model(*model, data.train, subset, norm, to);

  EvalOptions eo;
  const SplitEval f0 = evaluate_indices(*model, data.train, split.forget, norm, eo);
  const SplitEval r0 = evaluate_indices(*model, data.train, split.retain, norm, eo);
  MESSAGE("before: forget " << 100 * f0.acc << "%, retain " << 100 * r0.acc << "%");
  REQUIRE(f0.acc > 0.6);
  REQUIRE(r0.acc > 0.75);

  UnlearnOptions uo;
  uo.method = &parse_method("hamu-q");
  uo.params.lr = 0.05;
  uo.ratio = 0.5;
  uo.steps = 15;
  uo.batch = 128;
  uo.forget_batch = 128;
  uo.seed = 3;
  uo.progress = false;
  int64_t steps_seen = 0;
  UnlearnHooks hooks;
  hooks.on_step = [&](const StepLog& s) {
    ++steps_seen;
    if (!s.skipped && s.report.applied) CHECK(s.report.n_infeasible == 0);
  };
  const UnlearnResult res = run_unlearning(*model, nullptr, data.train, split, norm, uo, hooks);
  const SplitEval f1 = evaluate_indices(*model, data.train, split.forget, norm, eo);
  const SplitEval r1 = evaluate_indices(*model, data.train, split.retain, norm, eo);
  const SplitEval t1 = evaluate_indices(*model, data.test, test, norm, eo);
  MESSAGE("after " << res.steps_done << " steps (" << stop_reason_name(res.stop_reason) << ", " << res.seconds << " s): forget "
                   << 100 * f1.acc << "%, retain " << 100 * r1.acc << "%, test " << 100 * t1.acc << "%");
  CHECK(steps_seen == int64_t(res.log.size()));
  CHECK(res.steps_done > 10);
  CHECK(f1.acc < 0.1);                  // the class is forgotten ...
  CHECK(r1.acc > r0.acc - 0.05);        // ... while the retain accuracy stays
  CHECK(f1.loss > f0.loss + 1.0);
}

TEST_CASE("metrics: the avg gap to the reference averages the splits that exist") {
  Rng rng(uint64_t(std::random_device{}()));
  auto split = [&](int64_t n) {
    SplitEval s;
    s.n = n;
    s.acc = n > 0 ? rng.uniform() : 0.0;
    return s;
  };
  for (const int64_t n_test : {int64_t(0), int64_t(7)}) {
    EvalReport r, ref;
    r.forget = split(5), r.retain = split(9), r.test = split(n_test);
    ref.forget = split(5), ref.retain = split(9), ref.test = split(n_test);
    compare_to_reference(r, ref);
    const double f = std::fabs(r.forget.acc - ref.forget.acc), t = std::fabs(r.retain.acc - ref.retain.acc);
    CHECK(r.gap_forget == doctest::Approx(f));
    if (n_test == 0) {
      CHECK(r.avg_gap == doctest::Approx((f + t) / 2));  // no test set: its 0% vs 0% counts for nothing
    } else {
      CHECK(r.avg_gap == doctest::Approx((f + t + std::fabs(r.test.acc - ref.test.acc)) / 3));
    }
  }
}
