// kernels/hamu_math.h: the HAMU per-block solver math (HAMU.md §3-4), host and device.
//
// One fused HAMU step is: (1) hamu_block_stats gives, per block l, <r,r>, <f,f>, <r,f> of the raw
// retain gradient r and forget gradient f; (2) hamu_coefficients (hamu_solve_step here, run on the
// host by the CPU backend and by one small kernel on CUDA) clips both gradients (by scaling the
// statistics) and derives per-block coefficients; (3) hamu_apply does
// theta_l += coef_r[l] * r_l + coef_f[l] * f_l. The solver works on an objective gradient a and a
// constraint gradient c: HAMU-Q uses (a, c) = (r, f), HAMU-U uses (a, c) = (-f, -r). Every branch's
// step is alpha*c + beta*a, which maps back onto (r, f) without materialising a or c.
#pragma once
#include <math.h>
#include <cstdint>

#if defined(__CUDACC__)
#define HAMU_HD __host__ __device__
#else
#define HAMU_HD
#endif

namespace hamu::kernels {

enum HamuVariant : int32_t { hamu_q = 0, hamu_u = 1 };
enum HamuScope : int32_t { scope_layer = 0, scope_global = 1 };
enum HamuSplit : int32_t { split_grad_norm = 0, split_uniform = 1, split_softmax_dp = 2 };
enum HamuBranch : int32_t {
  branch_direct = 0,
  branch_rectified = 1,
  branch_colinear = 2,
  branch_infeasible = 3,
  branch_zero_constraint = 4,  // ||c|| ~ 0 and B ~ 0: a plain descent step (counted as direct)
};

struct HamuConfig {
  int32_t variant = hamu_q;
  int32_t scope = scope_layer;
  int32_t split = split_grad_norm;
  int32_t fixed_radius = 0;          // 0: R_l = lr * ||a_l||; 1: R_l = radius
  double constraint = 0.0;           // B (already ratio * lr)
  double lr = 1e-4;
  double radius = 0.0;
  int32_t continue_on_infeasible = 0;
  int32_t stop_on_criterion = 0;
  // Clip each gradient to total norm <= clip before solving (HAMU.md §1; 0 = no clipping). Folded
  // into the coefficients: a clipped gradient is s*g, so its statistics scale by s^2 (or s_r*s_f) and
  // its coefficient by s, with no extra pass over memory.
  double clip = 0.0;
};

// What one step did; small and POD so the CUDA backend can copy it back asynchronously.
struct HamuReport {
  double kappa = 0;              // sum_l <a_l, c_l> = <g_r, g_f> after clipping (HAMU.md §2)
  double kappa1 = 0;             // sum of per-block direct thresholds (global scope: the global one)
  double kappa2 = 0;             // sum of per-block kappa_2 thresholds
  double retain_norm = 0;        // ||g_r|| (global, before clipping)
  double forget_norm = 0;        // ||g_f|| (global, before clipping)
  double retain_scale = 1;       // clip factors applied to g_r and g_f
  double forget_scale = 1;
  double angle_deg = 0;          // angle between g_r and g_f
  double feasibility_margin = 0; // 1 - max_l B_l / (R_l ||c_l||); < 0 means infeasible
  double stopping_margin = 0;    // sum_l capacity_l - B; < 0 means the stopping criterion is met
  int32_t n_direct = 0, n_rectified = 0, n_colinear = 0, n_infeasible = 0;
  int32_t n_collateral = 0;      // blocks with kappa_l > kappa2_l: collateral forgetting unavoidable there
  int32_t n_blocks = 0;
  int32_t nonfinite = 0;         // a statistic was NaN/Inf: no step
  int32_t criterion_met = 0;
  int32_t applied = 0;           // 1 if the step moved the parameters
};

struct HamuBlockSolution {
  int32_t branch = branch_direct;
  double alpha = 0;  // coefficient on c
  double beta = 0;   // coefficient on a
};

constexpr double hamu_eps = 1e-12;

// NaN and Inf test that needs no <cmath> overload set on either side of nvcc.
HAMU_HD inline bool hamu_finite(double x) { return x == x && x - x == 0.0; }

// Solve min <a,D> s.t. <c,D> >= b, ||D|| <= radius, from aa = ||a||^2, cc = ||c||^2, d = <a,c>.
HAMU_HD inline HamuBlockSolution hamu_solve_block(double aa, double cc, double d, double b, double radius,
                                                  bool continue_on_infeasible) {
  HamuBlockSolution s;
  const double na = ::sqrt(aa);
  const double inv_na = 1.0 / (na > hamu_eps ? na : hamu_eps);
  if (cc < hamu_eps) {
    if (b <= hamu_eps) {
      s.branch = branch_zero_constraint;
      s.beta = -radius * inv_na;
    } else {
      s.branch = branch_infeasible;  // no forget gradient: no step can gain b; continuing moves nothing
    }
    return s;
  }
  const double disc = radius * radius - b * b / cc;
  if (disc < 0) {
    s.branch = branch_infeasible;
    if (continue_on_infeasible) s.alpha = b / cc;  // ascent only
    return s;
  }
  const double r_safe = radius > hamu_eps ? radius : hamu_eps;
  const double kappa1 = -b * (na > hamu_eps ? na : hamu_eps) / r_safe;
  if (d <= kappa1) {
    s.branch = branch_direct;
    s.beta = -radius * inv_na;
    return s;
  }
  // ||a_perp||^2 = ||a||^2 - d^2/||c||^2 (a_perp = a - (d/cc) c), clamped against rounding.
  const double perp2 = aa - d * d / cc;
  const double nperp = perp2 > 0 ? ::sqrt(perp2) : 0.0;
  // Relative test too: statistics of float gradients carry ~1e-7 relative rounding, which leaves a
  // spurious perpendicular part of ~3e-4 ||a|| for exactly colinear a and c (e.g. one-element blocks).
  if (nperp < hamu_eps || perp2 <= 1e-6 * aa) {
    s.branch = branch_colinear;
    s.alpha = b / cc;
    return s;
  }
  const double step = b <= hamu_eps ? radius : ::sqrt(disc);
  // D = (b/cc) c - step * (a - (d/cc) c)/nperp
  s.branch = branch_rectified;
  s.beta = -step / nperp;
  s.alpha = b / cc + step * d / (cc * nperp);
  return s;
}

// The effective (a, c) statistics of one block from the (r, f) statistics.
HAMU_HD inline void hamu_effective(int32_t variant, const double* st, double& aa, double& cc, double& d) {
  if (variant == hamu_q) { aa = st[0]; cc = st[1]; }
  else { aa = st[1]; cc = st[0]; }
  d = st[2];  // <r,f> = <-f,-r>
}

// Map (alpha on c, beta on a) back onto coefficients on (r, f).
HAMU_HD inline void hamu_to_rf(int32_t variant, const HamuBlockSolution& s, double& coef_r, double& coef_f) {
  if (variant == hamu_q) { coef_r = s.beta; coef_f = s.alpha; }
  else { coef_r = -s.alpha; coef_f = -s.beta; }  // a = -f, c = -r
}

// Retain-neutral forget capacity of one block: the largest <c,D> with <a,D> <= 0 and ||D|| <= R.
// One-sided (HAMU.md §3, §7.3): a block with d <= 0 offers its full R*||c||.
HAMU_HD inline double hamu_capacity(double aa, double cc, double d, double radius) {
  if (d <= 0) return radius * ::sqrt(cc);
  const double na = ::sqrt(aa);
  const double cross = aa * cc - d * d;
  return radius * ::sqrt(cross > 0 ? cross : 0.0) / (na > hamu_eps ? na : hamu_eps);
}

// Per-block constraint B_l and radius R_l in layer scope, given the block's effective stats and the
// split normaliser `norm_sum` (grad-norm: sum_k ||a_k|| ||c_k||; softmax-dp: sum_k ::exp(-d_k + shift)).
HAMU_HD inline double hamu_block_constraint(const HamuConfig& cfg, double aa, double cc, double d, int count,
                                            double norm_sum, double shift) {
  const double B = cfg.constraint;
  if (cfg.split == split_uniform) return B / count;
  if (cfg.split == split_softmax_dp) return B * ::exp(-d - shift) / (norm_sum > hamu_eps ? norm_sum : hamu_eps);
  return B * ::sqrt(aa) * ::sqrt(cc) / (norm_sum > hamu_eps ? norm_sum : hamu_eps);
}

HAMU_HD inline double hamu_block_radius(const HamuConfig& cfg, double aa) {
  return cfg.fixed_radius ? cfg.radius : cfg.lr * ::sqrt(aa);
}

// kappa_2 = ||a|| ::sqrt(||c||^2 - b^2/R^2): above it even the best step raises the objective loss.
HAMU_HD inline double hamu_kappa2(double aa, double cc, double b, double radius) {
  const double r_safe = radius > hamu_eps ? radius : hamu_eps;
  const double inner = cc - b * b / (r_safe * r_safe);
  return ::sqrt(aa) * ::sqrt(inner > 0 ? inner : 0.0);
}

// The whole coefficient phase, sequential; the CPU backend calls it directly and the CUDA backend's
// test compares against it. stats: [count][3] (r.r, f.f, r.f); coef: [count][2] (on r, on f).
template <class T>
HAMU_HD inline void hamu_solve_step(const HamuConfig& cfg, int count, const T* stats, T* coef, HamuReport* rep) {
  HamuReport out;
  out.n_blocks = count;
  double rr = 0, ff = 0, rf = 0;
  bool finite = true;
  for (int i = 0; i < count; ++i) {
    const double a = double(stats[3 * i]), b = double(stats[3 * i + 1]), c = double(stats[3 * i + 2]);
    if (!hamu_finite(a) || !hamu_finite(b) || !hamu_finite(c)) finite = false;
    rr += a; ff += b; rf += c;
  }
  out.retain_norm = ::sqrt(rr);
  out.forget_norm = ::sqrt(ff);
  double sr = 1, sf = 1;
  if (cfg.clip > 0) {
    sr = cfg.clip / (out.retain_norm + 1e-6); sr = sr < 1 ? sr : 1;
    sf = cfg.clip / (out.forget_norm + 1e-6); sf = sf < 1 ? sf : 1;
  }
  out.retain_scale = sr;
  out.forget_scale = sf;
  // Statistics of the clipped gradients.
  rr *= sr * sr; ff *= sf * sf; rf *= sr * sf;
  out.kappa = rf;
  const double denom = ::sqrt(rr) * ::sqrt(ff);
  double cosv = denom > hamu_eps ? rf / denom : 0.0;
  cosv = cosv > 1 ? 1 : (cosv < -1 ? -1 : cosv);
  out.angle_deg = ::acos(cosv) * 57.29577951308232;
  for (int i = 0; i < 2 * count; ++i) coef[i] = T(0);
  if (!finite) {
    out.nonfinite = 1;
    *rep = out;
    return;
  }
  const double scale3[3] = {sr * sr, sf * sf, sr * sf};

  double norm_sum = 0, shift = -1e300;
  for (int i = 0; i < count; ++i) {
    double st[3];
    for (int j = 0; j < 3; ++j) st[j] = double(stats[3 * i + j]) * scale3[j];
    double aa, cc, d;
    hamu_effective(cfg.variant, st, aa, cc, d);
    if (cfg.split == split_softmax_dp) shift = (-d > shift) ? -d : shift;
    else norm_sum += ::sqrt(aa) * ::sqrt(cc);
  }
  if (cfg.split == split_softmax_dp) {
    for (int i = 0; i < count; ++i) {
      double st[3];
      for (int j = 0; j < 3; ++j) st[j] = double(stats[3 * i + j]) * scale3[j];
      double aa, cc, d;
      hamu_effective(cfg.variant, st, aa, cc, d);
      norm_sum += ::exp(-d - shift);
    }
  }

  double worst_ratio = 0, capacity = 0;
  if (cfg.scope == scope_global) {
    double st[3] = {rr, ff, rf};
    double aa, cc, d;
    hamu_effective(cfg.variant, st, aa, cc, d);
    const double R = hamu_block_radius(cfg, aa);
    const double B = cfg.constraint;
    HamuBlockSolution s = hamu_solve_block(aa, cc, d, B, R, cfg.continue_on_infeasible);
    worst_ratio = B / ((R * ::sqrt(cc)) > hamu_eps ? R * ::sqrt(cc) : hamu_eps);
    capacity = hamu_capacity(aa, cc, d, R);
    out.kappa1 = -B * ::sqrt(aa) / (R > hamu_eps ? R : hamu_eps);
    out.kappa2 = hamu_kappa2(aa, cc, B, R);
    out.n_collateral = (d > out.kappa2 && s.branch != branch_infeasible) ? count : 0;
    double cr, cf;
    hamu_to_rf(cfg.variant, s, cr, cf);
    const int b = s.branch == branch_zero_constraint ? branch_direct : s.branch;
    for (int i = 0; i < count; ++i) {
      coef[2 * i] = T(cr * sr);
      coef[2 * i + 1] = T(cf * sf);
      if (b == branch_direct) ++out.n_direct;
      else if (b == branch_rectified) ++out.n_rectified;
      else if (b == branch_colinear) ++out.n_colinear;
      else ++out.n_infeasible;
    }
  } else {
    for (int i = 0; i < count; ++i) {
      double st[3];
      for (int j = 0; j < 3; ++j) st[j] = double(stats[3 * i + j]) * scale3[j];
      double aa, cc, d;
      hamu_effective(cfg.variant, st, aa, cc, d);
      const double R = hamu_block_radius(cfg, aa);
      const double b = hamu_block_constraint(cfg, aa, cc, d, count, norm_sum, shift);
      HamuBlockSolution s = hamu_solve_block(aa, cc, d, b, R, cfg.continue_on_infeasible);
      const double reach = R * ::sqrt(cc);
      const double ratio = b / (reach > hamu_eps ? reach : hamu_eps);
      worst_ratio = ratio > worst_ratio ? ratio : worst_ratio;
      capacity += hamu_capacity(aa, cc, d, R);
      out.kappa1 += -b * ::sqrt(aa) / (R > hamu_eps ? R : hamu_eps);
      const double k2 = hamu_kappa2(aa, cc, b, R);
      out.kappa2 += k2;
      if (d > k2 && s.branch != branch_infeasible) ++out.n_collateral;
      double cr, cf;
      hamu_to_rf(cfg.variant, s, cr, cf);
      coef[2 * i] = T(cr * sr);
      coef[2 * i + 1] = T(cf * sf);
      if (s.branch == branch_direct || s.branch == branch_zero_constraint) ++out.n_direct;
      else if (s.branch == branch_rectified) ++out.n_rectified;
      else if (s.branch == branch_colinear) ++out.n_colinear;
      else ++out.n_infeasible;
    }
  }
  out.feasibility_margin = 1.0 - worst_ratio;
  out.stopping_margin = capacity - cfg.constraint;
  out.criterion_met = out.stopping_margin < 0 ? 1 : 0;
  const bool blocked = (out.n_infeasible > 0 && !cfg.continue_on_infeasible) ||
                       (out.criterion_met && cfg.stop_on_criterion);
  if (blocked) {
    for (int i = 0; i < 2 * count; ++i) coef[i] = T(0);
  } else {
    out.applied = 1;
  }
  *rep = out;
}

}  // namespace hamu::kernels
