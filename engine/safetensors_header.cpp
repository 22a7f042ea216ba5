// engine/safetensors_header.cpp: safetensors header validation (engine/safetensors_header.h).
#include "engine/safetensors_header.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/json.h"
#include "engine/safetensors.h"

namespace hamu {
namespace {

constexpr int kMaxRank = 64;

std::string offsets_str(uint64_t b, uint64_t e) {
  std::string s = "[";  // built by appending: GCC 12 misreports `"[" + std::to_string(..)` (-Wrestrict)
  s += std::to_string(b);
  s += ", ";
  s += std::to_string(e);
  s += ']';
  return s;
}

// Non-negative integer (exact in a double) or nothing.
bool as_count(const Json& j, uint64_t& out) {
  if (!j.is_integer() || j.as_number() < 0) return false;
  out = uint64_t(j.as_int());
  return true;
}

SafetensorsEntry parse_entry(const std::string& file, const std::string& name, const Json& j, uint64_t data_len,
                             const SafetensorsDtypes& dtypes) {
  const std::string where = file + ": tensor '" + name + "': ";
  if (!j.is_object())
    throw InputError(where + "entry is " + Json::type_name(j.type()) + ", expected an object with dtype, shape and data_offsets");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!j.contains(key)) throw InputError(where + "missing \"" + key + "\"");

  SafetensorsEntry e;
  e.name = name;
  const Json& dt = j.at("dtype");
  if (!dt.is_string()) throw InputError(where + "dtype is " + Json::type_name(dt.type()) + ", expected a string");
  e.dtype = dt.as_string();
  const size_t esize = dtypes.element_size(e.dtype);
  if (esize == 0) throw InputError(where + "dtype '" + e.dtype + "' is not supported (" + dtypes.names + ")");

  const Json& sh = j.at("shape");
  if (!sh.is_array()) throw InputError(where + "shape is " + Json::type_name(sh.type()) + ", expected an array");
  if (sh.size() > size_t(kMaxRank))
    throw InputError(where + "shape has " + std::to_string(sh.size()) + " dimensions (at most " + std::to_string(kMaxRank) + ")");
  uint64_t numel = 1;
  bool overflow = false, has_zero = false;
  for (const Json& d : sh.as_array()) {
    uint64_t n = 0;
    if (!as_count(d, n)) {
      const bool huge = d.is_number() && d.as_number() > 0 && d.as_number() == std::floor(d.as_number());
      throw InputError(where + "shape entry " + d.dump() + (huge ? " is too large" : " is not a non-negative integer"));
    }
    e.shape.push_back(int64_t(n));
    // A zero dimension makes the tensor empty but must not hide that the others multiply past
    // int64: strides and every later numel() are formed from them (shape_numel refuses them too).
    has_zero = has_zero || n == 0;
    if (n != 0) overflow = overflow || __builtin_mul_overflow(numel, n, &numel);
  }
  uint64_t bytes = 0;
  if (overflow || numel > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, uint64_t(esize), &bytes))
    throw InputError(where + "shape " + shape_str(e.shape) + " has too many elements");
  if (has_zero) bytes = 0;

  const Json& off = j.at("data_offsets");
  if (!off.is_array() || off.size() != 2 || !as_count(off.at(size_t(0)), e.begin) || !as_count(off.at(size_t(1)), e.end))
    throw InputError(where + "data_offsets " + off.dump() + " is not a pair of non-negative integers");
  if (e.end < e.begin) throw InputError(where + "data_offsets " + offsets_str(e.begin, e.end) + " end before they begin");
  if (e.end > data_len)
    throw InputError(where + "data_offsets " + offsets_str(e.begin, e.end) + " lie outside the data buffer of " +
                     std::to_string(data_len) + " bytes (file truncated?)");
  if (e.end - e.begin != bytes)
    throw InputError(where + e.dtype + " " + shape_str(e.shape) + " needs " + std::to_string(bytes) +
                     " bytes but data_offsets " + offsets_str(e.begin, e.end) + " span " + std::to_string(e.end - e.begin));
  return e;
}

// Tensors must tile the data buffer exactly: no overlaps, no gaps, nothing left over (a truncated
// shard fails here).
void check_layout(const std::string& file, const std::vector<SafetensorsEntry>& entries, uint64_t data_len) {
  std::vector<size_t> order(entries.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::pair(entries[a].begin, entries[a].end) < std::pair(entries[b].begin, entries[b].end);
  });
  uint64_t covered = 0;
  const SafetensorsEntry* prev = nullptr;
  for (size_t i : order) {
    const SafetensorsEntry& e = entries[i];
    if (e.begin < covered)
      throw InputError(file + ": tensor '" + e.name + "': data_offsets " + offsets_str(e.begin, e.end) +
                       " overlap tensor '" + prev->name + "' " + offsets_str(prev->begin, prev->end));
    if (e.begin > covered)
      throw InputError(file + ": tensor '" + e.name + "': data_offsets " + offsets_str(e.begin, e.end) + " leave a gap of " +
                       std::to_string(e.begin - covered) + " bytes before them (tensors must be contiguous)");
    covered = e.end;
    prev = &e;
  }
  if (covered != data_len)
    throw InputError(file + ": the data buffer has " + std::to_string(data_len) + " bytes but the tensors cover only " +
                     std::to_string(covered) + " (truncated or padded file)");
}

}  // namespace

size_t safetensors_code_size(const std::string& c) {
  if (c == "F64" || c == "I64" || c == "U64") return 8;
  if (c == "F32" || c == "I32" || c == "U32") return 4;
  if (c == "F16" || c == "BF16" || c == "I16" || c == "U16") return 2;
  if (c == "I8" || c == "U8" || c == "BOOL") return 1;
  return 0;
}

uint64_t safetensors_header_length(const std::string& path, const unsigned char first8[8], uint64_t file_size) {
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | first8[i];
  if (header_len > kSafetensorsMaxHeader)
    throw InputError(path + ": header length " + std::to_string(header_len) + " is implausible (limit " +
                     std::to_string(kSafetensorsMaxHeader) + "); not a safetensors file?");
  if (header_len > file_size - 8)
    throw InputError(path + ": header length " + std::to_string(header_len) + " runs past the end of the file (" +
                     std::to_string(file_size - 8) + " bytes follow the length); the file is truncated or not safetensors");
  return header_len;
}

SafetensorsHeader parse_safetensors_header(const std::string& path, std::string_view text, uint64_t file_size,
                                           const SafetensorsDtypes& dtypes) {
  JsonParseOptions opt;
  opt.source = path + ": header is not valid JSON";
  opt.max_depth = 8;  // a valid header nests three levels
  opt.max_values = kSafetensorsMaxHeaderValues;
  const Json header = Json::parse(text, opt);
  if (!header.is_object())
    throw InputError(path + ": header is a JSON " + Json::type_name(header.type()) + ", expected an object");
  SafetensorsHeader h;
  h.data_start = 8 + uint64_t(text.size());
  h.data_len = file_size - h.data_start;
  for (const auto [name, value] : header.members()) {
    if (name == "__metadata__") {
      if (!value.is_object())
        throw InputError(path + ": __metadata__ is " + Json::type_name(value.type()) + ", expected an object of strings");
      for (const auto [k, v] : value.members()) {
        if (!v.is_string())
          throw InputError(path + ": metadata '" + k + "' is " + Json::type_name(v.type()) +
                           ", but metadata values must be strings");
        h.metadata[k] = v.as_string();
      }
      continue;
    }
    h.entries.push_back(parse_entry(path, name, value, h.data_len, dtypes));
  }
  check_layout(path, h.entries, h.data_len);
  return h;
}

}  // namespace hamu
