// models/lm/hf_dir.cpp: Hugging Face model directories: config.json plus model.safetensors or the shards of
// model.safetensors.index.json, memory-mapped and converted to float32; saved back in the same layout.
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "engine/json.h"
#include "engine/safetensors.h"
#include "engine/safetensors_mapped.h"
#include "models/lm/lm.h"
#include "models/lm/lora.h"

namespace hamu::models {
namespace {

namespace fs = std::filesystem;

constexpr const char* kConfig = "config.json";
constexpr const char* kWeights = "model.safetensors";
constexpr const char* kIndex = "model.safetensors.index.json";

std::string join(const std::string& dir, const std::string& file) { return (fs::path(dir) / file).string(); }

// Buffers some published checkpoints carry that are not parameters: skipped on load.
bool known_buffer(const std::string& name) {
  return name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || name.ends_with("rotary_emb.inv_freq");
}

// Where every tensor of a directory lives: the opened files and, per name, the file that holds it.
struct WeightSet {
  std::vector<std::unique_ptr<MappedSafetensors>> files;
  std::map<std::string, std::pair<const MappedSafetensors*, const MappedTensorInfo*>> where;
};

WeightSet open_single(const std::string& path) {
  WeightSet w;
  w.files.push_back(std::make_unique<MappedSafetensors>(path));
  for (const MappedTensorInfo& t : w.files.back()->tensors()) w.where[t.name] = {w.files.back().get(), &t};
  return w;
}

WeightSet open_sharded(const std::string& dir, const std::string& index_path) {
  const Json index = load_json(index_path);
  const Json* map = index.is_object() ? index.find("weight_map") : nullptr;
  if (!map || !map->is_object() || map->size() == 0)
    throw InputError(index_path + ": no \"weight_map\" object naming tensors and their shard files");
  WeightSet w;
  std::map<std::string, const MappedSafetensors*> by_file;
  for (const auto [name, file] : map->members()) {
    if (!file.is_string() || file.as_string().empty() || file.as_string().find('/') != std::string::npos ||
        file.as_string() == "." || file.as_string() == "..")
      throw InputError(index_path + ": weight_map entry '" + name + "' = " + file.dump() + " is not a file name in " + dir);
    const std::string& shard = file.as_string();
    auto it = by_file.find(shard);
    if (it == by_file.end()) {
      const std::string path = join(dir, shard);
      if (!fs::exists(path))
        throw InputError(index_path + ": weight_map names shard '" + shard + "' (for tensor '" + name + "'), which does not exist");
      w.files.push_back(std::make_unique<MappedSafetensors>(path));
      it = by_file.emplace(shard, w.files.back().get()).first;
    }
    const MappedTensorInfo* info = it->second->find(name);
    if (!info)
      throw InputError(index_path + ": weight_map puts tensor '" + name + "' in " + it->second->path() +
                       ", which does not hold it");
    w.where[name] = {it->second, info};
  }
  // A shard tensor the index does not list would be silently ignored by transformers' loader too, but it
  // means the index and the shards disagree: say so.
  for (const auto& f : w.files)
    for (const MappedTensorInfo& t : f->tensors())
      if (!map->contains(t.name))
        throw InputError(f->path() + ": tensor '" + t.name + "' is not listed in " + index_path);
  return w;
}

// A stored lm_head.weight beside a tied embedding must be that embedding, value for value.
void check_tied_head(CausalLM& model, const LmConfig& cfg, const MappedSafetensors* file, const MappedTensorInfo& info) {
  const std::string embed = cfg.family == LmFamily::gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight";
  Tensor want;
  for (auto& [name, p] : model.named_weights())
    if (name == embed) want = p.detach().contiguous();
  if (!want.defined()) return;
  const std::string why = file->path() + ": tensor 'lm_head.weight' differs from '" + embed +
                          "' although config.json sets tie_word_embeddings (";
  if (info.shape != want.shape())
    throw InputError(why + "shape " + shape_str(info.shape) + " vs " + shape_str(want.shape()) + "): set it to false or drop one");
  const Tensor head = file->read(info, DType::f32);
  const float *a = head.data<float>(), *b = want.data<float>();
  for (int64_t i = 0; i < head.numel(); ++i)
    if (!(a[i] == b[i]))
      throw InputError(why + "element " + std::to_string(i) + "): transformers versions disagree on which one to use; "
                       "set tie_word_embeddings to false or drop lm_head.weight");
}

}  // namespace

bool is_hf_dir(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::is_regular_file(join(path, kConfig), ec);
}

LmConfig load_hf_config(const std::string& dir) {
  const std::string path = join(dir, kConfig);
  if (!fs::is_regular_file(path)) throw InputError(dir + ": no " + std::string(kConfig) + " (not a Hugging Face model directory)");
  return LmConfig::from_hf_json(load_json(path), path);
}

LoadedLm load_hf_dir(const std::string& dir, Device device) {
  LmConfig cfg = load_hf_config(dir);
  const std::string index_path = join(dir, kIndex), single_path = join(dir, kWeights);
  WeightSet weights;
  if (fs::exists(index_path)) weights = open_sharded(dir, index_path);
  else if (fs::exists(single_path)) weights = open_single(single_path);
  else
    throw InputError(dir + ": neither " + std::string(kWeights) + " nor " + kIndex +
                     " (only safetensors weights are read; convert pytorch_model.bin first)");
  const std::string weights_name = fs::exists(index_path) ? index_path : single_path;

  Rng rng(0);
  LoadedLm out;
  out.path = dir;
  out.model = build_lm(cfg, rng);
  std::set<std::string> used;
  for (auto& [name, param] : out.model->named_parameters()) {
    std::string key = name;
    // Some GPT-2 files were saved from GPT2Model and lack the "transformer." prefix.
    if (!weights.where.count(key) && cfg.family == LmFamily::gpt2 && key.rfind("transformer.", 0) == 0 &&
        weights.where.count(key.substr(12)))
      key = key.substr(12);
    auto it = weights.where.find(key);
    if (it == weights.where.end())
      throw InputError(weights_name + ": tensor '" + name + "' of " + cfg.describe() + " is missing");
    const auto [file, info] = it->second;
    const bool transposed = out.model->hf_transposed(name);
    const Shape want = transposed ? Shape{param.shape()[1], param.shape()[0]} : param.shape();
    if (info->shape != want)
      throw InputError(file->path() + ": tensor '" + key + "' has shape " + shape_str(info->shape) + ", " + cfg.describe() +
                       " needs " + shape_str(want));
    Tensor value = file->read(*info, DType::f32);
    if (transposed) value = value.transpose(0, 1).contiguous();
    Tensor dst = param;
    dst.copy_(value);
    used.insert(key);
  }
  for (const auto& [key, loc] : weights.where) {
    if (used.count(key) || known_buffer(key)) continue;
    // A tied checkpoint that also stores lm_head.weight (some do): the copy of the embedding is redundant. A
    // different head is refused: transformers 4 replaces it by the embedding, transformers 5 keeps it untied.
    if (key == "lm_head.weight" && cfg.tie_word_embeddings) {
      check_tied_head(*out.model, cfg, loc.first, *loc.second);
      continue;
    }
    throw InputError(loc.first->path() + ": unexpected tensor '" + key + "' for " + cfg.describe());
  }
  out.model->to(device);
  return out;
}

void save_hf_dir(const std::string& dir, CausalLM& model) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw InputError(dir + ": cannot create the output directory" + (ec ? ": " + ec.message() : ""));
  // Writing model.safetensors next to an index would leave the index (which loaders prefer) pointing at
  // the old shards.
  if (fs::exists(join(dir, kIndex)))
    throw InputError(dir + ": holds a sharded checkpoint (" + std::string(kIndex) + "); save to a new directory");
  if (has_lora(model))
    throw InputError(dir + ": the model carries LoRA adapters; merge them first (merge_lora) or save them with save_lora");
  std::vector<NamedTensor> tensors;
  for (auto& [name, t] : model.named_weights()) {  // frozen (LoRA base) weights too
    Tensor host = t.detach().to(Device{});
    if (host.dtype() != DType::f32) host = host.to(DType::f32);
    tensors.push_back({name, model.hf_transposed(name) ? host.transpose(0, 1).contiguous() : host});
  }
  save_safetensors(join(dir, kWeights), tensors, {{"format", "pt"}});
  save_json(join(dir, kConfig), model.config().to_hf_json());
}

AnyModel load_any(const std::string& path, Device device) {
  AnyModel m;
  if (is_hf_dir(path)) {
    m.lm = load_hf_dir(path, device).model;
    m.module = m.lm;
  } else {
    m.checkpoint = std::make_shared<LoadedModel>(load_model(path, device));
    m.module = m.checkpoint->model;
  }
  return m;
}

}  // namespace hamu::models
