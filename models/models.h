// models/models.h: the model zoo (mlp, cnn, resnet20) and how a model is described in checkpoints.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/nn.h"
#include "engine/rng.h"

namespace hamu::models {

// Everything needed to rebuild a model's architecture (stored in checkpoint metadata).
struct ModelSpec {
  std::string arch;          // mlp | cnn | resnet20
  int64_t in_channels = 1, height = 28, width = 28, num_classes = 10;
  std::map<std::string, std::string> to_metadata() const;
  static ModelSpec from_metadata(const std::map<std::string, std::string>& meta, const std::string& source);
  std::string describe() const;  // "cnn (1x28x28 -> 10)"
};

const std::vector<std::string>& model_names();
// How many values (parameters and buffers) build_model(spec) holds, computed from the spec alone so a
// checkpoint's metadata can be checked against its tensors before anything is built. InputError when
// the count does not fit an int64 (absurd metadata).
int64_t model_value_count(const ModelSpec& spec);
// Builds a freshly initialised model; InputError for an unknown architecture or a misfitting input.
std::shared_ptr<nn::Module> build_model(const ModelSpec& spec, Rng& rng);

// Sets every BatchNorm in the tree to frozen (running statistics, no updates) or back.
void set_batchnorm_frozen(nn::Module& model, bool frozen);
// True when the model has BatchNorm layers.
bool has_batchnorm(nn::Module& model);

}  // namespace hamu::models
