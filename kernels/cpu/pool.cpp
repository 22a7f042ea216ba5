// kernels/cpu/pool.cpp: 2-D max and average pooling (NCHW), forward and backward.
//
// Every (image, channel) plane is independent, so planes are the unit of parallel work; the backward
// passes scatter into their own plane only, which keeps them race-free and deterministic.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

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

// Max pooling's rule for the next candidate v (index i) in scan order: strict > keeps the first maximum on
// ties; NaN wins and stays, as in PyTorch. Written with bitwise | and & so it also serves vectors (GCC's
// vector extensions: the compares give lane masks, ?: a blend).
template <class V, class I> inline void max_candidate(V v, I i, V& best, I& bi) {
  const auto take = (v > best) | ((v != v) & (best == best));
  best = take ? v : best;
  bi = take ? i : bi;
}

// max_candidate for scalars, the selects done on the bits: as ?: on floats gcc makes them branches.
template <class T> inline void max_candidate_bits(T v, int32_t i, T& best, int32_t& bi) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const bool take = (v > best) | ((v != v) & (best == best));
  const Bits m = Bits(0) - Bits(take);
  best = std::bit_cast<T>((std::bit_cast<Bits>(v) & m) | (std::bit_cast<Bits>(best) & ~m));
  const uint32_t mi = uint32_t(m);
  bi = int32_t((uint32_t(i) & mi) | (uint32_t(bi) & ~mi));
}

// One row of 2x2/2 max pooling: ow outputs from input rows r0 and r0 + w (whose first cell has index base in
// the plane). float: eight outputs at a time (the last 1-7 through a copy of their columns), the even and odd
// columns split by shuffles; double: max_candidate_bits one output at a time. (The first version's scalar
// selects became branches, which mispredict on real activations: this pass took 7x the backward's time.)
template <class T>
void maxpool_2x2_row(const T* r0, int64_t w, int64_t base, int64_t ow, T* y, int32_t* argmax) {
  const T* r1 = r0 + w;
  int64_t ox = 0;
#if defined(__GNUC__) && !defined(__clang__)
  if constexpr (std::is_same_v<T, float>) {
    typedef float F8 __attribute__((vector_size(32)));
    typedef int32_t I8 __attribute__((vector_size(32)));
    const I8 even{0, 2, 4, 6, 8, 10, 12, 14}, odd = even + 1;
    auto load = [](const float* p) {
      F8 v;
      std::memcpy(&v, p, sizeof v);
      return v;
    };
    // Eight outputs from 16 columns of each row at p0 and p1 (output ox's window starts at column 2*ox).
    auto eight = [&](const float* p0, const float* p1, int64_t ox0, F8& best, I8& bi) {
      const F8 a0 = load(p0), a1 = load(p0 + 8), b0 = load(p1), b1 = load(p1 + 8);
      const I8 i0 = int32_t(base + 2 * ox0) + even;
      best = __builtin_shuffle(a0, a1, even);
      bi = i0;
      max_candidate(__builtin_shuffle(a0, a1, odd), i0 + 1, best, bi);
      max_candidate(__builtin_shuffle(b0, b1, even), i0 + int32_t(w), best, bi);
      max_candidate(__builtin_shuffle(b0, b1, odd), i0 + int32_t(w + 1), best, bi);
    };
    F8 best;
    I8 bi;
    for (; ox + 8 <= ow; ox += 8) {  // reads columns 2*ox .. 2*ox + 15 < 2*ow <= w
      eight(r0 + 2 * ox, r1 + 2 * ox, ox, best, bi);
      std::memcpy(y + ox, &best, sizeof best);
      std::memcpy(argmax + ox, &bi, sizeof bi);
    }
    if (ox < ow) {  // the last 1-7 outputs (all of a 14-wide plane's 7) through copies of their columns
      const int64_t rem = ow - ox;
      float t0[16] = {}, t1[16] = {};
      std::memcpy(t0, r0 + 2 * ox, size_t(2 * rem) * sizeof(float));
      std::memcpy(t1, r1 + 2 * ox, size_t(2 * rem) * sizeof(float));
      eight(t0, t1, ox, best, bi);
      std::memcpy(y + ox, &best, size_t(rem) * sizeof(float));
      std::memcpy(argmax + ox, &bi, size_t(rem) * sizeof(int32_t));
      return;
    }
  }
#endif
  for (; ox < ow; ++ox) {
    const int32_t i0 = int32_t(base + 2 * ox);
    T best = r0[2 * ox];
    int32_t bi = i0;
    max_candidate_bits(r0[2 * ox + 1], i0 + 1, best, bi);
    max_candidate_bits(r1[2 * ox], i0 + int32_t(w), best, bi);
    max_candidate_bits(r1[2 * ox + 1], i0 + int32_t(w + 1), best, bi);
    y[ox] = best;
    argmax[ox] = bi;
  }
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
      for (int64_t oy = 0; oy < oh; ++oy) maxpool_2x2_row(xp + 2 * oy * ps.w, ps.w, 2 * oy * ps.w, ow, yp + oy * ow,
                                                          ap + oy * ow);
      continue;
    }
    for (int64_t oy = 0; oy < oh; ++oy) {
      const Span sy = window(oy, ps.stride_h, ps.pad_h, ps.r, ps.h);
      for (int64_t ox = 0; ox < ow; ++ox) {
        const Span sx = window(ox, ps.stride_w, ps.pad_w, ps.s, ps.w);
        // Padding is never a candidate: only in-bounds cells are visited. A window made only of
        // padding (impossible with pad <= kernel/2, as PyTorch requires) yields 0 and argmax -1.
        if (sy.lo >= sy.hi || sx.lo >= sx.hi) {
          yp[oy * ow + ox] = T(0);
          ap[oy * ow + ox] = -1;
          continue;
        }
        // The first cell is the candidate to beat; the others by the rule (max_candidate_bits).
        T best = xp[sy.lo * ps.w + sx.lo];
        int32_t bi = int32_t(sy.lo * ps.w + sx.lo);
        for (int64_t iy = sy.lo; iy < sy.hi; ++iy)
          for (int64_t ix = iy == sy.lo ? sx.lo + 1 : sx.lo; ix < sx.hi; ++ix)
            max_candidate_bits(xp[iy * ps.w + ix], int32_t(iy * ps.w + ix), best, bi);
        yp[oy * ow + ox] = best;
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
