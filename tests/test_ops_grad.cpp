// tests/test_ops_grad.cpp: finite-difference gradient checks (float64) of every differentiable op.
#include <doctest/doctest.h>

#include "engine/ops.h"
#include "engine/ops_internal.h"
#include "tests/gradcheck.h"

using namespace hamu;
using namespace hamu::testing;

namespace {
constexpr double kTol = 1e-6;
using Inputs = std::vector<Tensor>;
}  // namespace

TEST_CASE("grad: broadcasting arithmetic") {
  Tensor a = leaf(random_tensor({3, 4, 5}));
  Tensor b = leaf(random_tensor({4, 1}));
  Tensor c = leaf(random_tensor({5}));
  Tensor pos = leaf(random_tensor({4, 1}, 0.5, 2.0));
  CHECK(gradcheck([](const Inputs& v) { return add(v[0], v[1]); }, {a, b}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return sub(v[0], v[1]); }, {a, c}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return mul(v[0], v[1]); }, {a, b}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return div(v[0], v[1]); }, {a, pos}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return affine(v[0], -1.5, 0.25); }, {a}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return sum_to(v[0], {4, 1}); }, {a}) < kTol);
  // A non-contiguous operand goes through the strided path.
  Tensor m = leaf(random_tensor({5, 4}));
  CHECK(gradcheck([](const Inputs& v) { return mul(v[0].transpose(0, 1), v[1]); }, {m, b}) < kTol);
}

TEST_CASE("grad: unary activations") {
  Tensor x = leaf(random_away_from_zero({4, 7}));
  Tensor p = leaf(random_tensor({4, 7}, 0.2, 3.0));
  CHECK(gradcheck([](const Inputs& v) { return relu(v[0]); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return abs(v[0]); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return gelu(v[0]); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return tanh(v[0]); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return exp(v[0]); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return sigmoid(v[0]); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return square(v[0]); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return neg(v[0]); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return log(v[0]); }, {p}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return sqrt(v[0]); }, {p}) < kTol);
}

TEST_CASE("grad: reductions") {
  Tensor x = leaf(random_tensor({3, 5, 4}));
  CHECK(gradcheck([](const Inputs& v) { return sum(v[0]); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return mean(v[0]); }, {x}) < kTol);
  for (int d = 0; d < 3; ++d) {
    CHECK(gradcheck([d](const Inputs& v) { return sum(v[0], d); }, {x}) < kTol);
    CHECK(gradcheck([d](const Inputs& v) { return mean(v[0], d, true); }, {x}) < kTol);
  }
  Tensor distinct = leaf(random_distinct({3, 5, 4}));
  CHECK(gradcheck([](const Inputs& v) { return max(v[0], 1); }, {distinct}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return max(v[0], -1, true); }, {distinct}) < kTol);
  Tensor y = leaf(random_tensor({3, 5, 4}));
  CHECK(gradcheck([](const Inputs& v) { return dot(v[0], v[1]); }, {x, y}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return sum_squares(v[0]); }, {x}) < kTol);
}

TEST_CASE("grad: shape ops and views") {
  Tensor a = leaf(random_tensor({2, 3, 4}));
  Tensor b = leaf(random_tensor({2, 2, 4}));
  CHECK(gradcheck([](const Inputs& v) { return concat({v[0], v[1]}, 1); }, {a, b}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return permute(v[0], {2, 0, 1}); }, {a}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return v[0].narrow(2, 1, 2).transpose(0, 2).reshape({-1}); }, {a}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return v[0].flatten(1).clone(); }, {a}) < kTol);
  Tensor idx = Tensor::from_vector<int32_t>({1, 0, 1, 1}, {4});
  CHECK(gradcheck([idx](const Inputs& v) { return index_select0(v[0], idx); }, {a}) < kTol);
}

TEST_CASE("grad: matmul and linear") {
  Tensor a = leaf(random_tensor({5, 7})), b = leaf(random_tensor({7, 3}));
  CHECK(gradcheck([](const Inputs& v) { return matmul(v[0], v[1]); }, {a, b}) < kTol);
  Tensor at = leaf(random_tensor({7, 5}));
  CHECK(gradcheck([](const Inputs& v) { return matmul(v[0].transpose(0, 1), v[1]); }, {at, b}) < kTol);
  Tensor ba = leaf(random_tensor({2, 3, 4, 5})), bb = leaf(random_tensor({2, 3, 5, 2}));
  CHECK(gradcheck([](const Inputs& v) { return matmul(v[0], v[1]); }, {ba, bb}) < kTol);
  Tensor x = leaf(random_tensor({6, 5})), w = leaf(random_tensor({4, 5})), bias = leaf(random_tensor({4}));
  CHECK(gradcheck([](const Inputs& v) { return linear(v[0], v[1], v[2]); }, {x, w, bias}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return linear(v[0], v[1], Tensor()); }, {x, w}) < kTol);
  Tensor seq = leaf(random_tensor({2, 3, 5}));
  CHECK(gradcheck([](const Inputs& v) { return linear(v[0], v[1], v[2]); }, {seq, w, bias}) < kTol);
}

TEST_CASE("grad: convolution") {
  struct Case { Shape x, w; Conv2dOptions o; bool bias; };
  std::vector<Case> cases = {
      {{2, 3, 7, 6}, {4, 3, 3, 3}, {1, 1, 1, 1}, true},
      {{2, 2, 9, 8}, {3, 2, 3, 3}, {2, 2, 1, 1}, false},
      {{1, 3, 5, 5}, {2, 3, 1, 1}, {1, 1, 0, 0}, true},
      {{2, 2, 6, 7}, {3, 2, 5, 3}, {1, 2, 2, 1}, true},
  };
  for (const Case& c : cases) {
    Tensor x = leaf(random_tensor(c.x)), w = leaf(random_tensor(c.w)), b = leaf(random_tensor({c.w[0]}));
    const Conv2dOptions o = c.o;
    if (c.bias) CHECK(gradcheck([o](const Inputs& v) { return conv2d(v[0], v[1], v[2], o); }, {x, w, b}) < kTol);
    else CHECK(gradcheck([o](const Inputs& v) { return conv2d(v[0], v[1], Tensor(), o); }, {x, w}) < kTol);
  }
}

TEST_CASE("grad: pooling") {
  Tensor x = leaf(random_distinct({2, 3, 7, 6}));
  CHECK(gradcheck([](const Inputs& v) { return max_pool2d(v[0], {2, 2, 2, 2, 0, 0}); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return max_pool2d(v[0], {3, 3, 2, 2, 1, 1}); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return avg_pool2d(v[0], {2, 2, 2, 2, 0, 0}); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return avg_pool2d(v[0], {3, 2, 1, 2, 1, 1}); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return global_avg_pool2d(v[0]); }, {x}) < kTol);
}

TEST_CASE("grad: normalisation") {
  Tensor x = leaf(random_tensor({4, 3, 3, 5}));
  Tensor g = leaf(random_tensor({3}, 0.5, 1.5)), b = leaf(random_tensor({3}));
  CHECK(gradcheck([](const Inputs& v) { return batch_norm(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5); },
                  {x, g, b}) < 1e-5);
  Tensor rm = random_tensor({3}), rv = random_tensor({3}, 0.5, 2.0);
  CHECK(gradcheck([rm, rv](const Inputs& v) { return batch_norm(v[0], v[1], v[2], rm, rv, false, 0.1, 1e-5); },
                  {x, g, b}) < kTol);
  Tensor flat = leaf(random_tensor({6, 3}));
  CHECK(gradcheck([](const Inputs& v) { return batch_norm(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5); },
                  {flat, g, b}) < 1e-5);
  Tensor y = leaf(random_tensor({2, 3, 6})), lg = leaf(random_tensor({6}, 0.5, 1.5)), lb = leaf(random_tensor({6}));
  CHECK(gradcheck([](const Inputs& v) { return layer_norm(v[0], v[1], v[2], 1e-5); }, {y, lg, lb}) < 1e-5);
}

TEST_CASE("grad: softmax family and losses") {
  Tensor x = leaf(random_tensor({5, 7}, -2, 2));
  CHECK(gradcheck([](const Inputs& v) { return softmax(v[0]); }, {x}) < kTol);
  CHECK(gradcheck([](const Inputs& v) { return log_softmax(v[0]); }, {x}) < kTol);
  Tensor labels = random_labels(5, 7);
  CHECK(gradcheck([labels](const Inputs& v) { return cross_entropy(v[0], labels); }, {x}) < kTol);
  CHECK(gradcheck([labels](const Inputs& v) { return cross_entropy_per_sample(v[0], labels); }, {x}) < kTol);
  Tensor ignored = Tensor::from_vector<int32_t>({1, -100, 3, 6, -100}, {5});
  CHECK(gradcheck([ignored](const Inputs& v) { return cross_entropy(v[0], ignored); }, {x}) < kTol);
  Tensor ref = random_tensor({5, 7}, -2, 2);
  CHECK(gradcheck([ref](const Inputs& v) { return kl_div_per_sample(ref, v[0]); }, {x}) < kTol);
}

TEST_CASE("grad: embedding, attention, dropout") {
  Tensor table = leaf(random_tensor({6, 4}));
  Tensor idx = Tensor::from_vector<int32_t>({0, 5, 2, 2, 5, 1}, {2, 3});
  CHECK(gradcheck([idx](const Inputs& v) { return embedding(idx, v[0]); }, {table}) < kTol);
  Tensor q = leaf(random_tensor({2, 2, 5, 3})), k = leaf(random_tensor({2, 2, 5, 3})), v = leaf(random_tensor({2, 2, 5, 3}));
  CHECK(gradcheck([](const Inputs& in) { return causal_attention(in[0], in[1], in[2]); }, {q, k, v}) < kTol);
  Tensor x = leaf(random_tensor({4, 50}));
  CHECK(gradcheck([](const Inputs& in) { return dropout(in[0], 0.3, true, 1234); }, {x}) < kTol);
}

TEST_CASE("ops: shape errors name the op and both shapes") {
  Tensor a = random_tensor({2, 3}), b = random_tensor({4, 3});
  CHECK_THROWS_WITH_AS(add(a, b), "add: shapes [2, 3] and [4, 3] cannot broadcast", InputError);
  CHECK_THROWS_WITH_AS(matmul(a, b), "matmul: shapes [2, 3] and [4, 3] do not match", InputError);
  CHECK_THROWS_AS(linear(a, random_tensor({5, 4}), Tensor()), InputError);
  CHECK_THROWS_AS(conv2d(random_tensor({1, 2, 5, 5}), random_tensor({3, 4, 3, 3}), Tensor()), InputError);
  CHECK_THROWS_AS(cross_entropy(a, Tensor::from_vector<int32_t>({0, 3}, {2})), InputError);
  CHECK_THROWS_AS(embedding(Tensor::from_vector<int32_t>({7}, {1}), random_tensor({6, 4})), InputError);
  CHECK_THROWS_AS(add(a, random_tensor({2, 3}, -1, 1, DType::f32)), InputError);
}

TEST_CASE("grad: broadcast expansion and dtype conversion") {
  Tensor x = leaf(random_tensor({3, 1}));
  CHECK(gradcheck([](const Inputs& v) { return expand_to(v[0], {2, 3, 4}); }, {x}) < kTol);
  // float64 -> float32 -> float64: the gradient passes through both conversions.
  Tensor y = leaf(random_tensor({4, 3}));
  CHECK(gradcheck([](const Inputs& v) { return mul(v[0].to(DType::f32).to(DType::f64), v[0]); }, {y}, 1e-3) < 1e-5);
}
