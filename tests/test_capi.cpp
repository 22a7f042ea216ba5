// tests/test_capi.cpp: the C API (capi/hamu.h) against the engine: steps bit-identical to FusedUpdate over
// engine-owned tensors for every registered method and solver setting, plans and the hamu_step cache, the
// per-block output, Linear hardness against per-sample gradients formed in double, and bad input (null,
// counts, alignment, devices, NaN, unknown method, out-of-range values): a status, a message, parameters
// unchanged.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "capi/hamu.h"
#include "capi/testing.h"
#include "engine/rng.h"
#include "kernels/kernels.h"
#include "unlearn/method_registry.h"
#include "unlearn/runner.h"
#include "unlearn/update.h"

using namespace hamu;

namespace {

struct Blocks {
  std::vector<std::vector<float>> theta, r, f;
  std::vector<hamu_block> view() {
    std::vector<hamu_block> v;
    for (size_t i = 0; i < theta.size(); ++i) v.push_back({theta[i].data(), r[i].data(), f[i].data(), int64_t(theta[i].size())});
    return v;
  }
};

// Blocks of assorted sizes (one element, odd, a few thousand) with random values; f partly aligned with r
// so the HAMU branches vary.
Blocks random_blocks(uint64_t seed, double align = 0.3) {
  Rng rng(seed);
  Blocks b;
  for (int64_t n : {1, 7, 300, 4099, 64}) {
    std::vector<float> t(static_cast<size_t>(n)), r(t), f(t);
    for (int64_t i = 0; i < n; ++i) {
      t[size_t(i)] = float(rng.normal());
      r[size_t(i)] = float(rng.normal() * 0.05);
      f[size_t(i)] = float(align * r[size_t(i)] + rng.normal() * 0.05);
    }
    b.theta.push_back(t);
    b.r.push_back(r);
    b.f.push_back(f);
  }
  return b;
}

// The engine's step on its own buffers: FusedUpdate over parameter tensors with r and f copied into its
// gradient buffers, then the runner's sgd step (the method's own step, else its coefficients and apply).
std::vector<std::vector<float>> engine_step(const Blocks& in, const UnlearnOptions& opt, HamuReport& rep) {
  std::vector<Tensor> params;
  for (const auto& t : in.theta) params.push_back(Tensor::from_vector<float>(t, {int64_t(t.size())}));
  FusedUpdate u(params);
  for (size_t i = 0; i < in.r.size(); ++i) {
    u.retain_grads()[i].copy_(Tensor::from_vector<float>(in.r[i], {int64_t(in.r[i].size())}));
    u.forget_grads()[i].copy_(Tensor::from_vector<float>(in.f[i], {int64_t(in.f[i].size())}));
  }
  u.compute_stats();
  if (std::optional<StepDecision> own = opt.method->own_step(opt, u)) {
    rep = own->report;
  } else {
    StepDecision d = opt.method->coefficients(opt, u.count(), u.stats_host());
    if (d.report.applied && !d.report.nonfinite) u.apply(d.coef);
    rep = d.report;
  }
  std::vector<std::vector<float>> out;
  for (const Tensor& p : params) out.push_back(p.to_vector<float>());
  return out;
}

struct Ctx {
  hamu_context* c = nullptr;
  explicit Ctx(const char* dev = "cpu") { REQUIRE(hamu_context_create(dev, &c) == HAMU_OK); }
  ~Ctx() { hamu_context_destroy(c); }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("capi: version, status names and the registered methods") {
  CHECK(hamu_version() == HAMU_API_VERSION);
  CHECK(std::string(hamu_status_name(HAMU_ERR_DEVICE_MISMATCH)) == "HAMU_ERR_DEVICE_MISMATCH");
  CHECK(std::string(hamu_status_name(42)) == "unknown");
  const int n = hamu_method_count();
  CHECK(n == int(method_names().size()));
  CHECK(n >= 10);
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back(hamu_method_name(i));
  CHECK(names == method_names());
  for (const char* m : {"hamu-q", "hamu-u", "ft", "ga", "gdiff", "kl", "scrub", "npo", "gru", "pcgrad"})
    CHECK(std::find(names.begin(), names.end(), m) != names.end());
  CHECK(hamu_method_name(-1) == nullptr);
  CHECK(hamu_method_name(n) == nullptr);
}

TEST_CASE("capi: every method's step is bit-identical to the engine's FusedUpdate") {
  Ctx ctx;
  struct Setting {
    int scope, split, fixed;
    double ratio, clip;
  };
  const Setting settings[] = {{HAMU_SCOPE_LAYER, HAMU_SPLIT_GRAD_NORM, 0, 0.1, 1.0},
                              {HAMU_SCOPE_GLOBAL, HAMU_SPLIT_GRAD_NORM, 0, 0.3, 0.0},
                              {HAMU_SCOPE_LAYER, HAMU_SPLIT_UNIFORM, 0, 0.05, 0.5},
                              {HAMU_SCOPE_LAYER, HAMU_SPLIT_SOFTMAX_DP, 1, 0.2, 1.0}};
  uint64_t seed = 11;
  for (const std::string& m : method_names()) {
    int applied = 0, rectified = 0;
    for (const Setting& s : settings) {
      CAPTURE(m);
      CAPTURE(s.scope);
      CAPTURE(s.split);
      ++seed;
      Blocks b = random_blocks(seed, seed % 2 ? 0.3 : -0.5);
      hamu_step_config cfg;
      hamu_step_config_init(&cfg);
      cfg.method = m.c_str();
      cfg.lr = 0.05;
      cfg.ratio = s.ratio;
      cfg.clip = s.clip;
      cfg.scope = s.scope;
      cfg.split = s.split;
      cfg.fixed_radius = s.fixed;
      cfg.radius = 0.01;
      UnlearnOptions opt;
      opt.method = &parse_method(m);
      opt.params.lr = cfg.lr;
      opt.params.clip = cfg.clip;
      opt.ratio = cfg.ratio;
      opt.scope = s.scope == HAMU_SCOPE_GLOBAL ? HamuScope::global : HamuScope::layer;
      opt.split = s.split == HAMU_SPLIT_UNIFORM ? ConstraintSplit::uniform
                  : s.split == HAMU_SPLIT_SOFTMAX_DP ? ConstraintSplit::softmax_dp
                                                     : ConstraintSplit::grad_norm;
      opt.fixed_radius = s.fixed != 0;
      opt.radius = cfg.radius;
      HamuReport want;
      const auto expected = engine_step(b, opt, want);
      std::vector<hamu_block> v = b.view();
      hamu_report got;
      const int st = hamu_step(ctx.c, v.data(), int64_t(v.size()), &cfg, &got, nullptr);
      REQUIRE_MESSAGE(st >= 0, hamu_last_error(ctx.c));
      CHECK(st == (want.applied && !want.nonfinite ? HAMU_OK : HAMU_SKIPPED));
      for (size_t i = 0; i < expected.size(); ++i) CHECK(same_bits(b.theta[i], expected[i]));
      CHECK(got.kappa == want.kappa);
      CHECK(got.kappa1 == want.kappa1);
      CHECK(got.kappa2 == want.kappa2);
      CHECK(got.feasibility_margin == want.feasibility_margin);
      CHECK(got.stopping_margin == want.stopping_margin);
      CHECK(got.n_direct == want.n_direct);
      CHECK(got.n_rectified == want.n_rectified);
      CHECK(got.n_colinear == want.n_colinear);
      CHECK(got.n_infeasible == want.n_infeasible);
      CHECK(got.applied == want.applied);
      CHECK(got.n_blocks == int(v.size()));
      applied += got.applied;
      rectified += got.n_rectified;
    }
    // The settings make real steps (and HAMU's rectified branch), so equality is not of untouched inputs.
    CHECK(applied >= 2);
    if (m == "hamu-q" || m == "hamu-u") CHECK(rectified > 0);
  }
}

TEST_CASE("capi: plans step repeatedly, hamu_step keeps its plan, per-block output explains the step") {
  Ctx ctx;
  Blocks b = random_blocks(5);
  const Blocks before = b;
  std::vector<hamu_block> v = b.view();
  hamu_plan* plan = nullptr;
  REQUIRE(hamu_plan_create(ctx.c, v.data(), int64_t(v.size()), &plan) == HAMU_OK);
  CHECK(hamu_plan_blocks(plan) == int64_t(v.size()));
  hamu_step_config cfg;
  hamu_step_config_init(&cfg);
  std::vector<hamu_block_stats> per(v.size());
  hamu_report rep;
  REQUIRE(hamu_plan_step(plan, &cfg, &rep, per.data()) == HAMU_OK);
  for (size_t i = 0; i < v.size(); ++i) {
    double rr = 0, ff = 0, rf = 0;
    for (size_t k = 0; k < b.r[i].size(); ++k) {
      rr += double(b.r[i][k]) * b.r[i][k];
      ff += double(b.f[i][k]) * b.f[i][k];
      rf += double(b.r[i][k]) * b.f[i][k];
    }
    CHECK(per[i].retain_sq == doctest::Approx(rr).epsilon(1e-5));
    CHECK(per[i].forget_sq == doctest::Approx(ff).epsilon(1e-5));
    CHECK(per[i].dot == doctest::Approx(rf).epsilon(1e-4));
    // theta moved by exactly coef_r r + coef_f f (up to float rounding of one fma per element)
    for (size_t k = 0; k < b.r[i].size(); k += 37) {
      const double d = double(b.theta[i][k]) - before.theta[i][k];
      const double want = per[i].coef_retain * b.r[i][k] + per[i].coef_forget * b.f[i][k];
      CHECK(std::fabs(d - want) <= 1e-6 * (1 + std::fabs(before.theta[i][k])));
    }
  }
  hamu_report last;
  REQUIRE(hamu_plan_last_report(plan, &last) == HAMU_OK);
  CHECK(std::memcmp(&last, &rep, sizeof rep) == 0);
  // Stepping again moves on (the gradients are the same, so the step is the same size).
  const std::vector<float> t1 = b.theta[3];
  REQUIRE(hamu_plan_step(plan, &cfg, nullptr, nullptr) == HAMU_OK);
  CHECK(!same_bits(t1, b.theta[3]));
  hamu_plan_destroy(plan);

  // hamu_step with the same array twice, then a different one: each matches a fresh plan.
  Blocks c1 = random_blocks(6), c2 = c1;
  std::vector<hamu_block> w1 = c1.view(), w2 = c2.view();
  for (int i = 0; i < 2; ++i) REQUIRE(hamu_step(ctx.c, w1.data(), int64_t(w1.size()), &cfg, nullptr, nullptr) == HAMU_OK);
  hamu_plan* p2 = nullptr;
  REQUIRE(hamu_plan_create(ctx.c, w2.data(), int64_t(w2.size()), &p2) == HAMU_OK);
  for (int i = 0; i < 2; ++i) REQUIRE(hamu_plan_step(p2, &cfg, nullptr, nullptr) == HAMU_OK);
  hamu_plan_destroy(p2);
  for (size_t i = 0; i < c1.theta.size(); ++i) CHECK(same_bits(c1.theta[i], c2.theta[i]));
  w1.pop_back();
  CHECK(hamu_step(ctx.c, w1.data(), int64_t(w1.size()), &cfg, &rep, nullptr) == HAMU_OK);
  CHECK(rep.n_blocks == int(w1.size()));
}

TEST_CASE("capi: NaN gradients skip the step and leave the parameters alone") {
  Ctx ctx;
  for (const char* m : {"hamu-q", "hamu-u", "gdiff", "pcgrad"}) {
    CAPTURE(m);
    Blocks b = random_blocks(21);
    b.f[2][17] = std::numeric_limits<float>::quiet_NaN();
    b.r[4][0] = std::numeric_limits<float>::infinity();
    const Blocks before = b;
    std::vector<hamu_block> v = b.view();
    hamu_step_config cfg;
    hamu_step_config_init(&cfg);
    cfg.method = m;
    hamu_report rep;
    CHECK(hamu_step(ctx.c, v.data(), int64_t(v.size()), &cfg, &rep, nullptr) == HAMU_SKIPPED);
    CHECK(rep.nonfinite == 1);
    CHECK(rep.applied == 0);
    for (size_t i = 0; i < b.theta.size(); ++i) CHECK(same_bits(b.theta[i], before.theta[i]));
  }
}

TEST_CASE("capi: bad input gives a status and a message, never a crash, parameters unchanged") {
  Ctx ctx;
  Blocks b = random_blocks(9);
  const Blocks before = b;
  std::vector<hamu_block> v = b.view();
  const int64_t n = int64_t(v.size());
  hamu_step_config cfg;
  hamu_step_config_init(&cfg);
  auto unchanged = [&] {
    for (size_t i = 0; i < b.theta.size(); ++i)
      if (!same_bits(b.theta[i], before.theta[i])) return false;
    return true;
  };
  auto expect = [&](int got, int want, const char* needle) {
    CHECK(got == want);
    const std::string msg = hamu_last_error(ctx.c);
    CHECK_MESSAGE(msg.find(needle) != std::string::npos, msg);
    CHECK(unchanged());
  };

  // Contexts.
  hamu_context* c2 = reinterpret_cast<hamu_context*>(1);
  CHECK(hamu_context_create("gpu", &c2) == HAMU_ERR_INVALID_ARGUMENT);
  CHECK(c2 == nullptr);
  CHECK(std::string(hamu_last_error(nullptr)).find("'gpu'") != std::string::npos);
  CHECK(hamu_context_create(nullptr, &c2) == HAMU_ERR_INVALID_ARGUMENT);
  CHECK(hamu_context_create("cpu", nullptr) == HAMU_ERR_INVALID_ARGUMENT);
  CHECK(hamu_context_create("cuda:x", &c2) == HAMU_ERR_INVALID_ARGUMENT);
#ifndef HAMU_CUDA
  CHECK(hamu_context_create("cuda:0", &c2) == HAMU_ERR_UNSUPPORTED);
  CHECK(std::string(hamu_last_error(nullptr)).find("without CUDA") != std::string::npos);
#else
  if (kernels::cuda_device_count() == 0) CHECK(hamu_context_create("cuda:0", &c2) == HAMU_ERR_UNSUPPORTED);
#endif
  CHECK(hamu_context_set_stream(nullptr, nullptr) == HAMU_ERR_INVALID_ARGUMENT);
  hamu_context_destroy(nullptr);

  // The step.
  expect(hamu_step(ctx.c, nullptr, n, &cfg, nullptr, nullptr), HAMU_ERR_INVALID_ARGUMENT, "blocks is NULL");
  expect(hamu_step(ctx.c, v.data(), 0, &cfg, nullptr, nullptr), HAMU_ERR_INVALID_ARGUMENT, "must be >= 1");
  expect(hamu_step(ctx.c, v.data(), -3, &cfg, nullptr, nullptr), HAMU_ERR_INVALID_ARGUMENT, "must be >= 1");
  expect(hamu_step(ctx.c, v.data(), n, nullptr, nullptr, nullptr), HAMU_ERR_INVALID_ARGUMENT, "cfg is NULL");
  CHECK(hamu_step(nullptr, v.data(), n, &cfg, nullptr, nullptr) == HAMU_ERR_INVALID_ARGUMENT);
  CHECK(std::string(hamu_last_error(nullptr)).find("ctx is NULL") != std::string::npos);
  {
    std::vector<hamu_block> w = v;
    w[2].count = 0;
    expect(hamu_step(ctx.c, w.data(), n, &cfg, nullptr, nullptr), HAMU_ERR_INVALID_ARGUMENT, "blocks[2].count");
    w = v;
    w[2].count = -5;
    expect(hamu_step(ctx.c, w.data(), n, &cfg, nullptr, nullptr), HAMU_ERR_INVALID_ARGUMENT, "blocks[2].count");
    w = v;
    w[1].forget_grad = nullptr;
    expect(hamu_step(ctx.c, w.data(), n, &cfg, nullptr, nullptr), HAMU_ERR_INVALID_ARGUMENT, "blocks[1].forget_grad is NULL");
    w = v;
    w[3].param = reinterpret_cast<float*>(reinterpret_cast<char*>(b.theta[3].data()) + 2);
    w[3].count -= 1;
    expect(hamu_step(ctx.c, w.data(), n, &cfg, nullptr, nullptr), HAMU_ERR_INVALID_ARGUMENT, "not 4-byte aligned");
  }
  // The configuration: one bad field at a time.
  struct BadConfig {
    void (*spoil)(hamu_step_config&);
    int status;
    const char* needle;
  };
  const BadConfig bad_configs[] = {
      {[](hamu_step_config& c) { c.method = "sgd-ascent"; }, HAMU_ERR_INVALID_ARGUMENT, "unknown method 'sgd-ascent'"},
      {[](hamu_step_config& c) { c.method = nullptr; }, HAMU_ERR_INVALID_ARGUMENT, "method is NULL"},
      {[](hamu_step_config& c) { c.ratio = -0.5; }, HAMU_ERR_INVALID_ARGUMENT, "ratio"},
      {[](hamu_step_config& c) { c.ratio = 5.0; }, HAMU_ERR_INVALID_ARGUMENT, "ratio"},  // > clip^2: never feasible
      {[](hamu_step_config& c) { c.ratio = std::nan(""); }, HAMU_ERR_INVALID_ARGUMENT, "ratio"},
      {[](hamu_step_config& c) { c.lr = 0; }, HAMU_ERR_INVALID_ARGUMENT, "lr"},
      {[](hamu_step_config& c) { c.lr = std::numeric_limits<double>::infinity(); }, HAMU_ERR_INVALID_ARGUMENT, "lr"},
      {[](hamu_step_config& c) { c.clip = -1; }, HAMU_ERR_INVALID_ARGUMENT, "clip"},
      {[](hamu_step_config& c) { c.scope = 7; }, HAMU_ERR_INVALID_ARGUMENT, "scope"},
      {[](hamu_step_config& c) { c.split = -1; }, HAMU_ERR_INVALID_ARGUMENT, "split"},
      {[](hamu_step_config& c) { c.fixed_radius = 1; }, HAMU_ERR_INVALID_ARGUMENT, "radius"},
      {[](hamu_step_config& c) { c.grad_dtype = HAMU_DTYPE_BF16; }, HAMU_ERR_UNSUPPORTED, "bf16"},
  };
  for (const BadConfig& b : bad_configs) {
    CAPTURE(b.needle);
    hamu_step_config bad = cfg;
    b.spoil(bad);
    expect(hamu_step(ctx.c, v.data(), n, &bad, nullptr, nullptr), b.status, b.needle);
  }
  // Plans.
  hamu_plan* plan = reinterpret_cast<hamu_plan*>(1);
  expect(hamu_plan_create(ctx.c, v.data(), 0, &plan), HAMU_ERR_INVALID_ARGUMENT, "must be >= 1");
  CHECK(plan == nullptr);
  CHECK(hamu_plan_step(nullptr, &cfg, nullptr, nullptr) == HAMU_ERR_INVALID_ARGUMENT);
  CHECK(hamu_plan_last_report(nullptr, nullptr) == HAMU_ERR_INVALID_ARGUMENT);
  hamu_plan_destroy(nullptr);
  // The context still works after all that.
  CHECK(hamu_step(ctx.c, v.data(), n, &cfg, nullptr, nullptr) == HAMU_OK);
  CHECK(!unchanged());
}

// ------------------------------------------------------------------------------------------------
// Hardness of a Linear layer

namespace {

struct Captures {
  int64_t n, t, in, out;
  std::vector<float> a, g;
};

Captures random_captures(Rng& rng, int64_t n, int64_t t, int64_t in, int64_t out) {
  Captures c{n, t, in, out, std::vector<float>(size_t(n * t * in)), std::vector<float>(size_t(n * t * out))};
  for (float& x : c.a) x = float(rng.normal());
  for (float& x : c.g) x = float(rng.normal() * 0.1);
  return c;
}

// Per-sample gradients sum_t g_t a_t^T [n][out*in] in double.
std::vector<std::vector<double>> per_sample(const Captures& c) {
  std::vector<std::vector<double>> p(size_t(c.n), std::vector<double>(size_t(c.out * c.in), 0.0));
  for (int64_t i = 0; i < c.n; ++i)
    for (int64_t t = 0; t < c.t; ++t)
      for (int64_t o = 0; o < c.out; ++o)
        for (int64_t k = 0; k < c.in; ++k)
          p[size_t(i)][size_t(o * c.in + k)] +=
              double(c.g[size_t((i * c.t + t) * c.out + o)]) * double(c.a[size_t((i * c.t + t) * c.in + k)]);
  return p;
}

double dotd(const std::vector<double>& x, const std::vector<double>& y) {
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

}  // namespace

TEST_CASE("capi: Linear hardness (K, row form, norms) on both paths matches per-sample gradients in double") {
  Ctx ctx;
  Rng rng(77);
  struct Shape {
    int64_t nf, nr, t, in, out;
  };
  for (const Shape& s : {Shape{5, 7, 1, 12, 9}, Shape{4, 6, 3, 10, 8}, Shape{3, 9, 5, 4, 3}}) {
    for (bool small_tiles : {false, true}) {
      const int64_t old = small_tiles ? capi::set_scratch_floats(40) : 0;
      Captures f = random_captures(rng, s.nf, s.t, s.in, s.out), r = random_captures(rng, s.nr, s.t, s.in, s.out);
      const auto pf = per_sample(f), pr = per_sample(r);
      std::vector<double> h(size_t(s.out * s.in), 0.0);
      for (const auto& p : pr)
        for (size_t k = 0; k < h.size(); ++k) h[k] += p[k] / double(s.nr);
      for (int32_t path : {HAMU_PATH_GHOST, HAMU_PATH_MATERIALISE, HAMU_PATH_AUTO}) {
        CAPTURE(s.t);
        CAPTURE(path);
        CAPTURE(small_tiles);
        std::vector<float> k(size_t(s.nf * s.nr), -1.f), kappa(size_t(s.nf)), fn(size_t(s.nf)), rn(size_t(s.nr)),
            hg(size_t(s.out * s.in));
        hamu_linear_samples fs{f.a.data(), f.g.data(), s.nf}, rs{r.a.data(), r.g.data(), s.nr};
        hamu_linear_hardness_out o{k.data(), kappa.data(), fn.data(), rn.data(), hg.data(), -1};
        REQUIRE_MESSAGE(hamu_linear_hardness(ctx.c, s.in, s.out, s.t, &fs, &rs, path, &o) == HAMU_OK, hamu_last_error(ctx.c));
        if (path != HAMU_PATH_AUTO) CHECK(o.path == path);
        double scale = 0;
        for (const auto& p : pf) scale = std::max(scale, std::sqrt(dotd(p, p)));
        for (const auto& p : pr) scale = std::max(scale, std::sqrt(dotd(p, p)));
        const double tol = 1e-5 * scale * scale + 1e-7;
        for (int64_t j = 0; j < s.nf; ++j) {
          for (int64_t i = 0; i < s.nr; ++i) CHECK(std::fabs(k[size_t(j * s.nr + i)] - dotd(pf[size_t(j)], pr[size_t(i)])) < tol);
          CHECK(std::fabs(kappa[size_t(j)] - dotd(pf[size_t(j)], h)) < tol);
          CHECK(fn[size_t(j)] == doctest::Approx(std::sqrt(dotd(pf[size_t(j)], pf[size_t(j)]))).epsilon(1e-4));
        }
        for (int64_t i = 0; i < s.nr; ++i)
          CHECK(rn[size_t(i)] == doctest::Approx(std::sqrt(dotd(pr[size_t(i)], pr[size_t(i)]))).epsilon(1e-4));
        for (size_t q = 0; q < h.size(); q += 5) CHECK(std::fabs(hg[q] - h[q]) < 1e-5 * (1 + std::fabs(h[q])));
      }
      if (small_tiles) capi::set_scratch_floats(old);
    }
  }
  // The cost model: t = 1 and a wide layer goes ghost; a long sequence through a small layer materialises.
  Captures f = random_captures(rng, 2, 1, 64, 64), r = random_captures(rng, 2, 1, 64, 64);
  hamu_linear_samples fs{f.a.data(), f.g.data(), 2}, rs{r.a.data(), r.g.data(), 2};
  hamu_linear_hardness_out o{};
  std::vector<float> k(4);
  o.k = k.data();
  REQUIRE(hamu_linear_hardness(ctx.c, 64, 64, 1, &fs, &rs, HAMU_PATH_AUTO, &o) == HAMU_OK);
  CHECK(o.path == HAMU_PATH_GHOST);
  Captures f2 = random_captures(rng, 2, 32, 2, 2), r2 = random_captures(rng, 2, 32, 2, 2);
  hamu_linear_samples fs2{f2.a.data(), f2.g.data(), 2}, rs2{r2.a.data(), r2.g.data(), 2};
  REQUIRE(hamu_linear_hardness(ctx.c, 2, 2, 32, &fs2, &rs2, HAMU_PATH_AUTO, &o) == HAMU_OK);
  CHECK(o.path == HAMU_PATH_MATERIALISE);
}

TEST_CASE("capi: Linear hardness rejects bad input with a status and a message") {
  Ctx ctx;
  Rng rng(3);
  Captures f = random_captures(rng, 2, 1, 4, 3), r = random_captures(rng, 3, 1, 4, 3);
  hamu_linear_samples fs{f.a.data(), f.g.data(), 2}, rs{r.a.data(), r.g.data(), 3};
  std::vector<float> k(6, 123.f);
  hamu_linear_hardness_out o{};
  o.k = k.data();
  auto expect = [&](int got, int want, const char* needle) {
    CHECK(got == want);
    const std::string msg = hamu_last_error(ctx.c);
    CHECK_MESSAGE(msg.find(needle) != std::string::npos, msg);
    for (float x : k) CHECK(x == 123.f);
  };
  expect(hamu_linear_hardness(ctx.c, 4, 3, 1, nullptr, &rs, 0, &o), HAMU_ERR_INVALID_ARGUMENT, "forget is NULL");
  expect(hamu_linear_hardness(ctx.c, 4, 3, 1, &fs, &rs, 0, nullptr), HAMU_ERR_INVALID_ARGUMENT, "result is NULL");
  expect(hamu_linear_hardness(ctx.c, 0, 3, 1, &fs, &rs, 0, &o), HAMU_ERR_INVALID_ARGUMENT, "must be >= 1");
  expect(hamu_linear_hardness(ctx.c, 4, 3, -2, &fs, &rs, 0, &o), HAMU_ERR_INVALID_ARGUMENT, "must be >= 1");
  expect(hamu_linear_hardness(ctx.c, 4, 3, 1, &fs, &rs, 9, &o), HAMU_ERR_INVALID_ARGUMENT, "path");
  expect(hamu_linear_hardness(ctx.c, int64_t(1) << 40, int64_t(1) << 40, 1, &fs, &rs, 0, &o), HAMU_ERR_INVALID_ARGUMENT,
         "overflow");
  hamu_linear_samples bad = rs;
  bad.n = 0;
  expect(hamu_linear_hardness(ctx.c, 4, 3, 1, &fs, &bad, 0, &o), HAMU_ERR_INVALID_ARGUMENT, "retain->n");
  bad = rs;
  bad.g = nullptr;
  expect(hamu_linear_hardness(ctx.c, 4, 3, 1, &fs, &bad, 0, &o), HAMU_ERR_INVALID_ARGUMENT, "retain->g is NULL");
  bad = rs;
  bad.a = reinterpret_cast<const float*>(reinterpret_cast<const char*>(r.a.data()) + 1);
  expect(hamu_linear_hardness(ctx.c, 4, 3, 1, &fs, &bad, 0, &o), HAMU_ERR_INVALID_ARGUMENT, "aligned");
}

#ifdef HAMU_CUDA
TEST_CASE("capi: CUDA context: host pointers refused, steps match the CPU, async report") {
  if (kernels::cuda_device_count() == 0) {
    MESSAGE("capi cuda: skipped: no GPU");
    return;
  }
  Ctx gpu("cuda:0"), cpu;
  Blocks b = random_blocks(31);
  std::vector<hamu_block> host = b.view();
  hamu_step_config cfg;
  hamu_step_config_init(&cfg);
  CHECK(hamu_step(gpu.c, host.data(), int64_t(host.size()), &cfg, nullptr, nullptr) == HAMU_ERR_DEVICE_MISMATCH);
  CHECK(std::string(hamu_last_error(gpu.c)).find("host memory") != std::string::npos);
  // Device copies of the blocks.
  std::vector<Tensor> dev;
  std::vector<hamu_block> d;
  for (size_t i = 0; i < b.theta.size(); ++i) {
    const int64_t n = int64_t(b.theta[i].size());
    dev.push_back(Tensor::from_vector<float>(b.theta[i], {n}).to(Device{Device::cuda, 0}));
    dev.push_back(Tensor::from_vector<float>(b.r[i], {n}).to(Device{Device::cuda, 0}));
    dev.push_back(Tensor::from_vector<float>(b.f[i], {n}).to(Device{Device::cuda, 0}));
    d.push_back({dev[dev.size() - 3].data<float>(), dev[dev.size() - 2].data<float>(), dev.back().data<float>(), n});
  }
  CHECK(hamu_step(cpu.c, d.data(), int64_t(d.size()), &cfg, nullptr, nullptr) == HAMU_ERR_DEVICE_MISMATCH);
  hamu_plan* plan = nullptr;
  REQUIRE(hamu_plan_create(gpu.c, d.data(), int64_t(d.size()), &plan) == HAMU_OK);
  hamu_report rep_gpu, rep_cpu;
  REQUIRE(hamu_plan_step(plan, &cfg, &rep_gpu, nullptr) == HAMU_OK);
  REQUIRE(hamu_step(cpu.c, host.data(), int64_t(host.size()), &cfg, &rep_cpu, nullptr) == HAMU_OK);
  CHECK(rep_gpu.kappa == doctest::Approx(rep_cpu.kappa).epsilon(1e-4));
  CHECK(rep_gpu.n_rectified + rep_gpu.n_direct == rep_cpu.n_rectified + rep_cpu.n_direct);
  for (size_t i = 0; i < b.theta.size(); ++i) {
    const std::vector<float> g = dev[3 * i].to_vector<float>();
    for (size_t k = 0; k < g.size(); ++k) CHECK(g[k] == doctest::Approx(b.theta[i][k]).epsilon(1e-5));
  }
  // Asynchronous step: the report arrives in the plan after the stream synchronises.
  REQUIRE(hamu_plan_step(plan, &cfg, nullptr, nullptr) == HAMU_OK);
  REQUIRE(hamu_context_synchronize(gpu.c) == HAMU_OK);
  hamu_report async_rep;
  REQUIRE(hamu_plan_last_report(plan, &async_rep) == HAMU_OK);
  CHECK(async_rep.n_blocks == int(d.size()));
  CHECK(async_rep.applied == 1);
  hamu_plan_destroy(plan);
}
#endif
