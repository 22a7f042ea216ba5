// kernels/cuda/reduce_mt.cu: multi-tensor kernels over tables of device pointers: the two memory passes of
// the fused HAMU update (hamu_block_stats, hamu_apply), multi_sum_squares and multi_scale.
//
// Design (one launch per pass, no host synchronisation, no per-call allocation):
// - The tensors are cut into chunks of `chunk` elements (>= kMtMinChunk; larger when the total is huge so
//   that there are at most kMtMaxChunks full chunks). Every CTA of a persistent grid first builds the
//   chunk prefix of the table in shared memory (prefix[b] = first chunk of tensor b) from the device-side
//   sizes - a few hundred bytes read from L2 - so nothing is cached on the host and a table reused at the
//   same address with other contents can never be served a stale map.
// - CTAs take chunks from an atomic work counter (dynamic balance: tensors of 16 elements and of millions
//   of elements mix freely) and stream them with 16-byte loads where the pointers allow.
// - Reductions write one double partial per chunk (so the result does not depend on which CTA took which
//   chunk: deterministic); the last CTA to finish adds each tensor's partials in chunk order and resets the
//   counters for the next launch on the stream.
// - The whole HAMU step also runs as ONE cooperative launch (hamu_fused_step, at the end of this file) where
//   the three launches' gaps and tails outweigh the memory traffic (~1M parameters): the same chunk plan,
//   chunk operations, partial order and coefficient function, so the same bits.
#include <cooperative_groups.h>

#include <cstdlib>
#include <mutex>
#include <stdexcept>

#include "kernels/cuda/hamu_coef.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

constexpr int kMtThreads = 256;

// Exclusive scan over the CTA (blockDim.x == kMtThreads); returns this thread's offset, *total the sum.
__device__ __forceinline__ int64_t block_exclusive_scan(int64_t v, int64_t* sh, int64_t* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = blockDim.x >> 5;
  int64_t x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int64_t y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  __syncthreads();
  if (lane == 31) sh[warp] = x;
  __syncthreads();
  int64_t warp_off = 0, all = 0;
  for (int w = 0; w < nwarp; ++w) {
    const int64_t t = sh[w];
    if (w < warp) warp_off += t;
    all += t;
  }
  *total = all;
  return warp_off + x - v;
}

// The chunk size for `total` elements (mt_plan below says why); the host's single-launch grid uses it too.
__host__ __device__ __forceinline__ int64_t mt_chunk_size(int64_t total, int64_t ctas, int64_t per_cta) {
  int64_t chunk = (total + kMtMaxChunks - 1) / kMtMaxChunks;
  const int64_t want = (total + per_cta * ctas - 1) / (per_cta * ctas);
  if (want > chunk) chunk = want;
  chunk = (chunk + 1023) / 1024 * 1024;
  return chunk < kMtMinChunk ? kMtMinChunk : chunk;
}

// Builds prefix[0..count] (chunk index where each tensor starts) and returns the chunk size. Every thread
// of the CTA calls it; prefix may be shared or global memory.
__device__ int64_t mt_plan(int count, const int64_t* __restrict__ sizes, int64_t* prefix, int64_t* sh, int64_t ctas,
                           int64_t per_cta) {
  // Total elements -> chunk size: about `per_cta` chunks per CTA of the grid (each chunk costs a work-counter
  // round trip and, for reductions, a block reduction, so small chunks starve the memory system; few chunks
  // per CTA leave a tail where some CTAs take one chunk more than others), never more than kMtMaxChunks,
  // never below kMtMinChunk. Default 2 (HAMU_MT_CHUNKS_PER_CTA overrides, for tuning runs).
  int64_t local = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) local += sizes[i];
  int64_t total = 0;
  block_exclusive_scan(local, sh, &total);
  const int64_t chunk = mt_chunk_size(total, ctas, per_cta);
  // Chunks per tensor, scanned over contiguous per-thread runs.
  const int per = (count + blockDim.x - 1) / blockDim.x;
  const int lo = threadIdx.x * per, hi = lo + per < count ? lo + per : count;
  int64_t run = 0;
  for (int i = lo; i < hi; ++i) run += (sizes[i] + chunk - 1) / chunk;
  int64_t all = 0;
  int64_t off = block_exclusive_scan(run, sh, &all);
  for (int i = lo; i < hi; ++i) {
    prefix[i] = off;
    off += (sizes[i] + chunk - 1) / chunk;
  }
  if (threadIdx.x == 0) prefix[count] = all;
  __syncthreads();
  return chunk;
}

// For tables larger than kMtSmemTensors: the plan goes to global scratch once per launch pair.
__global__ void mt_plan_kernel(int count, const int64_t* sizes, int64_t* prefix, int64_t ctas, int64_t per_cta) {
  __shared__ int64_t sh[32];
  const int64_t chunk = mt_plan(count, sizes, prefix, sh, ctas, per_cta);
  if (threadIdx.x == 0) prefix[count + 1] = chunk;
}

// Largest b in [0, count) with prefix[b] <= c (tensors without chunks are skipped by construction).
__device__ __forceinline__ int mt_find(const int64_t* prefix, int count, int64_t c) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (prefix[mid] <= c) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Chunk c of the plan: its tensor b, first element and length.
__device__ __forceinline__ void mt_locate(const int64_t* prefix, int count, const int64_t* sizes, int64_t chunk,
                                          int64_t c, int* b, int64_t* start, int64_t* len) {
  *b = mt_find(prefix, count, c);
  *start = (c - prefix[*b]) * chunk;
  const int64_t n = sizes[*b];
  *len = n - *start < chunk ? n - *start : chunk;
}

// One chunk's NS per-thread sums -> partials[NS * c + k]: warp sums, then the warp sums in warp order (all NS
// in one block reduction: one barrier instead of NS). A fixed tree: the same bits whichever CTA took the
// chunk. sh_red (32 * NS doubles) must be free on entry; warp 0 may still read it on return.
template <int NS>
__device__ __forceinline__ void mt_store_partials(double* acc, double* sh_red, double* partials, int64_t c) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int k = 0; k < NS; ++k) acc[k] = warp_sum(acc[k]);
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < NS; ++k) sh_red[32 * k + warp] = acc[k];
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < NS; ++k) {
      const double t = warp_sum(lane < nwarp ? sh_red[32 * k + lane] : 0.0);
      if (lane == 0) partials[NS * c + k] = t;
    }
  }
}

// Tensor b's result: its chunk partials added in chunk order by one warp (lane-strided, then a warp sum).
// partials come through L2: other CTAs wrote them.
template <int NS, class Out>
__device__ __forceinline__ void mt_sum_partials(int b, const int64_t* prefix, const double* partials, Out* out) {
  const int lane = threadIdx.x & 31;
  double s[NS];
#pragma unroll
  for (int k = 0; k < NS; ++k) s[k] = 0;
  for (int64_t c = prefix[b] + lane; c < prefix[b + 1]; c += 32)
#pragma unroll
    for (int k = 0; k < NS; ++k) s[k] += __ldcg(partials + NS * c + k);
#pragma unroll
  for (int k = 0; k < NS; ++k) s[k] = warp_sum(s[k]);
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < NS; ++k) out[NS * b + k] = Out(s[k]);
}

__device__ __forceinline__ unsigned misalign4(const void* p) {
  return unsigned((reinterpret_cast<uintptr_t>(p) >> 2) & 3);
}

// ---- per-chunk operations (every thread of the CTA calls chunk(); reductions return per-thread sums) ----

// (<r,r>, <f,f>, <r,f>): every product and sum in double (exact products of floats), the statistics
// stored as double (kernels/kernels.h says why f32 statistics are not enough).
struct StatsOp {
  static constexpr int kStats = 3;
  using Out = double;
  const float* const* r;
  const float* const* f;
  __device__ __forceinline__ void chunk(int b, int64_t start, int64_t len, double* acc) const {
    const float* __restrict__ rp = r[b] + start;
    const float* __restrict__ fp = f[b] + start;
    double s0 = 0, s1 = 0, s2 = 0;
    const int tid = threadIdx.x, T = blockDim.x;
    int64_t head = 0, n4 = 0;
    if (misalign4(rp) == misalign4(fp)) {
      head = (4 - misalign4(rp)) & 3;
      if (head > len) head = len;
      n4 = (len - head) >> 2;
    } else {
      head = len;  // no common alignment: all scalar
    }
    const float4* r4 = reinterpret_cast<const float4*>(rp + head);
    const float4* f4 = reinterpret_cast<const float4*>(fp + head);
    // Four independent 16-byte loads per array in flight before the first use.
    for (int64_t v = tid; v < n4; v += 4 * T) {
      float4 ra[4], fa[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int64_t k = v + int64_t(u) * T;
        if (k < n4) {
          ra[u] = __ldg(r4 + k);
          fa[u] = __ldg(f4 + k);
        } else {
          ra[u] = make_float4(0.f, 0.f, 0.f, 0.f);
          fa[u] = ra[u];
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const double r0 = ra[u].x, r1 = ra[u].y, r2 = ra[u].z, r3 = ra[u].w;
        const double f0 = fa[u].x, f1 = fa[u].y, f2 = fa[u].z, f3 = fa[u].w;
        s0 = fma(r0, r0, fma(r1, r1, fma(r2, r2, fma(r3, r3, s0))));
        s1 = fma(f0, f0, fma(f1, f1, fma(f2, f2, fma(f3, f3, s1))));
        s2 = fma(r0, f0, fma(r1, f1, fma(r2, f2, fma(r3, f3, s2))));
      }
    }
    // Scalar head and tail.
    for (int64_t i = tid; i < head; i += T) {
      const double a = rp[i], c = fp[i];
      s0 += a * a;
      s1 += c * c;
      s2 += a * c;
    }
    for (int64_t i = head + 4 * n4 + tid; i < len; i += T) {
      const double a = rp[i], c = fp[i];
      s0 += a * a;
      s1 += c * c;
      s2 += a * c;
    }
    acc[0] = s0;
    acc[1] = s1;
    acc[2] = s2;
  }
};

struct SumSqOp {
  static constexpr int kStats = 1;
  using Out = float;
  const float* const* x;
  __device__ __forceinline__ void chunk(int b, int64_t start, int64_t len, double* acc) const {
    const float* __restrict__ xp = x[b] + start;
    const int tid = threadIdx.x, T = blockDim.x;
    int64_t head = (4 - misalign4(xp)) & 3;
    if (head > len) head = len;
    const int64_t n4 = (len - head) >> 2;
    const float4* x4 = reinterpret_cast<const float4*>(xp + head);
    double s = 0;
    for (int64_t v = tid; v < n4; v += 4 * T) {
      float4 xa[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int64_t k = v + int64_t(u) * T;
        xa[u] = k < n4 ? __ldg(x4 + k) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < 4; ++u)
        s += double(xa[u].x * xa[u].x + xa[u].y * xa[u].y + xa[u].z * xa[u].z + xa[u].w * xa[u].w);
    }
    for (int64_t i = tid; i < head; i += T) s += double(xp[i]) * double(xp[i]);
    for (int64_t i = head + 4 * n4 + tid; i < len; i += T) s += double(xp[i]) * double(xp[i]);
    acc[0] = s;
  }
};

// theta += cr * r + cf * f; a tensor whose two coefficients are both 0 is left untouched (as on the CPU).
struct ApplyOp {
  static constexpr int kStats = 0;
  using Out = float;  // unused
  float* const* theta;
  const float* const* r;
  const float* const* f;
  const double* coef;  // cast to float once per chunk
  __device__ __forceinline__ void chunk(int b, int64_t start, int64_t len, double*) const {
    // Through L2: the single-launch kernel wrote coef in the same launch (no read-only path).
    const float cr = float(__ldcg(coef + 2 * b)), cf = float(__ldcg(coef + 2 * b + 1));
    if (cr == 0.f && cf == 0.f) return;
    float* __restrict__ tp = theta[b] + start;
    const float* __restrict__ rp = r[b] + start;
    const float* __restrict__ fp = f[b] + start;
    const int tid = threadIdx.x, T = blockDim.x;
    int64_t head = len, n4 = 0;
    if (misalign4(tp) == misalign4(rp) && misalign4(tp) == misalign4(fp)) {
      head = (4 - misalign4(tp)) & 3;
      if (head > len) head = len;
      n4 = (len - head) >> 2;
    }
    float4* t4 = reinterpret_cast<float4*>(tp + head);
    const float4* r4 = reinterpret_cast<const float4*>(rp + head);
    const float4* f4 = reinterpret_cast<const float4*>(fp + head);
    for (int64_t v = tid; v < n4; v += 4 * T) {
      float4 ta[4], ra[4], fa[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int64_t k = v + int64_t(u) * T;
        if (k < n4) {
          ta[u] = t4[k];
          ra[u] = __ldg(r4 + k);
          fa[u] = __ldg(f4 + k);
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int64_t k = v + int64_t(u) * T;
        if (k < n4) {
          float4 o;
          o.x = ta[u].x + (cr * ra[u].x + cf * fa[u].x);
          o.y = ta[u].y + (cr * ra[u].y + cf * fa[u].y);
          o.z = ta[u].z + (cr * ra[u].z + cf * fa[u].z);
          o.w = ta[u].w + (cr * ra[u].w + cf * fa[u].w);
          t4[k] = o;
        }
      }
    }
    for (int64_t i = tid; i < head; i += T) tp[i] += cr * rp[i] + cf * fp[i];
    for (int64_t i = head + 4 * n4 + tid; i < len; i += T) tp[i] += cr * rp[i] + cf * fp[i];
  }
};

struct ScaleOp {
  static constexpr int kStats = 0;
  using Out = float;  // unused
  float* const* x;
  const float* scale;
  __device__ __forceinline__ void chunk(int b, int64_t start, int64_t len, double*) const {
    const float s = scale[b];
    float* __restrict__ xp = x[b] + start;
    const int tid = threadIdx.x, T = blockDim.x;
    int64_t head = (4 - misalign4(xp)) & 3;
    if (head > len) head = len;
    const int64_t n4 = (len - head) >> 2;
    float4* x4 = reinterpret_cast<float4*>(xp + head);
    for (int64_t v = tid; v < n4; v += T) {
      float4 a = x4[v];
      a.x *= s;
      a.y *= s;
      a.z *= s;
      a.w *= s;
      x4[v] = a;
    }
    for (int64_t i = tid; i < head; i += T) xp[i] *= s;
    for (int64_t i = head + 4 * n4 + tid; i < len; i += T) xp[i] *= s;
  }
};

// The persistent multi-tensor kernel. gprefix: the plan from mt_plan_kernel, or null to build it here.
template <class Op>
__global__ void __launch_bounds__(kMtThreads) mt_kernel(Op op, int count, const int64_t* __restrict__ sizes,
                                                        const int64_t* gprefix, unsigned* counters, double* partials,
                                                        typename Op::Out* out, int64_t per_cta) {
  extern __shared__ int64_t sh_prefix[];
  __shared__ int64_t sh_tmp[32];
  __shared__ double sh_red[32 * (Op::kStats > 0 ? Op::kStats : 1)];
  __shared__ unsigned sh_c;
  __shared__ bool sh_last;
  constexpr int NS = Op::kStats;

  const int64_t* prefix;
  int64_t chunk;
  if (gprefix) {
    prefix = gprefix;
    chunk = gprefix[count + 1];
  } else {
    chunk = mt_plan(count, sizes, sh_prefix, sh_tmp, gridDim.x, per_cta);
    prefix = sh_prefix;
  }
  const int64_t nchunks = prefix[count];

  for (;;) {
    if (threadIdx.x == 0) sh_c = atomicAdd(&counters[0], 1u);
    __syncthreads();
    const int64_t c = sh_c;
    __syncthreads();  // everyone has read sh_c before thread 0 may overwrite it
    if (c >= nchunks) break;
    int b;
    int64_t start, len;
    mt_locate(prefix, count, sizes, chunk, c, &b, &start, &len);
    double acc[NS > 0 ? NS : 1];
    op.chunk(b, start, len, acc);
    // sh_red is free: the two barriers around the work counter separate this from the previous chunk's reads.
    if constexpr (NS > 0) mt_store_partials<NS>(acc, sh_red, partials, c);
  }

  // Done: the last CTA finalises (reductions) and resets the counters for the next launch.
  if (threadIdx.x == 0) {
    __threadfence();
    sh_last = atomicAdd(&counters[1], 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!sh_last) return;
  __threadfence();
  if constexpr (NS > 0)
    for (int b = threadIdx.x >> 5; b < count; b += blockDim.x >> 5) mt_sum_partials<NS>(b, prefix, partials, out);
  if (threadIdx.x == 0) {
    counters[0] = 0;
    counters[1] = 0;
  }
}

// Tuning knobs read once from the environment (bench runs sweep them; unset: the defaults).
int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  const long long x = std::atoll(v);
  return x < lo || x > hi ? fallback : int64_t(x);
}
int64_t mt_chunks_per_cta() {
  static const int64_t n = env_int("HAMU_MT_CHUNKS_PER_CTA", 2, 1, 64);
  return n;
}

template <class Op> int mt_ctas_per_sm(size_t smem) {
  static int cached = -1;
  if (cached < 0) {
    int n = 0;
    HAMU_CU("multi-tensor occupancy",
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, mt_kernel<Op>, kMtThreads,
                                                          (size_t(kMtSmemTensors) + 1) * sizeof(int64_t)));
    cached = n < 1 ? 1 : (n > 8 ? 8 : n);
    // HAMU_MT_CTAS_PER_SM: fewer resident CTAs (never more than fit: the grid must stay co-resident).
    const int64_t want = env_int("HAMU_MT_CTAS_PER_SM", cached, 1, cached);
    cached = int(want);
  }
  (void)smem;
  return cached;
}

template <class Op> void mt_launch(const CudaCtx& ctx, const char* name, const Op& op, int count,
                                   const int64_t* sizes, typename Op::Out* out) {
  if (count <= 0) return;
  use_device(ctx);
  const MtScratch s = ensure_mt_scratch(ctx, count);  // this stream's
  const int64_t* gprefix = nullptr;
  size_t smem = 0;
  const unsigned grid = unsigned(device_info(ctx.device).sm_count * mt_ctas_per_sm<Op>(smem));
  if (count > kMtSmemTensors) {
    mt_plan_kernel<<<1, kMtThreads, 0, stream_of(ctx)>>>(count, sizes, s.prefix, int64_t(grid), mt_chunks_per_cta());
    launch_check(ctx, "mt_plan_kernel");
    gprefix = s.prefix;
  } else {
    smem = (size_t(count) + 1) * sizeof(int64_t);
  }
  mt_kernel<Op><<<grid, kMtThreads, smem, stream_of(ctx)>>>(op, count, sizes, gprefix, s.counters, s.partials,
                                                            out, mt_chunks_per_cta());
  launch_check(ctx, name);
}

// ---- the single-launch HAMU step -----------------------------------------------------------------------
// One cooperative launch of a co-resident grid does what hamu_block_stats + hamu_coefficients + hamu_apply
// do in three; phases are separated by grid-wide barriers (cooperative_groups grid.sync) and no CTA ever
// waits for another anywhere else:
//   plan     every CTA builds the chunk plan of mt_kernel<StatsOp> in shared memory (the same chunk size:
//            `plan_ctas` is that kernel's grid), or, above kMtSmemTensors tensors, CTA 0 writes it to the
//            global scratch and a grid.sync publishes it;
//   pass 1   chunk c goes to CTA c mod grid (static: no work counter to reset, and the partials do not
//            depend on which CTA took a chunk) and leaves its three partials, as in mt_kernel;
//   grid.sync
//   sums     each tensor's partials added in chunk order by one warp of the grid (mt_sum_partials, the code
//            of mt_kernel's last CTA) into stats;
//   grid.sync
//   CTA 0    hamu_coefficients_cta (the coefficient kernel's function, same CTA width) into coef and
//            report, while the other CTAs prefetch their pass-2 theta into L2;
//   grid.sync
//   pass 2   the same chunks, ApplyOp.
// So stats, coef, report and theta equal the three-launch path's to the bit. Data one CTA writes and
// another reads in the same launch (partials, stats, coef, a global plan) is read through L2 or plain loads
// after the barrier, never through the read-only path.
namespace cg = cooperative_groups;

static_assert(kMtThreads == kHamuCtaThreads, "the coefficient phase's sums depend on the CTA width");

__global__ void __launch_bounds__(kMtThreads)
    hamu_fused_kernel(HamuConfig cfg, int count, float* const* theta, const float* const* r, const float* const* f,
                      const int64_t* __restrict__ sizes, int64_t* gprefix, double* partials, double* stats,
                      double* coef, HamuReport* report, int64_t plan_ctas, int64_t per_cta) {
  extern __shared__ int64_t sh_prefix[];
  __shared__ int64_t sh_tmp[32];
  __shared__ double sh_red[32 * StatsOp::kStats];
  cg::grid_group grid = cg::this_grid();

  const int64_t* prefix = sh_prefix;
  int64_t chunk;
  if (!gprefix) {
    chunk = mt_plan(count, sizes, sh_prefix, sh_tmp, plan_ctas, per_cta);
  } else {
    if (blockIdx.x == 0) {
      const int64_t c = mt_plan(count, sizes, gprefix, sh_tmp, plan_ctas, per_cta);
      if (threadIdx.x == 0) gprefix[count + 1] = c;
    }
    grid.sync();
    prefix = gprefix;
    chunk = gprefix[count + 1];
  }
  const int64_t nchunks = prefix[count];

  const StatsOp stats_op{r, f};
  for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
    int b;
    int64_t start, len;
    mt_locate(prefix, count, sizes, chunk, c, &b, &start, &len);
    double acc[StatsOp::kStats];
    stats_op.chunk(b, start, len, acc);
    mt_store_partials<StatsOp::kStats>(acc, sh_red, partials, c);
    __syncthreads();  // warp 0 has read sh_red before the next chunk writes it
  }
  grid.sync();

  // Each tensor's partials -> stats, one warp per tensor over the whole grid: in one CTA, as mt_kernel's last
  // CTA does it, 448 tensors are 56 dependent L2 round trips per warp (~10-15 us, more than both memory
  // passes at 1M parameters); the warp's order is the same, so are the bits.
  const int warps = blockDim.x >> 5;
  for (int b = blockIdx.x * warps + (threadIdx.x >> 5); b < count; b += gridDim.x * warps)
    mt_sum_partials<StatsOp::kStats>(b, prefix, partials, stats);
  grid.sync();

  if (blockIdx.x == 0) {
    hamu_coefficients_cta(cfg, count, stats, coef, report);
  } else {
    // Meanwhile the other CTAs pull their pass-2 theta into L2 (r and f are still there from pass 1 where
    // the step is small enough for the single launch to be chosen): a hint, nothing is read or written.
    for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
      int b;
      int64_t start, len;
      mt_locate(prefix, count, sizes, chunk, c, &b, &start, &len);
      const float* tp = theta[b] + start;
      for (int64_t i = int64_t(threadIdx.x) * 32; i < len; i += int64_t(blockDim.x) * 32)  // 128-byte lines
        asm volatile("prefetch.global.L2 [%0];" ::"l"(tp + i));
    }
  }
  grid.sync();

  const ApplyOp apply_op{theta, r, f, coef};
  for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
    int b;
    int64_t start, len;
    mt_locate(prefix, count, sizes, chunk, c, &b, &start, &len);
    apply_op.chunk(b, start, len, nullptr);
  }
}

// Per device: whether cooperative launches work (unknown / yes / no: unsupported, or a launch failed once,
// after which every step takes the three launches) and the occupancy for the last dynamic shared size.
struct FusedLaunchState {
  int usable = -1;
  size_t smem = ~size_t(0);
  int per_sm = 0;
};
constexpr int kFusedMaxDevices = 64;
std::mutex fused_mu;
FusedLaunchState fused_state[kFusedMaxDevices];

// CTAs per SM that can be resident together for this dynamic shared size (0: none, or not usable).
int fused_ctas_per_sm(int device, size_t smem) {
  std::lock_guard<std::mutex> lock(fused_mu);
  FusedLaunchState& st = fused_state[device];
  if (st.usable < 0) {
    int coop = 0;
    if (cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device) != cudaSuccess) {
      cudaGetLastError();
      coop = 0;
    }
    st.usable = coop ? 1 : 0;
  }
  if (!st.usable) return 0;
  if (st.smem != smem) {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, hamu_fused_kernel, kMtThreads, smem) != cudaSuccess) {
      cudaGetLastError();
      n = 0;
    }
    st.smem = smem;
    st.per_sm = n;
  }
  return st.per_sm;
}

void fused_mark_unusable(int device) {
  std::lock_guard<std::mutex> lock(fused_mu);
  fused_state[device].usable = 0;
}

}  // namespace

void hamu_block_stats(const CudaCtx& ctx, int count, const float* const* r, const float* const* f, const int64_t* sizes,
                      double* stats) {
  mt_launch(ctx, "hamu_block_stats_kernel", StatsOp{r, f}, count, sizes, stats);
}

void hamu_apply(const CudaCtx& ctx, int count, float* const* theta, const float* const* r, const float* const* f,
                const int64_t* sizes, const double* coef) {
  mt_launch(ctx, "hamu_apply_kernel", ApplyOp{theta, r, f, coef}, count, sizes, nullptr);
}

bool hamu_fused_step(const CudaCtx& ctx, const HamuConfig& cfg, int count, float* const* theta, const float* const* r,
                     const float* const* f, const int64_t* sizes, int64_t total, double* stats, double* coef,
                     HamuReport* report) {
  if (count <= 0 || total < 0 || ctx.device < 0 || ctx.device >= kFusedMaxDevices) return false;
  use_device(ctx);
  const size_t smem = count <= kMtSmemTensors ? (size_t(count) + 1) * sizeof(int64_t) : 0;
  const int per_sm = fused_ctas_per_sm(ctx.device, smem);
  if (per_sm < 1) return false;
  // This stream's scratch; grows only on the first step with this many tensors.
  const MtScratch s = ensure_mt_scratch(ctx, count);
  const int64_t sms = device_info(ctx.device).sm_count;
  // The plan of the three-launch stats pass (same chunk size: the same partials, the same bits).
  const int64_t plan_ctas = sms * mt_ctas_per_sm<StatsOp>(0), per_cta = mt_chunks_per_cta();
  // No more CTAs than chunks (at most one partial chunk per tensor besides the full ones) nor than fit on
  // the device at once: a cooperative grid must be co-resident (larger ones fail to launch, never hang).
  const int64_t chunks_bound = ceil_div(total, mt_chunk_size(total, plan_ctas, per_cta)) + count;
  const int64_t resident = sms * per_sm;
  const unsigned grid = unsigned(chunks_bound < resident ? chunks_bound : resident);
  cudaLaunchConfig_t lc = {};
  lc.gridDim = dim3(grid);
  lc.blockDim = dim3(kMtThreads);
  lc.dynamicSmemBytes = smem;
  lc.stream = stream_of(ctx);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  lc.attrs = attr;
  lc.numAttrs = 1;
  int64_t* gprefix = count > kMtSmemTensors ? s.prefix : nullptr;
  const cudaError_t e = cudaLaunchKernelEx(&lc, hamu_fused_kernel, cfg, count, theta, r, f, sizes, gprefix,
                                           s.partials, stats, coef, report, plan_ctas, per_cta);
  if (e != cudaSuccess) {
    cudaGetLastError();  // a failed launch leaves its error behind; the caller's three launches must not see it
    fused_mark_unusable(ctx.device);
    return false;
  }
  launch_check(ctx, "hamu_fused_kernel");
  return true;
}

void multi_sum_squares(const CudaCtx& ctx, int count, const float* const* x, const int64_t* sizes, float* sq) {
  mt_launch(ctx, "multi_sum_squares_kernel", SumSqOp{x}, count, sizes, sq);
}

void multi_scale(const CudaCtx& ctx, int count, float* const* x, const int64_t* sizes, const float* scale) {
  mt_launch(ctx, "multi_scale_kernel", ScaleOp{x, scale}, count, sizes, nullptr);
}

}  // namespace hamu::kernels
