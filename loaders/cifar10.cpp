// loaders/cifar10.cpp: CIFAR-10 "binary version" reader (data_batch_1..5.bin, test_batch.bin).
#include <filesystem>

#include "engine/error.h"
#include "loaders/dataset.h"

namespace hamu {
namespace {

constexpr int64_t kSide = 32, kChannels = 3;
constexpr int64_t kPixels = kChannels * kSide * kSide;  // 3072: R plane, G plane, B plane
constexpr int64_t kRecord = 1 + kPixels;                // label byte first
// The real files are 30,730,000 bytes; anything beyond a few of those is not a CIFAR-10 batch.
constexpr int64_t kMaxFileBytes = int64_t(1) << 31;

bool is_file(const std::string& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec);
}

ImageDataset empty_cifar(const std::string& source) {
  ImageDataset ds;
  ds.c = kChannels;
  ds.h = ds.w = kSide;
  ds.num_classes = 10;
  ds.class_names = cifar10_class_names();
  ds.source = source;
  return ds;
}

}  // namespace

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {"plane", "car",  "bird",  "cat",  "deer",
                                                 "dog",   "frog", "horse", "ship", "truck"};
  return names;
}

void read_cifar10_file(const std::string& path, ImageDataset& out) {
  const std::vector<uint8_t> bytes = read_file_bytes(path, kMaxFileBytes);
  const int64_t size = int64_t(bytes.size());
  if (size == 0) throw InputError(path + ": empty file, expected CIFAR-10 records of 3073 bytes");
  if (size % kRecord != 0)
    throw InputError(path + ": size " + std::to_string(size) +
                     " is not a multiple of 3073 (1 label byte + 3072 pixel bytes): truncated, or not the "
                     "CIFAR-10 binary version");
  const int64_t records = size / kRecord;
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t label = bytes[size_t(r * kRecord)];
    if (label >= 10)
      throw InputError(path + ": record " + std::to_string(r) + " has label " + std::to_string(label) +
                       ", CIFAR-10 labels are 0..9 (is this the CIFAR-100 binary format?)");
  }
  const size_t base = out.pixels.size();
  out.pixels.resize(base + size_t(records * kPixels));
  out.labels.reserve(out.labels.size() + size_t(records));
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t* rec = bytes.data() + r * kRecord;
    out.labels.push_back(rec[0]);
    // The record's plane order is already CHW.
    std::copy(rec + 1, rec + kRecord, out.pixels.begin() + std::ptrdiff_t(base + size_t(r * kPixels)));
  }
  out.n += records;
}

DataBundle load_cifar10_dir(const std::string& dir_in) {
  std::string dir = dir_in;
  if (!is_file(dir + "/data_batch_1.bin") && is_file(dir + "/cifar-10-batches-bin/data_batch_1.bin"))
    dir += "/cifar-10-batches-bin";
  if (!is_file(dir + "/data_batch_1.bin") && !is_file(dir + "/test_batch.bin"))
    throw InputError("CIFAR-10 not found in " + dir_in +
                     ": expected data_batch_1.bin ... data_batch_5.bin and test_batch.bin (the CIFAR-10 binary "
                     "version, unpacked from cifar-10-binary.tar.gz)");
  DataBundle b;
  b.train = empty_cifar("cifar10:" + dir + " (train)");
  b.test = empty_cifar("cifar10:" + dir + " (test)");
  for (int i = 1; i <= 5; ++i) {
    const std::string p = dir + "/data_batch_" + std::to_string(i) + ".bin";
    if (!is_file(p)) throw InputError("CIFAR-10 in " + dir + " is incomplete: " + p + " is missing");
    read_cifar10_file(p, b.train);
  }
  const std::string t = dir + "/test_batch.bin";
  if (!is_file(t)) throw InputError("CIFAR-10 in " + dir + " is incomplete: " + t + " is missing");
  read_cifar10_file(t, b.test);
  b.spec = "cifar10:" + dir_in;
  return b;
}

}  // namespace hamu
