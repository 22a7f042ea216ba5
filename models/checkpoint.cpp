// models/checkpoint.cpp: model <-> safetensors with the architecture in the metadata.
#include "models/checkpoint.h"

#include <set>

#include "engine/error.h"

#include "engine/safetensors.h"

namespace hamu::models {
namespace {

// Every BatchNorm's counter under PyTorch's state_dict name "<path>.num_batches_tracked".
void batch_norms(nn::Module& m, const std::string& prefix, std::vector<std::pair<std::string, nn::BatchNorm2d*>>& out) {
  if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(&m)) out.emplace_back(prefix + "num_batches_tracked", bn);
  for (auto& [name, child] : m.children()) batch_norms(*child, prefix + name + ".", out);
}

}  // namespace

const std::string& LoadedModel::meta(const std::string& key) const {
  auto it = metadata.find(key);
  if (it == metadata.end()) throw InputError(path + ": checkpoint metadata has no '" + key + "'");
  return it->second;
}

std::string LoadedModel::meta_or(const std::string& key, const std::string& fallback) const {
  auto it = metadata.find(key);
  return it == metadata.end() ? fallback : it->second;
}

void save_model(const std::string& path, nn::Module& model, const ModelSpec& spec,
                const std::map<std::string, std::string>& facts) {
  std::vector<NamedTensor> tensors;
  for (auto& [name, t] : model.named_weights()) tensors.push_back({name, t.detach()});  // frozen ones too
  for (auto& [name, t] : model.named_buffers()) tensors.push_back({name, t.detach()});
  std::map<std::string, std::string> meta = facts;
  for (auto& [k, v] : spec.to_metadata()) meta[k] = v;
  meta["format"] = "hamu-model-1";
  std::vector<std::pair<std::string, nn::BatchNorm2d*>> bns;
  batch_norms(model, "", bns);
  std::map<std::string, int64_t> counters;
  for (auto& [name, bn] : bns) counters[name] = bn->num_batches_tracked;
  save_safetensors(path, tensors, meta, counters);
}

LoadedModel load_model(const std::string& path, Device device) {
  Checkpoint ck = load_safetensors(path);
  LoadedModel out;
  out.path = path;
  out.metadata = ck.metadata;
  out.spec = ModelSpec::from_metadata(ck.metadata, path);
  // Before anything is built: the metadata's architecture must not describe more than the file can
  // back, so a small file cannot make us build (and randomly initialise) a huge model. A model within
  // twice the file's values (plus 1M) is built so that a mismatch gets the message below naming the
  // tensor; memory stays a small multiple of the file size either way.
  int64_t have = 0;
  for (const NamedTensor& nt : ck.tensors) have += nt.tensor.numel();  // bounded by the file size
  const int64_t want = model_value_count(out.spec);
  if (want > 2 * have + (int64_t(1) << 20))
    throw InputError(path + ": its metadata describes " + out.spec.describe() + " with " + std::to_string(want) +
                     " values, but its " + std::to_string(ck.tensors.size()) + " tensors hold only " +
                     std::to_string(have));
  require_finite(ck);
  Rng rng(0);
  out.model = build_model(out.spec, rng);
  std::set<std::string> expected;
  auto fill = [&](const nn::Named& named) {
    for (auto& [name, t] : named) {
      expected.insert(name);
      const Tensor* src = ck.find(name);
      if (!src) throw InputError(path + ": tensor '" + name + "' of " + out.spec.describe() + " is missing");
      if (src->shape() != t.shape())
        throw InputError(path + ": tensor '" + name + "' has shape " + shape_str(src->shape()) + ", " +
                         out.spec.describe() + " needs " + shape_str(t.shape()));
      Tensor dst = t;
      dst.copy_(*src);
    }
  };
  fill(out.model->named_parameters());
  fill(out.model->named_buffers());
  for (const NamedTensor& nt : ck.tensors)
    if (!expected.count(nt.name))
      throw InputError(path + ": unexpected tensor '" + nt.name + "' for " + out.spec.describe());
  // BatchNorm counters: absent in checkpoints written before they were stored (then 0).
  std::vector<std::pair<std::string, nn::BatchNorm2d*>> bns;
  batch_norms(*out.model, "", bns);
  std::map<std::string, int64_t> counters = ck.int64s;
  for (auto& [name, bn] : bns)
    if (auto it = counters.find(name); it != counters.end()) {
      if (it->second < 0) throw InputError(path + ": '" + name + "' is negative (" + std::to_string(it->second) + ")");
      bn->num_batches_tracked = it->second;
      counters.erase(it);
    }
  if (!counters.empty())
    throw InputError(path + ": unexpected I64 entry '" + counters.begin()->first + "' for " + out.spec.describe());
  out.model->to(device);
  return out;
}

}  // namespace hamu::models
