// tests/test_safetensors.cpp: checkpoint round trips, the exact byte format, every bad-input case, atomic saves.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "engine/json.h"
#include "engine/safetensors.h"

using namespace hamu;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/hamu_st_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string le64(uint64_t x) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((x >> (8 * i)) & 0xFF);
  return s;
}

// A safetensors file from a header text (padded to 8 bytes as the spec asks) and a data buffer.
std::string make_file(std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return le64(header.size()) + header + data;
}

std::string f32_bytes(std::initializer_list<float> xs) {
  std::string s;
  for (float x : xs) s.append(reinterpret_cast<const char*>(&x), 4);
  return s;
}

// The InputError message loading `bytes` produces ("" when it loads).
std::string load_error(const TempDir& dir, const std::string& bytes) {
  const std::string path = dir.file("bad.safetensors");
  // A fresh inode each time: truncating a file in place makes ext4 flush it on close (slow).
  std::filesystem::remove(path);
  write_bytes(path, bytes);
  try {
    load_safetensors(path);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

}  // namespace

TEST_CASE("safetensors: round trip of every dtype, odd shapes and metadata") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  Tensor w = Tensor::from_vector<float>({1.5f, -2.f, 3.25f, 0.f, -0.f, 1e-30f}, {2, 3});
  Tensor d = Tensor::from_vector<double>({3.141592653589793, -1e300, 5e-324}, {3});
  Tensor i = Tensor::from_vector<int32_t>({-7, 0, 2147483647, -2147483647 - 1}, {2, 1, 2});
  Tensor u = Tensor::from_vector<uint8_t>({0, 255, 7}, {3});
  Tensor s = Tensor::scalar(42.5, DType::f64);
  Tensor empty_row = Tensor::empty({0}, DType::f32);
  Tensor empty_mid = Tensor::empty({3, 0, 2}, DType::i32);
  Tensor strided = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}).transpose(0, 1);
  Tensor trained = Tensor::from_vector<float>({1, 2}, {2});
  trained.requires_grad_();
  const std::map<std::string, std::string> meta = {{"arch", "{\"model\":\"mlp\",\"hidden\":[64]}"}, {"epochs", "5"}, {"", "empty key"}};
  save_safetensors(path, {{"u8", u}, {"fc.weight", w}, {"d", d}, {"i", i}, {"scalar", s}, {"empty_row", empty_row},
                          {"empty_mid", empty_mid}, {"strided", strided}, {"trained", trained}},
                   meta);
  CHECK_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(getpid())));

  const Checkpoint ck = load_safetensors(path);
  CHECK(ck.path == path);
  CHECK(ck.metadata == meta);
  CHECK(ck.meta("epochs") == "5");
  REQUIRE(ck.tensors.size() == 9);
  std::vector<std::string> names;
  for (const auto& t : ck.tensors) names.push_back(t.name);
  CHECK(names == std::vector<std::string>{"u8", "fc.weight", "d", "i", "scalar", "empty_row", "empty_mid", "strided", "trained"});
  CHECK(ck.get("fc.weight").shape() == Shape{2, 3});
  CHECK(ck.get("fc.weight").to_vector<float>() == w.to_vector<float>());
  CHECK(ck.get("d").to_vector<double>() == d.to_vector<double>());
  CHECK(ck.get("i").shape() == Shape{2, 1, 2});
  CHECK(ck.get("i").to_vector<int32_t>() == i.to_vector<int32_t>());
  CHECK(ck.get("u8").to_vector<uint8_t>() == std::vector<uint8_t>{0, 255, 7});
  CHECK(ck.get("scalar").shape() == Shape{});
  CHECK(ck.get("scalar").dtype() == DType::f64);
  CHECK(ck.get("scalar").item() == 42.5);
  CHECK(ck.get("empty_row").shape() == Shape{0});
  CHECK(ck.get("empty_mid").shape() == Shape{3, 0, 2});
  CHECK(ck.get("empty_mid").dtype() == DType::i32);
  CHECK(ck.get("strided").shape() == Shape{3, 2});
  CHECK(ck.get("strided").to_vector<float>() == std::vector<float>{1, 4, 2, 5, 3, 6});
  CHECK_FALSE(ck.get("trained").requires_grad());
  CHECK(ck.get("trained").name() == "trained");
  CHECK(ck.has("d"));
  CHECK_FALSE(ck.has("nope"));
}

TEST_CASE("safetensors: header is 8-byte aligned and each tensor aligned to its element size") {
  TempDir dir;
  const std::string path = dir.file("a.safetensors");
  for (const std::string name : {"x", "xy", "xyz", "wxyz", "a_longer_name"}) {
    save_safetensors(path, {{name, Tensor::from_vector<uint8_t>({1, 2, 3}, {3})},
                            {"f64", Tensor::from_vector<double>({1, 2}, {2})},
                            {"i32", Tensor::from_vector<int32_t>({1}, {1})}});
    const std::string bytes = read_bytes(path);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    CHECK(n % 8 == 0);
    const Json header = Json::parse(bytes.substr(8, n));
    for (auto [key, entry] : header.members()) {
      const int64_t begin = entry["data_offsets"][0].as_int();
      const std::string dtype = entry["dtype"].as_string();
      CHECK(begin % (dtype == "F64" ? 8 : dtype == "I32" ? 4 : 1) == 0);
    }
    CHECK(load_safetensors(path).get("f64").to_vector<double>() == std::vector<double>{1, 2});
  }
}

TEST_CASE("safetensors: the bytes match the spec exactly") {
  TempDir dir;
  // Hand-built: 8-byte little-endian header length, the JSON header padded with spaces to a
  // multiple of 8, then the raw little-endian data.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F64","shape":[],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  std::string expected = le64(144) + header;
  REQUIRE(expected.size() == 8 + 138);
  expected += "      ";  // pad 138 -> 144
  expected += std::string("\x00\x00\x00\x00\x00\x00\xF8\xBF", 8);  // -1.5 as f64
  expected += std::string("\x00\x00\x80\x3F\x00\x00\x00\x40", 8);  // 1.0f, 2.0f

  const std::string path = dir.file("tiny.safetensors");
  save_safetensors(path, {{"b", Tensor::scalar(-1.5, DType::f64)}, {"a", Tensor::from_vector<float>({1, 2}, {2})}},
                   {{"format", "pt"}});
  CHECK(read_bytes(path) == expected);

  // And a hand-written file loads.
  write_bytes(path, expected);
  const Checkpoint ck = load_safetensors(path);
  CHECK(ck.get("a").to_vector<float>() == std::vector<float>{1, 2});
  CHECK(ck.get("b").item() == -1.5);
  CHECK(ck.metadata.at("format") == "pt");

  // No metadata: no __metadata__ entry at all.
  save_safetensors(path, {{"a", Tensor::from_vector<float>({1, 2}, {2})}});
  const std::string plain = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  CHECK(read_bytes(path) == make_file(plain, f32_bytes({1, 2})));
  // No tensors at all is still a valid file.
  save_safetensors(path, {});
  CHECK(read_bytes(path) == le64(8) + "{}      ");
  CHECK(load_safetensors(path).tensors.empty());
}

TEST_CASE("safetensors: every bad input is one clear InputError naming the file") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  const std::string ok_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string data = f32_bytes({1, 2});
  REQUIRE(load_error(dir, make_file(ok_header, data)) == "");
  auto err = [&](const std::string& header, const std::string& buffer) { return load_error(dir, make_file(header, buffer)); };

  SUBCASE("missing file and directories") {
    CHECK_THROWS_WITH_AS(load_safetensors(dir.file("nope.safetensors")),
                         (dir.file("nope.safetensors") + ": cannot open: No such file or directory").c_str(), InputError);
    CHECK_THROWS_WITH_AS(load_safetensors(dir.path), (dir.path + ": not a regular file").c_str(), InputError);
  }
  SUBCASE("shorter than the length field") {
    CHECK(load_error(dir, "") == path + ": 0 bytes is too short for a safetensors file (the header length alone is 8)");
    CHECK(load_error(dir, std::string("\x10\x00\x00", 3)) == path + ": 3 bytes is too short for a safetensors file (the header length alone is 8)");
  }
  SUBCASE("header length beyond the file, or absurd") {
    const std::string full = make_file(ok_header, data);
    CHECK(load_error(dir, full.substr(0, 40)) ==
          path + ": header length 56 runs past the end of the file (32 bytes follow the length); the file is truncated or not safetensors");
    CHECK(load_error(dir, le64(uint64_t(1) << 62) + "{}") ==
          path + ": header length 4611686018427387904 is implausible (limit 100000000); not a safetensors file?");
    CHECK(contains(load_error(dir, le64(100'000'001) + "{}"), "is implausible"));
    CHECK(contains(load_error(dir, "PK\x03\x04 not a safetensors file at all"), "is implausible"));
  }
  SUBCASE("truncated data") {
    const std::string full = make_file(ok_header, data);
    CHECK(load_error(dir, full.substr(0, full.size() - 3)) ==
          path + ": tensor 'a': data_offsets [0, 8] lie outside the data buffer of 5 bytes (file truncated?)");
  }
  SUBCASE("malformed JSON") {
    CHECK(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", data) ==
          path + ": header is not valid JSON: unexpected end of input, expected ',' or '}' in object at 1:57 (byte 56)");
    CHECK(err(R"({"a":{"dtype":"F32)", data) == path + ": header is not valid JSON: unterminated string at 1:15 (byte 14)");
    CHECK(contains(err(std::string("{\"a\xFF\":1}"), ""), ": header is not valid JSON: invalid UTF-8 in string"));
    CHECK(contains(err(std::string(40, '[') + std::string(40, ']'), ""), "nesting deeper than 8 levels"));
  }
  SUBCASE("hostile header: millions of tiny values") {
    std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"junk":[)";
    for (size_t i = 0; i < kSafetensorsMaxHeaderValues; ++i) header += "0,";
    CHECK(contains(err(header + "0]}}", data), ": header is not valid JSON: more than 3000000 values at 1:"));
  }
  SUBCASE("header not an object") {
    CHECK(err("[]", "") == path + ": header is a JSON array, expected an object");
    CHECK(err("\"x\"", "") == path + ": header is a JSON string, expected an object");
  }
  SUBCASE("entries missing fields or of the wrong kind") {
    CHECK(err(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", data) == path + ": tensor 'a': missing \"dtype\"");
    CHECK(err(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", data) == path + ": tensor 'a': missing \"shape\"");
    CHECK(err(R"({"a":{"dtype":"F32","shape":[2]}})", data) == path + ": tensor 'a': missing \"data_offsets\"");
    CHECK(err(R"({"a":[1,2]})", data) ==
          path + ": tensor 'a': entry is array, expected an object with dtype, shape and data_offsets");
    CHECK(err(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", data) ==
          path + ": tensor 'a': dtype is number, expected a string");
    CHECK(err(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", data) ==
          path + ": tensor 'a': shape is number, expected an array");
    CHECK(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", data) ==
          path + ": tensor 'a': data_offsets [0] is not a pair of non-negative integers");
    CHECK(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,8]}})", data) ==
          path + ": tensor 'a': data_offsets [-8,8] is not a pair of non-negative integers");
  }
  SUBCASE("unknown dtype") {
    CHECK(err(R"({"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", data) ==
          path + ": tensor 'a': dtype 'F16' is not supported (F32, F64, I32, U8, BF16; I64 scalars)");
  }
  SUBCASE("negative, fractional or overflowing shapes") {
    CHECK(err(R"({"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", data) ==
          path + ": tensor 'a': shape entry -1 is not a non-negative integer");
    CHECK(err(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", data) ==
          path + ": tensor 'a': shape entry 1.5 is not a non-negative integer");
    CHECK(err(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", data) ==
          path + ": tensor 'a': shape entry \"2\" is not a non-negative integer");
    CHECK(err(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", data) ==
          path + ": tensor 'a': shape [4294967296, 4294967296, 4294967296] has too many elements");
    CHECK(err(R"({"a":{"dtype":"F64","shape":[1073741824,1073741824,4],"data_offsets":[0,8]}})", data) ==
          path + ": tensor 'a': shape [1073741824, 1073741824, 4] has too many elements");
    CHECK(err(R"({"a":{"dtype":"U8","shape":[1e300],"data_offsets":[0,8]}})", data) ==
          path + ": tensor 'a': shape entry 1e+300 is too large");
    std::string deep = R"({"a":{"dtype":"U8","shape":[)";
    for (int i = 0; i < 65; ++i) deep += i ? ",1" : "1";
    CHECK(err(deep + R"(],"data_offsets":[0,1]}})", "x") == path + ": tensor 'a': shape has 65 dimensions (at most 64)");
  }
  SUBCASE("dtype and shape do not match the data size") {
    CHECK(err(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,8]}})", data) ==
          path + ": tensor 'a': F32 [2, 3] needs 24 bytes but data_offsets [0, 8] span 8");
    CHECK(err(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", data) ==
          path + ": tensor 'a': F64 [2] needs 16 bytes but data_offsets [0, 8] span 8");
  }
  SUBCASE("offsets outside the buffer, reversed, overlapping, with gaps or leftovers") {
    CHECK(err(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data) ==
          path + ": tensor 'a': data_offsets [0, 16] lie outside the data buffer of 8 bytes (file truncated?)");
    CHECK(err(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", data) ==
          path + ": tensor 'a': data_offsets [8, 4] end before they begin");
    CHECK(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
              data) == path + ": tensor 'b': data_offsets [4, 8] overlap tensor 'a' [0, 8]");
    CHECK(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
              data) == path + ": tensor 'b': data_offsets [0, 8] overlap tensor 'a' [0, 8]");
    CHECK(err(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data) ==
          path + ": tensor 'a': data_offsets [4, 8] leave a gap of 4 bytes before them (tensors must be contiguous)");
    CHECK(err(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data) ==
          path + ": the data buffer has 8 bytes but the tensors cover only 4 (truncated or padded file)");
  }
  SUBCASE("duplicate tensor names") {
    CHECK(err(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
              data) == path + ": header is not valid JSON: duplicate key \"a\" at 1:55 (byte 54)");
  }
  SUBCASE("metadata values must be strings") {
    CHECK(err(R"({"__metadata__":{"epochs":5},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data) ==
          path + ": metadata 'epochs' is number, but metadata values must be strings");
    CHECK(err(R"({"__metadata__":{"ok":"x","nested":{"a":"b"}},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data) ==
          path + ": metadata 'nested' is object, but metadata values must be strings");
    CHECK(err(R"({"__metadata__":["x"],"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data) ==
          path + ": __metadata__ is array, expected an object of strings");
  }
}

TEST_CASE("safetensors: asking for a tensor that is not there") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  save_safetensors(path, {{"fc1.weight", Tensor::zeros({2, 2})}, {"fc1.bias", Tensor::zeros({2})}});
  const Checkpoint ck = load_safetensors(path);
  CHECK_THROWS_WITH_AS(ck.get("fc2.weight"),
                       (path + ": no tensor named 'fc2.weight' (it holds 2: fc1.weight, fc1.bias)").c_str(), InputError);
  CHECK_THROWS_WITH_AS(ck.meta("arch"), (path + ": no metadata entry 'arch'").c_str(), InputError);
  CHECK(ck.find("fc2.weight") == nullptr);
}

TEST_CASE("safetensors: bad saves are refused and never touch an existing file") {
  TempDir dir;
  const std::string path = dir.file("keep.safetensors");
  save_safetensors(path, {{"w", Tensor::from_vector<float>({1, 2, 3}, {3})}}, {{"v", "1"}});
  const std::string before = read_bytes(path);
  const Tensor t = Tensor::zeros({2});

  CHECK_THROWS_AS(save_safetensors(dir.file("no/such/dir/x.safetensors"), {{"w", t}}), InputError);
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"w", t}, {"w", t}}), (path + ": tensor name 'w' appears twice").c_str(),
                       InputError);
  CHECK_THROWS_AS(save_safetensors(path, {{"__metadata__", t}}), InputError);
  CHECK_THROWS_AS(save_safetensors(path, {{"w", Tensor()}}), InputError);
  // The temporary cannot be created (a directory is in its way): the save fails, the old file stays.
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  std::filesystem::create_directory(tmp);
  CHECK_THROWS_AS(save_safetensors(path, {{"w", t}}), Error);
  std::filesystem::remove(tmp);
  // The target is a directory: the rename fails, and the temporary is cleaned up.
  const std::string as_dir = dir.file("is_a_dir");
  std::filesystem::create_directory(as_dir);
  std::filesystem::create_directory(as_dir + "/child");
  CHECK_THROWS_AS(save_safetensors(as_dir, {{"w", t}}), Error);
  CHECK_FALSE(std::filesystem::exists(as_dir + ".tmp." + std::to_string(getpid())));

  CHECK(read_bytes(path) == before);
  CHECK(load_safetensors(path).get("w").to_vector<float>() == std::vector<float>{1, 2, 3});
  // A successful save replaces the file and leaves no temporary behind.
  save_safetensors(path, {{"w", t}});
  CHECK(load_safetensors(path).get("w").to_vector<float>() == std::vector<float>{0, 0});
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path)) ++files;
  CHECK(files == 2);  // keep.safetensors and is_a_dir
}

TEST_CASE("safetensors: corrupted files load or fail with InputError, nothing else") {
  TempDir dir;
  const std::string good_path = dir.file("good.safetensors");
  save_safetensors(good_path,
                   {{"w", Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3})},
                    {"b", Tensor::from_vector<double>({0.5}, {1})},
                    {"y", Tensor::from_vector<int32_t>({3, 1}, {2})}},
                   {{"arch", "mlp"}});
  const std::string good = read_bytes(good_path);
  std::mt19937 rng(1234);
  int loaded = 0, rejected = 0;
  for (int trial = 0; trial < 1500; ++trial) {
    std::string bytes = good;
    switch (trial % 3) {
      case 0:  // flip a few bytes, mostly in the length and header
        for (int k = 0; k < 1 + int(rng() % 3); ++k) bytes[rng() % std::min<size_t>(bytes.size(), 200)] = char(rng());
        break;
      case 1:  // truncate
        bytes.resize(rng() % bytes.size());
        break;
      case 2:  // digits in the header changed
        for (size_t i = 8; i < bytes.size() && i < 200; ++i)
          if (bytes[i] >= '0' && bytes[i] <= '9' && rng() % 4 == 0) bytes[i] = char('0' + rng() % 10);
        break;
    }
    try {
      load_error(dir, bytes) == "" ? ++loaded : ++rejected;
    } catch (const std::exception& e) {
      FAIL("unexpected exception: " << e.what());
    }
  }
  CHECK(rejected > 1000);
  CHECK(loaded + rejected == 1500);
}
