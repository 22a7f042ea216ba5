// tests/test_hardness_rule.cpp: a new layer kind's hardness rule is one file. This file defines a
// test-local parametric op (a per-feature scale, y = x * w), the capture it records, and its hardness
// rule registered from a file-scope registrar; hardness then plans it as its own block and its K, row
// form and norms equal per-sample gradients. Also: an op tag without a rule falls back (named), and a
// second rule for a tag is refused.
#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "engine/nn.h"
#include "engine/ops.h"
#include "tests/gradcheck.h"
#include "tests/hardness_check.h"
#include "unlearn/hardness.h"
#include "unlearn/hardness_rule.h"

using namespace hamu;

namespace {

// y = x * w over the last dim (x [N, T, d], w [d]), recording a capture under `tag`:
// A = x rows [N*T, d], G = [N*T, d], T positions per sample.
Tensor diag_scale(const Tensor& x, const Tensor& w, const char* tag) {
  const int64_t d = w.numel(), samples = x.shape()[0];
  Tensor xc = x.contiguous();
  Tensor y = mul(xc.detach(), w.detach());
  CaptureTicket ticket = capture_layer(tag, w, Tensor(), xc, samples, xc.numel() / d / samples);
  if (needs_grad({&xc, &w})) {
    Tensor xd = xc.detach(), wd = w.detach();
    record(y, tag, {xc, w}, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      capture_output_grad(ticket, gc);
      return std::vector<Tensor>{mul(gc, wd), sum_to(mul(gc, xd), wd.shape())};
    });
  }
  return y;
}

// The rule: the per-sample gradient of w is sum_t x_t * g_t (not an outer product: materialised only,
// the default row form). Written with engine ops, which is enough for a rule.
class DiagScaleRule : public HardnessRule {
 public:
  void plan(const CaptureRecord& rec, HardnessBlock& b) const override {
    b.kind = "diag scale";
    b.in = b.out = b.numel;
  }
  BlockRep rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, bool) const override {
    const int64_t t = rec.positions, d = b.numel;
    Tensor x = sample_rows(rec.input, d, s0 * t, n * t), g = sample_rows(rec.output_grad, d, s0 * t, n * t);
    BlockRep r;
    r.p = sum(mul(x, g).reshape({n, t, d}), 1).contiguous();
    return r;
  }
};

const HardnessRuleRegistrar diag_scale_rule("test_diag_scale", std::make_unique<DiagScaleRule>());

// x [N, 3, 4] -> diag_scale -> relu -> mean over T -> linear.
struct ScaleNet : nn::Module {
  ScaleNet(Rng& rng, const char* tag) : tag_(tag) {
    scale = Tensor::empty({4});
    rng.fill_uniform(scale, 0.5, 1.5);
    register_parameter("scale", &scale);
    head = register_module("head", std::make_shared<nn::Linear>(4, 3, true, rng));
  }
  Tensor forward(const Tensor& x) override { return (*head)(mean(relu(diag_scale(x, scale, tag_)), 1)); }
  Tensor scale;
  std::shared_ptr<nn::Linear> head;
  const char* tag_;
};

std::shared_ptr<ScaleNet> scale_net(const char* tag, DType dt) {
  Rng rng(17);
  auto m = std::make_shared<ScaleNet>(rng, tag);
  m->assign_names();
  m->to(dt);
  m->eval();
  return m;
}

Tensor inputs(int64_t n, DType dt) { return testing::random_tensor({n, 3, 4}, -1, 1, dt); }

}  // namespace

TEST_CASE("a hardness rule registered in its own file is used for its op's blocks") {
  REQUIRE(find_hardness_rule("test_diag_scale") != nullptr);
  for (DType dt : {DType::f64, DType::f32}) {
    auto model = scale_net("test_diag_scale", dt);
    CapturedBatch cb = capture_batch(*model, inputs(2, dt), testing::random_labels(2, 3), true);
    BlockPlan plan = plan_blocks(*model, cb, GhostPath::automatic);
    CHECK(plan.notices.empty());
    REQUIRE(plan.blocks.size() == 3);  // scale, head.weight, head.bias
    CHECK(plan.blocks[0].name == "scale");
    CHECK(plan.blocks[0].kind == "diag scale");
    CHECK(plan.blocks[0].rule == find_hardness_rule("test_diag_scale"));
    CHECK(std::string(plan.blocks[0].path()) == "materialise");
    for (GhostPath path : {GhostPath::ghost, GhostPath::materialise}) {
      CAPTURE(int(path));
      testing::check_against_per_sample(*model, [dt](int64_t n) { return inputs(n, dt); }, 3, dt, path,
                                        dt == DType::f64 ? 1e-10 : 1e-4);
    }
  }
}

TEST_CASE("an op tag without a hardness rule falls back to per-sample backward passes, named") {
  auto model = scale_net("test_no_rule", DType::f64);
  CapturedBatch cb = capture_batch(*model, inputs(2, DType::f64), testing::random_labels(2, 3), true);
  BlockPlan plan = plan_blocks(*model, cb, GhostPath::automatic);
  REQUIRE(plan.notices.size() == 1);
  CHECK(plan.notices[0].find("'scale'") != std::string::npos);
  CHECK(plan.notices[0].find("its op 'test_no_rule' has no hardness rule") != std::string::npos);
  CHECK(std::string(plan.blocks.back().path()) == "per-sample backward");
  testing::check_against_per_sample(*model, [](int64_t n) { return inputs(n, DType::f64); }, 3, DType::f64,
                                    GhostPath::automatic, 1e-10);
}

TEST_CASE("hardness rule registry: the built-in layers, one rule per tag") {
  for (const char* op : {"linear", "conv2d", "embedding", "batch_norm", "layer_norm", "rms_norm"}) {
    CAPTURE(op);
    CHECK(find_hardness_rule(op) != nullptr);
  }
  CHECK(find_hardness_rule("no_such_op") == nullptr);
  CHECK_THROWS_WITH_AS(register_hardness_rule("linear", std::make_unique<DiagScaleRule>()),
                       doctest::Contains("already has a hardness rule"), Error);
}
