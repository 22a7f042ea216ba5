// kernels/cpu/pool.cpp: 2-D max and average pooling (NCHW), forward and backward.
//
// Every (image, channel) plane is independent, so planes are the unit of parallel work; the backward
// passes scatter into their own plane only, which keeps them race-free and deterministic.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 14;

// The valid input range [lo, hi) covered by output position o along one axis.
struct Span {
  int64_t lo, hi;
};
inline Span window(int64_t o, int64_t stride, int64_t pad, int64_t size, int64_t extent) {
  const int64_t start = o * stride - pad;
  return {std::max<int64_t>(start, 0), std::min<int64_t>(start + size, extent)};
}

}  // namespace

template <class T> void maxpool2d_forward(const CpuCtx&, const PoolShape& ps, const T* x, T* y, int32_t* argmax) {
  const int64_t planes = ps.n * ps.c, oh = ps.oh(), ow = ps.ow(), hw = ps.h * ps.w;
  const bool two_by_two = ps.r == 2 && ps.s == 2 && ps.stride_h == 2 && ps.stride_w == 2 && ps.pad_h == 0 &&
                          ps.pad_w == 0;
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelMin)
  for (int64_t p = 0; p < planes; ++p) {
    const T* xp = x + p * hw;
    T* yp = y + p * oh * ow;
    int32_t* ap = argmax + p * oh * ow;
    if (two_by_two) {
      // The common 2x2/2 case: four candidates in scan order, the same rule as below, no bounds.
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          const int32_t i0 = int32_t(2 * oy * ps.w + 2 * ox);
          const int32_t idx[4] = {i0, i0 + 1, i0 + int32_t(ps.w), i0 + int32_t(ps.w) + 1};
          T best = xp[idx[0]];
          int32_t bi = idx[0];
          for (int k = 1; k < 4; ++k) {
            const T v = xp[idx[k]];
            const bool take = v > best || (v != v && best == best);
            best = take ? v : best;
            bi = take ? idx[k] : bi;
          }
          yp[oy * ow + ox] = best;
          ap[oy * ow + ox] = bi;
        }
      }
      continue;
    }
    for (int64_t oy = 0; oy < oh; ++oy) {
      const Span sy = window(oy, ps.stride_h, ps.pad_h, ps.r, ps.h);
      for (int64_t ox = 0; ox < ow; ++ox) {
        const Span sx = window(ox, ps.stride_w, ps.pad_w, ps.s, ps.w);
        // Padding is never a candidate: only in-bounds cells are visited. A window made only of
        // padding (impossible with pad <= kernel/2, as PyTorch requires) yields 0 and argmax -1.
        T best = -std::numeric_limits<T>::infinity();
        int32_t bi = -1;
        for (int64_t iy = sy.lo; iy < sy.hi; ++iy) {
          for (int64_t ix = sx.lo; ix < sx.hi; ++ix) {
            const T v = xp[iy * ps.w + ix];
            // Strict > keeps the first maximum on ties; NaN wins and stays, as in PyTorch. Selects
            // instead of a branch: which element wins is data-dependent and mispredicts half the time.
            const bool take = bi < 0 || v > best || (v != v && best == best);
            best = take ? v : best;
            bi = take ? int32_t(iy * ps.w + ix) : bi;
          }
        }
        yp[oy * ow + ox] = bi < 0 ? T(0) : best;
        ap[oy * ow + ox] = bi;
      }
    }
  }
}

template <class T>
void maxpool2d_backward(const CpuCtx&, const PoolShape& ps, const T* gy, const int32_t* argmax, T* gx) {
  const int64_t planes = ps.n * ps.c, ohw = ps.oh() * ps.ow(), hw = ps.h * ps.w;
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelMin)
  for (int64_t p = 0; p < planes; ++p) {
    T* gp = gx + p * hw;
    const T* gyp = gy + p * ohw;
    const int32_t* ap = argmax + p * ohw;
    std::fill(gp, gp + hw, T(0));
    for (int64_t o = 0; o < ohw; ++o) {
      if (ap[o] >= 0) gp[ap[o]] += gyp[o];
    }
  }
}

template <class T> void avgpool2d_forward(const CpuCtx&, const PoolShape& ps, const T* x, T* y) {
  const int64_t planes = ps.n * ps.c, oh = ps.oh(), ow = ps.ow(), hw = ps.h * ps.w;
  // count_include_pad: the divisor is the full window; with floor-mode output sizes no window
  // reaches past the padded border, so it is always r*s.
  const T inv_area = T(1) / T(ps.r * ps.s);
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelMin)
  for (int64_t p = 0; p < planes; ++p) {
    const T* xp = x + p * hw;
    T* yp = y + p * oh * ow;
    for (int64_t oy = 0; oy < oh; ++oy) {
      const Span sy = window(oy, ps.stride_h, ps.pad_h, ps.r, ps.h);
      for (int64_t ox = 0; ox < ow; ++ox) {
        const Span sx = window(ox, ps.stride_w, ps.pad_w, ps.s, ps.w);
        T sum = T(0);
        for (int64_t iy = sy.lo; iy < sy.hi; ++iy) {
          for (int64_t ix = sx.lo; ix < sx.hi; ++ix) sum += xp[iy * ps.w + ix];
        }
        yp[oy * ow + ox] = sum * inv_area;
      }
    }
  }
}

template <class T> void avgpool2d_backward(const CpuCtx&, const PoolShape& ps, const T* gy, T* gx) {
  const int64_t planes = ps.n * ps.c, oh = ps.oh(), ow = ps.ow(), hw = ps.h * ps.w;
  const T inv_area = T(1) / T(ps.r * ps.s);
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelMin)
  for (int64_t p = 0; p < planes; ++p) {
    T* gp = gx + p * hw;
    const T* gyp = gy + p * oh * ow;
    std::fill(gp, gp + hw, T(0));
    for (int64_t oy = 0; oy < oh; ++oy) {
      const Span sy = window(oy, ps.stride_h, ps.pad_h, ps.r, ps.h);
      for (int64_t ox = 0; ox < ow; ++ox) {
        const Span sx = window(ox, ps.stride_w, ps.pad_w, ps.s, ps.w);
        const T g = gyp[oy * ow + ox] * inv_area;
        for (int64_t iy = sy.lo; iy < sy.hi; ++iy) {
          for (int64_t ix = sx.lo; ix < sx.hi; ++ix) gp[iy * ps.w + ix] += g;
        }
      }
    }
  }
}

#define HAMU_INSTANTIATE(T)                                                                                   \
  template void maxpool2d_forward<T>(const CpuCtx&, const PoolShape&, const T*, T*, int32_t*);                \
  template void maxpool2d_backward<T>(const CpuCtx&, const PoolShape&, const T*, const int32_t*, T*);         \
  template void avgpool2d_forward<T>(const CpuCtx&, const PoolShape&, const T*, T*);                          \
  template void avgpool2d_backward<T>(const CpuCtx&, const PoolShape&, const T*, T*);
HAMU_INSTANTIATE(float)
HAMU_INSTANTIATE(double)
#undef HAMU_INSTANTIATE

}  // namespace hamu::kernels
