// tests/test_ops_errors.cpp: shape and dtype errors of the engine ops name the op and the shapes. (Every
// op's gradient, forward and backend checks are table-driven: tests/backend_ops_table.cpp.)
#include <doctest/doctest.h>

#include "engine/ops.h"
#include "tests/gradcheck.h"

using namespace hamu;
using namespace hamu::testing;

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
