// tests/gradcheck.h: finite-difference gradient checking in double precision, and random tensors.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/tensor.h"

namespace hamu::testing {

inline std::mt19937_64& test_rng() {
  static std::mt19937_64 gen(20261126);
  return gen;
}

// Uniform values in [lo, hi), float64 unless told otherwise; never all zeros.
inline Tensor random_tensor(const Shape& shape, double lo = -1.0, double hi = 1.0, DType dtype = DType::f64) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = dist(test_rng());
  return Tensor::from_doubles(v, shape, dtype);
}

// Values bounded away from zero (|x| in [gap, 1]), for ops with a kink at 0 (ReLU, abs).
inline Tensor random_away_from_zero(const Shape& shape, double gap = 0.1) {
  std::uniform_real_distribution<double> dist(gap, 1.0);
  std::bernoulli_distribution sign(0.5);
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = sign(test_rng()) ? dist(test_rng()) : -dist(test_rng());
  return Tensor::from_doubles(v, shape, DType::f64);
}

// Distinct values (a shuffled arithmetic progression plus noise), for max-type ops.
inline Tensor random_distinct(const Shape& shape, double spacing = 0.05) {
  const int64_t n = shape_numel(shape);
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = (double(i) - double(n) / 2) * spacing;
  std::shuffle(v.begin(), v.end(), test_rng());
  return Tensor::from_doubles(v, shape, DType::f64);
}

inline Tensor random_labels(int64_t n, int classes) {
  std::uniform_int_distribution<int> dist(0, classes - 1);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(test_rng());
  return Tensor::from_vector<int32_t>(v, {n});
}

inline double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

inline std::vector<double> as_doubles(const Tensor& t) {
  if (t.dtype() == DType::f64) return t.to_vector<double>();
  std::vector<float> f = t.to_vector<float>();
  return std::vector<double>(f.begin(), f.end());
}

// Checks d(sum(f(inputs) * R))/d(inputs) from backward against central differences, for a fixed
// random projection R. Inputs must be float64 leaves; every one with requires_grad is checked
// (at most max_elems elements each, spread evenly). Returns the worst relative error.
inline double gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                        double eps = 1e-6, int64_t max_elems = 400) {
  Tensor out = f(inputs);
  Tensor proj = random_tensor(out.shape(), -1.0, 1.0);
  auto loss_of = [&]() {
    NoGradGuard ng;
    Tensor o = f(inputs);
    return sum(mul(o, proj)).item();
  };
  for (Tensor& x : inputs)
    if (x.requires_grad()) x.zero_grad();
  sum(mul(out, proj)).backward();
  double worst = 0;
  for (Tensor& x : inputs) {
    if (!x.requires_grad()) continue;
    REQUIRE(x.grad().defined());
    std::vector<double> analytic = x.grad().to_vector<double>();
    double* data = x.data<double>();
    const int64_t n = x.numel();
    const int64_t stride = std::max<int64_t>(1, n / max_elems);
    std::vector<double> num, ana;
    for (int64_t i = 0; i < n; i += stride) {
      const double keep = data[i];
      data[i] = keep + eps;
      const double lp = loss_of();
      data[i] = keep - eps;
      const double lm = loss_of();
      data[i] = keep;
      num.push_back((lp - lm) / (2 * eps));
      ana.push_back(analytic[size_t(i)]);
    }
    worst = std::max(worst, rel_error(ana, num));
  }
  return worst;
}

inline Tensor leaf(Tensor t) {
  t.requires_grad_(true);
  return t;
}

}  // namespace hamu::testing
