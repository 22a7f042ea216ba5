// kernels/cpu/conv.cpp: im2col / col2im and 2-D convolution (forward, backward data, backward filter)
// on the CPU, and the forward with frozen BatchNorm (+ residual add) (+ ReLU) as its epilogue.
//
// The batch is spread over threads an image at a time; each thread owns a slot of the workspace and
// runs single-threaded loops on it. Images are handed out dynamically, so a thread the OS preempts
// (the cores are shared) does not hold the others up. Three ways through a pass, chosen by shape:
//  - shifted (stride 1, planes 24+ wide, 8+ channels each way): no column buffer; the micro-tile
//    multiplies weights packed once per call into windows of the zero-padded input planes, which
//    stay in L1 ("Stride-1 convolutions as shifted GEMMs" below). Backward data is the same on the
//    padded output gradient; backward filter takes dot products against the windows.
//  - packed (the other shapes, 2+ images): im2col into the slot (1x1 stride-1 unpadded: the input
//    itself), then the same micro-tile over the column buffer, weights again packed once per call.
//  - GEMM (a single image: the GEMM then runs on all threads; and the filter gradient of shapes with
//    many output channels over small planes, where the GEMM's packing is amortised).
// The filter gradient of few output channels over large planes (or of few column rows) is register-
// blocked dot products instead of a GEMM, which would transpose the whole column buffer per image.
// backward_filter sums fixed chunks of consecutive images into slices of the workspace, whichever
// thread runs them, and adds the slices into gw in chunk order: every result depends on the shape and
// the processor count only, not on the OpenMP thread count or the scheduling.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/bn_act.h"
#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"
#include "kernels/perf.h"

namespace hamu::kernels {
namespace {

bool is_pointwise(const ConvShape& s) {
  return s.r == 1 && s.s == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

// Row stride for buffers of plane-sized rows. Rows a multiple of 512 bytes apart map to the same few
// L1 sets, and the multiply loops walk 8-16 of them at once (a 32x32 plane is exactly 4 KB of floats):
// one cache line of padding per row made the 16->16 32x32 forward GEMM 1.35x faster.
int64_t padded_ld(int64_t n) { return n % 128 == 0 ? n + 16 : n; }
int64_t col_ld(const ConvShape& s) { return padded_ld(s.oh() * s.ow()); }
int64_t col_elems(const ConvShape& s) { return is_pointwise(s) ? 0 : s.c * s.r * s.s * col_ld(s); }
int64_t filter_elems(const ConvShape& s) { return s.k * s.c * s.r * s.s + s.k; }

// The workspace has a column buffer per processor and the kernels never run more threads than there
// are processors, so a change of the OpenMP thread count between sizing and use cannot overrun it.
int64_t workspace_slots() { return std::max(1, omp_get_num_procs()); }
int conv_threads(int64_t items) {
  if (omp_in_parallel() || items <= 1) return 1;
  return int(std::clamp<int64_t>(std::min(omp_get_max_threads(), omp_get_num_procs()), 1, items));
}

// backward_filter's image chunks: enough to balance the threads dynamically (up to 4 per processor,
// at most 16) while their filter-gradient slices stay within 4M elements.
int64_t filter_chunks(const ConvShape& s) {
  const int64_t by_memory = std::max<int64_t>(1, (int64_t(1) << 22) / filter_elems(s));
  const int64_t wanted = std::min<int64_t>(16, 4 * workspace_slots());
  return std::clamp<int64_t>(std::min(wanted, by_memory), 1, std::max<int64_t>(1, s.n));
}

// The output columns ox whose input column ix = ox*stride - pad + s lies inside [0, w): [lo, hi).
struct ColRange {
  int64_t lo, hi;
};
ColRange valid_cols(int64_t w, int64_t ow, int64_t stride, int64_t pad, int64_t s) {
  int64_t lo = 0;
  if (pad - s > 0) lo = (pad - s + stride - 1) / stride;
  int64_t hi = (w - 1 + pad - s) >= 0 ? (w - 1 + pad - s) / stride + 1 : 0;
  lo = std::min(lo, ow);
  hi = std::clamp(hi, lo, ow);
  return {lo, hi};
}

// "Same" stride-1 convolutions (output as large as the input) shift each input plane by (r - pad_h,
// s - pad_w): one contiguous copy per column row, then the few cells that fell into the padding are
// zeroed. That is most of our convolutions (3x3 pad 1), and the copy is a single memcpy per row.
bool is_same_size(const ConvShape& s) {
  return s.stride_h == 1 && s.stride_w == 1 && s.oh() == s.h && s.ow() == s.w;
}

// Zero the columns [0, lo) and [hi, ow) of an oh x ow plane. Column-wise on purpose: row-wise, GCC
// turns each one- or two-element run into a call to memset.
template <class T> void zero_border_cols(T* plane, int64_t oh, int64_t ow, int64_t lo, int64_t hi) {
  for (int64_t ox = 0; ox < lo; ++ox)
    for (int64_t oy = 0; oy < oh; ++oy) plane[oy * ow + ox] = T(0);
  for (int64_t ox = hi; ox < ow; ++ox)
    for (int64_t oy = 0; oy < oh; ++oy) plane[oy * ow + ox] = T(0);
}

template <class T> void im2col_same(const ConvShape& sh, const T* x, T* col, int64_t ld) {
  const int64_t h = sh.h, w = sh.w, hw = h * w;
  for (int64_t c = 0; c < sh.c; ++c) {
    const T* plane = x + c * hw;
    for (int64_t r = 0; r < sh.r; ++r) {
      const int64_t dy = r - sh.pad_h;
      const int64_t oy_lo = std::clamp<int64_t>(-dy, 0, h), oy_hi = std::clamp<int64_t>(h - dy, oy_lo, h);
      for (int64_t s = 0; s < sh.s; ++s) {
        const int64_t dx = s - sh.pad_w;
        const int64_t ox_lo = std::clamp<int64_t>(-dx, 0, w), ox_hi = std::clamp<int64_t>(w - dx, ox_lo, w);
        T* dst = col + ((c * sh.r + r) * sh.s + s) * ld;
        if (oy_lo >= oy_hi || ox_lo >= ox_hi) {
          std::fill(dst, dst + hw, T(0));
          continue;
        }
        if (oy_lo > 0) std::fill(dst, dst + oy_lo * w, T(0));
        if (oy_hi < h) std::fill(dst + oy_hi * w, dst + hw, T(0));
        // Flat range from the first valid cell to the last; its source stays inside the plane.
        const int64_t q0 = oy_lo * w + ox_lo, q1 = (oy_hi - 1) * w + ox_hi;
        std::memcpy(dst + q0, plane + q0 + dy * w + dx, size_t(q1 - q0) * sizeof(T));
        zero_border_cols(dst + oy_lo * w, oy_hi - oy_lo, w, ox_lo, ox_hi);
      }
    }
  }
}

// dst[i] = src[2 * i] for i < n, where src[0..readable) may be read: with AVX-512 a vector at a time
// (which reads 2 * lanes - 1 elements; the scalar gather was 40% of im2col for the stride-2 layers).
template <class T> void gather_stride2(const T* src, T* dst, int64_t n, int64_t readable) {
  int64_t i = 0;
  if constexpr (kHasLoadEven) {
    using S = Simd<T>;
    for (; i + S::lanes <= n && 2 * (i + S::lanes) - 1 <= readable; i += S::lanes)
      S::store(dst + i, S::load_even(src + 2 * i));
  }
  for (; i < n; ++i) dst[i] = src[2 * i];
}

// dst[2 * i] += src[i] for i < n, where dst[0..writable) may be read and written back: the adjoint of
// gather_stride2, for col2im (each element gets the same additions in the same order as one by one).
template <class T> void scatter_add_stride2(const T* src, T* dst, int64_t n, int64_t writable) {
  int64_t i = 0;
  if constexpr (kHasLoadEven) {
    using S = Simd<T>;
    for (; i + S::lanes <= n && 2 * (i + S::lanes) - 1 <= writable; i += S::lanes)
      S::add_even(dst + 2 * i, S::load(src + i));
  }
  for (; i < n; ++i) dst[2 * i] += src[i];
}

// col [c*r*s rows, oh*ow columns, row stride ld]
template <class T> void im2col_image(const ConvShape& sh, const T* x, T* col, int64_t ld) {
  if (is_same_size(sh)) return im2col_same(sh, x, col, ld);
  const int64_t oh = sh.oh(), ow = sh.ow(), sw = sh.stride_w;
  for (int64_t s = 0; s < sh.s; ++s) {
    const ColRange cr = valid_cols(sh.w, ow, sw, sh.pad_w, s);
    const int64_t ix0 = cr.lo * sw - sh.pad_w + s;  // input column of the first valid ox
    for (int64_t c = 0; c < sh.c; ++c) {
      for (int64_t r = 0; r < sh.r; ++r) {
        T* dst = col + ((c * sh.r + r) * sh.s + s) * ld;
        for (int64_t oy = 0; oy < oh; ++oy) {
          T* row = dst + oy * ow;
          const int64_t iy = oy * sh.stride_h - sh.pad_h + r;
          if (iy < 0 || iy >= sh.h) {
            std::fill(row, row + ow, T(0));
            continue;
          }
          const T* src = x + (c * sh.h + iy) * sh.w + ix0 - cr.lo * sw;  // src[ox * sw] for valid ox
          if (sw == 1) {
            for (int64_t ox = cr.lo; ox < cr.hi; ++ox) row[ox] = src[ox];
          } else if (sw == 2) {
            gather_stride2(src + cr.lo * 2, row + cr.lo, cr.hi - cr.lo, sh.w - ix0);
          } else {
            for (int64_t ox = cr.lo; ox < cr.hi; ++ox) row[ox] = src[ox * sw];
          }
        }
        zero_border_cols(dst, oh, ow, cr.lo, cr.hi);
      }
    }
  }
}

template <class T> void col2im_image(const ConvShape& sh, const T* col, int64_t ld, T* x) {
  const int64_t oh = sh.oh(), ow = sh.ow();
  std::fill(x, x + sh.c * sh.h * sh.w, T(0));
  for (int64_t c = 0; c < sh.c; ++c) {
    for (int64_t r = 0; r < sh.r; ++r) {
      for (int64_t s = 0; s < sh.s; ++s) {
        const ColRange cr = valid_cols(sh.w, ow, sh.stride_w, sh.pad_w, s);
        const int64_t ix0 = cr.lo * sh.stride_w - sh.pad_w + s;
        const T* src = col + ((c * sh.r + r) * sh.s + s) * ld;
        for (int64_t oy = 0; oy < oh; ++oy, src += ow) {
          const int64_t iy = oy * sh.stride_h - sh.pad_h + r;
          if (iy < 0 || iy >= sh.h) continue;
          T* dst = x + (c * sh.h + iy) * sh.w + ix0;
          if (sh.stride_w == 1) {
            for (int64_t ox = cr.lo; ox < cr.hi; ++ox) dst[ox - cr.lo] += src[ox];
          } else if (sh.stride_w == 2) {
            scatter_add_stride2(src + cr.lo, dst, cr.hi - cr.lo, sh.w - ix0);
          } else {
            for (int64_t ox = cr.lo; ox < cr.hi; ++ox) dst[(ox - cr.lo) * sh.stride_w] += src[ox];
          }
        }
      }
    }
  }
}

// col2im for "same" stride-1 convolutions that may overwrite col (backward_data's own buffer): the
// cells of each column row whose input lies in the padding are zeroed, after which the row adds to
// the shifted input plane as one long contiguous run instead of a short run per output row.
template <class T> void col2im_same_clobber(const ConvShape& sh, T* col, int64_t ld, T* x) {
  const int64_t h = sh.h, w = sh.w, hw = h * w;
  for (int64_t c = 0; c < sh.c; ++c) {
    T* __restrict plane = x + c * hw;
    std::fill(plane, plane + hw, T(0));
    for (int64_t r = 0; r < sh.r; ++r) {
      const int64_t dy = r - sh.pad_h;
      const int64_t oy_lo = std::clamp<int64_t>(-dy, 0, h), oy_hi = std::clamp<int64_t>(h - dy, oy_lo, h);
      for (int64_t s = 0; s < sh.s; ++s) {
        const int64_t dx = s - sh.pad_w;
        const int64_t ox_lo = std::clamp<int64_t>(-dx, 0, w), ox_hi = std::clamp<int64_t>(w - dx, ox_lo, w);
        if (oy_lo >= oy_hi || ox_lo >= ox_hi) continue;
        T* src = col + ((c * sh.r + r) * sh.s + s) * ld;
        zero_border_cols(src + oy_lo * w, oy_hi - oy_lo, w, ox_lo, ox_hi);
        const int64_t q0 = oy_lo * w + ox_lo, len = (oy_hi - 1) * w + ox_hi - q0;
        T* __restrict dst = plane + q0 + dy * w + dx;
        const T* __restrict from = src + q0;
        for (int64_t q = 0; q < len; ++q) dst[q] += from[q];
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Stride-1 convolutions as shifted GEMMs, without a column buffer. With the input zero-padded into
// planes hp x wp, column row (c, r, s) of im2col at "wide" output position j = oy*wp + ox is simply
// padded[c][j + r*wp + s]: every row is a window of the padded image at a fixed offset. A micro-tile
// of output channels x wide positions multiplies the packed weights into those windows straight from
// the padded planes (a few KB per channel, in L1) instead of a column buffer 9x the input (for
// 16->16 at 32x32, 590 KB per image, which im2col wrote and the GEMM read back from L2). The wide
// output has wp - ow junk columns per row (6% at 32x32, more on narrower planes: see use_shifted),
// dropped by a compacting copy.
// Backward data is the same operation on the output gradient, padded by r-1-pad, with the weights
// flipped and transposed; backward filter takes dot products of the widened output gradient (junk
// columns zero) with the windows.

constexpr int kShiftRows = kRegisters >= 32 ? 8 : 6;  // output channels per micro-tile
constexpr int kShiftVecs = 2;                         // vectors of wide positions per micro-tile
constexpr int64_t kShiftTileMax = 32;                 // the widest micro-tile, in elements (sizing)
static_assert(kShiftVecs * Simd<float>::lanes <= kShiftTileMax);
constexpr int64_t kShiftBlock = 256;  // wide positions per pass over the output channels (L1 reuse)

// Where the micro-tile finds its B rows: row (c, r, s) starts at c*plane + r*wp + s. A column buffer
// (or any matrix of rows `plane` apart) is the case r = s = 1.
struct Windows {
  int64_t channels, r, s, plane, wp;
};

// One image's shifted pass: cin planes h x w padded by (pad_h, pad_w), an r x s kernel, cout outputs.
struct Shifted {
  int64_t cin, h, w, pad_h, pad_w, r, s, cout;
  int64_t hp() const { return h + 2 * pad_h; }
  int64_t wp() const { return w + 2 * pad_w; }
  int64_t oh() const { return hp() - r + 1; }
  int64_t ow() const { return wp() - s + 1; }
  int64_t plane() const { return hp() * wp(); }
  int64_t wide() const { return oh() * wp(); }
  int64_t rows() const { return cin * r * s; }
  // The last micro-tile reads up to a tile past the last plane: that slack is zeroed.
  int64_t in_elems() const { return cin * plane() + s + kShiftTileMax; }
  int64_t out_ld() const { return padded_ld((wide() + kShiftTileMax - 1) / kShiftTileMax * kShiftTileMax); }
  int64_t out_elems() const { return cout * out_ld(); }
  Windows windows() const { return {cin, r, s, plane(), wp()}; }
};

Shifted shifted_forward(const ConvShape& s) { return {s.c, s.h, s.w, s.pad_h, s.pad_w, s.r, s.s, s.k}; }
// Backward data: the output gradient [k, oh, ow] padded by r-1-pad gives back planes of h x w.
Shifted shifted_backward(const ConvShape& s) {
  return {s.k, s.oh(), s.ow(), s.r - 1 - s.pad_h, s.s - 1 - s.pad_w, s.r, s.s, s.c};
}

// Stride 1 with a real kernel (1x1 unpadded needs no im2col anyway), padding that the backward pass
// can mirror, planes wide enough that the junk columns stay a small fraction (on 16x16 and 14x14
// planes im2col with packed_gemm measured as fast or up to 10% faster; on 32x32, 10-20% slower),
// enough channels both ways to fill a micro-tile's rows in either direction (the cnn's 1->32 first
// layer measured 4x slower backward), and several images: a single image runs its GEMMs on all threads.
bool use_shifted(const ConvShape& s) {
  return s.stride_h == 1 && s.stride_w == 1 && s.r * s.s > 1 && s.pad_h <= s.r - 1 && s.pad_w <= s.s - 1 &&
         s.ow() >= 24 && s.c >= 8 && s.k >= 8 && s.n >= 2;
}

// Packed weights, in panels of kShiftRows rows: [k rows, c*r*s] forward, [c rows, k*r*s] shifted
// backward data, [c*r*s rows, k] im2col backward data.
int64_t packed_weight_elems(const ConvShape& s) {
  const auto panels = [](int64_t rows) { return (rows + kShiftRows - 1) / kShiftRows * kShiftRows; };
  const int64_t rs = s.r * s.s;
  return std::max({panels(s.k) * s.c * rs, panels(s.c) * s.k * rs, panels(s.c * rs) * s.k});
}

// packed_gemm's buffer for a partial last tile, for either pass's inner dimension.
int64_t edge_elems(const ConvShape& s) { return (std::max(s.c * s.r * s.s, s.k) + kShiftRows) * kShiftTileMax; }

// Forward and backward data of the other shapes: im2col (where needed) and packed_gemm, whose weights
// are packed once per call (1.1-1.45x the GEMM over the shapes of bench_gemm's table, single thread).
// A single image keeps the GEMM, which then runs on all threads.
bool use_packed(const ConvShape& s) { return s.n >= 2; }

// A[row][p] -> kShiftRows-row panels, p-major inside: dst[(panel * cols + p) * kShiftRows + i], zero
// rows past the end.
template <class T, class F> void pack_panels(int64_t rows, int64_t cols, F at, T* dst) {
  for (int64_t i0 = 0; i0 < rows; i0 += kShiftRows)
    for (int64_t p = 0; p < cols; ++p)
      for (int64_t i = 0; i < kShiftRows; ++i) *dst++ = i0 + i < rows ? at(i0 + i, p) : T(0);
}

template <class T> void pad_planes(const Shifted& g, const T* x, T* xp) {
  const int64_t wp = g.wp();
  for (int64_t c = 0; c < g.cin; ++c) {
    T* dst = xp + c * g.plane();
    std::fill(dst, dst + g.pad_h * wp, T(0));
    for (int64_t y = 0; y < g.h; ++y) {
      T* row = dst + (y + g.pad_h) * wp;
      std::fill(row, row + g.pad_w, T(0));
      std::memcpy(row + g.pad_w, x + (c * g.h + y) * g.w, size_t(g.w) * sizeof(T));
      std::fill(row + g.pad_w + g.w, row + wp, T(0));
    }
    std::fill(dst + (g.pad_h + g.h) * wp, dst + g.plane(), T(0));
  }
  std::fill(xp + g.cin * g.plane(), xp + g.in_elems(), T(0));
}

// out[i][0..width) = sum over windows p of ap[p][i] * window_p[0..width), for kShiftRows rows (the first
// `rows` stored), width = kShiftVecs vectors.
template <class T>
void shifted_tile(const Windows& g, const T* __restrict ap, const T* __restrict xb, T* __restrict out, int64_t ldo,
                  int rows) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int mr = kShiftRows, nv = kShiftVecs, L = S::lanes;
  V acc[mr][nv];
#pragma GCC unroll 16
  for (int i = 0; i < mr; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < nv; ++v) acc[i][v] = S::zero();
  const auto step = [&](const T* b) {
    V bv[nv];
#pragma GCC unroll 4
    for (int v = 0; v < nv; ++v) bv[v] = S::load(b + v * L);
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i) {
      const V av = S::bcast(ap[i]);
#pragma GCC unroll 4
      for (int v = 0; v < nv; ++v) acc[i][v] = S::fma(av, bv[v], acc[i][v]);
    }
    ap += mr;
  };
  if (g.r == 1 && g.s == 1) {
    for (int64_t c = 0; c < g.channels; ++c) step(xb + c * g.plane);
  } else {
    for (int64_t c = 0; c < g.channels; ++c)
      for (int64_t r = 0; r < g.r; ++r)
        for (int64_t s = 0; s < g.s; ++s) step(xb + c * g.plane + r * g.wp + s);
  }
  for (int i = 0; i < rows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < nv; ++v) S::store(out + i * ldo + v * L, acc[i][v]);
}

// One image: in [cin, h, w] -> out [cout, oh, ow] (+ bias), through the slot's padded planes and wide
// output. apack holds the weights packed by pack_panels as [cout rows, cin*r*s].
template <class T>
void shifted_image(const Shifted& g, const T* apack, const T* in, const T* bias, T* out, T* slot) {
  constexpr int64_t tile = kShiftVecs * Simd<T>::lanes;
  T* xp = slot;
  T* wide_out = slot + g.in_elems();
  pad_planes(g, in, xp);
  const int64_t wide = g.wide(), ldo = g.out_ld(), rows = g.rows();
  for (int64_t j0 = 0; j0 < wide; j0 += kShiftBlock) {
    const int64_t j1 = std::min(j0 + kShiftBlock, wide);
    for (int64_t i0 = 0; i0 < g.cout; i0 += kShiftRows) {
      const T* ap = apack + i0 * rows;
      const int nrows = int(std::min<int64_t>(kShiftRows, g.cout - i0));
      for (int64_t j = j0; j < j1; j += tile)
        shifted_tile(g.windows(), ap, xp + j, wide_out + i0 * ldo + j, ldo, nrows);
    }
  }
  const int64_t oh = g.oh(), ow = g.ow(), wp = g.wp();
  for (int64_t k = 0; k < g.cout; ++k) {
    const T b = bias ? bias[k] : T(0);
    for (int64_t y = 0; y < oh; ++y) {
      const T* src = wide_out + k * ldo + y * wp;
      T* dst = out + (k * oh + y) * ow;
      if (bias) {
        for (int64_t x = 0; x < ow; ++x) dst[x] = src[x] + b;
      } else {
        std::memcpy(dst, src, size_t(ow) * sizeof(T));
      }
    }
  }
}

// out [m, n] (row stride ldo) = A [m, k] (packed by pack_panels) times B [k, n] (row stride ldb),
// through the shifted micro-tile with its weights packed once per call rather than once per image by
// the GEMM. B is read in place except for a last, partial tile of columns, which goes through `edge`
// (k * kShiftTileMax + kShiftRows * kShiftTileMax elements) so that nothing past B or out is touched.
template <class T>
void packed_gemm(int64_t m, int64_t n, int64_t k, const T* apack, const T* b, int64_t ldb, T* out, int64_t ldo,
                 T* edge) {
  constexpr int64_t tile = kShiftVecs * Simd<T>::lanes;
  const Windows rows{k, 1, 1, ldb, 0};
  const int64_t full = n / tile * tile;
  for (int64_t j0 = 0; j0 < full; j0 += kShiftBlock) {
    const int64_t j1 = std::min(j0 + kShiftBlock, full);
    for (int64_t i0 = 0; i0 < m; i0 += kShiftRows) {
      const int nrows = int(std::min<int64_t>(kShiftRows, m - i0));
      for (int64_t j = j0; j < j1; j += tile) shifted_tile(rows, apack + i0 * k, b + j, out + i0 * ldo + j, ldo, nrows);
    }
  }
  if (full == n) return;
  const int64_t cols = n - full;
  T* edge_out = edge + k * tile;
  for (int64_t p = 0; p < k; ++p) {
    std::memcpy(edge + p * tile, b + p * ldb + full, size_t(cols) * sizeof(T));
    std::fill(edge + p * tile + cols, edge + (p + 1) * tile, T(0));
  }
  for (int64_t i0 = 0; i0 < m; i0 += kShiftRows) {
    const int nrows = int(std::min<int64_t>(kShiftRows, m - i0));
    shifted_tile(Windows{k, 1, 1, tile, 0}, apack + i0 * k, edge, edge_out, tile, nrows);
    for (int i = 0; i < nrows; ++i)
      std::memcpy(out + (i0 + i) * ldo + full, edge_out + i * tile, size_t(cols) * sizeof(T));
  }
}

// The output gradient of one image widened to the forward pass's wide layout, junk columns zero.
template <class T> void widen_rows(const Shifted& g, const T* gy, T* gw_wide, int64_t ld) {
  const int64_t oh = g.oh(), ow = g.ow(), wp = g.wp();
  for (int64_t k = 0; k < g.cout; ++k)
    for (int64_t y = 0; y < oh; ++y) {
      T* dst = gw_wide + k * ld + y * wp;
      std::memcpy(dst, gy + (k * oh + y) * ow, size_t(ow) * sizeof(T));
      std::fill(dst + ow, dst + wp, T(0));
    }
}

int64_t shifted_slot_elems(const ConvShape& s) {
  const Shifted f = shifted_forward(s), b = shifted_backward(s);
  const int64_t filter = f.in_elems() + s.k * padded_ld(f.wide());
  return std::max({f.in_elems() + f.out_elems(), b.in_elems() + b.out_elems(), filter});
}

// Runs body(item, slot) for items [0, count), handed out dynamically to threads (slot = thread), or
// one after another in slot 0 when there is one thread or one item.
template <class F> void parallel_items(int64_t count, F body) {
  const int threads = conv_threads(count);
  if (threads <= 1) {
    for (int64_t i = 0; i < count; ++i) body(i, 0);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int slot = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < count; ++i) body(i, slot);
  }
}

}  // namespace

template <class T> void im2col(const CpuCtx&, const ConvShape& s, const T* x_image, T* col) {
  im2col_image(s, x_image, col, s.oh() * s.ow());
}

template <class T> void col2im(const CpuCtx&, const ConvShape& s, const T* col, T* x_image) {
  col2im_image(s, col, s.oh() * s.ow(), x_image);
}

namespace {

// The workspace: a buffer per processor (column buffer, or padded planes and wide output), the filter
// gradient's chunk slices, and the packed weights of the shifted passes.
int64_t slot_elems(const ConvShape& s) {
  const int64_t col = col_elems(s) + edge_elems(s);
  return use_shifted(s) ? std::max(col, shifted_slot_elems(s)) : col;
}
int64_t partial_offset(const ConvShape& s) { return workspace_slots() * slot_elems(s); }
int64_t pack_offset(const ConvShape& s) { return partial_offset(s) + filter_chunks(s) * filter_elems(s); }

}  // namespace

int64_t conv2d_workspace_elems(const CpuCtx&, const ConvShape& s) {
  return pack_offset(s) + packed_weight_elems(s);
}

namespace {

// What conv2d_bn_act_forward does to each image's output [k, oh*ow] right after computing it, while it is
// still in cache: BatchNorm on fixed statistics, the residual add and the ReLU (kernels/cpu/bn_act.h).
template <class T> struct BnActEpilogue {
  std::vector<T> mean, scale, shift;  // per output channel
  const T* residual = nullptr;        // [n, k, oh, ow] or null
  bool relu = false;
  void apply(const ConvShape& s, int64_t i, T* yi) const {
    const int64_t ohw = s.oh() * s.ow();
    for (int64_t k = 0; k < s.k; ++k) {
      const T* rp = residual ? residual + (i * s.k + k) * ohw : nullptr;
      bn_act::plane_any(ohw, yi + k * ohw, rp, mean[size_t(k)], scale[size_t(k)], shift[size_t(k)], relu,
                        yi + k * ohw);
    }
  }
};

template <class T>
void conv2d_forward_impl(const CpuCtx& ctx, const ConvShape& s, const T* x, const T* w, const T* bias, T* y, T* ws,
                         const BnActEpilogue<T>* epi) {
  const int64_t ohw = s.oh() * s.ow(), chw = s.c * s.h * s.w, crs = s.c * s.r * s.s, col_n = slot_elems(s);
  auto finish = [&](int64_t i, T* yi) {
    if (epi) epi->apply(s, i, yi);
  };
  if (use_shifted(s)) {
    T* apack = ws + pack_offset(s);
    pack_panels(s.k, crs, [w, crs](int64_t k, int64_t p) { return w[k * crs + p]; }, apack);
    parallel_items(s.n, [&](int64_t i, int slot) {
      T* yi = y + i * s.k * ohw;
      shifted_image(shifted_forward(s), apack, x + i * chw, bias, yi, ws + slot * col_n);
      finish(i, yi);
    });
    return;
  }
  const bool pointwise = is_pointwise(s);
  const int64_t ld = pointwise ? ohw : col_ld(s);
  if (use_packed(s)) {
    T* apack = ws + pack_offset(s);
    pack_panels(s.k, crs, [w, crs](int64_t k, int64_t p) { return w[k * crs + p]; }, apack);
    parallel_items(s.n, [&](int64_t i, int slot) {
      T* yi = y + i * s.k * ohw;
      T* col = ws + slot * col_n;
      const T* cols = x + i * chw;
      if (!pointwise) {
        im2col_image(s, x + i * chw, col, ld);
        cols = col;
      }
      packed_gemm(s.k, ohw, crs, apack, cols, ld, yi, ohw, col + col_elems(s));
      if (bias)
        for (int64_t k = 0; k < s.k; ++k)
          for (int64_t j = 0; j < ohw; ++j) yi[k * ohw + j] += bias[k];
      finish(i, yi);
    });
    return;
  }
  parallel_items(s.n, [&](int64_t i, int slot) {
    T* yi = y + i * s.k * ohw;
    const T beta = bias ? T(1) : T(0);
    if (bias)
      for (int64_t k = 0; k < s.k; ++k) std::fill(yi + k * ohw, yi + (k + 1) * ohw, bias[k]);
    const T* cols = x + i * chw;
    if (!pointwise) {
      T* col = ws + slot * col_n;
      im2col_image(s, x + i * chw, col, ld);
      cols = col;
    }
    gemm(ctx, false, false, s.k, ohw, crs, T(1), w, crs, cols, ld, beta, yi, ohw);
    finish(i, yi);
  });
}

}  // namespace

template <class T>
void conv2d_forward(const CpuCtx& ctx, const ConvShape& s, const T* x, const T* w, const T* bias, T* y, T* ws) {
  conv2d_forward_impl<T>(ctx, s, x, w, bias, y, ws, nullptr);
}

template <class T>
void conv2d_bn_act_forward(const CpuCtx& ctx, const ConvShape& s, const T* x, const T* w, const T* bias,
                           const T* gamma, const T* beta, const T* running_mean, const T* running_var, T eps,
                           const T* residual, bool relu, T* y, T* ws) {
  BnActEpilogue<T> epi;
  epi.residual = residual;
  epi.relu = relu;
  for (int64_t k = 0; k < s.k; ++k) {
    epi.mean.push_back(running_mean[k]);
    epi.scale.push_back(bn_act::scale_of(gamma, running_var, eps, k));
    epi.shift.push_back(beta ? beta[k] : T(0));
  }
  conv2d_forward_impl<T>(ctx, s, x, w, bias, y, ws, &epi);
}

template <class T>
void conv2d_backward_data(const CpuCtx& ctx, const ConvShape& s, const T* gy, const T* w, T* gx, T* ws) {
  const ProfScope prof(ProfKind::conv_bwd_data, -1);
  const int64_t ohw = s.oh() * s.ow(), chw = s.c * s.h * s.w, crs = s.c * s.r * s.s, col_n = slot_elems(s);
  if (use_shifted(s)) {
    // gx = the shifted convolution of gy padded by r-1-pad with w flipped and transposed:
    // A[c][(k, r', s')] = w[k, c, r-1-r', s-1-s'].
    const int64_t rs = s.r * s.s;
    T* apack = ws + pack_offset(s);
    pack_panels(
        s.c, s.k * rs,
        [&](int64_t c, int64_t p) {
          const int64_t k = p / rs, r = p % rs / s.s, q = p % s.s;
          return w[((k * s.c + c) * s.r + s.r - 1 - r) * s.s + s.s - 1 - q];
        },
        apack);
    parallel_items(s.n, [&](int64_t i, int slot) {
      shifted_image(shifted_backward(s), apack, gy + i * s.k * ohw, static_cast<const T*>(nullptr), gx + i * chw,
                    ws + slot * col_n);
    });
    return;
  }
  const bool pointwise = is_pointwise(s);
  if (use_packed(s)) {
    // gx (or its column buffer) = w^T gy: A[j][k] = w[k, j] for j < c*r*s.
    T* apack = ws + pack_offset(s);
    pack_panels(crs, s.k, [w, crs](int64_t j, int64_t k) { return w[k * crs + j]; }, apack);
    parallel_items(s.n, [&](int64_t i, int slot) {
      const T* gyi = gy + i * s.k * ohw;
      T* col = ws + slot * col_n;
      T* edge = col + col_elems(s);
      if (pointwise) return packed_gemm(s.c, ohw, s.k, apack, gyi, ohw, gx + i * chw, ohw, edge);
      const int64_t ld = col_ld(s);
      packed_gemm(crs, ohw, s.k, apack, gyi, ohw, col, ld, edge);
      if (is_same_size(s)) {
        col2im_same_clobber(s, col, ld, gx + i * chw);
      } else {
        col2im_image(s, col, ld, gx + i * chw);
      }
    });
    return;
  }
  parallel_items(s.n, [&](int64_t i, int slot) {
    const T* gyi = gy + i * s.k * ohw;
    if (pointwise) {
      gemm(ctx, true, false, s.c, ohw, s.k, T(1), w, s.c, gyi, ohw, T(0), gx + i * chw, ohw);
      return;
    }
    T* col = ws + slot * col_n;
    const int64_t ld = col_ld(s);
    gemm(ctx, true, false, crs, ohw, s.k, T(1), w, crs, gyi, ohw, T(0), col, ld);
    if (is_same_size(s)) {
      col2im_same_clobber(s, col, ld, gx + i * chw);
    } else {
      col2im_image(s, col, ld, gx + i * chw);
    }
  });
}

// Sum of x[0..n) in a fixed order: 32 interleaved partial sums (which the compiler keeps in vector
// registers) added pairwise at the end. A single running sum would be one long chain of dependent
// additions, slower than the GEMM it sits beside.
template <class T> T row_sum(const T* x, int64_t n) {
  constexpr int lanes = 32;
  T part[lanes] = {};
  int64_t j = 0;
  for (; j + lanes <= n; j += lanes)
    for (int l = 0; l < lanes; ++l) part[l] += x[j + l];
  for (int l = 0; j < n; ++j, ++l) part[l] += x[j];
  for (int width = lanes / 2; width > 0; width /= 2)
    for (int l = 0; l < width; ++l) part[l] += part[l + width];
  return part[0];
}

// The filter gradient of one image, gw[k, j] += sum_q gy[k, q] * col[j, q], as register-blocked dot
// products along q: both operands are read in place, row by row, where a GEMM would first transpose
// the column buffer into its packed layout (for these short-and-wide products the transpose cost 40%
// of the multiplications). kb rows of gy times cb rows of col accumulate in kb*cb vectors.
template <class T, int kb, int cb, class Rows>
void filter_dot_block(int64_t n, const T* g, int64_t ldg, const Rows& rows, int64_t j0, T* gw, int64_t ldw) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::lanes;
  const T* col[cb];
  for (int b = 0; b < cb; ++b) col[b] = rows(j0 + b);
  V acc[kb][cb];
#pragma GCC unroll 8
  for (int a = 0; a < kb; ++a)
#pragma GCC unroll 8
    for (int b = 0; b < cb; ++b) acc[a][b] = S::zero();
  int64_t q = 0;
  for (; q + L <= n; q += L) {
    V gv[kb];
#pragma GCC unroll 8
    for (int a = 0; a < kb; ++a) gv[a] = S::load(g + a * ldg + q);
#pragma GCC unroll 8
    for (int b = 0; b < cb; ++b) {
      V cv = S::load(col[b] + q);
      // Held in a register: GCC otherwise folds the load into each of the kb FMAs that use it, and
      // the loop becomes bound by loads instead of multiplies (1.6x slower).
#if defined(__x86_64__)
      asm("" : "+x"(cv));
#endif
#pragma GCC unroll 8
      for (int a = 0; a < kb; ++a) acc[a][b] = S::fma(gv[a], cv, acc[a][b]);
    }
  }
  for (int a = 0; a < kb; ++a)
    for (int b = 0; b < cb; ++b) {
      T sum = S::hsum(acc[a][b]);
      for (int64_t t = q; t < n; ++t) sum += g[a * ldg + t] * col[b][t];
      gw[a * ldw + b] += sum;
    }
}

// Blocks of 4 gy rows by as many col rows as the registers hold; the col block (a few rows of a
// plane) stays in L1 while the gy rows stream past it from L2.
constexpr int kFilterRows = 4;
constexpr int kFilterCols = kRegisters >= 32 ? 5 : 2;

template <class T, int kb, class Rows>
void filter_dot_row(int64_t n, int64_t j0, int64_t cols, const T* g, int64_t ldg, const Rows& rows, T* gw,
                    int64_t ldw) {
  int64_t j = 0;
  for (; j + kFilterCols <= cols; j += kFilterCols)
    filter_dot_block<T, kb, kFilterCols>(n, g, ldg, rows, j0 + j, gw + j, ldw);
  for (; j < cols; ++j) filter_dot_block<T, kb, 1>(n, g, ldg, rows, j0 + j, gw + j, ldw);
}

// gw [k, cols] += gy [k, n] (row stride ldg) times the rows [cols, n] transposed, where rows(j) points
// at row j (a column-buffer row, or a shifted window of a padded input plane).
template <class T, class Rows>
void filter_dots(int64_t k, int64_t n, int64_t cols, const T* gy, int64_t ldg, const Rows& rows, T* gw) {
  constexpr int64_t chunk = 12 * kFilterCols;  // col rows per pass over gy: they stay in L1/L2 meanwhile
  for (int64_t j = 0; j < cols; j += chunk) {
    const int64_t jc = std::min<int64_t>(chunk, cols - j);
    int64_t a = 0;
    for (; a + kFilterRows <= k; a += kFilterRows)
      filter_dot_row<T, kFilterRows>(n, j, jc, gy + a * ldg, ldg, rows, gw + a * cols + j, cols);
    for (; a < k; ++a) filter_dot_row<T, 1>(n, j, jc, gy + a * ldg, ldg, rows, gw + a * cols + j, cols);
  }
}

// Dot products pay one horizontal sum per (output channel, column row) pair and image; the GEMM packs
// (transposes) the whole column buffer per image, a cost its output channels amortise. Measured on
// the shapes of bench_gemm's table: dots win with few column rows (C=1 3x3, 16-channel 1x1) or
// large planes over few output channels (16->16 at 32x32: 1.3x); the GEMM for 32+ output channels
// on 16x16 planes and below (up to 2.5x).
bool use_filter_dots(const ConvShape& s) {
  return s.c * s.r * s.s <= 16 || s.oh() * s.ow() >= 16 * s.k;
}

template <class T>
void conv2d_backward_filter(const CpuCtx& ctx, const ConvShape& s, const T* x, const T* gy, T* gw, T* gb, T* ws) {
  const ProfScope prof(ProfKind::conv_bwd_filter, -1);
  const int64_t ohw = s.oh() * s.ow(), chw = s.c * s.h * s.w, crs = s.c * s.r * s.s, col_n = slot_elems(s);
  const int64_t w_n = s.k * crs, slice = filter_elems(s), chunks = filter_chunks(s);
  const bool pointwise = is_pointwise(s);
  const int64_t ld = pointwise ? ohw : col_ld(s);
  const bool dots = use_filter_dots(s), shifted = dots && use_shifted(s);
  const Shifted g = shifted_forward(s);
  const int64_t rs = s.r * s.s, plane = g.plane(), wp = g.wp(), ldg = padded_ld(g.wide());
  T* partial = ws + partial_offset(s);
  parallel_items(chunks, [&](int64_t chunk, int slot) {
    T* gw_c = partial + chunk * slice;
    T* gb_c = gw_c + w_n;
    const int64_t first = s.n * chunk / chunks, last = s.n * (chunk + 1) / chunks;
    // The GEMM overwrites the slice with the chunk's first image (for 64->64 8x8 zeroing it first
    // cost 4% of the pass).
    std::fill(dots || first == last ? gw_c : gb_c, gw_c + slice, T(0));
    for (int64_t i = first; i < last; ++i) {
      const T* gyi = gy + i * s.k * ohw;
      if (shifted) {
        T* xp = ws + slot * col_n;
        T* gy_wide = xp + g.in_elems();
        pad_planes(g, x + i * chw, xp);
        widen_rows(g, gyi, gy_wide, ldg);
        const auto window = [&](int64_t j) { return xp + j / rs * plane + j % rs / s.s * wp + j % s.s; };
        filter_dots(s.k, g.wide(), crs, gy_wide, ldg, window, gw_c);
      } else {
        const T* cols = x + i * chw;
        if (!pointwise) {
          T* col = ws + slot * col_n;
          im2col_image(s, x + i * chw, col, ld);
          cols = col;
        }
        if (dots) {
          filter_dots(s.k, ohw, crs, gyi, ohw, [cols, ld](int64_t j) { return cols + j * ld; }, gw_c);
        } else {
          gemm(ctx, false, true, s.k, crs, ohw, T(1), gyi, ohw, cols, ld, i == first ? T(0) : T(1), gw_c, crs);
        }
      }
      if (gb)
        for (int64_t k = 0; k < s.k; ++k) gb_c[k] += row_sum(gyi + k * ohw, ohw);
    }
  });
  // The slices summed in chunk order, a block of elements at a time so that the additions run along
  // rows (vectorised) rather than down the chunks (a scalar gather: 6% of the 64->64 8x8 pass).
  constexpr int64_t block = 512;
  const int64_t blocks = (w_n + block - 1) / block;
  const int threads = w_n * chunks >= (1 << 16) ? conv_threads(blocks) : 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j0 = b * block, len = std::min(block, w_n - j0);
    T sum[block];
    std::copy(partial + j0, partial + j0 + len, sum);
    for (int64_t c = 1; c < chunks; ++c) {
      const T* part = partial + c * slice + j0;
      for (int64_t j = 0; j < len; ++j) sum[j] += part[j];
    }
    for (int64_t j = 0; j < len; ++j) gw[j0 + j] += sum[j];
  }
  if (gb) {
    for (int64_t k = 0; k < s.k; ++k) {
      T sum = partial[w_n + k];
      for (int64_t c = 1; c < chunks; ++c) sum += partial[c * slice + w_n + k];
      gb[k] += sum;
    }
  }
}

#define HAMU_CONV_INSTANTIATE(T)                                                                            \
  template void im2col<T>(const CpuCtx&, const ConvShape&, const T*, T*);                                   \
  template void col2im<T>(const CpuCtx&, const ConvShape&, const T*, T*);                                   \
  template void conv2d_forward<T>(const CpuCtx&, const ConvShape&, const T*, const T*, const T*, T*, T*);   \
  template void conv2d_bn_act_forward<T>(const CpuCtx&, const ConvShape&, const T*, const T*, const T*,       \
                                         const T*, const T*, const T*, const T*, T, const T*, bool, T*, T*);   \
  template void conv2d_backward_data<T>(const CpuCtx&, const ConvShape&, const T*, const T*, T*, T*);       \
  template void conv2d_backward_filter<T>(const CpuCtx&, const ConvShape&, const T*, const T*, T*, T*, T*);
HAMU_CONV_INSTANTIATE(float)
HAMU_CONV_INSTANTIATE(double)
#undef HAMU_CONV_INSTANTIATE

}  // namespace hamu::kernels
