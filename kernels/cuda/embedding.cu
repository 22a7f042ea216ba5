// kernels/cuda/embedding.cu: embedding lookup (row gather) and its deterministic backward (CUDA).
//
// Backward without atomics or sorting: each CTA owns a disjoint range of vocabulary rows and scans every
// index in batches of 256, compacting the positions that hit its rows (order kept), chaining repeated rows,
// and adding each row's gradients in registers (one read-modify-write per row and batch) with its threads
// across the embedding dimension. Every table element receives its contributions in index order: the same
// additions, in the same order, as the CPU's serial loop, whatever the grid, and a frequent token costs
// register adds rather than a chain of dependent memory round trips. The price is that every CTA reads the whole index array (4 bytes per
// index per CTA, from L2), which is small next to the gradient rows themselves.
#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

constexpr int kEmbThreads = 256;

__global__ void __launch_bounds__(kEmbThreads) embedding_backward_kernel(int64_t n_idx, int64_t dim, int64_t vocab,
                                                                         int64_t rows_per_cta,
                                                                         const int32_t* __restrict__ idx,
                                                                         const float* __restrict__ gout,
                                                                         float* __restrict__ gtable) {
  __shared__ int32_t hit_pos[kEmbThreads];   // index positions (relative to the batch) that hit, in order
  __shared__ int32_t hit_row[kEmbThreads];   // their table rows
  __shared__ int32_t hit_next[kEmbThreads];  // next hit of the same row in this batch, or -1
  __shared__ bool hit_lead[kEmbThreads];     // first hit of its row in this batch
  __shared__ int warp_counts[kEmbThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t blk = blockIdx.x; blk * rows_per_cta < vocab; blk += gridDim.x) {
    const int64_t lo = blk * rows_per_cta, hi = lo + rows_per_cta < vocab ? lo + rows_per_cta : vocab;
    for (int64_t base = 0; base < n_idx; base += kEmbThreads) {
      const int64_t i = base + threadIdx.x;
      const int64_t v = i < n_idx ? int64_t(idx[i]) : -1;
      const bool hit = v >= lo && v < hi;
      // Order-preserving compaction: ballot within the warp, then warp offsets.
      const unsigned mask = __ballot_sync(0xffffffffu, hit);
      if (lane == 0) warp_counts[warp] = __popc(mask);
      __syncthreads();
      int off = 0, nh = 0;
      for (int w = 0; w < kEmbThreads / 32; ++w) {
        if (w < warp) off += warp_counts[w];
        nh += warp_counts[w];
      }
      if (hit) {
        const int h = off + __popc(mask & ((1u << lane) - 1u));
        hit_pos[h] = int32_t(threadIdx.x);
        hit_row[h] = int32_t(v);
      }
      __syncthreads();
      // Chain the hits of each row (leader = first occurrence, next = following occurrence).
      if (int(threadIdx.x) < nh) {
        const int h = threadIdx.x, row = hit_row[h];
        bool lead = true;
        int next = -1;
        for (int j = 0; j < nh; ++j) {
          if (hit_row[j] != row) continue;
          if (j < h) lead = false;
          if (j > h && next < 0) next = j;
        }
        hit_lead[h] = lead;
        hit_next[h] = next;
      }
      __syncthreads();
      // One read-modify-write of each hit row per batch; the additions follow index order.
      for (int64_t k = threadIdx.x; k < dim; k += blockDim.x)
        for (int h = 0; h < nh; ++h) {
          if (!hit_lead[h]) continue;
          float* dst = gtable + int64_t(hit_row[h]) * dim + k;
          float acc = *dst;
          for (int j = h; j >= 0; j = hit_next[j]) acc += gout[(base + hit_pos[j]) * dim + k];
          *dst = acc;
        }
      __syncthreads();  // the hit tables are reused by the next batch of indices
    }
  }
}

}  // namespace

void embedding_forward(const CudaCtx& ctx, int64_t n_idx, int64_t dim, const int32_t* idx, const float* table,
                       float* out) {
  launch_map(ctx, "embedding_forward_kernel", n_idx * dim, [=] __device__(int64_t e) {
    const int64_t i = e / dim, k = e % dim;
    out[e] = table[int64_t(idx[i]) * dim + k];
  });
}

void embedding_backward(const CudaCtx& ctx, int64_t n_idx, int64_t dim, int64_t vocab, const int32_t* idx,
                        const float* gout, float* gtable) {
  if (n_idx <= 0 || dim <= 0 || vocab <= 0) return;
  use_device(ctx);
  // Enough CTAs to fill the chip, each owning a slice of the vocabulary.
  const int64_t want = int64_t(device_info(ctx.device).sm_count) * 8;
  int64_t rows_per_cta = ceil_div(vocab, want);
  if (rows_per_cta < 1) rows_per_cta = 1;
  const int64_t blocks = ceil_div(vocab, rows_per_cta);
  embedding_backward_kernel<<<unsigned(blocks), kEmbThreads, 0, stream_of(ctx)>>>(n_idx, dim, vocab, rows_per_cta, idx,
                                                                                 gout, gtable);
  launch_check(ctx, "embedding_backward_kernel");
}

}  // namespace hamu::kernels
