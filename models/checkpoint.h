// models/checkpoint.h: saving and loading whole models (parameters, buffers, architecture, facts).
#pragma once
#include <map>
#include <memory>
#include <string>

#include "engine/nn.h"
#include "models/models.h"

namespace hamu::models {

struct LoadedModel {
  std::shared_ptr<nn::Module> model;
  ModelSpec spec;
  std::map<std::string, std::string> metadata;
  std::string path;
  const std::string& meta(const std::string& key) const;  // InputError naming the file when absent
  std::string meta_or(const std::string& key, const std::string& fallback) const;
};

// Writes every parameter and buffer under its dotted name, the architecture (ModelSpec) and `facts`
// into the safetensors metadata. Atomic: a failure never leaves a partial file or loses an old one.
void save_model(const std::string& path, nn::Module& model, const ModelSpec& spec,
                const std::map<std::string, std::string>& facts);

// Rebuilds the architecture from the metadata and loads every tensor (InputError naming the file and
// the tensor on a missing tensor, an unexpected one, or a shape mismatch), then moves it to `device`.
LoadedModel load_model(const std::string& path, Device device = {});

}  // namespace hamu::models
