// engine/safetensors.cpp: safetensors writing (atomic) and reading (validated before any allocation).
#include "engine/safetensors.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>

#include "engine/atomic_file.h"
#include "engine/input_file.h"
#include "engine/json.h"
#include "engine/safetensors_header.h"

namespace hamu {

// The format is little-endian; so is every machine this engine targets, which lets tensor bytes
// go to and from the file unconverted.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

const char* dtype_code(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i32: return "I32";
    case DType::u8: return "U8";
    case DType::bf16: return "BF16";
  }
  return "?";
}

bool parse_dtype_code(const std::string& s, DType& out) {
  for (DType t : {DType::f32, DType::f64, DType::i32, DType::u8, DType::bf16}) {
    if (s == dtype_code(t)) {
      out = t;
      return true;
    }
  }
  return false;
}

// Reads exactly n bytes at `offset`; false on a short read (the file shrank under us).
// The dtypes hamu checkpoints hold (I64 only as single-value counters, Checkpoint::int64s).
size_t checkpoint_code_size(const std::string& code) {
  DType t;
  if (code == "I64") return 8;
  return parse_dtype_code(code, t) ? dtype_size(t) : 0;
}
constexpr SafetensorsDtypes kCheckpointDtypes{checkpoint_code_size, "F32, F64, I32, U8, BF16; I64 scalars"};

}  // namespace

// ------------------------------------------------------------------------------------------------
// Checkpoint

const Tensor* Checkpoint::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t.tensor;
  return nullptr;
}

const Tensor& Checkpoint::get(const std::string& name) const {
  if (const Tensor* t = find(name)) return *t;
  std::string msg = (path.empty() ? std::string("checkpoint") : path) + ": no tensor named '" + name + "'";
  if (tensors.empty()) {
    msg += " (it holds no tensors)";
  } else {
    msg += " (it holds " + std::to_string(tensors.size()) + ": ";
    for (size_t i = 0; i < tensors.size() && i < 6; ++i) msg += (i ? ", " : "") + tensors[i].name;
    msg += tensors.size() > 6 ? ", ...)" : ")";
  }
  throw InputError(msg);
}

const std::string& Checkpoint::meta(const std::string& key) const {
  const auto it = metadata.find(key);
  if (it == metadata.end())
    throw InputError((path.empty() ? std::string("checkpoint") : path) + ": no metadata entry '" + key + "'");
  return it->second;
}

// ------------------------------------------------------------------------------------------------
// Save

void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata, const std::map<std::string, int64_t>& int64s) {
  std::set<std::string> names;
  for (const auto& [name, v] : int64s)
    if (name == "__metadata__" || !names.insert(name).second) throw InputError(path + ": tensor name '" + name + "' is reserved or repeated");
  for (const auto& t : tensors) {
    if (!t.tensor.defined()) throw InputError(path + ": tensor '" + t.name + "' is undefined");
    if (t.name == "__metadata__") throw InputError(path + ": '__metadata__' is reserved and cannot name a tensor");
    if (!names.insert(t.name).second) throw InputError(path + ": tensor name '" + t.name + "' appears twice");
  }

  // Host copies, contiguous; detach() keeps these copies off the autograd tape.
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  for (const auto& t : tensors) host.push_back(t.tensor.detach().to(Device{}).contiguous());

  // Widest dtype first (stable), so each tensor starts at a multiple of its element size: the data
  // buffer begins at 8 + header length, a multiple of 8.
  std::vector<size_t> order(host.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return dtype_size(host[a].dtype()) > dtype_size(host[b].dtype()); });
  std::vector<uint64_t> begin(host.size());
  uint64_t offset = 8 * uint64_t(int64s.size());  // the I64 scalars first: 8-byte aligned like the rest
  for (size_t i : order) {
    begin[i] = offset;
    offset += uint64_t(host[i].numel()) * dtype_size(host[i].dtype());
  }

  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata) meta.set(k, v);
    header.set("__metadata__", std::move(meta));
  }
  for (size_t i = 0; i < host.size(); ++i) {
    const uint64_t bytes = uint64_t(host[i].numel()) * dtype_size(host[i].dtype());
    header.set(tensors[i].name, Json::object({{"dtype", dtype_code(host[i].dtype())},
                                              {"shape", Json(host[i].shape())},
                                              {"data_offsets", Json::array({begin[i], begin[i] + bytes})}}));
  }
  uint64_t scalar_at = 0;
  std::string scalar_bytes;
  for (const auto& [name, v] : int64s) {  // shape [] like a PyTorch 0-dim tensor, little-endian
    header.set(name, Json::object({{"dtype", "I64"}, {"shape", Json::array()},
                                   {"data_offsets", Json::array({scalar_at, scalar_at + 8})}}));
    scalar_at += 8;
    for (int b = 0; b < 8; ++b) scalar_bytes += char(uint64_t(v) >> (8 * b));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(uint64_t(text.size()) >> (8 * i));

  AtomicFile f(path);
  f.write(len, 8);
  f.write(text);
  f.write(scalar_bytes);
  for (size_t i : order) f.write(host[i].raw(), size_t(host[i].numel()) * dtype_size(host[i].dtype()));
  f.commit();
}

// ------------------------------------------------------------------------------------------------
// Load

Checkpoint load_safetensors(const std::string& path) {
  const InputFile file(path);
  const uint64_t file_size = file.size();
  if (file_size < 8)
    throw InputError(path + ": " + std::to_string(file_size) + " bytes is too short for a safetensors file (the header length alone is 8)");

  unsigned char len[8];
  if (file.read_at(len, 8, 0) != 8) throw InputError(path + ": read failed");
  const uint64_t header_len = safetensors_header_length(path, len, file_size);
  std::string text(size_t(header_len), '\0');
  if (file.read_at(text.data(), text.size(), 8) != text.size()) throw InputError(path + ": read failed (file truncated?)");
  SafetensorsHeader header = parse_safetensors_header(path, text, file_size, kCheckpointDtypes);
  const uint64_t data_start = header.data_start;
  Checkpoint ck;
  ck.path = path;
  ck.metadata = std::move(header.metadata);
  for (const SafetensorsEntry& e : header.entries)
    if (e.dtype == "I64" && (e.shape.empty() ? 1 : shape_numel(e.shape)) != 1)
      throw InputError(path + ": tensor '" + e.name + "': I64 " + shape_str(e.shape) +
                       ": only single-value I64 entries (counters) are read");

  // Only now, with every size checked against the file, is memory allocated (at most the file's size).
  ck.tensors.reserve(header.entries.size());
  for (const SafetensorsEntry& e : header.entries) {
    if (e.dtype == "I64") {
      unsigned char b[8];
      if (file.read_at(b, 8, data_start + e.begin) != 8)
        throw InputError(path + ": tensor '" + e.name + "': read failed (file truncated while reading?)");
      uint64_t v = 0;
      for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
      ck.int64s[e.name] = int64_t(v);
      continue;
    }
    DType dtype = DType::f32;
    parse_dtype_code(e.dtype, dtype);
    Tensor t;
    try {
      t = Tensor::empty(e.shape, dtype);
    } catch (const InputError&) {
      throw;
    } catch (const std::exception& ex) {  // bad_alloc, or the allocator's out-of-memory Error
      throw InputError(path + ": tensor '" + e.name + "': cannot allocate its " + std::to_string(e.end - e.begin) +
                       " bytes (" + ex.what() + ")");
    }
    if (file.read_at(t.raw(), size_t(e.end - e.begin), data_start + e.begin) != size_t(e.end - e.begin))
      throw InputError(path + ": tensor '" + e.name + "': read failed (file truncated while reading?)");
    t.set_name(e.name);
    ck.tensors.push_back({e.name, t});
  }
  return ck;
}

namespace {

template <class T>
void check_finite_values(const Checkpoint& ck, const NamedTensor& nt) {
  const T* v = static_cast<const T*>(nt.tensor.raw());
  const int64_t n = nt.tensor.numel();
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) {
      if (first < 0) first = i;
      ++bad;
    }
  if (bad == 0) return;
  const char* kind = std::isnan(v[first]) ? "NaN" : v[first] > 0 ? "+Inf" : "-Inf";
  throw InputError((ck.path.empty() ? std::string("checkpoint") : ck.path) + ": tensor '" + nt.name + "' " +
                   shape_str(nt.tensor.shape()) + " holds " + std::to_string(bad) + " non-finite value" +
                   (bad == 1 ? "" : "s") + " (the first, " + kind + ", at flat index " + std::to_string(first) + ")");
}

}  // namespace

void require_finite(const Checkpoint& ck) {
  for (const NamedTensor& nt : ck.tensors) {
    if (nt.tensor.dtype() == DType::f32) check_finite_values<float>(ck, nt);
    else if (nt.tensor.dtype() == DType::f64) check_finite_values<double>(ck, nt);
  }
}

}  // namespace hamu
