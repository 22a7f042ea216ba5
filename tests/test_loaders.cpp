// tests/test_loaders.cpp: IDX, CIFAR-10 and image-folder readers (good and hostile files), --data
// specs, --split forms, normalisation and batching.
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "engine/error.h"
#include "engine/rng.h"
#include "loaders/data.h"
#include "tests/files.h"

using namespace hamu;
using namespace hamu::testing;
namespace fs = std::filesystem;

namespace {

Bytes idx_images(uint32_t n, uint32_t h, uint32_t w, const Bytes& pixels, uint32_t magic = 2051) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, n);
  put_be32(b, h);
  put_be32(b, w);
  b.insert(b.end(), pixels.begin(), pixels.end());
  return b;
}

Bytes idx_labels(const Bytes& labels, uint32_t magic = 2049) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, uint32_t(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

Bytes ramp(size_t n, int mul = 7, int add = 3) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t((i * size_t(mul) + size_t(add)) % 256);
  return b;
}

// Writes a Fashion-MNIST-style folder: train (n_train) and t10k (n_test) in plain or gzip files.
void write_idx_dir(const std::string& dir, int n_train, int n_test, int h, int w, int classes, bool gz) {
  auto emit = [&](const std::string& name, const Bytes& b) { write_bytes(dir + "/" + name + (gz ? ".gz" : ""), gz ? gzip_bytes(b) : b); };
  for (auto [prefix, n] : {std::pair<const char*, int>{"train", n_train}, {"t10k", n_test}}) {
    Bytes labels(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) labels[size_t(i)] = uint8_t(i % classes);
    emit(std::string(prefix) + "-images-idx3-ubyte", idx_images(uint32_t(n), uint32_t(h), uint32_t(w), ramp(size_t(n * h * w), 5, n)));
    emit(std::string(prefix) + "-labels-idx1-ubyte", idx_labels(labels));
  }
}

}  // namespace

// ---- IDX ---------------------------------------------------------------------------------------

TEST_CASE("idx: plain and gzip files read back exactly") {
  TempDir t;
  const Bytes px = ramp(5 * 3 * 4);
  const Bytes lab = {0, 1, 2, 1, 0};
  for (bool gz : {false, true}) {
    const std::string ip = t / (gz ? "img.gz" : "img"), lp = t / (gz ? "lab.gz" : "lab");
    write_bytes(ip, gz ? gzip_bytes(idx_images(5, 3, 4, px)) : idx_images(5, 3, 4, px));
    write_bytes(lp, gz ? gzip_bytes(idx_labels(lab)) : idx_labels(lab));
    const IdxArray a = read_idx(ip, 2051);
    CHECK(a.dims == std::vector<int64_t>{5, 3, 4});
    CHECK(a.data == px);
    const ImageDataset ds = load_idx_pair(ip, lp, 0, {});
    CHECK(ds.n == 5);
    CHECK(ds.c == 1);
    CHECK(ds.h == 3);
    CHECK(ds.w == 4);
    CHECK(ds.pixels == px);
    CHECK(ds.labels == std::vector<int32_t>{0, 1, 2, 1, 0});
    CHECK(ds.num_classes == 3);
    CHECK(ds.class_names == std::vector<std::string>{"0", "1", "2"});
    CHECK(ds.class_counts() == std::vector<int64_t>{2, 2, 1});
    CHECK(ds.indices_of_class(1) == std::vector<int64_t>{1, 3});
  }
}

TEST_CASE("idx: folders of the MNIST family") {
  TempDir t;
  write_idx_dir(t / "fm", 20, 10, 4, 3, 10, true);
  DataBundle b = load_idx_dir(t / "fm", "fashion-mnist");
  CHECK(b.train.n == 20);
  CHECK(b.test.n == 10);
  CHECK(b.train.class_names[0] == "T-shirt/top");
  CHECK(b.train.class_names[9] == "Ankle boot");
  CHECK(b.train.class_counts() == std::vector<int64_t>(10, 2));

  write_idx_dir(t / "plain", 6, 4, 2, 2, 3, false);
  b = load_idx_dir(t / "plain", "idx");
  CHECK(b.train.num_classes == 3);
  CHECK(b.test.num_classes == 3);
  b = load_idx_dir(t / "plain", "mnist");
  CHECK(b.train.num_classes == 10);
  CHECK(b.train.class_names[7] == "7");

  // The dotted spelling some MNIST mirrors use.
  write_idx_dir(t / "dots", 4, 4, 2, 2, 2, false);
  for (const char* name : {"train-images", "train-labels", "t10k-images", "t10k-labels"}) {
    const std::string kind = std::string(name).find("images") != std::string::npos ? "idx3" : "idx1";
    fs::rename(t / ("dots/" + std::string(name) + "-" + kind + "-ubyte"), t / ("dots/" + std::string(name) + "." + kind + "-ubyte"));
  }
  CHECK(load_idx_dir(t / "dots", "mnist").train.n == 4);
}

TEST_CASE("idx: hostile and broken files get errors naming the file") {
  TempDir t;
  const Bytes px = ramp(5 * 3 * 4);
  auto err_images = [&](const std::string& name, const Bytes& b) {
    write_bytes(t / name, b);
    const std::string msg = input_error([&] { read_idx(t / name, 2051); });
    CHECK_MSG_HAS(msg, t / name);
    return msg;
  };
  CHECK_MSG_HAS(err_images("labels_as_images", idx_labels({1, 2})), "IDX label file");
  CHECK_MSG_HAS(err_images("not_idx", Bytes{0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1}), "not an IDX file");
  CHECK_MSG_HAS(err_images("short", Bytes{0, 0}), "too short");
  CHECK_MSG_HAS(err_images("dims_cut", Bytes{0, 0, 8, 3, 0, 0, 0, 5}), "dimensions missing");
  CHECK_MSG_HAS(err_images("zero_dim", idx_images(0, 3, 4, {})), "must be positive");
  CHECK_MSG_HAS(err_images("overflow", idx_images(0x7fffffff, 0x7fffffff, 0x7fffffff, {})), "not a real data set");
  CHECK_MSG_HAS(err_images("truncated", idx_images(5, 3, 4, Bytes(px.begin(), px.end() - 7))), "truncated");
  Bytes extra = idx_images(5, 3, 4, px);
  extra.push_back(9);
  CHECK_MSG_HAS(err_images("trailing", extra), "unexpected bytes");
  CHECK_MSG_HAS(err_images("empty", Bytes{}), "too short");

  // gzip variants: truncated stream, corrupted stream, a header promising gigabytes, trailing data.
  const Bytes good_gz = gzip_bytes(idx_images(5, 3, 4, px));
  std::string msg = err_images("cut.gz", Bytes(good_gz.begin(), good_gz.begin() + std::ptrdiff_t(good_gz.size() / 2)));
  CHECK((contains(msg, "gzip") || contains(msg, "truncated")));
  Bytes flipped = good_gz;
  for (size_t i = 12; i < flipped.size() - 8; ++i) flipped[i] ^= 0x5a;
  CHECK_MSG_HAS(err_images("corrupt.gz", flipped), "gzip");
  Bytes crc_bad = good_gz;
  crc_bad[crc_bad.size() - 6] ^= 0xff;  // the CRC trailer: the data inflates, the check fails
  CHECK_MSG_HAS(err_images("crc.gz", crc_bad), "gzip");
  CHECK_MSG_HAS(err_images("huge.gz", gzip_bytes(idx_images(1u << 20, 64, 64, px))), "truncated");
  Bytes more = idx_images(5, 3, 4, px);
  more.insert(more.end(), 100, 1);
  CHECK_MSG_HAS(err_images("trailing.gz", gzip_bytes(more)), "unexpected bytes");
  CHECK_MSG_HAS(input_error([&] { read_idx(t / "missing", 2051); }), "no such file");
  CHECK_MSG_HAS(input_error([&] { read_idx(t.path, 2051); }), "folder");

  // Pairs: count mismatch and labels outside the class range.
  write_bytes(t / "img", idx_images(5, 3, 4, px));
  write_bytes(t / "lab4", idx_labels({0, 1, 2, 3}));
  msg = input_error([&] { load_idx_pair(t / "img", t / "lab4", 10, {}); });
  CHECK_MSG_HAS(msg, t / "img");
  CHECK_MSG_HAS(msg, t / "lab4");
  write_bytes(t / "lab_big", idx_labels({0, 1, 10, 3, 4}));
  msg = input_error([&] { load_idx_pair(t / "img", t / "lab_big", 10, mnist_class_names()); });
  CHECK_MSG_HAS(msg, t / "lab_big");
  CHECK_MSG_HAS(msg, "label 10");
}

TEST_CASE("idx: missing and incomplete folders") {
  TempDir t;
  std::string msg = input_error([&] { load_idx_dir(t / "nothing", "fashion-mnist"); });
  CHECK_MSG_HAS(msg, "Fashion-MNIST not found in " + (t / "nothing"));
  CHECK_MSG_HAS(msg, "sudo apt-get install dataset-fashion-mnist");
  CHECK_MSG_HAS(msg, "HAMU_DATA");
  write_idx_dir(t / "part", 4, 4, 2, 2, 2, false);
  fs::remove(t / "part/t10k-labels-idx1-ubyte");
  msg = input_error([&] { load_idx_dir(t / "part", "mnist"); });
  CHECK_MSG_HAS(msg, "t10k-labels-idx1-ubyte");
  CHECK_MSG_HAS(msg, "missing");
}

// ---- CIFAR-10 ----------------------------------------------------------------------------------

namespace {
Bytes cifar_records(int count, int seed) {
  Bytes b;
  for (int r = 0; r < count; ++r) {
    b.push_back(uint8_t((r + seed) % 10));
    const Bytes px = ramp(3072, 3 + r, seed);
    b.insert(b.end(), px.begin(), px.end());
  }
  return b;
}
void write_cifar_dir(const std::string& dir) {
  for (int i = 1; i <= 5; ++i) write_bytes(dir + "/data_batch_" + std::to_string(i) + ".bin", cifar_records(2, i));
  write_bytes(dir + "/test_batch.bin", cifar_records(3, 9));
}
}  // namespace

TEST_CASE("cifar10: binary batches read back exactly") {
  TempDir t;
  write_cifar_dir(t / "c");
  DataBundle b = load_cifar10_dir(t / "c");
  CHECK(b.train.n == 10);
  CHECK(b.test.n == 3);
  CHECK(b.train.c == 3);
  CHECK(b.train.h == 32);
  CHECK(b.train.w == 32);
  CHECK(b.train.class_names[0] == "plane");
  CHECK(b.train.class_names[9] == "truck");
  // Record r of batch i: label (r+i)%10, pixels = ramp(3072, 3+r, i), already R, G, B planes.
  for (int i = 1; i <= 5; ++i)
    for (int r = 0; r < 2; ++r) {
      const int64_t k = (i - 1) * 2 + r;
      CHECK(b.train.labels[size_t(k)] == (r + i) % 10);
      const Bytes want = ramp(3072, 3 + r, i);
      CHECK(std::equal(want.begin(), want.end(), b.train.image(k)));
    }
  CHECK(b.test.labels == std::vector<int32_t>{9, 0, 1});
  // The folder the archive unpacks to is found one level down.
  write_cifar_dir(t / "top/cifar-10-batches-bin");
  CHECK(load_cifar10_dir(t / "top").train.n == 10);
  CHECK(load_data("cifar10:" + (t / "top")).spec == "cifar10:" + (t / "top"));
}

TEST_CASE("cifar10: bad files get errors naming the file") {
  TempDir t;
  write_cifar_dir(t / "c");
  Bytes cut = cifar_records(2, 1);
  cut.pop_back();
  write_bytes(t / "c/data_batch_3.bin", cut);
  std::string msg = input_error([&] { load_cifar10_dir(t / "c"); });
  CHECK_MSG_HAS(msg, "data_batch_3.bin");
  CHECK_MSG_HAS(msg, "multiple of 3073");

  Bytes bad_label = cifar_records(2, 1);
  bad_label[3073] = 10;
  write_bytes(t / "c/data_batch_3.bin", bad_label);
  msg = input_error([&] { load_cifar10_dir(t / "c"); });
  CHECK_MSG_HAS(msg, "data_batch_3.bin");
  CHECK_MSG_HAS(msg, "label 10");

  write_bytes(t / "c/data_batch_3.bin", {});
  CHECK_MSG_HAS(input_error([&] { load_cifar10_dir(t / "c"); }), "empty");

  write_bytes(t / "c/data_batch_3.bin", cifar_records(2, 1));
  fs::remove(t / "c/test_batch.bin");
  msg = input_error([&] { load_cifar10_dir(t / "c"); });
  CHECK_MSG_HAS(msg, "test_batch.bin");
  msg = input_error([&] { load_cifar10_dir(t / "none"); });
  CHECK_MSG_HAS(msg, "CIFAR-10 not found in " + (t / "none"));
}

// ---- image folders -----------------------------------------------------------------------------

namespace {
// A w x h image with `comp` interleaved channels whose values depend on (seed, x, y, channel).
Bytes pattern(int w, int h, int comp, int seed) {
  Bytes b(static_cast<size_t>(w * h * comp));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < comp; ++c) b[size_t((y * w + x) * comp + c)] = uint8_t((seed * 31 + x * 17 + y * 5 + c * 60) % 256);
  return b;
}
void write_png(const std::string& path, int w, int h, int comp, int seed) {
  fs::create_directories(fs::path(path).parent_path());
  const Bytes px = pattern(w, h, comp, seed);
  REQUIRE(stbi_write_png(path.c_str(), w, h, comp, px.data(), w * comp) != 0);
}
void write_bmp(const std::string& path, int w, int h, int comp, int seed) {
  fs::create_directories(fs::path(path).parent_path());
  const Bytes px = pattern(w, h, comp, seed);
  REQUIRE(stbi_write_bmp(path.c_str(), w, h, comp, px.data()) != 0);
}
// HWC -> CHW, as the loader stores images.
Bytes to_chw(const Bytes& hwc, int w, int h, int comp) {
  Bytes out(hwc.size());
  for (int p = 0; p < w * h; ++p)
    for (int c = 0; c < comp; ++c) out[size_t(c * w * h + p)] = hwc[size_t(p * comp + c)];
  return out;
}
}  // namespace

TEST_CASE("images: class folders decode exactly, sorted by name") {
  TempDir t;
  write_png(t / "imgs/dog/a.png", 5, 4, 3, 1);
  write_bmp(t / "imgs/dog/b.bmp", 5, 4, 3, 2);
  write_png(t / "imgs/cat/z.png", 5, 4, 3, 3);
  write_png(t / "imgs/cat/nested/y.PNG", 5, 4, 3, 4);
  write_bytes(t / "imgs/cat/notes.txt", {'h', 'i'});  // not an image: ignored
  write_bytes(t / "imgs/.hidden/x.png", {1, 2, 3});   // hidden: ignored
  ImageFolderOptions opt;
  opt.holdout = 0;
  DataBundle b = load_image_folder(t / "imgs", opt);
  CHECK(b.train.class_names == std::vector<std::string>{"cat", "dog"});
  CHECK(b.train.n == 4);
  CHECK(b.test.n == 0);
  CHECK(b.train.c == 3);
  CHECK(b.train.h == 4);
  CHECK(b.train.w == 5);
  CHECK(b.train.labels == std::vector<int32_t>{0, 0, 1, 1});
  // Sorted paths inside cat: "nested/y.PNG" before "z.png".
  const int seeds[] = {4, 3, 1, 2};
  for (int i = 0; i < 4; ++i) {
    const Bytes want = to_chw(pattern(5, 4, 3, seeds[i]), 5, 4, 3);
    CHECK(std::equal(want.begin(), want.end(), b.train.image(i)));
  }
}

TEST_CASE("images: channels and size from the first image, conversion and resize") {
  TempDir t;
  write_png(t / "g/a/1.png", 4, 4, 1, 1);  // grey first: the data set is grey
  write_png(t / "g/b/1.png", 8, 8, 3, 2);  // colour and larger: converted and resized
  ImageFolderOptions opt;
  opt.holdout = 0;
  DataBundle b = load_image_folder(t / "g", opt);
  CHECK(b.train.c == 1);
  CHECK(b.train.h == 4);
  CHECK(b.train.w == 4);
  const Bytes want = pattern(4, 4, 1, 1);
  CHECK(std::equal(want.begin(), want.end(), b.train.image(0)));
  opt.channels = 3;
  opt.h = 2;
  opt.w = 6;
  b = load_image_folder(t / "g", opt);
  CHECK(b.train.c == 3);
  CHECK(b.train.h == 2);
  CHECK(b.train.w == 6);
  // Through the spec, with canonical options.
  b = load_data("images:" + (t / "g") + ",size=3x3,channels=1,holdout=0");
  CHECK(b.train.h == 3);
  CHECK(b.spec == "images:" + (t / "g") + ",size=3x3,channels=1,holdout=0");
}

TEST_CASE("images: bilinear resize") {
  const uint8_t src[2] = {0, 100};
  uint8_t dst[4];
  resize_bilinear(src, 1, 1, 2, dst, 1, 4);
  CHECK(std::vector<int>(dst, dst + 4) == std::vector<int>{0, 25, 75, 100});
  uint8_t flat[16];
  std::fill(flat, flat + 16, 77);
  uint8_t small[4];
  resize_bilinear(flat, 1, 4, 4, small, 2, 2);
  CHECK(std::vector<int>(small, small + 4) == std::vector<int>(4, 77));
}

TEST_CASE("images: train/test folders and the seeded per-class holdout") {
  TempDir t;
  for (int i = 0; i < 3; ++i) {
    write_png(t / ("s/train/a/" + std::to_string(i) + ".png"), 3, 3, 1, i);
    write_png(t / ("s/train/b/" + std::to_string(i) + ".png"), 3, 3, 1, 10 + i);
  }
  write_png(t / "s/test/b/0.png", 3, 3, 1, 20);
  DataBundle b = load_image_folder(t / "s", {});
  CHECK(b.train.n == 6);
  CHECK(b.test.n == 1);
  CHECK(b.test.labels == std::vector<int32_t>{1});
  CHECK(b.test.class_names == b.train.class_names);

  for (int i = 0; i < 20; ++i) write_png(t / ("h/a/" + std::to_string(100 + i) + ".png"), 2, 2, 1, i);
  for (int i = 0; i < 10; ++i) write_png(t / ("h/b/" + std::to_string(100 + i) + ".png"), 2, 2, 1, 50 + i);
  const DataBundle h1 = load_image_folder(t / "h", {});
  const DataBundle h2 = load_image_folder(t / "h", {});
  CHECK(h1.train.n == 27);
  CHECK(h1.test.n == 3);
  CHECK(h1.test.class_counts() == std::vector<int64_t>{2, 1});
  CHECK(h1.test.pixels == h2.test.pixels);
  ImageFolderOptions other;
  other.holdout_seed = 99;
  const DataBundle h3 = load_image_folder(t / "h", other);
  CHECK(h3.test.n == 3);
}

TEST_CASE("images: errors name the folder or file") {
  TempDir t;
  CHECK_MSG_HAS(input_error([&] { load_image_folder(t / "nope", {}); }), "no such folder");
  fs::create_directories(t / "empty");
  CHECK_MSG_HAS(input_error([&] { load_image_folder(t / "empty", {}); }), "no class folders");
  fs::create_directories(t / "noimg/a");
  write_bytes(t / "noimg/a/readme.txt", {'x'});
  CHECK_MSG_HAS(input_error([&] { load_image_folder(t / "noimg", {}); }), t / "noimg/a");
  write_png(t / "bad/a/1.png", 3, 3, 1, 1);
  write_bytes(t / "bad/a/2.png", {0x89, 'P', 'N', 'G', 1, 2, 3, 4, 5});
  std::string msg = input_error([&] { load_image_folder(t / "bad", {}); });
  CHECK_MSG_HAS(msg, t / "bad/a/2.png");
  write_png(t / "cut/a/1.png", 3, 3, 1, 1);
  write_png(t / "cut/a/2.png", 16, 16, 3, 1);
  fs::resize_file(t / "cut/a/2.png", 60);
  CHECK_MSG_HAS(input_error([&] { load_image_folder(t / "cut", {}); }), t / "cut/a/2.png");
  write_png(t / "tt/train/a/1.png", 3, 3, 1, 1);
  write_png(t / "tt/test/zzz/1.png", 3, 3, 1, 1);
  CHECK_MSG_HAS(input_error([&] { load_image_folder(t / "tt", {}); }), "zzz");
  // A BMP header claiming a gigantic image is refused before decoding.
  Bytes bmp = {'B', 'M', 0, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0};
  for (uint32_t v : {16000u, 16000u}) for (int s = 0; s < 32; s += 8) bmp.push_back(uint8_t(v >> s));
  bmp.insert(bmp.end(), {1, 0, 24, 0, 0, 0, 0, 0});
  bmp.resize(80, 0);
  write_png(t / "giant/a/0.png", 3, 3, 3, 1);
  write_bytes(t / "giant/a/1.bmp", bmp);
  CHECK_MSG_HAS(input_error([&] { load_image_folder(t / "giant", {}); }), t / "giant/a/1.bmp");
}

// ---- --data ------------------------------------------------------------------------------------


TEST_CASE("--data: parsing, defaults, HAMU_DATA and errors") {
  {
    testing::EnvVar env("HAMU_DATA", nullptr);
    DataSpec s = parse_data_spec("");
    CHECK(s.kind == "fashion-mnist");
    CHECK(s.dir == kFashionMnistDir);
    CHECK(s.canonical == "fashion-mnist");
    CHECK_MSG_HAS(input_error([] { parse_data_spec("mnist"); }), "--data");
    CHECK_MSG_HAS(input_error([] { parse_data_spec("cifar10"); }), "HAMU_DATA");
  }
  {
    TempDir t;
    testing::EnvVar env("HAMU_DATA", (t / "absent").c_str());
    CHECK(parse_data_spec("fashion-mnist").dir == t / "absent");
    const std::string msg = input_error([] { load_data("fashion-mnist"); });
    CHECK_MSG_HAS(msg, "Fashion-MNIST not found in " + (t / "absent"));
    CHECK_MSG_HAS(msg, "apt-get install dataset-fashion-mnist");
    write_idx_dir(t / "absent", 4, 2, 2, 2, 2, true);
    CHECK(load_data("fashion-mnist").train.n == 4);
    CHECK(load_data("idx:" + (t / "absent")).spec == "idx:" + (t / "absent"));
  }
  CHECK_MSG_HAS(input_error([] { parse_data_spec("foo:bar"); }), "--data");
  CHECK_MSG_HAS(input_error([] { parse_data_spec("cifar"); }), "--data");
  CHECK_MSG_HAS(input_error([] { parse_data_spec("mnist:"); }), "--data");
  CHECK_MSG_HAS(input_error([] { parse_data_spec("images:/x,size=0x3"); }), "--data");
  CHECK_MSG_HAS(input_error([] { parse_data_spec("images:/x,size=4"); }), "--data");
  CHECK_MSG_HAS(input_error([] { parse_data_spec("images:/x,channels=2"); }), "--data");
  CHECK_MSG_HAS(input_error([] { parse_data_spec("images:/x,colour=1"); }), "--data");
  CHECK_MSG_HAS(input_error([] { parse_data_spec("images:/x,holdout=1"); }), "--data");
  CHECK(is_image_data_spec("cifar10:/x"));
  CHECK_FALSE(is_image_data_spec("qa:/x.jsonl"));
  CHECK_FALSE(is_image_data_spec("wordnet-qa"));
}

// ---- --split -----------------------------------------------------------------------------------

namespace {
std::vector<int32_t> cyclic_labels(int n, int classes) {
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) y[size_t(i)] = i % classes;
  return y;
}
// retain is ascending, disjoint from forget, and together they cover 0..n-1.
void check_partition(const Split& s, int64_t n) {
  CHECK(std::is_sorted(s.retain.begin(), s.retain.end()));
  std::vector<int64_t> all = s.forget;
  all.insert(all.end(), s.retain.begin(), s.retain.end());
  std::sort(all.begin(), all.end());
  std::vector<int64_t> want(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) want[size_t(i)] = i;
  CHECK(all == want);
}
}  // namespace

TEST_CASE("--split class=C is the whole class, ascending") {
  const auto y = cyclic_labels(100, 10);
  const Split s = make_split("class=3", y, 10, 5);
  std::vector<int64_t> want;
  for (int64_t i = 3; i < 100; i += 10) want.push_back(i);
  CHECK(s.forget == want);
  CHECK(s.retain.size() == 90);
  check_partition(s, 100);
  CHECK(s.spec == "class=3");
  CHECK(make_split("class=3,rho=0", y, 10, 5).forget == want);
  // By name, through a data set.
  ImageDataset ds;
  ds.n = 100;
  ds.labels = y;
  ds.num_classes = 10;
  ds.class_names = fashion_mnist_class_names();
  CHECK(make_split("class=trouser", ds, 0).forget == make_split("class=1", y, 10, 0).forget);
}

TEST_CASE("--split class=C,rho=X follows the reference algorithm") {
  const auto y = cyclic_labels(200, 10);  // 20 per class
  const Split s = make_split("class=2,rho=0.5", y, 10, 42);
  CHECK(s.seed == 42);
  CHECK(s.spec == "class=2,rho=0.5,seed=42");
  CHECK(s.forget.size() == 20);
  check_partition(s, 200);
  CHECK(std::set<int64_t>(s.forget.begin(), s.forget.end()).size() == 20);
  // The first |M|-k entries are kept class members; the rest are drawn from the pool.
  for (int i = 0; i < 10; ++i) CHECK(y[size_t(s.forget[size_t(i)])] == 2);
  // Replaying the algorithm by hand with the same Rng gives the same list.
  std::vector<int64_t> m, others;
  for (int64_t i = 0; i < 200; ++i) (y[size_t(i)] == 2 ? m : others).push_back(i);
  Rng rng(42);
  rng.shuffle(m);
  others.insert(others.end(), m.begin(), m.begin() + 10);
  rng.shuffle(others);
  std::vector<int64_t> want(m.begin() + 10, m.end());
  want.insert(want.end(), others.begin(), others.begin() + 10);
  CHECK(s.forget == want);

  // Reproducible for a seed, different across seeds; the canonical spec carries its seed.
  CHECK(make_split("class=2,rho=0.5", y, 10, 42).forget == s.forget);
  CHECK(make_split("class=2,rho=0.5", y, 10, 43).forget != s.forget);
  const Split again = make_split(s.spec, y, 10, 7);
  CHECK(again.forget == s.forget);
  CHECK(again.seed == 42);

  for (double rho : {0.25, 0.75}) {
    const Split r = make_split("class=5,rho=" + std::to_string(rho), y, 10, 1);
    CHECK(r.forget.size() == 20);
    check_partition(r, 200);
  }
}

TEST_CASE("--split class=C,rho=1 is a random 10% of the training set") {
  const auto y = cyclic_labels(95, 10);
  const Split s = make_split("class=2,rho=1", y, 10, 3);
  CHECK(s.forget.size() == 10);  // ceil(0.1 * 95)
  check_partition(s, 95);
  CHECK(s.spec == "class=2,rho=1,seed=3");
  const auto perm = Rng(3).permutation(95);
  CHECK(s.forget == std::vector<int64_t>(perm.begin(), perm.begin() + 10));
}

TEST_CASE("--split random=X and indices=FILE") {
  const auto y = cyclic_labels(100, 10);
  Split s = make_split("random=0.25", y, 10, 9);
  CHECK(s.forget.size() == 25);
  CHECK(std::is_sorted(s.forget.begin(), s.forget.end()));
  check_partition(s, 100);
  CHECK(s.spec == "random=0.25,seed=9");
  CHECK(make_split("random=0.25", y, 10, 9).forget == s.forget);
  CHECK(make_split("random=0.25", y, 10, 10).forget != s.forget);
  CHECK(make_split("random=0.25,seed=9", y, 10, 0).forget == s.forget);
  CHECK(make_split("random=0.001", y, 10, 9).forget.size() == 1);

  TempDir t;
  write_bytes(t / "ok.txt", Bytes{'#', ' ', 'h', 'i', '\n', '7', '\r', '\n', '\n', ' ', '3', ' ', '#', 'x', '\n', '9', '9'});
  s = make_split("indices=" + (t / "ok.txt"), y, 10, 0);
  CHECK(s.forget == std::vector<int64_t>{7, 3, 99});
  CHECK(s.spec == "indices=" + (t / "ok.txt"));
  check_partition(s, 100);
}

TEST_CASE("--split errors name the flag and the problem") {
  const auto y = cyclic_labels(100, 10);
  auto err = [&](const std::string& spec, int32_t classes = 10) {
    const std::string msg = input_error([&] { make_split(spec, y, classes, 0); });
    CHECK_MSG_HAS(msg, "--split");
    return msg;
  };
  CHECK_MSG_HAS(err("forget=3"), "unknown split");
  CHECK_MSG_HAS(err(""), "empty");
  CHECK_MSG_HAS(err("class=10"), "out of range");
  CHECK_MSG_HAS(err("class=-1"), "out of range");
  CHECK_MSG_HAS(err("class=cat"), "neither");
  CHECK_MSG_HAS(err("class=3,rho=1.5"), "rho");
  CHECK_MSG_HAS(err("class=3,rho=-0.1"), "rho");
  CHECK_MSG_HAS(err("class=3,rho=abc"), "rho");
  CHECK_MSG_HAS(err("class=3,seed=x"), "seed");
  CHECK_MSG_HAS(err("class=3,bogus=1"), "bogus");
  CHECK_MSG_HAS(err("random=0"), "fraction");
  CHECK_MSG_HAS(err("random=1"), "fraction");
  CHECK_MSG_HAS(err("random=1.5"), "fraction");
  CHECK_MSG_HAS(err("random=0.999"), "whole training set");
  CHECK_MSG_HAS(err("class=10", 11), "empty");

  TempDir t;
  CHECK_MSG_HAS(err("indices=" + (t / "missing.txt")), "missing.txt");
  auto file_err = [&](const std::string& name, const std::string& text) {
    write_bytes(t / name, Bytes(text.begin(), text.end()));
    const std::string msg = err("indices=" + (t / name));
    CHECK_MSG_HAS(msg, t / name);
    return msg;
  };
  std::string msg = file_err("dup.txt", "1\n2\n\n1\n");
  CHECK_MSG_HAS(msg, "line 4");
  CHECK_MSG_HAS(msg, "repeats line 1");
  msg = file_err("range.txt", "1\n100\n");
  CHECK_MSG_HAS(msg, "line 2");
  CHECK_MSG_HAS(msg, "out of range");
  msg = file_err("neg.txt", "-1\n");
  CHECK_MSG_HAS(msg, "out of range");
  msg = file_err("garbage.txt", "1\n2x\n");
  CHECK_MSG_HAS(msg, "line 2");
  CHECK_MSG_HAS(msg, "not an integer");
  msg = file_err("float.txt", "1.5\n");
  CHECK_MSG_HAS(msg, "not an integer");
  msg = file_err("empty.txt", "# nothing\n\n");
  CHECK_MSG_HAS(msg, "empty");
  std::string all;
  for (int i = 0; i < 100; ++i) all += std::to_string(i) + "\n";
  CHECK_MSG_HAS(file_err("all.txt", all), "whole training set");
  // A class that is the whole training set.
  CHECK_MSG_HAS(input_error([] { make_split("class=0", std::vector<int32_t>(5, 0), 2, 0); }), "whole training set");
}

// ---- normalisation and batching ----------------------------------------------------------------

namespace {
ImageDataset random_dataset(int64_t n, int64_t c, int64_t h, int64_t w, int classes, uint64_t seed) {
  ImageDataset ds;
  ds.n = n;
  ds.c = c;
  ds.h = h;
  ds.w = w;
  ds.num_classes = classes;
  for (int i = 0; i < classes; ++i) ds.class_names.push_back(std::to_string(i));
  Rng rng(seed);
  ds.pixels.resize(size_t(n * c * h * w));
  for (auto& p : ds.pixels) p = uint8_t(rng.below(256));
  for (int64_t i = 0; i < n; ++i) ds.labels.push_back(int32_t(rng.below(uint64_t(classes))));
  ds.source = "synthetic";
  return ds;
}
}  // namespace

TEST_CASE("normalizer: mean and std match a direct computation") {
  const ImageDataset ds = random_dataset(37, 3, 5, 4, 4, 11);
  const std::vector<int64_t> subset = {1, 5, 9, 30};
  for (const auto& idx : {std::vector<int64_t>{}, subset}) {
    const Normalizer nm = compute_normalizer(ds, idx);
    REQUIRE(nm.channels() == 3);
    std::vector<int64_t> use = idx;
    if (use.empty())
      for (int64_t i = 0; i < ds.n; ++i) use.push_back(i);
    for (int64_t c = 0; c < 3; ++c) {
      double sum = 0, sq = 0, cnt = 0;
      for (int64_t i : use)
        for (int64_t j = 0; j < 20; ++j) {
          const double v = ds.image(i)[c * 20 + j] / 255.0;
          sum += v;
          cnt += 1;
        }
      const double mean = sum / cnt;
      for (int64_t i : use)
        for (int64_t j = 0; j < 20; ++j) {
          const double d = ds.image(i)[c * 20 + j] / 255.0 - mean;
          sq += d * d;
        }
      CHECK(nm.mean[size_t(c)] == doctest::Approx(mean).epsilon(1e-6));
      CHECK(nm.std[size_t(c)] == doctest::Approx(std::sqrt(sq / cnt)).epsilon(1e-6));
    }
  }
  // Serialisation round-trips bit for bit.
  const Normalizer nm = compute_normalizer(ds);
  const Normalizer back = Normalizer::parse(nm.to_string());
  CHECK(back.mean == nm.mean);
  CHECK(back.std == nm.std);
  CHECK_THROWS_AS(Normalizer::parse("mean=1;std=0"), InputError);
  CHECK_THROWS_AS(Normalizer::parse("mean=1,2;std=1"), InputError);
  CHECK_THROWS_AS(Normalizer::parse("avg=1;std=1"), InputError);
  CHECK_THROWS_AS(Normalizer::parse("mean=x;std=1"), InputError);
  // A constant channel does not divide by zero.
  ImageDataset flat = random_dataset(3, 1, 2, 2, 2, 1);
  std::fill(flat.pixels.begin(), flat.pixels.end(), uint8_t(51));
  const Normalizer fn = compute_normalizer(flat);
  CHECK(fn.mean[0] == doctest::Approx(0.2));
  CHECK(fn.std[0] == 1.0f);
}

TEST_CASE("batcher: every index once per epoch, reproducible, normalised") {
  const ImageDataset ds = random_dataset(50, 2, 3, 3, 5, 4);
  const Normalizer nm = compute_normalizer(ds);
  std::vector<int64_t> subset;
  for (int64_t i = 0; i < 50; i += 2) subset.push_back(i);  // 25 images
  BatchOptions opt;
  opt.batch_size = 7;
  opt.seed = 5;
  Batcher a(ds, subset, nm, opt), b(ds, subset, nm, opt);
  CHECK(a.num_batches() == 4);
  std::vector<std::vector<int64_t>> epochs;
  for (int e = 0; e < 2; ++e) {
    std::vector<int64_t> seen;
    Batch x, y;
    int count = 0;
    while (a.next(x)) {
      REQUIRE(b.next(y));
      CHECK(x.indices == y.indices);
      CHECK(x.images.shape() == Shape{x.size(), 2, 3, 3});
      CHECK(x.labels.shape() == Shape{x.size()});
      CHECK(x.labels.dtype() == DType::i32);
      CHECK(x.size() == (count < 3 ? 7 : 4));
      seen.insert(seen.end(), x.indices.begin(), x.indices.end());
      // Pixels and labels match the data set.
      const auto px = x.images.to_vector<float>();
      const auto lab = x.labels.to_vector<int32_t>();
      for (int64_t r = 0; r < x.size(); ++r) {
        const int64_t i = x.indices[size_t(r)];
        CHECK(lab[size_t(r)] == ds.labels[size_t(i)]);
        for (int64_t k = 0; k < 18; ++k) {
          const int64_t c = k / 9;
          const float want = float((ds.image(i)[k] / 255.0 - nm.mean[size_t(c)]) / nm.std[size_t(c)]);
          CHECK(px[size_t(r * 18 + k)] == doctest::Approx(want).epsilon(1e-6));
        }
      }
      ++count;
    }
    CHECK_FALSE(b.next(y));
    CHECK(count == 4);
    epochs.push_back(seen);
    std::sort(seen.begin(), seen.end());
    CHECK(seen == subset);
  }
  CHECK(epochs[0] != epochs[1]);
  CHECK(a.epoch() == 2);
  // Epochs replay without running the earlier ones.
  Batcher c(ds, subset, nm, opt);
  c.set_epoch(1);
  CHECK(c.order() == epochs[1]);
  // Another seed, another order; no shuffle keeps the subset order; drop_last drops the tail.
  opt.seed = 6;
  CHECK(Batcher(ds, subset, nm, opt).order() != epochs[0]);
  opt.shuffle = false;
  opt.drop_last = true;
  Batcher d(ds, subset, nm, opt);
  CHECK(d.order() == subset);
  CHECK(d.num_batches() == 3);
  CHECK(d.batch(2).indices == std::vector<int64_t>(subset.begin() + 14, subset.begin() + 21));

  const Batch g = gather_batch(ds, {3, 3, 0}, nm);
  CHECK(g.images.shape() == Shape{3, 2, 3, 3});
  CHECK_THROWS_AS(gather_batch(ds, {50}, nm), InputError);
  CHECK_THROWS_AS(Batcher(ds, {0, -1}, nm, opt), InputError);
  opt.batch_size = 0;
  CHECK_THROWS_AS(Batcher(ds, subset, nm, opt), InputError);
  opt.batch_size = 4;
  CHECK_THROWS_AS(Batcher(ds, subset, Normalizer::identity(3), opt), InputError);
}

// ---- the real Fashion-MNIST, when installed ----------------------------------------------------

TEST_CASE("fashion-mnist: the installed data set has the published shape") {
  const std::string dir = kFashionMnistDir;
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz") && !fs::exists(dir + "/train-images-idx3-ubyte")) {
    MESSAGE("skipped: Fashion-MNIST is not installed in " << dir << " (apt-get install dataset-fashion-mnist)");
    return;
  }
  const DataBundle b = load_data("fashion-mnist:" + dir);
  CHECK(b.train.n == 60000);
  CHECK(b.test.n == 10000);
  CHECK(b.train.c == 1);
  CHECK(b.train.h == 28);
  CHECK(b.train.w == 28);
  CHECK(b.train.class_counts() == std::vector<int64_t>(10, 6000));
  CHECK(b.test.class_counts() == std::vector<int64_t>(10, 1000));
  const Normalizer nm = compute_normalizer(b.train);
  CHECK(nm.mean[0] == doctest::Approx(0.2860).epsilon(1e-3));
  CHECK(nm.std[0] == doctest::Approx(0.3530).epsilon(1e-3));
  const Split s = make_split("class=0,rho=0.5", b.train, 42);
  CHECK(s.forget.size() == 6000);
  CHECK(s.retain.size() == 54000);
}
