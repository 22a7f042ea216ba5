// loaders/idx.cpp: IDX reader (MNIST, Fashion-MNIST, generic idx:DIR), gzip or plain.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "engine/error.h"
#include "loaders/dataset.h"

namespace hamu {
namespace {

constexpr uint32_t kIdxImagesMagic = 2051;  // 0x00000803: u8, 3 dims
constexpr uint32_t kIdxLabelsMagic = 2049;  // 0x00000801: u8, 1 dim
// Far above any real IDX file (Fashion-MNIST is 47 MB); a header claiming more is refused outright.
constexpr int64_t kMaxIdxPayload = int64_t(1) << 34;
constexpr int64_t kMaxIdxDim = int64_t(1) << 31;
// zlib's deflate expands at most 1032:1 (a run of one byte), whatever the level.
constexpr int64_t kMaxDeflateRatio = 1032;

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

// Reads a file byte by byte-range, transparently inflating gzip, with errors that name the file.
class ByteStream {
 public:
  explicit ByteStream(const std::string& path) : path_(path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto st = fs::status(path, ec);
    if (ec || !fs::exists(st)) throw InputError(path + ": no such file");
    if (fs::is_directory(st)) throw InputError(path + ": is a folder, not a file");
    file_ = std::fopen(path.c_str(), "rb");
    if (!file_) throw InputError(path + ": cannot open: " + std::strerror(errno));
    uint8_t head[2] = {0, 0};
    const size_t got = std::fread(head, 1, 2, file_);
    gzip_ = got == 2 && head[0] == 0x1f && head[1] == 0x8b;
    std::fseek(file_, 0, SEEK_END);
    file_size_ = std::ftell(file_);
    std::rewind(file_);
    if (gzip_) {
      // zlib takes its own descriptor; ours is only needed for the plain path.
      std::fclose(file_);
      file_ = nullptr;
      gz_ = gzopen(path.c_str(), "rb");
      if (!gz_) throw InputError(path + ": cannot open as gzip");
      gzbuffer(gz_, 1 << 16);
    }
  }
  ~ByteStream() {
    if (file_) std::fclose(file_);
    if (gz_) gzclose(gz_);
  }
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;

  bool gzip() const { return gzip_; }
  int64_t file_size() const { return file_size_; }

  // Up to n bytes; fewer only at the end of the data. A corrupt gzip stream throws.
  size_t read(uint8_t* dst, size_t n) {
    size_t total = 0;
    while (total < n) {
      size_t got = 0;
      if (gzip_) {
        const unsigned ask = unsigned(std::min<size_t>(n - total, 1u << 30));
        const int r = gzread(gz_, dst + total, ask);
        if (r < 0) throw_gz_error();
        got = size_t(r);
        if (got == 0) {
          check_gz_clean_end();
          break;
        }
      } else {
        got = std::fread(dst + total, 1, n - total, file_);
        if (got == 0) {
          if (std::ferror(file_)) throw InputError(path_ + ": read error: " + std::strerror(errno));
          break;
        }
      }
      total += got;
    }
    return total;
  }

  // True when nothing follows: for gzip this also verifies the stream's CRC and length trailer.
  bool at_end() {
    uint8_t b;
    return read(&b, 1) == 0;
  }

 private:
  [[noreturn]] void throw_gz_error() {
    int errnum = 0;
    const char* msg = gzerror(gz_, &errnum);
    throw InputError(path_ + ": corrupt gzip stream (" + std::string(msg ? msg : "unknown zlib error") + ")");
  }
  void check_gz_clean_end() {
    int errnum = 0;
    gzerror(gz_, &errnum);
    if (errnum != Z_OK) throw_gz_error();
  }

  std::string path_;
  std::FILE* file_ = nullptr;
  gzFile gz_ = nullptr;
  bool gzip_ = false;
  int64_t file_size_ = 0;
};

std::string describe_magic(uint32_t magic) {
  if (magic == kIdxImagesMagic) return "an IDX image file (2051)";
  if (magic == kIdxLabelsMagic) return "an IDX label file (2049)";
  return "magic " + hex32(magic);
}

bool file_exists(const std::string& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec);
}

// The first of the usual spellings ("train-images-idx3-ubyte", "train-images.idx3-ubyte", each
// optionally .gz) that exists, or "" when none does.
std::string find_idx_file(const std::string& dir, const std::string& prefix, const std::string& what,
                          const std::string& idx) {
  for (const char* sep : {"-", "."})
    for (const char* ext : {"", ".gz"}) {
      const std::string p = dir + "/" + prefix + "-" + what + sep + idx + "-ubyte" + ext;
      if (file_exists(p)) return p;
    }
  return "";
}

std::vector<std::string> index_names(int32_t k) {
  std::vector<std::string> names;
  for (int32_t i = 0; i < k; ++i) names.push_back(std::to_string(i));
  return names;
}

}  // namespace

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

const std::vector<std::string>& mnist_class_names() {
  static const std::vector<std::string> names = index_names(10);
  return names;
}

IdxArray read_idx(const std::string& path, uint32_t expected_magic) {
  const int expected_ndim = expected_magic == kIdxImagesMagic ? 3 : expected_magic == kIdxLabelsMagic ? 1 : -1;
  if (expected_ndim < 0) throw Error("read_idx: unsupported expected magic " + std::to_string(expected_magic));
  const char* what = expected_ndim == 3 ? "an IDX image file (magic 2051)" : "an IDX label file (magic 2049)";

  ByteStream in(path);
  uint8_t head[4];
  const size_t got = in.read(head, 4);
  if (got < 4) throw InputError(path + ": " + std::to_string(got) + " bytes is too short for an IDX header");
  const uint32_t magic = be32(head);
  if (magic != expected_magic) {
    std::string why = "is " + describe_magic(magic) + ", expected " + what;
    if (head[0] || head[1]) why = "is not an IDX file (magic " + hex32(magic) + "), expected " + what;
    throw InputError(path + ": " + why);
  }

  IdxArray arr;
  uint8_t dim_bytes[12];
  const size_t dims_len = size_t(4 * expected_ndim);
  if (in.read(dim_bytes, dims_len) != dims_len) throw InputError(path + ": truncated IDX header (dimensions missing)");
  // Dimensions are u32 on disk; a real data set's are far below 2^31 (and a sum of them is never
  // zero), so each is checked on its own before the product is checked against what memory allows.
  const int64_t limit = data_memory_limit();
  int64_t total = 1;
  for (int d = 0; d < expected_ndim; ++d) {
    const int64_t v = be32(dim_bytes + 4 * d);
    if (v == 0) throw InputError(path + ": dimension " + std::to_string(d) + " is 0 (must be positive)");
    if (v >= kMaxIdxDim)
      throw InputError(path + ": dimension " + std::to_string(d) + " is " + std::to_string(v) +
                       " (at most 2^31 - 1); not a real data set");
    if (total > kMaxIdxPayload / v)
      throw InputError(path + ": header dimensions describe more than " + std::to_string(kMaxIdxPayload) +
                       " bytes; not a real data set");
    total *= v;
    arr.dims.push_back(v);
  }
  if (total > limit)
    throw InputError(path + ": header dimensions describe " + byte_size_str(total) +
                     " of data, more than the readers' memory limit of " + byte_size_str(limit) +
                     " (HAMU_MAX_MEMORY sets it)");
  const int64_t header_bytes = 4 + int64_t(dims_len);
  std::string dims_text;
  for (size_t d = 0; d < arr.dims.size(); ++d) {
    if (d) dims_text += 'x';
    dims_text += std::to_string(arr.dims[d]);
  }

  if (!in.gzip()) {
    // Plain file: the size is known, so a lying header is caught before any allocation.
    const int64_t have = in.file_size() - header_bytes;
    if (have < total)
      throw InputError(path + ": truncated: header says " + dims_text + " = " + std::to_string(total) +
                       " bytes of data, the file holds " + std::to_string(have));
    if (have > total)
      throw InputError(path + ": " + std::to_string(have - total) + " unexpected bytes after the " + dims_text +
                       " data (wrong dimensions in the header?)");
    with_memory_guard(path, [&] { arr.data.resize(size_t(total)); });
    if (in.read(arr.data.data(), size_t(total)) != size_t(total)) throw InputError(path + ": short read");
    return arr;
  }
  // Gzip: deflate cannot expand more than 1032:1, so a header claiming more than the compressed
  // file could hold is refused before inflating anything. The array is reserved (address space,
  // not touched memory) and filled through a fixed 1 MiB buffer, so resident memory follows the
  // bytes actually inflated and no reallocation copies them.
  const int64_t can_hold = kMaxDeflateRatio * in.file_size();
  if (total + header_bytes > can_hold)
    throw InputError(path + ": truncated: header says " + dims_text + " = " + std::to_string(total) +
                     " bytes of data, more than a gzip stream of " + std::to_string(in.file_size()) +
                     " bytes can hold (at most " + std::to_string(can_hold) + ")");
  return with_memory_guard(path, [&] {
    arr.data.reserve(size_t(total));
    std::vector<uint8_t> buffer(size_t(1) << 20);
    int64_t filled = 0;
    while (filled < total) {
      const size_t step = size_t(std::min<int64_t>(int64_t(buffer.size()), total - filled));
      const size_t r = in.read(buffer.data(), step);
      arr.data.insert(arr.data.end(), buffer.begin(), buffer.begin() + std::ptrdiff_t(r));
      filled += int64_t(r);
      if (r < step)
        throw InputError(path + ": truncated: header says " + dims_text + " = " + std::to_string(total) +
                         " bytes of data, the stream holds " + std::to_string(filled));
    }
    if (!in.at_end())
      throw InputError(path + ": unexpected bytes after the " + dims_text + " data (wrong dimensions in the header?)");
    return std::move(arr);
  });
}

ImageDataset load_idx_pair(const std::string& images_path, const std::string& labels_path, int32_t num_classes,
                           const std::vector<std::string>& class_names) {
  IdxArray labels = read_idx(labels_path, kIdxLabelsMagic);
  IdxArray images = read_idx(images_path, kIdxImagesMagic);
  if (images.dims[0] != labels.dims[0])
    throw InputError(images_path + " holds " + std::to_string(images.dims[0]) + " images but " + labels_path +
                     " holds " + std::to_string(labels.dims[0]) + " labels");
  if (images.dims[1] > 65536 || images.dims[2] > 65536)
    throw InputError(images_path + ": image size " + std::to_string(images.dims[1]) + "x" +
                     std::to_string(images.dims[2]) + " is not plausible");
  ImageDataset ds;
  ds.n = images.dims[0];
  ds.c = 1;
  ds.h = images.dims[1];
  ds.w = images.dims[2];
  ds.pixels = std::move(images.data);
  ds.labels.assign(labels.data.begin(), labels.data.end());
  int32_t max_label = 0;
  for (int32_t y : ds.labels) max_label = std::max(max_label, y);
  ds.num_classes = num_classes > 0 ? num_classes : max_label + 1;
  for (int64_t i = 0; i < ds.n; ++i)
    if (ds.labels[size_t(i)] >= ds.num_classes)
      throw InputError(labels_path + ": label " + std::to_string(ds.labels[size_t(i)]) + " of item " +
                       std::to_string(i) + " is not a class (there are " + std::to_string(ds.num_classes) + ")");
  ds.class_names = class_names.empty() ? index_names(ds.num_classes) : class_names;
  if (int32_t(ds.class_names.size()) != ds.num_classes) throw Error("load_idx_pair: class name count mismatch");
  ds.source = images_path;
  return ds;
}

DataBundle load_idx_dir(const std::string& dir, const std::string& kind) {
  const bool fashion = kind == "fashion-mnist", mnist = kind == "mnist";
  if (!fashion && !mnist && kind != "idx") throw Error("load_idx_dir: unknown kind " + kind);
  const std::string title = fashion ? "Fashion-MNIST" : mnist ? "MNIST" : "IDX data";
  const std::string train_images = find_idx_file(dir, "train", "images", "idx3");
  if (train_images.empty()) {
    std::string how = fashion ? "install it with `sudo apt-get install dataset-fashion-mnist` or set HAMU_DATA=DIR"
                              : "expected train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                                "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] there";
    throw InputError(title + " not found in " + dir + ": " + how);
  }
  auto need = [&](const char* prefix, const char* what, const char* idx) {
    const std::string p = find_idx_file(dir, prefix, what, idx);
    if (p.empty())
      throw InputError(title + " in " + dir + " is incomplete: " + prefix + "-" + what + "-" + idx +
                       "-ubyte[.gz] is missing");
    return p;
  };
  const std::string train_labels = need("train", "labels", "idx1");
  const std::string test_images = need("t10k", "images", "idx3");
  const std::string test_labels = need("t10k", "labels", "idx1");

  const int32_t k = fashion || mnist ? 10 : 0;
  const std::vector<std::string> names = fashion ? fashion_mnist_class_names() : mnist ? mnist_class_names()
                                                                                       : std::vector<std::string>{};
  DataBundle b;
  b.train = load_idx_pair(train_images, train_labels, k, names);
  b.test = load_idx_pair(test_images, test_labels, k, names);
  if (b.train.h != b.test.h || b.train.w != b.test.w)
    throw InputError(test_images + ": images are " + std::to_string(b.test.h) + "x" + std::to_string(b.test.w) +
                     " but the training images are " + std::to_string(b.train.h) + "x" + std::to_string(b.train.w));
  if (k == 0) {
    // Generic IDX: both halves share one class count, the larger of the two.
    const int32_t classes = std::max(b.train.num_classes, b.test.num_classes);
    for (ImageDataset* ds : {&b.train, &b.test}) {
      ds->num_classes = classes;
      ds->class_names = index_names(classes);
    }
  }
  b.train.source = kind + ":" + dir + " (train)";
  b.test.source = kind + ":" + dir + " (test)";
  b.spec = kind + ":" + dir;
  return b;
}

}  // namespace hamu
