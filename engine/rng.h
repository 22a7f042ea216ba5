// engine/rng.h: the one seeded random generator (xoshiro256**, seeded through splitmix64).
// The same seed gives the same stream on every machine; nothing here depends on the thread count.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace hamu {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);
  uint64_t next_u64();
  double uniform();                          // [0, 1), 53 random bits
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  uint64_t below(uint64_t n);                // uniform integer in [0, n), unbiased
  double normal();                           // standard normal (Box-Muller, cached pair)
  std::vector<int64_t> permutation(int64_t n);  // Fisher-Yates over 0..n-1
  template <class T> void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }
  // A derived, independent generator (for per-module or per-epoch streams).
  Rng fork(uint64_t stream);

  // Tensor initialisers (CPU or CUDA tensors; values drawn on the host in a fixed order).
  void fill_normal(Tensor& t, double mean, double std);
  void fill_uniform(Tensor& t, double lo, double hi);

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0;
};

// splitmix64 step, also used by counter-based kernels (dropout) to hash (seed, index).
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace hamu
