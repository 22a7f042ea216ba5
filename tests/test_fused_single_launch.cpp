// tests/test_fused_single_launch.cpp: the single-launch (cooperative) HAMU step (issue #12 item 5): the choice
// and its environment knob on the host, and, with a GPU, parity with the three-launch path (to the bit) and
// with the CPU on fresh random blocks, through the kernels and through FusedUpdate (owed statistics, the
// fallback switch, CUDA-graph capture).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "unlearn/update.h"

#ifdef HAMU_CUDA
#include "kernels/perf.h"
#include "tests/gpu_skip.h"
#endif

using namespace hamu;
namespace K = hamu::kernels;

TEST_CASE("fused update: the single-launch limit and its environment knob") {
  CHECK(single_launch_limit(nullptr) == kSingleLaunchDefault);
  CHECK(single_launch_limit("") == kSingleLaunchDefault);
  CHECK(single_launch_limit("0") == 0);
  CHECK(single_launch_limit("1") == 1);
  CHECK(single_launch_limit("123456789") == 123456789);
  CHECK(single_launch_limit("9223372036854775807") == INT64_MAX);
  for (const char* bad : {"-5", "+5", " 5", "5 ", "12x", "0x10", "1e6", "99999999999999999999", "abc"}) {
    CAPTURE(bad);
    CHECK(single_launch_limit(bad) == kSingleLaunchDefault);
  }

  // The constructor reads the knob; on the CPU the single launch is never chosen and compute_stats runs
  // pass 1 at once (the statistics equal the kernel's).
  const int64_t n = 37;
  std::vector<float> theta(n, 0.5f), r(n), f(n);
  for (int64_t i = 0; i < n; ++i) {
    r[size_t(i)] = 0.01f * float(i % 7) - 0.03f;
    f[size_t(i)] = 0.02f * float(i % 5) - 0.04f;
  }
  const std::vector<ExternalBlock> blocks = {{theta.data(), r.data(), f.data(), 30}, {theta.data() + 30, r.data() + 30, f.data() + 30, 7}};
  for (const char* env : {"0", "1000", "junk"}) {
    CAPTURE(env);
    REQUIRE(setenv("HAMU_FUSED_SINGLE_LAUNCH_MAX", env, 1) == 0);
    FusedUpdate up(blocks, Device{}, DType::f32);
    CHECK(up.total() == n);
    CHECK(up.single_launch_max() == single_launch_limit(env));
    CHECK_FALSE(up.single_launch_chosen());
    up.set_single_launch_limit(INT64_MAX);
    CHECK_FALSE(up.single_launch_chosen());  // CPU
    up.compute_stats();
    const std::vector<double> st = up.stats_host();
    std::vector<double> want(6);
    const float* pr[2] = {r.data(), r.data() + 30};
    const float* pf[2] = {f.data(), f.data() + 30};
    const int64_t sz[2] = {30, 7};
    K::hamu_block_stats(K::CpuCtx{}, 2, pr, pf, sz, want.data());
    CHECK(st == want);
    K::HamuConfig cfg;
    cfg.lr = 0.1;
    up.hamu_step(cfg);
    CHECK_FALSE(up.single_launch_used());
  }
  unsetenv("HAMU_FUSED_SINGLE_LAUNCH_MAX");
  FusedUpdate def(blocks, Device{}, DType::f32);
  CHECK(def.single_launch_max() == kSingleLaunchDefault);
}

#ifdef HAMU_CUDA
namespace {

bool have_gpu() {
  static const bool g = testing::gpu_or_say("single-launch HAMU tests");
  return g;
}

// Blocks of chosen sizes at odd offsets inside flat theta/r/f buffers (misaligned starts, r and f with
// different misalignments), with block kinds that steer the HAMU branches: kind 0 f ~ -r (direct), 1
// independent (rectified or direct), 2 f = 2r + 1e-4 relative noise (colinear: |r_perp|^2 ~ 1e-8 |r|^2, two
// orders under the solver's 1e-6; not exactly colinear, where whether kappa > kappa2 at B = 0 would turn on
// the last bit of the statistics and so differ between summation orders), 3 a tiny f (infeasible for a
// uniform B above its reach).
struct Layout {
  std::vector<int64_t> sizes, off_t, off_r, off_f;
  int64_t span = 0;
  std::vector<float> theta, r, f;
};

Layout make_layout(const std::vector<int64_t>& sizes, uint32_t seed) {
  Layout L;
  L.sizes = sizes;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t sh_r = (i % 5 == 3) ? 1 : 0, sh_f = (i % 7 == 4) ? 2 : sh_r, sh_t = (i % 3 == 1) ? 3 : sh_r;
    L.off_t.push_back(L.span + sh_t);
    L.off_r.push_back(L.span + sh_r);
    L.off_f.push_back(L.span + sh_f);
    L.span += (sizes[i] + 3) / 4 * 4 + 4;
  }
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  L.theta.resize(size_t(L.span));
  L.r.resize(size_t(L.span));
  L.f.resize(size_t(L.span));
  for (auto& x : L.theta) x = u(gen);
  for (size_t i = 0; i < sizes.size(); ++i)
    for (int64_t j = 0; j < sizes[i]; ++j) {
      const float rv = 0.01f * u(gen), e = 0.01f * u(gen);
      float fv = e;
      switch (i % 4) {
        case 0: fv = -rv + 0.1f * e; break;
        case 1: fv = e; break;
        case 2: fv = 2.f * rv + 2e-4f * e; break;
        default: fv = 1e-6f * e; break;
      }
      L.r[size_t(L.off_r[i] + j)] = rv;
      L.f[size_t(L.off_f[i] + j)] = fv;
    }
  return L;
}

// Log-uniform sizes in [1, max] with some one-element blocks, the largest adjusted so they add up to total.
std::vector<int64_t> uneven(int count, int64_t total, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<int64_t> s;
  int64_t sum = 0;
  for (int i = 0; i < count; ++i) {
    const int64_t n = (i % 9 == 5) ? 1 : int64_t(std::exp(u(gen) * std::log(double(total) / count * 4)));
    s.push_back(std::max<int64_t>(1, n));
    sum += s.back();
  }
  size_t big = 0;
  for (size_t i = 1; i < s.size(); ++i)
    if (s[i] > s[big]) big = i;
  if (sum < total) s[big] += total - sum;
  return s;
}

struct Case {
  std::string name;
  std::vector<int64_t> sizes;
  bool nonfinite = false;
};

std::vector<Case> cases() {
  std::vector<Case> c;
  c.push_back({"1 block of 1M", {1000000}});
  c.push_back({"1 block of 1", {1}});
  c.push_back({"65 uneven blocks, 1M", uneven(65, 1000000, 65)});
  c.push_back({"448 uneven blocks, 1M", uneven(448, 1000000, 448)});
  c.push_back({"448 blocks of 1 element", std::vector<int64_t>(448, 1)});
  c.push_back({"5000 uneven blocks (the plan in global memory)", uneven(5000, 300000, 5000)});
  c.push_back({"65 uneven blocks, one non-finite", uneven(65, 200000, 66), true});
  return c;
}

// Configurations over the variants, scopes, splits, radius kinds, clipping and the two stop switches;
// constraints relative to sqrt(rr * ff) so that both feasible and infeasible steps occur.
std::vector<K::HamuConfig> configs(const std::vector<double>& stats) {
  double rr = 0, ff = 0, min_reach = 1e300, max_tiny = 0;
  const int count = int(stats.size() / 3);
  for (int i = 0; i < count; ++i) {
    rr += stats[size_t(3 * i)];
    ff += stats[size_t(3 * i + 1)];
    const double reach = std::sqrt(stats[size_t(3 * i + 1)]);  // R = 1
    if (i % 4 == 3) max_tiny = std::max(max_tiny, reach);
    else min_reach = std::min(min_reach, reach);
  }
  const double g = std::sqrt(std::max(rr * ff, 1e-300));
  std::vector<K::HamuConfig> v;
  auto add = [&](int variant, int scope, int split, double constraint, double lr) {
    K::HamuConfig c;
    c.variant = variant;
    c.scope = scope;
    c.split = split;
    c.constraint = constraint;
    c.lr = lr;
    v.push_back(c);
    return &v.back();
  };
  add(K::hamu_q, K::scope_layer, K::split_grad_norm, 1e-3 * g, 0.5);
  add(K::hamu_u, K::scope_layer, K::split_softmax_dp, 1e-3 * g, 0.5);
  add(K::hamu_q, K::scope_global, K::split_grad_norm, 0.5 * g, 0.5)->continue_on_infeasible = 1;
  add(K::hamu_u, K::scope_global, K::split_uniform, 1e-4 * g, 0.2);
  add(K::hamu_q, K::scope_layer, K::split_grad_norm, 0.0, 0.1);  // B = 0: plain descent everywhere
  {
    K::HamuConfig* c = add(K::hamu_q, K::scope_layer, K::split_grad_norm, 0.3 * g, 0.5);
    c->clip = 0.5 * std::sqrt(std::min(rr, ff)) + 1e-12;
    c->stop_on_criterion = 1;
  }
  // Every branch at once: fixed R = 1, uniform b between the tiny blocks' reach and everyone else's.
  if (count >= 4 && max_tiny > 0 && min_reach > max_tiny)
    for (int cont : {1, 0}) {
      K::HamuConfig* c = add(K::hamu_q, K::scope_layer, K::split_uniform, std::sqrt(max_tiny * min_reach) * count, 0.1);
      c->fixed_radius = 1;
      c->radius = 1.0;
      c->continue_on_infeasible = cont;
    }
  return v;
}

// Device copies of a layout and its pointer tables.
struct OnGpu {
  K::CudaCtx& ctx = K::cuda_context(0);
  std::vector<void*> owned;
  float *theta = nullptr, *r = nullptr, *f = nullptr;
  float* const* t_theta = nullptr;
  const float* const* t_r = nullptr;
  const float* const* t_f = nullptr;
  const int64_t* sizes = nullptr;
  double *stats = nullptr, *coef = nullptr;
  K::HamuReport* report = nullptr;
  const Layout* L;

  void* upload(const void* src, size_t bytes) {
    void* p = K::cuda_malloc(0, bytes);
    K::cuda_memcpy_h2d(ctx, p, src, bytes);
    owned.push_back(p);
    return p;
  }
  explicit OnGpu(const Layout& layout) : L(&layout) {
    theta = static_cast<float*>(upload(L->theta.data(), L->theta.size() * 4));
    r = static_cast<float*>(upload(L->r.data(), L->r.size() * 4));
    f = static_cast<float*>(upload(L->f.data(), L->f.size() * 4));
    std::vector<float*> pt;
    std::vector<const float*> pr, pf;
    for (size_t i = 0; i < L->sizes.size(); ++i) {
      pt.push_back(theta + L->off_t[i]);
      pr.push_back(r + L->off_r[i]);
      pf.push_back(f + L->off_f[i]);
    }
    t_theta = static_cast<float* const*>(upload(pt.data(), pt.size() * sizeof(void*)));
    t_r = static_cast<const float* const*>(upload(pr.data(), pr.size() * sizeof(void*)));
    t_f = static_cast<const float* const*>(upload(pf.data(), pf.size() * sizeof(void*)));
    sizes = static_cast<const int64_t*>(upload(L->sizes.data(), L->sizes.size() * 8));
    const size_t count = L->sizes.size();
    stats = static_cast<double*>(K::cuda_malloc(0, 3 * count * 8));
    coef = static_cast<double*>(K::cuda_malloc(0, 2 * count * 8));
    report = static_cast<K::HamuReport*>(K::cuda_malloc(0, sizeof(K::HamuReport)));
    owned.insert(owned.end(), {stats, coef, report});
  }
  ~OnGpu() {
    K::cuda_synchronize(ctx);
    for (void* p : owned) K::cuda_free(0, p);
  }
  void reset_theta() { K::cuda_memcpy_h2d(ctx, theta, L->theta.data(), L->theta.size() * 4); }
  template <class V> std::vector<V> get(const V* p, size_t n) {
    std::vector<V> out(n);
    K::cuda_memcpy_d2h(ctx, out.data(), p, n * sizeof(V));
    return out;
  }
  K::HamuReport get_report() {
    K::HamuReport rep;
    K::cuda_memcpy_d2h(ctx, &rep, report, sizeof rep);
    return rep;
  }
};

// Everything one step produced, host side.
struct Outcome {
  std::vector<double> stats, coef;
  K::HamuReport report;
  std::vector<float> theta;
};

Outcome run_gpu(OnGpu& g, const K::HamuConfig& cfg, bool single) {
  const int count = int(g.L->sizes.size());
  int64_t total = 0;
  for (int64_t n : g.L->sizes) total += n;
  g.reset_theta();
  K::cuda_memcpy_h2d(g.ctx, g.stats, std::vector<double>(size_t(3 * count), -7.0).data(), size_t(3 * count) * 8);
  if (single) {
    REQUIRE(K::hamu_fused_step(g.ctx, cfg, count, g.t_theta, g.t_r, g.t_f, g.sizes, total, g.stats, g.coef, g.report));
  } else {
    K::hamu_block_stats(g.ctx, count, g.t_r, g.t_f, g.sizes, g.stats);
    K::hamu_coefficients(g.ctx, cfg, count, g.stats, g.coef, g.report);
    K::hamu_apply(g.ctx, count, g.t_theta, g.t_r, g.t_f, g.sizes, g.coef);
  }
  Outcome o;
  o.stats = g.get(g.stats, size_t(3 * count));
  o.coef = g.get(g.coef, size_t(2 * count));
  o.report = g.get_report();
  o.theta = g.get(g.theta, g.L->theta.size());
  return o;
}

Outcome run_cpu(const Layout& L, const K::HamuConfig& cfg) {
  const int count = int(L.sizes.size());
  Outcome o;
  o.theta = L.theta;
  std::vector<float*> pt;
  std::vector<const float*> pr, pf;
  for (int i = 0; i < count; ++i) {
    pt.push_back(o.theta.data() + L.off_t[size_t(i)]);
    pr.push_back(L.r.data() + L.off_r[size_t(i)]);
    pf.push_back(L.f.data() + L.off_f[size_t(i)]);
  }
  o.stats.resize(size_t(3 * count));
  o.coef.resize(size_t(2 * count));
  K::hamu_block_stats(K::CpuCtx{}, count, pr.data(), pf.data(), L.sizes.data(), o.stats.data());
  K::hamu_coefficients(K::CpuCtx{}, cfg, count, o.stats.data(), o.coef.data(), &o.report);
  K::hamu_apply(K::CpuCtx{}, count, pt.data(), pr.data(), pf.data(), L.sizes.data(), o.coef.data());
  return o;
}

bool same_bytes(const K::HamuReport& a, const K::HamuReport& b) { return std::memcmp(&a, &b, sizeof a) == 0; }
// Bitwise (== would call a NaN statistic different from itself).
template <class V> bool same_bytes(const std::vector<V>& a, const std::vector<V>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(V)) == 0;
}

// GPU against the CPU with the kernel-case tolerances (tests/backend_kernel_cases.cpp): statistics to 1e-12 of
// the sum of |terms|, coefficients 1e-6, report integers equal and doubles 1e-8, the step 1e-5 (norm-wise).
void check_against_cpu(const Layout& L, const K::HamuConfig& cfg, const Outcome& g, const Outcome& c) {
  const int count = int(L.sizes.size());
  for (int i = 0; i < count; ++i) {
    double s_rr = 0, s_ff = 0, s_rf = 0;
    for (int64_t j = 0; j < L.sizes[size_t(i)]; ++j) {
      const double a = L.r[size_t(L.off_r[size_t(i)] + j)], b = L.f[size_t(L.off_f[size_t(i)] + j)];
      s_rr += a * a;
      s_ff += b * b;
      s_rf += std::fabs(a * b);
    }
    const double scale[3] = {s_rr, s_ff, s_rf};
    for (int k = 0; k < 3; ++k) {
      const double x = g.stats[size_t(3 * i + k)], y = c.stats[size_t(3 * i + k)];
      if (std::isfinite(y)) CHECK(std::fabs(x - y) <= 1e-12 * scale[k] + 1e-300);
      else CHECK(std::isfinite(x) == std::isfinite(y));
    }
    for (int k = 0; k < 2; ++k) {
      const double x = g.coef[size_t(2 * i + k)], y = c.coef[size_t(2 * i + k)];
      CHECK(std::fabs(x - y) <= 1e-6 * std::fabs(y) + 1e-300);
    }
  }
  const K::HamuReport& a = g.report;
  const K::HamuReport& b = c.report;
  CHECK(a.n_direct == b.n_direct);
  CHECK(a.n_rectified == b.n_rectified);
  CHECK(a.n_colinear == b.n_colinear);
  CHECK(a.n_infeasible == b.n_infeasible);
  CHECK(a.n_collateral == b.n_collateral);
  CHECK(a.n_blocks == b.n_blocks);
  CHECK(a.nonfinite == b.nonfinite);
  CHECK(a.criterion_met == b.criterion_met);
  CHECK(a.applied == b.applied);
  if (!b.nonfinite)
    for (auto [x, y] : {std::pair{a.kappa, b.kappa}, {a.kappa1, b.kappa1}, {a.kappa2, b.kappa2},
                        {a.retain_norm, b.retain_norm}, {a.forget_norm, b.forget_norm}, {a.retain_scale, b.retain_scale},
                        {a.forget_scale, b.forget_scale}, {a.stopping_margin, b.stopping_margin},
                        {a.feasibility_margin, b.feasibility_margin}}) {
      CAPTURE(x);
      CAPTURE(y);
      // Sums over blocks in another order: 1e-8 relative, with a floor where a sum cancels (the margins).
      CHECK(std::fabs(x - y) <= 1e-8 * std::fabs(y) + 1e-13 * (1 + b.retain_norm * b.forget_norm + cfg.constraint));
    }
  // The step theta moved by (theta itself is ~1e3 times larger).
  double e = 0, n = 0;
  for (size_t i = 0; i < L.theta.size(); ++i) {
    const double sg = double(g.theta[i]) - L.theta[i], sc = double(c.theta[i]) - L.theta[i];
    e += (sg - sc) * (sg - sc);
    n += sc * sc;
  }
  CHECK(std::sqrt(e) <= 1e-5 * std::sqrt(n) + 1e-30);
}

}  // namespace

TEST_CASE("cuda: the single-launch HAMU step equals the three launches to the bit and the CPU") {
  if (!have_gpu()) return;
  bool branches_seen[4] = {false, false, false, false};
  uint32_t seed = 1200;
  for (const Case& cs : cases()) {
    CAPTURE(cs.name);
    Layout L = make_layout(cs.sizes, ++seed);
    if (cs.nonfinite) {
      L.r[size_t(L.off_r[7] + L.sizes[7] / 2)] = std::nanf("");
      L.f[size_t(L.off_f[40])] = INFINITY;
    }
    OnGpu g(L);
    std::vector<double> clean_stats = run_cpu(L, K::HamuConfig{}).stats;
    for (double& x : clean_stats)
      if (!std::isfinite(x)) x = 0;
    int ci = 0;
    for (const K::HamuConfig& cfg : configs(clean_stats)) {
      const int config_index = ci++;  // CAPTURE evaluates lazily: no side effects inside it
      CAPTURE(config_index);
      CAPTURE(cfg.variant);
      CAPTURE(cfg.scope);
      CAPTURE(cfg.split);
      const Outcome one = run_gpu(g, cfg, true), three = run_gpu(g, cfg, false), cpu = run_cpu(L, cfg);
      // Bitwise: the same chunk plan, partial order and coefficient function.
      CHECK(same_bytes(one.stats, three.stats));
      CHECK(same_bytes(one.coef, three.coef));
      CHECK(same_bytes(one.report, three.report));
      CHECK(same_bytes(one.theta, three.theta));
      check_against_cpu(L, cfg, one, cpu);
      if (cs.nonfinite) {
        CHECK(one.report.nonfinite == 1);
        CHECK(one.report.applied == 0);
        CHECK(one.theta == L.theta);
      }
      if (cpu.report.n_direct) branches_seen[0] = true;
      if (cpu.report.n_rectified) branches_seen[1] = true;
      if (cpu.report.n_colinear) branches_seen[2] = true;
      if (cpu.report.n_infeasible) branches_seen[3] = true;
    }
    // The same launch again gives the same bits (no state left behind by the previous one).
    const K::HamuConfig cfg = configs(clean_stats).front();
    const Outcome a = run_gpu(g, cfg, true), b = run_gpu(g, cfg, true);
    CHECK(same_bytes(a.stats, b.stats));
    CHECK(same_bytes(a.theta, b.theta));
  }
  for (bool s : branches_seen) CHECK(s);
}

TEST_CASE("cuda: FusedUpdate runs small HAMU steps as one launch, identical to three, and captures it in a graph") {
  if (!have_gpu()) return;
  const Layout L = make_layout(uneven(65, 1000000, 77), 1301);
  OnGpu a(L), b(L);
  auto blocks = [&](OnGpu& g) {
    std::vector<ExternalBlock> v;
    for (size_t i = 0; i < L.sizes.size(); ++i)
      v.push_back({g.theta + L.off_t[i], g.r + L.off_r[i], g.f + L.off_f[i], L.sizes[i]});
    return v;
  };
  const Device gpu{Device::cuda, 0};
  FusedUpdate one(blocks(a), gpu, DType::f32), three(blocks(b), gpu, DType::f32);
  one.set_single_launch_limit(INT64_MAX);
  three.set_single_launch_limit(0);
  CHECK(one.single_launch_chosen());
  CHECK_FALSE(three.single_launch_chosen());
  K::HamuConfig cfg;
  cfg.lr = 0.3;
  cfg.constraint = 1e-6;
  for (int step = 0; step < 2; ++step) {
    CAPTURE(step);
    one.compute_stats();
    three.compute_stats();
    const K::HamuReport ra = one.hamu_step(cfg), rb = three.hamu_step(cfg);
    CHECK(one.single_launch_used());
    CHECK_FALSE(three.single_launch_used());
    CHECK(same_bytes(ra, rb));
    CHECK(same_bytes(one.stats_host(), three.stats_host()));
    CHECK(same_bytes(one.coef_host(), three.coef_host()));
    CHECK(same_bytes(a.get(a.theta, L.theta.size()), b.get(b.theta, L.theta.size())));
  }
  // Owed statistics are run by their first reader (a baseline's stats_host), not lost.
  one.compute_stats();
  three.compute_stats();
  CHECK(same_bytes(one.stats_host(), three.stats_host()));
  // A graph of compute_stats + hamu_step_async (after the steps above: scratch exists) replays to the ordinary
  // steps' parameters.
  auto* pinned = static_cast<K::HamuReport*>(K::cuda_host_alloc_pinned(sizeof(K::HamuReport)));
  std::string why;
  K::cuda_graph_begin(0);
  try {
    one.compute_stats();
    one.hamu_step_async(cfg, pinned);
  } catch (...) {
    K::cuda_graph_abort(0);
    K::cuda_host_free_pinned(pinned);
    throw;
  }
  void* graph = K::cuda_graph_end(0, &why);
  INFO("capture: " << why);
  REQUIRE(graph != nullptr);
  CHECK(one.single_launch_used());
  // A multi-tensor pass over a much larger table after the capture grows the device's multi-tensor scratch
  // (partials and plan): the graph still holds the old buffers' addresses, so they must stay allocated (a
  // freed buffer made the replays below write into memory the driver had taken back or handed out again).
  {
    const int big = 60000;  // 3 * (32768 + 60001) partials: more than any earlier table in this binary
    const std::vector<const float*> ptrs(size_t(big), a.r + L.off_r[0]);
    const std::vector<int64_t> ones(size_t(big), 1);
    auto* dp = static_cast<const float* const*>(a.upload(ptrs.data(), ptrs.size() * sizeof(void*)));
    auto* ds = static_cast<const int64_t*>(a.upload(ones.data(), ones.size() * 8));
    auto* sq = static_cast<float*>(K::cuda_malloc(0, size_t(big) * 4));
    a.owned.push_back(sq);
    K::multi_sum_squares(a.ctx, big, dp, ds, sq);
    const float r0 = L.r[size_t(L.off_r[0])];
    const std::vector<float> got = a.get(sq, size_t(big));
    CHECK(got.front() == r0 * r0);
    CHECK(got.back() == r0 * r0);
  }
  for (int rep = 0; rep < 2; ++rep) {
    K::cuda_graph_launch(0, graph);
    three.compute_stats();
    three.hamu_step(cfg);
  }
  K::cuda_synchronize(a.ctx);
  CHECK(pinned->n_blocks == 65);
  CHECK(same_bytes(a.get(a.theta, L.theta.size()), b.get(b.theta, L.theta.size())));
  K::cuda_graph_destroy(graph);
  K::cuda_host_free_pinned(pinned);
}
#endif
