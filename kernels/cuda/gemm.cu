// kernels/cuda/gemm.cu: row-major GEMM and strided batched GEMM through cuBLAS, and the bfloat16-input GEMM
// with float32 accumulation and output (CUDA).
//
// cuBLAS is column-major. A row-major m x n matrix C is the column-major n x m matrix C^T, so
// C = op(A) op(B) (row-major) is C^T = op(B)^T op(A)^T (column-major): call cuBLAS with the operands
// swapped, m and n swapped, and the same transpose flags and leading dimensions.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/perf.h"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

void set_math(const CudaCtx& ctx) {
  // TF32 tensor cores only on explicit opt-in (the context's flag or --tf32, kernels/perf.h); the default keeps
  // full float32 products.
  const bool tf32 = ctx.tf32 || perf_options().tf32;
  HAMU_CUBLAS("gemm", cublasSetMathMode(blas_of(ctx), tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  // The handle is bound to the context's own stream (cuda_context); a context copy carrying another stream (the
  // C API's caller stream) would run the GEMM on the handle's stream, unordered with the caller's work.
  // Rebinding per call is no remedy: cublasSetStream drops the handle's own workspace (cuda_context), which keeps
  // graphed GEMMs equal to ordinary ones. So such a call is a bug of the caller, said at once.
  cudaStream_t bound = nullptr;
  HAMU_CUBLAS("gemm", cublasGetStream(blas_of(ctx), &bound));
  if (bound != stream_of(ctx))
    throw std::logic_error("gemm: the context's stream is not the one its cuBLAS handle is bound to (GEMMs run on "
                           "the device context's own stream only)");
}

// k == 0: C = beta * C (C not read when beta == 0), as the CPU does.
void scale_only(const CudaCtx& ctx, int64_t m, int64_t n, float beta, float* c, int64_t ldc, int64_t stride_c,
                int64_t batch) {
  launch_map(ctx, "gemm_scale_kernel", m * n * batch, [=] __device__(int64_t e) {
    const int64_t j = e % n, i = (e / n) % m, b = e / (m * n);
    float* p = c + b * stride_c + i * ldc + j;
    *p = beta == 0.f ? 0.f : beta * *p;
  });
}

}  // namespace

void gemm(const CudaCtx& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  use_device(ctx);
  if (k <= 0) {
    scale_only(ctx, m, n, beta, c, ldc, 0, 1);
    return;
  }
  set_math(ctx);
  HAMU_CUBLAS("gemm", cublasSgemm_64(blas_of(ctx), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                      n, m, k, &alpha, b, ldb, a, lda, &beta, c, ldc));
}

void gemm_batched(const CudaCtx& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, int64_t stride_a, const float* b, int64_t ldb, int64_t stride_b,
                  float beta, float* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (m <= 0 || n <= 0 || batch <= 0) return;
  use_device(ctx);
  if (k <= 0) {
    scale_only(ctx, m, n, beta, c, ldc, stride_c, batch);
    return;
  }
  set_math(ctx);
  HAMU_CUBLAS("gemm_batched",
              cublasSgemmStridedBatched_64(blas_of(ctx), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                           trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, stride_b, a,
                                           lda, stride_a, &beta, c, ldc, stride_c, batch));
}

// bf16 x bf16 -> f32 on the tensor cores: cublasGemmEx with CUBLAS_COMPUTE_32F accumulates in float32 whatever
// the handle's math mode says (TF32 concerns float32 inputs only); the default algorithm picks tensor-op kernels.
void gemm_bf16(const CudaCtx& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  use_device(ctx);
  if (k <= 0) {
    scale_only(ctx, m, n, beta, c, ldc, 0, 1);
    return;
  }
  HAMU_CUBLAS("gemm_bf16",
              cublasGemmEx_64(blas_of(ctx), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                              n, m, k, &alpha, b, CUDA_R_16BF, ldb, a, CUDA_R_16BF, lda, &beta, c, CUDA_R_32F, ldc,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace hamu::kernels
