// kernels/cpu/gemm.cpp: the CPU GEMM (float and double): packed, cache-blocked, register-tiled, OpenMP.
//
// The GotoBLAS/BLIS scheme, seen from row-major C. Rows of C are contiguous, so a micro-tile is mr
// rows by nr columns, the columns in SIMD vectors, op(A) broadcast one element at a time. The A
// micro-panel (mr x kc) is the operand a micro-tile reuses most and stays in L1; the packed B block
// (kc x nb) sits in L2 and streams through; the packed A panel (mb x ks) is shared from L3.
//
//   for each A panel of mb rows by ks columns of op(A)
//     all threads pack it into mr-row micro-panels, one per k block of kc      (shared buffer)
//     barrier
//     tasks (a B block of nb columns x a range of A micro-panels), dynamically scheduled:
//       for each k block: pack the B block into nr-column micro-panels         (per-thread buffer)
//                         for each A micro-panel, for each B micro-panel: micro-kernel
//
// A task covers all of k, so threads meet once per A panel, and several tasks per thread let the
// others route around a thread the OS has preempted (the cores are shared). Every element of C is
// summed by one thread in a fixed order (k blocks in order, k in order within a block), so results do
// not depend on the thread count or the scheduling. Small problems skip packing altogether.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

namespace hamu::kernels {
namespace {

// ------------------------------------------------------------------------------------------------
// Block sizes. mr * nv accumulators plus nv B vectors and one broadcast must fit the register file.
// mr = 8 divides the channel counts convolutions use (16, 32, 64), so their GEMMs waste no rows, and
// measured as fast as 12 or 14 rows on large problems.

template <class T> struct Blocking {
  static constexpr int nv = 2;                                   // vectors per micro-tile row
  static constexpr int nr = nv * Simd<T>::lanes;                 // micro-tile columns
  static constexpr int mr = kRegisters >= 32 ? 8 : 6;            // micro-tile rows
  static constexpr int64_t kc = sizeof(T) == 4 ? 384 : 256;      // A micro-panel mr x kc stays in L1
  static constexpr int64_t nb = sizeof(T) == 4 ? 512 : 384;      // B block kc x nb stays in L2
  static constexpr int64_t mb = sizeof(T) == 4 ? 1024 : 768;     // A panel mb x ks is shared from L3
  static constexpr int64_t ks = 6 * kc;                          // k columns of one A panel
};

// Below this many multiply-adds, packing costs more than it saves.
constexpr int64_t kDirectMax = 32 * 1024;
// A task with at most this many A micro-panels reads untransposed B in place instead of packing it.
constexpr int64_t kInPlaceBPanels = 4;
// A panels are packed in jobs of this many micro-panels.
constexpr int64_t kPackGroup = 8;
// Below this many multiply-adds per thread, a thread costs more than it saves.
constexpr int64_t kPerThreadMin = 1 << 18;

// ------------------------------------------------------------------------------------------------
// Packing buffers, per calling thread: allocated on first use, grown to the largest request (which
// the block constants and the thread count cap), kept for the life of the thread. The calling thread
// also holds its team's B buffers, so nothing is allocated inside a parallel region.

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

void* thread_buffer(int slot, size_t bytes) {
  struct Buffer {
    std::unique_ptr<void, FreeDeleter> mem;
    size_t bytes = 0;
  };
  static thread_local Buffer buffers[2];
  Buffer& b = buffers[slot];
  if (b.bytes < bytes) {
    const size_t rounded = (bytes + 4095) & ~size_t(4095);
    b.mem.reset();
    b.bytes = 0;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    b.mem.reset(p);
    b.bytes = rounded;
  }
  return b.mem.get();
}

enum : int { kSlotA = 0, kSlotB = 1 };

// ------------------------------------------------------------------------------------------------
// Square transposes for the two packings that transpose (op(A) not transposed, op(B) transposed):
// dst[j*ldd + i] = src[i*lds + j] for i, j < tile<T>, reading only the first `rows` rows of src
// (the rest count as zero, for the edge micro-panels). In registers where AVX-512 is there (a scalar
// transpose moves one element per cycle, which costs a quarter of the multiply time of a GEMM with
// 128 rows); kTransposeTile == 0 means "no fast transpose, pack element by element".

#if defined(__AVX512F__)
template <class T> constexpr int kTransposeTile = sizeof(T) == 4 ? 16 : 8;

// The all-lanes masked forms compile to the same instructions; the plain ones trip GCC 12's
// -Wmaybe-uninitialized on their internal undefined pass-through operand.
inline __m512d unpacklo(__m512d a, __m512d b) { return _mm512_mask_unpacklo_pd(a, __mmask8(0xFF), a, b); }
inline __m512d unpackhi(__m512d a, __m512d b) { return _mm512_mask_unpackhi_pd(a, __mmask8(0xFF), a, b); }
inline __m512 unpacklo(__m512 a, __m512 b) { return _mm512_mask_unpacklo_ps(a, __mmask16(0xFFFF), a, b); }
inline __m512 unpackhi(__m512 a, __m512 b) { return _mm512_mask_unpackhi_ps(a, __mmask16(0xFFFF), a, b); }
template <int imm> inline __m512d shuffle_lanes(__m512d a, __m512d b) {
  return _mm512_mask_shuffle_f64x2(a, __mmask8(0xFF), a, b, imm);
}
template <int imm> inline __m512 shuffle_lanes(__m512 a, __m512 b) {
  return _mm512_mask_shuffle_f32x4(a, __mmask16(0xFFFF), a, b, imm);
}

// 16 x 16 floats: pairs of rows interleaved, then pairs of pairs, then 128-bit lanes exchanged twice.
inline void transpose_tile(const float* src, int64_t lds, float* dst, int64_t ldd, int rows) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_loadu_ps(src + i * lds) : _mm512_setzero_ps();
  for (int i = 0; i < 16; i += 2) {
    t[i] = unpacklo(r[i], r[i + 1]);
    t[i + 1] = unpackhi(r[i], r[i + 1]);
  }
  // c[4g + m]: lane l holds column 4l + m of rows 4g..4g+3
  __m512 c[16];
  for (int g = 0; g < 4; ++g) {
    const __m512d lo0 = _mm512_castps_pd(t[4 * g]), hi0 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d lo1 = _mm512_castps_pd(t[4 * g + 2]), hi1 = _mm512_castps_pd(t[4 * g + 3]);
    c[4 * g + 0] = _mm512_castpd_ps(unpacklo(lo0, lo1));
    c[4 * g + 1] = _mm512_castpd_ps(unpackhi(lo0, lo1));
    c[4 * g + 2] = _mm512_castpd_ps(unpacklo(hi0, hi1));
    c[4 * g + 3] = _mm512_castpd_ps(unpackhi(hi0, hi1));
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 d0 = shuffle_lanes<0x44>(c[m], c[4 + m]), d1 = shuffle_lanes<0xEE>(c[m], c[4 + m]);
    const __m512 d2 = shuffle_lanes<0x44>(c[8 + m], c[12 + m]);
    const __m512 d3 = shuffle_lanes<0xEE>(c[8 + m], c[12 + m]);
    _mm512_storeu_ps(dst + (0 + m) * ldd, shuffle_lanes<0x88>(d0, d2));
    _mm512_storeu_ps(dst + (4 + m) * ldd, shuffle_lanes<0xDD>(d0, d2));
    _mm512_storeu_ps(dst + (8 + m) * ldd, shuffle_lanes<0x88>(d1, d3));
    _mm512_storeu_ps(dst + (12 + m) * ldd, shuffle_lanes<0xDD>(d1, d3));
  }
}

// 8 x 8 doubles: rows interleaved in pairs, then 128-bit lanes exchanged twice.
inline void transpose_tile(const double* src, int64_t lds, double* dst, int64_t ldd, int rows) {
  __m512d r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm512_loadu_pd(src + i * lds) : _mm512_setzero_pd();
  for (int i = 0; i < 8; i += 2) {
    t[i] = unpacklo(r[i], r[i + 1]);      // lane l: column 2l of rows i, i+1
    t[i + 1] = unpackhi(r[i], r[i + 1]);  // lane l: column 2l+1
  }
  for (int m = 0; m < 2; ++m) {
    const __m512d d0 = shuffle_lanes<0x44>(t[m], t[2 + m]), d1 = shuffle_lanes<0xEE>(t[m], t[2 + m]);
    const __m512d d2 = shuffle_lanes<0x44>(t[4 + m], t[6 + m]);
    const __m512d d3 = shuffle_lanes<0xEE>(t[4 + m], t[6 + m]);
    _mm512_storeu_pd(dst + (0 + m) * ldd, shuffle_lanes<0x88>(d0, d2));
    _mm512_storeu_pd(dst + (2 + m) * ldd, shuffle_lanes<0xDD>(d0, d2));
    _mm512_storeu_pd(dst + (4 + m) * ldd, shuffle_lanes<0x88>(d1, d3));
    _mm512_storeu_pd(dst + (6 + m) * ldd, shuffle_lanes<0xDD>(d1, d3));
  }
}

// 8 x 8 floats in 256-bit registers, for the 8-row A micro-panels.
inline void transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd, int rows) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm256_loadu_ps(src + i * lds) : _mm256_setzero_ps();
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int g = 0; g < 8; g += 4) {  // u[g + m]: lane l holds column 4l + m of rows g..g+3
    u[g + 0] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
    u[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xEE);
    u[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
    u[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
  }
  for (int m = 0; m < 4; ++m) {
    _mm256_storeu_ps(dst + m * ldd, _mm256_permute2f128_ps(u[m], u[4 + m], 0x20));
    _mm256_storeu_ps(dst + (4 + m) * ldd, _mm256_permute2f128_ps(u[m], u[4 + m], 0x31));
  }
}
inline void transpose_8x8(const double* src, int64_t lds, double* dst, int64_t ldd, int rows) {
  transpose_tile(src, lds, dst, ldd, rows);
}
#else
template <class T> constexpr int kTransposeTile = 0;
template <class T> inline void transpose_tile(const T*, int64_t, T*, int64_t, int) {}
template <class T> inline void transpose_8x8(const T*, int64_t, T*, int64_t, int) {}
#endif

// ------------------------------------------------------------------------------------------------
// Packing. op(A) rows [i0, i0+rows) x cols [p0, p0+kc) into micro-panels of mr rows:
// dst[panel][p][i]; rows past the edge are zero so the micro-kernel never branches.

template <class T>
void pack_a_panel(bool ta, const T* a, int64_t lda, int64_t i0, int64_t rows, int64_t p0, int64_t kc, T* dst) {
  constexpr int mr = Blocking<T>::mr;
  if (ta) {  // op(A)[i][p] = a[p*lda + i]: each p gives mr contiguous values
    for (int64_t p = 0; p < kc; ++p) {
      const T* src = a + (p0 + p) * lda + i0;
      T* d = dst + p * mr;
      if (rows == mr) {
        for (int i = 0; i < mr; ++i) d[i] = src[i];
      } else {
        for (int i = 0; i < mr; ++i) d[i] = i < rows ? src[i] : T(0);
      }
    }
    return;
  }
  // op(A)[i][p] = a[i*lda + p]: a transpose of mr rows
  int64_t p = 0;
  if (kTransposeTile<T> != 0 && mr == 8) {
    for (; p + 8 <= kc; p += 8) transpose_8x8(a + i0 * lda + p0 + p, lda, dst + p * mr, mr, int(rows));
  }
  const T* src[mr];
  for (int i = 0; i < mr; ++i) src[i] = a + (i0 + std::min<int64_t>(i, rows - 1)) * lda + p0;
  for (; p < kc; ++p)
    for (int i = 0; i < mr; ++i) dst[p * mr + i] = i < rows ? src[i][p] : T(0);
}

// op(B) rows [p0, p0+kc) x cols [j0, j0+cols) into one micro-panel of nr columns: dst[p][j].
template <class T>
void pack_b_panel(bool tb, const T* b, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t cols, T* dst) {
  constexpr int nr = Blocking<T>::nr;
  if (!tb) {  // op(B)[p][j] = b[p*ldb + j]: each p gives nr contiguous values
    using S = Simd<T>;
    constexpr int nv = Blocking<T>::nv;
    if (cols == nr) {
      for (int64_t p = 0; p < kc; ++p) {
        const T* src = b + (p0 + p) * ldb + j0;
        for (int v = 0; v < nv; ++v) S::store(dst + p * nr + v * S::lanes, S::load(src + v * S::lanes));
      }
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        const T* src = b + (p0 + p) * ldb + j0;
        T* d = dst + p * nr;
        for (int j = 0; j < nr; ++j) d[j] = j < cols ? src[j] : T(0);
      }
    }
    return;
  }
  // op(B)[p][j] = b[j*ldb + p]: a transpose of nr rows of b, a square tile at a time.
  constexpr int tile = kTransposeTile<T>;
  int64_t ps = 0;
  if (tile != 0 && nr % (tile == 0 ? 1 : tile) == 0) {
    for (; ps + tile <= kc; ps += tile)
      for (int jt = 0; jt < nr; jt += tile) {
        const int valid = int(std::clamp<int64_t>(cols - jt, 0, tile));
        transpose_tile(b + (j0 + std::min<int64_t>(jt, cols - 1)) * ldb + p0 + ps, ldb, dst + ps * nr + jt, nr, valid);
      }
  }
  // The rest in strips of 8 p, so every source row is read a cache line at a time while the strip's
  // destination stays in L1.
  constexpr int64_t strip = 8;
  for (; ps < kc; ps += strip) {
    const int64_t pe = std::min(kc, ps + strip);
    for (int j = 0; j < nr; ++j) {
      if (j < cols) {
        const T* src = b + (j0 + j) * ldb + p0;
        for (int64_t p = ps; p < pe; ++p) dst[p * nr + j] = src[p];
      } else {
        for (int64_t p = ps; p < pe; ++p) dst[p * nr + j] = T(0);
      }
    }
  }
}

// Several micro-panels at once. The untransposed-copy packings read mr (A) or nr (B) values per
// source row; one panel at a time that touches a new page for every k on wide matrices (a TLB miss
// each), so they go source row by source row across all the panels.

// op(A) rows [i0, i0+rows) into ceil(rows/mr) micro-panels panel_stride apart.
template <class T>
void pack_a_panels(bool ta, const T* a, int64_t lda, int64_t i0, int64_t rows, int64_t p0, int64_t kc, T* dst,
                   int64_t panel_stride) {
  constexpr int mr = Blocking<T>::mr;
  const int64_t panels = (rows + mr - 1) / mr;
  if (!ta) {
    for (int64_t ip = 0; ip < panels; ++ip)
      pack_a_panel(ta, a, lda, i0 + ip * mr, std::min<int64_t>(mr, rows - ip * mr), p0, kc, dst + ip * panel_stride);
    return;
  }
  for (int64_t p = 0; p < kc; ++p) {
    const T* src = a + (p0 + p) * lda + i0;
    for (int64_t ip = 0; ip < panels; ++ip) {
      T* d = dst + ip * panel_stride + p * mr;
      const T* sp = src + ip * mr;
      if (rows - ip * mr >= mr) {
        for (int i = 0; i < mr; ++i) d[i] = sp[i];
      } else {
        for (int i = 0; i < mr; ++i) d[i] = i < rows - ip * mr ? sp[i] : T(0);
      }
    }
  }
}

// op(B) cols [j0, j0+cols) into ceil(cols/nr) micro-panels nr*kc apart; with skip_full, only the
// narrow last one (the others are read in place).
template <class T>
void pack_b_block(bool tb, const T* b, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t cols, T* dst,
                  bool skip_full) {
  constexpr int64_t nr = Blocking<T>::nr;
  const int64_t panels = (cols + nr - 1) / nr;
  if (tb || skip_full) {
    for (int64_t jp = 0; jp < panels; ++jp) {
      const int64_t w = std::min(nr, cols - jp * nr);
      if (!skip_full || w < nr) pack_b_panel(tb, b, ldb, p0, kc, j0 + jp * nr, w, dst + jp * nr * kc);
    }
    return;
  }
  using S = Simd<T>;
  for (int64_t p = 0; p < kc; ++p) {
    const T* src = b + (p0 + p) * ldb + j0;
    for (int64_t jp = 0; jp < panels; ++jp) {
      T* d = dst + jp * nr * kc + p * nr;
      const T* sp = src + jp * nr;
      const int64_t w = std::min(nr, cols - jp * nr);
      if (w == nr) {
        for (int v = 0; v < Blocking<T>::nv; ++v) S::store(d + v * S::lanes, S::load(sp + v * S::lanes));
      } else {
        for (int64_t j = 0; j < nr; ++j) d[j] = j < w ? sp[j] : T(0);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Micro-kernel: acc = A micro-panel (mr x kc) * the first nv vectors of a B micro-panel (kc x nr,
// rows ldbp apart: nr when packed, ldb when read in place), then C = alpha*acc + beta*C on the full tile (beta == 0: C not read). Edge tiles go through a local
// tile and copy only the valid part. nv below Blocking::nv serves the last, narrow micro-panel of a
// matrix (a 14 x 14 feature map has 196 = 6 x 32 + 4 columns) at a fraction of the full width's cost.

template <class T, int nv>
inline void micro_kernel(int64_t kc, const T* __restrict ap, const T* __restrict bp, int64_t ldbp, T* __restrict c,
                         int64_t ldc, int rows, int cols, T alpha, T beta) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int mr = Blocking<T>::mr, L = S::lanes, width = nv * L;
  V acc[mr][nv];
#pragma GCC unroll 16
  for (int i = 0; i < mr; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < nv; ++v) acc[i][v] = S::zero();

  if (rows == mr && cols == width) {
    for (int i = 0; i < mr; ++i) __builtin_prefetch(c + i * ldc, 1, 3);
  }

#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    V bv[nv];
#pragma GCC unroll 4
    for (int v = 0; v < nv; ++v) bv[v] = S::load(bp + v * L);
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i) {
      const V av = S::bcast(ap[i]);
#pragma GCC unroll 4
      for (int v = 0; v < nv; ++v) acc[i][v] = S::fma(av, bv[v], acc[i][v]);
    }
    ap += mr;
    bp += ldbp;
  }

  const V va = S::bcast(alpha);
  if (rows == mr && cols == width) {
    if (beta == T(0)) {
#pragma GCC unroll 16
      for (int i = 0; i < mr; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < nv; ++v) S::store(c + i * ldc + v * L, S::mul(va, acc[i][v]));
    } else {
      const V vb = S::bcast(beta);
#pragma GCC unroll 16
      for (int i = 0; i < mr; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < nv; ++v) {
          T* ci = c + i * ldc + v * L;
          S::store(ci, S::fma(va, acc[i][v], S::mul(vb, S::load(ci))));
        }
    }
    return;
  }
  alignas(64) T tile[mr * width];
  for (int i = 0; i < mr; ++i)
    for (int v = 0; v < nv; ++v) S::store(tile + i * width + v * L, S::mul(va, acc[i][v]));
  for (int i = 0; i < rows; ++i) {
    T* ci = c + i * ldc;
    const T* ti = tile + i * width;
    if (beta == T(0)) {
      for (int j = 0; j < cols; ++j) ci[j] = ti[j];
    } else {
      for (int j = 0; j < cols; ++j) ci[j] = ti[j] + beta * ci[j];
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Small problems: straight loops, no packing.

template <class T>
void gemm_direct(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
                 int64_t ldb, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    T* ci = c + i * ldc;
    if (!tb) {
      if (beta == T(0)) {
        for (int64_t j = 0; j < n; ++j) ci[j] = T(0);
      } else if (beta != T(1)) {
        for (int64_t j = 0; j < n; ++j) ci[j] *= beta;
      }
      for (int64_t p = 0; p < k; ++p) {
        const T av = alpha * (ta ? a[p * lda + i] : a[i * lda + p]);
        const T* bp = b + p * ldb;
        for (int64_t j = 0; j < n; ++j) ci[j] += av * bp[j];
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const T* bj = b + j * ldb;
        T s = T(0);
        if (ta) {
          for (int64_t p = 0; p < k; ++p) s += a[p * lda + i] * bj[p];
        } else {
          const T* ai = a + i * lda;
          for (int64_t p = 0; p < k; ++p) s += ai[p] * bj[p];
        }
        ci[j] = beta == T(0) ? alpha * s : alpha * s + beta * ci[j];
      }
    }
  }
}

// C = beta*C (alpha == 0 or k == 0: A and B are not read, as in BLAS).
template <class T> void scale_c(int64_t m, int64_t n, T beta, T* c, int64_t ldc) {
  if (beta == T(1)) return;
  for (int64_t i = 0; i < m; ++i) {
    T* ci = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) ci[j] = beta == T(0) ? T(0) : beta * ci[j];
  }
}

// ------------------------------------------------------------------------------------------------
// The blocked driver.

struct TaskGrid {
  int64_t nb;        // columns per B block (a multiple of nr)
  int64_t blocks;    // B blocks
  int64_t splits;    // row ranges each A panel is cut into
};

// Cut one A panel's work into blocks x splits tasks, several per thread so that dynamic scheduling
// can route around a thread the OS has preempted (the cores are shared), but no narrower than 4
// micro-panels each way, below which packing is no longer amortised.
template <class T> TaskGrid task_grid(int64_t m_panel, int64_t n, int threads) {
  constexpr int64_t nr = Blocking<T>::nr, mr = Blocking<T>::mr;
  const int64_t n_panels = (n + nr - 1) / nr;
  const int64_t m_panels = (m_panel + mr - 1) / mr;
  const int64_t target = threads > 1 ? 4 * int64_t(threads) : 1;
  int64_t blocks = (n + Blocking<T>::nb - 1) / Blocking<T>::nb;
  while (blocks < target && n_panels >= 8 * blocks) blocks *= 2;
  blocks = std::min(blocks, n_panels);
  TaskGrid g;
  g.nb = (n_panels + blocks - 1) / blocks * nr;
  g.blocks = (n + g.nb - 1) / g.nb;
  g.splits = std::clamp<int64_t>((target + g.blocks - 1) / g.blocks, 1, std::max<int64_t>(1, m_panels / 4));
  return g;
}

template <class T>
void gemm_blocked(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
                  int64_t ldb, T beta, T* c, int64_t ldc, int threads) {
  constexpr int64_t mr = Blocking<T>::mr, nr = Blocking<T>::nr, KC = Blocking<T>::kc;
  // An A panel holds mb rows by ks columns of op(A), all k blocks at once, so that threads meet at a
  // barrier only once per panel rather than once per k block.
  const int64_t ks = std::min(k, Blocking<T>::ks);
  const int64_t mb = std::min(m, Blocking<T>::mb);
  const int64_t mb_panels = (mb + mr - 1) / mr;
  const int64_t kblocks_max = (ks + KC - 1) / KC;
  T* apack = static_cast<T*>(thread_buffer(kSlotA, size_t(mb_panels * mr * kblocks_max * KC) * sizeof(T)));
  const TaskGrid grid = task_grid<T>(mb, n, threads);
  const int64_t tasks = grid.blocks * grid.splits;
  const int64_t b_elems = grid.nb * std::min(k, KC);
  T* bpack_team = static_cast<T*>(thread_buffer(kSlotB, size_t(threads * b_elems) * sizeof(T)));

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    T* bpack = bpack_team + omp_get_thread_num() * b_elems;
    for (int64_t i0 = 0; i0 < m; i0 += mb) {
      const int64_t mcur = std::min(mb, m - i0);
      const int64_t m_panels = (mcur + mr - 1) / mr;
      const int64_t groups = (m_panels + kPackGroup - 1) / kPackGroup;
      for (int64_t k0 = 0; k0 < k; k0 += ks) {
        const int64_t kscur = std::min(ks, k - k0);
        const int64_t kblocks = (kscur + KC - 1) / KC;
        // Packed layout: k block kb of micro-panel ip at apack + (kb * m_panels + ip) * mr * KC.
#pragma omp for schedule(dynamic, 1)
        for (int64_t job = 0; job < kblocks * groups; ++job) {
          const int64_t kb = job / groups, ip = job % groups * kPackGroup;
          const int64_t p0 = k0 + kb * KC, kc = std::min(KC, k0 + kscur - p0);
          pack_a_panels(ta, a, lda, i0 + ip * mr, std::min(kPackGroup * mr, mcur - ip * mr), p0, kc,
                        apack + (kb * m_panels + ip) * mr * KC, mr * KC);
        }

#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < tasks; ++t) {
          const int64_t blk = t / grid.splits, split = t % grid.splits;
          const int64_t j0 = blk * grid.nb;
          if (j0 >= n) continue;
          const int64_t ncur = std::min(grid.nb, n - j0);
          const int64_t n_panels = (ncur + nr - 1) / nr;
          const int64_t ip_lo = m_panels * split / grid.splits, ip_hi = m_panels * (split + 1) / grid.splits;
          for (int64_t kb = 0; kb < kblocks; ++kb) {
            const int64_t p0 = k0 + kb * KC, kc = std::min(KC, k0 + kscur - p0);
            const T beta_k = p0 == 0 ? beta : T(1);
            // With few A micro-panels to amortise it over, packing B costs more than reading its full
            // micro-panels in place (only possible untransposed); the narrow last one is still packed.
            const bool in_place = !tb && ip_hi - ip_lo <= kInPlaceBPanels;
            pack_b_block(tb, b, ldb, p0, kc, j0, ncur, bpack, in_place);
            for (int64_t ip = ip_lo; ip < ip_hi; ++ip) {
              const int rows = int(std::min(mr, mcur - ip * mr));
              const T* ap = apack + (kb * m_panels + ip) * mr * KC;
              T* crow = c + (i0 + ip * mr) * ldc + j0;
              for (int64_t jp = 0; jp < n_panels; ++jp) {
                const int cols = int(std::min(nr, ncur - jp * nr));
                const bool direct = in_place && cols == nr;
                const T* bp = direct ? b + p0 * ldb + j0 + jp * nr : bpack + jp * nr * kc;
                const int64_t ldbp = direct ? ldb : nr;
                if (Blocking<T>::nv > 1 && cols <= Simd<T>::lanes) {
                  micro_kernel<T, 1>(kc, ap, bp, ldbp, crow + jp * nr, ldc, rows, cols, alpha, beta_k);
                } else {
                  micro_kernel<T, Blocking<T>::nv>(kc, ap, bp, ldbp, crow + jp * nr, ldc, rows, cols, alpha, beta_k);
                }
              }
            }
          }
        }
      }
    }
  }
}

int gemm_threads(int64_t work) {
  if (omp_in_parallel()) return 1;
  const int64_t useful = std::max<int64_t>(1, work / kPerThreadMin);
  return int(std::min<int64_t>(omp_get_max_threads(), useful));
}

template <class T>
void gemm_impl(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
               int64_t ldb, T beta, T* c, int64_t ldc, int threads) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == T(0)) return scale_c(m, n, beta, c, ldc);
  const int64_t work = m * n * k;
  if (work < kDirectMax) return gemm_direct(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  gemm_blocked(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads);
}

}  // namespace

template <class T>
void gemm(const CpuCtx&, bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  gemm_impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, gemm_threads(m * n * k));
}

// Small problems run one per thread over the batch; large ones one after another, each on all threads.
template <class T>
void gemm_batched(const CpuCtx&, bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                  int64_t lda, int64_t sa, const T* b, int64_t ldb, int64_t sb, T beta, T* c, int64_t ldc, int64_t sc,
                  int64_t batch) {
  if (batch <= 0) return;
  const int64_t work = m * n * k;
  const int inner = gemm_threads(work);
  const bool over_batch = !omp_in_parallel() && batch > 1 && omp_get_max_threads() > 1 &&
                          (work < (int64_t(1) << 21) || batch >= 4 * int64_t(omp_get_max_threads()));
  if (over_batch) {
    const int threads =
        int(std::clamp<int64_t>(batch * work / kPerThreadMin, 1, std::min<int64_t>(batch, omp_get_max_threads())));
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
    for (int64_t i = 0; i < batch; ++i)
      gemm_impl(ta, tb, m, n, k, alpha, a + i * sa, lda, b + i * sb, ldb, beta, c + i * sc, ldc, 1);
    return;
  }
  for (int64_t i = 0; i < batch; ++i)
    gemm_impl(ta, tb, m, n, k, alpha, a + i * sa, lda, b + i * sb, ldb, beta, c + i * sc, ldc, inner);
}

template void gemm<float>(const CpuCtx&, bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(const CpuCtx&, bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);
template void gemm_batched<float>(const CpuCtx&, bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                  int64_t, const float*, int64_t, int64_t, float, float*, int64_t, int64_t, int64_t);
template void gemm_batched<double>(const CpuCtx&, bool, bool, int64_t, int64_t, int64_t, double, const double*,
                                   int64_t, int64_t, const double*, int64_t, int64_t, double, double*, int64_t, int64_t,
                                   int64_t);

}  // namespace hamu::kernels
