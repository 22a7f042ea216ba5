// kernels/cuda/pool.cu: 2-D max and average pooling (NCHW), forward and backward (CUDA).
//
// Forward: one thread per output cell, scanning its window in the CPU's order (same ties, same NaN rule).
// Backward: one thread per input cell gathering from the output cells whose windows hold it, in output
// order: no atomics, and the same additions in the same order as the CPU's scatter, so results match it.
#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

// PoolShape's oh()/ow() are host functions; the geometry travels as a plain struct.
struct PoolGeo {
  int64_t h, w, oh, ow, r, s, sh, sw, ph, pw;
};

PoolGeo geo(const PoolShape& ps) {
  return {ps.h, ps.w, ps.oh(), ps.ow(), ps.r, ps.s, ps.stride_h, ps.stride_w, ps.pad_h, ps.pad_w};
}

// The output positions along one axis whose windows [o*stride - pad, o*stride - pad + size) contain i.
__device__ __forceinline__ void covering(int64_t i, int64_t stride, int64_t pad, int64_t size, int64_t out,
                                         int64_t& lo, int64_t& hi) {
  const int64_t num = i + pad - size + 1;  // o*stride >= num
  lo = num <= 0 ? 0 : (num + stride - 1) / stride;
  hi = (i + pad) / stride;  // o*stride <= i + pad
  if (hi > out - 1) hi = out - 1;
}

}  // namespace

void maxpool2d_forward(const CudaCtx& ctx, const PoolShape& ps, const float* x, float* y, int32_t* argmax) {
  const PoolGeo g = geo(ps);
  const int64_t total = ps.n * ps.c * g.oh * g.ow;
  launch_map(ctx, "maxpool2d_forward_kernel", total, [=] __device__(int64_t e) {
    const int64_t ox = e % g.ow, oy = (e / g.ow) % g.oh, p = e / (g.ow * g.oh);
    const float* xp = x + p * g.h * g.w;
    const int64_t y0 = oy * g.sh - g.ph, x0 = ox * g.sw - g.pw;
    const int64_t ylo = y0 > 0 ? y0 : 0, yhi = y0 + g.r < g.h ? y0 + g.r : g.h;
    const int64_t xlo = x0 > 0 ? x0 : 0, xhi = x0 + g.s < g.w ? x0 + g.s : g.w;
    float best = -INFINITY;
    int32_t bi = -1;
    for (int64_t iy = ylo; iy < yhi; ++iy)
      for (int64_t ix = xlo; ix < xhi; ++ix) {
        const float v = xp[iy * g.w + ix];
        if (bi < 0 || v > best || (v != v && best == best)) {
          best = v;
          bi = int32_t(iy * g.w + ix);
        }
      }
    y[e] = bi < 0 ? 0.f : best;
    if (argmax) argmax[e] = bi;
  });
}

void maxpool2d_backward(const CudaCtx& ctx, const PoolShape& ps, const float* gy, const int32_t* argmax, float* gx) {
  const PoolGeo g = geo(ps);
  const int64_t total = ps.n * ps.c * g.h * g.w;
  launch_map(ctx, "maxpool2d_backward_kernel", total, [=] __device__(int64_t e) {
    const int64_t ix = e % g.w, iy = (e / g.w) % g.h, p = e / (g.w * g.h);
    const int32_t me = int32_t(iy * g.w + ix);
    const float* gyp = gy + p * g.oh * g.ow;
    const int32_t* ap = argmax + p * g.oh * g.ow;
    int64_t oylo, oyhi, oxlo, oxhi;
    covering(iy, g.sh, g.ph, g.r, g.oh, oylo, oyhi);
    covering(ix, g.sw, g.pw, g.s, g.ow, oxlo, oxhi);
    float s = 0.f;
    for (int64_t oy = oylo; oy <= oyhi; ++oy)
      for (int64_t ox = oxlo; ox <= oxhi; ++ox) {
        const int64_t o = oy * g.ow + ox;
        if (ap[o] == me) s += gyp[o];
      }
    gx[e] = s;
  });
}

void avgpool2d_forward(const CudaCtx& ctx, const PoolShape& ps, const float* x, float* y) {
  const PoolGeo g = geo(ps);
  const float inv_area = 1.f / float(ps.r * ps.s);
  const int64_t total = ps.n * ps.c * g.oh * g.ow;
  launch_map(ctx, "avgpool2d_forward_kernel", total, [=] __device__(int64_t e) {
    const int64_t ox = e % g.ow, oy = (e / g.ow) % g.oh, p = e / (g.ow * g.oh);
    const float* xp = x + p * g.h * g.w;
    const int64_t y0 = oy * g.sh - g.ph, x0 = ox * g.sw - g.pw;
    const int64_t ylo = y0 > 0 ? y0 : 0, yhi = y0 + g.r < g.h ? y0 + g.r : g.h;
    const int64_t xlo = x0 > 0 ? x0 : 0, xhi = x0 + g.s < g.w ? x0 + g.s : g.w;
    float sum = 0.f;
    for (int64_t iy = ylo; iy < yhi; ++iy)
      for (int64_t ix = xlo; ix < xhi; ++ix) sum += xp[iy * g.w + ix];
    y[e] = sum * inv_area;
  });
}

void avgpool2d_backward(const CudaCtx& ctx, const PoolShape& ps, const float* gy, float* gx) {
  const PoolGeo g = geo(ps);
  const float inv_area = 1.f / float(ps.r * ps.s);
  const int64_t total = ps.n * ps.c * g.h * g.w;
  launch_map(ctx, "avgpool2d_backward_kernel", total, [=] __device__(int64_t e) {
    const int64_t ix = e % g.w, iy = (e / g.w) % g.h, p = e / (g.w * g.h);
    const float* gyp = gy + p * g.oh * g.ow;
    int64_t oylo, oyhi, oxlo, oxhi;
    covering(iy, g.sh, g.ph, g.r, g.oh, oylo, oyhi);
    covering(ix, g.sw, g.pw, g.s, g.ow, oxlo, oxhi);
    float s = 0.f;
    for (int64_t oy = oylo; oy <= oyhi; ++oy)
      for (int64_t ox = oxlo; ox <= oxhi; ++ox) s += gyp[oy * g.ow + ox] * inv_area;
    gx[e] = s;
  });
}

}  // namespace hamu::kernels
