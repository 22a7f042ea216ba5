// tests/fuzz/make_corpus.cpp: writes the fuzz targets' seed files with our own writers (safetensors,
// models, JSON, IDX, CIFAR records, stb_image_write images), plus issue #15's reproducers as the first
// regression files. Run by `make fuzz-corpus`; the output is small and committed.
//
// Usage: fuzz_corpus DIR   (writes DIR/corpus/<target>/* and DIR/regressions/<target>/*)
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/json.h"
#include "engine/safetensors.h"
#include "loaders/tokenizer.h"
#include "models/checkpoint.h"
#include "models/lm/lm.h"

using namespace hamu;
namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {

std::string g_root;

void put(const std::string& kind, const std::string& target, const std::string& name, const Bytes& b) {
  const fs::path dir = fs::path(g_root) / kind / target;
  fs::create_directories(dir);
  std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
void seed(const std::string& target, const std::string& name, const Bytes& b) { put("corpus", target, name, b); }
void regression(const std::string& target, const std::string& name, const Bytes& b) { put("regressions", target, name, b); }
Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }
Bytes cat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Bytes read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void put_be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

Bytes gzip(const Bytes& plain) {
  z_stream z{};
  deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY);
  Bytes out(deflateBound(&z, uLong(plain.size())) + 64);
  z.next_in = const_cast<Bytef*>(plain.data());
  z.avail_in = uInt(plain.size());
  z.next_out = out.data();
  z.avail_out = uInt(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

Bytes idx(std::vector<uint32_t> dims, size_t fill_bytes, uint8_t fill = 0) {
  Bytes b = {0, 0, 8, uint8_t(dims.size())};
  for (uint32_t d : dims) put_be32(b, d);
  for (size_t i = 0; i < fill_bytes; ++i) b.push_back(uint8_t(fill + i * 7));
  return b;
}

Bytes pixels(int w, int h, int comp) {
  Bytes px(size_t(w * h * comp));
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(i * 29 + 3);
  return px;
}

void stbi_to(void* ctx, void* data, int size) {
  auto* out = static_cast<Bytes*>(ctx);
  out->insert(out->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
}

Bytes png(int w, int h, int comp) {
  Bytes out;
  const Bytes px = pixels(w, h, comp);
  stbi_write_png_to_func(stbi_to, &out, w, h, comp, px.data(), w * comp);
  return out;
}
Bytes jpg(int w, int h, int comp) {
  Bytes out;
  const Bytes px = pixels(w, h, comp);
  stbi_write_jpg_to_func(stbi_to, &out, w, h, comp, px.data(), 80);
  return out;
}
Bytes bmp(int w, int h, int comp) {
  Bytes out;
  const Bytes px = pixels(w, h, comp);
  stbi_write_bmp_to_func(stbi_to, &out, w, h, comp, px.data());
  return out;
}
Bytes tga(int w, int h, int comp) {
  Bytes out;
  const Bytes px = pixels(w, h, comp);
  stbi_write_tga_to_func(stbi_to, &out, w, h, comp, px.data());
  return out;
}
Bytes pnm(const char* magic, int w, int h, int comp) {
  Bytes b = text(std::string(magic) + "\n" + std::to_string(w) + " " + std::to_string(h) + "\n255\n");
  return cat(b, pixels(w, h, comp));
}
// The PNG with an empty IDAT chunk before its first one (legal; stb_image 2.27 memcpy'd it to null).
Bytes png_empty_first_idat(const Bytes& png) {
  for (size_t pos = 8; pos + 12 <= png.size();) {
    const size_t len = size_t(png[pos]) << 24 | size_t(png[pos + 1]) << 16 | size_t(png[pos + 2]) << 8 | png[pos + 3];
    if (std::string(png.begin() + std::ptrdiff_t(pos + 4), png.begin() + std::ptrdiff_t(pos + 8)) == "IDAT") {
      Bytes empty;
      put_be32(empty, 0);
      empty.insert(empty.end(), {'I', 'D', 'A', 'T'});
      put_be32(empty, uint32_t(crc32(0, empty.data() + 4, 4)));
      Bytes out(png.begin(), png.begin() + std::ptrdiff_t(pos));
      return cat(cat(out, empty), Bytes(png.begin() + std::ptrdiff_t(pos), png.end()));
    }
    pos += 12 + len;
  }
  return png;
}
// A 2x1 two-colour GIF89a (header, global colour table, image descriptor, LZW data).
const Bytes kGif = {'G', 'I', 'F', '8', '9', 'a', 2, 0, 1, 0, 0x80, 0, 0, 0, 0, 0, 255, 255, 255, 0x2C, 0, 0, 0,
                    0, 2, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3B};
const Bytes kZeroWidthPgm = {'P', '5', ' ', '0', ' ', '1', '6', ' ', '2', '5', '5', '\n'};
const Bytes kJpegHuffman = {0xFF, 0xD8, 0xFF, 0xC4, 0xAC, 0xEE, 0x11, 0xAC, 0xEE};

// One entry of the image_folder target's archive format.
Bytes entry(const std::string& path, const Bytes& data) {
  Bytes b = {uint8_t(path.size())};
  b.insert(b.end(), path.begin(), path.end());
  b.push_back(uint8_t(data.size() & 255));
  b.push_back(uint8_t(data.size() >> 8));
  return cat(b, data);
}

Bytes file_bytes_of_save(const std::vector<NamedTensor>& tensors, const std::map<std::string, std::string>& meta) {
  const std::string tmp = g_root + "/.tmp.safetensors";
  save_safetensors(tmp, tensors, meta);
  Bytes b = read_all(tmp);
  fs::remove(tmp);
  return b;
}

void safetensors_seeds() {
  const Tensor f = Tensor::from_vector(std::vector<float>{1.5f, -2.f, 0.f, 3.25f, 7.f, 8.f}, {2, 3});
  const Tensor d = Tensor::from_vector(std::vector<double>{1e-300, -4.0}, {2});
  const Tensor i = Tensor::from_vector(std::vector<int32_t>{-7, 0, 9}, {3, 1});
  const Tensor u = Tensor::from_vector(std::vector<uint8_t>{1, 2, 255}, {3});
  const Tensor empty = Tensor::zeros({0, 4});
  const Tensor scalar = Tensor::from_vector(std::vector<float>{42.f}, {});
  seed("safetensors", "mixed", file_bytes_of_save({{"f", f}, {"d", d}, {"i", i}, {"u", u}}, {{"note", "seed"}}));
  seed("safetensors", "empty_and_scalar", file_bytes_of_save({{"e", empty}, {"s", scalar}}, {}));
  seed("safetensors", "no_tensors", file_bytes_of_save({}, {{"arch", "mlp"}}));

  // Checkpoints: a real (small) model, and metadata-only files.
  Rng rng(7);
  const models::ModelSpec spec{"mlp", 1, 1, 1, 2};
  auto m = models::build_model(spec, rng);
  const std::string tmp = g_root + "/.tmp.model";
  models::save_model(tmp, *m, spec, {{"data", "seed"}});
  seed("checkpoint", "mlp_1x1x1", read_all(tmp));
  fs::remove(tmp);
  seed("checkpoint", "cnn_meta_only",
       file_bytes_of_save({}, {{"arch", "cnn"}, {"in_channels", "1"}, {"height", "8"}, {"width", "8"}, {"num_classes", "3"}}));
  // Issue #15 item 4: 136 bytes of metadata describing a million-class model.
  regression("checkpoint", "issue15_4_huge_metadata",
             file_bytes_of_save({}, {{"arch", "cnn"}, {"in_channels", "1000000"}, {"height", "1000"},
                                     {"width", "1000"}, {"num_classes", "1000000"}}));
  // Issue #15 item 3: a zero dimension hiding an int64 overflow.
  std::string h = R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})";
  h.append((8 - h.size() % 8) % 8, ' ');
  Bytes b;
  for (int k = 0; k < 8; ++k) b.push_back(uint8_t(uint64_t(h.size()) >> (8 * k)));
  regression("safetensors", "issue15_3_zero_dim_overflow", cat(b, text(h)));
}

void json_seeds() {
  Json doc = Json::object({{"name", "hamu"}, {"n", 3}, {"x", -0.125}, {"big", 1e300}, {"tiny", 5e-324},
                           {"list", Json::array({1, 2.5, "three", true, false, Json()})},
                           {"nested", Json::object({{"a", Json::array({Json::object({{"b", "\u00e9\t\n\"\\"}})})}})}});
  seed("json", "object", text(doc.dump()));
  seed("json", "object_indented", text(doc.dump(2)));
  seed("json", "escapes", text(R"(["\u0041\ud83d\ude00", "\/\b\f\r", -0, 1E+2, 0.1e-5])"));
  seed("json", "scalars", text("  true "));
}

void idx_seeds() {
  const Bytes images = idx({3, 4, 5}, 60);
  const Bytes labels = idx({3}, 3);
  seed("idx", "images_plain", cat({0}, images));
  seed("idx", "labels_plain", cat({1}, labels));
  seed("idx", "images_gzip_by_target", cat({2}, images));
  seed("idx", "images_gzip_file", cat({0}, gzip(images)));
  seed("idx", "labels_gzip_file", cat({1}, gzip(labels)));
  // Issue #15 items 5 and 9: a gzip header claiming 2^34 bytes; a dimension of 2^31.
  regression("idx", "issue15_5_gzip_claims_2e34", cat({0}, gzip(idx({1, 131072, 131072}, size_t(1) << 16))));
  regression("idx", "issue15_5_gzip_claims_2e34_small", cat({2}, idx({1, 131072, 131072}, 64)));
  regression("idx", "issue15_9_dim_2e31", cat({0}, idx({0x80000000u, 2, 2}, 16)));
}

void cifar_seeds() {
  Bytes b;
  for (int r = 0; r < 2; ++r) {
    b.push_back(uint8_t(r * 3));
    const Bytes px = pixels(32, 32, 3);
    b.insert(b.end(), px.begin(), px.end());
  }
  seed("cifar", "two_records", b);
}

void image_seeds() {
  seed("image", "png_grey", cat({0}, png(5, 4, 1)));
  seed("image", "png_rgba", cat({0x13}, png(3, 3, 4)));
  seed("image", "jpg_rgb", cat({0x22}, jpg(9, 7, 3)));
  seed("image", "jpg_grey", cat({1}, jpg(8, 8, 1)));
  seed("image", "bmp_rgb", cat({2}, bmp(4, 3, 3)));
  seed("image", "tga_rgba", cat({0}, tga(3, 2, 4)));
  seed("image", "pgm", cat({0}, pnm("P5", 4, 3, 1)));
  seed("image", "ppm", cat({3}, pnm("P6", 2, 2, 3)));
  seed("image", "gif", cat({0}, kGif));
  // Issue #15 items 1 and 2.
  regression("image", "issue15_1_zero_width_pgm", cat({0}, kZeroWidthPgm));
  regression("image", "issue15_2_jpeg_huffman_counts", cat({0}, kJpegHuffman));
  regression("image", "ci_png_empty_first_idat", cat({0}, png_empty_first_idat(png(5, 4, 3))));
}

void image_folder_seeds() {
  seed("image_folder", "two_classes",
       cat(cat(cat({0}, entry("a/0.png", png(4, 4, 1))), entry("a/1.png", png(4, 4, 1))), entry("b/0.bmp", bmp(4, 4, 3))));
  seed("image_folder", "train_test_resized",
       cat(cat(cat({0x33}, entry("train/a/0.png", png(5, 3, 3))), entry("train/b/x.jpg", jpg(6, 6, 3))),
           entry("test/a/1.pgm", pnm("P5", 2, 2, 1))));
  // Issue #15 item 1: the zero-width image second, then first.
  regression("image_folder", "issue15_1_zero_width_second",
             cat(cat(cat({0}, entry("a/0.png", png(4, 4, 1))), entry("a/1.pgm", kZeroWidthPgm)), entry("b/0.png", png(4, 4, 1))));
  regression("image_folder", "issue15_1_zero_width_first",
             cat(cat(cat({0}, entry("a/0.pgm", kZeroWidthPgm)), entry("a/1.png", png(4, 4, 1))), entry("b/0.png", png(4, 4, 1))));
  regression("image_folder", "issue15_2_jpeg_huffman_counts",
             cat(cat({0}, entry("a/0.png", png(4, 4, 1))), entry("a/1.jpg", kJpegHuffman)));
  regression("image_folder", "ci_png_empty_first_idat",
             cat(cat({0}, entry("a/0.png", png(4, 4, 1))), entry("b/0.png", png_empty_first_idat(png(4, 4, 1)))));
}

void text_seeds() {
  seed("indices", "plain", text("0\n5\n17\n199\n"));
  seed("indices", "comments_blank_crlf", text("# forget list\r\n\r\n3 # three\r\n  42\t\r\n"));
  seed("split_spec", "class", text("class=1"));
  seed("split_spec", "class_name_rho", text("class=two,rho=0.3,seed=5"));
  seed("split_spec", "random", text("random=0.1,seed=2"));
  seed("split_spec", "rho_one", text(" class=4, rho=1 "));
  seed("data_spec", "default", text("fashion-mnist"));
  seed("data_spec", "mnist_dir", text("mnist:/data/mnist"));
  seed("data_spec", "images_options", text("images:/d/pics,size=8x8,channels=3,holdout=0.25"));
  seed("data_spec", "cifar", text("cifar10:/c"));
  regression("data_spec", "issue15_9_holdout_digits", text("images:/x,holdout=0.1234567"));
}

// Our own writers' config.json and tokenizer.json (the committed seeds also hold transformers' and
// the tokenizers library's files, copied from tests/fixtures).
void lm_seeds() {
  seed("hf_config", "hamu_gpt_small.json", text(models::lm_config_by_name("gpt-small", 300).to_hf_json().dump()));
  BpeTrainOptions o;
  o.vocab_size = 300;
  o.min_frequency = 1;
  const BpeTrainResult r = train_bpe({"Question: Who wrote it?\nAnswer: Alice wrote it in 1999.",
                                      "Question: Where was she born?\nAnswer: She was born in Paris."}, o);
  seed("tokenizer", "hamu_trained_bpe.json", text(r.json));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_corpus DIR\n");
    return 2;
  }
  g_root = argv[1];
  fs::create_directories(g_root);
  safetensors_seeds();
  json_seeds();
  idx_seeds();
  cifar_seeds();
  image_seeds();
  image_folder_seeds();
  text_seeds();
  lm_seeds();
  std::printf("fuzz_corpus: seeds written under %s/corpus and %s/regressions\n", g_root.c_str(), g_root.c_str());
  return 0;
}
