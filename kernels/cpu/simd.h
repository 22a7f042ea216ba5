// kernels/cpu/simd.h: one SIMD vector type per element type for the CPU kernels that hand-vectorise
// (the GEMM micro-kernel, the convolution's filter-gradient dot products): AVX-512, AVX2+FMA, or
// GCC/Clang vector extensions elsewhere. Internal to kernels/cpu.
#pragma once

#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__FMA__)
#include <immintrin.h>
#endif

namespace hamu::kernels {

// The ISO C++ mode we compile in turns off FMA contraction, so FMA is spelled out where the ISA has
// it. hsum adds a vector's lanes in a fixed order. AVX-512 alone has load_even and add_even
// (kHasLoadEven).
template <class T> struct Simd;


#if defined(__AVX512F__)
constexpr int kRegisters = 32;
constexpr bool kHasLoadEven = true;
template <> struct Simd<float> {
  using V = __m512;
  static constexpr int lanes = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V bcast(float x) { return _mm512_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  // Halves added down to one lane. The masked extracts compile to the plain ones; GCC 12's plain
  // extracts, casts and _mm512_reduce_add_ps trip -Wuninitialized on an undefined pass-through operand.
  static float hsum(V a) {
    const __m512d d = _mm512_castps_pd(a);
    const __m256d lo = _mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), __mmask8(0xFF), d, 0);
    const __m256d hi = _mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), __mmask8(0xFF), d, 1);
    return hsum256(_mm256_add_ps(_mm256_castpd_ps(lo), _mm256_castpd_ps(hi)));
  }
  // p[0], p[2], ..., p[30], reading p[0..31) only: a stride-2 gather (im2col of stride-2 convolutions).
  static V load_even(const float* p) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), even, _mm512_loadu_ps(p + 15));
  }
  // p[2j] += v[j] for j < 16, reading and writing p[0..31) only (col2im of stride-2 convolutions); the odd
  // elements are written back as they were read.
  static void add_even(float* p, V v) {
    const __m512i lo = _mm512_setr_epi32(0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0);
    const __m512i hi = _mm512_setr_epi32(0, 8, 0, 9, 0, 10, 0, 11, 0, 12, 0, 13, 0, 14, 0, 15);
    const __mmask16 all = 0xFFFF;
    const V a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 15);
    const V va = _mm512_maskz_permutexvar_ps(all, lo, v), vb = _mm512_maskz_permutexvar_ps(all, hi, v);
    _mm512_storeu_ps(p, _mm512_mask_add_ps(a, __mmask16(0x5555), a, va));
    _mm512_storeu_ps(p + 15, _mm512_mask_add_ps(b, __mmask16(0xAAAA), b, vb));
  }
  static float hsum256(__m256 a) {
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  }
};
template <> struct Simd<double> {
  using V = __m512d;
  static constexpr int lanes = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static V bcast(double x) { return _mm512_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V load_even(const double* p) {  // p[0], p[2], ..., p[14], reading p[0..15) only
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 9, 11, 13, 15);
    return _mm512_permutex2var_pd(_mm512_loadu_pd(p), even, _mm512_loadu_pd(p + 7));
  }
  static void add_even(double* p, V v) {  // p[2j] += v[j] for j < 8, touching p[0..15) only
    const __m512i lo = _mm512_setr_epi64(0, 0, 1, 0, 2, 0, 3, 0), hi = _mm512_setr_epi64(0, 4, 0, 5, 0, 6, 0, 7);
    const __mmask8 all = 0xFF;
    const V a = _mm512_loadu_pd(p), b = _mm512_loadu_pd(p + 7);
    const V va = _mm512_maskz_permutexvar_pd(all, lo, v), vb = _mm512_maskz_permutexvar_pd(all, hi, v);
    _mm512_storeu_pd(p, _mm512_mask_add_pd(a, __mmask8(0x55), a, va));
    _mm512_storeu_pd(p + 7, _mm512_mask_add_pd(b, __mmask8(0xAA), b, vb));
  }
  static double hsum(V a) {
    const __m256d h = _mm256_add_pd(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), __mmask8(0xFF), a, 0),
                                    _mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), __mmask8(0xFF), a, 1));
    const __m128d q = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
  }
};
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kRegisters = 16;
constexpr bool kHasLoadEven = false;
template <> struct Simd<float> {
  using V = __m256;
  static constexpr int lanes = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V bcast(float x) { return _mm256_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static float hsum(V a) {
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  }
};
template <> struct Simd<double> {
  using V = __m256d;
  static constexpr int lanes = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static V bcast(double x) { return _mm256_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static double hsum(V a) {
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
  }
};
#else
// Portable fallback: GCC/Clang vector extensions (SSE2 on x86-64, NEON on ARM, scalar elsewhere).
constexpr int kRegisters = 16;
constexpr bool kHasLoadEven = false;
template <class T> struct Simd {
  typedef T V __attribute__((vector_size(16)));
  static constexpr int lanes = int(16 / sizeof(T));
  static V zero() { return V{}; }
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }
  static V bcast(T x) { return V{} + x; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V mul(V a, V b) { return a * b; }
  static T hsum(V a) {
    T s = a[0];
    for (int l = 1; l < lanes; ++l) s += a[l];
    return s;
  }
};
#endif

}  // namespace hamu::kernels
