// tests/test_hardening.cpp: regression tests for the hostile inputs of issue #15 (zero-size images,
// stb_image UB on JPEG Huffman tables, shape overflow, metadata-sized models, memory amplification,
// non-finite weights, IDX/holdout messages, stale temporaries), each named after its reproducer.
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "engine/atomic_file.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "kernels/kernels.h"
#include "loaders/data.h"
#include "models/checkpoint.h"
#include "tests/files.h"

using namespace hamu;
using namespace hamu::testing;
namespace fs = std::filesystem;

namespace {

void write_text(const std::string& path, const std::string& s) { write_bytes(path, Bytes(s.begin(), s.end())); }

void write_png(const std::string& path, int w, int h, int comp) {
  fs::create_directories(fs::path(path).parent_path());
  Bytes px(size_t(w * h * comp));
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(i * 37 + 11);
  REQUIRE(stbi_write_png(path.c_str(), w, h, comp, px.data(), w * comp) != 0);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

const Bytes kZeroWidthPgm = {'P', '5', ' ', '0', ' ', '1', '6', ' ', '2', '5', '5', '\n'};

}  // namespace

// ---- 1. zero-size images ------------------------------------------------------------------------

TEST_CASE("hardening 1: a zero-width image in a folder is an error naming it, wherever it sorts") {
  TempDir t;
  // Not the first image: used to reach the bilinear resize with a 0-wide source (segfault).
  write_png(t / "late/a/0.png", 4, 4, 1);
  write_bytes(t / "late/a/1.pgm", kZeroWidthPgm);
  write_png(t / "late/b/0.png", 4, 4, 1);
  std::string msg = input_error([&] { load_image_folder(t / "late", {}); });
  CHECK_MSG_HAS(msg, t / "late/a/1.pgm");
  CHECK_MSG_HAS(msg, "0x16");
  ImageFolderOptions sized;
  sized.h = sized.w = 8;
  CHECK_MSG_HAS(input_error([&] { load_image_folder(t / "late", sized); }), t / "late/a/1.pgm");
  // The first image: used to be "bad geometry", exit 1, no file named.
  write_bytes(t / "first/a/0.pgm", kZeroWidthPgm);
  write_png(t / "first/a/1.png", 4, 4, 1);
  write_png(t / "first/b/0.png", 4, 4, 1);
  msg = input_error([&] { load_data("images:" + (t / "first")); });
  CHECK_MSG_HAS(msg, t / "first/a/0.pgm");
  CHECK_THROWS_AS(resize_bilinear(nullptr, 1, 16, 0, nullptr, 4, 4), Error);
}

// ---- 2. stb_image and JPEG Huffman tables ----------------------------------------------------

TEST_CASE("hardening 2: a JPEG whose Huffman counts exceed 256 never reaches stb_image") {
  TempDir t;
  const Bytes repro = {0xFF, 0xD8, 0xFF, 0xC4, 0xAC, 0xEE, 0x11, 0xAC, 0xEE};
  CHECK_MSG_HAS(jpeg_structure_problem(repro.data(), repro.size()), "runs past the end");
  write_bytes(t / "a/x.jpg", repro);
  std::string msg = input_error([&] { decode_image_file(t / "a/x.jpg", 0); });
  CHECK_MSG_HAS(msg, t / "a/x.jpg");
  CHECK_MSG_HAS(msg, "corrupt JPEG");

  // The same table inside a segment whose length fits: the counts themselves are refused.
  Bytes dht = {0xFF, 0xD8, 0xFF, 0xC4, 0x01, 0x13, 0x00};  // length 0x113 = 275 = 2 + 17 + 256
  for (int i = 0; i < 16; ++i) dht.push_back(i < 2 ? 0xFF : 0);  // counts sum to 510
  dht.resize(4 + 0x113, 0);
  dht.insert(dht.end(), {0xFF, 0xD9});
  CHECK_MSG_HAS(jpeg_structure_problem(dht.data(), dht.size()), "sum to 510");
  // stb_image accepts 0xFF fill bytes before the start-of-image marker (found by the fuzzer).
  Bytes filled = {0xFF, 0xFF};
  filled.insert(filled.end(), repro.begin() + 1, repro.end());
  CHECK(image_header_problem(filled.data(), filled.size()) != "");

  // Real JPEGs from stb's writer pass the check and decode (grey and colour, odd sizes).
  for (auto [w, h, comp] : {std::tuple{5, 3, 1}, {17, 9, 3}, {64, 48, 3}}) {
    Bytes px(size_t(w * h * comp));
    for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(i * 13);
    const std::string path = t / ("ok" + std::to_string(w) + ".jpg");
    REQUIRE(stbi_write_jpg(path.c_str(), w, h, comp, px.data(), 90) != 0);
    std::ifstream f(path, std::ios::binary);
    const Bytes bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    CHECK(jpeg_structure_problem(bytes.data(), bytes.size()) == "");
    const DecodedImage d = decode_image_file(path, 0);
    CHECK(d.w == w);
    CHECK(d.h == h);
  }
}

TEST_CASE("hardening (fuzz): a JPEG scan that uses a Huffman table the file never defines is refused") {
  // Found by the CI fuzz smoke: stb_image decodes with the undefined table's uninitialised code limits
  // and reads past them (UBSan: index 18 out of bounds for 'unsigned int[18]').
  TempDir t;
  const Bytes sof = {0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00};
  const Bytes dht_dc0 = {0xFF, 0xC4, 0x00, 0x14, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00};
  const Bytes dht_ac0 = {0xFF, 0xC4, 0x00, 0x14, 0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00};
  auto jpeg = [&](std::initializer_list<Bytes> parts, Bytes sos) {
    Bytes b = {0xFF, 0xD8};
    for (const Bytes& p : parts) b.insert(b.end(), p.begin(), p.end());
    b.insert(b.end(), sos.begin(), sos.end());
    b.insert(b.end(), {0x12, 0x34, 0xFF, 0xD9});
    return b;
  };
  const Bytes sos_seq = {0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00};
  const Bytes none = jpeg({sof}, sos_seq);
  CHECK_MSG_HAS(jpeg_structure_problem(none.data(), none.size()), "DC Huffman table 0, which the file never defines");
  const Bytes dc_only = jpeg({sof, dht_dc0}, sos_seq);
  CHECK_MSG_HAS(jpeg_structure_problem(dc_only.data(), dc_only.size()), "AC Huffman table 0");
  const Bytes both = jpeg({sof, dht_dc0, dht_ac0}, sos_seq);
  CHECK(jpeg_structure_problem(both.data(), both.size()) == "");
  write_bytes(t / "a/x.jpg", none);
  const std::string msg = input_error([&] { decode_image_file(t / "a/x.jpg", 0); });
  CHECK_MSG_HAS(msg, t / "a/x.jpg");
  CHECK_MSG_HAS(msg, "never defines");

  // Progressive: a first DC scan needs DC tables only, a DC refinement none, an AC scan its AC table.
  Bytes sof2 = sof;
  sof2[1] = 0xC2;
  const Bytes dc_first = {0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x00, 0x01};
  const Bytes dc_refine = {0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x00, 0x10};
  const Bytes ac_scan = {0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x01, 0x3F, 0x00};
  const Bytes p1 = jpeg({sof2, dht_dc0}, dc_first), p2 = jpeg({sof2}, dc_refine), p3 = jpeg({sof2, dht_dc0}, ac_scan);
  CHECK(jpeg_structure_problem(p1.data(), p1.size()) == "");
  CHECK(jpeg_structure_problem(p2.data(), p2.size()) == "");
  CHECK_MSG_HAS(jpeg_structure_problem(p3.data(), p3.size()), "AC Huffman table 0");

  // JPEGs from another encoder (libjpeg via Pillow, scripts/make_image_fixtures.py) pass and decode:
  // progressive colour and grey (tables redefined between scans, refinement scans), optimised 4:2:0.
  const std::string dir = fs::path(__FILE__).parent_path().string() + "/fixtures/images/";
  for (const char* name : {"progressive.jpg", "progressive_grey.jpg", "optimized.jpg"}) {
    CAPTURE(name);
    std::ifstream f(dir + name, std::ios::binary);
    const Bytes bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    REQUIRE(!bytes.empty());
    CHECK(jpeg_structure_problem(bytes.data(), bytes.size()) == "");
    const DecodedImage d = decode_image_file(dir + name, 0);
    CHECK(d.w == 23);
    CHECK(d.h == 17);
  }
}

TEST_CASE("hardening (fuzz): a PNM header number that overflows stb_image's int parser is refused") {
  TempDir t;
  write_text(t / "a/x.pgm", "P5 2566666666 1 255\n");
  const std::string msg = input_error([&] { decode_image_file(t / "a/x.pgm", 0); });
  CHECK_MSG_HAS(msg, t / "a/x.pgm");
  CHECK_MSG_HAS(msg, "corrupt PNM");
  // 16-bit samples (stb converts their channels out of bounds) and pixel data shorter than the header says.
  const std::string wide = "P5 2 2 65535\n" + std::string(8, 'x'), cut = "P6 4 4 255\nxyz";
  CHECK_MSG_HAS(pnm_header_problem(reinterpret_cast<const uint8_t*>(wide.data()), wide.size()), "16-bit");
  CHECK_MSG_HAS(pnm_header_problem(reinterpret_cast<const uint8_t*>(cut.data()), cut.size()), "cut short");
  const std::string ok = "P6 # c\n 2 1 255\nabcdef";
  CHECK(pnm_header_problem(reinterpret_cast<const uint8_t*>(ok.data()), ok.size()) == "");
}

TEST_CASE("hardening (fuzz): PNG chunks past the end and zlib bombs are refused before stb_image") {
  TempDir t;
  write_png(t / "ok.png", 6, 5, 3);
  std::ifstream f(t / "ok.png", std::ios::binary);
  const Bytes good((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CHECK(png_structure_problem(good.data(), good.size()) == "");
  Bytes lying = good;  // the IHDR chunk (at byte 8) claims 2^31 bytes
  lying[8] = 0x80;
  CHECK_MSG_HAS(png_structure_problem(lying.data(), lying.size()), "runs past the end");
  // A 4x4 grey image whose IDAT inflates to 1 MiB.
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  auto chunk = [&](const char* type, const Bytes& body) {
    put_be32(png, uint32_t(body.size()));
    const size_t start = png.size();
    png.insert(png.end(), type, type + 4);
    png.insert(png.end(), body.begin(), body.end());
    put_be32(png, uint32_t(crc32(0, png.data() + start, uInt(png.size() - start))));
  };
  Bytes ihdr;
  put_be32(ihdr, 4);
  put_be32(ihdr, 4);
  ihdr.insert(ihdr.end(), {8, 0, 0, 0, 0});
  chunk("IHDR", ihdr);
  Bytes zeros(size_t(1) << 20, 0);
  uLongf zlen = compressBound(uLong(zeros.size()));
  Bytes z(zlen);
  REQUIRE(compress(z.data(), &zlen, zeros.data(), uLong(zeros.size())) == Z_OK);
  z.resize(zlen);
  chunk("IDAT", z);
  chunk("IEND", {});
  CHECK_MSG_HAS(png_structure_problem(png.data(), png.size()), "inflates to more");
}

TEST_CASE("hardening (fuzz): a PNG whose first image-data chunk is empty decodes as without it") {
  // Found by the CI fuzz smoke: stb_image 2.27 copies a first, zero-length IDAT into its not yet
  // allocated buffer (memcpy to null). Empty IDATs are legal and carry nothing, so they are dropped.
  TempDir t;
  write_png(t / "ok.png", 7, 3, 3);
  std::ifstream f(t / "ok.png", std::ios::binary);
  const Bytes good((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // Insert an empty IDAT (length 0, type, CRC of the type) before the first IDAT and after the last.
  auto find_chunk = [&](const Bytes& b, const char* type) {
    for (size_t pos = 8; pos + 12 <= b.size();) {
      if (std::equal(type, type + 4, b.begin() + std::ptrdiff_t(pos + 4))) return pos;
      pos += 12 + (size_t(b[pos]) << 24 | size_t(b[pos + 1]) << 16 | size_t(b[pos + 2]) << 8 | b[pos + 3]);
    }
    return size_t(0);
  };
  Bytes empty;
  put_be32(empty, 0);
  empty.insert(empty.end(), {'I', 'D', 'A', 'T'});
  put_be32(empty, uint32_t(crc32(0, empty.data() + 4, 4)));
  Bytes odd = good;
  const size_t first = find_chunk(odd, "IDAT");
  REQUIRE(first > 0);
  odd.insert(odd.begin() + std::ptrdiff_t(first), empty.begin(), empty.end());
  const size_t iend = find_chunk(odd, "IEND");
  REQUIRE(iend > first);
  odd.insert(odd.begin() + std::ptrdiff_t(iend), empty.begin(), empty.end());
  CHECK(png_structure_problem(odd.data(), odd.size()) == "");
  Bytes stripped = odd;
  drop_empty_png_data_chunks(stripped);
  CHECK(stripped == good);
  Bytes not_png = {'P', '5', ' ', '1', ' ', '1', ' ', '2', '5', '5', '\n', 7};
  const Bytes before = not_png;
  drop_empty_png_data_chunks(not_png);
  CHECK(not_png == before);
  write_bytes(t / "odd.png", odd);
  const DecodedImage a = decode_image_file(t / "ok.png", 0), b = decode_image_file(t / "odd.png", 0);
  CHECK(b.w == 7);
  CHECK(b.h == 3);
  CHECK(a.hwc == b.hwc);
}

// ---- 3. signed overflow in shapes -------------------------------------------------------------

TEST_CASE("hardening 3: shapes whose dimensions multiply past int64 are refused, zero or not") {
  const int64_t big = int64_t(1) << 32;
  CHECK_THROWS_AS(shape_numel({big, big, 0}), InputError);
  CHECK_THROWS_AS(shape_numel({0, big, big}), InputError);
  CHECK_THROWS_AS(contiguous_strides({big, big, 0}), InputError);
  CHECK_THROWS_AS(Tensor::empty({big, big, 0}), InputError);
  CHECK(shape_numel({big, 0, 3}) == 0);
  CHECK(contiguous_strides({2, 0, 3}) == Shape{3, 3, 1});  // PyTorch's strides for an empty tensor
  CHECK(shape_numel({int64_t(1) << 31, int64_t(1) << 31}) == int64_t(1) << 62);

  TempDir t;
  // A safetensors file of one header and no data (header padded to 8 bytes as the format asks).
  auto header_only = [&](const std::string& name, std::string header) {
    header.append((8 - header.size() % 8) % 8, ' ');
    Bytes file;
    for (int i = 0; i < 8; ++i) file.push_back(uint8_t(uint64_t(header.size()) >> (8 * i)));
    file.insert(file.end(), header.begin(), header.end());
    write_bytes(t / name, file);
    return t / name;
  };
  const std::string zero =
      header_only("zero.safetensors", R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})");
  const std::string msg = input_error([&] { load_safetensors(zero); });
  CHECK_MSG_HAS(msg, zero);
  CHECK_MSG_HAS(msg, "too many elements");
  // A shape with a zero whose other dimensions fit still loads (an empty tensor).
  const std::string empty = header_only("empty.safetensors", R"({"x":{"dtype":"F32","shape":[3,0,5],"data_offsets":[0,0]}})");
  CHECK(load_safetensors(empty).get("x").shape() == Shape{3, 0, 5});
  // Found by the fuzzer: an empty tensor with huge other dimensions copies (saves) in no time.
  const std::string wide = header_only(
      "wide.safetensors", R"({"x":{"dtype":"F32","shape":[1073741824,4294967096,0],"data_offsets":[0,0]}})");
  const Checkpoint ck = load_safetensors(wide);
  save_safetensors(t / "wide_again.safetensors", ck.tensors);
  CHECK(load_safetensors(t / "wide_again.safetensors").get("x").numel() == 0);

  // The same from model metadata: the value count is computed without overflow and refused.
  models::ModelSpec absurd{"mlp", 1000000, 1000000, 1000000, 1000000};
  CHECK_THROWS_AS(models::model_value_count(absurd), InputError);
}

// ---- 4. checkpoints whose metadata describes more than the file holds ---------------------------

TEST_CASE("hardening 4: a tiny checkpoint cannot make load_model build a huge model") {
  TempDir t;
  const auto t0 = std::chrono::steady_clock::now();
  // Metadata only (the 136-byte reproducer): a cnn with a million classes on 1000x1000 inputs.
  save_safetensors(t / "tiny.safetensors", {},
                   {{"arch", "cnn"}, {"in_channels", "1000000"}, {"height", "1000"}, {"width", "1000"},
                    {"num_classes", "1000000"}});
  CHECK(fs::file_size(t / "tiny.safetensors") < 200);
  std::string msg = input_error([&] { models::load_model(t / "tiny.safetensors"); });
  CHECK_MSG_HAS(msg, t / "tiny.safetensors");
  CHECK_MSG_HAS(msg, "metadata describes");
  // A real checkpoint whose metadata was edited to a larger input: refused before building too.
  Rng rng(1);
  const models::ModelSpec spec{"mlp", 1, 8, 8, 3};
  auto m = models::build_model(spec, rng);
  models::save_model(t / "m.safetensors", *m, spec, {});
  Checkpoint ck = load_safetensors(t / "m.safetensors");
  ck.metadata["height"] = "100000";
  ck.metadata["width"] = "100000";
  save_safetensors(t / "edited.safetensors", ck.tensors, ck.metadata);
  msg = input_error([&] { models::load_model(t / "edited.safetensors"); });
  CHECK_MSG_HAS(msg, t / "edited.safetensors");
  CHECK_MSG_HAS(msg, "metadata describes");
  CHECK(seconds_since(t0) < 5.0);
  CHECK(models::load_model(t / "m.safetensors").spec.describe() == spec.describe());
}

TEST_CASE("model_value_count agrees with the built models") {
  Rng rng(0);
  for (const char* arch : {"mlp", "cnn", "resnet20"})
    for (auto [c, h, w, k] : {std::tuple{1, 28, 28, 10}, {3, 32, 32, 10}, {2, 9, 13, 7}, {3, 4, 4, 2}}) {
      const models::ModelSpec spec{arch, c, h, w, k};
      auto m = models::build_model(spec, rng);
      int64_t n = 0;
      for (auto& [name, p] : m->named_parameters()) n += p.numel();
      for (auto& [name, b] : m->named_buffers()) n += b.numel();
      CHECK_MESSAGE(models::model_value_count(spec) == n, spec.describe());
    }
}

// ---- 5. memory amplification ------------------------------------------------------------------

TEST_CASE("hardening 5: a gzip IDX header claiming 2^34 bytes is refused before inflating") {
  TempDir t;
  Bytes idx;
  put_be32(idx, 2051);
  put_be32(idx, 1);
  put_be32(idx, 131072);
  put_be32(idx, 131072);  // 2^34 bytes claimed
  idx.resize(idx.size() + (size_t(8) << 20), 0);  // 8 MiB of zeros: about 8 KiB of gzip
  write_bytes(t / "bomb.gz", gzip_bytes(idx));
  const auto t0 = std::chrono::steady_clock::now();
  std::string msg = input_error([&] { read_idx(t / "bomb.gz", 2051); });
  CHECK_MSG_HAS(msg, t / "bomb.gz");
  CHECK((contains(msg, "can hold") || contains(msg, "memory limit")));
  // 1 GiB claimed: within the memory limit, but more than 8 KiB of deflate can expand to.
  idx[8] = 0, idx[9] = 0, idx[10] = 0x20, idx[11] = 0;  // 131072 x 8192
  write_bytes(t / "bomb1g.gz", gzip_bytes(idx));
  {
    EnvVar env("HAMU_MAX_MEMORY", "4G");
    msg = input_error([&] { read_idx(t / "bomb1g.gz", 2051); });
  }
  CHECK_MSG_HAS(msg, t / "bomb1g.gz");
  CHECK_MSG_HAS(msg, "can hold");
  CHECK(seconds_since(t0) < 1.0);
}

TEST_CASE("hardening 5: HAMU_MAX_MEMORY bounds what the readers allocate") {
  TempDir t;
  {
    EnvVar env("HAMU_MAX_MEMORY", "64K");
    CHECK(data_memory_limit() == 65536);
    Bytes idx;
    put_be32(idx, 2051);
    put_be32(idx, 2);
    put_be32(idx, 200);
    put_be32(idx, 200);  // 80,000 bytes > 64 KiB
    idx.resize(idx.size() + 80000, 7);
    write_bytes(t / "plain", idx);
    std::string msg = input_error([&] { read_idx(t / "plain", 2051); });
    CHECK_MSG_HAS(msg, t / "plain");
    CHECK_MSG_HAS(msg, "HAMU_MAX_MEMORY");
    write_bytes(t / "plain.gz", gzip_bytes(idx));
    CHECK_MSG_HAS(input_error([&] { read_idx(t / "plain.gz", 2051); }), "memory limit");
    // Images: the pixel cap follows the limit (64 bytes per pixel), checked from the header.
    CHECK(max_image_pixels() == 1024);
    write_png(t / "img/a/0.png", 40, 40, 1);
    msg = input_error([&] { decode_image_file(t / "img/a/0.png", 0); });
    CHECK_MSG_HAS(msg, t / "img/a/0.png");
    CHECK_MSG_HAS(msg, "pixels accepted");
  }
  {
    EnvVar env("HAMU_MAX_MEMORY", "lots");
    CHECK_MSG_HAS(input_error([] { data_memory_limit(); }), "HAMU_MAX_MEMORY=lots");
  }
  {
    EnvVar env("HAMU_MAX_MEMORY", nullptr);
    CHECK(data_memory_limit() > (int64_t(64) << 20));
    CHECK(max_image_pixels() == int64_t(1) << 24);
  }
  // An 8192x8192 PNG header (no pixel data needed) is refused from stbi_info, before any decode.
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  put_be32(png, 13);
  png.insert(png.end(), {'I', 'H', 'D', 'R'});
  put_be32(png, 8192);
  put_be32(png, 8192);
  png.insert(png.end(), {8, 6, 0, 0, 0});
  put_be32(png, uint32_t(crc32(0, png.data() + 12, 17)));
  write_bytes(t / "big/a/0.png", png);
  const std::string msg = input_error([&] { decode_image_file(t / "big/a/0.png", 0); });
  CHECK_MSG_HAS(msg, t / "big/a/0.png");
  CHECK_MSG_HAS(msg, "8192x8192");
  // Any allocation failure at a reader boundary becomes one InputError naming the file.
  const std::string oom = input_error([] { with_memory_guard("some/file", []() -> int { throw std::bad_alloc(); }); });
  CHECK_MSG_HAS(oom, "some/file");
  CHECK_MSG_HAS(oom, "out of memory");
}

// ---- 7. non-finite weights ---------------------------------------------------------------------

TEST_CASE("hardening 7: ReLU and max propagate NaN as PyTorch does") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {nan, -1.f, 2.f, -inf, inf, 0.f};
  const std::vector<float> y = relu(Tensor::from_vector(x, {6})).to_vector<float>();
  CHECK(std::isnan(y[0]));
  CHECK(y[1] == 0.f);
  CHECK(y[2] == 2.f);
  CHECK(y[3] == 0.f);
  CHECK(y[4] == inf);
  // Backward: zero only where x <= 0 (threshold_backward), so NaN inputs pass the gradient on.
  std::vector<float> gx(6);
  const std::vector<float> gy(6, 3.f);
  kernels::unary_backward(kernels::CpuCtx{}, kernels::Unary::relu, 6, x.data(), y.data(), gy.data(), gx.data());
  CHECK(gx == std::vector<float>{3.f, 0.f, 3.f, 0.f, 3.f, 0.f});
  // Binary max/min: NaN in either operand wins (torch.maximum / torch.minimum).
  const std::vector<double> a = {std::nan(""), 1.0, 2.0, std::nan("")}, b = {1.0, std::nan(""), 1.0, std::nan("")};
  std::vector<double> mx(4), mn(4);
  kernels::binary(kernels::CpuCtx{}, kernels::Binary::max, 4, a.data(), b.data(), mx.data());
  kernels::binary(kernels::CpuCtx{}, kernels::Binary::min, 4, a.data(), b.data(), mn.data());
  CHECK(std::isnan(mx[0]));
  CHECK(std::isnan(mx[1]));
  CHECK(mx[2] == 2.0);
  CHECK(std::isnan(mx[3]));
  CHECK(std::isnan(mn[0]));
  CHECK(std::isnan(mn[1]));
  CHECK(mn[2] == 1.0);
  // A NaN weight in a convolution now reaches the logits instead of vanishing in a ReLU.
  Rng rng(3);
  const models::ModelSpec spec{"cnn", 1, 8, 8, 3};
  auto m = models::build_model(spec, rng);
  m->named_parameters().front().second.fill_(std::nan(""));
  m->eval();
  const std::vector<float> logits = m->forward(Tensor::full({1, 1, 8, 8}, 0.5)).to_vector<float>();
  CHECK(std::isnan(logits[0]));
}

TEST_CASE("hardening 7: a checkpoint with NaN or Inf weights is refused at load, naming the tensor") {
  TempDir t;
  Rng rng(2);
  const models::ModelSpec spec{"cnn", 1, 8, 8, 3};
  auto m = models::build_model(spec, rng);
  models::save_model(t / "ok.safetensors", *m, spec, {});
  for (double bad : {std::nan(""), HUGE_VAL, -HUGE_VAL}) {
    Checkpoint ck = load_safetensors(t / "ok.safetensors");
    Tensor& w = ck.tensors[0].tensor;
    std::vector<float> v = w.to_vector<float>();
    v[5] = float(bad);
    w = Tensor::from_vector(v, w.shape());
    save_safetensors(t / "bad.safetensors", ck.tensors, ck.metadata);
    const std::string msg = input_error([&] { models::load_model(t / "bad.safetensors"); });
    CHECK_MSG_HAS(msg, t / "bad.safetensors");
    CHECK_MSG_HAS(msg, "'" + ck.tensors[0].name + "'");
    CHECK_MSG_HAS(msg, "non-finite");
    CHECK_MSG_HAS(msg, "index 5");
  }
  CHECK_NOTHROW(models::load_model(t / "ok.safetensors"));
}

// ---- 9. messages and canonical specs -----------------------------------------------------------

TEST_CASE("hardening 9: an IDX dimension of 2^31 is too large, not 'not positive'") {
  TempDir t;
  Bytes idx;
  put_be32(idx, 2051);
  put_be32(idx, 0x80000000u);
  put_be32(idx, 2);
  put_be32(idx, 2);
  write_bytes(t / "big", idx);
  const std::string msg = input_error([&] { read_idx(t / "big", 2051); });
  CHECK_MSG_HAS(msg, "2147483648");
  CHECK_MSG_HAS(msg, "at most");
  CHECK_FALSE(contains(msg, "positive"));
}

TEST_CASE("hardening 9: holdout=0.1234567 is recorded exactly in the canonical spec") {
  const DataSpec s = parse_data_spec("images:/x,holdout=0.1234567");
  CHECK(s.canonical == "images:/x,holdout=0.1234567");
  CHECK(parse_data_spec(s.canonical).images.holdout == s.images.holdout);
}

// ---- 6 (engine part). stale temporaries ------------------------------------------------------

TEST_CASE("atomic saves remove the temporaries of killed writers, not of live ones") {
  TempDir t;
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) _exit(0);
  REQUIRE(waitpid(child, nullptr, 0) == child);  // now a dead pid
  const std::string target = t / "out.json";
  const std::string dead = target + ".tmp." + std::to_string(child);
  const std::string live = target + ".tmp." + std::to_string(getppid());
  const std::string other = t / "other.json.tmp." + std::to_string(child);
  for (const auto& p : {dead, live, other}) write_text(p, "partial");
  AtomicFile f(target);
  f.write("{}");
  f.commit();
  CHECK_FALSE(fs::exists(dead));
  CHECK(fs::exists(live));
  CHECK(fs::exists(other));  // another target's temporaries are not ours to judge
  CHECK(fs::exists(target));
}

#ifdef HAMU_CUDA
TEST_CASE("hardening 7: ReLU and max propagate NaN on the GPU as on the CPU") {
  if (kernels::cuda_device_count() == 0) {
    std::printf("hardening cuda NaN test: skipped: no GPU\n");
    return;
  }
  const Device gpu{Device::cuda, 0};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {nan, -1.f, 2.f, 0.f};
  const std::vector<float> y = relu(Tensor::from_vector(x, {4}, gpu)).to(Device{}).to_vector<float>();
  CHECK(std::isnan(y[0]));
  CHECK(y[1] == 0.f);
  CHECK(y[2] == 2.f);
  CHECK(y[3] == 0.f);
  Tensor a = Tensor::from_vector(std::vector<float>{nan, 1.f, 2.f}, {3}, gpu);
  Tensor b = Tensor::from_vector(std::vector<float>{1.f, nan, 1.f}, {3}, gpu);
  Tensor out = Tensor::empty({3}, DType::f32, gpu);
  kernels::binary(kernels::cuda_context(0), kernels::Binary::max, 3, a.data<float>(), b.data<float>(), out.data<float>());
  const std::vector<float> mx = out.to(Device{}).to_vector<float>();
  CHECK(std::isnan(mx[0]));
  CHECK(std::isnan(mx[1]));
  CHECK(mx[2] == 2.f);
}
#endif
