// tests/test_gemm.cpp: the CPU GEMM against a naive double-precision reference (sizes, transposes,
// leading dimensions, alpha/beta, batched, nested in a parallel region, thread-count independence).
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/kernels.h"

namespace {

namespace kn = hamu::kernels;

// A matrix stored row-major in a buffer with leading dimension ld >= cols; the padding holds NaN so
// any read outside the matrix poisons the result and any write there is caught.
template <class T> struct Mat {
  int64_t rows = 0, cols = 0, ld = 0;
  std::vector<T> buf;
  Mat(int64_t r, int64_t c, int64_t pad, std::mt19937& gen) : rows(r), cols(c), ld(c + pad) {
    buf.assign(size_t(std::max<int64_t>(1, r * ld)), std::numeric_limits<T>::quiet_NaN());
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) buf[size_t(i * ld + j)] = T(dist(gen));
  }
  T& at(int64_t i, int64_t j) { return buf[size_t(i * ld + j)]; }
  T at(int64_t i, int64_t j) const { return buf[size_t(i * ld + j)]; }
  void fill_nan() {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) at(i, j) = std::numeric_limits<T>::quiet_NaN();
  }
};

// C_ref = alpha * op(A) op(B) + beta * C0 in double (beta == 0: C0 ignored).
template <class T>
std::vector<double> reference(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const Mat<T>& a,
                              const Mat<T>& b, double beta, const Mat<T>& c0) {
  std::vector<double> out(size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += double(ta ? a.at(p, i) : a.at(i, p)) * double(tb ? b.at(j, p) : b.at(p, j));
      out[size_t(i * n + j)] = alpha * s + (beta == 0 ? 0.0 : beta * double(c0.at(i, j)));
    }
  return out;
}

template <class T> double tolerance() { return sizeof(T) == 4 ? 1e-5 : 1e-12; }

// ||C - C_ref|| / ||C_ref|| over the matrix; NaN (a bad read) or a write into the padding fails.
template <class T> double relative_error(const Mat<T>& c, const std::vector<double>& ref) {
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < c.rows; ++i) {
    for (int64_t j = 0; j < c.cols; ++j) {
      const double d = double(c.at(i, j)) - ref[size_t(i * c.cols + j)];
      diff += d * d;
      norm += ref[size_t(i * c.cols + j)] * ref[size_t(i * c.cols + j)];
    }
    for (int64_t j = c.cols; j < c.ld && i * c.ld + j < int64_t(c.buf.size()); ++j)
      if (!std::isnan(c.at(i, j))) return std::numeric_limits<double>::infinity();
  }
  if (std::isnan(diff)) return std::numeric_limits<double>::infinity();
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

struct Dims {
  int64_t m, n, k;
};

// Odd sizes around the micro-tile (8 or 6 rows, 2 vectors of columns) and the cache blocks (k blocks of
// 384/256, A panels of 1024/768 rows by 2304/1536 columns), non-square, and the direct small path.
const Dims kDims[] = {{1, 1, 1},     {2, 3, 1},      {3, 7, 2},     {7, 17, 63},    {17, 63, 65},
                      {63, 65, 7},   {65, 127, 17},  {127, 129, 3}, {129, 257, 65}, {257, 33, 129},
                      {33, 257, 400}, {100, 1, 300}, {1, 300, 200}, {9, 40, 2500},  {1100, 19, 31},
                      {800, 37, 21}};

template <class T> void check_gemm_all() {
  std::mt19937 gen(1234);
  const double alphas[] = {1.0, -0.7};
  const double betas[] = {0.0, 1.0, 0.5};
  for (const Dims& d : kDims) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      for (double alpha : alphas) {
        for (double beta : betas) {
          const int64_t pad = (d.m + d.n + d.k + t) % 3 == 0 ? 0 : 5;
          Mat<T> a(ta ? d.k : d.m, ta ? d.m : d.k, pad, gen);
          Mat<T> b(tb ? d.n : d.k, tb ? d.k : d.n, pad + 1, gen);
          Mat<T> c(d.m, d.n, pad + 2, gen);
          if (beta == 0) c.fill_nan();  // beta == 0: C must not be read
          const std::vector<double> ref = reference(ta, tb, d.m, d.n, d.k, alpha, a, b, beta, c);
          kn::gemm(kn::CpuCtx{}, ta, tb, d.m, d.n, d.k, T(alpha), a.buf.data(), a.ld, b.buf.data(), b.ld, T(beta),
                   c.buf.data(), c.ld);
          const double err = relative_error(c, ref);
          INFO("m=" << d.m << " n=" << d.n << " k=" << d.k << " ta=" << ta << " tb=" << tb << " alpha=" << alpha
                    << " beta=" << beta << " pad=" << pad);
          CHECK(err <= tolerance<T>());
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("gemm f32 matches the double reference over sizes, transposes, leading dims, alpha and beta") {
  check_gemm_all<float>();
}

TEST_CASE("gemm f64 matches the double reference over sizes, transposes, leading dims, alpha and beta") {
  check_gemm_all<double>();
}

TEST_CASE("gemm with k == 0 scales C by beta") {
  std::vector<float> c = {1, 2, 3, 4};
  const float dummy = std::numeric_limits<float>::quiet_NaN();
  kn::gemm(kn::CpuCtx{}, false, false, 2, 2, 0, 1.0f, &dummy, 1, &dummy, 2, 0.5f, c.data(), 2);
  CHECK(c == std::vector<float>{0.5f, 1, 1.5f, 2});
  std::vector<double> z(4, std::numeric_limits<double>::quiet_NaN());
  const double dd = 0;
  kn::gemm(kn::CpuCtx{}, true, true, 2, 2, 0, 1.0, &dd, 2, &dd, 1, 0.0, z.data(), 2);
  CHECK(z == std::vector<double>{0, 0, 0, 0});
}

TEST_CASE("gemm results do not depend on the thread count") {
  std::mt19937 gen(7);
  const int max_threads = omp_get_max_threads();
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    const int64_t m = 301, n = 517, k = 777;
    Mat<float> a(ta ? k : m, ta ? m : k, 0, gen), b(tb ? n : k, tb ? k : n, 0, gen);
    Mat<float> c1(m, n, 0, gen), c2 = c1;
    omp_set_num_threads(1);
    kn::gemm(kn::CpuCtx{}, ta, tb, m, n, k, 1.5f, a.buf.data(), a.ld, b.buf.data(), b.ld, 0.25f, c1.buf.data(), n);
    omp_set_num_threads(std::max(2, max_threads));
    kn::gemm(kn::CpuCtx{}, ta, tb, m, n, k, 1.5f, a.buf.data(), a.ld, b.buf.data(), b.ld, 0.25f, c2.buf.data(), n);
    omp_set_num_threads(max_threads);
    CHECK(c1.buf == c2.buf);
  }
}

TEST_CASE("gemm called from inside a parallel region") {
  std::mt19937 gen(11);
  const int64_t m = 70, n = 90, k = 130;
  const int problems = 6;
  std::vector<Mat<double>> as, bs, cs;
  std::vector<std::vector<double>> refs;
  for (int i = 0; i < problems; ++i) {
    as.emplace_back(m, k, 1, gen);
    bs.emplace_back(n, k, 2, gen);
    cs.emplace_back(m, n, 3, gen);
    refs.push_back(reference(false, true, m, n, k, 2.0, as.back(), bs.back(), -1.0, cs.back()));
  }
  int bad = 0;
#pragma omp parallel for schedule(static) num_threads(2) reduction(+ : bad)
  for (int i = 0; i < problems; ++i) {
    kn::gemm(kn::CpuCtx{}, false, true, m, n, k, 2.0, as[size_t(i)].buf.data(), as[size_t(i)].ld,
             bs[size_t(i)].buf.data(), bs[size_t(i)].ld, -1.0, cs[size_t(i)].buf.data(), cs[size_t(i)].ld);
    bad += relative_error(cs[size_t(i)], refs[size_t(i)]) > 1e-12;
  }
  CHECK(bad == 0);
}

namespace {

// Batched problems in one buffer per operand at element strides with a gap between problems.
template <class T> void check_batched(int64_t m, int64_t n, int64_t k, int64_t batch) {
  std::mt19937 gen(uint32_t(m * 31 + n * 7 + k));
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    for (double beta : {0.0, 0.75}) {
      std::vector<Mat<T>> as, bs, cs;
      std::vector<std::vector<double>> refs;
      for (int64_t i = 0; i < batch; ++i) {
        as.emplace_back(ta ? k : m, ta ? m : k, 1, gen);
        bs.emplace_back(tb ? n : k, tb ? k : n, 2, gen);
        cs.emplace_back(m, n, 1, gen);
        if (beta == 0) cs.back().fill_nan();
        refs.push_back(reference(ta, tb, m, n, k, 1.25, as.back(), bs.back(), beta, cs.back()));
      }
      const int64_t sa = int64_t(as[0].buf.size()) + 3, sb = int64_t(bs[0].buf.size()) + 5,
                    sc = int64_t(cs[0].buf.size()) + 2;
      const T nan = std::numeric_limits<T>::quiet_NaN();
      std::vector<T> a(size_t(sa * batch), nan), b(size_t(sb * batch), nan), c(size_t(sc * batch), nan);
      for (int64_t i = 0; i < batch; ++i) {
        std::copy(as[size_t(i)].buf.begin(), as[size_t(i)].buf.end(), a.begin() + i * sa);
        std::copy(bs[size_t(i)].buf.begin(), bs[size_t(i)].buf.end(), b.begin() + i * sb);
        std::copy(cs[size_t(i)].buf.begin(), cs[size_t(i)].buf.end(), c.begin() + i * sc);
      }
      kn::gemm_batched(kn::CpuCtx{}, ta, tb, m, n, k, T(1.25), a.data(), as[0].ld, sa, b.data(), bs[0].ld, sb, T(beta),
                       c.data(), cs[0].ld, sc, batch);
      for (int64_t i = 0; i < batch; ++i) {
        Mat<T>& ci = cs[size_t(i)];
        std::copy(c.begin() + i * sc, c.begin() + i * sc + int64_t(ci.buf.size()), ci.buf.begin());
        INFO("batched m=" << m << " n=" << n << " k=" << k << " ta=" << ta << " tb=" << tb << " beta=" << beta
                          << " i=" << i);
        CHECK(relative_error(ci, refs[size_t(i)]) <= tolerance<T>());
        // the gap between problems is never written
        for (int64_t g = int64_t(ci.buf.size()); g < sc; ++g) CHECK(std::isnan(c[size_t(i * sc + g)]));
      }
    }
  }
}

}  // namespace

TEST_CASE("gemm_batched: small problems (spread over the batch) and large ones (threads inside)") {
  check_batched<float>(5, 7, 3, 9);
  check_batched<float>(33, 65, 17, 5);
  check_batched<double>(17, 9, 31, 6);
  check_batched<float>(130, 150, 140, 3);
  check_batched<double>(129, 140, 150, 2);
  check_batched<float>(4, 4, 4, 1);
}
