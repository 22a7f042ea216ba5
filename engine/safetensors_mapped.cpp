// engine/safetensors_mapped.cpp: memory-mapped safetensors reading with F16/BF16 conversion.
#include "engine/safetensors_mapped.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "engine/json.h"
#include "engine/safetensors.h"

namespace hamu {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

constexpr int kMaxRank = 64;

// Element size of a safetensors dtype code, 0 when unknown.
size_t code_size(const std::string& c) {
  if (c == "F64" || c == "I64" || c == "U64") return 8;
  if (c == "F32" || c == "I32" || c == "U32") return 4;
  if (c == "F16" || c == "BF16" || c == "I16" || c == "U16") return 2;
  if (c == "I8" || c == "U8" || c == "BOOL") return 1;
  return 0;
}

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

float bf16_to_float(uint16_t b) {
  const uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
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
      dst[i] = Dst(f16 ? half_to_float(v) : bf16_to_float(v));
    }
  }
}

std::string range_str(uint64_t b, uint64_t e) {
  std::string s = "[";
  s += std::to_string(b);
  s += ", ";
  s += std::to_string(e);
  s += ']';
  return s;
}

MappedTensorInfo parse_info(const std::string& file, const std::string& name, const Json& j, uint64_t data_len) {
  const std::string where = file + ": tensor '" + name + "': ";
  if (!j.is_object() || !j.contains("dtype") || !j.contains("shape") || !j.contains("data_offsets"))
    throw InputError(where + "entry is not an object with dtype, shape and data_offsets");
  MappedTensorInfo e;
  e.name = name;
  const Json& dt = j.at("dtype");
  const size_t esize = dt.is_string() ? code_size(dt.as_string()) : 0;
  if (!esize) throw InputError(where + "dtype " + dt.dump() + " is not a safetensors dtype this reader knows");
  e.dtype = dt.as_string();
  const Json& sh = j.at("shape");
  if (!sh.is_array() || sh.size() > size_t(kMaxRank)) throw InputError(where + "shape " + sh.dump() + " is not a list of at most 64 sizes");
  uint64_t numel = 1;
  bool overflow = false, has_zero = false;
  for (const Json& d : sh.as_array()) {
    if (!d.is_integer() || d.as_number() < 0) throw InputError(where + "shape entry " + d.dump() + " is not a non-negative integer");
    const uint64_t n = uint64_t(d.as_int());
    e.shape.push_back(int64_t(n));
    has_zero = has_zero || n == 0;
    if (n != 0) overflow = overflow || __builtin_mul_overflow(numel, n, &numel);
  }
  uint64_t bytes = 0;
  if (overflow || numel > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, uint64_t(esize), &bytes))
    throw InputError(where + "shape " + shape_str(e.shape) + " has too many elements");
  if (has_zero) bytes = 0;
  const Json& off = j.at("data_offsets");
  if (!off.is_array() || off.size() != 2 || !off.at(size_t(0)).is_integer() || !off.at(size_t(1)).is_integer() ||
      off.at(size_t(0)).as_number() < 0 || off.at(size_t(1)).as_number() < 0)
    throw InputError(where + "data_offsets " + off.dump() + " is not a pair of non-negative integers");
  e.begin = uint64_t(off.at(size_t(0)).as_int());
  e.end = uint64_t(off.at(size_t(1)).as_int());
  if (e.end < e.begin || e.end > data_len)
    throw InputError(where + "data_offsets " + range_str(e.begin, e.end) + " lie outside the data buffer of " +
                     std::to_string(data_len) + " bytes (file truncated?)");
  if (e.end - e.begin != bytes)
    throw InputError(where + e.dtype + " " + shape_str(e.shape) + " needs " + std::to_string(bytes) + " bytes but data_offsets " +
                     range_str(e.begin, e.end) + " span " + std::to_string(e.end - e.begin));
  return e;
}

}  // namespace

MappedSafetensors::MappedSafetensors(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path + ": not a regular file");
  }
  const uint64_t file_size = uint64_t(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    throw InputError(path + ": " + std::to_string(file_size) + " bytes is too short for a safetensors file (truncated?)");
  }
  void* m = ::mmap(nullptr, size_t(file_size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps the file
  if (m == MAP_FAILED) throw InputError(path + ": cannot map: " + std::strerror(map_err));
  map_ = static_cast<const unsigned char*>(m);
  map_bytes_ = size_t(file_size);
  try {
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | map_[i];
    if (header_len > kSafetensorsMaxHeader || header_len > file_size - 8)
      throw InputError(path + ": header length " + std::to_string(header_len) + " runs past the end of the file (" +
                       std::to_string(file_size - 8) + " bytes follow it); the file is truncated or not safetensors");
    JsonParseOptions opt;
    opt.source = path + ": header is not valid JSON";
    opt.max_depth = 8;
    opt.max_values = kSafetensorsMaxHeaderValues;
    const Json header = Json::parse(std::string_view(reinterpret_cast<const char*>(map_ + 8), size_t(header_len)), opt);
    if (!header.is_object()) throw InputError(path + ": header is not a JSON object");
    data_start_ = 8 + header_len;
    const uint64_t data_len = file_size - data_start_;
    for (const auto [name, value] : header.members()) {
      if (name == "__metadata__") {
        if (!value.is_object()) throw InputError(path + ": __metadata__ is not an object of strings");
        for (const auto [k, v] : value.members()) {
          if (!v.is_string()) throw InputError(path + ": metadata '" + k + "' is not a string");
          metadata_[k] = v.as_string();
        }
        continue;
      }
      tensors_.push_back(parse_info(path, name, value, data_len));
    }
    // The tensors must tile the data buffer exactly: a shorter file (a truncated shard) fails here.
    std::vector<size_t> order(tensors_.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return std::pair(tensors_[a].begin, tensors_[a].end) < std::pair(tensors_[b].begin, tensors_[b].end);
    });
    uint64_t covered = 0;
    for (size_t i : order) {
      if (tensors_[i].begin != covered)
        throw InputError(path + ": tensor '" + tensors_[i].name + "': data_offsets " +
                         range_str(tensors_[i].begin, tensors_[i].end) + (tensors_[i].begin < covered ? " overlap another tensor" : " leave a gap"));
      covered = tensors_[i].end;
    }
    if (covered != data_len)
      throw InputError(path + ": the data buffer has " + std::to_string(data_len) + " bytes but the tensors cover " +
                       std::to_string(covered) + " (truncated or padded file)");
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
