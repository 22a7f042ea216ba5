// tests/test_hardness.cpp: per-sample hardness (unlearn/hardness.h): ghost and materialised K, the
// row form and per-sample norms against per-sample gradients from one backward per sample, for every
// layer type with and without T > 1, in f64 and f32; mean(K) = kappa; tiling; the verdict; bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>

#include "engine/nn.h"
#include "engine/ops.h"
#include "models/models.h"
#include "tests/gradcheck.h"
#include "tests/hardness_check.h"
#include "unlearn/hardness.h"

using namespace hamu;

namespace {

// x [B, T, D] -> linear -> relu -> layer_norm -> linear -> relu -> mean over T -> linear (T > 1 linears).
struct SeqNet : nn::Module {
  SeqNet(Rng& rng, int64_t d, int64_t classes) {
    l1 = register_module("l1", std::make_shared<nn::Linear>(d, 6, true, rng));
    ln = register_module("ln", std::make_shared<nn::LayerNorm>(6));
    l2 = register_module("l2", std::make_shared<nn::Linear>(6, 5, true, rng));
    head = register_module("head", std::make_shared<nn::Linear>(5, classes, true, rng));
    rng.fill_uniform(ln->weight, 0.5, 1.5);
    rng.fill_uniform(ln->bias, -0.5, 0.5);
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = (*ln)(relu((*l1)(x)));
    return (*head)(mean(relu((*l2)(h)), 1));
  }
  std::shared_ptr<nn::Linear> l1, l2, head;
  std::shared_ptr<nn::LayerNorm> ln;
};

// x [B, T, D] -> linear -> rms_norm (Llama's norm, weight only) -> mean over T -> linear.
struct RmsNet : nn::Module {
  RmsNet(Rng& rng, int64_t d, int64_t classes) {
    l1 = register_module("l1", std::make_shared<nn::Linear>(d, 6, true, rng));
    head = register_module("head", std::make_shared<nn::Linear>(6, classes, true, rng));
    weight = Tensor::full({6}, 1.0);
    register_parameter("norm_weight", &weight);
    rng.fill_uniform(weight, 0.5, 1.5);
  }
  Tensor forward(const Tensor& x) override { return (*head)(mean(rms_norm((*l1)(x), weight, 1e-6), 1)); }
  std::shared_ptr<nn::Linear> l1, head;
  Tensor weight;
};

// tokens [B, T] -> embedding -> layer_norm -> mean over T -> linear.
struct EmbNet : nn::Module {
  EmbNet(Rng& rng, int64_t vocab, int64_t classes) {
    emb = register_module("emb", std::make_shared<nn::Embedding>(vocab, 5, rng));
    ln = register_module("ln", std::make_shared<nn::LayerNorm>(5));
    head = register_module("head", std::make_shared<nn::Linear>(5, classes, true, rng));
  }
  Tensor forward(const Tensor& x) override { return (*head)(mean((*ln)((*emb)(x)), 1)); }
  std::shared_ptr<nn::Embedding> emb;
  std::shared_ptr<nn::LayerNorm> ln;
  std::shared_ptr<nn::Linear> head;
};

// conv with bias and stride, then a linear head.
struct ConvNet : nn::Module {
  ConvNet(Rng& rng, int64_t classes) {
    conv = register_module("conv", std::make_shared<nn::Conv2d>(2, 3, 3, 2, 1, true, rng));
    bn = register_module("bn", std::make_shared<nn::BatchNorm2d>(3));
    head = register_module("head", std::make_shared<nn::Linear>(3 * 3 * 3, classes, true, rng));
    rng.fill_uniform(bn->running_mean, -0.2, 0.2);
    rng.fill_uniform(bn->running_var, 0.5, 1.5);
    rng.fill_uniform(bn->weight, 0.5, 1.5);
    rng.fill_uniform(bn->bias, -0.3, 0.3);
  }
  Tensor forward(const Tensor& x) override { return (*head)(relu((*bn)((*conv)(x))).flatten(1)); }
  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::BatchNorm2d> bn;
  std::shared_ptr<nn::Linear> head;
};

// A layer used twice (shared weights) and a learnable scale used through mul: both uncaptured.
struct OddNet : nn::Module {
  OddNet(Rng& rng, int64_t classes) {
    sq = register_module("sq", std::make_shared<nn::Linear>(4, 4, true, rng));
    head = register_module("head", std::make_shared<nn::Linear>(4, classes, true, rng));
    scale = Tensor::full({classes}, 1.3);
    register_parameter("scale", &scale);
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = relu((*sq)(relu((*sq)(x))));
    return mul((*head)(h), scale);
  }
  std::shared_ptr<nn::Linear> sq, head;
  Tensor scale;
};

struct Case {
  std::string name;
  std::shared_ptr<nn::Module> model;
  std::function<Tensor(int64_t)> inputs;  // n samples
  int classes = 3;
};

std::vector<Case> cases(DType dt) {
  std::vector<Case> out;
  Rng rng(101);
  auto floats = [dt](Shape s) { return [dt, s](int64_t n) {
    Shape full = s;
    full.insert(full.begin(), n);
    return testing::random_tensor(full, -1, 1, dt);
  }; };
  auto tokens = [](int64_t t, int vocab) { return [t, vocab](int64_t n) {
    std::vector<int32_t> v(size_t(n * t));
    for (auto& x : v) x = int32_t(testing::test_rng()() % uint64_t(vocab));
    return Tensor::from_vector<int32_t>(v, {n, t});
  }; };
  out.push_back({"mlp (linear T=1)", models::build_model({"mlp", 1, 3, 3, 3}, rng), floats({1, 3, 3}), 3});
  out.push_back({"sequence linear + layer_norm (T=4)", std::make_shared<SeqNet>(rng, 3, 3), floats({4, 3}), 3});
  out.push_back({"conv with bias + batch_norm (T=9)", std::make_shared<ConvNet>(rng, 3), floats({2, 5, 5}), 3});
  out.push_back({"cnn (conv T=64/16, BN frozen)", models::build_model({"cnn", 1, 8, 8, 3}, rng), floats({1, 8, 8}), 3});
  out.push_back({"embedding T=3 + layer_norm", std::make_shared<EmbNet>(rng, 7, 3), tokens(3, 7), 3});
  out.push_back({"sequence linear + rms_norm (T=4)", std::make_shared<RmsNet>(rng, 3, 3), floats({4, 3}), 3});
  out.push_back({"embedding T=1", std::make_shared<EmbNet>(rng, 6, 3), tokens(1, 6), 3});
  out.push_back({"shared layer (uses summed) + foreign op (fallback)", std::make_shared<OddNet>(rng, 3), floats({4}), 3});
  for (Case& c : out) {
    c.model->assign_names();
    c.model->to(dt);
    c.model->eval();
  }
  return out;
}

}  // namespace

TEST_CASE("ghost and materialised K, row form and norms equal per-sample gradients (f64, every layer type)") {
  for (Case& c : cases(DType::f64)) {
    for (GhostPath path : {GhostPath::ghost, GhostPath::materialise, GhostPath::automatic}) {
      CAPTURE(c.name);
      CAPTURE(int(path));
      testing::check_against_per_sample(*c.model, c.inputs, c.classes, DType::f64, path, 1e-5);
    }
  }
}

TEST_CASE("ghost and materialised K, row form and norms equal per-sample gradients (f32)") {
  for (Case& c : cases(DType::f32)) {
    for (GhostPath path : {GhostPath::ghost, GhostPath::materialise}) {
      CAPTURE(c.name);
      CAPTURE(int(path));
      testing::check_against_per_sample(*c.model, c.inputs, c.classes, DType::f32, path, 1e-4);
    }
  }
}

TEST_CASE("the plan: cost model choices, shared layers, uncaptured blocks named with their fallback") {
  Rng rng(3);
  auto cnn = models::build_model({"cnn", 1, 28, 28, 10}, rng);
  cnn->eval();
  Tensor x = testing::random_tensor({2, 1, 28, 28}, -1, 1, DType::f32);
  CapturedBatch cb = capture_batch(*cnn, x, testing::random_labels(2, 10), true);
  BlockPlan plan = plan_blocks(*cnn, cb, GhostPath::automatic);
  for (const HardnessBlock& b : plan.blocks) {
    CAPTURE(b.name);
    if (b.name == "conv1.weight" || b.name == "conv2.weight") CHECK(std::string(b.path()) == "materialise");
    if (b.name == "fc1.weight" || b.name == "fc2.weight") CHECK(std::string(b.path()) == "ghost");
    if (b.name == "bn1.weight" || b.name == "fc1.bias") CHECK(std::string(b.path()) == "materialise");
  }
  CHECK(plan.notices.empty());

  Rng rng2(4);
  OddNet odd(rng2, 3);
  odd.assign_names();
  Tensor xo = testing::random_tensor({2, 4}, -1, 1, DType::f32);
  CapturedBatch co = capture_batch(odd, xo, testing::random_labels(2, 3), true);
  BlockPlan po = plan_blocks(odd, co, GhostPath::automatic);
  // sq is applied twice: its weight and bias are shared blocks (both uses' per-sample gradients summed,
  // checked against per-sample backward passes above), not fallbacks; scale is reached by mul only.
  REQUIRE(po.notices.size() == 1);
  for (const HardnessBlock& b : po.blocks)
    if (b.name == "sq.weight" || b.name == "sq.bias") {
      CHECK(b.parts.size() == 2);
      CHECK(std::string(b.path()) == "materialise");
      CHECK(b.kind == (b.name == "sq.weight" ? "linear + linear (shared)" : "linear bias + linear bias (shared)"));
    }
  CHECK(po.notices[0].find("'scale'") != std::string::npos);
  CHECK(po.notices[0].find("reached by an op other than") != std::string::npos);
  CHECK(po.notices[0].find("per-sample gradients by one backward per sample") != std::string::npos);
  CHECK(std::string(po.blocks.back().path()) == "per-sample backward");

  // BatchNorm with batch statistics has no per-sample gradients: refused, naming the layer.
  cnn->train(true);
  CapturedBatch ct = capture_batch(*cnn, x, testing::random_labels(2, 10), true);
  CHECK_THROWS_WITH_AS(plan_blocks(*cnn, ct, GhostPath::automatic), doctest::Contains("bn1.weight"), InputError);
}

TEST_CASE("mean of K equals kappa = <g_r, g_f> from the batch-mean gradients") {
  Rng rng(5);
  auto model = models::build_model({"cnn", 1, 8, 8, 4}, rng);
  model->to(DType::f64);
  model->eval();
  const int64_t nf = 5, nr = 7;
  Tensor xf = testing::random_tensor({nf, 1, 8, 8}), xr = testing::random_tensor({nr, 1, 8, 8});
  Tensor yf = testing::random_labels(nf, 4), yr = testing::random_labels(nr, 4);
  CapturedBatch cf = capture_batch(*model, xf, yf, true), cr = capture_batch(*model, xr, yr, true);
  BlockPlan plan = plan_blocks(*model, cr, GhostPath::automatic);
  SampleReps rf = build_reps(*model, plan, cf, 0, nf), rr = build_reps(*model, plan, cr, 0, nr);
  Tensor k = Tensor::zeros({nf * nr}, DType::f64), gram = Tensor::empty({gram_elems(plan, nf, nr) + 1}, DType::f64);
  add_similarity(plan, rf, rr, 0, nr, k, gram);
  double mean_k = 0;
  for (double v : testing::as_doubles(k)) mean_k += v / double(nf * nr);
  // kappa from two ordinary backward passes of the batch-mean losses.
  auto grads = [&](const Tensor& x, const Tensor& y) {
    model->zero_grad();
    cross_entropy(model->forward(x), y).backward();
    std::vector<double> g;
    for (const Tensor& p : model->parameters()) {
      std::vector<double> v = testing::as_doubles(p.grad());
      g.insert(g.end(), v.begin(), v.end());
    }
    model->zero_grad();
    return g;
  };
  const std::vector<double> gf = grads(xf, yf), gr = grads(xr, yr);
  double kappa = 0;
  for (size_t i = 0; i < gf.size(); ++i) kappa += gf[i] * gr[i];
  CHECK(mean_k == doctest::Approx(kappa).epsilon(1e-10));
}

namespace {

// A two-class image set: class 0 bright on the left, class 1 bright on the right, with noise.
ImageDataset two_class_images(int64_t n, uint64_t seed) {
  ImageDataset ds;
  ds.n = n;
  ds.c = 1;
  ds.h = ds.w = 6;
  ds.num_classes = 2;
  ds.class_names = {"left", "right"};
  Rng rng(seed);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t y = int32_t(i % 2);
    ds.labels.push_back(y);
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t c = 0; c < 6; ++c) {
        const bool lit = (c < 3) == (y == 0);
        ds.pixels.push_back(uint8_t(std::min(255.0, (lit ? 160.0 : 40.0) + 60.0 * rng.uniform())));
      }
  }
  return ds;
}

std::vector<int64_t> of_class(const ImageDataset& ds, int32_t c) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < ds.n; ++i)
    if (ds.labels[size_t(i)] == c) v.push_back(i);
  return v;
}

}  // namespace

TEST_CASE("the hardness driver: tiling gives the same result as one tile, mean(K) = kappa, samples summarised") {
  ImageDataset ds = two_class_images(40, 7);
  Rng rng(8);
  auto model = models::build_model({"cnn", 1, 6, 6, 2}, rng);
  const Normalizer norm = Normalizer::identity(1);
  std::vector<int64_t> forget = of_class(ds, 0), retain = of_class(ds, 1);
  forget.resize(9);
  HardnessOptions one;
  one.heat_size = 4;
  HardnessOptions tiled = one;
  tiled.forget_tile = 2;
  tiled.retain_tile = 3;
  tiled.chunk = 5;
  HardnessReport a = compute_hardness(*model, ds, norm, forget, retain, one);
  HardnessReport b = compute_hardness(*model, ds, norm, forget, retain, tiled);
  CHECK(model->training());  // the mode is restored
  REQUIRE(a.samples.size() == 9);
  REQUIRE(b.samples.size() == 9);
  CHECK(a.n_retain == 20);
  CHECK(b.forget_tile == 2);
  CHECK(b.retain_tile == 3);
  double mean_k = 0;
  for (size_t j = 0; j < a.samples.size(); ++j) {
    CAPTURE(j);
    CHECK(b.samples[j].kappa_k == doctest::Approx(a.samples[j].kappa_k).epsilon(1e-4));
    CHECK(b.samples[j].kappa == doctest::Approx(a.samples[j].kappa).epsilon(1e-4));
    CHECK(b.samples[j].similar_index == a.samples[j].similar_index);
    CHECK(a.samples[j].kappa_k == doctest::Approx(a.samples[j].kappa).epsilon(1e-3).scale(1e-6));
    CHECK(a.samples[j].label == 0);
    CHECK(a.samples[j].similar_label == 1);
    mean_k += a.samples[j].kappa_k / 9.0;
  }
  CHECK(mean_k == doctest::Approx(a.kappa).epsilon(1e-3));
  CHECK(a.row_form_check < 1e-3);
  CHECK(a.heat.size() == 4);
  CHECK(a.heat[0].size() == 4);
  CHECK(a.blocks.size() == model->parameters().size());
}

TEST_CASE("the verdict flips from easy to hard as the forget set is made identical to the retain set") {
  ImageDataset ds = two_class_images(48, 9);
  Rng rng(10);
  auto model = models::build_model({"mlp", 1, 6, 6, 2}, rng);
  const Normalizer norm = Normalizer::identity(1);
  const std::vector<int64_t> c0 = of_class(ds, 0), c1 = of_class(ds, 1);
  HardnessOptions opt;
  HardnessReport other = compute_hardness(*model, ds, norm, c0, c1, opt);
  HardnessReport same = compute_hardness(*model, ds, norm, c1, c1, opt);
  CHECK(other.kappa < 0);
  CHECK(other.verdict == "easy");
  CHECK(same.kappa > 0);
  CHECK(same.share_hard > other.share_hard);
  CHECK(same.verdict == "hard: expect collateral forgetting");
  // Identical sets: K is a Gram matrix, so each forget sample's most similar retain sample is itself.
  for (const SampleHardness& s : same.samples) CHECK(s.similar_index == s.index);
  CHECK(same.solver.n_collateral == same.solver.n_blocks);
  CHECK(other.solver.n_collateral == 0);
  CHECK(same.share_same_class == 1.0);
  CHECK(other.share_same_class == 0.0);
  CHECK(hardness_verdict(0.1, 3, 10, 0.0) == "moderate");
  CHECK(hardness_verdict(0.1, 6, 10, 0.5) == "hard: expect collateral forgetting");
  CHECK(hardness_verdict(-0.1, 0, 10, 0.05) == "easy");
  CHECK(hardness_verdict(-0.1, 0, 10, 0.4) == "moderate");  // the means cancel, many samples retain-like
}

TEST_CASE("hardness: bad input gets one clear error") {
  ImageDataset ds = two_class_images(20, 11);
  Rng rng(12);
  auto model = models::build_model({"mlp", 1, 6, 6, 2}, rng);
  const Normalizer norm = Normalizer::identity(1);
  const std::vector<int64_t> c0 = of_class(ds, 0), c1 = of_class(ds, 1);
  HardnessOptions opt;
  opt.retain_samples = 11;
  CHECK_THROWS_WITH_AS(compute_hardness(*model, ds, norm, c0, c1, opt), doctest::Contains("only 10"), InputError);
  opt.retain_samples = 0;
  opt.forget_samples = 50;
  CHECK_THROWS_WITH_AS(compute_hardness(*model, ds, norm, c0, c1, opt), doctest::Contains("--forget-samples"), InputError);
  opt.forget_samples = 0;
  opt.memory_bytes = 1000;
  CHECK_THROWS_WITH_AS(compute_hardness(*model, ds, norm, c0, c1, opt), doctest::Contains("too small for one tile"),
                       InputError);
  // A budget that holds the tiles but not the asked retain sample.
  opt.memory_bytes = 60000;
  opt.retain_samples = 10;
  CHECK_THROWS_WITH_AS(compute_hardness(*model, ds, norm, c0, c1, opt), doctest::Contains("--retain-samples 10 needs"),
                       InputError);
  // Without --retain-samples the same budget takes as many retain samples as fit, and says so.
  opt.retain_samples = 0;
  HardnessReport r = compute_hardness(*model, ds, norm, c0, c1, opt);
  CHECK(r.n_retain >= 1);
  CHECK(r.n_retain < 10);
  bool told = false;
  for (const std::string& n : r.notices) told = told || n.find("retain sample: ") != std::string::npos;
  CHECK(told);
  CHECK_THROWS_AS(parse_ghost_path("fast"), InputError);
}

TEST_CASE("the row form from one paired pass equals the row form from separate captures") {
  Rng rng(21);
  auto model = models::build_model({"cnn", 1, 8, 8, 4}, rng);
  model->to(DType::f64);
  model->eval();
  const int64_t nf = 3, nr = 5;
  Tensor xf = testing::random_tensor({nf, 1, 8, 8}), xr = testing::random_tensor({nr, 1, 8, 8});
  Tensor yf = testing::random_labels(nf, 4), yr = testing::random_labels(nr, 4);
  CapturedBatch cf = capture_batch(*model, xf, yf, true), cr = capture_batch(*model, xr, yr, true);
  BlockPlan plan = plan_blocks(*model, cr, GhostPath::automatic);
  std::vector<Tensor> g_r;
  for (const Tensor& g : cr.param_grads) g_r.push_back(mul_scalar(g, 1.0 / double(nr)));
  Tensor ref = Tensor::zeros({nf}, DType::f64);
  add_row_form(*model, plan, cf, 0, nf, g_r, ref);
  PairedRowForm pr = row_form_paired(*model, plan, xr, yr, xf, yf);
  CHECK(testing::rel_error(testing::as_doubles(pr.kappa), testing::as_doubles(ref)) < 1e-10);
  for (size_t i = 0; i < g_r.size(); ++i) {
    CHECK(testing::rel_error(testing::as_doubles(pr.retain_mean[i]), testing::as_doubles(g_r[i])) < 1e-10);
    CHECK(testing::rel_error(testing::as_doubles(pr.forget_mean[i]),
                             testing::as_doubles(mul_scalar(cf.param_grads[i], 1.0 / double(nf)))) < 1e-10);
  }
  // With batch statistics the paired pass is not valid and says why.
  model->train(true);
  CHECK_THROWS_WITH(row_form_paired(*model, plan, xr, yr, xf, yf), doctest::Contains("batch statistics"));
}
