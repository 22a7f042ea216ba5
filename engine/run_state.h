// engine/run_state.h: the state file of a resumable run (`hamu train|unlearn --checkpoint-every N`, `--resume`):
// one safetensors file holding the model's trainable parameters and buffers, optimizer moments, loop
// accumulators and step logs as tensors, counters as I64 scalars, and a JSON document (the run's kind, its
// configuration fingerprint, data positions and the caller's records) in the metadata under "hamu_state".
// Written through save_safetensors (temporary file, fsync, rename), so a kill at any point leaves either the
// previous state or the new one, never a torn file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/json.h"
#include "engine/nn.h"
#include "engine/safetensors.h"

namespace hamu {

struct RunState {
  std::string kind;             // "train", "unlearn", "text-train", ...: a state is resumed only by its own kind
  Checkpoint data;              // tensors (any device when writing; the CPU when read) and I64 counters
  Json meta = Json::object();   // everything else; numbers round-trip exactly (shortest form), NaN does not

  // Writing.
  void put(const std::string& name, const Tensor& t) { data.tensors.push_back({name, t.detach()}); }
  void put_doubles(const std::string& name, const std::vector<double>& v);  // bit-exact, NaN included
  void put_counter(const std::string& name, int64_t v) { data.int64s[name] = v; }
  // Reading: InputError naming the state file and the entry when absent or of the wrong shape/size.
  const Tensor& get(const std::string& name) const;
  std::vector<double> get_doubles(const std::string& name, int64_t expected_count = -1) const;
  int64_t counter(const std::string& name) const;
  const Json& meta_at(const std::string& key) const;
  // Copies the stored tensor into `dst` (same shape and dtype required; dst may live on any device).
  void restore(const std::string& name, Tensor dst) const;
  // The state file as InputError prefixes name it.
  const std::string& path() const { return data.path; }
};

// Atomic write (see above). metadata: {"format": "hamu-run-state-1", "kind": ..., "hamu_state": meta}.
void save_run_state(const std::string& path, const RunState& state);
// Reads and validates a state file written by save_run_state for `kind`; every problem (missing, truncated,
// corrupt, another kind) is one InputError naming the file.
RunState load_run_state(const std::string& path, const std::string& kind);

// A module's trainable parameters and buffers as "<prefix><name>" tensors, BatchNorm counters as
// "<prefix><path>.num_batches_tracked" and each Dropout's mask stream position as "<prefix><path>.dropout_calls"
// I64 entries; frozen weights are left out (they never change in a run).
void put_module_state(RunState& state, nn::Module& model, const std::string& prefix);
// Restores what put_module_state wrote (every entry must be there with the module's shapes).
void restore_module_state(const RunState& state, nn::Module& model, const std::string& prefix);

}  // namespace hamu
