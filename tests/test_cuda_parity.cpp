// tests/test_cuda_parity.cpp: every CUDA kernel against the CPU kernel of the same name (float), on fresh
// random inputs of awkward sizes; the fused HAMU update (stats, coefficients with every branch, apply)
// on 65 and 448 uneven blocks. Compiled only with CUDA=1; every case passes with a notice without a GPU.
//
// Tolerances (relative error ||gpu - cpu|| / ||cpu|| unless said otherwise), f32 without TF32:
//   elementwise, copies, pooling, embedding, dropout: 1e-6 (same float operations; usually bit-equal);
//   GEMM, convolution, normalisation, softmax family, optimizers, ghost reductions: 1e-5;
//   full reductions over up to 4M elements: |gpu - cpu| <= 1e-6 * sum|x| (both accumulate in double);
//   HAMU stats: 1e-6 per statistic; coefficients: 1e-6; report: integers equal, doubles to 1e-8 relative;
//   dropout masks, argmax indices, HAMU branch counts: exactly equal.
#ifdef HAMU_CUDA
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/kernels.h"

using namespace hamu::kernels;

namespace {

const CpuCtx cpu{};
using FVec = std::vector<float>;

// True when a GPU is present; prints the skip notice once otherwise.
bool gpu_ready() {
  if (cuda_device_count() > 0) return true;
  static bool told = false;
  if (!told) {
    std::printf("cuda parity tests: skipped: no GPU\n");
    told = true;
  }
  return false;
}

CudaCtx& gpu() { return cuda_context(0); }

// A device buffer of n elements; freed on scope exit.
template <class T> struct Dev {
  T* p = nullptr;
  int64_t n = 0;
  explicit Dev(int64_t count) : n(count) {
    p = static_cast<T*>(cuda_malloc(0, size_t(std::max<int64_t>(count, 1)) * sizeof(T)));
  }
  explicit Dev(const std::vector<T>& v) : Dev(int64_t(v.size())) { upload(v); }
  ~Dev() {
    try {
      cuda_free(0, p);
    } catch (const std::exception& e) {  // a destructor must not throw: after a device fault, report and go on
      std::printf("cuda parity: cuda_free failed: %s\n", e.what());
    }
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void upload(const std::vector<T>& v) {
    REQUIRE(int64_t(v.size()) <= n);
    cuda_memcpy_h2d(gpu(), p, v.data(), v.size() * sizeof(T));
  }
  std::vector<T> get() const {
    std::vector<T> v(static_cast<size_t>(n));
    cuda_memcpy_d2h(gpu(), v.data(), p, v.size() * sizeof(T));
    return v;
  }
  // Fills with NaN (floats) or 0x7f bytes: any element a kernel forgets to write shows up.
  void poison() {
    std::vector<T> v(static_cast<size_t>(n));
    if constexpr (std::is_floating_point_v<T>) std::fill(v.begin(), v.end(), std::numeric_limits<T>::quiet_NaN());
    else std::memset(v.data(), 0x7f, v.size() * sizeof(T));
    upload(v);
  }
};

FVec rnd(int64_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  FVec v(static_cast<size_t>(n));
  for (auto& x : v) x = d(gen);
  return v;
}

std::vector<int32_t> rnd_int(int64_t n, int32_t lo, int32_t hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> d(lo, hi);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(gen);
  return v;
}

// ||a - b|| / ||b|| (||a - b|| when b is 0); +inf when sizes differ or anything is NaN.
double rel_err(const FVec& a, const FVec& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    if (std::isnan(a[i])) continue;
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  if (!std::isfinite(num)) return std::numeric_limits<double>::infinity();
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

#define CHECK_REL(what, gpu_vec, cpu_vec, tol)                                         \
  do {                                                                                \
    const double err_ = rel_err((gpu_vec), (cpu_vec));                                 \
    INFO(what << ": rel err " << err_ << " (tol " << (tol) << ")");                   \
    CHECK(err_ <= (tol));                                                             \
  } while (0)

constexpr double kTolExact = 1e-6;
constexpr double kTol = 1e-5;

const int64_t kSizes[] = {1, 3, 1000003};

}  // namespace

// ------------------------------------------------------------------------------------------------

TEST_CASE("cuda: device management / copies / errors") {
  if (!gpu_ready()) return;
  CHECK(cuda_device_count() >= 1);
  CudaCtx& ctx = gpu();
  CHECK(ctx.stream != nullptr);
  CHECK(ctx.blas != nullptr);
#ifdef HAMU_CUDNN
  CHECK(ctx.dnn != nullptr);
#endif
  CHECK(&cuda_context(0) == &ctx);
  CHECK(std::strlen(cuda_device_name(0)) > 0);
  std::printf("cuda parity tests on: %s, %.1f GiB free\n", cuda_device_name(0),
              double(cuda_free_bytes(0)) / (1024.0 * 1024.0 * 1024.0));
  CHECK(cuda_free_bytes(0) > 0);

  const FVec h = rnd(1000003, 1);
  Dev<float> a(h), b(int64_t(h.size()));
  cuda_memcpy_d2d(ctx, b.p, a.p, h.size() * sizeof(float));
  CHECK(b.get() == h);
  float* pinned = static_cast<float*>(cuda_host_alloc_pinned(h.size() * sizeof(float)));
  cuda_memcpy_d2h_async(ctx, pinned, b.p, h.size() * sizeof(float));
  cuda_synchronize(ctx);
  CHECK(std::equal(h.begin(), h.end(), pinned));
  cuda_host_free_pinned(pinned);

  // Out of memory names the size asked for.
  bool threw = false;
  try {
    void* p = cuda_malloc(0, size_t(1) << 50);
    cuda_free(0, p);
  } catch (const std::runtime_error& e) {
    threw = true;
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("out of memory") != std::string::npos);
    CHECK(msg.find(std::to_string(size_t(1) << 50)) != std::string::npos);
  }
  CHECK(threw);
  // The context still works after the failed allocation.
  Dev<float> c(static_cast<int64_t>(3));
  fill(ctx, 3, 2.5f, c.p);
  CHECK(c.get() == FVec{2.5f, 2.5f, 2.5f});
}

TEST_CASE("cuda: fill / copy / strided_copy / copy_rows / axpby / affine") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  for (int64_t n : kSizes) {
    CAPTURE(n);
    const FVec x = rnd(n, 10), y0 = rnd(n, 11);
    Dev<float> dx(x), dy(n);
    // fill on a misaligned start as well
    dy.poison();
    fill(ctx, n, 0.75f, dy.p);
    CHECK(dy.get() == FVec(size_t(n), 0.75f));
    if (n > 1) {
      fill(ctx, n - 1, -2.f, dy.p + 1);
      FVec want(size_t(n), -2.f);
      want[0] = 0.75f;
      CHECK(dy.get() == want);
    }
    dy.poison();
    copy(ctx, n, dx.p, dy.p);
    CHECK(dy.get() == x);
    for (float b : {0.f, 0.5f}) {
      FVec cy = y0;
      axpby(cpu, n, 1.5f, x.data(), b, cy.data());
      Dev<float> gy(y0);
      if (b == 0.f) gy.poison();  // beta == 0 must not read y
      axpby(ctx, n, 1.5f, dx.p, b, gy.p);
      CHECK_REL("axpby", gy.get(), cy, kTolExact);
    }
    FVec cy(static_cast<size_t>(n));
    affine(cpu, n, x.data(), -0.5f, 3.f, cy.data());
    dy.poison();
    affine(ctx, n, dx.p, -0.5f, 3.f, dy.p);
    CHECK_REL("affine", dy.get(), cy, kTolExact);
  }
  // strided_copy: a transposed, sliced 3-D view; and a 0-dim copy.
  {
    const int64_t d0 = 7, d1 = 13, d2 = 5;
    const FVec x = rnd(d0 * d1 * d2 + 3, 12);
    const int64_t shape[3] = {d2, d0, d1 - 2};
    const int64_t strides[3] = {1, d1 * d2, d2};
    const int64_t n = shape[0] * shape[1] * shape[2];
    FVec cy(static_cast<size_t>(n));
    strided_copy(cpu, 3, shape, strides, x.data() + 2 * d2, cy.data());
    Dev<float> dx(x), dy(n);
    dy.poison();
    strided_copy(ctx, 3, shape, strides, dx.p + 2 * d2, dy.p);
    CHECK_REL("strided_copy", dy.get(), cy, 0.0);
    Dev<float> one(static_cast<int64_t>(1));
    strided_copy(ctx, 0, shape, strides, dx.p + 5, one.p);
    CHECK(one.get()[0] == x[5]);
  }
  {
    const int64_t rows = 37, cols = 19, ldx = 23, ldy = 41;
    const FVec x = rnd(rows * ldx, 13);
    FVec y0 = rnd(rows * ldy, 14), cy = y0;
    copy_rows(cpu, rows, cols, x.data(), ldx, cy.data(), ldy);
    Dev<float> dx(x), dy(y0);
    copy_rows(ctx, rows, cols, dx.p, ldx, dy.p, ldy);
    CHECK_REL("copy_rows", dy.get(), cy, 0.0);
    // ldx = 0: one source row broadcast to every destination row (a bias).
    FVec by = y0;
    copy_rows(cpu, rows, cols, x.data(), 0, by.data(), ldy);
    Dev<float> dby(y0);
    copy_rows(ctx, rows, cols, dx.p, 0, dby.p, ldy);
    CHECK_REL("copy_rows broadcast", dby.get(), by, 0.0);
  }
}

TEST_CASE("cuda: binary / binary_bcast / sum_to") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  const Binary ops[] = {Binary::add, Binary::sub, Binary::mul, Binary::div, Binary::max, Binary::min};
  for (int64_t n : kSizes) {
    const FVec a = rnd(n, 20), b = rnd(n, 21, 0.5f, 2.f);
    Dev<float> da(a), db(b), dy(n);
    for (Binary op : ops) {
      CAPTURE(int(op));
      CAPTURE(n);
      FVec cy(static_cast<size_t>(n));
      binary(cpu, op, n, a.data(), b.data(), cy.data());
      dy.poison();
      binary(ctx, op, n, da.p, db.p, dy.p);
      CHECK_REL("binary", dy.get(), cy, kTolExact);
    }
  }
  // [3,1,5] (op) [1,4,5] -> [3,4,5]; and a scalar against [6, 7].
  {
    const int64_t shape[3] = {3, 4, 5};
    const int64_t sa[3] = {5, 0, 1}, sb[3] = {0, 5, 1};
    const FVec a = rnd(15, 22), b = rnd(20, 23, 0.5f, 2.f);
    Dev<float> da(a), db(b), dy(static_cast<int64_t>(60));
    for (Binary op : ops) {
      CAPTURE(int(op));
      FVec cy(60);
      binary_bcast(cpu, op, 3, shape, sa, sb, a.data(), b.data(), cy.data());
      dy.poison();
      binary_bcast(ctx, op, 3, shape, sa, sb, da.p, db.p, dy.p);
      CHECK_REL("binary_bcast", dy.get(), cy, kTolExact);
    }
    const int64_t shape2[2] = {6, 7}, s_full[2] = {7, 1}, s_scalar[2] = {0, 0};
    const FVec m = rnd(42, 24), s = {1.75f};
    Dev<float> dm(m), ds(s), dz(static_cast<int64_t>(42));
    FVec cz(42);
    binary_bcast(cpu, Binary::sub, 2, shape2, s_scalar, s_full, s.data(), m.data(), cz.data());
    binary_bcast(ctx, Binary::sub, 2, shape2, s_scalar, s_full, ds.p, dm.p, dz.p);
    CHECK_REL("binary_bcast scalar", dz.get(), cz, kTolExact);
  }
  // sum_to: several reduce patterns, incl. a long reduction (warp path) and "reduce everything".
  struct Case {
    std::vector<int64_t> in, out;
  };
  const Case cases[] = {{{3, 4, 5}, {1, 4, 1}},    {{3, 4, 5}, {3, 1, 5}},   {{3, 4, 5}, {1, 1, 1}},
                        {{4099, 7}, {1, 7}},       {{7, 4099}, {7, 1}},      {{2, 3, 1, 5}, {2, 1, 1, 5}},
                        {{1000003}, {1}},          {{5, 6}, {5, 6}}};
  for (const Case& c : cases) {
    int64_t nin = 1, nout = 1;
    for (size_t d = 0; d < c.in.size(); ++d) {
      nin *= c.in[d];
      nout *= c.out[d];
    }
    CAPTURE(nin);
    CAPTURE(nout);
    const FVec x = rnd(nin, 25);
    // Reference in double: the CPU float kernel sums sequentially in float, which over 1M terms is
    // itself off by more than the tolerance.
    const std::vector<double> xd(x.begin(), x.end());
    std::vector<double> yd(static_cast<size_t>(nout));
    sum_to(cpu, int(c.in.size()), c.in.data(), c.out.data(), xd.data(), yd.data());
    const FVec cy(yd.begin(), yd.end());
    Dev<float> dx(x), dy(nout);
    dy.poison();
    sum_to(ctx, int(c.in.size()), c.in.data(), c.out.data(), dx.p, dy.p);
    CHECK_REL("sum_to", dy.get(), cy, kTol);
  }
}

TEST_CASE("cuda: unary and unary_backward") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  const Unary ops[] = {Unary::neg, Unary::relu, Unary::gelu,   Unary::tanh,   Unary::exp,
                       Unary::log, Unary::sigmoid, Unary::sqrt, Unary::square, Unary::abs};
  for (int64_t n : kSizes) {
    for (Unary op : ops) {
      CAPTURE(int(op));
      CAPTURE(n);
      const bool positive = op == Unary::log || op == Unary::sqrt;
      const FVec x = positive ? rnd(n, 30, 0.1f, 3.f) : rnd(n, 30, -3.f, 3.f);
      const FVec gy = rnd(n, 31);
      FVec cy(static_cast<size_t>(n)), cgx(static_cast<size_t>(n));
      unary(cpu, op, n, x.data(), cy.data());
      unary_backward(cpu, op, n, x.data(), cy.data(), gy.data(), cgx.data());
      Dev<float> dx(x), dy(n), dgy(gy), dgx(n);
      dy.poison();
      dgx.poison();
      unary(ctx, op, n, dx.p, dy.p);
      unary_backward(ctx, op, n, dx.p, dy.p, dgy.p, dgx.p);
      CHECK_REL("unary", dy.get(), cy, kTol);
      CHECK_REL("unary_backward", dgx.get(), cgx, kTol);
    }
  }
}

TEST_CASE("cuda: reduce_axis and backward (argmax exact)") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  struct Shape3 {
    int64_t outer, n, inner;
  };
  const Shape3 shapes[] = {{1, 1, 1},   {3, 7, 1},  {5, 1000, 1}, {2, 5000, 1}, {1, 1000003, 1},
                           {4, 7, 33},  {3, 3001, 5}, {1, 9, 1025}, {70000, 3, 1}};
  for (const Shape3& s : shapes) {
    for (Reduce op : {Reduce::sum, Reduce::mean, Reduce::max}) {
      CAPTURE(s.outer);
      CAPTURE(s.n);
      CAPTURE(s.inner);
      CAPTURE(int(op));
      FVec x = rnd(s.outer * s.n * s.inner, 40);
      if (op == Reduce::max && s.n > 2) {
        // ties: the first index must win
        x[size_t(1 * s.inner)] = 5.f;
        x[size_t(2 * s.inner)] = 5.f;
      }
      const int64_t no = s.outer * s.inner;
      FVec cy(static_cast<size_t>(no));
      std::vector<int32_t> carg(size_t(no), -7);
      reduce_axis(cpu, op, s.outer, s.n, s.inner, x.data(), cy.data(), op == Reduce::max ? carg.data() : nullptr);
      Dev<float> dx(x), dy(no);
      Dev<int32_t> darg(no);
      dy.poison();
      darg.poison();
      reduce_axis(ctx, op, s.outer, s.n, s.inner, dx.p, dy.p, op == Reduce::max ? darg.p : nullptr);
      CHECK_REL("reduce_axis", dy.get(), cy, kTol);
      if (op == Reduce::max) CHECK(darg.get() == carg);
      const FVec gy = rnd(no, 41);
      FVec cgx(size_t(s.outer * s.n * s.inner));
      reduce_axis_backward(cpu, op, s.outer, s.n, s.inner, gy.data(), carg.data(), cgx.data());
      Dev<float> dgy(gy), dgx(int64_t(cgx.size()));
      dgx.poison();
      reduce_axis_backward(ctx, op, s.outer, s.n, s.inner, dgy.p, op == Reduce::max ? darg.p : nullptr, dgx.p);
      CHECK_REL("reduce_axis_backward", dgx.get(), cgx, kTolExact);
    }
  }
  // NaN wins the max, and the first NaN is the argmax.
  {
    FVec x = {1.f, std::nanf(""), 3.f, std::nanf(""), 2.f};
    Dev<float> dx(x), dy(static_cast<int64_t>(1));
    Dev<int32_t> darg(static_cast<int64_t>(1));
    reduce_axis(ctx, Reduce::max, 1, 5, 1, dx.p, dy.p, darg.p);
    CHECK(std::isnan(dy.get()[0]));
    CHECK(darg.get()[0] == 1);
  }
}

TEST_CASE("cuda: sum_all / dot / sum_squares / nonfinite_any") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(1000003), int64_t(4194304 + 5)}) {
    CAPTURE(n);
    const FVec a = rnd(n, 50), b = rnd(n, 51);
    double abs_a = 0, abs_ab = 0, sq = 0;
    for (int64_t i = 0; i < n; ++i) {
      abs_a += std::fabs(a[size_t(i)]);
      abs_ab += std::fabs(double(a[size_t(i)]) * b[size_t(i)]);
      sq += double(a[size_t(i)]) * a[size_t(i)];
    }
    Dev<float> da(a), db(b), out(static_cast<int64_t>(4));
    out.poison();
    sum_all(ctx, n, da.p, out.p);
    dot(ctx, n, da.p, db.p, out.p + 1);
    sum_squares(ctx, n, da.p, out.p + 2);
    nonfinite_any(ctx, n, da.p, out.p + 3);
    const FVec g = out.get();
    float c[4];
    sum_all(cpu, n, a.data(), c + 0);
    dot(cpu, n, a.data(), b.data(), c + 1);
    sum_squares(cpu, n, a.data(), c + 2);
    nonfinite_any(cpu, n, a.data(), c + 3);
    CHECK(std::fabs(g[0] - c[0]) <= 1e-6 * abs_a + 1e-30);
    CHECK(std::fabs(g[1] - c[1]) <= 1e-6 * abs_ab + 1e-30);
    CHECK(std::fabs(g[2] - c[2]) <= 1e-6 * sq + 1e-30);
    CHECK(g[3] == 0.f);
    CHECK(c[3] == 0.f);
    // Repeating a reduction gives the same bits (deterministic, and the counter reset itself).
    sum_all(ctx, n, da.p, out.p + 3);
    CHECK(out.get()[3] == g[0]);
  }
  for (float bad : {std::numeric_limits<float>::infinity(), std::nanf(""), -std::numeric_limits<float>::infinity()}) {
    FVec x = rnd(1000003, 52);
    x.back() = bad;
    Dev<float> dx(x), out(static_cast<int64_t>(1));
    nonfinite_any(ctx, int64_t(x.size()), dx.p, out.p);
    CHECK(out.get()[0] == 1.f);
  }
}

TEST_CASE("cuda: gemm and gemm_batched (all transposes / padded leading dims / beta 0 not read)") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  REQUIRE_FALSE(ctx.tf32);
  const int64_t m = 37, n = 53, k = 29;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (float beta : {0.f, 0.5f}) {
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(beta);
        const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
        const FVec a = rnd((ta ? k : m) * lda, 60), b = rnd((tb ? n : k) * ldb, 61);
        FVec c0 = rnd(m * ldc, 62), cc = c0;
        gemm(cpu, bool(ta), bool(tb), m, n, k, 1.25f, a.data(), lda, b.data(), ldb, beta, cc.data(), ldc);
        Dev<float> da(a), db(b), dc(c0);
        if (beta == 0.f) {  // NaN everywhere C is "not read"; the padding columns must stay NaN
          FVec pc = c0;
          for (auto& v : pc) v = std::nanf("");
          dc.upload(pc);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = n; j < ldc; ++j) cc[size_t(i * ldc + j)] = std::nanf("");
        }
        gemm(ctx, bool(ta), bool(tb), m, n, k, 1.25f, da.p, lda, db.p, ldb, beta, dc.p, ldc);
        CHECK_REL("gemm", dc.get(), cc, kTol);
      }
  // Batched, A shared (stride 0), 5 problems.
  {
    const int64_t batch = 5, sb = k * n + 7, sc = m * n + 11;
    const FVec a = rnd(m * k, 63), b = rnd(batch * sb, 64);
    FVec c0 = rnd(batch * sc, 65), cc = c0;
    gemm_batched(cpu, false, false, m, n, k, 1.f, a.data(), k, 0, b.data(), n, sb, 1.f, cc.data(), n, sc, batch);
    Dev<float> da(a), db(b), dc(c0);
    gemm_batched(ctx, false, false, m, n, k, 1.f, da.p, k, 0, db.p, n, sb, 1.f, dc.p, n, sc, batch);
    CHECK_REL("gemm_batched", dc.get(), cc, kTol);
    // transposed both
    FVec cc2 = c0;
    gemm_batched(cpu, true, true, m, n, k, 0.5f, a.data(), m, 0, b.data(), k, sb, 0.f, cc2.data(), n, sc, batch);
    Dev<float> dc2(c0);
    gemm_batched(ctx, true, true, m, n, k, 0.5f, da.p, m, 0, db.p, k, sb, 0.f, dc2.p, n, sc, batch);
    CHECK_REL("gemm_batched TT", dc2.get(), cc2, kTol);
  }
  // k == 0: C = beta * C.
  {
    FVec c0 = rnd(6, 66), cc = c0;
    gemm(cpu, false, false, 2, 3, 0, 1.f, c0.data(), 1, c0.data(), 3, 0.5f, cc.data(), 3);
    Dev<float> dc(c0);
    gemm(ctx, false, false, 2, 3, 0, 1.f, dc.p, 1, dc.p, 3, 0.5f, dc.p, 3);
    CHECK_REL("gemm k=0", dc.get(), cc, kTolExact);
  }
}

namespace {

void conv_parity(const ConvShape& cs, bool with_bias, const char* label) {
  CudaCtx& ctx = gpu();
  CAPTURE(label);
  const int64_t nx = cs.n * cs.c * cs.h * cs.w, nw = cs.k * cs.c * cs.r * cs.s, ny = cs.n * cs.k * cs.oh() * cs.ow();
  const FVec x = rnd(nx, 70), w = rnd(nw, 71), bias = rnd(cs.k, 72), gy = rnd(ny, 73);
  const FVec gw0 = rnd(nw, 74), gb0 = rnd(cs.k, 75);
  FVec cy(static_cast<size_t>(ny)), cgx(static_cast<size_t>(nx)), cgw = gw0, cgb = gb0;
  FVec cws(size_t(std::max<int64_t>(conv2d_workspace_elems(cpu, cs), 1)));
  conv2d_forward(cpu, cs, x.data(), w.data(), with_bias ? bias.data() : nullptr, cy.data(), cws.data());
  conv2d_backward_data(cpu, cs, gy.data(), w.data(), cgx.data(), cws.data());
  conv2d_backward_filter(cpu, cs, x.data(), gy.data(), cgw.data(), with_bias ? cgb.data() : nullptr, cws.data());

  Dev<float> dx(x), dw(w), db(bias), dgy(gy), dy(ny), dgx(nx), dgw(gw0), dgb(gb0);
  Dev<float> ws(conv2d_workspace_elems(ctx, cs));
  dy.poison();
  dgx.poison();
  conv2d_forward(ctx, cs, dx.p, dw.p, with_bias ? db.p : nullptr, dy.p, ws.p);
  conv2d_backward_data(ctx, cs, dgy.p, dw.p, dgx.p, ws.p);
  conv2d_backward_filter(ctx, cs, dx.p, dgy.p, dgw.p, with_bias ? dgb.p : nullptr, ws.p);
  CHECK_REL("conv2d_forward", dy.get(), cy, kTol);
  CHECK_REL("conv2d_backward_data", dgx.get(), cgx, kTol);
  CHECK_REL("conv2d_backward_filter (accumulates)", dgw.get(), cgw, kTol);
  if (with_bias) CHECK_REL("conv2d bias grad (accumulates)", dgb.get(), cgb, kTol);
}

ConvShape conv_shape(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r, int64_t s, int64_t sh,
                     int64_t sw, int64_t ph, int64_t pw) {
  ConvShape cs;
  cs.n = n;
  cs.c = c;
  cs.h = h;
  cs.w = w;
  cs.k = k;
  cs.r = r;
  cs.s = s;
  cs.stride_h = sh;
  cs.stride_w = sw;
  cs.pad_h = ph;
  cs.pad_w = pw;
  return cs;
}

const ConvShape kConvShapes[] = {
    conv_shape(3, 5, 11, 9, 7, 3, 3, 2, 2, 1, 1),    // odd sizes, stride 2, pad 1
    conv_shape(2, 3, 8, 8, 4, 1, 1, 1, 1, 0, 0),     // pointwise
    conv_shape(1, 1, 5, 7, 2, 5, 3, 1, 2, 2, 1),     // rectangular kernel, mixed strides/pads
    conv_shape(4, 16, 16, 16, 32, 3, 3, 1, 1, 1, 1), // a ResNet-20 stage
    conv_shape(2, 3, 13, 17, 5, 4, 2, 3, 1, 0, 1),   // even kernel, stride 3
};

}  // namespace

TEST_CASE("cuda: im2col and col2im of one image") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  for (const ConvShape& cs : kConvShapes) {
    const int64_t nx = cs.c * cs.h * cs.w, ncol = cs.c * cs.r * cs.s * cs.oh() * cs.ow();
    const FVec x = rnd(nx, 76), col = rnd(ncol, 77);
    FVec ccol(static_cast<size_t>(ncol)), cx(static_cast<size_t>(nx));
    im2col(cpu, cs, x.data(), ccol.data());
    col2im(cpu, cs, col.data(), cx.data());
    Dev<float> dx(x), dcol(col), gcol(ncol), gx(nx);
    gcol.poison();
    gx.poison();
    im2col(ctx, cs, dx.p, gcol.p);
    col2im(ctx, cs, dcol.p, gx.p);
    CHECK_REL("im2col", gcol.get(), ccol, 0.0);
    CHECK_REL("col2im", gx.get(), cx, kTolExact);
  }
}

TEST_CASE("cuda: conv2d forward/backward (cuDNN when built with it)") {
  if (!gpu_ready()) return;
  for (const ConvShape& cs : kConvShapes) {
    conv_parity(cs, true, "bias");
    conv_parity(cs, false, "no bias");
  }
}

TEST_CASE("cuda: conv2d forward/backward on the own im2col+GEMM path (HAMU_NO_CUDNN=1)") {
  if (!gpu_ready()) return;
  setenv("HAMU_NO_CUDNN", "1", 1);
  for (const ConvShape& cs : kConvShapes) conv_parity(cs, true, "own path");
  unsetenv("HAMU_NO_CUDNN");
}

TEST_CASE("cuda: max and average pooling") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  auto pool_shape = [](int64_t n, int64_t c, int64_t h, int64_t w, int64_t r, int64_t s, int64_t st, int64_t pad) {
    PoolShape ps;
    ps.n = n;
    ps.c = c;
    ps.h = h;
    ps.w = w;
    ps.r = r;
    ps.s = s;
    ps.stride_h = st;
    ps.stride_w = st;
    ps.pad_h = pad;
    ps.pad_w = pad;
    return ps;
  };
  const PoolShape shapes[] = {pool_shape(2, 3, 9, 11, 2, 2, 2, 0), pool_shape(3, 5, 13, 7, 3, 3, 2, 1),
                              pool_shape(1, 2, 8, 8, 8, 8, 8, 0), pool_shape(4, 1, 5, 5, 3, 3, 1, 1)};
  for (const PoolShape& ps : shapes) {
    const int64_t nx = ps.n * ps.c * ps.h * ps.w, ny = ps.n * ps.c * ps.oh() * ps.ow();
    FVec x = rnd(nx, 80);
    x[3] = x[4];  // a tie
    const FVec gy = rnd(ny, 81);
    FVec cy(static_cast<size_t>(ny)), cgx(static_cast<size_t>(nx)), ay(static_cast<size_t>(ny)), agx(static_cast<size_t>(nx));
    std::vector<int32_t> carg(static_cast<size_t>(ny));
    maxpool2d_forward(cpu, ps, x.data(), cy.data(), carg.data());
    maxpool2d_backward(cpu, ps, gy.data(), carg.data(), cgx.data());
    avgpool2d_forward(cpu, ps, x.data(), ay.data());
    avgpool2d_backward(cpu, ps, gy.data(), agx.data());
    Dev<float> dx(x), dgy(gy), dy(ny), dgx(nx);
    Dev<int32_t> darg(ny);
    dy.poison();
    darg.poison();
    dgx.poison();
    maxpool2d_forward(ctx, ps, dx.p, dy.p, darg.p);
    CHECK_REL("maxpool2d_forward", dy.get(), cy, 0.0);
    CHECK(darg.get() == carg);
    maxpool2d_backward(ctx, ps, dgy.p, darg.p, dgx.p);
    CHECK_REL("maxpool2d_backward", dgx.get(), cgx, kTolExact);
    dy.poison();
    dgx.poison();
    avgpool2d_forward(ctx, ps, dx.p, dy.p);
    CHECK_REL("avgpool2d_forward", dy.get(), ay, kTolExact);
    avgpool2d_backward(ctx, ps, dgy.p, dgx.p);
    CHECK_REL("avgpool2d_backward", dgx.get(), agx, kTolExact);
  }
}

TEST_CASE("cuda: batchnorm train / infer / backward") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  struct S {
    int64_t n, c, hw;
  };
  for (const S s : {S{8, 3, 49}, S{2, 16, 1}, S{1, 5, 1}, S{128, 16, 64}, S{3, 7, 1025}}) {
    for (bool affine_params : {true, false}) {
      CAPTURE(s.n);
      CAPTURE(s.c);
      CAPTURE(s.hw);
      CAPTURE(affine_params);
      const int64_t nx = s.n * s.c * s.hw;
      FVec x = rnd(nx, 90);
      for (auto& v : x) v = 3.f + 2.f * v;  // a mean far from 0
      const FVec gamma = rnd(s.c, 91, 0.5f, 1.5f), beta = rnd(s.c, 92), gy = rnd(nx, 93);
      const FVec rm0 = rnd(s.c, 94), rv0 = rnd(s.c, 95, 0.5f, 2.f);
      const float* cg = affine_params ? gamma.data() : nullptr;
      const float* cb = affine_params ? beta.data() : nullptr;
      FVec cy(static_cast<size_t>(nx)), cm(static_cast<size_t>(s.c)), ci(static_cast<size_t>(s.c)), crm = rm0, crv = rv0;
      batchnorm_forward_train(cpu, s.n, s.c, s.hw, x.data(), cg, cb, 1e-5f, 0.1f, cy.data(), cm.data(), ci.data(),
                              crm.data(), crv.data());
      Dev<float> dx(x), dgam(gamma), dbet(beta), dy(nx), dm(s.c), di(s.c), drm(rm0), drv(rv0), dgy(gy);
      dy.poison();
      dm.poison();
      di.poison();
      const float* gg = affine_params ? dgam.p : nullptr;
      const float* gb = affine_params ? dbet.p : nullptr;
      batchnorm_forward_train(ctx, s.n, s.c, s.hw, dx.p, gg, gb, 1e-5f, 0.1f, dy.p, dm.p, di.p, drm.p, drv.p);
      CHECK_REL("batchnorm_forward_train y", dy.get(), cy, kTol);
      CHECK_REL("batchnorm save_mean", dm.get(), cm, kTol);
      CHECK_REL("batchnorm save_invstd", di.get(), ci, kTol);
      CHECK_REL("batchnorm running_mean", drm.get(), crm, kTol);
      CHECK_REL("batchnorm running_var (unbiased)", drv.get(), crv, kTol);
      for (bool batch_stats : {true, false}) {
        CAPTURE(batch_stats);
        const FVec gg0 = rnd(s.c, 96), gb0 = rnd(s.c, 97);
        FVec cgx(static_cast<size_t>(nx)), cgg = gg0, cgb = gb0;
        batchnorm_backward(cpu, s.n, s.c, s.hw, batch_stats, x.data(), gy.data(), cg, cm.data(), ci.data(),
                           cgx.data(), cgg.data(), cgb.data());
        Dev<float> dgx(nx), dgg(gg0), dgb(gb0), dsm(cm), dsi(ci);
        dgx.poison();
        batchnorm_backward(ctx, s.n, s.c, s.hw, batch_stats, dx.p, dgy.p, gg, dsm.p, dsi.p, dgx.p, dgg.p, dgb.p);
        CHECK_REL("batchnorm_backward gx", dgx.get(), cgx, kTol);
        CHECK_REL("batchnorm_backward ggamma", dgg.get(), cgg, kTol);
        CHECK_REL("batchnorm_backward gbeta", dgb.get(), cgb, kTol);
      }
      FVec iy(static_cast<size_t>(nx)), im(static_cast<size_t>(s.c)), ii(static_cast<size_t>(s.c));
      batchnorm_forward_infer(cpu, s.n, s.c, s.hw, x.data(), cg, cb, rm0.data(), rv0.data(), 1e-5f, iy.data(),
                              im.data(), ii.data());
      Dev<float> rm(rm0), rv(rv0);
      dy.poison();
      dm.poison();
      di.poison();
      batchnorm_forward_infer(ctx, s.n, s.c, s.hw, dx.p, gg, gb, rm.p, rv.p, 1e-5f, dy.p, dm.p, di.p);
      CHECK_REL("batchnorm_forward_infer y", dy.get(), iy, kTol);
      CHECK_REL("batchnorm_forward_infer save_mean", dm.get(), im, kTol);
      CHECK_REL("batchnorm_forward_infer save_invstd", di.get(), ii, kTol);
    }
  }
}

TEST_CASE("cuda: layernorm forward and backward") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  for (int64_t d : {int64_t(1), int64_t(37), int64_t(768), int64_t(1500)}) {
    for (int64_t rows : {int64_t(1), int64_t(3), int64_t(257)}) {
      CAPTURE(d);
      CAPTURE(rows);
      const int64_t nx = rows * d;
      FVec x = rnd(nx, 100);
      for (auto& v : x) v = 1.f + v;
      const FVec gamma = rnd(d, 101, 0.5f, 1.5f), beta = rnd(d, 102), gy = rnd(nx, 103);
      const FVec gg0 = rnd(d, 104), gb0 = rnd(d, 105);
      FVec cy(static_cast<size_t>(nx)), cm(static_cast<size_t>(rows)), cr(static_cast<size_t>(rows)), cgx(static_cast<size_t>(nx)), cgg = gg0, cgb = gb0;
      layernorm_forward(cpu, rows, d, x.data(), gamma.data(), beta.data(), 1e-5f, cy.data(), cm.data(), cr.data());
      layernorm_backward(cpu, rows, d, x.data(), gy.data(), gamma.data(), cm.data(), cr.data(), cgx.data(),
                         cgg.data(), cgb.data());
      Dev<float> dx(x), dgam(gamma), dbet(beta), dgy(gy), dy(nx), dm(rows), dr(rows), dgx(nx), dgg(gg0), dgb(gb0);
      dy.poison();
      dm.poison();
      dr.poison();
      dgx.poison();
      layernorm_forward(ctx, rows, d, dx.p, dgam.p, dbet.p, 1e-5f, dy.p, dm.p, dr.p);
      CHECK_REL("layernorm_forward y", dy.get(), cy, kTol);
      CHECK_REL("layernorm mean", dm.get(), cm, kTol);
      CHECK_REL("layernorm rstd", dr.get(), cr, kTol);
      Dev<float> sm(cm), sr(cr);  // backward from the CPU's saved statistics
      layernorm_backward(ctx, rows, d, dx.p, dgy.p, dgam.p, sm.p, sr.p, dgx.p, dgg.p, dgb.p);
      CHECK_REL("layernorm_backward gx", dgx.get(), cgx, kTol);
      CHECK_REL("layernorm_backward ggamma", dgg.get(), cgg, kTol);
      CHECK_REL("layernorm_backward gbeta", dgb.get(), cgb, kTol);
    }
  }
}

TEST_CASE("cuda: softmax / log-softmax / cross-entropy / causal softmax") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  for (int64_t d : {int64_t(1), int64_t(10), int64_t(1000), int64_t(5003)}) {
    for (int64_t rows : {int64_t(1), int64_t(7), int64_t(300)}) {
      CAPTURE(d);
      CAPTURE(rows);
      const int64_t n = rows * d;
      const FVec x = rnd(n, 110, -8.f, 8.f), gy = rnd(n, 111);
      Dev<float> dx(x), dgy(gy), dy(n), dgx(n);
      FVec cy(static_cast<size_t>(n)), cgx(static_cast<size_t>(n));
      softmax_forward(cpu, rows, d, x.data(), cy.data());
      softmax_backward(cpu, rows, d, cy.data(), gy.data(), cgx.data());
      dy.poison();
      dgx.poison();
      softmax_forward(ctx, rows, d, dx.p, dy.p);
      CHECK_REL("softmax_forward", dy.get(), cy, kTol);
      Dev<float> cyd(cy);
      softmax_backward(ctx, rows, d, cyd.p, dgy.p, dgx.p);
      CHECK_REL("softmax_backward", dgx.get(), cgx, kTol);

      log_softmax_forward(cpu, rows, d, x.data(), cy.data());
      log_softmax_backward(cpu, rows, d, cy.data(), gy.data(), cgx.data());
      dy.poison();
      dgx.poison();
      log_softmax_forward(ctx, rows, d, dx.p, dy.p);
      CHECK_REL("log_softmax_forward", dy.get(), cy, kTol);
      cyd.upload(cy);
      log_softmax_backward(ctx, rows, d, cyd.p, dgy.p, dgx.p);
      CHECK_REL("log_softmax_backward", dgx.get(), cgx, kTol);

      // Cross-entropy with an ignored row, with and without the saved log-probabilities.
      std::vector<int32_t> labels = rnd_int(rows, 0, int32_t(d - 1), 112);
      if (rows > 2) labels[1] = -100;
      const FVec gloss = rnd(rows, 113);
      FVec closs(static_cast<size_t>(rows)), clp(static_cast<size_t>(n)), cgl(static_cast<size_t>(n)), closs2(static_cast<size_t>(rows));
      cross_entropy_forward(cpu, rows, d, x.data(), labels.data(), -100, closs.data(), clp.data());
      cross_entropy_forward(cpu, rows, d, x.data(), labels.data(), -100, closs2.data(), static_cast<float*>(nullptr));
      cross_entropy_backward(cpu, rows, d, clp.data(), labels.data(), -100, gloss.data(), cgl.data());
      Dev<int32_t> dlab(labels);
      Dev<float> dloss(rows), dlp(n), dgl(n), dgloss(gloss), dloss2(rows);
      dloss.poison();
      dlp.poison();
      dloss2.poison();
      dgl.poison();
      cross_entropy_forward(ctx, rows, d, dx.p, dlab.p, -100, dloss.p, dlp.p);
      cross_entropy_forward(ctx, rows, d, dx.p, dlab.p, -100, dloss2.p, nullptr);
      CHECK_REL("cross_entropy_forward losses", dloss.get(), closs, kTol);
      CHECK_REL("cross_entropy_forward logprobs", dlp.get(), clp, kTol);
      CHECK_REL("cross_entropy_forward losses (no logprobs)", dloss2.get(), closs2, kTol);
      Dev<float> clpd(clp);
      cross_entropy_backward(ctx, rows, d, clpd.p, dlab.p, -100, dgloss.p, dgl.p);
      CHECK_REL("cross_entropy_backward", dgl.get(), cgl, kTol);
    }
  }
  for (int64_t t : {int64_t(1), int64_t(7), int64_t(64), int64_t(1100)}) {
    for (float scale : {0.125f, -0.5f}) {
      CAPTURE(t);
      CAPTURE(scale);
      const int64_t batch = t > 100 ? 2 : 5, n = batch * t * t;
      const FVec s = rnd(n, 114, -4.f, 4.f), gp = rnd(n, 115);
      FVec cp(static_cast<size_t>(n)), cgs(static_cast<size_t>(n));
      causal_softmax_forward(cpu, batch, t, scale, s.data(), cp.data());
      causal_softmax_backward(cpu, batch, t, scale, cp.data(), gp.data(), cgs.data());
      Dev<float> ds(s), dgp(gp), dp(n), dgs(n);
      dp.poison();
      dgs.poison();
      causal_softmax_forward(ctx, batch, t, scale, ds.p, dp.p);
      CHECK_REL("causal_softmax_forward", dp.get(), cp, kTol);
      Dev<float> cpd(cp);
      causal_softmax_backward(ctx, batch, t, scale, cpd.p, dgp.p, dgs.p);
      CHECK_REL("causal_softmax_backward", dgs.get(), cgs, kTol);
    }
  }
}

TEST_CASE("cuda: embedding forward and deterministic backward") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  struct S {
    int64_t n_idx, dim, vocab;
  };
  for (const S s : {S{1, 1, 1}, S{1000, 33, 5}, S{4099, 300, 3000}, S{300, 7, 100000}, S{2000, 64, 1}}) {
    CAPTURE(s.n_idx);
    CAPTURE(s.dim);
    CAPTURE(s.vocab);
    std::vector<int32_t> idx = rnd_int(s.n_idx, 0, int32_t(s.vocab - 1), 120);
    for (int64_t i = 0; i < s.n_idx; i += 3) idx[size_t(i)] = idx[0];  // a frequent token
    const FVec table = rnd(s.vocab * s.dim, 121), gout = rnd(s.n_idx * s.dim, 122), gt0 = rnd(s.vocab * s.dim, 123);
    FVec cout_(size_t(s.n_idx * s.dim)), cgt = gt0;
    embedding_forward(cpu, s.n_idx, s.dim, idx.data(), table.data(), cout_.data());
    embedding_backward(cpu, s.n_idx, s.dim, s.vocab, idx.data(), gout.data(), cgt.data());
    Dev<int32_t> didx(idx);
    Dev<float> dtab(table), dout(s.n_idx * s.dim), dgo(gout), dgt(gt0);
    dout.poison();
    embedding_forward(ctx, s.n_idx, s.dim, didx.p, dtab.p, dout.p);
    CHECK_REL("embedding_forward", dout.get(), cout_, 0.0);
    embedding_backward(ctx, s.n_idx, s.dim, s.vocab, didx.p, dgo.p, dgt.p);
    const FVec g = dgt.get();
    CHECK_REL("embedding_backward (accumulates)", g, cgt, kTolExact);
    WARN_MESSAGE(g == cgt, "embedding_backward is not bit-identical to the CPU (expected: same additions, same order)");
  }
}

TEST_CASE("cuda: dropout masks bit-identical to the CPU") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  for (int64_t n : kSizes) {
    for (float p : {0.f, 0.3f, 1.f}) {
      CAPTURE(n);
      CAPTURE(p);
      const uint64_t seed = 0x1234567890abcdefull + uint64_t(n);
      const FVec x = rnd(n, 130), gy = rnd(n, 131);
      FVec cy(static_cast<size_t>(n)), cgx(static_cast<size_t>(n));
      std::vector<uint8_t> cmask(static_cast<size_t>(n));
      dropout_forward(cpu, n, p, seed, x.data(), cy.data(), cmask.data());
      dropout_backward(cpu, n, p, cmask.data(), gy.data(), cgx.data());
      Dev<float> dx(x), dy(n), dgy(gy), dgx(n);
      Dev<uint8_t> dmask(n);
      dy.poison();
      dmask.poison();
      dgx.poison();
      dropout_forward(ctx, n, p, seed, dx.p, dy.p, dmask.p);
      dropout_backward(ctx, n, p, dmask.p, dgy.p, dgx.p);
      CHECK(dmask.get() == cmask);
      CHECK(dy.get() == cy);
      CHECK(dgx.get() == cgx);
    }
  }
}

TEST_CASE("cuda: SGD and AdamW steps") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  for (int64_t n : kSizes) {
    CAPTURE(n);
    const FVec p0 = rnd(n, 140), g = rnd(n, 141), b0 = rnd(n, 142), m0 = rnd(n, 143), v0 = rnd(n, 144, 0.f, 1.f);
    struct Sgd {
      float momentum, damp, wd;
      bool nesterov, first;
    };
    for (const Sgd s : {Sgd{0.f, 0.f, 0.f, false, false}, Sgd{0.f, 0.f, 1e-2f, false, false},
                        Sgd{0.9f, 0.1f, 1e-3f, false, true}, Sgd{0.9f, 0.f, 1e-3f, true, false}}) {
      FVec cp = p0, cb = b0;
      sgd_step(cpu, n, cp.data(), g.data(), cb.data(), 0.05f, s.momentum, s.damp, s.wd, s.nesterov, s.first);
      Dev<float> dp(p0), dg(g), db(b0);
      sgd_step(ctx, n, dp.p, dg.p, db.p, 0.05f, s.momentum, s.damp, s.wd, s.nesterov, s.first);
      CHECK_REL("sgd_step p", dp.get(), cp, kTol);
      if (s.momentum != 0.f) CHECK_REL("sgd_step buf", db.get(), cb, kTol);
    }
    for (int64_t step : {int64_t(1), int64_t(10)}) {
      FVec cp = p0, cm = m0, cv = v0;
      adamw_step(cpu, n, cp.data(), g.data(), cm.data(), cv.data(), 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
      Dev<float> dp(p0), dg(g), dm(m0), dv(v0);
      adamw_step(ctx, n, dp.p, dg.p, dm.p, dv.p, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
      CHECK_REL("adamw p", dp.get(), cp, kTol);
      CHECK_REL("adamw m", dm.get(), cm, kTol);
      CHECK_REL("adamw v", dv.get(), cv, kTol);
    }
  }
}

TEST_CASE("cuda: ghost_hadamard_reduce and segment_rowdot") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  struct S {
    int64_t nf, nr, tf, tr, pad;
  };
  for (const S s : {S{1, 1, 1, 1, 0}, S{7, 13, 1, 1, 3}, S{5, 9, 3, 20, 5}, S{4, 6, 17, 33, 0}, S{3, 70, 2, 1, 1}}) {
    CAPTURE(s.nf);
    CAPTURE(s.nr);
    CAPTURE(s.tf);
    CAPTURE(s.tr);
    const int64_t ld = s.nr * s.tr + s.pad, rows = s.nf * s.tf;
    const FVec a = rnd(rows * ld, 150), g = rnd(rows * ld, 151), k0 = rnd(s.nf * s.nr, 152);
    FVec ck = k0;
    ghost_hadamard_reduce(cpu, s.nf, s.nr, s.tf, s.tr, a.data(), g.data(), ld, ck.data());
    Dev<float> da(a), dg(g), dk(k0);
    ghost_hadamard_reduce(ctx, s.nf, s.nr, s.tf, s.tr, da.p, dg.p, ld, dk.p);
    CHECK_REL("ghost_hadamard_reduce (accumulates)", dk.get(), ck, kTol);
  }
  struct R {
    int64_t nseg, seg, width;
  };
  for (const R r : {R{1, 1, 1}, R{9, 3, 17}, R{4, 50, 129}, R{1000, 2, 3}}) {
    CAPTURE(r.nseg);
    CAPTURE(r.seg);
    CAPTURE(r.width);
    const int64_t n = r.nseg * r.seg * r.width;
    const FVec p = rnd(n, 153), g = rnd(n, 154), o0 = rnd(r.nseg, 155);
    FVec co = o0;
    segment_rowdot(cpu, r.nseg, r.seg, r.width, p.data(), g.data(), co.data());
    Dev<float> dp(p), dg(g), dout(o0);
    segment_rowdot(ctx, r.nseg, r.seg, r.width, dp.p, dg.p, dout.p);
    CHECK_REL("segment_rowdot (accumulates)", dout.get(), co, kTol);
  }
}

// ------------------------------------------------------------------------------------------------
// Multi-tensor kernels and the fused HAMU update.

namespace {

// count tensors of uneven sizes living at odd offsets inside three flat buffers (theta, r, f), so the
// kernels meet misaligned starts (and r/f with different misalignments: the scalar path).
struct Blocks {
  std::vector<int64_t> sizes;
  std::vector<int64_t> off_t, off_r, off_f;
  int64_t total_t = 0, total_r = 0, total_f = 0;
};

Blocks make_blocks(int count, uint32_t seed, int64_t max_size) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Blocks b;
  for (int i = 0; i < count; ++i) {
    int64_t n;
    if (i == 0) n = 1;
    else if (i == 1) n = 16;
    else if (i == 2) n = max_size;  // one large block, many chunks
    else n = int64_t(std::exp(std::log(16.0) + u(gen) * (std::log(double(max_size)) - std::log(16.0))));
    b.sizes.push_back(n);
    // offsets: mostly aligned, some shifted by 1..3 floats, f sometimes shifted differently from r.
    const int64_t sh_r = (i % 5 == 3) ? 1 : 0, sh_f = (i % 7 == 4) ? 2 : sh_r, sh_t = (i % 5 == 3) ? 1 : 0;
    b.off_t.push_back(b.total_t + sh_t);
    b.off_r.push_back(b.total_r + sh_r);
    b.off_f.push_back(b.total_f + sh_f);
    const int64_t step = (n + 3) / 4 * 4 + 4;
    b.total_t += step;
    b.total_r += step;
    b.total_f += step;
  }
  return b;
}

struct HamuFixture {
  Blocks b;
  FVec theta, r, f;
  std::unique_ptr<Dev<float>> dtheta, dr, df;
  std::unique_ptr<Dev<const float*>> tr_, tf_;
  std::unique_ptr<Dev<float*>> tt_;
  std::unique_ptr<Dev<int64_t>> tsizes;
  std::vector<const float*> hr, hf;
  std::vector<float*> ht;

  HamuFixture(int count, uint32_t seed, int64_t max_size) {
    b = make_blocks(count, seed, max_size);
    theta = rnd(b.total_t, seed + 1);
    r = rnd(b.total_r, seed + 2, -0.01f, 0.01f);
    f = rnd(b.total_f, seed + 3, -0.01f, 0.01f);
    // make some blocks correlated so that the coefficient branches vary
    for (int i = 0; i < count; i += 3)
      for (int64_t k = 0; k < b.sizes[size_t(i)]; ++k)
        f[size_t(b.off_f[size_t(i)] + k)] += 0.5f * r[size_t(b.off_r[size_t(i)] + k)];
    dtheta = std::make_unique<Dev<float>>(theta);
    dr = std::make_unique<Dev<float>>(r);
    df = std::make_unique<Dev<float>>(f);
    std::vector<const float*> gr, gf;
    std::vector<float*> gt;
    for (int i = 0; i < count; ++i) {
      hr.push_back(r.data() + b.off_r[size_t(i)]);
      hf.push_back(f.data() + b.off_f[size_t(i)]);
      ht.push_back(theta.data() + b.off_t[size_t(i)]);
      gr.push_back(dr->p + b.off_r[size_t(i)]);
      gf.push_back(df->p + b.off_f[size_t(i)]);
      gt.push_back(dtheta->p + b.off_t[size_t(i)]);
    }
    tr_ = std::make_unique<Dev<const float*>>(gr);
    tf_ = std::make_unique<Dev<const float*>>(gf);
    tt_ = std::make_unique<Dev<float*>>(gt);
    tsizes = std::make_unique<Dev<int64_t>>(b.sizes);
  }
  int count() const { return int(b.sizes.size()); }
};

bool close_d(double a, double b, double tol = 1e-8) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::fabs(a - b) <= tol * std::max({1.0, std::fabs(a), std::fabs(b)});
}

void check_report(const HamuReport& g, const HamuReport& c) {
  CHECK(g.n_blocks == c.n_blocks);
  CHECK(g.n_direct == c.n_direct);
  CHECK(g.n_rectified == c.n_rectified);
  CHECK(g.n_colinear == c.n_colinear);
  CHECK(g.n_infeasible == c.n_infeasible);
  CHECK(g.n_collateral == c.n_collateral);
  CHECK(g.nonfinite == c.nonfinite);
  CHECK(g.criterion_met == c.criterion_met);
  CHECK(g.applied == c.applied);
  CHECK(close_d(g.kappa, c.kappa));
  CHECK(close_d(g.kappa1, c.kappa1));
  CHECK(close_d(g.kappa2, c.kappa2));
  CHECK(close_d(g.retain_norm, c.retain_norm));
  CHECK(close_d(g.forget_norm, c.forget_norm));
  CHECK(close_d(g.angle_deg, c.angle_deg, 1e-6));
  CHECK(close_d(g.feasibility_margin, c.feasibility_margin));
  CHECK(close_d(g.stopping_margin, c.stopping_margin));
}

// GPU coefficients vs CPU coefficients on the same (host) stats.
void coef_parity(const HamuConfig& cfg, const FVec& stats, HamuReport* out_cpu = nullptr) {
  CudaCtx& ctx = gpu();
  const int count = int(stats.size() / 3);
  FVec ccoef(size_t(2 * count));
  HamuReport crep;
  hamu_coefficients(cpu, cfg, count, stats.data(), ccoef.data(), &crep);
  Dev<float> dstats(stats), dcoef(int64_t(2 * count));
  Dev<HamuReport> drep(static_cast<int64_t>(1));
  dcoef.poison();
  hamu_coefficients(ctx, cfg, count, dstats.p, dcoef.p, drep.p);
  const FVec gcoef = dcoef.get();
  const HamuReport grep = drep.get()[0];
  CHECK_REL("hamu_coefficients coef", gcoef, ccoef, 1e-6);
  check_report(grep, crep);
  if (out_cpu) *out_cpu = crep;
}

std::vector<HamuConfig> all_configs(double lr, double constraint) {
  std::vector<HamuConfig> v;
  for (int variant : {int(hamu_q), int(hamu_u)})
    for (int scope : {int(scope_layer), int(scope_global)})
      for (int split : {int(split_grad_norm), int(split_uniform), int(split_softmax_dp)})
        for (int fixed : {0, 1})
          for (int cont : {0, 1})
            for (int stop : {0, 1}) {
              HamuConfig c;
              c.variant = variant;
              c.scope = scope;
              c.split = split;
              c.fixed_radius = fixed;
              c.radius = 0.05;
              c.lr = lr;
              c.constraint = constraint;
              c.continue_on_infeasible = cont;
              c.stop_on_criterion = stop;
              v.push_back(c);
            }
  return v;
}

}  // namespace

TEST_CASE("cuda: multi_sum_squares and multi_scale over uneven misaligned tensors") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  for (int count : {65, 448, 5000}) {  // 5000 > the shared-memory table limit: the global-plan path
    CAPTURE(count);
    HamuFixture fx(count, 200 + uint32_t(count), count > 1000 ? 2000 : (count > 100 ? 300000 : 1500000));
    FVec csq(static_cast<size_t>(count));
    multi_sum_squares(cpu, count, fx.hr.data(), fx.b.sizes.data(), csq.data());
    Dev<float> dsq(static_cast<int64_t>(count));
    dsq.poison();
    multi_sum_squares(ctx, count, fx.tr_->p, fx.tsizes->p, dsq.p);
    CHECK_REL("multi_sum_squares", dsq.get(), csq, 1e-6);
    const FVec scale = rnd(count, 201, 0.5f, 2.f);
    FVec cr = fx.r;
    std::vector<float*> hr_mut;
    for (int i = 0; i < count; ++i) hr_mut.push_back(cr.data() + fx.b.off_r[size_t(i)]);
    multi_scale(cpu, count, hr_mut.data(), fx.b.sizes.data(), scale.data());
    std::vector<float*> gr_mut;
    for (int i = 0; i < count; ++i) gr_mut.push_back(fx.dr->p + fx.b.off_r[size_t(i)]);
    Dev<float*> tr_mut(gr_mut);
    Dev<float> dscale(scale);
    multi_scale(ctx, count, tr_mut.p, fx.tsizes->p, dscale.p);
    CHECK_REL("multi_scale", fx.dr->get(), cr, kTolExact);
  }
}

TEST_CASE("cuda: hamu_block_stats on 65 and 448 uneven blocks (incl. size 1) deterministic") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  for (int count : {65, 448, 5000}) {
    CAPTURE(count);
    HamuFixture fx(count, 300 + uint32_t(count), count > 1000 ? 3000 : (count > 100 ? 300000 : 1500000));
    FVec cstats(size_t(3 * count));
    hamu_block_stats(cpu, count, fx.hr.data(), fx.hf.data(), fx.b.sizes.data(), cstats.data());
    Dev<float> dstats(int64_t(3 * count));
    dstats.poison();
    hamu_block_stats(ctx, count, fx.tr_->p, fx.tf_->p, fx.tsizes->p, dstats.p);
    const FVec g = dstats.get();
    // Per statistic: |gpu - cpu| <= 1e-6 * sum |terms| (the <r,f> of a block can cancel).
    int bad = 0;
    for (int i = 0; i < count; ++i) {
      const float* rp = fx.hr[size_t(i)];
      const float* fp = fx.hf[size_t(i)];
      double s_rr = 0, s_ff = 0, s_rf = 0;
      for (int64_t k = 0; k < fx.b.sizes[size_t(i)]; ++k) {
        s_rr += double(rp[k]) * rp[k];
        s_ff += double(fp[k]) * fp[k];
        s_rf += std::fabs(double(rp[k]) * fp[k]);
      }
      const double scale[3] = {s_rr, s_ff, s_rf};
      for (int j = 0; j < 3; ++j) {
        const double e = std::fabs(double(g[size_t(3 * i + j)]) - double(cstats[size_t(3 * i + j)]));
        if (!(e <= 1e-6 * scale[j] + 1e-35)) {
          if (bad < 5) MESSAGE("block " << i << " stat " << j << ": gpu " << g[size_t(3 * i + j)] << " cpu "
                                        << cstats[size_t(3 * i + j)] << " size " << fx.b.sizes[size_t(i)]);
          ++bad;
        }
      }
    }
    CHECK(bad == 0);
    // Same inputs, same bits (the chunk partials do not depend on which CTA took a chunk).
    Dev<float> again(int64_t(3 * count));
    hamu_block_stats(ctx, count, fx.tr_->p, fx.tf_->p, fx.tsizes->p, again.p);
    CHECK(again.get() == g);
  }
}

TEST_CASE("cuda: hamu_coefficients on random stats in every configuration") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  for (int count : {65, 448}) {
    HamuFixture fx(count, 400 + uint32_t(count), 200000);
    Dev<float> dstats(int64_t(3 * count));
    hamu_block_stats(ctx, count, fx.tr_->p, fx.tf_->p, fx.tsizes->p, dstats.p);
    const FVec stats = dstats.get();
    double rr = 0, ff = 0;
    for (int i = 0; i < count; ++i) {
      rr += stats[size_t(3 * i)];
      ff += stats[size_t(3 * i + 1)];
    }
    // lr and B so that both feasible and infeasible steps occur across the configurations.
    for (double constraint : {0.0, 1e-3 * std::sqrt(rr * ff), 0.5 * std::sqrt(rr * ff)}) {
      for (const HamuConfig& cfg : all_configs(0.5, constraint)) {
        CAPTURE(count);
        CAPTURE(constraint);
        CAPTURE(cfg.variant);
        CAPTURE(cfg.scope);
        CAPTURE(cfg.split);
        CAPTURE(cfg.fixed_radius);
        CAPTURE(cfg.continue_on_infeasible);
        CAPTURE(cfg.stop_on_criterion);
        coef_parity(cfg, stats);
      }
    }
  }
}

TEST_CASE("cuda: hamu_coefficients hits every branch like the CPU") {
  if (!gpu_ready()) return;
  // Q variant, fixed R = 1, uniform split B/count = 0.1 per block; (aa, cc, d) per block:
  //   direct (d <= -b|a|/R), rectified, colinear (|a_perp| = 0), infeasible (R^2 < b^2/cc).
  const FVec base = {1.f, 1.f, -0.9f,  1.f, 1.f, 0.5f,  1.f, 1.f, 1.f,  1.f, 0.001f, 0.2f};
  FVec stats;
  for (int rep = 0; rep < 17; ++rep) stats.insert(stats.end(), base.begin(), base.end());  // 68 blocks
  for (int cont : {0, 1}) {
    HamuConfig cfg;
    cfg.variant = hamu_q;
    cfg.scope = scope_layer;
    cfg.split = split_uniform;
    cfg.fixed_radius = 1;
    cfg.radius = 1.0;
    cfg.constraint = 0.1 * 68;
    cfg.continue_on_infeasible = cont;
    HamuReport c;
    coef_parity(cfg, stats, &c);
    CHECK(c.n_direct == 17);
    CHECK(c.n_rectified == 17);
    CHECK(c.n_colinear == 17);
    CHECK(c.n_infeasible == 17);
    CHECK(c.applied == cont);
  }
  // Zero constraint gradient with B = 0: a plain descent step, counted as direct.
  {
    FVec z = {1.f, 0.f, 0.f, 2.f, 0.f, 0.f, 0.5f, 0.f, 0.f};
    HamuConfig cfg;
    cfg.constraint = 0.0;
    cfg.lr = 0.1;
    HamuReport c;
    coef_parity(cfg, z, &c);
    CHECK(c.n_direct == 3);
    CHECK(c.applied == 1);
  }
  // A non-finite statistic: no step, all coefficients 0.
  {
    FVec bad = stats;
    bad[7] = std::nanf("");
    HamuConfig cfg;
    cfg.constraint = 0.01;
    HamuReport c;
    coef_parity(cfg, bad, &c);
    CHECK(c.nonfinite == 1);
  }
  // U variant, global scope, softmax-dp split on the same stats.
  {
    HamuConfig cfg;
    cfg.variant = hamu_u;
    cfg.scope = scope_global;
    cfg.split = split_softmax_dp;
    cfg.constraint = 0.05;
    cfg.lr = 0.2;
    coef_parity(cfg, stats);
    cfg.scope = scope_layer;
    coef_parity(cfg, stats);
  }
}

TEST_CASE("cuda: hamu_apply and the whole fused step against the CPU") {
  if (!gpu_ready()) return;
  CudaCtx& ctx = gpu();
  for (int count : {65, 448}) {
    CAPTURE(count);
    HamuFixture fx(count, 500 + uint32_t(count), count > 100 ? 400000 : 1200000);
    // apply with given coefficients (some blocks with both 0: must stay bit-identical)
    FVec coef = rnd(2 * count, 501);
    for (int i = 0; i < count; i += 4) coef[size_t(2 * i)] = coef[size_t(2 * i + 1)] = 0.f;
    FVec ct = fx.theta;
    hamu_apply(cpu, count, fx.ht.data(), fx.hr.data(), fx.hf.data(), fx.b.sizes.data(), coef.data());
    Dev<float> dcoef(coef);
    hamu_apply(ctx, count, fx.tt_->p, fx.tr_->p, fx.tf_->p, fx.tsizes->p, dcoef.p);
    const FVec gt = fx.dtheta->get();
    CHECK_REL("hamu_apply theta", gt, fx.theta, kTolExact);
    bool untouched = true;
    for (int i = 0; i < count; i += 4)
      for (int64_t k = 0; k < fx.b.sizes[size_t(i)]; ++k)
        untouched = untouched && gt[size_t(fx.b.off_t[size_t(i)] + k)] == ct[size_t(fx.b.off_t[size_t(i)] + k)];
    CHECK(untouched);

    // Whole step, device only: stats -> coefficients -> apply; then the CPU pipeline on the same data.
    fx.dtheta->upload(ct);
    std::copy(ct.begin(), ct.end(), fx.theta.begin());  // in place: fx.ht points into fx.theta
    HamuConfig cfg;
    cfg.lr = 0.5;
    cfg.constraint = 1e-6;
    Dev<float> dstats(int64_t(3 * count)), dc(int64_t(2 * count));
    Dev<HamuReport> drep(static_cast<int64_t>(1));
    hamu_block_stats(ctx, count, fx.tr_->p, fx.tf_->p, fx.tsizes->p, dstats.p);
    hamu_coefficients(ctx, cfg, count, dstats.p, dc.p, drep.p);
    hamu_apply(ctx, count, fx.tt_->p, fx.tr_->p, fx.tf_->p, fx.tsizes->p, dc.p);
    FVec cstats(size_t(3 * count)), ccoef(size_t(2 * count));
    HamuReport crep;
    hamu_block_stats(cpu, count, fx.hr.data(), fx.hf.data(), fx.b.sizes.data(), cstats.data());
    hamu_coefficients(cpu, cfg, count, cstats.data(), ccoef.data(), &crep);
    hamu_apply(cpu, count, fx.ht.data(), fx.hr.data(), fx.hf.data(), fx.b.sizes.data(), ccoef.data());
    const HamuReport grep = drep.get()[0];
    CHECK(grep.applied == crep.applied);
    CHECK(grep.n_direct + grep.n_rectified + grep.n_colinear + grep.n_infeasible == count);
    CHECK(grep.n_rectified == crep.n_rectified);
    CHECK(grep.n_direct == crep.n_direct);
    CHECK_REL("fused step coef", dc.get(), ccoef, 1e-5);
    // theta moved by the same step: compare the steps, not theta (the step is ~1e-3 of theta)
    const FVec gt2 = fx.dtheta->get();
    FVec gstep(gt2.size()), cstep(gt2.size());
    for (size_t i = 0; i < gt2.size(); ++i) {
      gstep[i] = gt2[i] - ct[i];
      cstep[i] = fx.theta[i] - ct[i];
    }
    CHECK_REL("fused step delta", gstep, cstep, 1e-4);
  }
}

#endif  // HAMU_CUDA
