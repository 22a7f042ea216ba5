// tests/test_bn_counter.cpp: BatchNorm's num_batches_tracked in checkpoints (I64 0-dim entries, as PyTorch's
// state_dict has them): counted in training, saved, loaded, absent in old checkpoints, bad entries refused.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "engine/error.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"

using namespace hamu;

TEST_CASE("BatchNorm num_batches_tracked: counted, saved as I64, loaded; old checkpoints load with 0") {
  const std::string dir = "/tmp/hamu_bn_counter_" + std::to_string(getpid());
  const std::string path = dir + ".safetensors", old = dir + ".old.safetensors";
  models::ModelSpec spec;
  spec.arch = "cnn", spec.height = spec.width = 8, spec.num_classes = 3;
  Rng rng(7);
  auto model = models::build_model(spec, rng);
  model->train();
  Tensor x = Tensor::empty({2, 1, 8, 8});
  rng.fill_uniform(x, -1, 1);
  for (int i = 0; i < 3; ++i) (*model)(x);
  model->eval();
  (*model)(x);  // evaluation does not count
  models::save_model(path, *model, spec, {});
  Checkpoint ck = load_safetensors(path);
  REQUIRE(ck.int64s.size() == 2);
  CHECK(ck.int64s.at("bn1.num_batches_tracked") == 3);
  CHECK(ck.int64s.at("bn2.num_batches_tracked") == 3);
  models::LoadedModel back = models::load_model(path);
  int64_t found = 0;
  for (auto& [name, child] : back.model->children())
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(child.get())) found += bn->num_batches_tracked;
  CHECK(found == 6);

  // A checkpoint written before the counters were stored: loads, counters 0.
  save_safetensors(old, ck.tensors, ck.metadata);
  models::LoadedModel legacy = models::load_model(old);
  for (auto& [name, child] : legacy.model->children())
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(child.get())) CHECK(bn->num_batches_tracked == 0);

  // A counter for a layer the model does not have is refused, naming it.
  save_safetensors(old, ck.tensors, ck.metadata, {{"bn9.num_batches_tracked", 1}});
  CHECK_THROWS_WITH_AS(models::load_model(old), doctest::Contains("bn9.num_batches_tracked"), InputError);
  std::remove(path.c_str());
  std::remove(old.c_str());
}

TEST_CASE("safetensors I64: 0-dim values round-trip bit-exactly; other I64 shapes are refused") {
  const std::string path = "/tmp/hamu_i64_" + std::to_string(getpid()) + ".safetensors";
  Tensor t = Tensor::full({3}, 1.5);
  save_safetensors(path, {{"w", t}}, {}, {{"a", -5}, {"b", int64_t(1) << 40}});
  Checkpoint ck = load_safetensors(path);
  CHECK(ck.int64s.at("a") == -5);
  CHECK(ck.int64s.at("b") == (int64_t(1) << 40));
  REQUIRE(ck.tensors.size() == 1);
  CHECK(ck.tensors[0].tensor.data<float>()[2] == 1.5f);
  // Hand-made header: an I64 vector of two values.
  const std::string header = R"({"v":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char(header.size() >> (8 * i));
  bytes += header + std::string(16, '\0');
  std::FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  CHECK_THROWS_WITH_AS(load_safetensors(path), doctest::Contains("only single-value I64"), InputError);
  std::remove(path.c_str());
}
