// tests/backend_kernel_cases.cpp: kernel contracts that no engine op reaches (or reaches with one fixed
// argument), each written once and run on every backend against the CPU (tests/backend_kernels.h).
//
// What lives here rather than in the op table (tests/backend_ops_table.cpp): "not read" and "accumulates"
// contracts (beta == 0, gradients added to existing ones), padded leading dimensions and shared operands,
// NaN and tie rules, determinism, kernel arguments the engine never passes (null gamma, null logprobs,
// negative attention scale, dropout p of 0 and 1, binary max/min), and the kernels only the optimizers,
// the fused HAMU update and the hardness code call (multi-tensor passes, optimizer steps, ghost products).
//
// HOW TO ADD A KERNEL CASE: append kernel_case("name", [](auto& k) { ... }) to the list below; inside,
// call kernels::<kernel>(k.ctx, ...) on buffers from k.in(values) / k.out(n), and k.result(...) each
// output (pass heavy = true after the lambda when it needs hundreds of MB: GPU-less runs skip it). Tolerances are relative errors against the CPU (f32 without TF32):
//   elementwise, copies, pooling, embedding, dropout: 1e-6 (same float operations; usually bit-equal) or 0;
//   GEMM, convolution, normalisation, softmax family, optimizers, ghost reductions: 1e-5;
//   full reductions: |backend - cpu| <= 1e-6 * sum |terms| (both accumulate in double);
//   HAMU stats: 1e-12 * sum |terms| per statistic (double products and sums, kept in double); coefficients:
//   1e-6 (1e-9 on near-colinear blocks); report: integers equal, doubles to 1e-8 relative; dropout masks, argmax indices, HAMU branch counts: exactly equal.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "tests/backend_kernels.h"

namespace hamu::testing {
namespace {

using kernels::Binary;
using kernels::ConvShape;
using kernels::HamuConfig;
using kernels::HamuReport;
using kernels::PoolShape;
using kernels::Reduce;

constexpr double kTolExact = 1e-6;
constexpr double kTol = 1e-5;
const int64_t kSizes[] = {1, 3, 1000003};

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

ConvShape conv_shape(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r, int64_t s, int64_t sh,
                     int64_t sw, int64_t ph, int64_t pw) {
  ConvShape cs;
  cs.n = n, cs.c = c, cs.h = h, cs.w = w, cs.k = k, cs.r = r, cs.s = s;
  cs.stride_h = sh, cs.stride_w = sw, cs.pad_h = ph, cs.pad_w = pw;
  return cs;
}

// The backend convolution shapes of the op table (conv2d entry), as kernel geometry.
const ConvShape kConvShapes[] = {
    conv_shape(3, 5, 11, 9, 7, 3, 3, 2, 2, 1, 1),    // odd sizes, stride 2, pad 1
    conv_shape(2, 3, 8, 8, 4, 1, 1, 1, 1, 0, 0),     // pointwise
    conv_shape(1, 1, 5, 7, 2, 5, 3, 1, 2, 2, 1),     // rectangular kernel, mixed strides/pads
    conv_shape(4, 16, 16, 16, 32, 3, 3, 1, 1, 1, 1), // a ResNet-20 stage
    conv_shape(2, 3, 13, 17, 5, 4, 2, 3, 1, 0, 1),   // even kernel, stride 3
};

// Filter and bias gradients accumulate into what is there; outputs and data gradients are overwritten.
template <class K> void conv_accumulate(K& k, const ConvShape& cs, const std::string& label) {
  const int64_t nx = cs.n * cs.c * cs.h * cs.w, nw = cs.k * cs.c * cs.r * cs.s, ny = cs.n * cs.k * cs.oh() * cs.ow();
  float *x = k.in(rnd(nx, 70)), *w = k.in(rnd(nw, 71)), *b = k.in(rnd(cs.k, 72)), *gy = k.in(rnd(ny, 73));
  float *gw = k.in(rnd(nw, 74)), *gb = k.in(rnd(cs.k, 75)), *y = k.out(ny), *gx = k.out(nx);
  float* ws = k.out(std::max<int64_t>(kernels::conv2d_workspace_elems(k.ctx, cs), 1));
  kernels::conv2d_forward(k.ctx, cs, x, w, b, y, ws);
  kernels::conv2d_backward_data(k.ctx, cs, gy, w, gx, ws);
  kernels::conv2d_backward_filter(k.ctx, cs, x, gy, gw, gb, ws);
  k.result(label + " conv2d_forward", y, ny, kTol);
  k.result(label + " conv2d_backward_data", gx, nx, kTol);
  k.result(label + " conv2d_backward_filter (accumulates)", gw, nw, kTol);
  k.result(label + " conv2d bias grad (accumulates)", gb, cs.k, kTol);
  float *y2 = k.out(ny), *gw2 = k.in(rnd(nw, 76));
  kernels::conv2d_forward(k.ctx, cs, x, w, static_cast<const float*>(nullptr), y2, ws);
  kernels::conv2d_backward_filter(k.ctx, cs, x, gy, gw2, static_cast<float*>(nullptr), ws);
  k.result(label + " conv2d_forward (no bias)", y2, ny, kTol);
  k.result(label + " conv2d_backward_filter (no bias, accumulates)", gw2, nw, kTol);
}

// ---- the fused HAMU update: `count` tensors of uneven sizes at odd offsets inside three flat buffers
// (theta, r, f), so the kernels meet misaligned starts (and r/f with different misalignments).
struct Blocks {
  std::vector<int64_t> sizes, off_t, off_r, off_f;
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

// Host values of a fixture; some blocks correlated so that the coefficient branches vary.
struct HamuData {
  Blocks b;
  FVec theta, r, f;
  HamuData(int count, uint32_t seed, int64_t max_size) : b(make_blocks(count, seed, max_size)) {
    theta = rnd(b.total_t, seed + 1);
    r = rnd(b.total_r, seed + 2, -0.01f, 0.01f);
    f = rnd(b.total_f, seed + 3, -0.01f, 0.01f);
    for (int i = 0; i < count; i += 3)
      for (int64_t j = 0; j < b.sizes[size_t(i)]; ++j)
        f[size_t(b.off_f[size_t(i)] + j)] += 0.5f * r[size_t(b.off_r[size_t(i)] + j)];
  }
  int count() const { return int(b.sizes.size()); }
};

// The data on one backend, with pointer tables in the memory its kernels read them from.
template <class K> struct HamuOn {
  float *theta, *r, *f;
  float* const* t_theta;
  const float* const* t_r;
  const float* const* t_f;
  float* const* t_r_mut;
  const int64_t* sizes;
  HamuOn(K& k, const HamuData& d) {
    theta = k.in(d.theta);
    r = k.in(d.r);
    f = k.in(d.f);
    std::vector<float*> pt, pr_mut;
    std::vector<const float*> pr, pf;
    for (int i = 0; i < d.count(); ++i) {
      pt.push_back(theta + d.b.off_t[size_t(i)]);
      pr.push_back(r + d.b.off_r[size_t(i)]);
      pf.push_back(f + d.b.off_f[size_t(i)]);
      pr_mut.push_back(r + d.b.off_r[size_t(i)]);
    }
    t_theta = k.table(pt);
    t_r = k.table(pr);
    t_f = k.table(pf);
    t_r_mut = k.table(pr_mut);
    sizes = k.in(d.b.sizes);
  }
};

std::vector<HamuConfig> all_configs(double lr, double constraint) {
  std::vector<HamuConfig> v;
  for (int variant : {int(kernels::hamu_q), int(kernels::hamu_u)})
    for (int scope : {int(kernels::scope_layer), int(kernels::scope_global)})
      for (int split : {int(kernels::split_grad_norm), int(kernels::split_uniform), int(kernels::split_softmax_dp)})
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

// Coefficients and report from host stats; returns the report.
template <class K>
HamuReport coefficients(K& k, const std::string& label, const HamuConfig& cfg, const std::vector<double>& stats) {
  const int count = int(stats.size() / 3);
  double* coef = k.template out<double>(2 * count);
  HamuReport* rep = k.report();
  kernels::hamu_coefficients(k.ctx, cfg, count, k.in(stats), coef, rep);
  k.result(label + " coefficients", coef, 2 * count, 1e-6);
  const HamuReport r = k.get_report(rep);
  k.record_report(label + " report", r);
  return r;
}

std::vector<KernelCase> build_cases() {
  std::vector<KernelCase> c;

  c.push_back(kernel_case("fill (misaligned start) and copy", [](auto& k) {
    for (int64_t n : kSizes) {
      float* y = k.out(n);
      kernels::fill(k.ctx, n, 0.75f, y);
      k.result("fill", y, n, 0);
      if (n > 1) {
        kernels::fill(k.ctx, n - 1, -2.f, y + 1);
        k.result("fill from element 1", y, n, 0);
      }
      float *x = k.in(rnd(n, 10)), *z = k.out(n);
      kernels::copy(k.ctx, n, x, z);
      k.result("copy", z, n, 0);
    }
  }));

  c.push_back(kernel_case("axpby (beta 0 does not read y)", [](auto& k) {
    for (int64_t n : kSizes)
      for (float b : {0.f, 0.5f}) {
        float* x = k.in(rnd(n, 10));
        float* y = b == 0.f ? k.out(n) : k.in(rnd(n, 11));
        kernels::axpby(k.ctx, n, 1.5f, x, b, y);
        k.result("axpby beta " + std::to_string(b), y, n, kTolExact);
      }
  }));

  c.push_back(kernel_case("strided_copy (a sliced transposed view at an offset; 0 dims) and copy_rows", [](auto& k) {
    const int64_t d0 = 7, d1 = 13, d2 = 5;
    float* x = k.in(rnd(d0 * d1 * d2 + 3, 12));
    const int64_t shape[3] = {d2, d0, d1 - 2}, strides[3] = {1, d1 * d2, d2};
    const int64_t n = shape[0] * shape[1] * shape[2];
    float *y = k.out(n), *one = k.out(1);
    kernels::strided_copy(k.ctx, 3, shape, strides, x + 2 * d2, y);
    kernels::strided_copy(k.ctx, 0, shape, strides, x + 5, one);
    k.result("strided_copy", y, n, 0);
    k.result("strided_copy 0-dim", one, 1, 0);
    const int64_t rows = 37, cols = 19, ldx = 23, ldy = 41;
    float *src = k.in(rnd(rows * ldx, 13)), *dst = k.in(rnd(rows * ldy, 14)), *bdst = k.in(rnd(rows * ldy, 14));
    kernels::copy_rows(k.ctx, rows, cols, src, ldx, dst, ldy);
    kernels::copy_rows(k.ctx, rows, cols, src, 0, bdst, ldy);  // ldx 0: one row broadcast to every row
    k.result("copy_rows", dst, rows * ldy, 0);
    k.result("copy_rows broadcast", bdst, rows * ldy, 0);
  }));

  c.push_back(kernel_case("binary and binary_bcast max / min (no engine op)", [](auto& k) {
    for (Binary op : {Binary::max, Binary::min}) {
      const std::string name = op == Binary::max ? "max" : "min";
      for (int64_t n : kSizes) {
        float *a = k.in(rnd(n, 20)), *b = k.in(rnd(n, 21, 0.5f, 2.f)), *y = k.out(n);
        kernels::binary(k.ctx, op, n, a, b, y);
        k.result("binary " + name, y, n, kTolExact);
      }
      const int64_t shape[3] = {3, 4, 5}, sa[3] = {5, 0, 1}, sb[3] = {0, 5, 1};
      float *a = k.in(rnd(15, 22)), *b = k.in(rnd(20, 23, 0.5f, 2.f)), *y = k.out(60);
      kernels::binary_bcast(k.ctx, op, 3, shape, sa, sb, a, b, y);
      k.result("binary_bcast " + name, y, 60, kTolExact);
    }
  }));

  c.push_back(kernel_case("reduce_axis: NaN wins the max and the first NaN is the argmax", [](auto& k) {
    float *x = k.in(FVec{1.f, std::nanf(""), 3.f, std::nanf(""), 2.f}), *y = k.out(1);
    int32_t* arg = k.template out<int32_t>(1);
    kernels::reduce_axis(k.ctx, Reduce::max, 1, 5, 1, x, y, arg);
    CHECK(std::isnan(k.get(y, 1)[0]));
    CHECK(k.get(arg, 1)[0] == 1);
    k.result("max", y, 1, 0);
    k.result("argmax", arg, 1, 0);
  }));

  c.push_back(kernel_case("sum_all / dot / sum_squares / nonfinite_any (deterministic)", [](auto& k) {
    for (int64_t n : {int64_t(1), int64_t(3), int64_t(1000003), int64_t(4194304 + 5)}) {
      const FVec a = rnd(n, 50), b = rnd(n, 51);
      double abs_a = 0, abs_ab = 0, sq = 0;
      for (int64_t i = 0; i < n; ++i) {
        abs_a += std::fabs(a[size_t(i)]);
        abs_ab += std::fabs(double(a[size_t(i)]) * b[size_t(i)]);
        sq += double(a[size_t(i)]) * a[size_t(i)];
      }
      float *da = k.in(a), *db = k.in(b), *out = k.out(5);
      kernels::sum_all(k.ctx, n, da, out);
      kernels::dot(k.ctx, n, da, db, out + 1);
      kernels::sum_squares(k.ctx, n, da, out + 2);
      kernels::nonfinite_any(k.ctx, n, da, out + 3);
      kernels::sum_all(k.ctx, n, da, out + 4);  // again: the same bits (and the counter reset itself)
      const FVec g = k.get(out, 5);
      CHECK(g[3] == 0.f);
      CHECK(g[4] == g[0]);
      k.record("sum_all, dot, sum_squares, nonfinite_any (|a - b| <= 1e-6 sum|terms|)", widen(g), 1e-6,
               {abs_a + 1e-24, abs_ab + 1e-24, sq + 1e-24, 1e-24, abs_a + 1e-24});
    }
    for (float bad : {std::numeric_limits<float>::infinity(), std::nanf(""), -std::numeric_limits<float>::infinity()}) {
      FVec x = rnd(1000003, 52);
      x.back() = bad;
      float* out = k.out(1);
      kernels::nonfinite_any(k.ctx, int64_t(x.size()), k.in(x), out);
      CHECK(k.get(out, 1)[0] == 1.f);
    }
  }));

  c.push_back(kernel_case("gemm and gemm_batched (transposes, padded leading dims, beta 0 not read, shared A, k 0)",
                          [](auto& k) {
    const int64_t m = 37, n = 53, kk = 29;
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.f, 0.5f}) {
          const int64_t lda = (ta ? m : kk) + 3, ldb = (tb ? kk : n) + 2, ldc = n + 5;
          float *a = k.in(rnd((ta ? kk : m) * lda, 60)), *b = k.in(rnd((tb ? n : kk) * ldb, 61));
          // beta 0: C starts as NaN everywhere and the padding columns must stay NaN
          float* cm = beta == 0.f ? k.out(m * ldc) : k.in(rnd(m * ldc, 62));
          kernels::gemm(k.ctx, bool(ta), bool(tb), m, n, kk, 1.25f, a, lda, b, ldb, beta, cm, ldc);
          k.result("gemm ta " + std::to_string(ta) + " tb " + std::to_string(tb) + " beta " + std::to_string(beta), cm,
                   m * ldc, kTol);
        }
    const int64_t batch = 5, sb = kk * n + 7, sc = m * n + 11;
    float *a = k.in(rnd(m * kk, 63)), *b = k.in(rnd(batch * sb, 64));
    float *c1 = k.in(rnd(batch * sc, 65)), *c2 = k.in(rnd(batch * sc, 65));
    kernels::gemm_batched(k.ctx, false, false, m, n, kk, 1.f, a, kk, 0, b, n, sb, 1.f, c1, n, sc, batch);
    kernels::gemm_batched(k.ctx, true, true, m, n, kk, 0.5f, a, m, 0, b, kk, sb, 0.f, c2, n, sc, batch);
    k.result("gemm_batched, A shared", c1, batch * sc, kTol);
    k.result("gemm_batched TT, A shared", c2, batch * sc, kTol);
    float* c0 = k.in(rnd(6, 66));
    kernels::gemm(k.ctx, false, false, 2, 3, 0, 1.f, c0, 1, c0, 3, 0.5f, c0, 3);
    k.result("gemm k 0: C = beta C", c0, 6, kTolExact);
  }));

  c.push_back(kernel_case("im2col and col2im of one image", [](auto& k) {
    for (const ConvShape& cs : kConvShapes) {
      const int64_t nx = cs.c * cs.h * cs.w, ncol = cs.c * cs.r * cs.s * cs.oh() * cs.ow();
      float *x = k.in(rnd(nx, 76)), *col = k.in(rnd(ncol, 77)), *gcol = k.out(ncol), *gx = k.out(nx);
      kernels::im2col(k.ctx, cs, x, gcol);
      kernels::col2im(k.ctx, cs, col, gx);
      k.result("im2col", gcol, ncol, 0);
      k.result("col2im", gx, nx, kTolExact);
    }
  }));

  c.push_back(kernel_case("conv2d gradients accumulate (cuDNN when built with it, and the own path)", [](auto& k) {
    for (const ConvShape& cs : kConvShapes) conv_accumulate(k, cs, "default path");
    setenv("HAMU_NO_CUDNN", "1", 1);
    for (const ConvShape& cs : kConvShapes) conv_accumulate(k, cs, "own path");
    unsetenv("HAMU_NO_CUDNN");
  }));

  c.push_back(kernel_case("batchnorm with and without affine parameters: saved and running statistics, "
                          "accumulated parameter gradients",
                          [](auto& k) {
    struct S {
      int64_t n, c, hw;
    };
    const kernels::CpuCtx cpu{};
    for (const S s : {S{8, 3, 49}, S{2, 16, 1}, S{1, 5, 1}, S{128, 16, 64}, S{3, 7, 1025}})
      for (bool affine : {true, false}) {
        const std::string at = " n " + std::to_string(s.n) + " c " + std::to_string(s.c) + " hw " +
                               std::to_string(s.hw) + (affine ? " affine" : " no affine");
        const int64_t nx = s.n * s.c * s.hw;
        FVec xv = rnd(nx, 90);
        for (auto& v : xv) v = 3.f + 2.f * v;  // a mean far from 0
        const FVec gamma = rnd(s.c, 91, 0.5f, 1.5f), beta = rnd(s.c, 92), rm0 = rnd(s.c, 94), rv0 = rnd(s.c, 95, 0.5f, 2.f);
        float *x = k.in(xv), *gy = k.in(rnd(nx, 93)), *rm = k.in(rm0), *rv = k.in(rv0);
        const float* g = affine ? k.in(gamma) : nullptr;
        const float* b = affine ? k.in(beta) : nullptr;
        float *y = k.out(nx), *mean = k.out(s.c), *invstd = k.out(s.c);
        kernels::batchnorm_forward_train(k.ctx, s.n, s.c, s.hw, x, g, b, 1e-5f, 0.1f, y, mean, invstd, rm, rv);
        k.result("train y" + at, y, nx, kTol);
        k.result("train save_mean" + at, mean, s.c, kTol);
        k.result("train save_invstd" + at, invstd, s.c, kTol);
        k.result("running_mean" + at, rm, s.c, kTol);
        k.result("running_var (unbiased)" + at, rv, s.c, kTol);
        // the backward from the CPU's saved statistics
        FVec cy(static_cast<size_t>(nx)), cm(static_cast<size_t>(s.c)), ci(static_cast<size_t>(s.c)), crm = rm0, crv = rv0;
        kernels::batchnorm_forward_train(cpu, s.n, s.c, s.hw, xv.data(), affine ? gamma.data() : nullptr,
                                         affine ? beta.data() : nullptr, 1e-5f, 0.1f, cy.data(), cm.data(), ci.data(),
                                         crm.data(), crv.data());
        float *sm = k.in(cm), *si = k.in(ci);
        for (bool batch_stats : {true, false}) {
          float *gx = k.out(nx), *gg = k.in(rnd(s.c, 96)), *gb = k.in(rnd(s.c, 97));
          kernels::batchnorm_backward(k.ctx, s.n, s.c, s.hw, batch_stats, x, gy, g, sm, si, gx, gg, gb);
          const std::string bs = batch_stats ? " batch stats" : " fixed stats";
          k.result("backward gx" + bs + at, gx, nx, kTol);
          k.result("backward ggamma (accumulates)" + bs + at, gg, s.c, kTol);
          k.result("backward gbeta (accumulates)" + bs + at, gb, s.c, kTol);
        }
        float *irm = k.in(rm0), *irv = k.in(rv0), *iy = k.out(nx), *im = k.out(s.c), *ii = k.out(s.c);
        kernels::batchnorm_forward_infer(k.ctx, s.n, s.c, s.hw, x, g, b, irm, irv, 1e-5f, iy, im, ii);
        k.result("infer y" + at, iy, nx, kTol);
        k.result("infer save_mean" + at, im, s.c, kTol);
        k.result("infer save_invstd" + at, ii, s.c, kTol);
      }
  }));

  c.push_back(kernel_case("layernorm saved mean / rstd; backward from the CPU's statistics accumulates ggamma, gbeta",
                          [](auto& k) {
    const kernels::CpuCtx cpu{};
    for (int64_t d : {int64_t(1), int64_t(37), int64_t(768), int64_t(1500)})
      for (int64_t rows : {int64_t(1), int64_t(3), int64_t(257)}) {
        const std::string at = " rows " + std::to_string(rows) + " d " + std::to_string(d);
        const int64_t nx = rows * d;
        FVec xv = rnd(nx, 100);
        for (auto& v : xv) v = 1.f + v;
        const FVec gamma = rnd(d, 101, 0.5f, 1.5f), beta = rnd(d, 102);
        float *x = k.in(xv), *gam = k.in(gamma), *bet = k.in(beta), *gy = k.in(rnd(nx, 103));
        float *y = k.out(nx), *mean = k.out(rows), *rstd = k.out(rows), *gx = k.out(nx);
        float *gg = k.in(rnd(d, 104)), *gb = k.in(rnd(d, 105));
        kernels::layernorm_forward(k.ctx, rows, d, x, gam, bet, 1e-5f, y, mean, rstd);
        k.result("layernorm mean" + at, mean, rows, kTol);
        k.result("layernorm rstd" + at, rstd, rows, kTol);
        FVec cy(static_cast<size_t>(nx)), cm(static_cast<size_t>(rows)), cr(static_cast<size_t>(rows));
        kernels::layernorm_forward(cpu, rows, d, xv.data(), gamma.data(), beta.data(), 1e-5f, cy.data(), cm.data(), cr.data());
        kernels::layernorm_backward(k.ctx, rows, d, x, gy, gam, k.in(cm), k.in(cr), gx, gg, gb);
        k.result("layernorm_backward gx" + at, gx, nx, kTol);
        k.result("layernorm_backward ggamma (accumulates)" + at, gg, d, kTol);
        k.result("layernorm_backward gbeta (accumulates)" + at, gb, d, kTol);
      }
  }));

  c.push_back(kernel_case("cross_entropy_forward without saved log-probabilities (null)", [](auto& k) {
    for (int64_t d : {int64_t(1), int64_t(10), int64_t(1000), int64_t(5003)})
      for (int64_t rows : {int64_t(1), int64_t(7), int64_t(300)}) {
        std::vector<int32_t> labels = rnd_int(rows, 0, int32_t(d - 1), 112);
        if (rows > 2) labels[1] = -100;
        float *x = k.in(rnd(rows * d, 110, -8.f, 8.f)), *loss = k.out(rows);
        kernels::cross_entropy_forward(k.ctx, rows, d, x, k.in(labels), -100, loss, static_cast<float*>(nullptr));
        k.result("losses rows " + std::to_string(rows) + " classes " + std::to_string(d), loss, rows, kTol);
      }
  }));

  c.push_back(kernel_case("cross_entropy fused: losses, saved gradient, mean over kept rows, scaled backward", [](auto& k) {
    for (int64_t d : {int64_t(1), int64_t(10), int64_t(1000), int64_t(1025)})
      for (int64_t rows : {int64_t(1), int64_t(7), int64_t(1024)}) {
        const std::string at = " rows " + std::to_string(rows) + " classes " + std::to_string(d);
        std::vector<int32_t> labels = rnd_int(rows, 0, int32_t(d - 1), 116);
        for (int64_t r = 1; r < rows; r += 6) labels[size_t(r)] = -100;
        const int32_t* y = k.in(labels);
        float *x = k.in(rnd(rows * d, 117, -8.f, 8.f)), *loss = k.out(rows), *grad = k.out(rows * d);
        float *mean = k.out(1), *inv = k.out(1), *gx = k.out(rows * d);
        kernels::cross_entropy_forward(k.ctx, rows, d, x, y, -100, loss, grad);
        k.result("losses" + at, loss, rows, kTol);
        k.result("saved gradient" + at, grad, rows * d, kTol);
        kernels::cross_entropy_mean(k.ctx, rows, loss, y, -100, mean, inv);
        k.result("mean" + at, mean, 1, kTol);
        k.result("1/count" + at, inv, 1, 0.0);
        kernels::cross_entropy_backward(k.ctx, rows, d, grad, y, -100, k.in(rnd(rows, 118)), 1,
                                        static_cast<const float*>(nullptr), gx);
        k.result("backward, per-row upstream" + at, gx, rows * d, kTol);
        kernels::cross_entropy_backward(k.ctx, rows, d, grad, y, -100, k.in(rnd(1, 119)), 0, inv, grad);
        k.result("backward, the mean's scalar, in place" + at, grad, rows * d, kTol);
      }
  }));

  c.push_back(kernel_case("causal softmax with a negative scale", [](auto& k) {
    for (int64_t t : {int64_t(1), int64_t(7), int64_t(64), int64_t(1100)}) {
      const int64_t batch = t > 100 ? 2 : 5, n = batch * t * t;
      float *s = k.in(rnd(n, 114, -4.f, 4.f)), *gp = k.in(rnd(n, 115)), *p = k.out(n), *gs = k.out(n);
      kernels::causal_softmax_forward(k.ctx, batch, t, -0.5f, s, p);
      k.result("causal_softmax_forward t " + std::to_string(t), p, n, kTol);
      FVec cpv(static_cast<size_t>(n));  // the backward from the CPU's probabilities
      kernels::causal_softmax_forward(kernels::CpuCtx{}, batch, t, -0.5f, k.get(s, n).data(), cpv.data());
      float* cp = k.in(cpv);
      kernels::causal_softmax_backward(k.ctx, batch, t, -0.5f, cp, gp, gs);
      k.result("causal_softmax_backward t " + std::to_string(t), gs, n, kTol);
    }
  }));

  // The unfused attention softmax (CUDA takes it only for head dims above kMaxFlashHeadDim or with
  // HAMU_ATTENTION=unfused, so no engine-level parity test reaches it): rows longer than a CTA's 256 threads,
  // a key-padding mask with holes, left padding whose first queries see no key, a batch row with every key
  // masked (probabilities exactly 0, no NaN), no mask with a negative scale, and probs aliasing scores.
  c.push_back(kernel_case("attention_softmax_forward: causal + key padding, rows seeing no key, in place", [](auto& k) {
    for (int64_t t : {int64_t(1), int64_t(7), int64_t(300), int64_t(1100)}) {
      const int64_t b = 3, h = 2, n = b * h * t * t;
      std::vector<int32_t> mask(size_t(b * t), 1);
      for (int64_t j = 0; j < t; ++j) {
        if (j % 5 == 3) mask[size_t(j)] = 0;                       // batch 0: holes
        if (j < std::min<int64_t>(4, t)) mask[size_t(t + j)] = 0;  // batch 1: left padding
        mask[size_t(2 * t + j)] = 0;                               // batch 2: nothing visible
      }
      const std::string at = " t " + std::to_string(t);
      const FVec scores = rnd(n, 160 + uint32_t(t), -4.f, 4.f);
      const int32_t* km = k.in(mask);
      float *s = k.in(scores), *p = k.out(n);
      kernels::attention_softmax_forward(k.ctx, b, h, t, 0.3f, km, s, p);
      k.result("masked" + at, p, n, kTol);
      const FVec got = k.get(p, n);
      bool zero_rows = true, finite = true;
      for (int64_t r = 0; r < b * h * t; ++r) {
        const int64_t batch = r / (h * t), i = r % t;
        const bool sees = batch == 0 || (batch == 1 && i >= std::min<int64_t>(4, t));
        for (int64_t j = 0; j < t; ++j) {
          const float v = got[size_t(r * t + j)];
          finite = finite && std::isfinite(v);
          if (!sees || j > i || !mask[size_t(batch * t + j)]) zero_rows = zero_rows && v == 0.f;
        }
      }
      CHECK_MESSAGE(finite, "attention_softmax_forward" << at << ": a non-finite probability");
      CHECK_MESSAGE(zero_rows, "attention_softmax_forward" << at << ": a masked, future or blind-row entry is not 0");
      float* p2 = k.out(n);
      kernels::attention_softmax_forward(k.ctx, b, h, t, -0.7f, static_cast<const int32_t*>(nullptr), s, p2);
      k.result("no mask, negative scale" + at, p2, n, kTol);
      float* inplace = k.in(scores);
      kernels::attention_softmax_forward(k.ctx, b, h, t, 0.3f, km, inplace, inplace);
      k.result("in place (probs == scores)" + at, inplace, n, kTol);
    }
  }));

  // Rotary embeddings with per-batch-row tables and with one table shared by the batch (cs_batch_stride 0, as a
  // batch of equal positions gives), several heads, the smallest head dim (2) and an odd head count.
  c.push_back(kernel_case("rope forward and backward: per-row and shared tables", [](auto& k) {
    struct S {
      int64_t b, t, h, dh;
    };
    for (const S sh : {S{3, 9, 5, 16}, S{2, 4, 3, 2}, S{1, 1, 1, 64}})
      for (bool shared : {false, true}) {
        const int64_t n = sh.b * sh.t * sh.h * sh.dh, nt = (shared ? 1 : sh.b) * sh.t * sh.dh;
        const int64_t stride = shared ? 0 : sh.t * sh.dh;
        const float *cs = k.in(rnd(nt, 170)), *sn = k.in(rnd(nt, 171)), *x = k.in(rnd(n, 172)), *gy = k.in(rnd(n, 173));
        float *y = k.out(n), *gx = k.out(n);
        kernels::rope_forward(k.ctx, sh.b, sh.t, sh.h, sh.dh, cs, sn, stride, x, y);
        kernels::rope_backward(k.ctx, sh.b, sh.t, sh.h, sh.dh, cs, sn, stride, gy, gx);
        const std::string at = " [" + std::to_string(sh.b) + "," + std::to_string(sh.t) + "," + std::to_string(sh.h) +
                               "," + std::to_string(sh.dh) + "]" + (shared ? " shared table" : "");
        k.result("rope_forward" + at, y, n, kTolExact);
        k.result("rope_backward" + at, gx, n, kTolExact);
      }
  }));

  c.push_back(kernel_case("embedding_backward accumulates (deterministic scatter-add)", [](auto& k) {
    struct S {
      int64_t n_idx, dim, vocab;
    };
    for (const S s : {S{1, 1, 1}, S{1000, 33, 5}, S{4099, 300, 3000}, S{300, 7, 100000}, S{2000, 64, 1}}) {
      std::vector<int32_t> idx = rnd_int(s.n_idx, 0, int32_t(s.vocab - 1), 120);
      for (int64_t i = 0; i < s.n_idx; i += 3) idx[size_t(i)] = idx[0];  // a frequent token
      float *gout = k.in(rnd(s.n_idx * s.dim, 122)), *gt = k.in(rnd(s.vocab * s.dim, 123));
      kernels::embedding_backward(k.ctx, s.n_idx, s.dim, s.vocab, k.in(idx), gout, gt);
      k.record("embedding_backward vocab " + std::to_string(s.vocab), widen(k.get(gt, s.vocab * s.dim)), kTolExact,
               {}, /*warn_unless_equal=*/true);
    }
  }));

  c.push_back(kernel_case("dropout masks bit-identical, p 0 / 0.3 / 1", [](auto& k) {
    for (int64_t n : kSizes)
      for (float p : {0.f, 0.3f, 1.f}) {
        const uint64_t seed = 0x1234567890abcdefull + uint64_t(n);
        float *x = k.in(rnd(n, 130)), *gy = k.in(rnd(n, 131)), *y = k.out(n), *gx = k.out(n);
        uint8_t* mask = k.template out<uint8_t>(n);
        kernels::dropout_forward(k.ctx, n, p, seed, x, y, mask);
        kernels::dropout_backward(k.ctx, n, p, mask, gy, gx);
        const std::string at = " n " + std::to_string(n) + " p " + std::to_string(p);
        k.result("mask" + at, mask, n, 0);
        k.result("y" + at, y, n, 0);
        k.result("gx" + at, gx, n, 0);
      }
  }));

  c.push_back(kernel_case("SGD and AdamW steps", [](auto& k) {
    for (int64_t n : kSizes) {
      const FVec p0 = rnd(n, 140), g0 = rnd(n, 141), b0 = rnd(n, 142), m0 = rnd(n, 143), v0 = rnd(n, 144, 0.f, 1.f);
      struct Sgd {
        float momentum, damp, wd;
        bool nesterov, first;
      };
      for (const Sgd s : {Sgd{0.f, 0.f, 0.f, false, false}, Sgd{0.f, 0.f, 1e-2f, false, false},
                          Sgd{0.9f, 0.1f, 1e-3f, false, true}, Sgd{0.9f, 0.f, 1e-3f, true, false}}) {
        float *p = k.in(p0), *g = k.in(g0), *b = k.in(b0);
        kernels::sgd_step(k.ctx, n, p, g, b, 0.05f, s.momentum, s.damp, s.wd, s.nesterov, s.first);
        k.result("sgd_step p", p, n, kTol);
        if (s.momentum != 0.f) k.result("sgd_step buf", b, n, kTol);
      }
      for (int64_t step : {int64_t(1), int64_t(10)}) {
        float *p = k.in(p0), *g = k.in(g0), *m = k.in(m0), *v = k.in(v0);
        kernels::adamw_step(k.ctx, n, p, g, m, v, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
        k.result("adamw p", p, n, kTol);
        k.result("adamw m", m, n, kTol);
        k.result("adamw v", v, n, kTol);
      }
    }
  }));

  c.push_back(kernel_case("ghost_hadamard_reduce and segment_rowdot (accumulate)", [](auto& k) {
    struct S {
      int64_t nf, nr, tf, tr, pad;
    };
    for (const S s : {S{1, 1, 1, 1, 0}, S{7, 13, 1, 1, 3}, S{5, 9, 3, 20, 5}, S{4, 6, 17, 33, 0}, S{3, 70, 2, 1, 1}}) {
      const int64_t ld = s.nr * s.tr + s.pad, rows = s.nf * s.tf;
      float *a = k.in(rnd(rows * ld, 150)), *g = k.in(rnd(rows * ld, 151)), *kk = k.in(rnd(s.nf * s.nr, 152));
      kernels::ghost_hadamard_reduce(k.ctx, s.nf, s.nr, s.tf, s.tr, a, g, ld, kk);
      k.result("ghost_hadamard_reduce nf " + std::to_string(s.nf) + " nr " + std::to_string(s.nr), kk, s.nf * s.nr, kTol);
    }
    struct R {
      int64_t nseg, seg, width;
    };
    for (const R r : {R{1, 1, 1}, R{9, 3, 17}, R{4, 50, 129}, R{1000, 2, 3}}) {
      const int64_t n = r.nseg * r.seg * r.width;
      float *p = k.in(rnd(n, 153)), *g = k.in(rnd(n, 154)), *out = k.in(rnd(r.nseg, 155));
      kernels::segment_rowdot(k.ctx, r.nseg, r.seg, r.width, p, g, out);
      k.result("segment_rowdot nseg " + std::to_string(r.nseg), out, r.nseg, kTol);
    }
  }));

  // ---- multi-tensor passes and the fused HAMU update
  c.push_back(kernel_case("multi_sum_squares and multi_scale over uneven misaligned tensors", [](auto& k) {
    for (int count : {65, 448, 5000}) {  // 5000 > the shared-memory table limit: the global-plan path
      HamuData d(count, 200 + uint32_t(count), count > 1000 ? 2000 : (count > 100 ? 300000 : 1500000));
      HamuOn<std::decay_t<decltype(k)>> on(k, d);
      float* sq = k.out(count);
      kernels::multi_sum_squares(k.ctx, count, on.t_r, on.sizes, sq);
      k.result("multi_sum_squares count " + std::to_string(count), sq, count, 1e-6);
      kernels::multi_scale(k.ctx, count, on.t_r_mut, on.sizes, k.in(rnd(count, 201, 0.5f, 2.f)));
      k.result("multi_scale count " + std::to_string(count), on.r, d.b.total_r, kTolExact);
    }
  }, /*heavy=*/true));

  c.push_back(kernel_case("hamu_block_stats on 65, 448 and 5000 uneven blocks (incl. size 1), deterministic", [](auto& k) {
    for (int count : {65, 448, 5000}) {
      HamuData d(count, 300 + uint32_t(count), count > 1000 ? 3000 : (count > 100 ? 300000 : 1500000));
      HamuOn<std::decay_t<decltype(k)>> on(k, d);
      double *stats = k.template out<double>(3 * count), *again = k.template out<double>(3 * count);
      kernels::hamu_block_stats(k.ctx, count, on.t_r, on.t_f, on.sizes, stats);
      kernels::hamu_block_stats(k.ctx, count, on.t_r, on.t_f, on.sizes, again);
      const std::vector<double> g = k.get(stats, 3 * count);
      CHECK(k.get(again, 3 * count) == g);  // the chunk partials do not depend on which CTA took a chunk
      // Per statistic: |backend - cpu| <= 1e-12 * sum |terms| (the <r,f> of a block can cancel).
      std::vector<double> scale;
      for (int i = 0; i < count; ++i) {
        const float* rp = d.r.data() + d.b.off_r[size_t(i)];
        const float* fp = d.f.data() + d.b.off_f[size_t(i)];
        double s_rr = 0, s_ff = 0, s_rf = 0;
        for (int64_t j = 0; j < d.b.sizes[size_t(i)]; ++j) {
          s_rr += double(rp[j]) * rp[j];
          s_ff += double(fp[j]) * fp[j];
          s_rf += std::fabs(double(rp[j]) * fp[j]);
        }
        scale.insert(scale.end(), {s_rr + 1e-35, s_ff + 1e-35, s_rf + 1e-35});
      }
      k.record("hamu_block_stats count " + std::to_string(count), g, 1e-12, scale);
    }
  }, /*heavy=*/true));

  c.push_back(kernel_case("hamu_coefficients on random stats in every configuration", [](auto& k) {
    for (int count : {65, 448}) {
      HamuData d(count, 400 + uint32_t(count), 200000);
      // The CPU's stats on every backend: the coefficient kernels are compared on the same input.
      std::vector<double> stats(size_t(3 * count));
      {
        std::vector<const float*> pr, pf;
        for (int i = 0; i < count; ++i) {
          pr.push_back(d.r.data() + d.b.off_r[size_t(i)]);
          pf.push_back(d.f.data() + d.b.off_f[size_t(i)]);
        }
        kernels::hamu_block_stats(kernels::CpuCtx{}, count, pr.data(), pf.data(), d.b.sizes.data(), stats.data());
      }
      double rr = 0, ff = 0;
      for (int i = 0; i < count; ++i) {
        rr += stats[size_t(3 * i)];
        ff += stats[size_t(3 * i + 1)];
      }
      // lr and B so that both feasible and infeasible steps occur across the configurations.
      for (double constraint : {0.0, 1e-3 * std::sqrt(rr * ff), 0.5 * std::sqrt(rr * ff)})
        for (const HamuConfig& cfg : all_configs(0.5, constraint))
          coefficients(k,
                       "count " + std::to_string(count) + " B " + std::to_string(constraint) + " variant " +
                           std::to_string(cfg.variant) + " scope " + std::to_string(cfg.scope) + " split " +
                           std::to_string(cfg.split) + " fixed " + std::to_string(cfg.fixed_radius) + " continue " +
                           std::to_string(cfg.continue_on_infeasible) + " stop " + std::to_string(cfg.stop_on_criterion),
                       cfg, stats);
    }
  }, /*heavy=*/true));

  c.push_back(kernel_case("hamu_coefficients hits every branch", [](auto& k) {
    // Q variant, fixed R = 1, uniform split B/count = 0.1 per block; (aa, cc, d) per block:
    //   direct (d <= -b|a|/R), rectified, colinear (|a_perp| = 0), infeasible (R^2 < b^2/cc).
    const std::vector<double> base = {1, 1, -0.9, 1, 1, 0.5, 1, 1, 1, 1, 0.001, 0.2};
    std::vector<double> stats;
    for (int rep = 0; rep < 17; ++rep) stats.insert(stats.end(), base.begin(), base.end());  // 68 blocks
    for (int cont : {0, 1}) {
      HamuConfig cfg;
      cfg.variant = kernels::hamu_q;
      cfg.scope = kernels::scope_layer;
      cfg.split = kernels::split_uniform;
      cfg.fixed_radius = 1;
      cfg.radius = 1.0;
      cfg.constraint = 0.1 * 68;
      cfg.continue_on_infeasible = cont;
      const HamuReport r = coefficients(k, "four branches, continue " + std::to_string(cont), cfg, stats);
      CHECK(r.n_direct == 17);
      CHECK(r.n_rectified == 17);
      CHECK(r.n_colinear == 17);
      CHECK(r.n_infeasible == 17);
      CHECK(r.applied == cont);
    }
    {  // Zero constraint gradient with B = 0: a plain descent step, counted as direct.
      HamuConfig cfg;
      cfg.constraint = 0.0;
      cfg.lr = 0.1;
      const HamuReport r = coefficients(k, "zero forget gradient", cfg, std::vector<double>{1, 0, 0, 2, 0, 0, 0.5, 0, 0});
      CHECK(r.n_direct == 3);
      CHECK(r.applied == 1);
    }
    {  // A non-finite statistic: no step, all coefficients 0.
      std::vector<double> bad = stats;
      bad[7] = std::nan("");
      HamuConfig cfg;
      cfg.constraint = 0.01;
      CHECK(coefficients(k, "non-finite statistic", cfg, bad).nonfinite == 1);
    }
    {  // U variant, global and layer scope, softmax-dp split.
      HamuConfig cfg;
      cfg.variant = kernels::hamu_u;
      cfg.scope = kernels::scope_global;
      cfg.split = kernels::split_softmax_dp;
      cfg.constraint = 0.05;
      cfg.lr = 0.2;
      coefficients(k, "U global softmax-dp", cfg, stats);
      cfg.scope = kernels::scope_layer;
      coefficients(k, "U layer softmax-dp", cfg, stats);
    }
  }));

  c.push_back(kernel_case("fused HAMU step on near-colinear blocks: f64 statistics and coefficients", [](auto& k) {
    // f = 0.7 r + e w: ||r_perp|| / ||r|| ~ 1.5e-3 .. 1e-2, where the rectified step is almost all r_perp and
    // f32 statistics put 0.3-2% error into it (issue #15 item 8). Every backend: the statistics equal
    // long-double sums to 1e-12 and the step equals an f64 solve from those sums to 5e-5.
    const double ratios[] = {1.5e-3, 2.5e-3, 4e-3, 6e-3, 1e-2};
    const int64_t sizes_h[] = {1000003, 65536, 4097, 777, 20000};
    const int count = 5;
    std::mt19937 gen(1507);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<int64_t> off, sizes(sizes_h, sizes_h + count);
    int64_t total = 0;
    for (int i = 0; i < count; ++i) {
      off.push_back(total + (i % 2));  // odd blocks misaligned
      total += sizes_h[i] + 4;
    }
    FVec r(size_t(total), 0.f), f(size_t(total), 0.f);
    std::vector<double> exact;
    for (int i = 0; i < count; ++i) {
      long double rr = 0, ff = 0, rf = 0;
      for (int64_t j = 0; j < sizes_h[i]; ++j) {
        const size_t o = size_t(off[size_t(i)] + j);
        r[o] = 1e-2f * u(gen);
        f[o] = 0.7f * r[o] + float(0.7e-2 * ratios[i]) * u(gen);
        rr += (long double)r[o] * r[o];
        ff += (long double)f[o] * f[o];
        rf += (long double)r[o] * f[o];
      }
      exact.insert(exact.end(), {double(rr), double(ff), double(rf)});
    }
    float *theta = k.in(FVec(size_t(total), 0.f)), *rp = k.in(r), *fp = k.in(f);
    std::vector<float*> pt;
    std::vector<const float*> pr, pf;
    for (int i = 0; i < count; ++i) {
      pt.push_back(theta + off[size_t(i)]);
      pr.push_back(rp + off[size_t(i)]);
      pf.push_back(fp + off[size_t(i)]);
    }
    float* const* t_theta = k.table(pt);
    const float* const* t_r = k.table(pr);
    const float* const* t_f = k.table(pf);
    const int64_t* t_sizes = k.in(sizes);
    HamuConfig cfg;
    cfg.scope = kernels::scope_layer;
    cfg.split = kernels::split_uniform;
    cfg.lr = 0.1;
    double reach = 1e300;
    for (int i = 0; i < count; ++i) reach = std::min(reach, 0.1 * std::sqrt(exact[size_t(3 * i)] * exact[size_t(3 * i + 1)]));
    cfg.constraint = 0.3 * reach * count;  // every block rectified
    std::vector<double> want(size_t(2 * count));
    HamuReport want_rep;
    kernels::hamu_solve_step(cfg, count, exact.data(), want.data(), &want_rep);
    REQUIRE(want_rep.n_rectified == count);

    double *stats = k.template out<double>(3 * count), *coef = k.template out<double>(2 * count);
    HamuReport* rep = k.report();
    kernels::hamu_block_stats(k.ctx, count, t_r, t_f, t_sizes, stats);
    kernels::hamu_coefficients(k.ctx, cfg, count, stats, coef, rep);
    kernels::hamu_apply(k.ctx, count, t_theta, t_r, t_f, t_sizes, coef);
    const std::vector<double> st = k.get(stats, 3 * count), cf = k.get(coef, 2 * count);
    const FVec step = k.get(theta, total);
    CHECK(k.get_report(rep).n_rectified == count);
    for (int i = 0; i < count; ++i) {
      CAPTURE(ratios[i]);
      for (int j = 0; j < 3; ++j)
        CHECK(std::fabs(st[size_t(3 * i + j)] - exact[size_t(3 * i + j)]) <= 1e-12 * std::fabs(exact[size_t(3 * i + j)]));
      // The coefficients' step and the applied (float) step against the f64 solve.
      long double e_coef = 0, e_applied = 0, norm = 0;
      for (int64_t j = 0; j < sizes_h[i]; ++j) {
        const size_t o = size_t(off[size_t(i)] + j);
        const long double w = (long double)want[size_t(2 * i)] * r[o] + (long double)want[size_t(2 * i + 1)] * f[o];
        const long double g = (long double)cf[size_t(2 * i)] * r[o] + (long double)cf[size_t(2 * i + 1)] * f[o];
        e_coef += (g - w) * (g - w);
        e_applied += (step[o] - w) * (step[o] - w);
        norm += w * w;
      }
      CHECK(double(std::sqrt(e_coef / norm)) <= 5e-5);
      CHECK(double(std::sqrt(e_applied / norm)) <= 5e-5);
    }
    k.record("near-colinear statistics", st, 1e-12, exact);
    k.record("near-colinear coefficients", cf, 1e-9);
  }));

  c.push_back(kernel_case("hamu_apply and the whole fused step", [](auto& k) {
    for (int count : {65, 448}) {
      const std::string at = " count " + std::to_string(count);
      HamuData d(count, 500 + uint32_t(count), count > 100 ? 400000 : 1200000);
      // apply with given coefficients (some blocks with both 0: must stay bit-identical)
      std::vector<double> coef = widen(rnd(2 * count, 501));
      for (int i = 0; i < count; i += 4) coef[size_t(2 * i)] = coef[size_t(2 * i + 1)] = 0.0;
      {
        HamuOn<std::decay_t<decltype(k)>> on(k, d);
        kernels::hamu_apply(k.ctx, count, on.t_theta, on.t_r, on.t_f, on.sizes, k.in(coef));
        const FVec t = k.get(on.theta, d.b.total_t);
        bool untouched = true;
        for (int i = 0; i < count; i += 4)
          for (int64_t j = 0; j < d.b.sizes[size_t(i)]; ++j) {
            const size_t o = size_t(d.b.off_t[size_t(i)] + j);
            untouched = untouched && t[o] == d.theta[o];
          }
        CHECK(untouched);
        k.result("hamu_apply theta" + at, on.theta, d.b.total_t, kTolExact);
      }
      // The whole step on the backend: stats -> coefficients -> apply.
      HamuOn<std::decay_t<decltype(k)>> on(k, d);
      HamuConfig cfg;
      cfg.lr = 0.5;
      cfg.constraint = 1e-6;
      double *stats = k.template out<double>(3 * count), *c2 = k.template out<double>(2 * count);
      HamuReport* rep = k.report();
      kernels::hamu_block_stats(k.ctx, count, on.t_r, on.t_f, on.sizes, stats);
      kernels::hamu_coefficients(k.ctx, cfg, count, stats, c2, rep);
      kernels::hamu_apply(k.ctx, count, on.t_theta, on.t_r, on.t_f, on.sizes, c2);
      const HamuReport r = k.get_report(rep);
      CHECK(r.n_direct + r.n_rectified + r.n_colinear + r.n_infeasible == count);
      k.record("fused step applied, direct, rectified" + at,
               {double(r.applied), double(r.n_direct), double(r.n_rectified)}, 0);
      k.result("fused step coefficients" + at, c2, 2 * count, 1e-5);
      // theta moved by the same step: compare the steps, not theta (the step is ~1e-3 of theta)
      const FVec t = k.get(on.theta, d.b.total_t);
      std::vector<double> step(t.size());
      for (size_t i = 0; i < t.size(); ++i) step[i] = double(t[i]) - double(d.theta[i]);
      k.record("fused step delta" + at, step, 1e-4);
    }
  }, /*heavy=*/true));

  return c;
}

}  // namespace

const std::vector<KernelCase>& kernel_cases() {
  static const std::vector<KernelCase> cases = build_cases();
  return cases;
}

}  // namespace hamu::testing
