// kernels/cuda/conv.cu: 2-D convolution (CUDA): cuDNN when built with HAMU_CUDNN (algorithms chosen per shape by
// measurement, cached; see kernels/perf.h for TF32 and determinism), else (or when cuDNN offers
// no algorithm for a shape, or HAMU_NO_CUDNN=1 is set) im2col/col2im kernels + cuBLAS GEMM over chunks of
// images. im2col and col2im of one image are also exported.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/perf.h"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

// ---- im2col / col2im ---------------------------------------------------------------------------

// col [nb][c*r*s][oh*ow] from x [nb][c][h][w].
// (ConvShape::oh()/ow() are host functions: the output size travels as arguments.)
__global__ void im2col_kernel(ConvShape cs, int64_t oh, int64_t ow, int64_t nb, const float* __restrict__ x,
                              float* __restrict__ col) {
  const int64_t ohw = oh * ow, crs = cs.c * cs.r * cs.s;
  const int64_t total = nb * crs * ohw;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t p = e % ohw, row = (e / ohw) % crs, img = e / (ohw * crs);
    const int64_t ks = row % cs.s, kr = (row / cs.s) % cs.r, ci = row / (cs.s * cs.r);
    const int64_t oy = p / ow, ox = p % ow;
    const int64_t iy = oy * cs.stride_h - cs.pad_h + kr, ix = ox * cs.stride_w - cs.pad_w + ks;
    float v = 0.f;
    if (iy >= 0 && iy < cs.h && ix >= 0 && ix < cs.w) v = x[((img * cs.c + ci) * cs.h + iy) * cs.w + ix];
    col[e] = v;
  }
}

// x [nb][c][h][w] (overwritten) from col [nb][c*r*s][oh*ow]: each input pixel gathers the columns that read it,
// so there are no atomics and the sum order is fixed.
__global__ void col2im_kernel(ConvShape cs, int64_t oh, int64_t ow, int64_t nb, const float* __restrict__ col,
                              float* __restrict__ x) {
  const int64_t ohw = oh * ow, crs = cs.c * cs.r * cs.s;
  const int64_t total = nb * cs.c * cs.h * cs.w;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t ix = e % cs.w, iy = (e / cs.w) % cs.h, ci = (e / (cs.w * cs.h)) % cs.c, img = e / (cs.w * cs.h * cs.c);
    const float* colb = col + img * crs * ohw;
    float s = 0.f;
    for (int64_t kr = 0; kr < cs.r; ++kr) {
      const int64_t ty = iy + cs.pad_h - kr;
      if (ty < 0 || ty % cs.stride_h) continue;
      const int64_t oy = ty / cs.stride_h;
      if (oy >= oh) continue;
      for (int64_t ks = 0; ks < cs.s; ++ks) {
        const int64_t tx = ix + cs.pad_w - ks;
        if (tx < 0 || tx % cs.stride_w) continue;
        const int64_t ox = tx / cs.stride_w;
        if (ox >= ow) continue;
        s += colb[((ci * cs.r + kr) * cs.s + ks) * ohw + oy * ow + ox];
      }
    }
    x[e] = s;
  }
}

void launch_im2col(const CudaCtx& ctx, const ConvShape& cs, int64_t nb, const float* x, float* col) {
  const int64_t total = nb * cs.c * cs.r * cs.s * cs.oh() * cs.ow();
  if (total <= 0) return;
  use_device(ctx);
  im2col_kernel<<<grid_for(ctx, total), kThreads, 0, stream_of(ctx)>>>(cs, cs.oh(), cs.ow(), nb, x, col);
  launch_check(ctx, "im2col_kernel");
}

void launch_col2im(const CudaCtx& ctx, const ConvShape& cs, int64_t nb, const float* col, float* x) {
  const int64_t total = nb * cs.c * cs.h * cs.w;
  if (total <= 0) return;
  use_device(ctx);
  col2im_kernel<<<grid_for(ctx, total), kThreads, 0, stream_of(ctx)>>>(cs, cs.oh(), cs.ow(), nb, col, x);
  launch_check(ctx, "col2im_kernel");
}

// y[n][k][ohw] += bias[k]
void add_bias(const CudaCtx& ctx, const ConvShape& cs, const float* bias, float* y) {
  const int64_t ohw = cs.oh() * cs.ow(), k = cs.k;
  launch_map(ctx, "conv_bias_kernel", cs.n * k * ohw, [=] __device__(int64_t e) { y[e] += bias[(e / ohw) % k]; });
}

// gb[k] += sum over n and ohw of gy[n][k][ohw]: one CTA per output channel, double, fixed order.
__global__ void conv_bias_grad_kernel(int64_t n, int64_t k, int64_t ohw, const float* __restrict__ gy, float* gb) {
  __shared__ double sh[32];
  for (int64_t ch = blockIdx.x; ch < k; ch += gridDim.x) {
    double s = 0;
    const int64_t total = n * ohw;
    for (int64_t e = threadIdx.x; e < total; e += blockDim.x) {
      const int64_t img = e / ohw, p = e % ohw;
      s += double(gy[(img * k + ch) * ohw + p]);
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) gb[ch] += float(s);
  }
}

void bias_grad(const CudaCtx& ctx, const ConvShape& cs, const float* gy, float* gb) {
  if (cs.k <= 0) return;
  use_device(ctx);
  const unsigned grid = unsigned(cs.k < 65535 ? cs.k : 65535);
  conv_bias_grad_kernel<<<grid, kThreads, 0, stream_of(ctx)>>>(cs.n, cs.k, cs.oh() * cs.ow(), gy, gb);
  launch_check(ctx, "conv_bias_grad_kernel");
}

// ---- own implementation (im2col + GEMM) -----------------------------------------------------------

constexpr int64_t kFallbackWsElems = int64_t(16) << 20;  // 64 MiB of columns per chunk at most

int64_t fallback_images_per_chunk(const ConvShape& cs) {
  const int64_t per = cs.c * cs.r * cs.s * cs.oh() * cs.ow();
  if (per <= 0) return 1;
  int64_t nb = kFallbackWsElems / per;
  if (nb < 1) nb = 1;
  if (nb > cs.n) nb = cs.n;
  return nb < 1 ? 1 : nb;
}

int64_t fallback_ws_elems(const ConvShape& cs) {
  return cs.c * cs.r * cs.s * cs.oh() * cs.ow() * fallback_images_per_chunk(cs);
}

void fallback_forward(const CudaCtx& ctx, const ConvShape& cs, const float* x, const float* w, float* y, float* ws) {
  const int64_t ohw = cs.oh() * cs.ow(), crs = cs.c * cs.r * cs.s, chw = cs.c * cs.h * cs.w;
  const int64_t nb = fallback_images_per_chunk(cs);
  for (int64_t i0 = 0; i0 < cs.n; i0 += nb) {
    const int64_t cnt = cs.n - i0 < nb ? cs.n - i0 : nb;
    launch_im2col(ctx, cs, cnt, x + i0 * chw, ws);
    // y_b [k, ohw] = w [k, crs] * col_b [crs, ohw]
    gemm_batched(ctx, false, false, cs.k, ohw, crs, 1.f, w, crs, 0, ws, ohw, crs * ohw, 0.f, y + i0 * cs.k * ohw, ohw,
                 cs.k * ohw, cnt);
  }
}

void fallback_backward_data(const CudaCtx& ctx, const ConvShape& cs, const float* gy, const float* w, float* gx,
                            float* ws) {
  const int64_t ohw = cs.oh() * cs.ow(), crs = cs.c * cs.r * cs.s, chw = cs.c * cs.h * cs.w;
  const int64_t nb = fallback_images_per_chunk(cs);
  for (int64_t i0 = 0; i0 < cs.n; i0 += nb) {
    const int64_t cnt = cs.n - i0 < nb ? cs.n - i0 : nb;
    // col_b [crs, ohw] = w^T [crs, k] * gy_b [k, ohw]
    gemm_batched(ctx, true, false, crs, ohw, cs.k, 1.f, w, crs, 0, gy + i0 * cs.k * ohw, ohw, cs.k * ohw, 0.f, ws, ohw,
                 crs * ohw, cnt);
    launch_col2im(ctx, cs, cnt, ws, gx + i0 * chw);
  }
}

void fallback_backward_filter(const CudaCtx& ctx, const ConvShape& cs, const float* x, const float* gy, float* gw,
                              float* ws) {
  const int64_t ohw = cs.oh() * cs.ow(), crs = cs.c * cs.r * cs.s, chw = cs.c * cs.h * cs.w;
  const int64_t nb = fallback_images_per_chunk(cs);
  for (int64_t i0 = 0; i0 < cs.n; i0 += nb) {
    const int64_t cnt = cs.n - i0 < nb ? cs.n - i0 : nb;
    launch_im2col(ctx, cs, cnt, x + i0 * chw, ws);
    // gw [k, crs] += gy_b [k, ohw] * col_b^T [ohw, crs], one image at a time (they share gw).
    for (int64_t b = 0; b < cnt; ++b)
      gemm(ctx, false, true, cs.k, crs, ohw, 1.f, gy + (i0 + b) * cs.k * ohw, ohw, ws + b * crs * ohw, ohw, 1.f, gw,
           crs);
  }
}

[[maybe_unused]] bool cudnn_disabled_by_env() {
  const char* v = std::getenv("HAMU_NO_CUDNN");
  return v && v[0] == '1';
}

#ifdef HAMU_CUDNN
// ---- cuDNN ---------------------------------------------------------------------------------------

constexpr size_t kCudnnWsLimit = size_t(512) << 20;  // never pick an algorithm wanting more than this

struct CudnnPlan {
  bool ok = false;  // false: no usable algorithm, use the own implementation for this shape
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv_fwd = nullptr, conv_bwd_data = nullptr, conv_bwd_filter = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_algo{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo{};
  size_t ws_bytes = 0;  // the largest of the three
};

// The plan cache key: device, shape, and the switches that change the choice (kernels/perf.h): TF32,
// determinism, measurement vs heuristics. The workspace limit is a constant (kCudnnWsLimit).
using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, bool, bool, bool>;

std::mutex g_plan_mu;
std::map<PlanKey, CudnnPlan> g_plans;

cudnnConvolutionDescriptor_t make_conv_desc(const ConvShape& cs, bool tf32) {
  cudnnConvolutionDescriptor_t d = nullptr;
  HAMU_CUDNN_CHECK("conv2d plan", cudnnCreateConvolutionDescriptor(&d));
  HAMU_CUDNN_CHECK("conv2d plan", cudnnSetConvolution2dDescriptor(d, int(cs.pad_h), int(cs.pad_w), int(cs.stride_h),
                                                                   int(cs.stride_w), 1, 1, CUDNN_CROSS_CORRELATION,
                                                                   CUDNN_DATA_FLOAT));
  // FMA math keeps float32 exact (cuDNN's default math would allow TF32 on this GPU); --tf32 allows the
  // tensor cores to convert float32 inputs to TF32.
  HAMU_CUDNN_CHECK("conv2d plan", cudnnSetConvolutionMathType(d, tf32 ? CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
                                                                      : CUDNN_FMA_MATH));
  return d;
}

bool math_ok(cudnnMathType_t m, bool tf32) {
  return tf32 || m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH;
}

struct PlanChoice {
  bool tf32 = false, deterministic = false, find = true;
};

// Picks the first usable entry of cuDNN's list (measured: fastest first; heuristic: most promising first):
// it must have run, have an acceptable math type, fit the workspace limit, and be deterministic when that
// was asked for. Returns the index, or -1 when none qualifies (the own implementation takes the shape).
template <class Perf, class WsQuery>
int pick_algo(const Perf* perf, int n, const PlanChoice& pc, WsQuery ws_query, size_t* ws) {
  for (int i = 0; i < n; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS || !math_ok(perf[i].mathType, pc.tf32)) continue;
    if (pc.deterministic && perf[i].determinism != CUDNN_DETERMINISTIC) continue;
    size_t bytes = 0;
    if (!ws_query(perf[i].algo, &bytes) || bytes > kCudnnWsLimit) continue;
    *ws = bytes;
    return i;
  }
  return -1;
}

bool cudnn_log_on() {
  static const bool on = [] {
    const char* v = std::getenv("HAMU_CUDNN_LOG");
    return v && v[0] == '1';
  }();
  return on;
}

// Measurement (cudnnFind*, which runs every algorithm on scratch buffers it allocates itself, as
// cudnn.benchmark does) or heuristics (cudnnGet*_v7). A failed measurement (out of memory for its buffers)
// falls back to the heuristics. Fills perf, returns the count.
template <class Perf, class FindFn, class GetFn>
int algo_list(const PlanChoice& pc, int cap, Perf* perf, FindFn find, GetFn get) {
  int got = 0;
  if (pc.find && find(cap, &got, perf) == CUDNN_STATUS_SUCCESS && got > 0) return got;
  got = 0;
  HAMU_CUDNN_CHECK("conv2d plan", get(cap, &got, perf));
  return got;
}

template <class Perf> void set_chosen_math(cudnnConvolutionDescriptor_t d, const Perf& chosen, bool tf32) {
  if (tf32) HAMU_CUDNN_CHECK("conv2d plan", cudnnSetConvolutionMathType(d, chosen.mathType));
}

CudnnPlan build_plan(const CudaCtx& ctx, const ConvShape& cs, const PlanChoice& pc) {
  CudnnPlan p;
  cudnnHandle_t h = dnn_of(ctx);
  HAMU_CUDNN_CHECK("conv2d plan", cudnnCreateTensorDescriptor(&p.x));
  HAMU_CUDNN_CHECK("conv2d plan", cudnnCreateTensorDescriptor(&p.y));
  HAMU_CUDNN_CHECK("conv2d plan", cudnnCreateFilterDescriptor(&p.w));
  HAMU_CUDNN_CHECK("conv2d plan", cudnnSetTensor4dDescriptor(p.x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, int(cs.n),
                                                              int(cs.c), int(cs.h), int(cs.w)));
  HAMU_CUDNN_CHECK("conv2d plan", cudnnSetTensor4dDescriptor(p.y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, int(cs.n),
                                                              int(cs.k), int(cs.oh()), int(cs.ow())));
  HAMU_CUDNN_CHECK("conv2d plan", cudnnSetFilter4dDescriptor(p.w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, int(cs.k),
                                                              int(cs.c), int(cs.r), int(cs.s)));
  p.conv_fwd = make_conv_desc(cs, pc.tf32);
  p.conv_bwd_data = make_conv_desc(cs, pc.tf32);
  p.conv_bwd_filter = make_conv_desc(cs, pc.tf32);

  // The output geometry must agree with ConvShape's.
  int on = 0, oc = 0, oh = 0, ow = 0;
  HAMU_CUDNN_CHECK("conv2d plan", cudnnGetConvolution2dForwardOutputDim(p.conv_fwd, p.x, p.w, &on, &oc, &oh, &ow));
  if (on != cs.n || oc != cs.k || oh != cs.oh() || ow != cs.ow()) return p;
  // cudnnFind* runs on the handle's stream: the work queued before it must not be timed with it.
  if (pc.find) HAMU_CU("conv2d plan", cudaStreamSynchronize(stream_of(ctx)));

  size_t ws_f = 0, ws_d = 0, ws_w = 0;
  float t_f = 0, t_d = 0, t_w = 0;
  {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    const int got = algo_list(
        pc, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, perf,
        [&](int cap, int* n, cudnnConvolutionFwdAlgoPerf_t* out) {
          return cudnnFindConvolutionForwardAlgorithm(h, p.x, p.w, p.conv_fwd, p.y, cap, n, out);
        },
        [&](int cap, int* n, cudnnConvolutionFwdAlgoPerf_t* out) {
          return cudnnGetConvolutionForwardAlgorithm_v7(h, p.x, p.w, p.conv_fwd, p.y, cap, n, out);
        });
    auto q = [&](cudnnConvolutionFwdAlgo_t a, size_t* b) {
      return cudnnGetConvolutionForwardWorkspaceSize(h, p.x, p.w, p.conv_fwd, p.y, a, b) == CUDNN_STATUS_SUCCESS;
    };
    const int i = pick_algo(perf, got, pc, q, &ws_f);
    if (i < 0) return p;
    p.fwd_algo = perf[i].algo;
    t_f = perf[i].time;
    set_chosen_math(p.conv_fwd, perf[i], pc.tf32);
  }
  {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    const int got = algo_list(
        pc, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, perf,
        [&](int cap, int* n, cudnnConvolutionBwdDataAlgoPerf_t* out) {
          return cudnnFindConvolutionBackwardDataAlgorithm(h, p.w, p.y, p.conv_bwd_data, p.x, cap, n, out);
        },
        [&](int cap, int* n, cudnnConvolutionBwdDataAlgoPerf_t* out) {
          return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p.w, p.y, p.conv_bwd_data, p.x, cap, n, out);
        });
    auto q = [&](cudnnConvolutionBwdDataAlgo_t a, size_t* b) {
      return cudnnGetConvolutionBackwardDataWorkspaceSize(h, p.w, p.y, p.conv_bwd_data, p.x, a, b) ==
             CUDNN_STATUS_SUCCESS;
    };
    const int i = pick_algo(perf, got, pc, q, &ws_d);
    if (i < 0) return p;
    p.bwd_data_algo = perf[i].algo;
    t_d = perf[i].time;
    set_chosen_math(p.conv_bwd_data, perf[i], pc.tf32);
  }
  {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    const int got = algo_list(
        pc, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, perf,
        [&](int cap, int* n, cudnnConvolutionBwdFilterAlgoPerf_t* out) {
          return cudnnFindConvolutionBackwardFilterAlgorithm(h, p.x, p.y, p.conv_bwd_filter, p.w, cap, n, out);
        },
        [&](int cap, int* n, cudnnConvolutionBwdFilterAlgoPerf_t* out) {
          return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p.x, p.y, p.conv_bwd_filter, p.w, cap, n, out);
        });
    auto q = [&](cudnnConvolutionBwdFilterAlgo_t a, size_t* b) {
      return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p.x, p.y, p.conv_bwd_filter, p.w, a, b) ==
             CUDNN_STATUS_SUCCESS;
    };
    const int i = pick_algo(perf, got, pc, q, &ws_w);
    if (i < 0) return p;
    p.bwd_filter_algo = perf[i].algo;
    t_w = perf[i].time;
    set_chosen_math(p.conv_bwd_filter, perf[i], pc.tf32);
  }
  p.ws_bytes = ws_f > ws_d ? ws_f : ws_d;
  p.ws_bytes = p.ws_bytes > ws_w ? p.ws_bytes : ws_w;
  p.ok = true;
  if (cudnn_log_on())
    std::fprintf(stderr,
                 "hamu cudnn plan: n%lld c%lld %lldx%lld k%lld %lldx%lld s%lld p%lld (%s%s%s): fwd algo %d%s, "
                 "bwd-data algo %d%s, bwd-filter algo %d%s, workspace %.1f MiB\n",
                 (long long)cs.n, (long long)cs.c, (long long)cs.h, (long long)cs.w, (long long)cs.k, (long long)cs.r,
                 (long long)cs.s, (long long)cs.stride_h, (long long)cs.pad_h, pc.find ? "measured" : "heuristic",
                 pc.tf32 ? ", tf32" : "", pc.deterministic ? ", deterministic" : "", int(p.fwd_algo),
                 pc.find ? (" " + std::to_string(t_f) + " ms").c_str() : "", int(p.bwd_data_algo),
                 pc.find ? (" " + std::to_string(t_d) + " ms").c_str() : "", int(p.bwd_filter_algo),
                 pc.find ? (" " + std::to_string(t_w) + " ms").c_str() : "", double(p.ws_bytes) / (1 << 20));
  return p;
}

// The plan for this shape (null: use the own implementation).
const CudnnPlan* cudnn_plan(const CudaCtx& ctx, const ConvShape& cs) {
  if (!ctx.dnn || cudnn_disabled_by_env()) return nullptr;
  // cuDNN takes int dimensions.
  const int64_t lim = int64_t(1) << 30;
  if (cs.n >= lim || cs.c >= lim || cs.h >= lim || cs.w >= lim || cs.k >= lim) return nullptr;
  const PerfOptions o = perf_options();
  PlanChoice pc;
  pc.tf32 = ctx.tf32 || o.tf32;
  pc.deterministic = o.deterministic;
  pc.find = o.conv_find;
  const PlanKey key{ctx.device, cs.n, cs.c, cs.h, cs.w, cs.k, cs.r, cs.s, cs.stride_h, cs.stride_w, cs.pad_h, cs.pad_w,
                    pc.tf32, pc.deterministic, pc.find};
  std::lock_guard<std::mutex> lock(g_plan_mu);
  auto it = g_plans.find(key);
  if (it == g_plans.end()) {
    use_device(ctx);
    it = g_plans.emplace(key, build_plan(ctx, cs, pc)).first;
  }
  return it->second.ok ? &it->second : nullptr;
}
#endif

}  // namespace

void im2col(const CudaCtx& ctx, const ConvShape& cs, const float* x_image, float* col) {
  launch_im2col(ctx, cs, 1, x_image, col);
}

void col2im(const CudaCtx& ctx, const ConvShape& cs, const float* col, float* x_image) {
  launch_col2im(ctx, cs, 1, col, x_image);
}

int64_t conv2d_workspace_elems(const CudaCtx& ctx, const ConvShape& cs) {
#ifdef HAMU_CUDNN
  if (const CudnnPlan* p = cudnn_plan(ctx, cs)) {
    const int64_t e = int64_t((p->ws_bytes + sizeof(float) - 1) / sizeof(float));
    return e > 0 ? e : 1;
  }
#endif
  const int64_t e = fallback_ws_elems(cs);
  return e > 0 ? e : 1;
}

void conv2d_forward(const CudaCtx& ctx, const ConvShape& cs, const float* x, const float* w, const float* bias, float* y,
                    float* ws) {
  if (cs.n <= 0 || cs.k <= 0 || cs.oh() <= 0 || cs.ow() <= 0) return;
  use_device(ctx);
#ifdef HAMU_CUDNN
  if (const CudnnPlan* p = cudnn_plan(ctx, cs)) {
    const float one = 1.f, zero = 0.f;
    HAMU_CUDNN_CHECK("conv2d_forward", cudnnConvolutionForward(dnn_of(ctx), &one, p->x, x, p->w, w, p->conv_fwd,
                                                               p->fwd_algo, ws, p->ws_bytes, &zero, p->y, y));
    if (bias) add_bias(ctx, cs, bias, y);
    return;
  }
#endif
  fallback_forward(ctx, cs, x, w, y, ws);
  if (bias) add_bias(ctx, cs, bias, y);
}

void conv2d_backward_data(const CudaCtx& ctx, const ConvShape& cs, const float* gy, const float* w, float* gx,
                          float* ws) {
  const ProfScope prof(ProfKind::conv_bwd_data, ctx.device);
  if (cs.n <= 0 || cs.c <= 0) return;
  use_device(ctx);
#ifdef HAMU_CUDNN
  if (const CudnnPlan* p = cudnn_plan(ctx, cs)) {
    const float one = 1.f, zero = 0.f;
    HAMU_CUDNN_CHECK("conv2d_backward_data",
                     cudnnConvolutionBackwardData(dnn_of(ctx), &one, p->w, w, p->y, gy, p->conv_bwd_data,
                                                  p->bwd_data_algo, ws, p->ws_bytes, &zero, p->x, gx));
    return;
  }
#endif
  fallback_backward_data(ctx, cs, gy, w, gx, ws);
}

void conv2d_backward_filter(const CudaCtx& ctx, const ConvShape& cs, const float* x, const float* gy, float* gw,
                            float* gb, float* ws) {
  const ProfScope prof(ProfKind::conv_bwd_filter, ctx.device);
  if (cs.k <= 0 || cs.n <= 0) return;
  use_device(ctx);
  if (gb) bias_grad(ctx, cs, gy, gb);
#ifdef HAMU_CUDNN
  if (const CudnnPlan* p = cudnn_plan(ctx, cs)) {
    const float one = 1.f;  // beta = 1: gw accumulates
    HAMU_CUDNN_CHECK("conv2d_backward_filter",
                     cudnnConvolutionBackwardFilter(dnn_of(ctx), &one, p->x, x, p->y, gy, p->conv_bwd_filter,
                                                    p->bwd_filter_algo, ws, p->ws_bytes, &one, p->w, gw));
    return;
  }
#endif
  fallback_backward_filter(ctx, cs, x, gy, gw, ws);
}

}  // namespace hamu::kernels
