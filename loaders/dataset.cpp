// loaders/dataset.cpp: ImageDataset bookkeeping and the whole-file read the readers share.
#include "loaders/dataset.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/error.h"

namespace hamu {

std::vector<int64_t> ImageDataset::class_counts() const {
  std::vector<int64_t> counts(static_cast<size_t>(num_classes > 0 ? num_classes : 0), 0);
  for (int32_t y : labels)
    if (y >= 0 && y < num_classes) ++counts[size_t(y)];
  return counts;
}

std::vector<int64_t> ImageDataset::indices_of_class(int32_t cls) const {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < int64_t(labels.size()); ++i)
    if (labels[size_t(i)] == cls) out.push_back(i);
  return out;
}

void ImageDataset::check_consistent() const {
  auto fail = [&](const std::string& what) { throw Error("data set " + source + ": " + what); };
  if (n < 0 || c <= 0 || h <= 0 || w <= 0) fail("bad geometry");
  if (int64_t(pixels.size()) != n * image_size()) fail("pixel buffer does not match n*c*h*w");
  if (int64_t(labels.size()) != n) fail("label count does not match n");
  if (int64_t(class_names.size()) != num_classes) fail("class name count does not match num_classes");
  for (int32_t y : labels)
    if (y < 0 || y >= num_classes) fail("label " + std::to_string(y) + " out of range");
}

std::vector<uint8_t> read_file_bytes(const std::string& path, int64_t max_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) throw InputError(path + ": no such file");
  if (fs::is_directory(status)) throw InputError(path + ": is a folder, not a file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw InputError(path + ": cannot open: " + std::strerror(errno));
  // Size from the open handle, so a file swapped after the check cannot make us over-allocate.
  std::vector<uint8_t> bytes;
  if (std::fseek(f, 0, SEEK_END) != 0) {
    std::fclose(f);
    throw InputError(path + ": cannot seek (not a regular file?)");
  }
  const long size = std::ftell(f);
  std::rewind(f);
  if (size < 0) {
    std::fclose(f);
    throw InputError(path + ": cannot tell its size");
  }
  if (size > max_bytes) {
    std::fclose(f);
    throw InputError(path + ": " + std::to_string(size) + " bytes is more than the " + std::to_string(max_bytes) +
                     " this reader accepts");
  }
  if (size > data_memory_limit()) {
    std::fclose(f);
    throw InputError(path + ": " + byte_size_str(size) + " is more than the readers' memory limit of " +
                     byte_size_str(data_memory_limit()) + " (HAMU_MAX_MEMORY sets it)");
  }
  try {
    bytes.resize(size_t(size));
  } catch (const std::bad_alloc&) {
    std::fclose(f);
    throw InputError(path + ": out of memory reading its " + byte_size_str(size));
  }
  const size_t got = size ? std::fread(bytes.data(), 1, bytes.size(), f) : 0;
  const bool err = std::ferror(f);
  std::fclose(f);
  if (err || got != bytes.size()) throw InputError(path + ": read error after " + std::to_string(got) + " bytes");
  return bytes;
}

namespace {

// The cgroup (v2, then v1) memory limit, or 0 when there is none or it cannot be read.
int64_t cgroup_memory_limit() {
  for (const char* p : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream f(p);
    std::string text;
    if (!(f >> text)) continue;
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec == std::errc() && end == text.data() + text.size() && v > 0) return v;
  }
  return 0;
}

int64_t compute_memory_limit() {
  if (const char* env = std::getenv("HAMU_MAX_MEMORY"); env && *env) {
    const std::string text = env;
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    const std::string suffix(end, text.data() + text.size());
    int shift = -1;
    if (suffix.empty() || suffix == "B") shift = 0;
    else if (suffix == "K" || suffix == "KiB" || suffix == "k") shift = 10;
    else if (suffix == "M" || suffix == "MiB") shift = 20;
    else if (suffix == "G" || suffix == "GiB") shift = 30;
    else if (suffix == "T" || suffix == "TiB") shift = 40;
    if (ec != std::errc() || v <= 0 || shift < 0 || v > (INT64_MAX >> shift))
      throw InputError("HAMU_MAX_MEMORY=" + text + ": not a size (bytes, or a number with K, M, G or T)");
    return v << shift;
  }
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  int64_t total = pages > 0 && page > 0 ? int64_t(pages) * int64_t(page) : int64_t(8) << 30;
  if (const int64_t cg = cgroup_memory_limit(); cg > 0) total = std::min(total, cg);
  return total / 2;
}

}  // namespace

int64_t data_memory_limit() {
  // Read on every call (it is cheap next to any file read), so tests and embedders can change it.
  return compute_memory_limit();
}

std::string byte_size_str(int64_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 6) v /= 1024.0, ++u;
  char buf[48];
  if (u == 0) std::snprintf(buf, sizeof buf, "%lld bytes", static_cast<long long>(bytes));
  else std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace hamu
