// tests/test_paired.cpp: the paired backward (engine/paired.h, unlearn/gradients.cpp): one pass over
// [retain; forget] gives the same r and f as two passes, for every model and method family, and the
// fallbacks (BatchNorm with batch statistics, dropout, a parameter outside the paired ops).
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/paired.h"
#include "models/models.h"
#include "tests/gradcheck.h"
#include "unlearn/gradients.h"
#include "unlearn/method_registry.h"
#include "unlearn/update.h"

using namespace hamu;

namespace {

Batch random_batch(int64_t n, int64_t c, int64_t h, int64_t w, int classes) {
  Batch b;
  b.images = testing::random_tensor({n, c, h, w}, -1, 1, DType::f32);
  b.labels = testing::random_labels(n, classes);
  for (int64_t i = 0; i < n; ++i) b.indices.push_back(i);
  return b;
}

std::vector<double> flat(const std::vector<Tensor>& ts) {
  std::vector<double> out;
  for (const Tensor& t : ts) {
    std::vector<double> v = testing::as_doubles(t);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// Non-trivial running statistics, so frozen BatchNorm is not the identity.
void perturb_batchnorm(nn::Module& m, uint64_t seed) {
  Rng rng(seed);
  for (auto& [name, t] : m.named_buffers()) {
    Tensor v = t;
    if (name.find("running_mean") != std::string::npos) rng.fill_uniform(v, -0.3, 0.3);
    if (name.find("running_var") != std::string::npos) rng.fill_uniform(v, 0.5, 2.0);
  }
}

struct Compared {
  double err_r = 0, err_f = 0;
  bool paired = false;
  std::string reason;
};

Compared paired_vs_two(nn::Module& model, nn::Module* original, const Batch& r, const Batch& f, const Method& m) {
  MethodParams params;
  FusedUpdate two(model.parameters());
  std::string why2;
  GradientResult g2 = compute_gradients(model, original, two, r, f, m, params, false, &why2);
  CHECK_FALSE(g2.paired);
  FusedUpdate one(model.parameters());
  Compared c;
  GradientResult g1 = compute_gradients(model, original, one, r, f, m, params, true, &c.reason);
  c.paired = g1.paired;
  CHECK(g1.retain_loss == doctest::Approx(g2.retain_loss).epsilon(1e-5));
  CHECK(g1.forget_loss == doctest::Approx(g2.forget_loss).epsilon(1e-5));
  const std::vector<double> r1 = flat(one.retain_grads()), r2 = flat(two.retain_grads());
  const std::vector<double> f1 = flat(one.forget_grads()), f2 = flat(two.forget_grads());
  c.err_r = testing::rel_error(r1, r2);
  c.err_f = testing::rel_error(f1, f2);
  for (const Tensor& p : model.parameters()) CHECK_FALSE(p.grad().defined());
  return c;
}

}  // namespace

TEST_CASE("paired backward equals two passes for mlp, cnn and resnet20 with BatchNorm frozen") {
  struct Case {
    const char* arch;
    int64_t c, h, w;
  };
  for (const Case& k : {Case{"mlp", 1, 8, 8}, Case{"cnn", 1, 8, 8}, Case{"resnet20", 3, 8, 8}}) {
    CAPTURE(k.arch);
    Rng rng(11);
    auto model = models::build_model({k.arch, k.c, k.h, k.w, 5}, rng);
    perturb_batchnorm(*model, 3);
    models::set_batchnorm_frozen(*model, true);
    model->train(true);
    Batch r = random_batch(6, k.c, k.h, k.w, 5), f = random_batch(4, k.c, k.h, k.w, 5);
    Compared c = paired_vs_two(*model, nullptr, r, f, parse_method("hamu-q"));
    CHECK(c.paired);
    CHECK(c.reason.empty());
    CHECK(c.err_r <= 1e-5);
    CHECK(c.err_f <= 1e-5);
  }
}

TEST_CASE("paired backward equals two passes for each method family (hamu-q, gdiff, kl, npo, ga, ft)") {
  Rng rng(12), rng_orig(99);
  auto model = models::build_model({"cnn", 1, 8, 8, 4}, rng);
  auto original = models::build_model({"cnn", 1, 8, 8, 4}, rng_orig);
  perturb_batchnorm(*model, 4);
  perturb_batchnorm(*original, 5);
  models::set_batchnorm_frozen(*model, true);
  model->train(true);
  original->eval();
  Batch r = random_batch(5, 1, 8, 8, 4), f = random_batch(3, 1, 8, 8, 4);
  for (const char* name : {"hamu-q", "gdiff", "kl", "npo", "scrub", "ga", "ft"}) {
    const Method& m = parse_method(name);
    CAPTURE(name);
    Compared c = paired_vs_two(*model, original.get(), r, f, m);
    CHECK(c.paired);
    CHECK(c.err_r <= 1e-5);
    CHECK(c.err_f <= 1e-5);
  }
}

TEST_CASE("paired backward falls back to two passes: BatchNorm not frozen, dropout active, foreign op") {
  Batch r = random_batch(4, 1, 8, 8, 3), f = random_batch(3, 1, 8, 8, 3);
  SUBCASE("BatchNorm with batch statistics") {
    Rng rng(13);
    auto model = models::build_model({"cnn", 1, 8, 8, 3}, rng);
    model->train(true);  // not frozen: batch statistics
    Compared c = paired_vs_two(*model, nullptr, r, f, parse_method("hamu-q"));
    CHECK_FALSE(c.paired);
    CHECK(c.reason.find("BatchNorm") != std::string::npos);
    CHECK(c.err_r == 0.0);
    CHECK(c.err_f == 0.0);
  }
  SUBCASE("dropout active") {
    Rng rng(14);
    auto model = std::make_shared<nn::Sequential>();
    model->add(std::make_shared<nn::Flatten>());
    model->add(std::make_shared<nn::Linear>(64, 16, true, rng));
    model->add(std::make_shared<nn::Dropout>(0.3, 7));
    model->add(std::make_shared<nn::Linear>(16, 3, true, rng));
    model->assign_names();
    model->train(true);
    MethodParams params;
    FusedUpdate up(model->parameters());
    std::string why;
    GradientResult g = compute_gradients(*model, nullptr, up, r, f, parse_method("hamu-q"), params, true, &why);
    CHECK_FALSE(g.paired);
    CHECK(why.find("dropout") != std::string::npos);
    model->eval();  // dropout off: paired again
    GradientResult g2 = compute_gradients(*model, nullptr, up, r, f, parse_method("hamu-q"), params, true, &why);
    CHECK(g2.paired);
  }
  SUBCASE("a parameter reached by an op without a paired backward") {
    // y = linear(x) * s with a learnable scale s: mul has no paired backward, so s gets a .grad.
    struct Scaled : nn::Module {
      explicit Scaled(Rng& rng) {
        fc = register_module("fc", std::make_shared<nn::Linear>(64, 3, true, rng));
        scale = Tensor::full({3}, 1.5);
        register_parameter("scale", &scale);
      }
      Tensor forward(const Tensor& x) override { return mul((*fc)(x.flatten(1)), scale); }
      std::shared_ptr<nn::Linear> fc;
      Tensor scale;
    };
    Rng rng(15);
    Scaled model(rng);
    model.assign_names();
    Compared c = paired_vs_two(model, nullptr, r, f, parse_method("gdiff"));
    CHECK_FALSE(c.paired);
    CHECK(c.reason.find("scale") != std::string::npos);
    CHECK(c.err_r <= 1e-6);
    CHECK(c.err_f <= 1e-6);
  }
}

TEST_CASE("paired scope splits embedding, layer_norm and sequence linear gradients by sample (f64)") {
  // Tokens [B, T] -> embedding -> layer_norm -> linear; loss = sum over rows of a fixed projection.
  const int64_t b = 5, t = 3, vocab = 7, d = 4, split = 2;
  Tensor table = testing::random_tensor({vocab, d}).requires_grad_();
  Tensor gamma = testing::random_tensor({d}, 0.5, 1.5).requires_grad_();
  Tensor beta = testing::random_tensor({d}).requires_grad_();
  Tensor w = testing::random_tensor({2, d}).requires_grad_();
  Tensor bias = testing::random_tensor({2}).requires_grad_();
  table.set_name("emb");
  std::vector<int32_t> ids(size_t(b * t));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 5 + 1) % vocab);
  Tensor idx = Tensor::from_vector<int32_t>(ids, {b, t});
  Tensor proj = testing::random_tensor({b, t, 2});
  auto loss_of = [&](const Tensor& tokens, const Tensor& pr) {
    Tensor h = layer_norm(embedding(tokens, table), gamma, beta, 1e-5);
    return sum(mul(linear(h, w, bias), pr));
  };
  std::vector<Tensor> params{table, gamma, beta, w, bias};
  // Reference: two separate passes on the two sub-batches.
  std::vector<std::vector<double>> ref[2];
  for (int half = 0; half < 2; ++half) {
    for (Tensor& p : params) p.zero_grad();
    const int64_t s0 = half ? split : 0, n = half ? b - split : split;
    loss_of(idx.narrow(0, s0, n).contiguous(), proj.narrow(0, s0, n).contiguous()).backward();
    for (Tensor& p : params) ref[half].push_back(testing::as_doubles(p.grad()));
  }
  for (Tensor& p : params) p.zero_grad();
  std::vector<Tensor> first, second;
  PairedScope scope(b, split);
  for (Tensor& p : params) {
    first.push_back(Tensor::zeros(p.shape(), p.dtype()));
    second.push_back(Tensor::zeros(p.shape(), p.dtype()));
    scope.route(p, first.back(), second.back());
  }
  loss_of(idx, proj).backward();
  CHECK(scope.valid());
  for (size_t i = 0; i < params.size(); ++i) {
    CAPTURE(i);
    CHECK_FALSE(params[i].grad().defined());
    CHECK(testing::rel_error(testing::as_doubles(first[i]), ref[0][i]) < 1e-12);
    CHECK(testing::rel_error(testing::as_doubles(second[i]), ref[1][i]) < 1e-12);
  }
}

TEST_CASE("paired scope is marked invalid when an op's dim 0 is not the paired batch") {
  Tensor w = testing::random_tensor({3, 4}).requires_grad_();
  w.set_name("w");
  Tensor a = Tensor::zeros({3, 4}, DType::f64), b = Tensor::zeros({3, 4}, DType::f64);
  PairedScope scope(6, 2);
  scope.route(w, a, b);
  Tensor x = testing::random_tensor({4, 4});
  sum(linear(x, w, Tensor())).backward();
  CHECK_FALSE(scope.valid());
  CHECK(scope.reason().find("'w'") != std::string::npos);
  CHECK(w.grad().defined());  // computed the ordinary way instead
}
