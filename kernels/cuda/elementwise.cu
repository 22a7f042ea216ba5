// kernels/cuda/elementwise.cu: fills, copies, strided and 2-D copies, the float32 <-> bfloat16 casts,
// axpby/affine, same-shape and broadcast binary ops, the broadcast-reversing sum_to, unary activations and
// their backward (CUDA).
#include <stdexcept>
#include <string>

#include <cuda_bf16.h>

#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

template <int Op> __device__ __forceinline__ float binary_op(float a, float b) {
  if constexpr (Op == int(Binary::add)) return a + b;
  else if constexpr (Op == int(Binary::sub)) return a - b;
  else if constexpr (Op == int(Binary::mul)) return a * b;
  else if constexpr (Op == int(Binary::div)) return a / b;
  else if constexpr (Op == int(Binary::max)) return (a > b || a != a) ? a : b;  // NaN wins, as on the CPU
  else return (a < b || a != a) ? a : b;
}

// Calls f(std::integral_constant-like tag) with the op as a compile-time int.
template <template <int> class K, class... Args> void with_binary(Binary op, Args&&... args) {
  switch (op) {
    case Binary::add: K<int(Binary::add)>::run(args...); return;
    case Binary::sub: K<int(Binary::sub)>::run(args...); return;
    case Binary::mul: K<int(Binary::mul)>::run(args...); return;
    case Binary::div: K<int(Binary::div)>::run(args...); return;
    case Binary::max: K<int(Binary::max)>::run(args...); return;
    case Binary::min: K<int(Binary::min)>::run(args...); return;
  }
  throw std::runtime_error("cuda binary: unknown op");
}

DimParams dim_params(const char* op, int ndim, const int64_t* shape, const int64_t* sa, const int64_t* sb) {
  if (ndim > kMaxDims)
    throw std::runtime_error(std::string(op) + ": " + std::to_string(ndim) + " dims (the CUDA backend takes at most " +
                             std::to_string(kMaxDims) + ")");
  DimParams p;
  p.ndim = ndim;
  for (int d = 0; d < ndim; ++d) {
    p.shape[d] = shape[d];
    p.sa[d] = sa ? sa[d] : 0;
    p.sb[d] = sb ? sb[d] : 0;
  }
  return p;
}

template <int Op> struct BinaryRun {
  static void run(const CudaCtx& ctx, int64_t n, const float* a, const float* b, float* y) {
    launch_map(ctx, "binary_kernel", n, [=] __device__(int64_t i) { y[i] = binary_op<Op>(a[i], b[i]); });
  }
};

template <int Op> struct BinaryBcastRun {
  static void run(const CudaCtx& ctx, int64_t n, DimParams p, const float* a, const float* b, float* y) {
    launch_map(ctx, "binary_bcast_kernel", n, [=] __device__(int64_t i) {
      int64_t rem = i, oa = 0, ob = 0;
      for (int d = p.ndim - 1; d >= 0; --d) {
        const int64_t k = rem % p.shape[d];
        rem /= p.shape[d];
        oa += k * p.sa[d];
        ob += k * p.sb[d];
      }
      y[i] = binary_op<Op>(a[oa], b[ob]);
    });
  }
};

// sum_to: one thread (few, long reductions: one warp) per output element; double accumulation.
struct SumToParams {
  int nk = 0, nr = 0;
  int64_t kshape[kMaxDims], kstride[kMaxDims];  // kept dims: size and input stride
  int64_t rshape[kMaxDims], rstride[kMaxDims];  // reduced dims
};

__device__ __forceinline__ int64_t sum_to_base(const SumToParams& p, int64_t o) {
  int64_t base = 0;
  for (int k = p.nk - 1; k >= 0; --k) {
    base += (o % p.kshape[k]) * p.kstride[k];
    o /= p.kshape[k];
  }
  return base;
}
__device__ __forceinline__ int64_t sum_to_off(const SumToParams& p, int64_t r) {
  int64_t off = 0;
  for (int k = p.nr - 1; k >= 0; --k) {
    off += (r % p.rshape[k]) * p.rstride[k];
    r /= p.rshape[k];
  }
  return off;
}

__global__ void sum_to_warp_kernel(SumToParams p, int64_t out_n, int64_t red_n, const float* x, float* y) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t o = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); o < out_n; o += warps) {
    const int64_t base = sum_to_base(p, o);
    double s = 0;
    for (int64_t r = lane; r < red_n; r += 32) s += double(x[base + sum_to_off(p, r)]);
    s = warp_sum(s);
    if (lane == 0) y[o] = float(s);
  }
}

template <int Op> __device__ __forceinline__ float unary_op(float x) {
  if constexpr (Op == int(Unary::neg)) return -x;
  else if constexpr (Op == int(Unary::relu)) return (x > 0.f || x != x) ? x : 0.f;  // NaN passes, as on the CPU
  else if constexpr (Op == int(Unary::gelu)) return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
  else if constexpr (Op == int(Unary::tanh)) return tanhf(x);
  else if constexpr (Op == int(Unary::exp)) return expf(x);
  else if constexpr (Op == int(Unary::log)) return logf(x);
  else if constexpr (Op == int(Unary::sigmoid)) return 1.f / (1.f + expf(-x));
  else if constexpr (Op == int(Unary::sqrt)) return sqrtf(x);
  else if constexpr (Op == int(Unary::square)) return x * x;
  else return fabsf(x);
}

template <int Op> __device__ __forceinline__ float unary_grad(float x, float y, float gy) {
  if constexpr (Op == int(Unary::neg)) return -gy;
  else if constexpr (Op == int(Unary::relu)) return x <= 0.f ? 0.f : gy;
  else if constexpr (Op == int(Unary::gelu)) {
    const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
    const float pdf = expf(-0.5f * x * x) * 0.3989422804014327f;
    return gy * (cdf + x * pdf);
  } else if constexpr (Op == int(Unary::tanh)) return gy * (1.f - y * y);
  else if constexpr (Op == int(Unary::exp)) return gy * y;
  else if constexpr (Op == int(Unary::log)) return gy / x;
  else if constexpr (Op == int(Unary::sigmoid)) return gy * y * (1.f - y);
  else if constexpr (Op == int(Unary::sqrt)) return gy * 0.5f / y;
  else if constexpr (Op == int(Unary::square)) return gy * 2.f * x;
  else return x > 0.f ? gy : (x < 0.f ? -gy : 0.f);
}

template <int Op> struct UnaryRun {
  static void run(const CudaCtx& ctx, int64_t n, const float* x, float* y) {
    launch_map(ctx, "unary_kernel", n, [=] __device__(int64_t i) { y[i] = unary_op<Op>(x[i]); });
  }
};
template <int Op> struct UnaryBackRun {
  static void run(const CudaCtx& ctx, int64_t n, const float* x, const float* y, const float* gy, float* gx) {
    // x or y may be null when the op does not read it.
    launch_map(ctx, "unary_backward_kernel", n, [=] __device__(int64_t i) {
      const float xv = x ? x[i] : 0.f;
      const float yv = y ? y[i] : 0.f;
      gx[i] = unary_grad<Op>(xv, yv, gy[i]);
    });
  }
};

template <template <int> class K, class... Args> void with_unary(Unary op, Args&&... args) {
  switch (op) {
    case Unary::neg: K<int(Unary::neg)>::run(args...); return;
    case Unary::relu: K<int(Unary::relu)>::run(args...); return;
    case Unary::gelu: K<int(Unary::gelu)>::run(args...); return;
    case Unary::tanh: K<int(Unary::tanh)>::run(args...); return;
    case Unary::exp: K<int(Unary::exp)>::run(args...); return;
    case Unary::log: K<int(Unary::log)>::run(args...); return;
    case Unary::sigmoid: K<int(Unary::sigmoid)>::run(args...); return;
    case Unary::sqrt: K<int(Unary::sqrt)>::run(args...); return;
    case Unary::square: K<int(Unary::square)>::run(args...); return;
    case Unary::abs: K<int(Unary::abs)>::run(args...); return;
  }
  throw std::runtime_error("cuda unary: unknown op");
}

// fill and the float4 fast path (16-byte aligned, the usual case from the allocator).
__global__ void fill4_kernel(int64_t n4, float4 v, float4* y) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += stride) y[i] = v;
}

}  // namespace

void fill(const CudaCtx& ctx, int64_t n, float value, float* y) {
  if (n <= 0) return;
  use_device(ctx);
  int64_t head = 0;
  if ((reinterpret_cast<uintptr_t>(y) & 15) == 0 && n >= 4) {
    const int64_t n4 = n / 4;
    fill4_kernel<<<grid_for(ctx, n4), kThreads, 0, stream_of(ctx)>>>(n4, make_float4(value, value, value, value),
                                                                     reinterpret_cast<float4*>(y));
    launch_check(ctx, "fill4_kernel");
    head = n4 * 4;
  }
  if (head < n) {
    float* yt = y + head;
    launch_map(ctx, "fill_kernel", n - head, [=] __device__(int64_t i) { yt[i] = value; });
  }
}

void copy(const CudaCtx& ctx, int64_t n, const float* x, float* y) {
  if (n <= 0 || x == y) return;
  cuda_memcpy_d2d(ctx, y, x, size_t(n) * sizeof(float));
}

void cast_f32_bf16(const CudaCtx& ctx, int64_t n, const float* x, uint16_t* y) {
  launch_map(ctx, "cast_f32_bf16_kernel", n,
             [=] __device__(int64_t i) { y[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i])); });
}

void cast_bf16_f32(const CudaCtx& ctx, int64_t n, const uint16_t* x, float* y) {
  launch_map(ctx, "cast_bf16_f32_kernel", n,
             [=] __device__(int64_t i) { y[i] = __bfloat162float(__ushort_as_bfloat16(x[i])); });
}

void strided_copy(const CudaCtx& ctx, int ndim, const int64_t* shape, const int64_t* strides, const float* x,
                  float* y) {
  if (ndim == 0) {
    cuda_memcpy_d2d(ctx, y, x, sizeof(float));
    return;
  }
  const DimParams p = dim_params("strided_copy", ndim, shape, strides, nullptr);
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  launch_map(ctx, "strided_copy_kernel", n, [=] __device__(int64_t i) {
    int64_t rem = i, off = 0;
    for (int d = p.ndim - 1; d >= 0; --d) {
      off += (rem % p.shape[d]) * p.sa[d];
      rem /= p.shape[d];
    }
    y[i] = x[off];
  });
}

void copy_rows(const CudaCtx& ctx, int64_t rows, int64_t cols, const float* x, int64_t ldx, float* y, int64_t ldy) {
  if (rows <= 0 || cols <= 0) return;
  use_device(ctx);
  if (ldx < cols || ldy < cols) {
    // Overlapping source rows (ldx < cols, e.g. 0 to broadcast one row), which the copy engine
    // rejects: a plain element map.
    launch_map(ctx, "copy_rows_kernel", rows * cols,
               [=] __device__(int64_t i) { y[(i / cols) * ldy + i % cols] = x[(i / cols) * ldx + i % cols]; });
    return;
  }
  // A 2-D memcpy is the copy engine's own strided copy (pitches in bytes).
  HAMU_CU("copy_rows", cudaMemcpy2DAsync(y, size_t(ldy) * sizeof(float), x, size_t(ldx) * sizeof(float),
                                         size_t(cols) * sizeof(float), size_t(rows), cudaMemcpyDeviceToDevice,
                                         stream_of(ctx)));
}

void axpby(const CudaCtx& ctx, int64_t n, float a, const float* x, float b, float* y) {
  if (b == 0.f) launch_map(ctx, "axpby_kernel", n, [=] __device__(int64_t i) { y[i] = a * x[i]; });
  else launch_map(ctx, "axpby_kernel", n, [=] __device__(int64_t i) { y[i] = a * x[i] + b * y[i]; });
}

void affine(const CudaCtx& ctx, int64_t n, const float* x, float a, float b, float* y) {
  launch_map(ctx, "affine_kernel", n, [=] __device__(int64_t i) { y[i] = a * x[i] + b; });
}

void binary(const CudaCtx& ctx, Binary op, int64_t n, const float* a, const float* b, float* y) {
  with_binary<BinaryRun>(op, ctx, n, a, b, y);
}

void binary_bcast(const CudaCtx& ctx, Binary op, int ndim, const int64_t* shape, const int64_t* stride_a,
                  const int64_t* stride_b, const float* a, const float* b, float* y) {
  if (ndim == 0) {
    with_binary<BinaryRun>(op, ctx, int64_t(1), a, b, y);
    return;
  }
  const DimParams p = dim_params("binary_bcast", ndim, shape, stride_a, stride_b);
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  with_binary<BinaryBcastRun>(op, ctx, n, p, a, b, y);
}

void sum_to(const CudaCtx& ctx, int ndim, const int64_t* in_shape, const int64_t* out_shape, const float* x,
            float* y) {
  if (ndim > kMaxDims)
    throw std::runtime_error("sum_to: " + std::to_string(ndim) + " dims (the CUDA backend takes at most " +
                             std::to_string(kMaxDims) + ")");
  SumToParams p;
  int64_t in_strides[kMaxDims];
  int64_t acc = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    in_strides[d] = acc;
    acc *= in_shape[d];
  }
  int64_t out_n = 1, red_n = 1;
  for (int d = 0; d < ndim; ++d) {
    if (out_shape[d] == 1 && in_shape[d] != 1) {
      p.rshape[p.nr] = in_shape[d];
      p.rstride[p.nr++] = in_strides[d];
      red_n *= in_shape[d];
    } else {
      p.kshape[p.nk] = in_shape[d];
      p.kstride[p.nk++] = in_strides[d];
      out_n *= in_shape[d];
    }
  }
  if (out_n <= 0) return;
  if (red_n == 0) {
    fill(ctx, out_n, 0.f, y);
    return;
  }
  if (red_n >= 64 && out_n < 8192) {
    use_device(ctx);
    const int64_t blocks = ceil_div(out_n, kThreads / 32);
    sum_to_warp_kernel<<<unsigned(blocks), kThreads, 0, stream_of(ctx)>>>(p, out_n, red_n, x, y);
    launch_check(ctx, "sum_to_warp_kernel");
    return;
  }
  launch_map(ctx, "sum_to_kernel", out_n, [=] __device__(int64_t o) {
    const int64_t base = sum_to_base(p, o);
    double s = 0;
    for (int64_t r = 0; r < red_n; ++r) s += double(x[base + sum_to_off(p, r)]);
    y[o] = float(s);
  });
}

void unary(const CudaCtx& ctx, Unary op, int64_t n, const float* x, float* y) { with_unary<UnaryRun>(op, ctx, n, x, y); }

void unary_backward(const CudaCtx& ctx, Unary op, int64_t n, const float* x, const float* y, const float* gy,
                    float* gx) {
  with_unary<UnaryBackRun>(op, ctx, n, x, y, gy, gx);
}

}  // namespace hamu::kernels
