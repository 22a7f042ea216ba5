// loaders/image_folder.cpp: one-folder-per-class image data sets decoded through stb_image.
// Debian's libstb-dev ships the full single-header implementation, so it is compiled here (static,
// so it cannot clash with a libstb.so someone else links) and no extra library is needed.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_NO_STDIO  // files are read by read_file_bytes, which gives errors naming the file
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_TGA
#define STBI_ONLY_PNM
#define STBI_MAX_DIMENSIONS (1 << 14)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine/error.h"
#include "engine/rng.h"
#include "loaders/dataset.h"

namespace hamu {
namespace fs = std::filesystem;
namespace {

// Source files above this are not images a classifier trains on.
constexpr int64_t kMaxImageFileBytes = int64_t(1) << 28;
constexpr int64_t kMaxImagePixels = int64_t(1) << 24;

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
  for (const char* e : {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga", ".pgm", ".ppm", ".pnm"})
    if (ext == e) return true;
  return false;
}

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

std::vector<std::string> class_folders(const fs::path& root) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory() && !is_hidden(e.path())) names.push_back(e.path().filename().string());
  if (ec) throw InputError(root.string() + ": cannot list: " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

// Image files under one class folder, recursively (symlinked sub-folders are not followed, so a
// link cycle cannot loop), in sorted path order.
std::vector<std::string> image_files(const fs::path& folder) {
  std::vector<std::string> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(folder, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (is_hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && is_image_name(it->path())) files.push_back(it->path().string());
  }
  if (ec) throw InputError(folder.string() + ": cannot list: " + ec.message());
  std::sort(files.begin(), files.end());
  return files;
}

struct Item {
  std::string path;
  int32_t label;
};

// Refuses, naming the file, what must not reach stb_image: empty files, malformed JPEG segments or
// PNM numbers, zero or oversized dimensions.
void check_image_header(const std::string& path, const std::vector<uint8_t>& bytes, DecodedImage& d) {
  if (bytes.empty()) throw InputError(path + ": empty file, not an image");
  if (bytes.size() > size_t(INT32_MAX)) throw InputError(path + ": too large");
  const std::string why = image_header_problem(bytes.data(), bytes.size());
  if (!why.empty()) throw InputError(path + ": " + why);
  if (!stbi_info_from_memory(bytes.data(), int(bytes.size()), &d.w, &d.h, &d.channels_in_file))
    throw InputError(path + ": not a readable image (" + std::string(stbi_failure_reason()) + ")");
  if (d.w <= 0 || d.h <= 0)
    throw InputError(path + ": the image is " + std::to_string(d.w) + "x" + std::to_string(d.h) +
                     " pixels (width and height must be positive)");
  if (int64_t(d.w) * d.h > max_image_pixels())
    throw InputError(path + ": " + std::to_string(d.w) + "x" + std::to_string(d.h) + " is larger than the " +
                     std::to_string(max_image_pixels()) + " pixels accepted (HAMU_MAX_MEMORY raises the limit up to " +
                     std::to_string(kMaxImagePixels) + ")");
}

// Decoded interleaved HWC -> planar CHW at the data set's size.
void place(const DecodedImage& d, int64_t c, int64_t h, int64_t w, uint8_t* out) {
  std::vector<uint8_t> chw(size_t(c * d.h * d.w));
  const int64_t plane = int64_t(d.h) * d.w;
  for (int64_t p = 0; p < plane; ++p)
    for (int64_t ch = 0; ch < c; ++ch) chw[size_t(ch * plane + p)] = d.hwc[size_t(p * c + ch)];
  if (d.h == h && d.w == w) std::copy(chw.begin(), chw.end(), out);
  else resize_bilinear(chw.data(), c, d.h, d.w, out, h, w);
}

ImageDataset decode_all(const std::vector<Item>& items, int64_t c, int64_t h, int64_t w,
                        const std::vector<std::string>& names, const std::string& source) {
  ImageDataset ds;
  ds.n = int64_t(items.size());
  ds.c = c;
  ds.h = h;
  ds.w = w;
  ds.num_classes = int32_t(names.size());
  ds.class_names = names;
  ds.source = source;
  const int64_t limit = data_memory_limit();
  if (ds.n > 0 && ds.image_size() > limit / ds.n)
    throw InputError(source + ": " + std::to_string(ds.n) + " images of " + std::to_string(c) + "x" +
                     std::to_string(h) + "x" + std::to_string(w) + " need more than the readers' memory limit of " +
                     byte_size_str(limit) + "; choose a smaller size=HxW (or raise HAMU_MAX_MEMORY)");
  with_memory_guard(source, [&] {
    ds.pixels.resize(size_t(ds.n * ds.image_size()));
    ds.labels.resize(size_t(ds.n));
  });
  // Exceptions must not cross the parallel region: record each failure, report the first by index.
  std::vector<std::string> errors(items.size());
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t i = 0; i < ds.n; ++i) {
    try {
      const std::string& path = items[size_t(i)].path;
      const DecodedImage d = decode_image_file(path, int(c));
      with_memory_guard(path, [&] { place(d, c, h, w, ds.pixels.data() + i * ds.image_size()); });
      ds.labels[size_t(i)] = items[size_t(i)].label;
    } catch (const std::exception& e) {
      errors[size_t(i)] = e.what();
    }
  }
  for (const auto& e : errors)
    if (!e.empty()) throw InputError(e);
  return ds;
}

std::vector<Item> items_of(const fs::path& root, const std::vector<std::string>& folders,
                           const std::vector<std::string>& names, bool require_images) {
  std::vector<Item> items;
  for (const auto& folder : folders) {
    const auto it = std::find(names.begin(), names.end(), folder);
    if (it == names.end())
      throw InputError((root / folder).string() + ": class folder has no counterpart in the training folders");
    const auto files = image_files(root / folder);
    if (files.empty() && require_images)
      throw InputError((root / folder).string() +
                       ": class folder holds no images (.png, .jpg, .jpeg, .bmp, .gif, .tga, .pgm, .ppm)");
    for (const auto& f : files) items.push_back({f, int32_t(it - names.begin())});
  }
  return items;
}

}  // namespace

int64_t max_image_pixels() { return std::clamp<int64_t>(data_memory_limit() / 64, 1, kMaxImagePixels); }

DecodedImage decode_image_file(const std::string& path, int want) {
  std::vector<uint8_t> bytes = read_file_bytes(path, kMaxImageFileBytes);
  DecodedImage d;
  check_image_header(path, bytes, d);
  drop_empty_png_data_chunks(bytes);
  return with_memory_guard(path, [&] {
    int w = 0, h = 0, comp = 0;
    stbi_uc* px = stbi_load_from_memory(bytes.data(), int(bytes.size()), &w, &h, &comp, want);
    if (!px) throw InputError(path + ": corrupt image (" + std::string(stbi_failure_reason()) + ")");
    // The decoder must agree with the header checked above (it reads the same bytes).
    if (w != d.w || h != d.h) {
      stbi_image_free(px);
      throw InputError(path + ": corrupt image (decoded size differs from its header)");
    }
    const int got = want ? want : comp;
    d.channels_in_file = comp;
    try {
      d.hwc.assign(px, px + size_t(w) * size_t(h) * size_t(got));
    } catch (...) {
      stbi_image_free(px);
      throw;
    }
    stbi_image_free(px);
    return std::move(d);
  });
}

void resize_bilinear(const uint8_t* src, int64_t c, int64_t sh, int64_t sw, uint8_t* dst, int64_t dh, int64_t dw) {
  if (sh <= 0 || sw <= 0 || dh <= 0 || dw <= 0)
    throw Error("resize_bilinear: empty image " + std::to_string(sh) + "x" + std::to_string(sw) + " -> " +
                std::to_string(dh) + "x" + std::to_string(dw));
  const double sy = double(sh) / double(dh), sx = double(sw) / double(dw);
  std::vector<int64_t> x0(static_cast<size_t>(dw)), x1(static_cast<size_t>(dw));
  std::vector<double> fx(static_cast<size_t>(dw));
  for (int64_t x = 0; x < dw; ++x) {
    const double s = std::clamp((double(x) + 0.5) * sx - 0.5, 0.0, double(sw - 1));
    x0[size_t(x)] = int64_t(s);
    x1[size_t(x)] = std::min(x0[size_t(x)] + 1, sw - 1);
    fx[size_t(x)] = s - double(x0[size_t(x)]);
  }
  for (int64_t ch = 0; ch < c; ++ch) {
    const uint8_t* plane = src + ch * sh * sw;
    for (int64_t y = 0; y < dh; ++y) {
      const double s = std::clamp((double(y) + 0.5) * sy - 0.5, 0.0, double(sh - 1));
      const int64_t y0 = int64_t(s), y1 = std::min(y0 + 1, sh - 1);
      const double fy = s - double(y0);
      const uint8_t* r0 = plane + y0 * sw;
      const uint8_t* r1 = plane + y1 * sw;
      uint8_t* out = dst + (ch * dh + y) * dw;
      for (int64_t x = 0; x < dw; ++x) {
        const size_t i = size_t(x);
        const double top = r0[x0[i]] + (r0[x1[i]] - r0[x0[i]]) * fx[i];
        const double bot = r1[x0[i]] + (r1[x1[i]] - r1[x0[i]]) * fx[i];
        out[x] = uint8_t(std::clamp(std::lround(top + (bot - top) * fy), 0l, 255l));
      }
    }
  }
}

DataBundle load_image_folder(const std::string& dir, const ImageFolderOptions& opt) {
  const std::string spec = "images:" + dir;
  if (!is_dir(dir)) throw InputError(spec + ": no such folder");
  if (opt.channels != 0 && opt.channels != 1 && opt.channels != 3)
    throw InputError(spec + ": channels must be 1 or 3, not " + std::to_string(opt.channels));
  if (opt.h < 0 || opt.w < 0 || opt.h > 4096 || opt.w > 4096 || (opt.h == 0) != (opt.w == 0))
    throw InputError(spec + ": size must be HxW with both sides in 1..4096");
  if (!(opt.holdout >= 0.0 && opt.holdout < 1.0))
    throw InputError(spec + ": holdout must be in [0, 1), not " + std::to_string(opt.holdout));

  const fs::path root(dir);
  const bool split_layout = is_dir(root / "train");
  const fs::path train_root = split_layout ? root / "train" : root;
  const bool has_test = split_layout && is_dir(root / "test");

  const std::vector<std::string> names = class_folders(train_root);
  if (names.empty())
    throw InputError(train_root.string() + ": no class folders (expected one sub-folder of images per class)");
  std::vector<Item> train_items = items_of(train_root, names, names, true);
  std::vector<Item> test_items;
  if (has_test) {
    test_items = items_of(root / "test", class_folders(root / "test"), names, false);
    if (test_items.empty()) throw InputError((root / "test").string() + ": holds no images");
  } else if (opt.holdout > 0) {
    // No test/ folder: a seeded, per-class holdout, fixed by holdout_seed (not the run's --seed) so
    // the training set does not change between runs that differ only in their seed.
    Rng rng(opt.holdout_seed);
    std::vector<Item> keep;
    for (int32_t cls = 0; cls < int32_t(names.size()); ++cls) {
      std::vector<Item> of_class;
      for (const auto& it : train_items)
        if (it.label == cls) of_class.push_back(it);
      const int64_t m = int64_t(of_class.size());
      const int64_t k = std::min<int64_t>(std::llround(opt.holdout * double(m)), m - 1);
      std::vector<char> to_test(size_t(m), 0);
      const auto perm = rng.permutation(m);
      for (int64_t j = 0; j < k; ++j) to_test[size_t(perm[size_t(j)])] = 1;
      for (int64_t j = 0; j < m; ++j) (to_test[size_t(j)] ? test_items : keep).push_back(of_class[size_t(j)]);
    }
    train_items = std::move(keep);
  }

  // Geometry from the options, else from the first training image.
  int64_t c = opt.channels, h = opt.h, w = opt.w;
  if (c == 0 || h == 0) {
    const DecodedImage first = decode_image_file(train_items.front().path, 0);
    if (c == 0) c = first.channels_in_file <= 2 ? 1 : 3;
    if (h == 0) {
      h = first.h;
      w = first.w;
    }
  }
  DataBundle b;
  b.train = decode_all(train_items, c, h, w, names, spec + " (train)");
  b.test = decode_all(test_items, c, h, w, names, spec + " (test)");
  b.spec = spec;
  return b;
}

}  // namespace hamu
