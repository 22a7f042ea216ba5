// tests/test_batch_norm_act.cpp: the fused BatchNorm(fixed statistics) + residual add + ReLU op
// (batch_norm_act): float64 finite differences, equality with the unfused batch_norm -> add -> relu in
// float32 (outputs, gradients, the paired routing and the per-sample capture record), the models with
// fusion on and off (a HAMU-Q step on resnet20, hardness on cnn and resnet20), the BatchNorm folded into
// the convolution (conv2d_bn_act: the same bits as the two ops, when it takes one kernel, gradients and
// captures when not), and CUDA parity.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/capture.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/paired.h"
#include "kernels/kernels.h"
#include "kernels/perf.h"
#include "models/models.h"
#include "tests/gradcheck.h"
#include "unlearn/gradients.h"
#include "unlearn/hardness.h"
#include "unlearn/method_registry.h"
#include "unlearn/update.h"

using namespace hamu;
using testing::as_doubles;
using testing::random_tensor;
using testing::rel_error;

namespace {

// Sets the fusion switch for one scope, restoring the previous override after.
struct FusionGuard {
  explicit FusionGuard(bool on) : prev(nn::set_batchnorm_fusion(on ? 1 : 0)) {}
  ~FusionGuard() { nn::set_batchnorm_fusion(prev); }
  int prev;
};

// The unfused composition the op replaces.
Tensor unfused(const Tensor& x, const Tensor& g, const Tensor& b, const Tensor& rm, const Tensor& rv,
               const Tensor& res, bool act) {
  Tensor y = batch_norm(x, g, b, rm, rv, false, 0.1, 1e-5);
  if (res.defined()) y = add(y, res);
  return act ? relu(y) : y;
}

struct BnInputs {
  Tensor x, gamma, beta, rm, rv, res;
};

BnInputs make_inputs(const Shape& shape, bool with_res, DType dt) {
  const int64_t c = shape[1];
  BnInputs in;
  in.x = random_tensor(shape, -2.0, 3.0, dt).requires_grad_();
  in.gamma = random_tensor({c}, -1.5, 1.5, dt).requires_grad_();  // both signs
  in.beta = random_tensor({c}, -0.5, 0.5, dt).requires_grad_();
  in.rm = random_tensor({c}, -0.5, 1.0, dt);
  in.rv = random_tensor({c}, 0.5, 2.0, dt);
  if (with_res) in.res = random_tensor(shape, -1.0, 1.0, dt).requires_grad_();
  return in;
}

std::vector<Tensor> grads_of(const BnInputs& in) {
  std::vector<Tensor> g{in.x.grad(), in.gamma.grad(), in.beta.grad()};
  if (in.res.defined()) g.push_back(in.res.grad());
  return g;
}

void zero_grads(BnInputs& in) {
  for (Tensor* t : {&in.x, &in.gamma, &in.beta, &in.res})
    if (t->defined()) t->zero_grad();
}

const Shape kShapes[] = {{4, 3, 5, 6}, {5, 7}, {3, 16, 8, 8}, {2, 4, 1, 1}};

}  // namespace

namespace {

// float64 finite differences of op(x, gamma, beta, residual, relu) over x, gamma, beta (and the residual), with
// and without the add and the ReLU, on a 4-d and a 2-d shape.
void check_bn_gradients(const std::function<Tensor(const std::vector<Tensor>&, const BnInputs&, bool, bool)>& op) {
  for (const Shape& shape : {Shape{3, 4, 3, 5}, Shape{6, 5}})
    for (int with_res = 0; with_res < 2; ++with_res)
      for (int act = 0; act < 2; ++act) {
        CAPTURE(shape_str(shape));
        CAPTURE(with_res);
        CAPTURE(act);
        BnInputs in = make_inputs(shape, with_res, DType::f64);
        std::vector<Tensor> leaves{in.x, in.gamma, in.beta};
        if (with_res) leaves.push_back(in.res);
        const double err =
            testing::gradcheck([&](const std::vector<Tensor>& t) { return op(t, in, with_res, act); }, leaves);
        CHECK(err < 1e-6);
      }
}

}  // namespace

TEST_CASE("batch_norm_act: float64 finite differences (x, gamma, beta, residual; with/without add and ReLU)") {
  check_bn_gradients([](const std::vector<Tensor>& t, const BnInputs& in, bool res, bool act) {
    return batch_norm_act(t[0], t[1], t[2], in.rm, in.rv, 1e-5, res ? t[3] : Tensor(), act);
  });
}

TEST_CASE("batch_norm_act equals batch_norm -> add -> relu in float32 (outputs and gradients)") {
  for (const Shape& shape : kShapes)
    for (int with_res = 0; with_res < 2; ++with_res)
      for (int act = 0; act < 2; ++act) {
        CAPTURE(shape_str(shape));
        CAPTURE(with_res);
        CAPTURE(act);
        BnInputs in = make_inputs(shape, with_res, DType::f32);
        Tensor proj = random_tensor(shape, -1.0, 1.0, DType::f32);
        Tensor y_ref = unfused(in.x, in.gamma, in.beta, in.rm, in.rv, in.res, act);
        sum(mul(y_ref, proj)).backward();
        const std::vector<Tensor> g_ref = grads_of(in);
        zero_grads(in);
        Tensor y = batch_norm_act(in.x, in.gamma, in.beta, in.rm, in.rv, 1e-5, in.res, act);
        sum(mul(y, proj)).backward();
        const std::vector<Tensor> g = grads_of(in);
        CHECK(rel_error(as_doubles(y), as_doubles(y_ref)) < 1e-6);
        REQUIRE(g.size() == g_ref.size());
        for (size_t i = 0; i < g.size(); ++i) {
          CAPTURE(i);
          REQUIRE(g[i].defined());
          CHECK(rel_error(as_doubles(g[i]), as_doubles(g_ref[i])) < 1e-6);
        }
        if (act) {  // the ReLU really cut something
          int64_t zeros = 0;
          for (double v : as_doubles(y)) zeros += v == 0.0;
          CHECK(zeros > 0);
        }
      }
}

TEST_CASE("batch_norm_act: the ReLU mask from the output keeps NaN and -0 as the unfused relu does") {
  // x chosen so that bn(x) + res is exactly -0, +0, NaN and ordinary values.
  Tensor x = Tensor::from_doubles({0.0, 1.0, std::nan(""), -1.0, 2.0, 0.0}, {6, 1}, DType::f32).requires_grad_();
  Tensor gamma = Tensor::full({1}, 1.0, DType::f32).requires_grad_(), beta = Tensor::zeros({1}, DType::f32);
  Tensor rm = Tensor::zeros({1}, DType::f32), rv = Tensor::full({1}, 1.0 - 1e-5, DType::f32);
  Tensor res = Tensor::from_doubles({-0.0, 0.0, 0.0, 0.5, -2.0, 0.25}, {6, 1}, DType::f32).requires_grad_();
  Tensor proj = Tensor::from_doubles({1, 2, 3, 4, 5, 6}, {6, 1}, DType::f32);
  auto run = [&](bool fused) {
    for (Tensor* t : {&x, &gamma, &res}) t->zero_grad();
    Tensor y = fused ? batch_norm_act(x, gamma, beta, rm, rv, 1e-5, res, true) : unfused(x, gamma, beta, rm, rv, res, true);
    sum(mul(y, proj)).backward();
    return std::vector<std::vector<double>>{as_doubles(y), as_doubles(x.grad()), as_doubles(res.grad())};
  };
  const auto a = run(true), b = run(false);
  for (size_t k = 0; k < a.size(); ++k)
    for (size_t i = 0; i < a[k].size(); ++i) {
      CAPTURE(k);
      CAPTURE(i);
      if (std::isnan(b[k][i])) CHECK(std::isnan(a[k][i]));
      else CHECK(a[k][i] == doctest::Approx(b[k][i]).epsilon(1e-6));
    }
}

TEST_CASE("batch_norm_act: the paired backward routes gamma/beta like the unfused ops, and captures the same record") {
  const int64_t n = 7, split = 3;
  for (int with_res = 0; with_res < 2; ++with_res) {
    CAPTURE(with_res);
    BnInputs in = make_inputs({n, 5, 4, 3}, with_res, DType::f32);
    Tensor proj = random_tensor(in.x.shape(), -1.0, 1.0, DType::f32);
    struct Out {
      std::vector<double> gg[2], gb[2], gx, gres, cap_in, cap_g, cap_mean, cap_invstd;
    };
    auto run = [&](bool fused) {
      zero_grads(in);
      Out o;
      Tensor gg[2] = {Tensor::zeros({5}, DType::f32), Tensor::zeros({5}, DType::f32)};
      Tensor gb[2] = {Tensor::zeros({5}, DType::f32), Tensor::zeros({5}, DType::f32)};
      {
        PairedScope scope(n, split);
        scope.route(in.gamma, gg[0], gg[1]);
        scope.route(in.beta, gb[0], gb[1]);
        CaptureScope cap;
        Tensor y = fused ? batch_norm_act(in.x, in.gamma, in.beta, in.rm, in.rv, 1e-5, in.res, true)
                         : unfused(in.x, in.gamma, in.beta, in.rm, in.rv, in.res, true);
        sum(mul(y, proj)).backward();
        CHECK(scope.valid());
        REQUIRE(cap.records().size() == 1);
        const CaptureRecord& r = *cap.records()[0];
        CHECK(r.op == "batch_norm");
        CHECK_FALSE(r.mixes_samples);
        CHECK(r.samples == n);
        CHECK(r.positions == 12);
        REQUIRE(r.output_grad.defined());
        o.cap_in = as_doubles(r.input);
        o.cap_g = as_doubles(r.output_grad);
        o.cap_mean = as_doubles(r.stat_a);
        o.cap_invstd = as_doubles(r.stat_b);
      }
      CHECK_FALSE(in.gamma.grad().defined());
      CHECK_FALSE(in.beta.grad().defined());
      for (int h = 0; h < 2; ++h) {
        o.gg[h] = as_doubles(gg[h]);
        o.gb[h] = as_doubles(gb[h]);
      }
      o.gx = as_doubles(in.x.grad());
      if (with_res) o.gres = as_doubles(in.res.grad());
      return o;
    };
    const Out a = run(true), b = run(false);
    for (int h = 0; h < 2; ++h) {
      CHECK(rel_error(a.gg[h], b.gg[h]) < 1e-6);
      CHECK(rel_error(a.gb[h], b.gb[h]) < 1e-6);
    }
    // The two ranges really differ (the routing is not a copy of the total).
    CHECK(rel_error(a.gg[0], a.gg[1]) > 1e-3);
    CHECK(rel_error(a.gx, b.gx) < 1e-6);
    if (with_res) CHECK(rel_error(a.gres, b.gres) < 1e-6);
    CHECK(a.cap_in == b.cap_in);
    CHECK(a.cap_mean == b.cap_mean);
    CHECK(a.cap_invstd == b.cap_invstd);
    CHECK(rel_error(a.cap_g, b.cap_g) < 1e-6);
  }
}

TEST_CASE("batch_norm_act: bad input gets one clear error") {
  BnInputs in = make_inputs({2, 3, 4, 4}, true, DType::f32);
  CHECK_THROWS_WITH_AS(batch_norm_act(in.x, in.gamma, in.beta, in.rm, in.rv, 1e-5, random_tensor({2, 3, 4, 5}, -1, 1, DType::f32), true),
                       doctest::Contains("residual [2, 3, 4, 5] does not match input [2, 3, 4, 4]"), InputError);
  CHECK_THROWS_AS(batch_norm_act(in.x, in.gamma, in.beta, Tensor(), in.rv, 1e-5, Tensor(), true), InputError);
  CHECK_THROWS_AS(batch_norm_act(in.x, random_tensor({4}, -1, 1, DType::f32), in.beta, in.rm, in.rv, 1e-5, Tensor(), true),
                  InputError);
  CHECK_THROWS_AS(batch_norm_act(random_tensor({2, 3, 4}, -1, 1, DType::f32), in.gamma, in.beta, in.rm, in.rv, 1e-5, Tensor(), true),
                  InputError);
}

namespace {

// Non-trivial running statistics and affine parameters, so frozen BatchNorm is not the identity.
void perturb_batchnorm(nn::Module& m, uint64_t seed) {
  Rng rng(seed);
  for (auto& [name, t] : m.named_buffers()) {
    Tensor v = t;
    if (name.find("running_mean") != std::string::npos) rng.fill_uniform(v, -0.3, 0.3);
    if (name.find("running_var") != std::string::npos) rng.fill_uniform(v, 0.5, 2.0);
  }
  for (auto& [name, t] : m.named_parameters()) {
    Tensor v = t.detach();
    if (name.find("bn") != std::string::npos || name.find("shortcut.1") != std::string::npos)
      rng.fill_uniform(v, name.find("weight") != std::string::npos ? 0.5 : -0.2, 1.0);
  }
}

Batch random_batch(int64_t n, int64_t c, int64_t h, int64_t w, int classes) {
  Batch b;
  b.images = random_tensor({n, c, h, w}, -1, 1, DType::f32);
  b.labels = testing::random_labels(n, classes);
  for (int64_t i = 0; i < n; ++i) b.indices.push_back(i);
  return b;
}

}  // namespace

TEST_CASE("models: one HAMU-Q step on resnet20 and cnn gives the same parameters with BatchNorm fusion on and off") {
  for (const char* arch : {"resnet20", "cnn"}) {
    CAPTURE(arch);
    const models::ModelSpec spec{arch, 3, 8, 8, 5};
    Batch r = random_batch(6, 3, 8, 8, 5), f = random_batch(4, 3, 8, 8, 5);
    std::vector<std::vector<double>> after[2];
    for (int fused = 0; fused < 2; ++fused) {
      FusionGuard guard(fused);
      Rng rng(21);
      auto model = models::build_model(spec, rng);
      perturb_batchnorm(*model, 5);
      models::set_batchnorm_frozen(*model, true);
      model->train(true);
      FusedUpdate u(model->parameters());
      std::string why;
      const GradientResult g =
          compute_gradients(*model, nullptr, u, r, f, parse_method("hamu-q"), MethodParams{}, true, &why);
      CHECK(g.paired);
      kernels::HamuConfig cfg;
      cfg.lr = 0.05;
      cfg.constraint = 0.5 * cfg.lr;
      cfg.clip = 1.0;
      u.compute_stats();
      u.hamu_step(cfg);
      for (const Tensor& p : model->parameters()) after[fused].push_back(as_doubles(p));
    }
    REQUIRE(after[0].size() == after[1].size());
    double worst = 0;
    for (size_t i = 0; i < after[0].size(); ++i) worst = std::max(worst, rel_error(after[1][i], after[0][i]));
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("models: eval logits and training-mode (batch statistics) fallback are unchanged by the fusion switch") {
  const models::ModelSpec spec{"resnet20", 3, 8, 8, 5};
  Tensor x = random_tensor({5, 3, 8, 8}, -1, 1, DType::f32);
  std::vector<double> logits[2][2];
  for (int fused = 0; fused < 2; ++fused) {
    FusionGuard guard(fused);
    Rng rng(22);
    auto model = models::build_model(spec, rng);
    perturb_batchnorm(*model, 6);
    {
      NoGradGuard ng;
      model->eval();
      logits[fused][0] = as_doubles(model->forward(x));
    }
    model->train(true);  // batch statistics: the separate ops in both settings
    logits[fused][1] = as_doubles(model->forward(x));
  }
  CHECK(rel_error(logits[1][0], logits[0][0]) < 1e-6);
  CHECK(rel_error(logits[1][1], logits[0][1]) == 0.0);
}

TEST_CASE("models: hardness numbers of cnn and resnet20 do not change with BatchNorm fusion") {
  for (const char* arch : {"cnn", "resnet20"}) {
    CAPTURE(arch);
    ImageDataset ds;
    ds.n = 24;
    ds.c = 1;
    ds.h = ds.w = 8;
    ds.num_classes = 2;
    ds.class_names = {"a", "b"};
    Rng data(7);
    for (int64_t i = 0; i < ds.n; ++i) {
      ds.labels.push_back(int32_t(i % 2));
      for (int64_t k = 0; k < 64; ++k) ds.pixels.push_back(uint8_t(255.0 * data.uniform()));
    }
    std::vector<int64_t> forget, retain;
    for (int64_t i = 0; i < ds.n; ++i) (i % 3 == 0 ? forget : retain).push_back(i);
    HardnessReport rep[2];
    for (int fused = 0; fused < 2; ++fused) {
      FusionGuard guard(fused);
      Rng rng(23);
      auto model = models::build_model({arch, 1, 8, 8, 2}, rng);
      perturb_batchnorm(*model, 8);
      HardnessOptions opt;
      opt.heat_size = 4;
      rep[fused] = compute_hardness(*model, ds, Normalizer::identity(1), forget, retain, opt);
    }
    CHECK(rep[1].kappa == doctest::Approx(rep[0].kappa).epsilon(1e-5));
    CHECK(rep[1].retain_norm == doctest::Approx(rep[0].retain_norm).epsilon(1e-5));
    CHECK(rep[1].forget_norm == doctest::Approx(rep[0].forget_norm).epsilon(1e-5));
    CHECK(rep[1].share_hard == rep[0].share_hard);
    REQUIRE(rep[1].samples.size() == rep[0].samples.size());
    for (size_t j = 0; j < rep[0].samples.size(); ++j) {
      CAPTURE(j);
      CHECK(rep[1].samples[j].kappa_k == doctest::Approx(rep[0].samples[j].kappa_k).epsilon(1e-4).scale(1e-6));
      CHECK(rep[1].samples[j].similar_index == rep[0].samples[j].similar_index);
    }
    REQUIRE(rep[1].blocks.size() == rep[0].blocks.size());
    CHECK(rep[1].verdict == rep[0].verdict);
  }
}

// ---- conv2d_bn_act: frozen BatchNorm folded into the convolution -----------------------------------------

namespace {

// Equal bit for bit (widening float32 to double is exact and keeps the sign of zeros).
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const std::vector<double> av = as_doubles(a), bv = as_doubles(b);
  return std::memcmp(av.data(), bv.data(), av.size() * sizeof(double)) == 0;
}

struct ConvCase {
  Shape x;      // [N, C, H, W]
  int64_t k;    // output channels
  int r, stride, pad;
  const char* path;  // which way through kernels/cpu/conv.cpp it takes
};

// Shapes that take every way through the CPU convolution: shifted (stride 1, wide planes, 8+ channels),
// packed (im2col + micro-tile), pointwise (the input as its own column buffer), a single image (the
// multi-threaded GEMM), the stride-2 shortcut, odd sizes.
const ConvCase kConvCases[] = {
    {{3, 8, 32, 32}, 16, 3, 1, 1, "shifted"},
    {{3, 16, 14, 14}, 8, 3, 2, 1, "packed, stride 2"},
    {{2, 16, 8, 8}, 32, 1, 1, 0, "pointwise"},
    {{2, 16, 9, 9}, 32, 1, 2, 0, "1x1 stride 2 (shortcut)"},
    {{1, 3, 12, 10}, 5, 3, 1, 1, "single image (GEMM)"},
    {{4, 3, 7, 9}, 5, 3, 1, 2, "odd sizes, pad 2"},
};

struct ConvBnInputs {
  Tensor x, w, b, gamma, beta, rm, rv, res;
};

ConvBnInputs make_conv_bn(const ConvCase& cc, bool with_bias, bool with_res, DType dt) {
  ConvBnInputs in;
  in.x = random_tensor(cc.x, -1.0, 1.0, dt);
  in.w = random_tensor({cc.k, cc.x[1], cc.r, cc.r}, -0.5, 0.5, dt);
  if (with_bias) in.b = random_tensor({cc.k}, -0.3, 0.3, dt);
  in.gamma = random_tensor({cc.k}, -1.5, 1.5, dt);  // both signs
  in.beta = random_tensor({cc.k}, -0.5, 0.5, dt);
  in.rm = random_tensor({cc.k}, -0.5, 0.5, dt);
  in.rv = random_tensor({cc.k}, 0.3, 2.0, dt);
  const int64_t o_h = (cc.x[2] + 2 * cc.pad - cc.r) / cc.stride + 1, o_w = (cc.x[3] + 2 * cc.pad - cc.r) / cc.stride + 1;
  if (with_res) in.res = random_tensor({cc.x[0], cc.k, o_h, o_w}, -1.0, 1.0, dt);
  return in;
}

Conv2dOptions conv_opt(const ConvCase& cc) {
  Conv2dOptions o;
  o.stride_h = o.stride_w = cc.stride;
  o.pad_h = o.pad_w = cc.pad;
  return o;
}

Tensor two_ops(const ConvBnInputs& in, const Conv2dOptions& o, bool relu) {
  return batch_norm_act(conv2d(in.x, in.w, in.b, o), in.gamma, in.beta, in.rm, in.rv, 1e-5, in.res, relu);
}

}  // namespace

TEST_CASE("conv2d_bn_act: one kernel, the same bits as conv2d -> batch_norm_act (every convolution path)") {
  for (DType dt : {DType::f32, DType::f64})
    for (const ConvCase& cc : kConvCases)
      for (int variant = 0; variant < 8; ++variant) {
        const bool with_bias = variant & 1, with_res = variant & 2, relu = variant & 4;
        CAPTURE(dtype_name(dt));
        CAPTURE(cc.path);
        CAPTURE(variant);
        const ConvBnInputs in = make_conv_bn(cc, with_bias, with_res, dt);
        const Conv2dOptions o = conv_opt(cc);
        NoGradGuard ng;
        const Tensor ref = two_ops(in, o, relu);
        kernels::profile_begin(-1);
        const Tensor y = conv2d_bn_act(in.x, in.w, in.b, o, in.gamma, in.beta, in.rm, in.rv, 1e-5, in.res, relu);
        const kernels::ProfTable prof = kernels::profile_end();
        // One convolution and no separate BatchNorm pass: the single kernel ran.
        CHECK(prof.calls_of(kernels::ProfKind::conv_fwd) == 1);
        CHECK(prof.calls_of(kernels::ProfKind::fused_elementwise) == 0);
        CHECK(same_bits(y, ref));
        if (relu) {  // the ReLU really cut something and something passed
          int64_t zeros = 0;
          const std::vector<double> v = as_doubles(y);
          for (double e : v) zeros += e == 0.0;
          CHECK(zeros > 0);
          CHECK(zeros < int64_t(v.size()));
        }
      }
}

TEST_CASE("conv2d_bn_act: the kernel itself equals conv2d_forward + batchnorm_act_forward, null gamma/beta included") {
  const kernels::CpuCtx ctx;
  for (const ConvCase& cc : kConvCases) {
    CAPTURE(cc.path);
    const ConvBnInputs in = make_conv_bn(cc, true, true, DType::f32);
    kernels::ConvShape s;
    s.n = cc.x[0], s.c = cc.x[1], s.h = cc.x[2], s.w = cc.x[3], s.k = cc.k, s.r = s.s = cc.r;
    s.stride_h = s.stride_w = cc.stride;
    s.pad_h = s.pad_w = cc.pad;
    const int64_t out = s.n * s.k * s.oh() * s.ow();
    std::vector<float> ws(size_t(kernels::conv2d_workspace_elems(ctx, s)));
    std::vector<float> a(static_cast<size_t>(out)), b(static_cast<size_t>(out));
    std::vector<float> mean(size_t(s.k)), invstd(size_t(s.k));
    for (int nulls = 0; nulls < 2; ++nulls) {
      CAPTURE(nulls);
      const float* g = nulls ? nullptr : in.gamma.data<float>();
      const float* bt = nulls ? nullptr : in.beta.data<float>();
      kernels::conv2d_forward(ctx, s, in.x.data<float>(), in.w.data<float>(), in.b.data<float>(), a.data(), ws.data());
      kernels::batchnorm_act_forward(ctx, s.n, s.k, s.oh() * s.ow(), a.data(), g, bt, in.rm.data<float>(),
                                     in.rv.data<float>(), 1e-5f, in.res.data<float>(), true, a.data(), mean.data(),
                                     invstd.data());
      kernels::conv2d_bn_act_forward(ctx, s, in.x.data<float>(), in.w.data<float>(), in.b.data<float>(), g, bt,
                                     in.rm.data<float>(), in.rv.data<float>(), 1e-5f, in.res.data<float>(), true,
                                     b.data(), ws.data());
      CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("conv2d_bn_act: with gradients or a capture it is the two ops (float64 finite differences, records)") {
  const ConvCase cc{{2, 3, 6, 5}, 4, 3, 1, 1, "small"};
  for (int with_res = 0; with_res < 2; ++with_res) {
    CAPTURE(with_res);
    ConvBnInputs in = make_conv_bn(cc, true, with_res, DType::f64);
    const Conv2dOptions o = conv_opt(cc);
    std::vector<Tensor> leaves{in.x, in.w, in.b, in.gamma, in.beta};
    if (with_res) leaves.push_back(in.res);
    for (Tensor& t : leaves) t = testing::leaf(t);
    const double err = testing::gradcheck(
        [&](const std::vector<Tensor>& t) {
          return conv2d_bn_act(t[0], t[1], t[2], o, t[3], t[4], in.rm, in.rv, 1e-5, with_res ? t[5] : Tensor(), true);
        },
        leaves);
    CHECK(err < 1e-6);
  }
  // Inside a capture scope the records of both layers are made, as the two ops make them.
  ConvBnInputs in = make_conv_bn(cc, false, false, DType::f32);
  Tensor w = testing::leaf(in.w), gamma = testing::leaf(in.gamma), beta = testing::leaf(in.beta);
  CaptureScope scope;
  Tensor y = conv2d_bn_act(in.x, w, Tensor(), conv_opt(cc), gamma, beta, in.rm, in.rv, 1e-5, Tensor(), true);
  sum(y).backward();
  REQUIRE(scope.records().size() == 2);
  CHECK(scope.records()[0]->op == "conv2d");
  CHECK(scope.records()[1]->op == "batch_norm");
  CHECK(scope.records()[1]->output_grad.defined());
}

TEST_CASE("conv2d_bn_act: bad input gets one clear error") {
  const ConvCase cc{{2, 3, 6, 6}, 4, 3, 1, 1, "small"};
  const ConvBnInputs in = make_conv_bn(cc, false, false, DType::f32);
  NoGradGuard ng;
  Tensor short_gamma = random_tensor({3}, -1, 1, DType::f32);
  CHECK_THROWS_WITH_AS(conv2d_bn_act(in.x, in.w, Tensor(), conv_opt(cc), short_gamma, in.beta, in.rm, in.rv, 1e-5,
                                     Tensor(), true),
                       doctest::Contains("conv2d_bn_act: parameter or statistics [3] do not match 4 channels"),
                       InputError);
  Tensor bad_res = random_tensor({2, 4, 5, 6}, -1, 1, DType::f32);
  CHECK_THROWS_WITH_AS(conv2d_bn_act(in.x, in.w, Tensor(), conv_opt(cc), in.gamma, in.beta, in.rm, in.rv, 1e-5,
                                     bad_res, true),
                       doctest::Contains("conv2d_bn_act: residual [2, 4, 5, 6] does not match input [2, 4, 6, 6]"),
                       InputError);
  Tensor bad_w = random_tensor({4, 2, 3, 3}, -1, 1, DType::f32);
  CHECK_THROWS_WITH_AS(conv2d_bn_act(in.x, bad_w, Tensor(), conv_opt(cc), in.gamma, in.beta, in.rm, in.rv, 1e-5,
                                     Tensor(), true),
                       doctest::Contains("conv2d: input"), InputError);
}

TEST_CASE("models: gradient-free logits of cnn and resnet20 (BatchNorm folded into the convolutions) equal the "
          "logits with gradients, bit for bit, and take no separate BatchNorm pass") {
  for (const char* arch : {"cnn", "resnet20"}) {
    CAPTURE(arch);
    const models::ModelSpec spec{arch, 3, 12, 12, 5};
    Rng rng(31);
    auto model = models::build_model(spec, rng);
    perturb_batchnorm(*model, 9);
    model->eval();
    Tensor x = random_tensor({5, 3, 12, 12}, -1, 1, DType::f32);
    const Tensor with_grad = model->forward(x);  // parameters require gradients: conv2d then batch_norm_act
    Tensor folded;
    kernels::profile_begin(-1);
    {
      NoGradGuard ng;
      folded = model->forward(x);
    }
    const kernels::ProfTable prof = kernels::profile_end();
    CHECK(prof.calls_of(kernels::ProfKind::fused_elementwise) == 0);
    CHECK(prof.calls_of(kernels::ProfKind::batchnorm) == 0);
    CHECK(prof.calls_of(kernels::ProfKind::conv_fwd) == (std::string(arch) == "cnn" ? 2 : 21));
    CHECK(same_bits(folded, with_grad.detach()));
  }
}

// ---- batch_norm_train_act: training-mode BatchNorm + residual add + ReLU -------------------------------

namespace {

// The three ops batch_norm_train_act replaces (batch statistics; the running statistics updated in place).
Tensor unfused_train(const Tensor& x, const Tensor& g, const Tensor& b, const Tensor& rm, const Tensor& rv,
                     const Tensor& res, bool act, double eps = 1e-5) {
  Tensor y = batch_norm(x, g, b, rm, rv, true, 0.1, eps);
  if (res.defined()) y = add(y, res);
  return act ? relu(y) : y;
}

}  // namespace

TEST_CASE("batch_norm_train_act: float64 finite differences (x, gamma, beta, residual; with/without add and ReLU)") {
  check_bn_gradients([](const std::vector<Tensor>& t, const BnInputs&, bool res, bool act) {
    return batch_norm_train_act(t[0], t[1], t[2], Tensor(), Tensor(), 0.1, 1e-5, res ? t[3] : Tensor(), act);
  });
}

TEST_CASE("batch_norm_train_act equals batch_norm(train) -> add -> relu (outputs and running stats bit for bit, gradients)") {
  for (DType dt : {DType::f32, DType::f64})
    for (const Shape& shape : {Shape{4, 3, 5, 6}, Shape{5, 7}, Shape{3, 16, 8, 8}, Shape{2, 4, 1, 1}, Shape{9, 5, 7, 9}})
      for (int with_res = 0; with_res < 2; ++with_res)
        for (int act = 0; act < 2; ++act) {
          CAPTURE(dtype_name(dt));
          CAPTURE(shape_str(shape));
          CAPTURE(with_res);
          CAPTURE(act);
          BnInputs in = make_inputs(shape, with_res, dt);
          Tensor proj = random_tensor(shape, -1.0, 1.0, dt);
          Tensor rm_ref = in.rm.clone(), rv_ref = in.rv.clone();
          Tensor y_ref = unfused_train(in.x, in.gamma, in.beta, rm_ref, rv_ref, in.res, act);
          sum(mul(y_ref, proj)).backward();
          const std::vector<Tensor> g_ref = grads_of(in);
          zero_grads(in);
          Tensor rm = in.rm.clone(), rv = in.rv.clone();
          Tensor y = batch_norm_train_act(in.x, in.gamma, in.beta, rm, rv, 0.1, 1e-5, in.res, act);
          sum(mul(y, proj)).backward();
          const std::vector<Tensor> g = grads_of(in);
          CHECK(same_bits(y, y_ref));
          CHECK(same_bits(rm, rm_ref));
          CHECK(same_bits(rv, rv_ref));
          CHECK_FALSE(same_bits(rm, in.rm));  // the update really happened
          REQUIRE(g.size() == g_ref.size());
          for (size_t i = 0; i < g.size(); ++i) {
            CAPTURE(i);
            REQUIRE(g[i].defined());
            // The per-channel sums are SIMD reductions written alike in both kernels: the same bits wherever the
            // compiler vectorises both loops alike (it does on AVX2 and AVX-512 with gcc); the check allows
            // for a compiler that does not, and the bits are reported.
            CHECK(rel_error(as_doubles(g[i]), as_doubles(g_ref[i])) < (dt == DType::f32 ? 1e-6 : 1e-14));
            if (!same_bits(g[i], g_ref[i])) {
              const std::string said = "gradient " + std::to_string(i) + " close, not bit for bit";
              MESSAGE(said);
            }
          }
          if (act) {  // the ReLU really cut something
            int64_t zeros = 0;
            for (double v : as_doubles(y)) zeros += v == 0.0;
            CHECK(zeros > 0);
          }
        }
}

TEST_CASE("batch_norm_train_act: one kernel each way on the CPU; NaN and -0 masked as the unfused relu does") {
  BnInputs in = make_inputs({4, 3, 5, 5}, true, DType::f32);
  kernels::profile_begin(-1);
  Tensor y = batch_norm_train_act(in.x, in.gamma, in.beta, in.rm, in.rv, 0.1, 1e-5, in.res, true);
  sum(y).backward();
  const kernels::ProfTable prof = kernels::profile_end();
  CHECK(prof.calls_of(kernels::ProfKind::fused_elementwise) == 2);
  CHECK(prof.calls_of(kernels::ProfKind::batchnorm) == 0);
  CHECK(prof.calls_of(kernels::ProfKind::relu) == 0);
  // Values whose normalised output plus the residual is exactly 0, NaN and ordinary: x = {-1, 1} per
  // channel normalises to -1, +1 (gamma 1, beta 0, eps ~ 0 against the variance 1).
  Tensor x = Tensor::from_doubles({-1, 1, -1, 1, -1, 1, std::nan(""), 1}, {8, 1}, DType::f32).requires_grad_();
  Tensor x2 = Tensor::from_doubles({-1, 1, -1, 1, -1, 1, -1, 1}, {8, 1}, DType::f32).requires_grad_();
  Tensor gamma = Tensor::full({1}, 1.0, DType::f32).requires_grad_(), beta = Tensor::zeros({1}, DType::f32);
  Tensor res = Tensor::from_doubles({1, -1, 0.5, 0.25, 2, -2, 0, -1}, {8, 1}, DType::f32).requires_grad_();
  Tensor proj = Tensor::from_doubles({1, 2, 3, 4, 5, 6, 7, 8}, {8, 1}, DType::f32);
  for (Tensor* input : {&x, &x2}) {
    auto run = [&](bool fused) {
      for (Tensor* t : {input, &gamma, &res}) t->zero_grad();
      Tensor out = fused ? batch_norm_train_act(*input, gamma, beta, Tensor(), Tensor(), 0.1, 0.0, res, true)
                         : unfused_train(*input, gamma, beta, Tensor(), Tensor(), res, true, 0.0);
      sum(mul(out, proj)).backward();
      return std::vector<Tensor>{out, input->grad(), res.grad(), gamma.grad()};
    };
    const std::vector<Tensor> a = run(true), b = run(false);
    for (size_t k = 0; k < a.size(); ++k) {
      CAPTURE(k);
      // NaN where the unfused ops give NaN (its sign bit is not specified); elsewhere the output's bits and the
      // gradients (sums of SIMD reductions: see the test above) to float precision, exact zeros included.
      const std::vector<double> av = as_doubles(a[k]), bv = as_doubles(b[k]);
      REQUIRE(av.size() == bv.size());
      for (size_t i = 0; i < av.size(); ++i) {
        CAPTURE(i);
        if (std::isnan(bv[i])) CHECK(std::isnan(av[i]));
        else if (k == 0 || bv[i] == 0.0) CHECK(std::memcmp(&av[i], &bv[i], sizeof(double)) == 0);
        else CHECK(av[i] == doctest::Approx(bv[i]).epsilon(1e-6));
      }
    }
  }
}

TEST_CASE("batch_norm_train_act: refuses the paired pass as batch_norm does, and captures the same record") {
  const int64_t n = 7;
  for (int with_res = 0; with_res < 2; ++with_res) {
    CAPTURE(with_res);
    BnInputs in = make_inputs({n, 5, 4, 3}, with_res, DType::f32);
    in.gamma.set_name("bn.weight");
    Tensor proj = random_tensor(in.x.shape(), -1.0, 1.0, DType::f32);
    struct Out {
      std::vector<Tensor> cap;
      std::string why;
    };
    auto run = [&](bool fused) {
      zero_grads(in);
      Out o;
      Tensor gg[2] = {Tensor::zeros({5}, DType::f32), Tensor::zeros({5}, DType::f32)};
      PairedScope scope(n, 3);
      scope.route(in.gamma, gg[0], gg[1]);
      CaptureScope cap;
      Tensor rm = in.rm.clone(), rv = in.rv.clone();
      Tensor y = fused ? batch_norm_train_act(in.x, in.gamma, in.beta, rm, rv, 0.1, 1e-5, in.res, true)
                       : unfused_train(in.x, in.gamma, in.beta, rm, rv, in.res, true);
      sum(mul(y, proj)).backward();
      CHECK_FALSE(scope.valid());
      o.why = scope.reason();
      REQUIRE(cap.records().size() == 1);
      const CaptureRecord& r = *cap.records()[0];
      CHECK(r.op == "batch_norm");
      CHECK(r.mixes_samples);
      CHECK(r.samples == n);
      CHECK(r.positions == 12);
      REQUIRE(r.output_grad.defined());
      o.cap = {r.input, r.output_grad, r.stat_a, r.stat_b};
      return o;
    };
    const Out a = run(true), b = run(false);
    CHECK(a.why == b.why);
    CHECK(a.why.find("bn.weight") != std::string::npos);
    for (size_t k = 0; k < a.cap.size(); ++k) {
      CAPTURE(k);
      CHECK(same_bits(a.cap[k], b.cap[k]));
    }
  }
}

TEST_CASE("batch_norm_train_act: bad input gets one clear error") {
  BnInputs in = make_inputs({2, 3, 4, 4}, true, DType::f32);
  CHECK_THROWS_WITH_AS(batch_norm_train_act(in.x, in.gamma, in.beta, in.rm, in.rv, 0.1, 1e-5,
                                            random_tensor({2, 3, 4, 5}, -1, 1, DType::f32), true),
                       doctest::Contains("residual [2, 3, 4, 5] does not match input [2, 3, 4, 4]"), InputError);
  CHECK_THROWS_WITH_AS(batch_norm_train_act(in.x, random_tensor({4}, -1, 1, DType::f32), in.beta, in.rm, in.rv, 0.1,
                                            1e-5, Tensor(), true),
                       doctest::Contains("does not match 3 channels"), InputError);
  CHECK_THROWS_WITH_AS(batch_norm_train_act(in.x, in.gamma, in.beta, random_tensor({5}, -1, 1, DType::f32), in.rv, 0.1,
                                            1e-5, Tensor(), true),
                       doctest::Contains("running statistics"), InputError);
  CHECK_THROWS_WITH_AS(batch_norm_train_act(random_tensor({1, 3}, -1, 1, DType::f32), in.gamma, in.beta, in.rm, in.rv,
                                            0.1, 1e-5, Tensor(), true),
                       doctest::Contains("more than one value per channel"), InputError);
  CHECK_THROWS_AS(batch_norm_train_act(random_tensor({2, 3, 4}, -1, 1, DType::f32), in.gamma, in.beta, in.rm, in.rv,
                                       0.1, 1e-5, Tensor(), true),
                  InputError);
  CHECK_THROWS_AS(batch_norm_train_act(in.x, in.gamma.to(DType::f64), in.beta, in.rm, in.rv, 0.1, 1e-5, Tensor(), true),
                  InputError);
}

TEST_CASE("models: training steps of cnn and resnet20 (batch statistics) are the same with the fusion on and off") {
  for (const char* arch : {"cnn", "resnet20"}) {
    CAPTURE(arch);
    const models::ModelSpec spec{arch, 3, 8, 8, 5};
    const Batch b = random_batch(6, 3, 8, 8, 5);
    std::vector<Tensor> state[2];
    std::vector<Tensor> grads[2];
    int64_t tracked[2] = {0, 0};
    for (int fused = 0; fused < 2; ++fused) {
      FusionGuard guard(fused);
      Rng rng(23);
      auto model = models::build_model(spec, rng);
      perturb_batchnorm(*model, 7);
      model->train(true);
      AdamWOptions ao;
      ao.lr = 1e-2;
      AdamW opt(model->parameters(), ao);
      kernels::profile_begin(-1);
      for (int step = 0; step < 2; ++step) {
        opt.zero_grad();
        cross_entropy(model->forward(b.images), b.labels).backward();
        opt.step();
      }
      const kernels::ProfTable prof = kernels::profile_end();
      CHECK((prof.calls_of(kernels::ProfKind::fused_elementwise) > 0) == bool(fused));
      for (const Tensor& p : model->parameters()) {
        state[fused].push_back(p.detach().clone());
        grads[fused].push_back(p.grad().clone());
      }
      for (auto& [name, t] : model->named_buffers()) state[fused].push_back(t.clone());
      std::function<void(const nn::Module&)> count = [&](const nn::Module& m) {
        if (auto* bn = dynamic_cast<const nn::BatchNorm2d*>(&m)) tracked[fused] += bn->num_batches_tracked;
        for (const auto& [name, child] : m.children()) count(*child);
      };
      count(*model);
    }
    REQUIRE(state[0].size() == state[1].size());
    bool bitwise = true;
    for (size_t i = 0; i < state[0].size(); ++i) {
      CAPTURE(i);
      CHECK(rel_error(as_doubles(state[1][i]), as_doubles(state[0][i])) < 1e-5);
      bitwise = bitwise && same_bits(state[1][i], state[0][i]);
    }
    for (size_t i = 0; i < grads[0].size(); ++i) {
      CHECK(rel_error(as_doubles(grads[1][i]), as_doubles(grads[0][i])) < 1e-4);
      bitwise = bitwise && same_bits(grads[1][i], grads[0][i]);
    }
    const std::string said = std::string(arch) + ": weights, statistics and gradients " +
                             (bitwise ? "bit for bit the same" : "close, not bit for bit");
    MESSAGE(said);
    CHECK(tracked[0] == tracked[1]);
    CHECK(tracked[1] > 0);
  }
}

#ifdef HAMU_CUDA
TEST_CASE("cuda: fused batchnorm+add+relu matches the CPU (forward, backward, paired routing, capture)") {
  if (kernels::cuda_device_count() == 0) {
    std::printf("cuda fused batchnorm test: skipped: no GPU\n");
    return;
  }
  const Device gpu{Device::cuda, 0};
  // Odd sizes cross CTA and chunk boundaries; {256, 16, 32, 32} gives each channel many chunks.
  const Shape shapes[] = {{7, 5, 3, 11}, {257, 3}, {1, 1, 1, 1}, {64, 16, 32, 32}, {3, 64, 9, 9}};
  for (const Shape& shape : shapes)
    for (int with_res = 0; with_res < 2; ++with_res)
      for (int act = 0; act < 2; ++act)
        for (int paired = 0; paired < 2; ++paired) {
          CAPTURE(shape_str(shape));
          CAPTURE(with_res);
          CAPTURE(act);
          CAPTURE(paired);
          const int64_t n = shape[0], c = shape[1], split = n / 2;
          BnInputs cpu = make_inputs(shape, with_res, DType::f32);
          Tensor proj = random_tensor(shape, -1.0, 1.0, DType::f32);
          BnInputs dev;
          dev.x = cpu.x.detach().to(gpu).requires_grad_();
          dev.gamma = cpu.gamma.detach().to(gpu).requires_grad_();
          dev.beta = cpu.beta.detach().to(gpu).requires_grad_();
          dev.rm = cpu.rm.to(gpu);
          dev.rv = cpu.rv.to(gpu);
          if (with_res) dev.res = cpu.res.detach().to(gpu).requires_grad_();
          auto run = [&](BnInputs& in, const Tensor& pr, Device d) {
            std::vector<std::vector<double>> out;
            Tensor gg[2] = {Tensor::zeros({c}, DType::f32, d), Tensor::zeros({c}, DType::f32, d)};
            Tensor gb[2] = {Tensor::zeros({c}, DType::f32, d), Tensor::zeros({c}, DType::f32, d)};
            std::unique_ptr<PairedScope> scope;
            if (paired) {
              scope = std::make_unique<PairedScope>(n, split);
              scope->route(in.gamma, gg[0], gg[1]);
              scope->route(in.beta, gb[0], gb[1]);
            }
            CaptureScope cap;
            Tensor y = batch_norm_act(in.x, in.gamma, in.beta, in.rm, in.rv, 1e-5, in.res, act);
            sum(mul(y, pr)).backward();
            out.push_back(as_doubles(y.to(Device{})));
            out.push_back(as_doubles(in.x.grad().to(Device{})));
            if (with_res) out.push_back(as_doubles(in.res.grad().to(Device{})));
            if (paired) {
              for (int h = 0; h < 2; ++h) {
                out.push_back(as_doubles(gg[h].to(Device{})));
                out.push_back(as_doubles(gb[h].to(Device{})));
              }
            } else {
              out.push_back(as_doubles(in.gamma.grad().to(Device{})));
              out.push_back(as_doubles(in.beta.grad().to(Device{})));
            }
            REQUIRE(cap.records().size() == 1);
            out.push_back(as_doubles(cap.records()[0]->output_grad.to(Device{})));
            return out;
          };
          const auto a = run(dev, proj.to(gpu), gpu), b = run(cpu, proj, Device{});
          REQUIRE(a.size() == b.size());
          for (size_t i = 0; i < a.size(); ++i) {
            CAPTURE(i);
            CHECK(rel_error(a[i], b[i]) < 1e-5);
          }
        }
}
#endif
