// engine/rng.cpp: xoshiro256** and the distributions built on it.
#include "engine/rng.h"

#include <cmath>

namespace hamu {
namespace {
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Rng::reseed(uint64_t seed) {
  uint64_t st = seed;
  for (auto& s : s_) s = splitmix64(st);
  has_spare_ = false;
}

uint64_t Rng::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }

uint64_t Rng::below(uint64_t n) {
  if (n == 0) return 0;
  // Lemire's nearly-divisionless method with rejection for exact uniformity.
  __uint128_t m = __uint128_t(next_u64()) * n;
  uint64_t low = uint64_t(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = __uint128_t(next_u64()) * n;
      low = uint64_t(m);
    }
  }
  return uint64_t(m >> 64);
}

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2.0 * M_PI * u2);
  has_spare_ = true;
  return r * std::cos(2.0 * M_PI * u2);
}

std::vector<int64_t> Rng::permutation(int64_t n) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  shuffle(p);
  return p;
}

Rng Rng::fork(uint64_t stream) {
  uint64_t st = next_u64() ^ (stream * 0xD1B54A32D192ED03ull);
  return Rng(splitmix64(st));
}

void Rng::fill_normal(Tensor& t, double mean, double std) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (auto& x : v) x = mean + std * normal();
  t.copy_(Tensor::from_doubles(v, t.shape(), t.dtype()));
}

void Rng::fill_uniform(Tensor& t, double lo, double hi) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (auto& x : v) x = uniform(lo, hi);
  t.copy_(Tensor::from_doubles(v, t.shape(), t.dtype()));
}

}  // namespace hamu
