// tests/test_models.cpp: model shapes, parameter counts and names (ResNet-20 as in HAMU.md §9).
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>

#include "models/checkpoint.h"
#include "models/models.h"
#include "tests/gradcheck.h"

using namespace hamu;
using namespace hamu::models;

TEST_CASE("resnet20 on CIFAR shapes has exactly 272,474 parameters in 65 tensors") {
  Rng rng(0);
  ModelSpec spec{"resnet20", 3, 32, 32, 10};
  auto m = build_model(spec, rng);
  auto params = m->named_parameters();
  CHECK(params.size() == 65);
  CHECK(m->num_parameters() == 272474);
  CHECK(params.front().first == "conv1.weight");
  CHECK(params.back().first == "fc.bias");
  bool has_shortcut = false;
  for (auto& [name, t] : params) has_shortcut = has_shortcut || name == "layer2.0.shortcut.0.weight";
  CHECK(has_shortcut);
  Tensor x = testing::random_tensor({2, 3, 32, 32}, -1, 1, DType::f32);
  CHECK(m->forward(x).shape() == Shape{2, 10});
  // Kaiming normal fan-out: the stem's weight std is close to sqrt(2 / (16 * 9)).
  std::vector<float> w = params.front().second.to_vector<float>();
  double ss = 0;
  for (float v : w) ss += double(v) * v;
  CHECK(std::sqrt(ss / w.size()) == doctest::Approx(std::sqrt(2.0 / 144.0)).epsilon(0.2));
}

TEST_CASE("mlp and cnn follow the data's shape") {
  Rng rng(0);
  for (const char* arch : {"mlp", "cnn", "resnet20"}) {
    ModelSpec spec{arch, 1, 28, 28, 10};
    auto m = build_model(spec, rng);
    Tensor x = testing::random_tensor({3, 1, 28, 28}, -1, 1, DType::f32);
    CHECK(m->forward(x).shape() == Shape{3, 10});
  }
  CHECK_THROWS_AS(build_model({"vgg", 1, 28, 28, 10}, rng), InputError);
  auto meta = ModelSpec{"cnn", 1, 28, 28, 10}.to_metadata();
  CHECK(ModelSpec::from_metadata(meta, "x").describe() == "cnn (1x28x28 -> 10)");
  meta["height"] = "-3";
  CHECK_THROWS_AS(ModelSpec::from_metadata(meta, "x"), InputError);
}

TEST_CASE("checkpoints: round trip, and a checkpoint that does not match its architecture is refused") {
  char tmpl[] = "/tmp/hamu-ckpt-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  Rng rng(5);
  ModelSpec spec{"cnn", 1, 28, 28, 10};
  auto m = build_model(spec, rng);
  const std::string path = dir + "/cnn.safetensors";
  save_model(path, *m, spec, {{"data", "fashion-mnist"}});
  LoadedModel back = load_model(path);
  CHECK(back.spec.describe() == spec.describe());
  CHECK(back.meta("data") == "fashion-mnist");
  auto a = m->named_parameters(), b = back.model->named_parameters();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i].second.to_vector<float>() == b[i].second.to_vector<float>());
  // The same tensors labelled as another architecture: missing tensors, named.
  save_model(dir + "/wrong.safetensors", *m, ModelSpec{"mlp", 1, 28, 28, 10}, {});
  CHECK_THROWS_WITH_AS(load_model(dir + "/wrong.safetensors"), doctest::Contains("is missing"), InputError);
  // Right architecture, other input size: a shape mismatch naming the tensor.
  save_model(dir + "/shape.safetensors", *m, ModelSpec{"cnn", 1, 32, 32, 10}, {});
  CHECK_THROWS_WITH_AS(load_model(dir + "/shape.safetensors"), doctest::Contains("fc1.weight"), InputError);
  std::filesystem::remove_all(dir);
}
