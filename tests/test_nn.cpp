// tests/test_nn.cpp: modules (gradient checks through every module, names, modes), optimizers against
// hand-computed steps, and a small MLP that must fit a nonlinear problem.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>

#include "engine/nn.h"
#include "engine/optim.h"
#include "tests/gradcheck.h"

using namespace hamu;
using namespace hamu::testing;

namespace {

// Gradient check of a module with respect to its input and every parameter (float64).
double module_gradcheck(nn::Module& m, const Tensor& x_in, bool check_input = true) {
  m.to(DType::f64);
  auto params = m.parameters();
  std::vector<Tensor> inputs;
  Tensor x = x_in;
  if (check_input) x.requires_grad_(true);
  inputs.push_back(x);
  for (auto& p : params) inputs.push_back(p);
  return gradcheck([&m](const std::vector<Tensor>& v) { return m.forward(v[0]); }, inputs);
}

}  // namespace

TEST_CASE("nn: gradient checks through every module") {
  Rng rng(7);
  SUBCASE("Linear") {
    nn::Linear m(5, 3, true, rng);
    CHECK(module_gradcheck(m, random_tensor({4, 5})) < 1e-6);
  }
  SUBCASE("Conv2d") {
    nn::Conv2d m(2, 3, 3, 1, 1, true, rng);
    CHECK(module_gradcheck(m, random_tensor({2, 2, 5, 6})) < 1e-6);
  }
  SUBCASE("BatchNorm2d train / eval / frozen") {
    nn::BatchNorm2d m(3);
    CHECK(module_gradcheck(m, random_tensor({4, 3, 2, 3})) < 1e-5);
    m.eval();
    CHECK(module_gradcheck(m, random_tensor({4, 3, 2, 3})) < 1e-6);
    m.train();
    m.frozen = true;
    CHECK(module_gradcheck(m, random_tensor({4, 3, 2, 3})) < 1e-6);
  }
  SUBCASE("activations, pooling, flatten") {
    nn::Sequential s;
    s.add(std::make_shared<nn::Conv2d>(2, 3, 3, 1, 1, false, rng));
    s.add(std::make_shared<nn::GELU>());
    s.add(std::make_shared<nn::AvgPool2d>(2, 2));
    s.add(std::make_shared<nn::Flatten>());
    CHECK(module_gradcheck(s, random_tensor({2, 2, 6, 6})) < 1e-6);
    nn::ReLU relu;
    CHECK(module_gradcheck(relu, random_away_from_zero({3, 4})) < 1e-6);
    nn::MaxPool2d mp(2, 2);
    CHECK(module_gradcheck(mp, random_distinct({2, 2, 4, 6})) < 1e-6);
    nn::GlobalAvgPool gap;
    CHECK(module_gradcheck(gap, random_tensor({2, 3, 4, 5})) < 1e-6);
  }
  SUBCASE("Dropout") {
    nn::Dropout d(0.25, 99);
    Tensor x = random_tensor({3, 40});
    // A fixed mask per call index: reset the module between calls by checking one call's function.
    d.to(DType::f64);
    Tensor xr = leaf(x);
    CHECK(gradcheck([](const std::vector<Tensor>& v) { return dropout(v[0], 0.25, true, 5); }, {xr}) < 1e-6);
    d.eval();
    CHECK(d.forward(x).to_vector<double>() == x.to_vector<double>());
    // Evaluation calls draw no mask: the next training call's mask is the one a fresh module draws first.
    nn::Dropout fresh(0.25, 99), used(0.25, 99);
    fresh.to(DType::f64);
    used.to(DType::f64);
    used.eval();
    for (int i = 0; i < 3; ++i) used.forward(x);
    used.train();
    const std::vector<double> a = fresh.forward(x).to_vector<double>(), b = used.forward(x).to_vector<double>();
    CHECK(a == b);
    CHECK(a != x.to_vector<double>());
    CHECK(used.calls() == 1);
  }
  SUBCASE("Embedding and LayerNorm") {
    nn::Embedding e(7, 4, rng);
    CHECK(module_gradcheck(e, Tensor::from_vector<int32_t>({1, 6, 6, 0}, {2, 2}), false) < 1e-6);
    nn::LayerNorm ln(5);
    CHECK(module_gradcheck(ln, random_tensor({3, 5})) < 1e-5);
  }
  SUBCASE("CausalSelfAttention") {
    nn::CausalSelfAttention att(6, 2, rng);
    CHECK(module_gradcheck(att, random_tensor({2, 4, 6})) < 1e-6);
  }
}

TEST_CASE("nn: names, buffers, modes and devices") {
  Rng rng(1);
  nn::Sequential s;
  s.add(std::make_shared<nn::Conv2d>(1, 2, 3, 1, 1, false, rng));
  s.add(std::make_shared<nn::BatchNorm2d>(2));
  s.add(std::make_shared<nn::Flatten>());
  s.add(std::make_shared<nn::Linear>(2 * 4 * 4, 3, true, rng));
  s.assign_names();
  auto params = s.named_parameters();
  REQUIRE(params.size() == 5);
  CHECK(params[0].first == "0.weight");
  CHECK(params[1].first == "1.weight");
  CHECK(params[4].first == "3.bias");
  CHECK(params[4].second.name() == "3.bias");
  auto buffers = s.named_buffers();
  REQUIRE(buffers.size() == 2);
  CHECK(buffers[0].first == "1.running_mean");
  CHECK(s.num_parameters() == 2 * 9 + 2 + 2 + 32 * 3 + 3);
  // Training mode updates BatchNorm's running statistics; eval and frozen modes do not.
  auto* bn = dynamic_cast<nn::BatchNorm2d*>(s.children()[1].second.get());
  Tensor x = random_tensor({4, 1, 4, 4}, -1, 1, DType::f32);
  std::vector<float> before = bn->running_mean.to_vector<float>();
  s.forward(x);
  CHECK(bn->running_mean.to_vector<float>() != before);
  before = bn->running_mean.to_vector<float>();
  bn->frozen = true;
  s.forward(x);
  CHECK(bn->running_mean.to_vector<float>() == before);
  bn->frozen = false;
  s.eval();
  s.forward(x);
  CHECK(bn->running_mean.to_vector<float>() == before);
}

TEST_CASE("optimizers: hand-computed steps") {
  SUBCASE("SGD with momentum, weight decay and nesterov") {
    Tensor p = Tensor::from_vector<double>({1.0, -2.0}, {2});
    p.requires_grad_(true);
    Sgd opt({p}, {0.1, 0.9, 0.0, 0.01, true});
    // step 1: g' = g + wd p = [0.5+0.01, 0.5-0.02]; buf = g'; update = g' + 0.9 buf = 1.9 g'
    p.set_grad(Tensor::from_vector<double>({0.5, 0.5}, {2}));
    opt.step();
    std::vector<double> v = p.to_vector<double>();
    CHECK(v[0] == doctest::Approx(1.0 - 0.1 * 1.9 * 0.51).epsilon(1e-12));
    CHECK(v[1] == doctest::Approx(-2.0 - 0.1 * 1.9 * 0.48).epsilon(1e-12));
    // step 2 with g = [0, 0]: g' = wd p; buf = 0.9 buf + g'; update = g' + 0.9 buf
    const double p0 = v[0];
    p.set_grad(Tensor::from_vector<double>({0.0, 0.0}, {2}));
    opt.step();
    const double g2 = 0.01 * p0, buf2 = 0.9 * 0.51 + g2;
    CHECK(p.to_vector<double>()[0] == doctest::Approx(p0 - 0.1 * (g2 + 0.9 * buf2)).epsilon(1e-12));
  }
  SUBCASE("AdamW") {
    Tensor p = Tensor::from_vector<double>({1.0}, {1});
    p.requires_grad_(true);
    AdamW opt({p}, {0.01, 0.9, 0.999, 1e-8, 0.1});
    p.set_grad(Tensor::from_vector<double>({0.5}, {1}));
    opt.step();
    // step 1: decay then m_hat = g, v_hat = g^2 -> update lr * g/(|g|+eps)
    double expect = 1.0 * (1 - 0.01 * 0.1) - 0.01 * 0.5 / (0.5 + 1e-8);
    CHECK(p.to_vector<double>()[0] == doctest::Approx(expect).epsilon(1e-12));
    p.set_grad(Tensor::from_vector<double>({-1.0}, {1}));
    opt.step();
    const double m = 0.9 * 0.05 + 0.1 * -1.0, vv = 0.999 * 0.00025 + 0.001 * 1.0;
    const double mh = m / (1 - 0.81), vh = vv / (1 - 0.999 * 0.999);
    expect = expect * (1 - 0.01 * 0.1) - 0.01 * mh / (std::sqrt(vh) + 1e-8);
    CHECK(p.to_vector<double>()[0] == doctest::Approx(expect).epsilon(1e-12));
  }
  SUBCASE("gradient clipping by total norm") {
    Tensor a = Tensor::from_vector<double>({3.0}, {1}), b = Tensor::from_vector<double>({4.0}, {1});
    a.requires_grad_(true);
    b.requires_grad_(true);
    a.set_grad(Tensor::from_vector<double>({3.0}, {1}));
    b.set_grad(Tensor::from_vector<double>({4.0}, {1}));
    CHECK(clip_grad_norm({a, b}, 1.0) == doctest::Approx(5.0));
    CHECK(a.grad().item() == doctest::Approx(3.0 / (5.0 + 1e-6)));
    CHECK(grad_norm({a, b}) == doctest::Approx(5.0 / (5.0 + 1e-6)));
  }
}

TEST_CASE("a small MLP fits a nonlinear problem (two interleaved spirals) to 100% training accuracy") {
  Rng rng(3);
  const int n = 200;
  std::vector<float> xs;
  std::vector<int32_t> ys;
  for (int i = 0; i < n; ++i) {
    const int cls = i % 2;
    const double t = 0.5 + 3.0 * (i / 2) / double(n / 2);
    const double angle = t * 2.2 + cls * M_PI;
    xs.push_back(float(t * std::cos(angle) / 3.5));
    xs.push_back(float(t * std::sin(angle) / 3.5));
    ys.push_back(cls);
  }
  Tensor x = Tensor::from_vector<float>(xs, {n, 2});
  Tensor y = Tensor::from_vector<int32_t>(ys, {n});
  nn::Sequential mlp;
  mlp.add(std::make_shared<nn::Linear>(2, 64, true, rng));
  mlp.add(std::make_shared<nn::ReLU>());
  mlp.add(std::make_shared<nn::Linear>(64, 64, true, rng));
  mlp.add(std::make_shared<nn::ReLU>());
  mlp.add(std::make_shared<nn::Linear>(64, 2, true, rng));
  AdamW opt(mlp.parameters(), {0.01, 0.9, 0.999, 1e-8, 0.0});
  double acc = 0;
  for (int step = 0; step < 1500 && acc < 1.0; ++step) {
    opt.zero_grad();
    Tensor loss = cross_entropy(mlp(x), y);
    loss.backward();
    opt.step();
    if (step % 50 == 49) {
      NoGradGuard ng;
      std::vector<int32_t> pred = argmax(mlp(x), 1).to_vector<int32_t>();
      int correct = 0;
      for (int i = 0; i < n; ++i) correct += pred[size_t(i)] == ys[size_t(i)];
      acc = correct / double(n);
    }
  }
  CHECK(acc == 1.0);
}
