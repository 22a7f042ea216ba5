// kernels/cuda/attention_tc.cu: fused causal attention on the tensor cores in bfloat16 (forward and backward),
// the same contract as kernels/cuda/attention.cu (float32 q, k, v, y, lse and gradients; GQA; key padding
// mask; the T x T matrix never materialised), for the runs that opted into bfloat16 (`--base-dtype bfloat16`,
// HAMU_ATTENTION=bf16).
//
// What is rounded: q, k, v and dY are rounded to bfloat16 as they are staged into shared memory, and the
// probabilities P and the score gradients dS as they enter the second product of each pair. Every product
// accumulates in float32 (WMMA m16n16k16, bf16 in, f32 out), and the softmax, its running max and sum, the
// log-sum-exp and D_i = dY_i . Y_i are float32. Expect ~1e-2 relative error against the float32 kernels.
//
// Tiles: a CTA owns 64 rows (queries; keys in the dK/dV pass) and runs 4 warps, each owning 16 of them; the
// other side streams through shared memory in tiles of 64 rows. The head dimension is padded with zeros to
// D = 32, 64 or 128 (exact: zero columns add nothing to a dot product and are never written back).
//   forward:  per key tile, S = Q K^T (f32 in shared), online softmax by rows (2 lanes per row), P in bf16,
//             O = O * corr + P V with O kept in shared memory (a WMMA fragment's element layout is opaque,
//             so the per-row rescale happens in shared memory between a store and a load).
//   dQ:       per key tile, S = Q K^T and dP = dY V^T, dS = P (dP - D) with P = exp(scale S - lse),
//             dQ += dS K in register fragments.
//   dK, dV:   per query tile of each query head of the group, S^T = K Q^T and dP^T = V dY^T,
//             dV += P^T dY and dK += dS^T Q in register fragments.
// Each CTA owns its outputs: no atomics, the result is the same on every run.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <cuda_bf16.h>
#include <mma.h>

#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {
using namespace nvcuda;
using bf16 = __nv_bfloat16;

constexpr int kTile = 64;                 // rows a CTA owns, and rows per streamed tile
constexpr int kWarps = kTile / 16;        // each warp owns 16 rows
constexpr int kTcThreads = kWarps * 32;
constexpr int kPadH = 8;                  // bf16 row padding: ldm a multiple of 8, rows start on other banks
constexpr int kPadF = 4;                  // f32 row padding: ldm a multiple of 4
constexpr int kLdS = kTile + kPadF;       // f32 [rows][64] score tiles
constexpr int kLdP = kTile + kPadH;       // bf16 [rows][64] probability tiles

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Shared-memory carving: every array starts on a 128-byte boundary (WMMA wants 32).
struct Carve {
  unsigned char* p;
  template <class T>
  __device__ T* take(size_t elems) {
    T* out = reinterpret_cast<T*>(p);
    p += (elems * sizeof(T) + 127) / 128 * 128;
    return out;
  }
};
template <class T>
__host__ __device__ constexpr size_t carved(size_t elems) {
  return (elems * sizeof(T) + 127) / 128 * 128;
}

__device__ __forceinline__ bool key_visible_tc(const int32_t* __restrict__ mask, int b, int t, int j) {
  return j < t && (mask == nullptr || mask[size_t(b) * size_t(t) + size_t(j)] != 0);
}

// Rows [row0, row0 + 64) of a [t, dh] float32 matrix into a bf16 tile [64][D + kPadH], zero past t and dh.
// vec4: dh % 4 == 0 and the matrix 16-byte aligned, so a row is read as float4s.
template <int D>
__device__ __forceinline__ void stage_tile(bf16* __restrict__ dst, const float* __restrict__ src, int row0, int t,
                                           int dh, bool vec4) {
  constexpr int kLd = D + kPadH;
  if (vec4) {
    constexpr int kQuads = D / 4;
    for (int idx = threadIdx.x; idx < kTile * kQuads; idx += kTcThreads) {
      const int r = idx / kQuads, c = (idx % kQuads) * 4;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (row0 + r < t && c < dh) v = *reinterpret_cast<const float4*>(src + size_t(row0 + r) * size_t(dh) + size_t(c));
      __nv_bfloat162* d = reinterpret_cast<__nv_bfloat162*>(dst + r * kLd + c);
      d[0] = __floats2bfloat162_rn(v.x, v.y);
      d[1] = __floats2bfloat162_rn(v.z, v.w);
    }
  } else {
    for (int idx = threadIdx.x; idx < kTile * D; idx += kTcThreads) {
      const int r = idx / D, c = idx % D;
      const float v = (row0 + r < t && c < dh) ? src[size_t(row0 + r) * size_t(dh) + size_t(c)] : 0.f;
      dst[r * kLd + c] = __float2bfloat16_rn(v);
    }
  }
}

// Per-row statistics of a 64-row tile (lse or D), with `fill` past t.
__device__ __forceinline__ void stage_rows(float* __restrict__ dst, const float* __restrict__ src, int row0, int t,
                                           float fill) {
  if (threadIdx.x < kTile) {
    const int i = row0 + int(threadIdx.x);
    dst[threadIdx.x] = i < t ? src[i] : fill;
  }
}

// out[16 x 64] (f32, ldm kLdS) = A[16 x D] B^T where B is [64 x D]: A's rows and B's rows both row-major
// bf16 with ldm D + kPadH (B read as a column-major [D x 64] matrix).
template <int D>
__device__ __forceinline__ void rows_times_rows_t(float* __restrict__ out, const bf16* __restrict__ a,
                                                  const bf16* __restrict__ b) {
  constexpr int kLd = D + kPadH;
#pragma unroll
  for (int n = 0; n < kTile / 16; ++n) {
    FragC acc;
    wmma::fill_fragment(acc, 0.f);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      FragA fa;
      FragBCol fb;
      wmma::load_matrix_sync(fa, a + kk * 16, kLd);
      wmma::load_matrix_sync(fb, b + n * 16 * kLd + kk * 16, kLd);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(out + n * 16, acc, kLdS, wmma::mem_row_major);
  }
}

// acc[n] += P[16 x 64] (bf16, ldm kLdP) B[64 x D] (bf16 row-major, ldm D + kPadH), n over D/16 column blocks.
template <int D>
__device__ __forceinline__ void accumulate_p_times(FragC (&acc)[D / 16], const bf16* __restrict__ p,
                                                   const bf16* __restrict__ b) {
  constexpr int kLd = D + kPadH;
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) {
    FragA fa;
    wmma::load_matrix_sync(fa, p + kk * 16, kLdP);
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      FragBRow fb;
      wmma::load_matrix_sync(fb, b + kk * 16 * kLd + n * 16, kLd);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// Writes rows [row0, row0 + 64) of a [t, dh] float32 matrix from a float tile [64][ldm] times `mul` (all
// threads of the CTA; a row past t is skipped).
__device__ __forceinline__ void write_tile(float* __restrict__ dst, const float* __restrict__ tile, int ldm, int row0,
                                           int t, int dh, float mul) {
  for (int idx = threadIdx.x; idx < kTile * dh; idx += kTcThreads) {
    const int r = idx / dh, c = idx % dh;
    if (row0 + r < t) dst[size_t(row0 + r) * size_t(dh) + size_t(c)] = tile[r * ldm + c] * mul;
  }
}

template <int D>
struct FwdSmem {
  static constexpr int kLd = D + kPadH, kLdO = D + kPadF;
  static constexpr size_t bytes() {
    return 3 * carved<bf16>(kTile * kLd) + carved<float>(kTile * kLdS) + carved<bf16>(kTile * kLdP) +
           carved<float>(kTile * kLdO) + carved<float>(kTile) + carved<int>(kTile);
  }
};

// grid (B*H, ceil(T/64)), kTcThreads threads, FwdSmem<D>::bytes() of dynamic shared memory.
template <int D>
__global__ void __launch_bounds__(kTcThreads) flash_tc_forward_kernel(int h, int hkv, int t, int dh, float scale,
                                                                      const int32_t* __restrict__ mask,
                                                                      const float* __restrict__ q,
                                                                      const float* __restrict__ k,
                                                                      const float* __restrict__ v,
                                                                      float* __restrict__ y, float* __restrict__ lse,
                                                                      bool vec4) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using S = FwdSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  Carve cv{smem};
  bf16* sq = cv.take<bf16>(kTile * S::kLd);
  bf16* sk = cv.take<bf16>(kTile * S::kLd);
  bf16* sv = cv.take<bf16>(kTile * S::kLd);
  float* ss = cv.take<float>(kTile * kLdS);
  bf16* sp = cv.take<bf16>(kTile * kLdP);
  float* so = cv.take<float>(kTile * S::kLdO);
  float* sinv = cv.take<float>(kTile);
  int* svis = cv.take<int>(kTile);

  const int bh = blockIdx.x, b = bh / h, kvh = (bh % h) / (h / hkv);
  const int q0 = blockIdx.y * kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = lane / 2, half = lane % 2;  // this lane's row of the warp's 16 and its half of 64 columns
  const int row = warp * 16 + r, i = q0 + row;
  const size_t kv = size_t(b * hkv + kvh) * size_t(t) * size_t(dh);
  stage_tile<D>(sq, q + size_t(bh) * size_t(t) * size_t(dh), q0, t, dh, vec4);
  for (int idx = threadIdx.x; idx < kTile * S::kLdO; idx += kTcThreads) so[idx] = 0.f;

  float* ssw = ss + warp * 16 * kLdS;
  bf16* spw = sp + warp * 16 * kLdP;
  float* sow = so + warp * 16 * S::kLdO;
  float m = -INFINITY, l = 0.f;
  const int kend = min(t, q0 + kTile);  // causal: no query of this tile sees a key past its last row
  for (int k0 = 0; k0 < kend; k0 += kTile) {
    __syncthreads();  // the previous tile's K and V are no longer read
    stage_tile<D>(sk, k + kv, k0, t, dh, vec4);
    stage_tile<D>(sv, v + kv, k0, t, dh, vec4);
    if (threadIdx.x < kTile) svis[threadIdx.x] = key_visible_tc(mask, b, t, k0 + int(threadIdx.x));
    __syncthreads();
    rows_times_rows_t<D>(ssw, sq + warp * 16 * S::kLd, sk);
    __syncwarp();
    // Online softmax of row r over this lane's 32 columns (the row's other half is the neighbouring lane).
    float* srow = ssw + r * kLdS + half * 32;
    float tile_max = -INFINITY;
#pragma unroll 8
    for (int c = 0; c < 32; ++c) {
      const int jt = half * 32 + c;
      const float s = (svis[jt] && k0 + jt <= i) ? srow[c] * scale : -INFINITY;
      srow[c] = s;
      tile_max = fmaxf(tile_max, s);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);
    bf16* prow = spw + r * kLdP + half * 32;
    float corr = 1.f, psum = 0.f;
    if (m_new == -INFINITY) {  // nothing visible yet for this row (both lanes agree)
#pragma unroll 8
      for (int c = 0; c < 32; ++c) prow[c] = __float2bfloat16_rn(0.f);
    } else {
      corr = __expf(m - m_new);  // 0 while m is -inf
#pragma unroll 8
      for (int c = 0; c < 32; ++c) {
        const float p = __expf(srow[c] - m_new);  // 0 for a masked key
        psum += p;
        prow[c] = __float2bfloat16_rn(p);
      }
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    l = l * corr + psum;
    m = m_new;
    float* orow = sow + r * S::kLdO + half * (D / 2);
#pragma unroll 8
    for (int c = 0; c < D / 2; ++c) orow[c] *= corr;
    __syncwarp();
    FragC acc[D / 16];
#pragma unroll
    for (int n = 0; n < D / 16; ++n) wmma::load_matrix_sync(acc[n], sow + n * 16, S::kLdO, wmma::mem_row_major);
    accumulate_p_times<D>(acc, spw, sv);
#pragma unroll
    for (int n = 0; n < D / 16; ++n) wmma::store_matrix_sync(sow + n * 16, acc[n], S::kLdO, wmma::mem_row_major);
    __syncwarp();
  }
  if (half == 0) {
    sinv[row] = l > 0.f ? 1.f / l : 0.f;
    if (i < t) lse[size_t(bh) * size_t(t) + size_t(i)] = l > 0.f ? m + logf(l) : -INFINITY;
  }
  __syncthreads();
  float* yh = y + size_t(bh) * size_t(t) * size_t(dh);
  for (int idx = threadIdx.x; idx < kTile * dh; idx += kTcThreads) {
    const int rr = idx / dh, c = idx % dh;
    if (q0 + rr < t) yh[size_t(q0 + rr) * size_t(dh) + size_t(c)] = so[rr * S::kLdO + c] * sinv[rr];
  }
#else
  __trap();  // the host never launches this below compute capability 8.0
#endif
}

// The backward passes: two bf16 tiles of the CTA's own rows, two streamed bf16 tiles, two f32 score tiles
// (reused at the end as one f32 [64][D + kPadF] output tile: 2 * 68 >= D + 4 for D <= 128), two bf16
// [64][64] tiles (P and dS), the streamed rows' lse and D, and the key visibility of a 64-key tile.
template <int D>
struct BwdSmem {
  static constexpr int kLd = D + kPadH, kLdO = D + kPadF;
  static_assert(2 * kLdS >= kLdO, "the output tile must fit in the two score tiles");
  static constexpr size_t bytes() {
    return 4 * carved<bf16>(kTile * kLd) + 2 * carved<float>(kTile * kLdS) + 2 * carved<bf16>(kTile * kLdP) +
           2 * carved<float>(kTile) + carved<int>(kTile);
  }
  bf16 *own_a, *own_b, *streamed_a, *streamed_b;
  float *ss, *sdp, *slse, *sd;
  bf16 *sds, *sp;
  int* svis;
  __device__ explicit BwdSmem(unsigned char* smem) {
    Carve cv{smem};
    own_a = cv.take<bf16>(kTile * kLd);
    own_b = cv.take<bf16>(kTile * kLd);
    streamed_a = cv.take<bf16>(kTile * kLd);
    streamed_b = cv.take<bf16>(kTile * kLd);
    ss = cv.take<float>(2 * kTile * kLdS);  // S, then dP right after it
    sdp = ss + kTile * kLdS;
    sds = cv.take<bf16>(kTile * kLdP);
    sp = cv.take<bf16>(kTile * kLdP);
    slse = cv.take<float>(kTile);
    sd = cv.take<float>(kTile);
    svis = cv.take<int>(kTile);
  }
};

// dQ: grid (B*H, ceil(T/64)).
template <int D>
__global__ void __launch_bounds__(kTcThreads) flash_tc_backward_dq_kernel(
    int h, int hkv, int t, int dh, float scale, const int32_t* __restrict__ mask, const float* __restrict__ q,
    const float* __restrict__ k, const float* __restrict__ v, const float* __restrict__ gy,
    const float* __restrict__ lse, const float* __restrict__ dsum, float* __restrict__ gq, bool vec4) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using S = BwdSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  const S m(smem);  // own rows: queries and dY; streamed: keys and values (the P tile is unused here)
  bf16 *sq = m.own_a, *sg = m.own_b, *sk = m.streamed_a, *sv = m.streamed_b, *sds = m.sds;
  float *ss = m.ss, *sdp = m.sdp, *slse = m.slse, *sd = m.sd;
  int* svis = m.svis;

  const int bh = blockIdx.x, b = bh / h, kvh = (bh % h) / (h / hkv);
  const int q0 = blockIdx.y * kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = lane / 2, half = lane % 2;
  const int row = warp * 16 + r, i = q0 + row;
  const size_t head = size_t(bh) * size_t(t);
  const size_t kv = size_t(b * hkv + kvh) * size_t(t) * size_t(dh);
  stage_tile<D>(sq, q + head * size_t(dh), q0, t, dh, vec4);
  stage_tile<D>(sg, gy + head * size_t(dh), q0, t, dh, vec4);
  stage_rows(slse, lse + head, q0, t, -INFINITY);
  stage_rows(sd, dsum + head, q0, t, 0.f);

  FragC acc[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(acc[n], 0.f);
  float* ssw = ss + warp * 16 * kLdS;
  float* sdpw = sdp + warp * 16 * kLdS;
  bf16* sdsw = sds + warp * 16 * kLdP;
  const int kend = min(t, q0 + kTile);
  for (int k0 = 0; k0 < kend; k0 += kTile) {
    __syncthreads();
    stage_tile<D>(sk, k + kv, k0, t, dh, vec4);
    stage_tile<D>(sv, v + kv, k0, t, dh, vec4);
    if (threadIdx.x < kTile) svis[threadIdx.x] = key_visible_tc(mask, b, t, k0 + int(threadIdx.x));
    __syncthreads();
    rows_times_rows_t<D>(ssw, sq + warp * 16 * S::kLd, sk);
    rows_times_rows_t<D>(sdpw, sg + warp * 16 * S::kLd, sv);
    __syncwarp();
    const float li = slse[row], di = sd[row];
    const float* srow = ssw + r * kLdS + half * 32;
    const float* dprow = sdpw + r * kLdS + half * 32;
    bf16* dsrow = sdsw + r * kLdP + half * 32;
#pragma unroll 8
    for (int c = 0; c < 32; ++c) {
      const int jt = half * 32 + c;
      const bool vis = svis[jt] && k0 + jt <= i && li != -INFINITY;
      const float ds = vis ? __expf(srow[c] * scale - li) * (dprow[c] - di) : 0.f;
      dsrow[c] = __float2bfloat16_rn(ds);
    }
    __syncwarp();
    accumulate_p_times<D>(acc, sdsw, sk);
  }
  __syncthreads();  // the score tiles become the output tile
  float* so = ss;
#pragma unroll
  for (int n = 0; n < D / 16; ++n)
    wmma::store_matrix_sync(so + warp * 16 * S::kLdO + n * 16, acc[n], S::kLdO, wmma::mem_row_major);
  __syncthreads();
  write_tile(gq + head * size_t(dh), so, S::kLdO, q0, t, dh, scale);
#else
  __trap();
#endif
}

// dK, dV: grid (B*Hkv, ceil(T/64)); each CTA owns 64 keys of one key/value head and sums over the query heads
// of its group and every query tile at or after its first key.
template <int D>
__global__ void __launch_bounds__(kTcThreads) flash_tc_backward_dkv_kernel(
    int h, int hkv, int t, int dh, float scale, const int32_t* __restrict__ mask, const float* __restrict__ q,
    const float* __restrict__ k, const float* __restrict__ v, const float* __restrict__ gy,
    const float* __restrict__ lse, const float* __restrict__ dsum, float* __restrict__ gk, float* __restrict__ gv,
    bool vec4) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using S = BwdSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  const S m(smem);  // own rows: keys and values; streamed: queries and dY
  bf16 *sk = m.own_a, *sv = m.own_b, *sq = m.streamed_a, *sg = m.streamed_b, *sds = m.sds, *sp = m.sp;
  float *ss = m.ss, *sdp = m.sdp, *slse = m.slse, *sd = m.sd;
  int* svis = m.svis;

  const int bkv = blockIdx.x, b = bkv / hkv, kvh = bkv % hkv, group = h / hkv;
  const int k0 = blockIdx.y * kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = lane / 2, half = lane % 2;
  const int j = k0 + warp * 16 + r;  // this lane's key
  const size_t kv = size_t(bkv) * size_t(t) * size_t(dh);
  stage_tile<D>(sk, k + kv, k0, t, dh, vec4);
  stage_tile<D>(sv, v + kv, k0, t, dh, vec4);
  if (threadIdx.x < kTile) svis[threadIdx.x] = key_visible_tc(mask, b, t, k0 + int(threadIdx.x));

  FragC dk[D / 16], dv[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    wmma::fill_fragment(dk[n], 0.f);
    wmma::fill_fragment(dv[n], 0.f);
  }
  float* ssw = ss + warp * 16 * kLdS;
  float* sdpw = sdp + warp * 16 * kLdS;
  bf16* sdsw = sds + warp * 16 * kLdP;
  bf16* spw = sp + warp * 16 * kLdP;
  for (int gi = 0; gi < group; ++gi) {
    const size_t head = size_t(b * h + kvh * group + gi) * size_t(t);
    for (int q0 = k0; q0 < t; q0 += kTile) {
      __syncthreads();
      stage_tile<D>(sq, q + head * size_t(dh), q0, t, dh, vec4);
      stage_tile<D>(sg, gy + head * size_t(dh), q0, t, dh, vec4);
      stage_rows(slse, lse + head, q0, t, -INFINITY);  // rows past t: -inf, so they count as seeing nothing
      stage_rows(sd, dsum + head, q0, t, 0.f);
      __syncthreads();
      rows_times_rows_t<D>(ssw, sk + warp * 16 * S::kLd, sq);   // S^T: 16 keys x 64 queries
      rows_times_rows_t<D>(sdpw, sv + warp * 16 * S::kLd, sg);  // dP^T
      __syncwarp();
      const bool visj = svis[warp * 16 + r] != 0;
      const float* srow = ssw + r * kLdS + half * 32;
      const float* dprow = sdpw + r * kLdS + half * 32;
      bf16* prow = spw + r * kLdP + half * 32;
      bf16* dsrow = sdsw + r * kLdP + half * 32;
#pragma unroll 8
      for (int c = 0; c < 32; ++c) {
        const int it = half * 32 + c;
        const float li = slse[it];
        const bool vis = visj && j <= q0 + it && li != -INFINITY;
        const float p = vis ? __expf(srow[c] * scale - li) : 0.f;
        prow[c] = __float2bfloat16_rn(p);
        dsrow[c] = __float2bfloat16_rn(p * (dprow[c] - sd[it]));
      }
      __syncwarp();
      accumulate_p_times<D>(dv, spw, sg);
      accumulate_p_times<D>(dk, sdsw, sq);
    }
  }
  float* so = ss;
  __syncthreads();
#pragma unroll
  for (int n = 0; n < D / 16; ++n)
    wmma::store_matrix_sync(so + warp * 16 * S::kLdO + n * 16, dk[n], S::kLdO, wmma::mem_row_major);
  __syncthreads();
  write_tile(gk + kv, so, S::kLdO, k0, t, dh, scale);
  __syncthreads();
#pragma unroll
  for (int n = 0; n < D / 16; ++n)
    wmma::store_matrix_sync(so + warp * 16 * S::kLdO + n * 16, dv[n], S::kLdO, wmma::mem_row_major);
  __syncthreads();
  write_tile(gv + kv, so, S::kLdO, k0, t, dh, 1.f);
#else
  __trap();
#endif
}

// Calls f(std::integral_constant<int, D>) for the smallest D in {32, 64, 128} with D >= dh.
template <class F>
void with_head_dim(int64_t dh, F&& f) {
  if (dh <= 32) f(std::integral_constant<int, 32>{});
  else if (dh <= 64) f(std::integral_constant<int, 64>{});
  else f(std::integral_constant<int, 128>{});
}

// Kernels taking more than 48 KB of dynamic shared memory must say so once per device (the attribute is
// per function and device; setting it again is harmless and cheap next to the launch).
template <class K>
void allow_smem(const CudaCtx& ctx, K kernel, size_t bytes, const char* op) {
  if (bytes > device_info(ctx.device).smem_optin)
    throw std::invalid_argument(std::string(op) + ": needs " + std::to_string(bytes) +
                                " bytes of shared memory per block; the device allows " +
                                std::to_string(device_info(ctx.device).smem_optin));
  HAMU_CU(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

dim3 tc_grid(int64_t t, int64_t heads) { return dim3(unsigned(heads), unsigned((t + kTile - 1) / kTile)); }

}  // namespace

bool flash_attention_bf16_supported(int device, int64_t dh) {
  if (device_info(device).cc_major < 8) return false;
  // The kernels for dh's tile width must fit the device's opt-in shared memory (the head-dim-128 backward
  // takes ~121 KB: more than the ~99 KB of sm_86/sm_89 cards), else the float32 kernels run instead of a throw.
  size_t need = 0;
  with_head_dim(dh, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    need = std::max(FwdSmem<D>::bytes(), BwdSmem<D>::bytes());
  });
  return need <= device_info(device).smem_optin;
}

void flash_attention_bf16_forward(const CudaCtx& ctx, int64_t b, int64_t h, int64_t hkv, int64_t t, int64_t dh,
                                  float scale, const int32_t* key_mask, const float* q, const float* k,
                                  const float* v, float* y, float* lse) {
  const char* op = "flash_attention_bf16_forward";
  check_flash_shape(op, b, h, hkv, t, dh, kTile);
  if (b == 0 || t == 0) return;
  use_device(ctx);
  const bool vec4 = dh % 4 == 0 && aligned16(q) && aligned16(k) && aligned16(v);
  with_head_dim(dh, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    const size_t bytes = FwdSmem<D>::bytes();
    allow_smem(ctx, flash_tc_forward_kernel<D>, bytes, op);
    flash_tc_forward_kernel<D><<<tc_grid(t, b * h), kTcThreads, bytes, stream_of(ctx)>>>(
        int(h), int(hkv), int(t), int(dh), scale, key_mask, q, k, v, y, lse, vec4);
  });
  launch_check(ctx, op);
}

void flash_attention_bf16_backward(const CudaCtx& ctx, int64_t b, int64_t h, int64_t hkv, int64_t t, int64_t dh,
                                   float scale, const int32_t* key_mask, const float* q, const float* k,
                                   const float* v, const float* y, const float* lse, const float* gy, float* dsum,
                                   float* gq, float* gk, float* gv) {
  const char* op = "flash_attention_bf16_backward";
  check_flash_shape(op, b, h, hkv, t, dh, kTile);
  if (b == 0 || t == 0) return;
  use_device(ctx);
  flash_attention_rowdot(ctx, b * h * t, dh, gy, y, dsum);
  const bool vec4 = dh % 4 == 0 && aligned16(q) && aligned16(k) && aligned16(v) && aligned16(gy);
  with_head_dim(dh, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    const size_t bytes = BwdSmem<D>::bytes();
    allow_smem(ctx, flash_tc_backward_dq_kernel<D>, bytes, op);
    flash_tc_backward_dq_kernel<D><<<tc_grid(t, b * h), kTcThreads, bytes, stream_of(ctx)>>>(
        int(h), int(hkv), int(t), int(dh), scale, key_mask, q, k, v, gy, lse, dsum, gq, vec4);
    launch_check(ctx, "flash_attention_bf16_backward (dQ)");
    allow_smem(ctx, flash_tc_backward_dkv_kernel<D>, bytes, op);
    flash_tc_backward_dkv_kernel<D><<<tc_grid(t, b * hkv), kTcThreads, bytes, stream_of(ctx)>>>(
        int(h), int(hkv), int(t), int(dh), scale, key_mask, q, k, v, gy, lse, dsum, gk, gv, vec4);
  });
  launch_check(ctx, "flash_attention_bf16_backward (dK, dV)");
}

}  // namespace hamu::kernels
