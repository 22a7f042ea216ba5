// kernels/cpu/conv.cpp: im2col / col2im and 2-D convolution (forward, backward data, backward filter)
// through the CPU GEMM.
//
// The batch is spread over threads one image at a time: each thread owns a column buffer
// [c*r*s, oh*ow] in the workspace (a few hundred KB for the shapes we train, so it stays in L2) and
// runs single-threaded GEMMs on it. The GEMMs read and write the NCHW tensors in place, so nothing is
// copied besides im2col itself, and 1x1 stride-1 unpadded convolutions skip im2col altogether.
// backward_filter sums each thread's images into a private slice of the workspace and adds the
// slices into gw in thread order, so results are deterministic for a given thread count.
// With fewer images than threads, images run one after another with the threads inside the GEMM.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {

bool is_pointwise(const ConvShape& s) {
  return s.r == 1 && s.s == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

int64_t col_elems(const ConvShape& s) { return is_pointwise(s) ? 0 : s.c * s.r * s.s * s.oh() * s.ow(); }
int64_t filter_elems(const ConvShape& s) { return s.k * s.c * s.r * s.s + s.k; }

// Threads the kernels may use, never more than the workspace was sized for: the workspace counts
// max(max_threads, procs) slots, the kernels use at most min(max_threads, procs), so a thread-count
// change between sizing and use cannot overrun it.
int workspace_slots() { return std::max(omp_get_max_threads(), omp_get_num_procs()); }
int conv_threads(int64_t images) {
  if (omp_in_parallel()) return 1;
  return int(std::min<int64_t>(std::min(omp_get_max_threads(), omp_get_num_procs()), images));
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

template <class T> void im2col_image(const ConvShape& sh, const T* x, T* col) {
  const int64_t oh = sh.oh(), ow = sh.ow(), ohw = oh * ow;
  for (int64_t s = 0; s < sh.s; ++s) {
    const ColRange cr = valid_cols(sh.w, ow, sh.stride_w, sh.pad_w, s);
    const int64_t ix0 = cr.lo * sh.stride_w - sh.pad_w + s;  // input column of the first valid ox
    for (int64_t c = 0; c < sh.c; ++c) {
      for (int64_t r = 0; r < sh.r; ++r) {
        T* dst = col + ((c * sh.r + r) * sh.s + s) * ohw;
        for (int64_t oy = 0; oy < oh; ++oy, dst += ow) {
          const int64_t iy = oy * sh.stride_h - sh.pad_h + r;
          if (iy < 0 || iy >= sh.h) {
            std::fill(dst, dst + ow, T(0));
            continue;
          }
          const T* src = x + (c * sh.h + iy) * sh.w + ix0;
          std::fill(dst, dst + cr.lo, T(0));
          if (sh.stride_w == 1) {
            std::memcpy(dst + cr.lo, src, size_t(cr.hi - cr.lo) * sizeof(T));
          } else {
            for (int64_t ox = cr.lo; ox < cr.hi; ++ox) dst[ox] = src[(ox - cr.lo) * sh.stride_w];
          }
          std::fill(dst + cr.hi, dst + ow, T(0));
        }
      }
    }
  }
}

template <class T> void col2im_image(const ConvShape& sh, const T* col, T* x) {
  const int64_t oh = sh.oh(), ow = sh.ow(), ohw = oh * ow;
  std::fill(x, x + sh.c * sh.h * sh.w, T(0));
  for (int64_t c = 0; c < sh.c; ++c) {
    for (int64_t r = 0; r < sh.r; ++r) {
      for (int64_t s = 0; s < sh.s; ++s) {
        const ColRange cr = valid_cols(sh.w, ow, sh.stride_w, sh.pad_w, s);
        const int64_t ix0 = cr.lo * sh.stride_w - sh.pad_w + s;
        const T* src = col + ((c * sh.r + r) * sh.s + s) * ohw;
        for (int64_t oy = 0; oy < oh; ++oy, src += ow) {
          const int64_t iy = oy * sh.stride_h - sh.pad_h + r;
          if (iy < 0 || iy >= sh.h) continue;
          T* dst = x + (c * sh.h + iy) * sh.w + ix0;
          if (sh.stride_w == 1) {
            for (int64_t ox = cr.lo; ox < cr.hi; ++ox) dst[ox - cr.lo] += src[ox];
          } else {
            for (int64_t ox = cr.lo; ox < cr.hi; ++ox) dst[(ox - cr.lo) * sh.stride_w] += src[ox];
          }
        }
      }
    }
  }
}

// Runs body(image, slot) for every image: spread over threads (slot = thread) or, with fewer images
// than threads, one after another in slot 0 with the GEMMs themselves parallel.
template <class F> int for_each_image(int64_t images, F body) {
  const int threads = conv_threads(images);
  if (threads <= 1) {
    for (int64_t i = 0; i < images; ++i) body(i, 0);
    return 1;
  }
#pragma omp parallel num_threads(threads)
  {
    const int slot = omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < images; ++i) body(i, slot);
  }
  return threads;
}

}  // namespace

template <class T> void im2col(const CpuCtx&, const ConvShape& s, const T* x_image, T* col) {
  im2col_image(s, x_image, col);
}

template <class T> void col2im(const CpuCtx&, const ConvShape& s, const T* col, T* x_image) {
  col2im_image(s, col, x_image);
}

int64_t conv2d_workspace_elems(const CpuCtx&, const ConvShape& s) {
  return int64_t(workspace_slots()) * (col_elems(s) + filter_elems(s));
}

template <class T>
void conv2d_forward(const CpuCtx& ctx, const ConvShape& s, const T* x, const T* w, const T* bias, T* y, T* ws) {
  const int64_t ohw = s.oh() * s.ow(), chw = s.c * s.h * s.w, crs = s.c * s.r * s.s, col_n = col_elems(s);
  const bool pointwise = is_pointwise(s);
  for_each_image(s.n, [&](int64_t i, int slot) {
    T* yi = y + i * s.k * ohw;
    const T beta = bias ? T(1) : T(0);
    if (bias)
      for (int64_t k = 0; k < s.k; ++k) std::fill(yi + k * ohw, yi + (k + 1) * ohw, bias[k]);
    const T* cols = x + i * chw;
    if (!pointwise) {
      T* col = ws + slot * col_n;
      im2col_image(s, x + i * chw, col);
      cols = col;
    }
    gemm(ctx, false, false, s.k, ohw, crs, T(1), w, crs, cols, ohw, beta, yi, ohw);
  });
}

template <class T>
void conv2d_backward_data(const CpuCtx& ctx, const ConvShape& s, const T* gy, const T* w, T* gx, T* ws) {
  const int64_t ohw = s.oh() * s.ow(), chw = s.c * s.h * s.w, crs = s.c * s.r * s.s, col_n = col_elems(s);
  const bool pointwise = is_pointwise(s);
  for_each_image(s.n, [&](int64_t i, int slot) {
    const T* gyi = gy + i * s.k * ohw;
    if (pointwise) {
      gemm(ctx, true, false, s.c, ohw, s.k, T(1), w, s.c, gyi, ohw, T(0), gx + i * chw, ohw);
      return;
    }
    T* col = ws + slot * col_n;
    gemm(ctx, true, false, crs, ohw, s.k, T(1), w, crs, gyi, ohw, T(0), col, ohw);
    col2im_image(s, col, gx + i * chw);
  });
}

template <class T>
void conv2d_backward_filter(const CpuCtx& ctx, const ConvShape& s, const T* x, const T* gy, T* gw, T* gb, T* ws) {
  const int64_t ohw = s.oh() * s.ow(), chw = s.c * s.h * s.w, crs = s.c * s.r * s.s, col_n = col_elems(s);
  const int64_t w_n = s.k * crs;
  const bool pointwise = is_pointwise(s);
  const int threads = conv_threads(s.n);
  // With one thread the images add straight into gw/gb; otherwise into per-thread slices after the
  // column buffers.
  T* partial = ws + int64_t(threads) * col_n;
  if (threads > 1) std::fill(partial, partial + int64_t(threads) * filter_elems(s), T(0));
  for_each_image(s.n, [&](int64_t i, int slot) {
    T* gw_t = threads > 1 ? partial + slot * filter_elems(s) : gw;
    T* gb_t = threads > 1 ? gw_t + w_n : gb;
    const T* gyi = gy + i * s.k * ohw;
    const T* cols = x + i * chw;
    if (!pointwise) {
      T* col = ws + slot * col_n;
      im2col_image(s, x + i * chw, col);
      cols = col;
    }
    gemm(ctx, false, true, s.k, crs, ohw, T(1), gyi, ohw, cols, ohw, T(1), gw_t, crs);
    if (gb_t) {
      for (int64_t k = 0; k < s.k; ++k) {
        const T* row = gyi + k * ohw;
        T sum = T(0);
        for (int64_t j = 0; j < ohw; ++j) sum += row[j];
        gb_t[k] += sum;
      }
    }
  });
  if (threads <= 1) return;
  const int64_t stride = filter_elems(s);
#pragma omp parallel for schedule(static) num_threads(threads) if (w_n >= (1 << 14))
  for (int64_t j = 0; j < w_n; ++j) {
    T sum = partial[j];
    for (int t = 1; t < threads; ++t) sum += partial[t * stride + j];
    gw[j] += sum;
  }
  if (gb) {
    for (int64_t k = 0; k < s.k; ++k) {
      T sum = partial[w_n + k];
      for (int t = 1; t < threads; ++t) sum += partial[t * stride + w_n + k];
      gb[k] += sum;
    }
  }
}

#define HAMU_CONV_INSTANTIATE(T)                                                                            \
  template void im2col<T>(const CpuCtx&, const ConvShape&, const T*, T*);                                   \
  template void col2im<T>(const CpuCtx&, const ConvShape&, const T*, T*);                                   \
  template void conv2d_forward<T>(const CpuCtx&, const ConvShape&, const T*, const T*, const T*, T*, T*);   \
  template void conv2d_backward_data<T>(const CpuCtx&, const ConvShape&, const T*, const T*, T*, T*);       \
  template void conv2d_backward_filter<T>(const CpuCtx&, const ConvShape&, const T*, const T*, T*, T*, T*);
HAMU_CONV_INSTANTIATE(float)
HAMU_CONV_INSTANTIATE(double)
#undef HAMU_CONV_INSTANTIATE

}  // namespace hamu::kernels
