// kernels/counter_hash.h: the counter-based random bits shared by every backend (dropout), so CPU and
// CUDA draw the same mask for the same (seed, index).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define HAMU_HD_HASH __host__ __device__
#else
#define HAMU_HD_HASH
#endif

namespace hamu::kernels {

// splitmix64 finaliser of seed + (index + 1) * golden ratio.
HAMU_HD_HASH inline uint64_t counter_hash(uint64_t seed, uint64_t index) {
  uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 random bits (exact in float and double alike).
HAMU_HD_HASH inline float counter_uniform(uint64_t seed, uint64_t index) {
  return float(counter_hash(seed, index) >> 40) * (1.0f / 16777216.0f);
}

}  // namespace hamu::kernels
