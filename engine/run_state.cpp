// engine/run_state.cpp: writing and reading the state files of resumable runs.
#include "engine/run_state.h"

#include <filesystem>

namespace hamu {
namespace {

constexpr const char* kFormat = "hamu-run-state-1";

// The module state that is no tensor: BatchNorm's num_batches_tracked and each Dropout's mask stream
// position (its call count), as I64 counters under the module's path.
struct Counters {
  std::vector<std::pair<std::string, nn::BatchNorm2d*>> batch_norms;
  std::vector<std::pair<std::string, nn::Dropout*>> dropouts;
};

void find_counters(nn::Module& m, const std::string& prefix, Counters& out) {
  if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(&m)) out.batch_norms.emplace_back(prefix + "num_batches_tracked", bn);
  if (auto* d = dynamic_cast<nn::Dropout*>(&m)) out.dropouts.emplace_back(prefix + "dropout_calls", d);
  for (auto& [name, child] : m.children()) find_counters(*child, prefix + name + ".", out);
}

}  // namespace

void RunState::put_doubles(const std::string& name, const std::vector<double>& v) {
  put(name, Tensor::from_vector(v, {int64_t(v.size())}));
}

const Tensor& RunState::get(const std::string& name) const {
  const Tensor* t = data.find(name);
  if (!t) throw InputError(path() + ": not a complete " + kind + " state: no tensor '" + name + "'");
  return *t;
}

std::vector<double> RunState::get_doubles(const std::string& name, int64_t expected_count) const {
  const Tensor& t = get(name);
  if (t.dtype() != DType::f64 || t.dim() != 1 || (expected_count >= 0 && t.numel() != expected_count))
    throw InputError(path() + ": state tensor '" + name + "' is " + dtype_name(t.dtype()) + " " + shape_str(t.shape()) +
                     (expected_count >= 0 ? ", expected F64 [" + std::to_string(expected_count) + "]" : ", expected F64 [n]"));
  return t.to_vector<double>();
}

int64_t RunState::counter(const std::string& name) const {
  auto it = data.int64s.find(name);
  if (it == data.int64s.end()) throw InputError(path() + ": not a complete " + kind + " state: no counter '" + name + "'");
  return it->second;
}

const Json& RunState::meta_at(const std::string& key) const {
  const Json* j = meta.is_object() ? meta.find(key) : nullptr;
  if (!j) throw InputError(path() + ": not a complete " + kind + " state: no '" + key + "' in its metadata");
  return *j;
}

void RunState::restore(const std::string& name, Tensor dst) const {
  const Tensor& src = get(name);
  if (src.shape() != dst.shape() || src.dtype() != dst.dtype())
    throw InputError(path() + ": state tensor '" + name + "' is " + dtype_name(src.dtype()) + " " + shape_str(src.shape()) +
                     ", this run needs " + dtype_name(dst.dtype()) + " " + shape_str(dst.shape()));
  dst.copy_(src);
}

void save_run_state(const std::string& path, const RunState& state) {
  std::map<std::string, std::string> metadata = state.data.metadata;
  metadata["format"] = kFormat;
  metadata["kind"] = state.kind;
  metadata["hamu_state"] = state.meta.dump();
  save_safetensors(path, state.data.tensors, metadata, state.data.int64s);
}

RunState load_run_state(const std::string& path, const std::string& kind) {
  if (!std::filesystem::exists(path))
    throw InputError("--resume: no state file " + path + " (a run writes it with --checkpoint-every N)");
  RunState s;
  s.kind = kind;
  s.data = load_safetensors(path);
  auto meta = [&](const char* key) -> const std::string& {
    auto it = s.data.metadata.find(key);
    if (it == s.data.metadata.end()) throw InputError(path + ": not a hamu run state (no '" + std::string(key) + "' in its metadata)");
    return it->second;
  };
  if (meta("format") != kFormat) throw InputError(path + ": not a hamu run state (format '" + meta("format") + "')");
  if (meta("kind") != kind)
    throw InputError(path + ": the state of a '" + meta("kind") + "' run cannot resume a '" + kind + "' run");
  JsonParseOptions po;
  po.source = path + ": state metadata";
  s.meta = Json::parse(meta("hamu_state"), po);
  if (!s.meta.is_object()) throw InputError(path + ": state metadata is not a JSON object");
  return s;
}

void put_module_state(RunState& state, nn::Module& model, const std::string& prefix) {
  for (auto& [name, t] : model.named_parameters()) state.put(prefix + name, t);
  for (auto& [name, t] : model.named_buffers()) state.put(prefix + name, t);
  Counters c;
  find_counters(model, prefix, c);
  for (auto& [name, bn] : c.batch_norms) state.put_counter(name, bn->num_batches_tracked);
  for (auto& [name, d] : c.dropouts) state.put_counter(name, int64_t(d->calls()));
}

void restore_module_state(const RunState& state, nn::Module& model, const std::string& prefix) {
  NoGradGuard ng;
  for (auto& [name, t] : model.named_parameters()) state.restore(prefix + name, t);
  for (auto& [name, t] : model.named_buffers()) state.restore(prefix + name, t);
  Counters c;
  find_counters(model, prefix, c);
  auto count = [&](const std::string& name) {
    const int64_t n = state.counter(name);
    if (n < 0) throw InputError(state.path() + ": '" + name + "' is negative");
    return n;
  };
  for (auto& [name, bn] : c.batch_norms) bn->num_batches_tracked = count(name);
  for (auto& [name, d] : c.dropouts) d->set_calls(uint64_t(count(name)));
}

}  // namespace hamu
