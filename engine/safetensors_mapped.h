// engine/safetensors_mapped.h: safetensors files memory-mapped read-only (model weights of any size, with
// the half-precision dtypes Hugging Face checkpoints use), converted tensor by tensor on demand.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/safetensors_header.h"
#include "engine/tensor.h"

namespace hamu {

using MappedTensorInfo = SafetensorsEntry;

// Opening validates the whole header (sizes, dtypes, shapes, offsets tiling the data buffer exactly, as
// load_safetensors does) before anything is read; every problem is one InputError naming the file (and
// the tensor). The mapping lives as long as the object; nothing is copied until read_into.
class MappedSafetensors {
 public:
  explicit MappedSafetensors(const std::string& path);
  ~MappedSafetensors();
  MappedSafetensors(const MappedSafetensors&) = delete;
  MappedSafetensors& operator=(const MappedSafetensors&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<MappedTensorInfo>& tensors() const { return tensors_; }
  const MappedTensorInfo* find(const std::string& name) const;  // nullptr when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A new CPU tensor of `dtype` (f32 or f64) holding tensor `info` converted from F64/F32/F16/BF16;
  // other dtypes are an InputError naming the file and the tensor.
  Tensor read(const MappedTensorInfo& info, DType dtype) const;

 private:
  std::string path_;
  std::vector<MappedTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  const unsigned char* map_ = nullptr;
  size_t map_bytes_ = 0;
  uint64_t data_start_ = 0;
};

}  // namespace hamu
