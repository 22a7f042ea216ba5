// kernels/cuda/cuda_common.cuh: internal to the CUDA backend: error checks, per-device state (properties,
// persistent scratch), launch helpers and the block/warp reductions the kernels share.
#pragma once
#include <stdexcept>
#include <string>
#include <cuda_runtime.h>
#include <cublas_v2.h>
#ifdef HAMU_CUDNN
#include <cudnn.h>
#endif

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace hamu::kernels::cuda_detail {

// ---- errors --------------------------------------------------------------------------------------
// Every runtime/cuBLAS/cuDNN call goes through one of these; the message names the operation and the
// call so that a failure in the one device run says where it happened.
[[noreturn]] void throw_cuda(cudaError_t e, const char* op, const char* call);
[[noreturn]] void throw_cublas(cublasStatus_t s, const char* op, const char* call);
#ifdef HAMU_CUDNN
[[noreturn]] void throw_cudnn(cudnnStatus_t s, const char* op, const char* call);
#endif

#define HAMU_CU(op, call)                                                             \
  do {                                                                                \
    cudaError_t hamu_err_ = (call);                                                   \
    if (hamu_err_ != cudaSuccess) ::hamu::kernels::cuda_detail::throw_cuda(hamu_err_, op, #call); \
  } while (0)
#define HAMU_CUBLAS(op, call)                                                         \
  do {                                                                                \
    cublasStatus_t hamu_st_ = (call);                                                 \
    if (hamu_st_ != CUBLAS_STATUS_SUCCESS) ::hamu::kernels::cuda_detail::throw_cublas(hamu_st_, op, #call); \
  } while (0)
#ifdef HAMU_CUDNN
#define HAMU_CUDNN_CHECK(op, call)                                                    \
  do {                                                                                \
    cudnnStatus_t hamu_st_ = (call);                                                  \
    if (hamu_st_ != CUDNN_STATUS_SUCCESS) ::hamu::kernels::cuda_detail::throw_cudnn(hamu_st_, op, #call); \
  } while (0)
#endif

// After every kernel launch: a bad configuration shows up here, naming the kernel. With HAMU_CUDA_SYNC=1 in
// the environment the stream is also synchronised, so an asynchronous fault is blamed on the right kernel.
void launch_check(const CudaCtx& ctx, const char* kernel);

// Makes ctx.device the calling thread's current device (cached per thread, so normally free).
void use_device(int device);
inline void use_device(const CudaCtx& ctx) { use_device(ctx.device); }

inline cudaStream_t stream_of(const CudaCtx& ctx) { return static_cast<cudaStream_t>(ctx.stream); }
inline cublasHandle_t blas_of(const CudaCtx& ctx) { return static_cast<cublasHandle_t>(ctx.blas); }
#ifdef HAMU_CUDNN
inline cudnnHandle_t dnn_of(const CudaCtx& ctx) { return static_cast<cudnnHandle_t>(ctx.dnn); }
#endif

// ---- per-device and per-stream state --------------------------------------------------------------
// Persistent reduction scratch, one per (device, stream): allocated at the stream's first reduction (the
// context's own stream: with the context), grown when needed, never per call in steady state. The reductions
// are "last CTA" passes (the grid's last block, found by an atomic on a counter, combines the partials and
// resets the counter), so two passes in flight at once must not share partials or counters: the users of one
// scratch are the kernels of one stream, ordered by it. Passes on different streams of a device (the C API's
// and FusedUpdate's caller stream, hamu's own) each have their own.
// - Never freed, nor its outgrown buffers (`retired`): a CUDA graph captured on the stream replays the addresses
//   it saw. A graph uses the scratch of the stream it was captured on, so graphs captured on one stream must not
//   be replayed concurrently with each other or with that stream's own work.
// - Keyed by the stream handle: a stream created after another was destroyed may get the same handle and then
//   inherits its scratch. That is sound because every pass leaves its counters at zero (the last CTA resets
//   them), provided the old stream's work had finished (a stream destroyed with reductions still queued must not
//   have its handle reused by a stream that runs reductions before they end).
// - The first reduction on a stream must not be inside a capture of it (its zeroing waits for the stream):
//   scratch() then throws, naming the stream.
struct Scratch {
  // Grid reductions (sum_all, dot, ...): one double per CTA plus a "CTAs done" counter.
  double* red_partials = nullptr;
  unsigned* red_counter = nullptr;
  // Multi-tensor kernels: per-chunk partials, a work counter and a done counter, and (for tables too
  // large for shared memory) a global chunk prefix.
  double* mt_partials = nullptr;
  int64_t mt_partials_cap = 0;  // doubles
  unsigned* mt_counters = nullptr;  // [0] work, [1] done
  int64_t* mt_prefix = nullptr;
  int64_t mt_prefix_cap = 0;  // entries
  // Multi-tensor buffers outgrown by a larger table: kept (never freed) because captured graphs may hold them.
  std::vector<void*> retired;
};
// The multi-tensor buffers of a stream's scratch as they are after ensure_mt_scratch (read under its lock).
struct MtScratch {
  double* partials = nullptr;
  int64_t* prefix = nullptr;
  unsigned* counters = nullptr;  // [0] work, [1] done
};

struct DeviceInfo {
  int sm_count = 1;
  int max_threads_per_sm = 2048;
  size_t smem_optin = 48 * 1024;
  int cc_major = 0;  // compute capability (8 and up: bf16 tensor cores)
  std::string name;
};

const DeviceInfo& device_info(int device);
// The scratch of ctx's stream on ctx.device, made at its first use (thread-safe; the reference stays valid).
Scratch& scratch(const CudaCtx& ctx);
// The same, making sure its multi-tensor part can serve `count` tensors; returns those buffers.
MtScratch ensure_mt_scratch(const CudaCtx& ctx, int count);

// The fused attentions' shape contract (attention.cu): throws std::invalid_argument naming `op`.
void check_flash_shape(const char* op, int64_t b, int64_t h, int64_t hkv, int64_t t, int64_t dh, int64_t tile_rows);
// D[row] = dY[row] . Y[row] over rows of length dh (attention.cu; the backward of both fused attentions).
void flash_attention_rowdot(const CudaCtx& ctx, int64_t rows, int64_t dh, const float* gy, const float* y, float* out);

// Multi-tensor chunking (reduce_mt.cu): a chunk is >= kMtMinChunk elements, and the chunk size grows with
// the total so that there are at most kMtMaxChunks full chunks (plus one partial chunk per tensor).
constexpr int64_t kMtMinChunk = 4096;  // 4 float4 per thread per array: one batch of loads
constexpr int64_t kMtMaxChunks = 32768;
// Tables up to this many tensors keep their chunk prefix in shared memory (one launch); larger ones
// get it from a small preparation kernel.
constexpr int kMtSmemTensors = 4096;

// ---- launch helpers ------------------------------------------------------------------------------
constexpr int kThreads = 256;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A grid for a grid-stride loop over n items: enough CTAs to fill the chip, no more.
inline unsigned grid_for(const CudaCtx& ctx, int64_t n, int threads = kThreads) {
  const int64_t want = ceil_div(n > 0 ? n : 1, threads);
  const int64_t cap = int64_t(device_info(ctx.device).sm_count) * (2048 / threads) * 4;
  return unsigned(want < cap ? want : cap);
}

// Grid-stride elementwise map: f(i) for i < n. f is a __device__ lambda (nvcc --extended-lambda).
template <class F> __global__ void map_kernel(int64_t n, F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}
template <class F> void launch_map(const CudaCtx& ctx, const char* name, int64_t n, F f) {
  if (n <= 0) return;
  use_device(ctx);
  map_kernel<<<grid_for(ctx, n), kThreads, 0, stream_of(ctx)>>>(n, f);
  launch_check(ctx, name);
}

// Shapes and strides travel by value in kernel parameters.
constexpr int kMaxDims = 12;
struct DimParams {
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t sa[kMaxDims];
  int64_t sb[kMaxDims];
};

// ---- device-side reductions ----------------------------------------------------------------------
template <class T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class T> __device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Block-wide sum, result valid in every thread. `sh` holds >= 32 entries. Fixed order: deterministic.
template <class T> __device__ __forceinline__ T block_sum(T v, T* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  T t = lane < nwarp ? sh[lane] : T(0);
  return warp_sum(t);
}
template <class T> __device__ __forceinline__ T block_max(T v, T* sh, T lowest) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  T t = lane < nwarp ? sh[lane] : lowest;
  return warp_max(t);
}

// One row per warp (Cta = false: short rows) or per CTA (Cta = true: long rows): which row this warp/CTA
// starts at, how far it steps to the next, and this thread's lane (sub) and stride (width) within the row.
template <bool Cta> struct RowWalk {
  int sub, width;
  int64_t first, step;
  __device__ RowWalk() {
    if constexpr (Cta) {
      sub = threadIdx.x;
      width = blockDim.x;
      first = blockIdx.x;
      step = gridDim.x;
    } else {
      sub = threadIdx.x & 31;
      width = 32;
      first = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
      step = int64_t(gridDim.x) * (blockDim.x >> 5);
    }
  }
};

// The sum over the row's threads of a RowWalk, valid in every thread of the row. `sh` holds >= 32 entries.
template <bool Cta, class T> __device__ __forceinline__ T row_sum(T v, T* sh) {
  if constexpr (Cta) return block_sum(v, sh);
  else return warp_sum(v);
}

}  // namespace hamu::kernels::cuda_detail
