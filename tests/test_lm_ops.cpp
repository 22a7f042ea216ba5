// tests/test_lm_ops.cpp: language-model ops: float64 finite-difference gradient checks, forward values
// against references built from other ops or written out by hand, and CUDA vs CPU parity (CUDA=1 only;
// skipped with a notice without a GPU).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/ops.h"
#include "kernels/kernels.h"
#include "kernels/perf.h"
#include "tests/gradcheck.h"
#include "tests/gpu_skip.h"

using namespace hamu;
using namespace hamu::testing;

namespace {

constexpr double kTol = 1e-6;
using Inputs = std::vector<Tensor>;

double rel(const Tensor& a, const Tensor& b) { return rel_error(as_doubles(a), as_doubles(b)); }

// rotate_half of x [..., Dh] from other ops: cat(-x[Dh/2:], x[:Dh/2]).
Tensor rotate_half_ref(const Tensor& x) {
  const int last = x.dim() - 1;
  const int64_t half = x.shape().back() / 2;
  return concat({neg(x.narrow(last, half, half)), x.narrow(last, 0, half)}, last);
}

// Reference RoPE from elementwise ops: x [B,T,H,Dh], tables [B',T,Dh] broadcast over heads.
Tensor rope_ref(const Tensor& x, const RopeTables& tb) {
  const Shape& s = tb.cos.shape();
  Tensor c = tb.cos.reshape({s[0], s[1], 1, s[2]}), sn = tb.sin.reshape({s[0], s[1], 1, s[2]});
  return add(mul(x, c), mul(rotate_half_ref(x), sn));
}

// Brute-force attention in double on the host: q [B,H,T,D], k/v [B,Hkv,T,D], mask [B,T] or empty.
std::vector<double> attention_ref(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int32_t>& mask) {
  const int64_t b = q.shape()[0], h = q.shape()[1], t = q.shape()[2], d = q.shape()[3], hkv = k.shape()[1];
  const std::vector<double> qv = as_doubles(q), kv = as_doubles(k), vv = as_doubles(v);
  std::vector<double> out(qv.size(), 0.0);
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t hi = 0; hi < h; ++hi) {
      const int64_t kh = hi / (h / hkv);
      for (int64_t i = 0; i < t; ++i) {
        std::vector<double> w(size_t(t), 0.0);
        double m = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          if (!mask.empty() && !mask[size_t(bi * t + j)]) continue;
          double s = 0;
          for (int64_t x = 0; x < d; ++x)
            s += qv[size_t(((bi * h + hi) * t + i) * d + x)] * kv[size_t(((bi * hkv + kh) * t + j) * d + x)];
          w[size_t(j)] = s / std::sqrt(double(d));
          m = std::max(m, w[size_t(j)]);
        }
        if (m == -INFINITY) continue;
        double z = 0;
        for (int64_t j = 0; j <= i; ++j) {
          const bool vis = mask.empty() || mask[size_t(bi * t + j)];
          w[size_t(j)] = vis ? std::exp(w[size_t(j)] - m) : 0.0;
          z += w[size_t(j)];
        }
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t x = 0; x < d; ++x)
            out[size_t(((bi * h + hi) * t + i) * d + x)] += w[size_t(j)] / z * vv[size_t(((bi * hkv + kh) * t + j) * d + x)];
      }
    }
  return out;
}

Tensor positions_bt(int64_t b, int64_t t, int offset_per_row) {
  std::vector<int32_t> p;
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < t; ++j) p.push_back(int32_t(j + i * offset_per_row));
  return Tensor::from_vector<int32_t>(p, {b, t});
}

}  // namespace

TEST_CASE("lm ops: rms_norm forward and gradient") {
  Tensor x = leaf(random_tensor({3, 4, 8}));
  Tensor w = leaf(random_tensor({8}, 0.5, 1.5));
  CHECK(gradcheck([](const Inputs& v) { return rms_norm(v[0], v[1], 1e-6); }, {x, w}) < kTol);
  // Against the formula from elementwise ops.
  Tensor y = rms_norm(x.detach(), w.detach(), 1e-5);
  Tensor ref = mul(div(x.detach(), sqrt(add_scalar(mean(square(x.detach()), -1, true), 1e-5))), w.detach());
  CHECK(rel(y, ref) < 1e-14);
}

TEST_CASE("lm ops: gelu_tanh and swiglu") {
  Tensor x = leaf(random_tensor({5, 7}, -3.0, 3.0));
  CHECK(gradcheck([](const Inputs& v) { return gelu_tanh(v[0]); }, {x}) < kTol);
  const std::vector<double> xs = as_doubles(x), ys = as_doubles(gelu_tanh(x.detach()));
  for (size_t i = 0; i < xs.size(); ++i) {
    const double u = xs[i];
    CHECK(ys[i] == doctest::Approx(0.5 * u * (1 + std::tanh(std::sqrt(2 / M_PI) * (u + 0.044715 * u * u * u)))).epsilon(1e-14));
  }
  Tensor g = leaf(random_tensor({4, 6}, -3.0, 3.0)), u = leaf(random_tensor({4, 6}));
  CHECK(gradcheck([](const Inputs& v) { return swiglu(v[0], v[1]); }, {g, u}) < kTol);
  Tensor ref = mul(mul(g.detach(), sigmoid(g.detach())), u.detach());
  CHECK(rel(swiglu(g.detach(), u.detach()), ref) < 1e-14);
}

TEST_CASE("lm ops: rope matches rotate-half and its gradient") {
  for (int per_batch = 0; per_batch < 2; ++per_batch) {
    CAPTURE(per_batch);
    Tensor pos = per_batch ? positions_bt(2, 5, 3) : Tensor::from_vector<int32_t>({0, 1, 2, 3, 4}, {5});
    RopeTables tb = rope_tables(pos, 6, 500.0, DType::f64, Device{});
    Tensor x = leaf(random_tensor({2, 5, 3, 6}));
    CHECK(gradcheck([tb](const Inputs& v) { return rope(v[0], tb); }, {x}) < kTol);
    CHECK(rel(rope(x.detach(), tb), rope_ref(x.detach(), tb)) < 1e-14);
  }
  // Table values: angle = pos * theta^(-2i/d), duplicated halves.
  RopeTables tb = rope_tables(Tensor::from_vector<int32_t>({0, 7}, {2}), 4, 10000.0, DType::f64, Device{});
  const std::vector<double> c = as_doubles(tb.cos), s = as_doubles(tb.sin);
  CHECK(c[0] == 1.0);
  CHECK(s[1] == 0.0);
  CHECK(c[4] == doctest::Approx(std::cos(7.0)).epsilon(1e-15));
  CHECK(s[5] == doctest::Approx(std::sin(7.0 / 100.0)).epsilon(1e-15));
  CHECK(c[6] == c[4]);
  CHECK(s[7] == s[5]);
  CHECK_THROWS_AS(rope_tables(Tensor::from_vector<int32_t>({0}, {1}), 5, 1e4, DType::f32, Device{}), InputError);
}

TEST_CASE("lm ops: gqa_attention against brute force, with padding, and its gradient") {
  // Multi-head (H == Hkv) agrees with the existing causal_attention.
  Tensor q = random_tensor({2, 3, 5, 4}), k = random_tensor({2, 3, 5, 4}), v = random_tensor({2, 3, 5, 4});
  CHECK(rel(gqa_attention(q, k, v), causal_attention(q, k, v)) < 1e-13);
  // Grouped-query: 4 query heads on 2 key/value heads; left padding in row 0, right padding in row 1.
  Tensor qg = leaf(random_tensor({2, 4, 6, 3})), kg = leaf(random_tensor({2, 2, 6, 3})), vg = leaf(random_tensor({2, 2, 6, 3}));
  const std::vector<int32_t> m = {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
  Tensor mask = Tensor::from_vector<int32_t>(m, {2, 6});
  CHECK(rel_error(as_doubles(gqa_attention(qg.detach(), kg.detach(), vg.detach())), attention_ref(qg, kg, vg, {})) < 1e-13);
  Tensor ym = gqa_attention(qg.detach(), kg.detach(), vg.detach(), mask);
  CHECK(rel_error(as_doubles(ym), attention_ref(qg, kg, vg, m)) < 1e-13);
  // The two fully padded query rows of sample 0 output zeros.
  const std::vector<double> yv = as_doubles(ym);
  for (int64_t x = 0; x < 3; ++x) CHECK(yv[size_t(x)] == 0.0);
  CHECK(gradcheck([](const Inputs& in) { return gqa_attention(in[0], in[1], in[2]); }, {qg, kg, vg}) < kTol);
  CHECK(gradcheck([mask](const Inputs& in) { return gqa_attention(in[0], in[1], in[2], mask); }, {qg, kg, vg}) < kTol);
  // Bad shapes name the op.
  CHECK_THROWS_AS(gqa_attention(qg, random_tensor({2, 3, 6, 3}), random_tensor({2, 3, 6, 3})), InputError);
  CHECK_THROWS_AS(gqa_attention(qg, kg, vg, Tensor::from_vector<int32_t>({1, 1}, {1, 2})), InputError);
}

TEST_CASE("lm ops: token_cross_entropy equals shifted cross-entropy, and its gradient") {
  const int64_t b = 2, t = 5, vocab = 7;
  Tensor logits = leaf(random_tensor({b, t, vocab}, -2.0, 2.0));
  std::vector<int32_t> lab = {3, -100, 1, 6, 0, 2, 2, -100, -100, 5};
  Tensor labels = Tensor::from_vector<int32_t>(lab, {b, t});
  Tensor losses = token_cross_entropy(logits.detach(), labels);
  // Reference: row (i, j) against labels[i, j+1] with the old [N,C] cross-entropy; the last column is 0.
  std::vector<int32_t> shifted;
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < t; ++j) shifted.push_back(j + 1 < t ? lab[size_t(i * t + j + 1)] : -100);
  Tensor ref = cross_entropy_per_sample(logits.detach().reshape({b * t, vocab}), Tensor::from_vector<int32_t>(shifted, {b * t}));
  CHECK(rel(losses.reshape({b * t}), ref) < 1e-14);
  CHECK(count_scored_tokens(labels) == 5);
  CHECK(gradcheck([labels](const Inputs& v) { return token_cross_entropy(v[0], labels); }, {logits}) < kTol);
  CHECK(gradcheck([labels](const Inputs& v) { return token_cross_entropy(v[0], labels, 0); }, {logits}) < kTol);
  CHECK_THROWS_AS(token_cross_entropy(logits, Tensor::from_vector<int32_t>({7, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {b, t})),
                  InputError);
}

TEST_CASE("lm ops: a small attention block composes (gradient through rope, attention, swiglu)") {
  Tensor x = leaf(random_tensor({1, 4, 2, 4}));
  Tensor kx = leaf(random_tensor({1, 4, 1, 4}));
  RopeTables tb = rope_tables(Tensor::from_vector<int32_t>({0, 1, 2, 3}, {4}), 4, 50000.0, DType::f64, Device{});
  auto f = [tb](const Inputs& v) {
    Tensor q = permute(rope(v[0], tb), {0, 2, 1, 3});
    Tensor k = permute(rope(v[1], tb), {0, 2, 1, 3});
    Tensor a = gqa_attention(q, k, k);
    return swiglu(a, rms_norm(a, Tensor::full({4}, 1.0, DType::f64), 1e-6));
  };
  CHECK(gradcheck(f, {x, kx}) < kTol);
}

#ifdef HAMU_CUDA
namespace {
bool lm_gpu_ready() {
  static const bool g = testing::gpu_or_say("cuda lm op tests");
  return g;
}
const Device kGpu{Device::cuda, 0};
Tensor f32(const Tensor& t) { return t.to(DType::f32); }
}  // namespace

// Tolerances as tests/test_cuda_parity.cpp: elementwise 1e-6, reductions/softmax/GEMM paths 1e-5 (no TF32).
TEST_CASE("cuda: lm ops match the CPU (forward and backward)") {
  if (!lm_gpu_ready()) return;
  auto both = [](const std::function<Tensor(const Inputs&)>& f, const Inputs& host, double tol) {
    Inputs hc, gc;
    for (const Tensor& t : host) {
      hc.push_back(leaf(f32(t)));
      gc.push_back(leaf(f32(t).to(kGpu)));
    }
    Tensor yc = f(hc), yg = f(gc);
    CHECK(rel(yg.to(Device{}), yc) < tol);
    Tensor proj = random_tensor(yc.shape(), -1, 1, DType::f32);
    sum(mul(yc, proj)).backward();
    sum(mul(yg, proj.to(kGpu))).backward();
    for (size_t i = 0; i < hc.size(); ++i) CHECK(rel(gc[i].grad().to(Device{}), hc[i].grad()) < tol);
  };
  both([](const Inputs& v) { return rms_norm(v[0], v[1], 1e-5); }, {random_tensor({37, 300}), random_tensor({300})}, 1e-5);
  both([](const Inputs& v) { return gelu_tanh(v[0]); }, {random_tensor({1000}, -4, 4)}, 1e-6);
  both([](const Inputs& v) { return swiglu(v[0], v[1]); }, {random_tensor({999}, -4, 4), random_tensor({999})}, 1e-6);
  RopeTables tb = rope_tables(positions_bt(3, 9, 2), 16, 50000.0, DType::f32, kGpu);
  RopeTables th{tb.cos.to(Device{}), tb.sin.to(Device{})};
  both([tb, th](const Inputs& v) { return rope(v[0], v[0].is_cuda() ? tb : th); }, {random_tensor({3, 9, 5, 16})}, 1e-6);
  Tensor mask = Tensor::from_vector<int32_t>({0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0}, {2, 8});
  both([mask](const Inputs& v) { return gqa_attention(v[0], v[1], v[2], v[0].is_cuda() ? mask.to(kGpu) : mask); },
       {random_tensor({2, 6, 8, 16}), random_tensor({2, 2, 8, 16}), random_tensor({2, 2, 8, 16})}, 1e-5);
  Tensor labels = Tensor::from_vector<int32_t>({1, 5, -100, 400, 3, 2, 9, 0, -100, 7}, {2, 5});
  both([labels](const Inputs& v) { return token_cross_entropy(v[0], v[0].is_cuda() ? labels.to(kGpu) : labels); },
       {random_tensor({2, 5, 2000}, -3, 3)}, 1e-5);
}
#endif

#ifdef HAMU_CUDA
// The fused kernels (kernels/cuda/attention.cu, and attention_tc.cu in bfloat16) against the CPU's GEMM +
// softmax path: tiles of 32 and 64 rows cut at odd lengths, head dimensions of each register width and
// padded width (<= 32, <= 64, <= 128, not multiples of 4), grouped heads, left and right padding, a batch row
// that is all padding (every query sees no key: output and gradients 0), and a gradient reaching y through
// every row. The bfloat16 kernels are compared with the CPU on bf16-rounded q, k, v and dY, so what is left
// is the rounding of P and dS inside them (~1e-2).
namespace {
void check_fused_attention(bool bf16, double tol_y, double tol_grad) {
  if (!lm_gpu_ready()) return;
  if (bf16 && !kernels::flash_attention_bf16_supported(0)) {
    std::printf("bf16 attention: skipped: the GPU has no bf16 tensor cores\n");
    return;
  }
  struct Restore {  // the switch is process-wide: put it back even when a REQUIRE throws
    kernels::PerfOptions saved = kernels::perf_options();
    ~Restore() { kernels::set_perf_options(saved); }
  } restore;
  kernels::PerfOptions perf = restore.saved;
  perf.bf16_attention = bf16;
  kernels::set_perf_options(perf);
  auto round = [bf16](const Tensor& x) { return bf16 ? f32(x).to(DType::bf16).to(DType::f32) : f32(x); };
  struct Case {
    int64_t b, h, hkv, t, dh;
    int pad;  // 0 none, 1 left/right padding, 2 one row all padding
  };
  for (const Case& c : {Case{1, 1, 1, 1, 8, 0}, Case{2, 4, 2, 77, 64, 1}, Case{1, 8, 1, 130, 128, 0},
                        Case{3, 2, 2, 33, 40, 1}, Case{2, 3, 3, 64, 20, 2}, Case{1, 6, 3, 95, 127, 1},
                        Case{2, 2, 1, 31, 1, 0}, Case{1, 4, 1, 200, 64, 1}}) {
    CAPTURE(bf16);
    CAPTURE(c.t);
    CAPTURE(c.dh);
    std::vector<int32_t> m(size_t(c.b * c.t), 1);
    for (int64_t bi = 0; bi < c.b; ++bi)
      for (int64_t j = 0; j < c.t; ++j) {
        if (c.pad == 1) m[size_t(bi * c.t + j)] = bi % 2 == 0 ? int32_t(j >= std::min<int64_t>(5, c.t - 1)) : int32_t(j < c.t - 9);
        if (c.pad == 2 && bi == 1) m[size_t(bi * c.t + j)] = 0;
      }
    const Tensor mask = c.pad ? Tensor::from_vector<int32_t>(m, {c.b, c.t}) : Tensor();
    Inputs host = {random_tensor({c.b, c.h, c.t, c.dh}, -2, 2), random_tensor({c.b, c.hkv, c.t, c.dh}, -2, 2),
                   random_tensor({c.b, c.hkv, c.t, c.dh})};
    Inputs hc, gc;
    for (const Tensor& x : host) {
      hc.push_back(leaf(round(x)));
      gc.push_back(leaf(f32(x).to(kGpu)));
    }
    Tensor yc = gqa_attention(hc[0], hc[1], hc[2], mask);
    Tensor yg = gqa_attention(gc[0], gc[1], gc[2], mask.defined() ? mask.to(kGpu) : mask);
    CHECK(rel(yg.to(Device{}), yc) < tol_y);
    Tensor proj = random_tensor(yc.shape(), -1, 1, DType::f32);
    sum(mul(yc, round(proj))).backward();
    sum(mul(yg, proj.to(kGpu))).backward();
    for (size_t i = 0; i < hc.size(); ++i) {
      CAPTURE(i);
      CHECK(rel(gc[i].grad().to(Device{}), hc[i].grad()) < tol_grad);
    }
    if (c.pad == 2) {  // the all-padding row: zero output and zero gradients
      const std::vector<float> y = yg.to(Device{}).to_vector<float>(), gq = gc[0].grad().to(Device{}).to_vector<float>();
      const size_t row = size_t(c.h * c.t * c.dh);
      for (size_t i = row; i < 2 * row; ++i) {
        REQUIRE(y[i] == 0.f);
        REQUIRE(gq[i] == 0.f);
      }
    }
  }
}
}  // namespace

TEST_CASE("cuda: fused attention matches the CPU on long, padded and grouped shapes") {
  check_fused_attention(false, 1e-5, 1e-5);
}

TEST_CASE("cuda: bf16 tensor-core attention matches the CPU on long, padded and grouped shapes") {
  check_fused_attention(true, 1e-2, 3e-2);
}
#endif
