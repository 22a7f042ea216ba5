// kernels/cpu/bn_act.h: the per-plane pass of BatchNorm on fixed statistics + residual add + ReLU, shared by
// the fused BatchNorm kernel (norm.cpp) and the convolution's epilogue (conv.cpp: conv2d_bn_act_forward), so
// the two give the same bits. Internal to kernels/cpu.
#pragma once

#include <cmath>
#include <cstdint>

namespace hamu::kernels::bn_act {

// ReLU exactly as kernels/cpu/elementwise.cpp has it (NaN passes).
template <class T> inline T relu_value(T v) { return (v > T(0) || v != v) ? v : T(0); }

// The per-channel scale as batchnorm_forward_infer rounds it (gamma times the double 1/std), so every
// fixed-statistics path agrees. gamma may be null (taken as 1).
template <class T> inline T scale_of(const T* gamma, const T* running_var, T eps, int64_t ch) {
  const double invstd = 1.0 / std::sqrt(double(running_var[ch]) + double(eps));
  return T(double(gamma ? gamma[ch] : T(1)) * invstd);
}

// One plane (hw values of one sample and channel): y = relu?((x - mean) * scale + shift + residual). Template
// flags so every variant is a branch-free loop. y may be x (each element is read before it is written).
template <bool Relu, bool Res, class T>
void plane(int64_t hw, const T* xp, const T* rp, T mean, T scale, T shift, T* yp) {
#pragma omp simd
  for (int64_t k = 0; k < hw; ++k) {
    T v = (xp[k] - mean) * scale + shift;
    if constexpr (Res) v = v + rp[k];
    yp[k] = Relu ? relu_value(v) : v;
  }
}

// plane() with the flags chosen at run time (rp null: no residual).
template <class T> void plane_any(int64_t hw, const T* xp, const T* rp, T mean, T scale, T shift, bool relu, T* yp) {
  if (relu) {
    if (rp) plane<true, true>(hw, xp, rp, mean, scale, shift, yp);
    else plane<true, false>(hw, xp, rp, mean, scale, shift, yp);
  } else {
    if (rp) plane<false, true>(hw, xp, rp, mean, scale, shift, yp);
    else plane<false, false>(hw, xp, rp, mean, scale, shift, yp);
  }
}

}  // namespace hamu::kernels::bn_act
