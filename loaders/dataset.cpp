// loaders/dataset.cpp: ImageDataset bookkeeping and the whole-file read the readers share.
#include "loaders/dataset.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

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
  bytes.resize(size_t(size));
  const size_t got = size ? std::fread(bytes.data(), 1, bytes.size(), f) : 0;
  const bool err = std::ferror(f);
  std::fclose(f);
  if (err || got != bytes.size()) throw InputError(path + ": read error after " + std::to_string(got) + " bytes");
  return bytes;
}

}  // namespace hamu
