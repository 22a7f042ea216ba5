// kernels/cuda/hamu_coef.cuh: the coefficient phase of the fused HAMU update as one CTA's device function,
// shared by the coefficient kernel (hamu.cu) and the single-launch step (reduce_mt.cu), so both give the same
// coefficients and report to the bit.
//
// The per-block math is the shared HAMU_HD code of kernels/hamu_math.h (hamu_solve_block, hamu_capacity,
// ...), so every branch decision is the CPU's; only the sums over blocks are formed in a different (tree,
// fixed, deterministic) order, which moves them by a few ulps. That order depends on the CTA's width, so
// both callers run it with kHamuCtaThreads threads. A single thread running hamu_solve_step would be
// bit-closer but costs ~0.1-0.3 ms at 448 blocks (double sqrt/div are long dependent sequences).
#pragma once
#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels::cuda_detail {

// The CTA width of every caller (the single-launch kernel's is the multi-tensor passes' 256).
constexpr int kHamuCtaThreads = 256;

// N block sums in one pass: two barriers instead of 2N (each barrier is a good part of this phase's time).
// Every value goes through block_sum's tree (warp sums, then the warp sums in warp order), so the bits are
// block_sum's. sh: 32 * N entries.
template <int N, class T> __device__ __forceinline__ void block_sums(T (&v)[N], T* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int k = 0; k < N; ++k) v[k] = warp_sum(v[k]);
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < N; ++k) sh[32 * k + warp] = v[k];
  __syncthreads();
#pragma unroll
  for (int k = 0; k < N; ++k) v[k] = warp_sum(lane < nwarp ? sh[32 * k + lane] : T(0));
}

// Every thread of one CTA of kHamuCtaThreads threads calls it (it has barriers); returns in every thread.
// stats are read through L2 (__ldcg): the single-launch kernel wrote them in the same launch, where the
// read-only path may not be used. __noinline__: one compiled body per file whatever the caller inlines
// around it, so the two callers' floating-point code is the same.
static __device__ __noinline__ void hamu_coefficients_cta(const HamuConfig& cfg, int count, const double* stats,
                                                          double* coef, HamuReport* report) {
  __shared__ double shd[32 * 3];
  __shared__ int shi[32 * 5];
  // Raw storage: __shared__ variables take no initialisers, and these structs have default member ones.
  __shared__ alignas(HamuReport) unsigned char sh_rep_raw[sizeof(HamuReport)];
  __shared__ alignas(HamuBlockSolution) unsigned char sh_global_raw[sizeof(HamuBlockSolution)];
  HamuReport& sh_rep = *reinterpret_cast<HamuReport*>(sh_rep_raw);
  HamuBlockSolution& sh_global = *reinterpret_cast<HamuBlockSolution*>(sh_global_raw);
  __shared__ double sh_global_d, sh_global_k2;
  __shared__ int sh_blocked;
  const int tid = threadIdx.x, T = blockDim.x;

  // Phase 1: global sums and finiteness of the raw statistics, then the clip factors (folded into the
  // statistics and the coefficients, HamuConfig::clip), then the split normaliser on clipped values.
  double rr = 0, ff = 0, rf = 0, norm_sum = 0, shift = -1e300;
  int finite = 1;
  for (int i = tid; i < count; i += T) {
    const double st[3] = {__ldcg(stats + 3 * i), __ldcg(stats + 3 * i + 1), __ldcg(stats + 3 * i + 2)};
    if (!hamu_finite(st[0]) || !hamu_finite(st[1]) || !hamu_finite(st[2])) finite = 0;
    rr += st[0];
    ff += st[1];
    rf += st[2];
  }
  {
    double sums[3] = {rr, ff, rf};
    block_sums(sums, shd);
    rr = sums[0];
    ff = sums[1];
    rf = sums[2];
  }
  finite = block_sum(finite ? 0 : 1, shi) == 0;
  double sr = 1, sf = 1;
  if (cfg.clip > 0) {
    sr = cfg.clip / (sqrt(rr) + 1e-6);
    sr = sr < 1 ? sr : 1;
    sf = cfg.clip / (sqrt(ff) + 1e-6);
    sf = sf < 1 ? sf : 1;
  }
  const double scale3[3] = {sr * sr, sf * sf, sr * sf};
  for (int i = tid; i < count; i += T) {
    double st[3];
    for (int j = 0; j < 3; ++j) st[j] = __ldcg(stats + 3 * i + j) * scale3[j];
    double aa, cc, d;
    hamu_effective(cfg.variant, st, aa, cc, d);
    if (cfg.split == split_softmax_dp) shift = (-d > shift) ? -d : shift;
    else norm_sum += sqrt(aa) * sqrt(cc);
  }
  if (cfg.split == split_softmax_dp) {
    shift = block_max(shift, shd, -1e300);
    double e = 0;
    for (int i = tid; i < count; i += T) {
      double st[3];
      for (int j = 0; j < 3; ++j) st[j] = __ldcg(stats + 3 * i + j) * scale3[j];
      double aa, cc, d;
      hamu_effective(cfg.variant, st, aa, cc, d);
      e += exp(-d - shift);
    }
    norm_sum = block_sum(e, shd);
  } else {
    norm_sum = block_sum(norm_sum, shd);
  }

  if (tid == 0) {
    HamuReport out;
    out.n_blocks = count;
    out.retain_norm = sqrt(rr);
    out.forget_norm = sqrt(ff);
    out.retain_scale = sr;
    out.forget_scale = sf;
    out.kappa = rf * sr * sf;
    const double denom = sqrt(rr * sr * sr) * sqrt(ff * sf * sf);
    double cosv = denom > hamu_eps ? out.kappa / denom : 0.0;
    cosv = cosv > 1 ? 1 : (cosv < -1 ? -1 : cosv);
    out.angle_deg = acos(cosv) * 57.29577951308232;
    if (!finite) out.nonfinite = 1;
    sh_rep = out;
  }
  __syncthreads();
  if (!finite) {
    for (int i = tid; i < 2 * count; i += T) coef[i] = 0.0;
    if (tid == 0) *report = sh_rep;
    return;
  }

  // Phase 2: per-block solutions.
  double worst_ratio = 0, capacity = 0, kappa1 = 0, kappa2 = 0;
  int n_dir = 0, n_rect = 0, n_col = 0, n_inf = 0, n_coll = 0;
  if (cfg.scope == scope_global) {
    if (tid == 0) {
      double st[3] = {rr * scale3[0], ff * scale3[1], rf * scale3[2]};
      double aa, cc, d;
      hamu_effective(cfg.variant, st, aa, cc, d);
      const double R = hamu_block_radius(cfg, aa);
      const double B = cfg.constraint;
      const HamuBlockSolution s = hamu_solve_block(aa, cc, d, B, R, cfg.continue_on_infeasible);
      sh_global = s;
      worst_ratio = B / ((R * sqrt(cc)) > hamu_eps ? R * sqrt(cc) : hamu_eps);
      capacity = hamu_capacity(aa, cc, d, R);
      kappa1 = -B * sqrt(aa) / (R > hamu_eps ? R : hamu_eps);
      kappa2 = hamu_kappa2(aa, cc, B, R);
      sh_global_d = d;
      sh_global_k2 = kappa2;
    }
    __syncthreads();
    const HamuBlockSolution s = sh_global;
    double cr, cf;
    hamu_to_rf(cfg.variant, s, cr, cf);
    for (int i = tid; i < count; i += T) {
      coef[2 * i] = cr * sr;
      coef[2 * i + 1] = cf * sf;
    }
    if (tid == 0) {
      const int b = s.branch == branch_zero_constraint ? branch_direct : s.branch;
      if (b == branch_direct) n_dir = count;
      else if (b == branch_rectified) n_rect = count;
      else if (b == branch_colinear) n_col = count;
      else n_inf = count;
      n_coll = (sh_global_d > sh_global_k2 && s.branch != branch_infeasible) ? count : 0;
    }
    // Only thread 0 holds non-zero values; the reductions below carry them.
  } else {
    for (int i = tid; i < count; i += T) {
      double st[3];
      for (int j = 0; j < 3; ++j) st[j] = __ldcg(stats + 3 * i + j) * scale3[j];
      double aa, cc, d;
      hamu_effective(cfg.variant, st, aa, cc, d);
      const double R = hamu_block_radius(cfg, aa);
      const double b = hamu_block_constraint(cfg, aa, cc, d, count, norm_sum, shift);
      const HamuBlockSolution s = hamu_solve_block(aa, cc, d, b, R, cfg.continue_on_infeasible);
      const double reach = R * sqrt(cc);
      const double ratio = b / (reach > hamu_eps ? reach : hamu_eps);
      worst_ratio = ratio > worst_ratio ? ratio : worst_ratio;
      capacity += hamu_capacity(aa, cc, d, R);
      kappa1 += -b * sqrt(aa) / (R > hamu_eps ? R : hamu_eps);
      const double k2 = hamu_kappa2(aa, cc, b, R);
      kappa2 += k2;
      if (d > k2 && s.branch != branch_infeasible) ++n_coll;
      double cr, cf;
      hamu_to_rf(cfg.variant, s, cr, cf);
      coef[2 * i] = cr * sr;
      coef[2 * i + 1] = cf * sf;
      if (s.branch == branch_direct || s.branch == branch_zero_constraint) ++n_dir;
      else if (s.branch == branch_rectified) ++n_rect;
      else if (s.branch == branch_colinear) ++n_col;
      else ++n_inf;
    }
  }
  worst_ratio = block_max(worst_ratio, shd, 0.0);
  double sums[3] = {capacity, kappa1, kappa2};
  block_sums(sums, shd);
  capacity = sums[0];
  kappa1 = sums[1];
  kappa2 = sums[2];
  int counts[5] = {n_dir, n_rect, n_col, n_inf, n_coll};
  block_sums(counts, shi);
  n_dir = counts[0];
  n_rect = counts[1];
  n_col = counts[2];
  n_inf = counts[3];
  n_coll = counts[4];

  if (tid == 0) {
    HamuReport out = sh_rep;
    out.kappa1 = kappa1;
    out.kappa2 = kappa2;
    out.n_direct = n_dir;
    out.n_rectified = n_rect;
    out.n_colinear = n_col;
    out.n_infeasible = n_inf;
    out.n_collateral = n_coll;
    out.feasibility_margin = 1.0 - worst_ratio;
    out.stopping_margin = capacity - cfg.constraint;
    out.criterion_met = out.stopping_margin < 0 ? 1 : 0;
    const bool blocked = (out.n_infeasible > 0 && !cfg.continue_on_infeasible) ||
                         (out.criterion_met && cfg.stop_on_criterion);
    out.applied = blocked ? 0 : 1;
    sh_blocked = blocked ? 1 : 0;
    *report = out;
  }
  __syncthreads();
  if (sh_blocked)
    for (int i = tid; i < 2 * count; i += T) coef[i] = 0.0;
}

}  // namespace hamu::kernels::cuda_detail
