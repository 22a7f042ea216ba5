// kernels/cuda/attention.cu: fused causal attention (FlashAttention-2 style) in float32: forward and
// backward, grouped-query heads, key padding mask, never materialising the T x T score matrix.
//
// Layout: q [B,H,T,Dh], k and v [B,Hkv,T,Dh] (query head h reads key/value head h / (H/Hkv)), y like q,
// lse [B,H,T] the log-sum-exp of each query's scaled, masked scores (-inf for a query that sees no key;
// its output is 0, as in the unfused path). A key j is visible to query i when j <= i and key_mask[b,j]
// is non-zero (no mask: all keys).
//
// Each CTA owns 32 rows (queries, or keys in the dK/dV pass) with 4 threads per row; thread `lane` of a
// row holds the dimensions lane, lane+4, ... (DPT of them, Dh <= 4*DPT) in registers, so a dot product is
// DPT FMAs and two shuffles within the row's 4 lanes. The other side streams through shared memory in
// tiles of 32 rows, read by all 8 row groups of a warp at the same address (a broadcast) and by the 4
// lanes at consecutive addresses (no bank conflicts).
//
// Forward: online softmax over key tiles (running max m, running sum l, rescaled accumulator).
// Backward: D_i = dY_i . Y_i; a dQ pass over key tiles and a dK/dV pass over query tiles (each CTA owns
// its outputs: no atomics, so the result is the same on every run), both recomputing P = exp(S - lse):
//   dV_j = sum_i P_ij dY_i,  dS_ij = P_ij (dY_i . V_j - D_i),  dQ_i = scale sum_j dS_ij K_j,
//   dK_j = scale sum_i dS_ij Q_i (summed over the query heads that share the key/value head).
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

constexpr int kRows = 32;               // rows a CTA owns, and rows per shared-memory tile
constexpr int kLanes = 4;               // threads per row
constexpr int kFlashThreads = kRows * kLanes;

// Sum over the 4 lanes of a row (they are adjacent in the warp).
__device__ __forceinline__ float row_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}

// Rows [row0, row0 + kRows) of a [T, dh] matrix into tile[kRows][4*DPT], zero past T and past dh.
template <int DPT>
__device__ __forceinline__ void load_tile(float (*tile)[kLanes * DPT], const float* __restrict__ src, int row0,
                                          int t, int dh) {
  constexpr int kWidth = kLanes * DPT;
  for (int idx = threadIdx.x; idx < kRows * kWidth; idx += kFlashThreads) {
    const int r = idx / kWidth, c = idx % kWidth;
    tile[r][c] = (row0 + r < t && c < dh) ? src[size_t(row0 + r) * size_t(dh) + size_t(c)] : 0.f;
  }
}

// This thread's slice of one row of a [T, dh] matrix (zero past dh or for a row past T).
template <int DPT>
__device__ __forceinline__ void load_row(float (&dst)[DPT], const float* __restrict__ src, bool valid, int lane,
                                         int dh, float mul = 1.f) {
#pragma unroll
  for (int x = 0; x < DPT; ++x) {
    const int d = lane + kLanes * x;
    dst[x] = (valid && d < dh) ? src[d] * mul : 0.f;
  }
}

template <int DPT>
__device__ __forceinline__ float dot_slice(const float (&a)[DPT], const float* __restrict__ row, int lane) {
  float s = 0.f;
#pragma unroll
  for (int x = 0; x < DPT; ++x) s = fmaf(a[x], row[lane + kLanes * x], s);
  return row_sum(s);
}

__device__ __forceinline__ bool key_visible(const int32_t* __restrict__ mask, int b, int t, int j) {
  return j < t && (mask == nullptr || mask[size_t(b) * size_t(t) + size_t(j)] != 0);
}

// The query row a thread of a forward or dQ CTA works on, and its key/value head's matrices.
struct QueryRow {
  int bh, b, lane, q0, i;
  bool valid;
  size_t offset;  // of row i in q, y, gy (elements)
  const float* k;  // the key/value head's [T, dh] keys and values
  const float* v;
};

__device__ __forceinline__ QueryRow query_row(int h, int hkv, int t, int dh, const float* k, const float* v) {
  QueryRow r;
  r.bh = blockIdx.x;
  r.b = r.bh / h;
  const int kvh = (r.bh % h) / (h / hkv);
  r.lane = threadIdx.x % kLanes;
  r.q0 = blockIdx.y * kRows;
  r.i = r.q0 + int(threadIdx.x) / kLanes;
  r.valid = r.i < t;
  r.offset = (size_t(r.bh) * size_t(t) + size_t(r.valid ? r.i : 0)) * size_t(dh);
  const size_t head = size_t(r.b * hkv + kvh) * size_t(t) * size_t(dh);
  r.k = k + head;
  r.v = v + head;
  return r;
}

// The next tile of 32 keys and values and which of them the mask lets through (all threads of the CTA).
template <int DPT>
__device__ __forceinline__ void load_kv_tile(float (*sk)[kLanes * DPT], float (*sv)[kLanes * DPT], bool* svis,
                                             const QueryRow& r, const int32_t* __restrict__ mask, int k0, int t,
                                             int dh) {
  __syncthreads();
  load_tile<DPT>(sk, r.k, k0, t, dh);
  load_tile<DPT>(sv, r.v, k0, t, dh);
  if (threadIdx.x < kRows) svis[threadIdx.x] = key_visible(mask, r.b, t, k0 + int(threadIdx.x));
  __syncthreads();
}

// grid (B*H, ceil(T/32)), kFlashThreads threads.
template <int DPT>
__global__ void __launch_bounds__(kFlashThreads) flash_forward_kernel(int h, int hkv, int t, int dh, float scale,
                                                                 const int32_t* __restrict__ mask,
                                                                 const float* __restrict__ q,
                                                                 const float* __restrict__ k,
                                                                 const float* __restrict__ v, float* __restrict__ y,
                                                                 float* __restrict__ lse) {
  constexpr int kWidth = kLanes * DPT;
  __shared__ float sk[kRows][kWidth], sv[kRows][kWidth];
  __shared__ bool svis[kRows];
  const QueryRow me = query_row(h, hkv, t, dh, k, v);
  const int lane = me.lane, i = me.i;
  float qr[DPT], acc[DPT];
  load_row<DPT>(qr, q + me.offset, me.valid, lane, dh, scale);
#pragma unroll
  for (int x = 0; x < DPT; ++x) acc[x] = 0.f;
  float m = -INFINITY, l = 0.f;
  const int kend = min(t, me.q0 + kRows);  // causal: no query of this tile sees a key past its last row
  for (int k0 = 0; k0 < kend; k0 += kRows) {
    load_kv_tile<DPT>(sk, sv, svis, me, mask, k0, t, dh);
    float s[kRows];
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const float dot = dot_slice<DPT>(qr, sk[j], lane);
      s[j] = (svis[j] && k0 + j <= i) ? dot : -INFINITY;
      tile_max = fmaxf(tile_max, s[j]);
    }
    const float m_new = fmaxf(m, tile_max);
    if (m_new == -INFINITY) continue;  // nothing visible yet for this row (the 4 lanes agree)
    const float corr = __expf(m - m_new);  // 0 while m is -inf
    l *= corr;
#pragma unroll
    for (int x = 0; x < DPT; ++x) acc[x] *= corr;
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const float p = __expf(s[j] - m_new);  // 0 for a masked key
      l += p;
#pragma unroll
      for (int x = 0; x < DPT; ++x) acc[x] = fmaf(p, sv[j][lane + kLanes * x], acc[x]);
    }
    m = m_new;
  }
  if (!me.valid) return;
  const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
  for (int x = 0; x < DPT; ++x) {
    const int d = lane + kLanes * x;
    if (d < dh) y[me.offset + size_t(d)] = acc[x] * inv;
  }
  if (lane == 0) lse[size_t(me.bh) * size_t(t) + size_t(i)] = l > 0.f ? m + logf(l) : -INFINITY;
}

// D[row] = dY[row] . Y[row], one warp per row.
__global__ void flash_rowdot_kernel(int64_t rows, int dh, const float* __restrict__ gy, const float* __restrict__ y,
                                    float* __restrict__ out) {
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows) return;
  const float* a = gy + warp * dh;
  const float* c = y + warp * dh;
  float s = 0.f;
  for (int d = lane; d < dh; d += 32) s = fmaf(a[d], c[d], s);
  s = warp_sum(s);
  if (lane == 0) out[warp] = s;
}

// dQ: grid (B*H, ceil(T/32)).
template <int DPT>
__global__ void __launch_bounds__(kFlashThreads) flash_backward_dq_kernel(int h, int hkv, int t, int dh, float scale,
                                                                     const int32_t* __restrict__ mask,
                                                                     const float* __restrict__ q,
                                                                     const float* __restrict__ k,
                                                                     const float* __restrict__ v,
                                                                     const float* __restrict__ gy,
                                                                     const float* __restrict__ lse,
                                                                     const float* __restrict__ dsum,
                                                                     float* __restrict__ gq) {
  constexpr int kWidth = kLanes * DPT;
  __shared__ float sk[kRows][kWidth], sv[kRows][kWidth];
  __shared__ bool svis[kRows];
  const QueryRow me = query_row(h, hkv, t, dh, k, v);
  const int lane = me.lane, i = me.i;
  float qr[DPT], gr[DPT], acc[DPT];
  load_row<DPT>(qr, q + me.offset, me.valid, lane, dh, scale);
  load_row<DPT>(gr, gy + me.offset, me.valid, lane, dh);
#pragma unroll
  for (int x = 0; x < DPT; ++x) acc[x] = 0.f;
  const size_t stat = size_t(me.bh) * size_t(t) + size_t(i);
  const float li = me.valid ? lse[stat] : -INFINITY;
  const float di = me.valid ? dsum[stat] : 0.f;
  const int kend = min(t, me.q0 + kRows);
  for (int k0 = 0; k0 < kend; k0 += kRows) {
    load_kv_tile<DPT>(sk, sv, svis, me, mask, k0, t, dh);
#pragma unroll 4
    for (int j = 0; j < kRows; ++j) {
      const float s = dot_slice<DPT>(qr, sk[j], lane);
      const float dp = dot_slice<DPT>(gr, sv[j], lane);
      const bool vis = svis[j] && k0 + j <= i && li != -INFINITY;
      const float ds = vis ? __expf(s - li) * (dp - di) : 0.f;
#pragma unroll
      for (int x = 0; x < DPT; ++x) acc[x] = fmaf(ds, sk[j][lane + kLanes * x], acc[x]);
    }
  }
  if (!me.valid) return;
#pragma unroll
  for (int x = 0; x < DPT; ++x) {
    const int d = lane + kLanes * x;
    if (d < dh) gq[me.offset + size_t(d)] = acc[x] * scale;
  }
}

// dK, dV: grid (B*Hkv, ceil(T/32)); each CTA owns 32 keys of one key/value head and sums over the query
// heads of its group and every query tile at or after its first key.
template <int DPT>
__global__ void __launch_bounds__(kFlashThreads) flash_backward_dkv_kernel(int h, int hkv, int t, int dh, float scale,
                                                                      const int32_t* __restrict__ mask,
                                                                      const float* __restrict__ q,
                                                                      const float* __restrict__ k,
                                                                      const float* __restrict__ v,
                                                                      const float* __restrict__ gy,
                                                                      const float* __restrict__ lse,
                                                                      const float* __restrict__ dsum,
                                                                      float* __restrict__ gk, float* __restrict__ gv) {
  constexpr int kWidth = kLanes * DPT;
  __shared__ float sq[kRows][kWidth], sg[kRows][kWidth];
  __shared__ float slse[kRows], sd[kRows];
  const int bkv = blockIdx.x, b = bkv / hkv, kvh = bkv % hkv, group = h / hkv;
  const int row = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
  const int k0 = blockIdx.y * kRows, j = k0 + row;
  const bool valid = j < t;
  const bool visible = valid && key_visible(mask, b, t, j);
  const size_t krow = (size_t(bkv) * size_t(t) + size_t(j)) * size_t(dh);
  float kr[DPT], vr[DPT], dk[DPT], dv[DPT];
  load_row<DPT>(kr, k + (valid ? krow : 0), valid, lane, dh, scale);
  load_row<DPT>(vr, v + (valid ? krow : 0), valid, lane, dh);
#pragma unroll
  for (int x = 0; x < DPT; ++x) dk[x] = dv[x] = 0.f;
  for (int gi = 0; gi < group; ++gi) {
    const int hh = kvh * group + gi;
    const size_t head = size_t(b * h + hh) * size_t(t);
    for (int q0 = k0; q0 < t; q0 += kRows) {
      __syncthreads();
      load_tile<DPT>(sq, q + head * size_t(dh), q0, t, dh);
      load_tile<DPT>(sg, gy + head * size_t(dh), q0, t, dh);
      if (threadIdx.x < kRows) {
        const int i = q0 + int(threadIdx.x);
        slse[threadIdx.x] = i < t ? lse[head + size_t(i)] : -INFINITY;
        sd[threadIdx.x] = i < t ? dsum[head + size_t(i)] : 0.f;
      }
      __syncthreads();
#pragma unroll 4
      for (int r = 0; r < kRows; ++r) {
        const float s = dot_slice<DPT>(kr, sq[r], lane);  // kr carries the scale
        const float dp = dot_slice<DPT>(vr, sg[r], lane);
        const float li = slse[r];
        const bool vis = visible && j <= q0 + r && li != -INFINITY;  // rows past T have lse -inf
        const float p = vis ? __expf(s - li) : 0.f;
        const float ds = p * (dp - sd[r]);
#pragma unroll
        for (int x = 0; x < DPT; ++x) {
          dv[x] = fmaf(p, sg[r][lane + kLanes * x], dv[x]);
          dk[x] = fmaf(ds, sq[r][lane + kLanes * x], dk[x]);
        }
      }
    }
  }
  if (!valid) return;
#pragma unroll
  for (int x = 0; x < DPT; ++x) {
    const int d = lane + kLanes * x;
    if (d < dh) {
      gk[krow + size_t(d)] = dk[x] * scale;
      gv[krow + size_t(d)] = dv[x];
    }
  }
}

// Calls f(std::integral_constant<int, DPT>) for the smallest DPT with 4*DPT >= dh.
template <class F>
void with_dpt(int64_t dh, F&& f) {
  if (dh <= 32) f(std::integral_constant<int, 8>{});
  else if (dh <= 64) f(std::integral_constant<int, 16>{});
  else f(std::integral_constant<int, 32>{});
}

dim3 grid_of(int64_t t, int64_t heads) { return dim3(unsigned(heads), unsigned((t + kRows - 1) / kRows)); }

}  // namespace

namespace cuda_detail {
void check_flash_shape(const char* op, int64_t b, int64_t h, int64_t hkv, int64_t t, int64_t dh, int64_t tile_rows) {
  if (b < 0 || t < 0 || h < 1 || hkv < 1 || h % hkv != 0 || dh < 1 || dh > kMaxFlashHeadDim)
    throw std::invalid_argument(std::string(op) + ": unsupported shape (B " + std::to_string(b) + ", H " + std::to_string(h) + ", Hkv " +
                std::to_string(hkv) + ", T " + std::to_string(t) + ", Dh " + std::to_string(dh) + "; Dh at most " +
                std::to_string(kMaxFlashHeadDim) + ")");
  if (b * h > INT32_MAX || (t + tile_rows - 1) / tile_rows > 65535 || b * h * t * dh > (int64_t(1) << 40))
    throw std::invalid_argument(std::string(op) + ": too large");
}

void flash_attention_rowdot(const CudaCtx& ctx, int64_t rows, int64_t dh, const float* gy, const float* y, float* out) {
  const int per_block = 256;
  const int64_t blocks = (rows * 32 + per_block - 1) / per_block;
  flash_rowdot_kernel<<<unsigned(blocks), per_block, 0, stream_of(ctx)>>>(rows, int(dh), gy, y, out);
  launch_check(ctx, "flash attention backward (dY.Y)");
}
}  // namespace cuda_detail

void flash_attention_forward(const CudaCtx& ctx, int64_t b, int64_t h, int64_t hkv, int64_t t, int64_t dh, float scale,
                             const int32_t* key_mask, const float* q, const float* k, const float* v, float* y,
                             float* lse) {
  check_flash_shape("flash_attention_forward", b, h, hkv, t, dh, kRows);
  if (b == 0 || t == 0) return;
  use_device(ctx);
  with_dpt(dh, [&](auto dpt) {
    flash_forward_kernel<decltype(dpt)::value><<<grid_of(t, b * h), kFlashThreads, 0, stream_of(ctx)>>>(
        int(h), int(hkv), int(t), int(dh), scale, key_mask, q, k, v, y, lse);
  });
  launch_check(ctx, "flash_attention_forward");
}

void flash_attention_backward(const CudaCtx& ctx, int64_t b, int64_t h, int64_t hkv, int64_t t, int64_t dh, float scale,
                              const int32_t* key_mask, const float* q, const float* k, const float* v, const float* y,
                              const float* lse, const float* gy, float* dsum, float* gq, float* gk, float* gv) {
  check_flash_shape("flash_attention_backward", b, h, hkv, t, dh, kRows);
  if (b == 0 || t == 0) return;
  use_device(ctx);
  flash_attention_rowdot(ctx, b * h * t, dh, gy, y, dsum);
  with_dpt(dh, [&](auto dpt) {
    constexpr int D = decltype(dpt)::value;
    flash_backward_dq_kernel<D><<<grid_of(t, b * h), kFlashThreads, 0, stream_of(ctx)>>>(
        int(h), int(hkv), int(t), int(dh), scale, key_mask, q, k, v, gy, lse, dsum, gq);
    launch_check(ctx, "flash_attention_backward (dQ)");
    flash_backward_dkv_kernel<D><<<grid_of(t, b * hkv), kFlashThreads, 0, stream_of(ctx)>>>(
        int(h), int(hkv), int(t), int(dh), scale, key_mask, q, k, v, gy, lse, dsum, gk, gv);
  });
  launch_check(ctx, "flash_attention_backward (dK, dV)");
}

}  // namespace hamu::kernels
