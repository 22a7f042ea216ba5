// kernels/cpu/fast_math.h: elementary functions written out in plain arithmetic so that loops calling them
// vectorise (libm calls do not: a GELU-tanh over a GPT-2 MLP spent ~8 ns per element in tanhf). Float
// results are computed in double and rounded once, so they are within an ulp of the exact value (as libm's);
// double callers keep libm. Internal to kernels/cpu.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace hamu::kernels::fast {

// exp(x) for |x| <= 700, relative error ~1e-17 before the final rounding: x = k ln2 + r with |r| <= ln2/2
// (ln2 in two parts, k rounded by the 1.5 * 2^52 trick, which also leaves k in the low mantissa bits), exp(r)
// by its Taylor series to r^13 / 13!, and 2^k built in the exponent field.
inline double exp_small(double x) {
  constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52
  const double kd = x * 1.4426950408889634 + kMagic;
  const double k = kd - kMagic;
  const double r = (x - k * 0.6931471803691238) - k * 1.9082149292705877e-10;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  // The low bits of kd are 2^51 + k; shifted into the exponent field only (k + 1023) mod 2^12 survives.
  const uint64_t scale = (std::bit_cast<uint64_t>(kd) + 1023u) << 52;
  return p * std::bit_cast<double>(scale);
}

// exp(x) for any x: exp_small on x clamped to [-708, 709] (0 below -708, where exp is under 4e-308; e^709
// above, which is past every float and overflows to inf when a float is made of it); NaN stays NaN.
inline double exp_any(double x) {
  const double hi = x > 709.0 ? 709.0 : x;
  const double c = hi < -708.0 ? -708.0 : hi;
  const double e = exp_small(c);
  return x < -708.0 ? 0.0 : e;
}

// exp of a float: the bits of expf's correctly rounded result (checked against float(exp(double)) on all
// 2^32 inputs), 0 and inf where it underflows and overflows. |x| is clamped to 110 (e^110 and e^-110 round
// to inf and 0) through fabs and copysign: a compare of the widened float itself is narrowed by gcc to a
// float compare, and the mixed-width select it then needs stops the loop from vectorising.
inline float exp_f32(float x) {
  const double v = x, a = std::fabs(v);
  return float(exp_small(std::copysign(a > 110.0 ? 110.0 : a, v)));
}

// tanh of a float, within an ulp: odd series below 1e-3 (where e^2a - 1 would cancel), (e - 1)/(e + 1) with
// e = exp(2|x|) above, |x| clamped to 10 (tanh rounds to 1 from 9.02 on); NaN stays NaN, the sign of zero kept.
inline float tanh_f32(float xf) {
  const double x = xf, a = std::fabs(x);
  const double ac = a > 10.0 ? 10.0 : a;
  const double e = exp_small(2.0 * ac);
  const double big = (e - 1.0) / (e + 1.0);
  const double a2 = ac * ac;
  const double small = ac * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0))));
  const double t = ac < 1e-3 ? small : big;
  return float(std::copysign(t, x));
}

// tanh and exp for the kernels' element types: the vectorisable float forms, libm for double (the
// finite-difference tests' precision).
inline float tanh_of(float x) { return tanh_f32(x); }
inline double tanh_of(double x) { return std::tanh(x); }
inline float exp_of(float x) { return exp_f32(x); }
inline double exp_of(double x) { return std::exp(x); }

}  // namespace hamu::kernels::fast
