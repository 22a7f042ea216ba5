// tests/test_tensor.cpp: tensor storage, views, copies and the autograd tape's bookkeeping.
#include <doctest/doctest.h>

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
