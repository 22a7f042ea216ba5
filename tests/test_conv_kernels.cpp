// tests/test_conv_kernels.cpp: CPU im2col/col2im and conv2d forward, backward data and backward filter
// against direct-loop references in double.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/kernels.h"

namespace {

namespace kn = hamu::kernels;

kn::ConvShape make_shape(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r, int64_t s, int64_t sh,
                         int64_t sw, int64_t ph, int64_t pw) {
  kn::ConvShape x;
  x.n = n, x.c = c, x.h = h, x.w = w, x.k = k, x.r = r, x.s = s;
  x.stride_h = sh, x.stride_w = sw, x.pad_h = ph, x.pad_w = pw;
  return x;
}

std::vector<double> random_values(size_t n, std::mt19937& gen) {
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

template <class T> std::vector<T> cast(const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); }

// The input pixel feeding output (oy, ox) through kernel tap (r, s), or false in the padding.
bool input_at(const kn::ConvShape& s, int64_t oy, int64_t ox, int64_t r, int64_t q, int64_t& iy, int64_t& ix) {
  iy = oy * s.stride_h - s.pad_h + r;
  ix = ox * s.stride_w - s.pad_w + q;
  return iy >= 0 && iy < s.h && ix >= 0 && ix < s.w;
}

// The direct loops all three references share: visit(n, k, oy, ox, c, r, s, x index, w index, y index).
template <class F> void for_each_tap(const kn::ConvShape& s, F visit) {
  const int64_t oh = s.oh(), ow = s.ow();
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t k = 0; k < s.k; ++k)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox)
          for (int64_t c = 0; c < s.c; ++c)
            for (int64_t r = 0; r < s.r; ++r)
              for (int64_t q = 0; q < s.s; ++q) {
                int64_t iy, ix;
                if (!input_at(s, oy, ox, r, q, iy, ix)) continue;
                visit(((n * s.c + c) * s.h + iy) * s.w + ix, ((k * s.c + c) * s.r + r) * s.s + q,
                      ((n * s.k + k) * oh + oy) * ow + ox);
              }
}

std::vector<double> ref_forward(const kn::ConvShape& s, const std::vector<double>& x, const std::vector<double>& w,
                                const double* bias) {
  const int64_t ohw = s.oh() * s.ow();
  std::vector<double> y(size_t(s.n * s.k * ohw), 0.0);
  if (bias)
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t k = 0; k < s.k; ++k)
        for (int64_t j = 0; j < ohw; ++j) y[size_t((n * s.k + k) * ohw + j)] = bias[k];
  for_each_tap(s, [&](int64_t xi, int64_t wi, int64_t yi) { y[size_t(yi)] += x[size_t(xi)] * w[size_t(wi)]; });
  return y;
}

std::vector<double> ref_backward_data(const kn::ConvShape& s, const std::vector<double>& gy,
                                      const std::vector<double>& w) {
  std::vector<double> gx(size_t(s.n * s.c * s.h * s.w), 0.0);
  for_each_tap(s, [&](int64_t xi, int64_t wi, int64_t yi) { gx[size_t(xi)] += gy[size_t(yi)] * w[size_t(wi)]; });
  return gx;
}

std::vector<double> ref_backward_filter(const kn::ConvShape& s, const std::vector<double>& x,
                                        const std::vector<double>& gy) {
  std::vector<double> gw(size_t(s.k * s.c * s.r * s.s), 0.0);
  for_each_tap(s, [&](int64_t xi, int64_t wi, int64_t yi) { gw[size_t(wi)] += gy[size_t(yi)] * x[size_t(xi)]; });
  return gw;
}

template <class T> double relative_error(const std::vector<T>& got, const std::vector<double>& ref) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    norm += ref[i] * ref[i];
  }
  if (std::isnan(diff)) return std::numeric_limits<double>::infinity();
  return std::sqrt(diff / norm);
}

template <class T> double tolerance() { return sizeof(T) == 4 ? 1e-5 : 1e-12; }

// Odd sizes, strides 1 and 2 (also unequal), pads 0/1/2, 1x1 / 3x3 / 5x3 kernels, batches above and
// below the thread count, and one shape near the ones we train.
const kn::ConvShape kShapes[] = {
    make_shape(3, 2, 7, 9, 5, 3, 3, 1, 1, 1, 1),   make_shape(5, 3, 8, 6, 4, 5, 3, 2, 2, 2, 1),
    make_shape(4, 4, 6, 6, 8, 1, 1, 1, 1, 0, 0),   make_shape(3, 5, 9, 7, 6, 1, 1, 2, 2, 0, 0),
    make_shape(2, 1, 5, 5, 3, 3, 3, 2, 2, 0, 0),   make_shape(1, 3, 11, 10, 7, 3, 3, 1, 1, 1, 1),
    make_shape(9, 3, 5, 6, 4, 3, 3, 1, 2, 1, 0),   make_shape(7, 2, 2, 3, 3, 3, 3, 1, 1, 1, 1),
    make_shape(5, 2, 6, 5, 3, 5, 3, 1, 1, 2, 2),   make_shape(6, 3, 4, 4, 5, 1, 1, 1, 1, 1, 1),
    make_shape(4, 16, 12, 12, 32, 3, 3, 1, 1, 1, 1), make_shape(3, 9, 9, 9, 20, 3, 3, 2, 2, 1, 1),
};

template <class T> void check_conv_shape(const kn::ConvShape& s, bool with_bias, uint32_t seed) {
  std::mt19937 gen(seed);
  const int64_t ohw = s.oh() * s.ow();
  const auto x = random_values(size_t(s.n * s.c * s.h * s.w), gen);
  const auto w = random_values(size_t(s.k * s.c * s.r * s.s), gen);
  const auto bias = random_values(size_t(s.k), gen);
  const auto gy = random_values(size_t(s.n * s.k * ohw), gen);
  const auto gw0 = random_values(size_t(s.k * s.c * s.r * s.s), gen);
  const auto gb0 = random_values(size_t(s.k), gen);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const int64_t ws_elems = kn::conv2d_workspace_elems(kn::CpuCtx{}, s);
  std::vector<T> ws(size_t(std::max<int64_t>(ws_elems, 1)), nan);  // the kernels may not read stale workspace
  const auto xt = cast<T>(x), wt = cast<T>(w), bt = cast<T>(bias), gyt = cast<T>(gy);
  INFO("n=" << s.n << " c=" << s.c << " h=" << s.h << " w=" << s.w << " k=" << s.k << " r=" << s.r << " s=" << s.s
            << " stride=" << s.stride_h << "," << s.stride_w << " pad=" << s.pad_h << "," << s.pad_w
            << " bias=" << with_bias << " f" << 8 * sizeof(T));

  std::vector<T> y(size_t(s.n * s.k * ohw), nan);
  kn::conv2d_forward(kn::CpuCtx{}, s, xt.data(), wt.data(), with_bias ? bt.data() : nullptr, y.data(), ws.data());
  CHECK(relative_error(y, ref_forward(s, x, w, with_bias ? bias.data() : nullptr)) <= tolerance<T>());

  std::vector<T> gx(x.size(), nan);  // overwritten
  kn::conv2d_backward_data(kn::CpuCtx{}, s, gyt.data(), wt.data(), gx.data(), ws.data());
  CHECK(relative_error(gx, ref_backward_data(s, gy, w)) <= tolerance<T>());

  std::vector<T> gw = cast<T>(gw0), gb = cast<T>(gb0);  // accumulate
  kn::conv2d_backward_filter(kn::CpuCtx{}, s, xt.data(), gyt.data(), gw.data(), with_bias ? gb.data() : nullptr,
                             ws.data());
  std::vector<double> gw_ref = ref_backward_filter(s, x, gy);
  for (size_t i = 0; i < gw_ref.size(); ++i) gw_ref[i] += double(T(gw0[i]));
  CHECK(relative_error(gw, gw_ref) <= tolerance<T>());
  std::vector<double> gb_ref(size_t(s.k));
  for (int64_t k = 0; k < s.k; ++k) {
    gb_ref[size_t(k)] = double(T(gb0[size_t(k)]));
    if (with_bias)
      for (int64_t n = 0; n < s.n; ++n)
        for (int64_t j = 0; j < ohw; ++j) gb_ref[size_t(k)] += gy[size_t((n * s.k + k) * ohw + j)];
  }
  CHECK(relative_error(gb, gb_ref) <= tolerance<T>());
}

}  // namespace

namespace {

template <size_t count> void check_conv_shapes(const kn::ConvShape (&shapes)[count], uint32_t seed) {
  for (const kn::ConvShape& s : shapes) {
    for (bool with_bias : {true, false}) {
      check_conv_shape<double>(s, with_bias, seed++);
      check_conv_shape<float>(s, with_bias, seed++);
    }
  }
}

}  // namespace

TEST_CASE("conv2d forward / backward data / backward filter match direct loops (f64 and f32)") {
  check_conv_shapes(kShapes, 100);
}

// Shapes that reach each specialised path of kernels/cpu/conv.cpp: planes whose size is a multiple of
// 128 (the column buffer's padded row stride), the filter gradient's dot products (few column rows, or
// large planes over few output channels; output channels not a multiple of its 4-row blocks, column
// rows not a multiple of its column blocks, plane sizes with and without a vector tail) and the GEMM
// beside them; the shifted stride-1 passes (padded planes, wide output); packed_gemm (full and partial
// tiles) and, for a single image, the GEMM; C = 1, 1x1 stride 2, stride 3, pads 0/1/2, a batch of 1
// and odd batches.
const kn::ConvShape kPathShapes[] = {
    make_shape(3, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1),   // C = 1, the cnn's first layer
    make_shape(2, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1),  // resnet20's most frequent shape
    make_shape(3, 16, 32, 32, 32, 1, 1, 2, 2, 0, 0),  // 1x1 stride 2 (16x16 output, padded rows)
    make_shape(1, 16, 32, 32, 32, 3, 3, 2, 2, 1, 1),  // 3x3 stride 2, batch 1
    make_shape(5, 3, 16, 16, 6, 3, 3, 1, 1, 1, 1),    // k = 6: a 4-row block and two single rows
    make_shape(3, 2, 16, 16, 3, 5, 5, 1, 1, 2, 2),    // pad 2, k < 4, col rows 50 = 10 blocks of 5
    make_shape(4, 1, 29, 31, 5, 3, 3, 3, 3, 2, 2),    // stride 3, pad 2, odd sizes, plane 110 (a tail)
    make_shape(3, 2, 23, 25, 7, 3, 3, 1, 1, 0, 0),    // pad 0, odd sizes, plane 21x23
    make_shape(7, 4, 8, 16, 2, 3, 3, 1, 1, 1, 1),     // 8x16 plane (128: padded rows), k = 2
    make_shape(1, 16, 16, 16, 64, 1, 1, 1, 1, 0, 0),  // 1x1 stride 1 (no column buffer), batch 1
    // shifted stride-1 passes (8+ channels both ways, 24+ output columns, 2+ images)
    make_shape(3, 8, 9, 27, 9, 3, 3, 1, 1, 0, 0),     // pad 0 (backward pads 2), 9 outputs: an edge panel
    make_shape(2, 9, 6, 28, 10, 5, 5, 1, 1, 2, 2),    // 5x5 pad 2
    make_shape(3, 8, 7, 30, 8, 3, 5, 1, 1, 1, 0),     // 3x5 kernel, unequal pads 1 and 0
    make_shape(3, 8, 6, 26, 32, 3, 3, 1, 1, 1, 1),    // filter gradient through the GEMM beside it
    make_shape(5, 12, 9, 30, 20, 3, 3, 1, 1, 1, 1),   // short and wide planes, 20 outputs
    // packed_gemm on 16x16 planes (im2col, a partial last tile in f64 too) and on 1x1 stride 1
    make_shape(2, 8, 14, 14, 12, 3, 3, 1, 1, 1, 1), make_shape(3, 20, 10, 10, 9, 1, 1, 1, 1, 0, 0),
};

TEST_CASE("conv2d on shapes that reach each specialised CPU path match direct loops (f64 and f32)") {
  check_conv_shapes(kPathShapes, 700);
}

// Stride 2 along rows, where im2col gathers every other input a vector at a time (AVX-512: 16 f32 or
// 8 f64 outputs from 31 or 15 inputs) while the input row holds them, the rest one by one, and col2im
// adds back into every other input the same way: rows of 15-34 outputs (full vectors and tails in both
// types), first outputs in the padding (pad 1) or not, the last vector ending on the row's last input
// (tap s = 2 of the 32-wide resnet20 rows), stride 1 down the columns.
const kn::ConvShape kStride2Shapes[] = {
    make_shape(2, 3, 9, 41, 5, 3, 3, 2, 2, 1, 1),   // 21 outputs per row
    make_shape(3, 2, 9, 70, 4, 3, 3, 2, 2, 0, 0),   // 34 outputs: two vectors and a tail (f32)
    make_shape(2, 4, 6, 64, 3, 1, 1, 2, 2, 0, 0),   // 1x1 on 64-wide rows: two full vectors
    make_shape(2, 3, 5, 37, 4, 3, 3, 1, 2, 1, 1),   // stride 1 x 2, 19 outputs
    make_shape(3, 16, 32, 32, 32, 3, 3, 2, 2, 1, 1),  // resnet20 16->32 s2: tap 2 ends on x[31]
};

TEST_CASE("conv2d with stride 2 along rows (im2col's vector gather, col2im's scatter) match direct loops") {
  check_conv_shapes(kStride2Shapes, 900);
}

TEST_CASE("conv2d backward_filter accumulates across calls; results do not depend on the thread count") {
  std::mt19937 gen(5);
  // im2col with packed_gemm (the filter gradient through the GEMM), the shifted passes, stride 2
  for (const kn::ConvShape& s :
       {make_shape(6, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1), make_shape(5, 8, 6, 24, 8, 3, 3, 1, 1, 1, 1),
        make_shape(5, 3, 6, 40, 4, 3, 3, 2, 2, 1, 1)}) {
    const auto x = random_values(size_t(s.n * s.c * s.h * s.w), gen);
    const auto gy = random_values(size_t(s.n * s.k * s.oh() * s.ow()), gen);
    std::vector<double> ws(size_t(kn::conv2d_workspace_elems(kn::CpuCtx{}, s)));
    std::vector<double> once(size_t(s.k * s.c * s.r * s.s), 0.0), twice = once, gb1(size_t(s.k), 0.0), gb2 = gb1;
    kn::conv2d_backward_filter(kn::CpuCtx{}, s, x.data(), gy.data(), once.data(), gb1.data(), ws.data());
    kn::conv2d_backward_filter(kn::CpuCtx{}, s, x.data(), gy.data(), twice.data(), gb2.data(), ws.data());
    kn::conv2d_backward_filter(kn::CpuCtx{}, s, x.data(), gy.data(), twice.data(), gb2.data(), ws.data());
    for (size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == doctest::Approx(2 * once[i]).epsilon(1e-12));
    for (size_t i = 0; i < gb1.size(); ++i) CHECK(gb2[i] == doctest::Approx(2 * gb1[i]).epsilon(1e-12));

    // same inputs: bitwise the same results, on one thread or all
    std::vector<float> xf(x.begin(), x.end()), gyf(gy.begin(), gy.end()), wsf(ws.size());
    std::vector<float> wf(once.size(), 0.5f);
    std::vector<float> a(once.size(), 0.0f), b(once.size(), 0.0f), ya(gyf.size()), yb(gyf.size()), gxa(xf.size()),
        gxb(xf.size());
    const int max_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    kn::conv2d_backward_filter<float>(kn::CpuCtx{}, s, xf.data(), gyf.data(), a.data(), nullptr, wsf.data());
    kn::conv2d_forward<float>(kn::CpuCtx{}, s, xf.data(), wf.data(), nullptr, ya.data(), wsf.data());
    kn::conv2d_backward_data<float>(kn::CpuCtx{}, s, gyf.data(), wf.data(), gxa.data(), wsf.data());
    omp_set_num_threads(std::max(2, max_threads));
    kn::conv2d_backward_filter<float>(kn::CpuCtx{}, s, xf.data(), gyf.data(), b.data(), nullptr, wsf.data());
    kn::conv2d_forward<float>(kn::CpuCtx{}, s, xf.data(), wf.data(), nullptr, yb.data(), wsf.data());
    kn::conv2d_backward_data<float>(kn::CpuCtx{}, s, gyf.data(), wf.data(), gxb.data(), wsf.data());
    omp_set_num_threads(max_threads);
    CHECK(a == b);
    CHECK(ya == yb);
    CHECK(gxa == gxb);
  }
}

TEST_CASE("conv2d with fewer threads than the workspace was sized for") {
  // The workspace is sized with the thread count at the time; the kernels must fit in it afterwards.
  std::mt19937 gen(9);
  const kn::ConvShape s = make_shape(5, 4, 9, 9, 6, 3, 3, 1, 1, 1, 1);
  const auto x = random_values(size_t(s.n * s.c * s.h * s.w), gen);
  const auto w = random_values(size_t(s.k * s.c * s.r * s.s), gen);
  const auto gy = random_values(size_t(s.n * s.k * s.oh() * s.ow()), gen);
  std::vector<double> ws(size_t(kn::conv2d_workspace_elems(kn::CpuCtx{}, s)));
  const int max_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<double> y(gy.size()), gw(w.size(), 0.0);
  kn::conv2d_forward<double>(kn::CpuCtx{}, s, x.data(), w.data(), nullptr, y.data(), ws.data());
  kn::conv2d_backward_filter<double>(kn::CpuCtx{}, s, x.data(), gy.data(), gw.data(), nullptr, ws.data());
  omp_set_num_threads(max_threads);
  CHECK(relative_error(y, ref_forward(s, x, w, nullptr)) <= 1e-12);
  CHECK(relative_error(gw, ref_backward_filter(s, x, gy)) <= 1e-12);
}

namespace {

template <class T> void check_im2col_adjoint(const kn::ConvShape& s, uint32_t seed) {
  std::mt19937 gen(seed);
  const int64_t rows = s.c * s.r * s.s, ohw = s.oh() * s.ow();
  const auto x = random_values(size_t(s.c * s.h * s.w), gen);
  const auto c = random_values(size_t(rows * ohw), gen);
  const auto xt = cast<T>(x), ct = cast<T>(c);
  std::vector<T> col(size_t(rows * ohw), std::numeric_limits<T>::quiet_NaN());
  std::vector<T> back(x.size(), std::numeric_limits<T>::quiet_NaN());
  kn::im2col(kn::CpuCtx{}, s, xt.data(), col.data());
  kn::col2im(kn::CpuCtx{}, s, ct.data(), back.data());
  // im2col is the direct gather
  int bad = 0;
  for (int64_t ch = 0; ch < s.c; ++ch)
    for (int64_t r = 0; r < s.r; ++r)
      for (int64_t q = 0; q < s.s; ++q)
        for (int64_t oy = 0; oy < s.oh(); ++oy)
          for (int64_t ox = 0; ox < s.ow(); ++ox) {
            int64_t iy, ix;
            const T want = input_at(s, oy, ox, r, q, iy, ix) ? xt[size_t((ch * s.h + iy) * s.w + ix)] : T(0);
            bad += col[size_t(((ch * s.r + r) * s.s + q) * ohw + oy * s.ow() + ox)] != want;
          }
  CHECK(bad == 0);
  double lhs = 0, rhs = 0;
  for (size_t i = 0; i < col.size(); ++i) lhs += double(col[i]) * double(ct[i]);
  for (size_t i = 0; i < back.size(); ++i) rhs += double(xt[i]) * double(back[i]);
  CHECK(lhs == doctest::Approx(rhs).epsilon(sizeof(T) == 4 ? 1e-5 : 1e-12));
}

}  // namespace

TEST_CASE("im2col and col2im are adjoint: <im2col(x), c> == <x, col2im(c)>") {
  uint32_t seed = 500;
  for (const kn::ConvShape& s : kShapes) {
    check_im2col_adjoint<double>(s, seed++);
    check_im2col_adjoint<float>(s, seed++);
  }
  for (const kn::ConvShape& s : kStride2Shapes) {
    check_im2col_adjoint<double>(s, seed++);
    check_im2col_adjoint<float>(s, seed++);
  }
}

TEST_CASE("conv2d on an empty batch writes nothing and leaves the filter gradient as it was") {
  const kn::ConvShape s = make_shape(0, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1);
  std::vector<float> ws(size_t(kn::conv2d_workspace_elems(kn::CpuCtx{}, s)));
  std::vector<float> w(4 * 3 * 9, 1.0f), gw(w.size(), 2.0f), gb(4, 3.0f);
  float dummy = 0;
  kn::conv2d_forward<float>(kn::CpuCtx{}, s, &dummy, w.data(), nullptr, &dummy, ws.data());
  kn::conv2d_backward_data<float>(kn::CpuCtx{}, s, &dummy, w.data(), &dummy, ws.data());
  kn::conv2d_backward_filter<float>(kn::CpuCtx{}, s, &dummy, &dummy, gw.data(), gb.data(), ws.data());
  CHECK(dummy == 0);
  CHECK(gw == std::vector<float>(w.size(), 2.0f));
  CHECK(gb == std::vector<float>(4, 3.0f));
}
