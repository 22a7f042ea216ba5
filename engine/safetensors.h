// engine/safetensors.h: checkpoints in the safetensors format (loadable by safetensors.torch.load_file).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hamu {

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

struct Checkpoint {
  std::vector<NamedTensor> tensors;  // in header order, all on the CPU
  std::map<std::string, int64_t> int64s;  // single-value I64 entries (counters such as num_batches_tracked)
  std::map<std::string, std::string> metadata;
  std::string path;

  bool has(const std::string& name) const { return find(name) != nullptr; }
  const Tensor* find(const std::string& name) const;  // nullptr when absent
  // Throws InputError naming the file and the tensor when absent.
  const Tensor& get(const std::string& name) const;
  // The metadata value, or InputError naming the file and the key when absent.
  const std::string& meta(const std::string& key) const;
};

// Tensors may live on any device and be strided; they are copied to the host as needed. Supported
// dtypes: f32, f64, i32, u8 (safetensors F32, F64, I32, U8); `int64s` are written as I64 0-dim
// entries (PyTorch's num_batches_tracked). The file is written to
// `path + ".tmp.<pid>"`, fsynced and renamed over `path`, so an existing checkpoint survives any
// failure. Tensor data is laid out widest dtype first so every tensor is aligned to its element size.
void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      const std::map<std::string, int64_t>& int64s = {});

// Validates the whole header (sizes, dtypes, shapes, offsets: contiguous, non-overlapping, covering
// the data buffer exactly, as the reference implementation demands) before allocating any tensor;
// every problem is one InputError naming the file.
Checkpoint load_safetensors(const std::string& path);

// InputError naming the file and the first floating-point tensor that holds NaN or +-Inf (how many,
// and where the first is): a model with non-finite weights evaluates to plausible-looking numbers
// (or to NaN) rather than failing, so loading refuses it.
void require_finite(const Checkpoint& ck);

// Header lengths above this are rejected unread (the reference implementation's limit).
constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;
// JSON values allowed in a header: ~300k tensors of rank 4, far beyond real checkpoints, while a
// hostile header of tiny values (`[0,0,0,...]`) cannot make the parser allocate gigabytes.
constexpr size_t kSafetensorsMaxHeaderValues = 3'000'000;

}  // namespace hamu
