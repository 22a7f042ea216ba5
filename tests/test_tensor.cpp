// tests/test_tensor.cpp: tensor storage, views, copies and the autograd tape's bookkeeping.
#include <doctest/doctest.h>

#include <algorithm>

#include "engine/ops.h"
#include "engine/tensor.h"

using namespace hamu;

TEST_CASE("tensor factories, views and copies") {
  Tensor t = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(t.numel() == 6);
  CHECK(t.is_contiguous());
  Tensor tt = t.transpose(0, 1);
  CHECK(tt.shape() == Shape{3, 2});
  CHECK_FALSE(tt.is_contiguous());
  CHECK(tt.contiguous().to_vector<float>() == std::vector<float>{1, 4, 2, 5, 3, 6});
  CHECK(t.reshape({3, -1}).shape() == Shape{3, 2});
  CHECK(t.narrow(1, 1, 2).contiguous().to_vector<float>() == std::vector<float>{2, 3, 5, 6});
  CHECK(t.to(DType::f64).to_vector<double>()[5] == 6.0);
  CHECK_THROWS_AS(t.reshape({4, -1}), InputError);
  CHECK_THROWS_AS(t.narrow(1, 2, 2), InputError);
}

TEST_CASE("autograd: view gradients flow back to the leaf") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  x.requires_grad_();
  Tensor y = x.narrow(1, 1, 2).transpose(0, 1).contiguous().reshape({4});
  Tensor g = Tensor::from_vector<double>({10, 20, 30, 40}, {4});
  y.backward(g);
  // y = [x01, x11, x02, x12]
  CHECK(x.grad().to_vector<double>() == std::vector<double>{0, 10, 30, 0, 20, 40});
  CHECK_THROWS_AS(y.backward(g), Error);
}

TEST_CASE("device parsing") {
  CHECK(Device::parse("cpu") == Device{});
  CHECK_THROWS_AS(Device::parse("gpu"), InputError);
#ifndef HAMU_CUDA
  CHECK_THROWS_AS(Device::parse("cuda"), InputError);
#endif
}

TEST_CASE("autograd: GradReadyScope reports each watched leaf once, right after its last gradient") {
  // loss = sum(a * b) + sum(b * c) + sum(e): a is final after the first product's backward, b only after
  // both products', c after the second; e is not watched; d is watched but unused (never reported).
  Tensor a = Tensor::from_vector<double>({1, 2}, {2}), b = Tensor::from_vector<double>({3, -1}, {2});
  Tensor c = Tensor::from_vector<double>({0.5, 4}, {2}), d = Tensor::from_vector<double>({7}, {1});
  Tensor e = Tensor::from_vector<double>({2}, {1});
  for (Tensor* t : {&a, &b, &c, &d, &e}) t->requires_grad_();
  Tensor loss = add(add(sum(mul(a, b)), sum(mul(b, c))), sum(e));
  std::vector<size_t> order;
  std::vector<std::vector<double>> at_report;
  std::vector<Tensor> watched{a, b, c, d};
  {
    GradReadyScope scope(watched, [&](size_t i) {
      order.push_back(i);
      at_report.push_back(watched[i].grad().to_vector<double>());
    });
    loss.backward();
  }
  REQUIRE(order.size() == 3);
  CHECK(std::count(order.begin(), order.end(), size_t(3)) == 0);
  for (size_t k = 0; k < order.size(); ++k)  // what was reported is the final gradient
    CHECK(at_report[k] == watched[order[k]].grad().to_vector<double>());
  CHECK(b.grad().to_vector<double>() == std::vector<double>{1 + 0.5, 2 + 4});
  std::sort(order.begin(), order.end());
  CHECK(order == std::vector<size_t>{0, 1, 2});
  // Outside a scope nothing is reported; a leaf's own backward reports it.
  Tensor f = Tensor::from_vector<double>({1}, {1});
  f.requires_grad_();
  int reported = 0;
  {
    GradReadyScope scope({f}, [&](size_t) { ++reported; });
    f.backward(Tensor::from_vector<double>({1}, {1}));
  }
  CHECK(reported == 1);
}
