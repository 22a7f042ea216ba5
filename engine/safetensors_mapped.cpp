// engine/safetensors_mapped.cpp: memory-mapped safetensors reading with F16/BF16 conversion.
#include "engine/safetensors_mapped.h"

#include <sys/mman.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "engine/input_file.h"
#include "engine/json.h"
#include "engine/safetensors.h"
#include "engine/safetensors_header.h"
#include "kernels/bf16.h"

namespace hamu {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(float(man), -24);  // zero and subnormals
  } else if (exp == 31) {
    f = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    const uint32_t bits = ((exp + 112) << 23) | (man << 13);
    std::memcpy(&f, &bits, 4);
  }
  uint32_t out;
  std::memcpy(&out, &f, 4);
  out |= sign;
  std::memcpy(&f, &out, 4);
  return f;
}

template <class Dst> void convert(const std::string& code, const unsigned char* src, int64_t n, Dst* dst) {
  if (code == "F32") {
    for (int64_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, src + 4 * i, 4);
      dst[i] = Dst(v);
    }
  } else if (code == "F64") {
    for (int64_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, src + 8 * i, 8);
      dst[i] = Dst(v);
    }
  } else {
    const bool f16 = code == "F16";
    for (int64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, src + 2 * i, 2);
      dst[i] = Dst(f16 ? half_to_float(v) : kernels::bf16_to_float(v));
    }
  }
}

constexpr SafetensorsDtypes kAnyDtype{safetensors_code_size, "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL"};

}  // namespace

MappedSafetensors::MappedSafetensors(const std::string& path) : path_(path) {
  uint64_t file_size = 0;
  void* m = MAP_FAILED;
  int map_err = 0;
  {
    const InputFile file(path);  // closed once mapped: the mapping keeps the file
    file_size = file.size();
    if (file_size < 8)
      throw InputError(path + ": " + std::to_string(file_size) + " bytes is too short for a safetensors file (truncated?)");
    m = ::mmap(nullptr, size_t(file_size), PROT_READ, MAP_PRIVATE, file.fd(), 0);
    map_err = errno;
  }
  if (m == MAP_FAILED) throw InputError(path + ": cannot map: " + std::strerror(map_err));
  map_ = static_cast<const unsigned char*>(m);
  map_bytes_ = size_t(file_size);
  try {
    const uint64_t header_len = safetensors_header_length(path, map_, file_size);
    SafetensorsHeader header = parse_safetensors_header(
        path, std::string_view(reinterpret_cast<const char*>(map_ + 8), size_t(header_len)), file_size, kAnyDtype);
    tensors_ = std::move(header.entries);
    metadata_ = std::move(header.metadata);
    data_start_ = header.data_start;
  } catch (...) {
    ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
    throw;
  }
}

MappedSafetensors::~MappedSafetensors() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
}

const MappedTensorInfo* MappedSafetensors::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

Tensor MappedSafetensors::read(const MappedTensorInfo& info, DType dtype) const {
  if (info.dtype != "F32" && info.dtype != "F64" && info.dtype != "F16" && info.dtype != "BF16")
    throw InputError(path_ + ": tensor '" + info.name + "' has dtype " + info.dtype + ", expected F32, F16, BF16 or F64");
  if (dtype != DType::f32 && dtype != DType::f64) throw Error("MappedSafetensors::read: float32 or float64 only");
  Tensor t = Tensor::empty(info.shape, dtype);
  const unsigned char* src = map_ + data_start_ + info.begin;
  if (dtype == DType::f32) convert(info.dtype, src, t.numel(), t.data<float>());
  else convert(info.dtype, src, t.numel(), t.data<double>());
  return t;
}

}  // namespace hamu
