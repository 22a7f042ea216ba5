// tests/fuzz/fuzz_image_folder.cpp: an image-folder data set unpacked from the input, then loaded.
//
// Input: one options byte (size, channels, holdout), then entries of [path length: 1 byte][path]
// [data length: 2 bytes little-endian][data], unpacked under a fresh scratch folder. Paths may hold
// a-z, 0-9, '.', '_', '-' and '/' (so class folders, train/ and test/ layouts, nested and hidden
// files can all be made); absolute paths and ".." are skipped so nothing lands outside the folder.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "loaders/dataset.h"
#include "tests/fuzz/fuzz.h"

namespace {
bool safe_path(const std::string& p) {
  if (p.empty() || p.front() == '/' || p.back() == '/' || p.find("..") != std::string::npos) return false;
  for (char ch : p)
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' || ch == '/'))
      return false;
  return true;
}
}  // namespace

HAMU_FUZZ_TARGET(image_folder) {
  namespace fs = std::filesystem;
  if (size < 1) return;
  const uint8_t opts = data[0];
  const std::string root = hamu::fuzz::fresh_scratch_dir("images");
  size_t pos = 1;
  int entries = 0;
  while (pos < size && entries < 64) {
    const size_t name_len = data[pos++];
    if (size - pos < name_len + 2) break;
    const std::string name(reinterpret_cast<const char*>(data + pos), name_len);
    pos += name_len;
    const size_t len = size_t(data[pos]) | size_t(data[pos + 1]) << 8;
    pos += 2;
    const size_t take = std::min(len, size - pos);
    if (safe_path(name)) {
      const fs::path p = fs::path(root) / name;
      std::error_code ec;
      fs::create_directories(p.parent_path(), ec);
      if (!ec && !fs::is_directory(p)) {
        std::ofstream f(p, std::ios::binary | std::ios::trunc);
        f.write(reinterpret_cast<const char*>(data + pos), std::streamsize(take));
      }
    }
    pos += take;
    ++entries;
  }
  hamu::ImageFolderOptions o;
  if (opts & 1) o.h = o.w = 1 + ((opts >> 1) & 7) * 3;
  o.channels = (opts & 16) ? ((opts & 32) ? 3 : 1) : 0;
  o.holdout = (opts & 64) ? 0.0 : 0.25;
  const hamu::DataBundle b = hamu::load_image_folder(root, o);
  b.train.check_consistent();
  b.test.check_consistent();
}
