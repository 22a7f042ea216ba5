// kernels/cuda/norm.cu: BatchNorm (train, inference, backward with batch or fixed statistics), the fused
// BatchNorm(fixed statistics) + residual add + ReLU pass, and LayerNorm over the last dim, forward and
// backward (CUDA). Same formulas as kernels/cpu/norm.cpp: statistics in
// double, two-pass variance, nullable gamma/beta/ggamma/gbeta/running buffers/saved statistics.
#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

__device__ __forceinline__ float gamma_at(const float* g, int64_t i) { return g ? g[i] : 1.f; }
__device__ __forceinline__ float beta_at(const float* b, int64_t i) { return b ? b[i] : 0.f; }

// ---- BatchNorm: x [n, c, hw]; element e of channel ch (e < n*hw) is x[((e / hw) * c + ch) * hw + e % hw] ----

__device__ __forceinline__ int64_t bn_index(int64_t e, int64_t c, int64_t hw, int64_t ch) {
  return ((e / hw) * c + ch) * hw + e % hw;
}

// One CTA per channel: moments, saved statistics, running update and y.
__global__ void batchnorm_train_kernel(int64_t n, int64_t c, int64_t hw, const float* __restrict__ x,
                                       const float* gamma, const float* beta, float eps, float momentum,
                                       float* __restrict__ y, float* save_mean, float* save_invstd,
                                       float* running_mean, float* running_var) {
  __shared__ double sh[32];
  const int64_t count = n * hw;
  for (int64_t ch = blockIdx.x; ch < c; ch += gridDim.x) {
    double s = 0;
    for (int64_t e = threadIdx.x; e < count; e += blockDim.x) s += double(x[bn_index(e, c, hw, ch)]);
    const double mean = block_sum(s, sh) / double(count);
    double q = 0;
    for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
      const double d = double(x[bn_index(e, c, hw, ch)]) - mean;
      q += d * d;
    }
    const double var = block_sum(q, sh) / double(count);
    const double invstd = 1.0 / sqrt(var + double(eps));
    if (threadIdx.x == 0) {
      save_mean[ch] = float(mean);
      save_invstd[ch] = float(invstd);
      if (running_mean)
        running_mean[ch] = float((1.0 - double(momentum)) * running_mean[ch] + double(momentum) * mean);
      if (running_var) {
        const double unbiased = count > 1 ? var * double(count) / double(count - 1) : var;
        running_var[ch] = float((1.0 - double(momentum)) * running_var[ch] + double(momentum) * unbiased);
      }
    }
    const float fm = float(mean), fs = float(double(gamma_at(gamma, ch)) * invstd), fb = beta_at(beta, ch);
    for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
      const int64_t k = bn_index(e, c, hw, ch);
      y[k] = (x[k] - fm) * fs + fb;
    }
  }
}

// Inference: grid (chunks, channels); each CTA derives its channel's affine map, then maps a chunk.
__global__ void batchnorm_infer_kernel(int64_t n, int64_t c, int64_t hw, const float* __restrict__ x,
                                       const float* gamma, const float* beta, const float* running_mean,
                                       const float* running_var, float eps, float* __restrict__ y, float* save_mean,
                                       float* save_invstd) {
  const int64_t count = n * hw;
  for (int64_t ch = blockIdx.y; ch < c; ch += gridDim.y) {
    const double mean = running_mean[ch];
    const double invstd = 1.0 / sqrt(double(running_var[ch]) + double(eps));
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      if (save_mean) save_mean[ch] = float(mean);
      if (save_invstd) save_invstd[ch] = float(invstd);
    }
    const float fm = float(mean), fs = float(double(gamma_at(gamma, ch)) * invstd), fb = beta_at(beta, ch);
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
      const int64_t k = bn_index(e, c, hw, ch);
      y[k] = (x[k] - fm) * fs + fb;
    }
  }
}

// Backward: one CTA per channel for the sums (double), then gx in the same CTA.
__global__ void batchnorm_backward_kernel(int64_t n, int64_t c, int64_t hw, bool batch_stats,
                                          const float* __restrict__ x, const float* __restrict__ gy,
                                          const float* gamma, const float* save_mean, const float* save_invstd,
                                          float* __restrict__ gx, float* ggamma, float* gbeta) {
  __shared__ double sh[32];
  const int64_t count = n * hw;
  for (int64_t ch = blockIdx.x; ch < c; ch += gridDim.x) {
    const double mean = save_mean[ch], invstd = save_invstd[ch];
    double s_gy = 0, s_gx = 0;
    for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
      const int64_t k = bn_index(e, c, hw, ch);
      const double g = gy[k];
      s_gy += g;
      s_gx += g * (double(x[k]) - mean);
    }
    const double sum_gy = block_sum(s_gy, sh);
    const double sum_gy_xhat = block_sum(s_gx, sh) * invstd;
    if (threadIdx.x == 0) {
      if (ggamma) ggamma[ch] += float(sum_gy_xhat);
      if (gbeta) gbeta[ch] += float(sum_gy);
    }
    const double scale = double(gamma_at(gamma, ch)) * invstd;
    if (!batch_stats) {
      for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
        const int64_t k = bn_index(e, c, hw, ch);
        gx[k] = float(double(gy[k]) * scale);
      }
      continue;
    }
    const double mean_gy = sum_gy / double(count), mean_gy_xhat = sum_gy_xhat / double(count);
    const double a = scale, b = -scale * mean_gy_xhat * invstd, d = -scale * mean_gy;
    for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
      const int64_t k = bn_index(e, c, hw, ch);
      gx[k] = float(a * double(gy[k]) + b * (double(x[k]) - mean) + d);
    }
  }
}

// ---- Fused BatchNorm on fixed statistics + residual add + ReLU ----

__device__ __forceinline__ float relu_value(float v) { return (v > 0.f || v != v) ? v : 0.f; }  // as elementwise.cu

// Forward: grid (chunks, channels) as the inference kernel; one read of x (and the residual), one write.
__global__ void batchnorm_act_forward_kernel(int64_t n, int64_t c, int64_t hw, const float* __restrict__ x,
                                             const float* gamma, const float* beta, const float* running_mean,
                                             const float* running_var, float eps, const float* __restrict__ residual,
                                             bool relu, float* __restrict__ y, float* save_mean, float* save_invstd) {
  const int64_t count = n * hw;
  for (int64_t ch = blockIdx.y; ch < c; ch += gridDim.y) {
    const double mean = running_mean[ch];
    const double invstd = 1.0 / sqrt(double(running_var[ch]) + double(eps));
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      save_mean[ch] = float(mean);
      save_invstd[ch] = float(invstd);
    }
    const float fm = float(mean), fs = float(double(gamma_at(gamma, ch)) * invstd), fb = beta_at(beta, ch);
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
      const int64_t k = bn_index(e, c, hw, ch);
      float v = (x[k] - fm) * fs + fb;
      if (residual) v = v + residual[k];
      y[k] = relu ? relu_value(v) : v;
    }
  }
}

// Chunks per channel of the backward: enough CTAs to fill the chip, at least kThreads * 4 elements each.
int64_t bn_act_chunks(const CudaCtx& ctx, int64_t n, int64_t c, int64_t hw) {
  int64_t chunks = ceil_div(n * hw > 0 ? n * hw : 1, kThreads * 4);
  const int64_t per_ch = ceil_div(int64_t(device_info(ctx.device).sm_count) * 8, c > 0 ? c : 1);
  if (chunks > per_ch) chunks = per_ch;
  return chunks < 1 ? 1 : chunks;
}

// Backward, pass 1: grid (chunks, channels). Each thread masks gy by y, writes gx/gresidual/gz, and sums
// gz and gz * (x - mean) for the two sample ranges; each CTA's four sums go to ws[(ch * chunks + chunk) * 4].
__global__ void batchnorm_act_backward_kernel(int64_t n, int64_t c, int64_t hw, int64_t split,
                                              const float* __restrict__ x, const float* __restrict__ y,
                                              const float* __restrict__ gy, bool relu, const float* gamma,
                                              const float* save_mean, const float* save_invstd,
                                              float* __restrict__ gx, float* __restrict__ gresidual,
                                              float* __restrict__ gz, double* ws) {
  __shared__ double sh[32];
  const int64_t count = n * hw, split_e = split * hw;
  const int64_t chunks = gridDim.x;
  for (int64_t ch = blockIdx.y; ch < c; ch += gridDim.y) {
    const double mean = save_mean[ch], invstd = save_invstd[ch];
    const float scale = float(double(gamma_at(gamma, ch)) * invstd);
    double s0 = 0, sx0 = 0, s1 = 0, sx1 = 0;  // samples [0, split) and [split, n), kept in registers
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += chunks * blockDim.x) {
      const int64_t k = bn_index(e, c, hw, ch);
      const float g = relu ? (y[k] <= 0.f ? 0.f : gy[k]) : gy[k];
      gx[k] = g * scale;
      if (gresidual) gresidual[k] = g;
      if (gz) gz[k] = g;
      const double gd = g, gxc = gd * (double(x[k]) - mean);
      if (e < split_e) {
        s0 += gd;
        sx0 += gxc;
      } else {
        s1 += gd;
        sx1 += gxc;
      }
    }
    const double t0 = block_sum(s0, sh), t1 = block_sum(s1, sh);
    const double u0 = block_sum(sx0, sh), u1 = block_sum(sx1, sh);
    if (threadIdx.x == 0) {
      double* w = ws + (ch * chunks + blockIdx.x) * 4;
      w[0] = t0;
      w[1] = u0 * invstd;
      w[2] = t1;
      w[3] = u1 * invstd;
    }
  }
}

// Backward, pass 2: one thread per channel adds its chunks' sums in chunk order (deterministic) into the
// parameter gradients of the two ranges.
__global__ void batchnorm_act_param_grad_kernel(int64_t n, int64_t c, int64_t split, int64_t chunks, const double* ws,
                                                float* ggamma, float* gbeta, float* ggamma2, float* gbeta2) {
  const int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double acc[4] = {0, 0, 0, 0};
  for (int64_t j = 0; j < chunks; ++j)
    for (int q = 0; q < 4; ++q) acc[q] += ws[(ch * chunks + j) * 4 + q];
  if (ggamma) ggamma[ch] += float(acc[1]);
  if (gbeta) gbeta[ch] += float(acc[0]);
  if (split < n) {
    if (ggamma2) ggamma2[ch] += float(acc[3]);
    if (gbeta2) gbeta2[ch] += float(acc[2]);
  }
}

// ---- LayerNorm: one warp per row ----

__global__ void layernorm_forward_kernel(int64_t rows, int64_t d, const float* __restrict__ x, const float* gamma,
                                         const float* beta, float eps, float* __restrict__ y, float* mean,
                                         float* rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    double s = 0;
    for (int64_t k = lane; k < d; k += 32) s += xr[k];
    const double mu = warp_sum(s) / double(d);
    double q = 0;
    for (int64_t k = lane; k < d; k += 32) {
      const double dev = double(xr[k]) - mu;
      q += dev * dev;
    }
    const double rs = 1.0 / sqrt(warp_sum(q) / double(d) + double(eps));
    if (lane == 0) {
      if (mean) mean[r] = float(mu);
      if (rstd) rstd[r] = float(rs);
    }
    for (int64_t k = lane; k < d; k += 32)
      yr[k] = float((double(xr[k]) - mu) * rs * double(gamma_at(gamma, k)) + double(beta_at(beta, k)));
  }
}

__global__ void layernorm_backward_kernel(int64_t rows, int64_t d, const float* __restrict__ x,
                                          const float* __restrict__ gy, const float* gamma, const float* mean,
                                          const float* rstd, float* __restrict__ gx) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const float* xr = x + r * d;
    const float* gr = gy + r * d;
    float* gxr = gx + r * d;
    const double mu = mean[r], rs = rstd[r];
    double s1 = 0, s2 = 0;
    for (int64_t k = lane; k < d; k += 32) {
      const double dxhat = double(gr[k]) * double(gamma_at(gamma, k));
      s1 += dxhat;
      s2 += dxhat * (double(xr[k]) - mu) * rs;
    }
    const double m1 = warp_sum(s1) / double(d), m2 = warp_sum(s2) / double(d);
    for (int64_t k = lane; k < d; k += 32) {
      const double dxhat = double(gr[k]) * double(gamma_at(gamma, k));
      const double xhat = (double(xr[k]) - mu) * rs;
      gxr[k] = float(rs * (dxhat - m1 - xhat * m2));
    }
  }
}

// ggamma/gbeta: a (32 x 8) CTA owns 32 columns; the 8 thread rows split the rows and combine in fixed order.
__global__ void layernorm_param_grad_kernel(int64_t rows, int64_t d, const float* __restrict__ x,
                                            const float* __restrict__ gy, const float* mean, const float* rstd,
                                            float* ggamma, float* gbeta) {
  __shared__ double shg[8][33], shb[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = int64_t(blockIdx.x) * 32 + tx;
  double ag = 0, ab = 0;
  if (j < d)
    for (int64_t r = ty; r < rows; r += 8) {
      const double g = gy[r * d + j];
      ag += g * (double(x[r * d + j]) - double(mean[r])) * double(rstd[r]);
      ab += g;
    }
  shg[ty][tx] = ag;
  shb[ty][tx] = ab;
  __syncthreads();
  if (ty == 0 && j < d) {
    for (int k = 1; k < 8; ++k) {
      ag += shg[k][tx];
      ab += shb[k][tx];
    }
    if (ggamma) ggamma[j] += float(ag);
    if (gbeta) gbeta[j] += float(ab);
  }
}

unsigned channel_grid(int64_t c) { return unsigned(c < 65535 ? c : 65535); }

}  // namespace

void batchnorm_forward_train(const CudaCtx& ctx, int64_t n, int64_t c, int64_t hw, const float* x, const float* gamma,
                             const float* beta, float eps, float momentum, float* y, float* save_mean,
                             float* save_invstd, float* running_mean, float* running_var) {
  if (c <= 0 || n * hw <= 0) return;
  use_device(ctx);
  batchnorm_train_kernel<<<channel_grid(c), kThreads, 0, stream_of(ctx)>>>(
      n, c, hw, x, gamma, beta, eps, momentum, y, save_mean, save_invstd, running_mean, running_var);
  launch_check(ctx, "batchnorm_train_kernel");
}

void batchnorm_forward_infer(const CudaCtx& ctx, int64_t n, int64_t c, int64_t hw, const float* x, const float* gamma,
                             const float* beta, const float* running_mean, const float* running_var, float eps,
                             float* y, float* save_mean, float* save_invstd) {
  if (c <= 0) return;
  use_device(ctx);
  const int64_t count = n * hw;
  int64_t chunks = ceil_div(count > 0 ? count : 1, kThreads * 4);
  const int64_t want = int64_t(device_info(ctx.device).sm_count) * 16;
  const int64_t per_ch = ceil_div(want, c);
  if (chunks > per_ch) chunks = per_ch;
  if (chunks < 1) chunks = 1;
  dim3 grid(unsigned(chunks), channel_grid(c));
  batchnorm_infer_kernel<<<grid, kThreads, 0, stream_of(ctx)>>>(n, c, hw, x, gamma, beta, running_mean, running_var,
                                                               eps, y, save_mean, save_invstd);
  launch_check(ctx, "batchnorm_infer_kernel");
}

void batchnorm_backward(const CudaCtx& ctx, int64_t n, int64_t c, int64_t hw, bool batch_stats, const float* x,
                        const float* gy, const float* gamma, const float* save_mean, const float* save_invstd,
                        float* gx, float* ggamma, float* gbeta) {
  if (c <= 0 || n * hw <= 0) return;
  use_device(ctx);
  batchnorm_backward_kernel<<<channel_grid(c), kThreads, 0, stream_of(ctx)>>>(
      n, c, hw, batch_stats, x, gy, gamma, save_mean, save_invstd, gx, ggamma, gbeta);
  launch_check(ctx, "batchnorm_backward_kernel");
}

void batchnorm_act_forward(const CudaCtx& ctx, int64_t n, int64_t c, int64_t hw, const float* x, const float* gamma,
                           const float* beta, const float* running_mean, const float* running_var, float eps,
                           const float* residual, bool relu, float* y, float* save_mean, float* save_invstd) {
  if (c <= 0) return;
  use_device(ctx);
  const int64_t count = n * hw;
  int64_t chunks = ceil_div(count > 0 ? count : 1, kThreads * 4);
  const int64_t per_ch = ceil_div(int64_t(device_info(ctx.device).sm_count) * 16, c);
  if (chunks > per_ch) chunks = per_ch;
  if (chunks < 1) chunks = 1;
  dim3 grid(unsigned(chunks), channel_grid(c));
  batchnorm_act_forward_kernel<<<grid, kThreads, 0, stream_of(ctx)>>>(n, c, hw, x, gamma, beta, running_mean,
                                                                     running_var, eps, residual, relu, y, save_mean,
                                                                     save_invstd);
  launch_check(ctx, "batchnorm_act_forward_kernel");
}

// Four doubles (eight floats) per channel and chunk.
int64_t batchnorm_act_workspace_elems(const CudaCtx& ctx, int64_t n, int64_t c, int64_t hw) {
  return 8 * (c > 0 ? c : 1) * bn_act_chunks(ctx, n, c, hw);
}

void batchnorm_act_backward(const CudaCtx& ctx, int64_t n, int64_t c, int64_t hw, int64_t split, const float* x,
                            const float* y, const float* gy, bool relu, const float* gamma, const float* save_mean,
                            const float* save_invstd, float* gx, float* gresidual, float* gz, float* ggamma,
                            float* gbeta, float* ggamma2, float* gbeta2, float* ws) {
  if (c <= 0 || n * hw <= 0) return;
  use_device(ctx);
  const int64_t chunks = bn_act_chunks(ctx, n, c, hw);
  double* wsd = reinterpret_cast<double*>(ws);
  // Every (channel, chunk) slot is written by pass 1, so the workspace needs no clearing; the channel grid
  // covers every channel (c > 65535 loops over channels inside a CTA).
  batchnorm_act_backward_kernel<<<dim3(unsigned(chunks), channel_grid(c)), kThreads, 0, stream_of(ctx)>>>(
      n, c, hw, split, x, y, gy, relu, gamma, save_mean, save_invstd, gx, gresidual, gz, wsd);
  launch_check(ctx, "batchnorm_act_backward_kernel");
  if (!ggamma && !gbeta && !ggamma2 && !gbeta2) return;
  batchnorm_act_param_grad_kernel<<<unsigned(ceil_div(c, kThreads)), kThreads, 0, stream_of(ctx)>>>(
      n, c, split, chunks, wsd, ggamma, gbeta, ggamma2, gbeta2);
  launch_check(ctx, "batchnorm_act_param_grad_kernel");
}

void layernorm_forward(const CudaCtx& ctx, int64_t rows, int64_t d, const float* x, const float* gamma,
                       const float* beta, float eps, float* y, float* mean, float* rstd) {
  if (rows <= 0 || d <= 0) return;
  use_device(ctx);
  layernorm_forward_kernel<<<grid_for(ctx, rows * 32), kThreads, 0, stream_of(ctx)>>>(rows, d, x, gamma, beta, eps, y,
                                                                                     mean, rstd);
  launch_check(ctx, "layernorm_forward_kernel");
}

void layernorm_backward(const CudaCtx& ctx, int64_t rows, int64_t d, const float* x, const float* gy,
                        const float* gamma, const float* mean, const float* rstd, float* gx, float* ggamma,
                        float* gbeta) {
  if (rows <= 0 || d <= 0) return;
  use_device(ctx);
  layernorm_backward_kernel<<<grid_for(ctx, rows * 32), kThreads, 0, stream_of(ctx)>>>(rows, d, x, gy, gamma, mean,
                                                                                      rstd, gx);
  launch_check(ctx, "layernorm_backward_kernel");
  if (!ggamma && !gbeta) return;
  layernorm_param_grad_kernel<<<unsigned(ceil_div(d, 32)), dim3(32, 8), 0, stream_of(ctx)>>>(rows, d, x, gy, mean, rstd,
                                                                                            ggamma, gbeta);
  launch_check(ctx, "layernorm_param_grad_kernel");
}

}  // namespace hamu::kernels
