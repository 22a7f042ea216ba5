// kernels/bf16.h: the one bfloat16 <-> float32 conversion rule of the host (bf16 elements are stored as their
// uint16_t bit patterns): safetensors' BF16 reader, Tensor::to(DType) on the CPU and the tests all use it.
// The CUDA casts (kernels/cuda/elementwise.cu) use __float2bfloat16_rn, which rounds the same way.
#pragma once
#include <cstdint>
#include <cstring>

namespace hamu::kernels {

// bfloat16 is the upper half of a float32: widening is exact.
inline float bf16_to_float(uint16_t b) {
  const uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest, ties to even (IEEE's default, as __float2bfloat16_rn and PyTorch): add 0x7fff plus the
// lowest kept bit, then drop the low half. Finite values past the largest bfloat16 (3.3895e38) by half an
// ulp or more become +-inf, infinities stay, subnormals round like any other value (bfloat16 has float32's
// exponent range). NaN becomes the quiet NaN 0x7fc0 (PyTorch's; the GPU writes 0x7fff: NaN either way) so
// a NaN whose payload sits in the low half cannot round into an infinity.
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

}  // namespace hamu::kernels
