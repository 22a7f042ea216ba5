// tests/test_json.cpp: JSON values, the strict parser (every malformed class and its position), the writer.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "engine/json.h"

using namespace hamu;

namespace {

// The message of the InputError that parsing `text` throws ("" when it parses).
std::string parse_error(std::string_view text) {
  try {
    Json::parse(text);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/hamu_json_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

TEST_CASE("json: build, dump compact and pretty, parse back") {
  Json j = Json::object();
  j.set("name", "resnet20").set("epochs", 5).set("lr", 0.1).set("ok", true).set("none", nullptr);
  j["classes"] = Json(std::vector<int>{0, 1, 2});
  j["nested"]["deep"] = Json::array({1, "two", Json::object({{"three", 3}})});
  CHECK(j.dump() ==
        R"({"name":"resnet20","epochs":5,"lr":0.1,"ok":true,"none":null,"classes":[0,1,2],)"
        R"("nested":{"deep":[1,"two",{"three":3}]}})");
  CHECK(j.dump(2) == R"({
  "name": "resnet20",
  "epochs": 5,
  "lr": 0.1,
  "ok": true,
  "none": null,
  "classes": [0, 1, 2],
  "nested": {
    "deep": [
      1,
      "two",
      {
        "three": 3
      }
    ]
  }
})");
  CHECK(Json::parse(j.dump()) == j);
  CHECK(Json::parse(j.dump(2)) == j);
  CHECK(Json::parse(j.dump(0)) == j);
  CHECK(Json::array().dump(2) == "[]");
  CHECK(Json::object().dump(2) == "{}");
}

TEST_CASE("json: insertion order is kept, set replaces in place") {
  Json j = Json::parse(R"({"z":1,"a":2,"m":3})");
  std::vector<std::string> keys;
  for (auto [k, v] : j.members()) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"z", "a", "m"});
  j.set("a", 20);
  j.set("b", 4);
  CHECK(j.dump() == R"({"z":1,"a":20,"m":3,"b":4})");
  CHECK(j.erase("z"));
  CHECK_FALSE(j.erase("z"));
  CHECK(j.dump() == R"({"a":20,"m":3,"b":4})");
  CHECK(j != Json::parse(R"({"m":3,"a":20,"b":4})"));  // order-sensitive equality
}

TEST_CASE("json: accessors and their errors") {
  const Json j = Json::parse(R"({"lr":0.5,"steps":100,"name":"hamu","on":false,"off":null,"list":[10,20]})");
  CHECK(j.is_object());
  CHECK(j["lr"].as_number() == 0.5);
  CHECK(j.at("steps").as_int() == 100);
  CHECK(j["list"][1].as_int() == 20);
  CHECK(j["list"].size() == 2);
  CHECK(j.get_or("lr", 1.0) == 0.5);
  CHECK(j.get_or("missing", 1.0) == 1.0);
  CHECK(j.get_or("off", 7) == 7);  // null reads as absent
  CHECK(j.get_or("steps", 0) == 100);
  CHECK(j.get_or("name", "x") == "hamu");
  CHECK(j.get_or("nope", "x") == "x");
  CHECK(j.get_or("on", true) == false);
  CHECK(j.get_or<uint8_t>("steps", 0) == 100);

  CHECK_THROWS_WITH_AS(j.at("dtype"), "missing key 'dtype'", InputError);
  CHECK_THROWS_WITH_AS(j["name"].as_number(), "expected number, found string", InputError);
  CHECK_THROWS_WITH_AS(j.get_or("name", 1.0), "key 'name': expected number, found string", InputError);
  CHECK_THROWS_WITH_AS(j.get_or("lr", 1), "key 'lr': expected an integer, found 0.5", InputError);
  CHECK(j.get_or<int8_t>("steps", 0) == 100);
  CHECK_THROWS_WITH_AS(Json(300).get<uint8_t>(), "value 300 is out of range", InputError);
  CHECK_THROWS_AS(Json(-1).get<uint32_t>(), InputError);
  CHECK_THROWS_AS(j["list"].at(size_t(2)), InputError);
  CHECK_THROWS_AS(j["list"][-1], InputError);
  CHECK_THROWS_AS(Json(3).at("x"), InputError);
  CHECK(j.find("nope") == nullptr);
  CHECK(Json(2.5).size() == 0);

  Json arr;
  arr.push_back(1);
  arr.push_back("x");
  CHECK(arr.dump() == R"([1,"x"])");
  Json obj;
  obj["k"] = Json(std::vector<std::string>{"a", "b"});
  CHECK(obj.dump() == R"({"k":["a","b"]})");
}

TEST_CASE("json: escapes and unicode") {
  const Json s = Json::parse(R"("q\" b\\ s\/ \b\f\n\r\t e\u00e9 \u20ac \ud83d\ude00 raw:é€😀")");
  CHECK(s.as_string() == "q\" b\\ s/ \b\f\n\r\t e\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 raw:\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
  // The writer escapes only what it must and keeps UTF-8 as is.
  CHECK(s.dump() == "\"q\\\" b\\\\ s/ \\b\\f\\n\\r\\t e\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 raw:\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"");
  CHECK(Json::parse(s.dump()) == s);
  CHECK(Json(std::string("a\x01z\x1f", 4)).dump() == R"("a\u0001z\u001f")");
  CHECK(Json::parse(R"("\u0000")").as_string() == std::string(1, '\0'));
  CHECK(Json::parse(R"("\uD834\uDD1E")").as_string() == "\xF0\x9D\x84\x9E");  // upper-case hex
  // Bytes that are not UTF-8 are written as U+FFFD so the output stays valid JSON.
  CHECK(Json(std::string("a\xFF" "b")).dump() == "\"a\xEF\xBF\xBD" "b\"");
  CHECK(Json::parse(Json(std::string("\xC0\xAF\xED\xA0\x80")).dump()).is_string());
}

TEST_CASE("json: numbers round-trip exactly") {
  CHECK(Json::parse("1e308").as_number() == 1e308);
  CHECK(Json::parse("1.7976931348623157e308").as_number() == 1.7976931348623157e308);
  CHECK(Json::parse("5e-324").as_number() == 5e-324);
  CHECK(Json::parse("1e-400").as_number() == 0.0);  // underflow reads as zero
  CHECK(std::signbit(Json::parse("-1e-400").as_number()));
  const Json neg_zero = Json::parse("-0");
  CHECK(std::signbit(neg_zero.as_number()));
  CHECK(neg_zero.dump() == "-0");
  CHECK(Json(0.0).dump() == "0");
  CHECK(Json(9007199254740992.0).dump() == "9007199254740992");
  CHECK(Json(-9007199254740992.0).dump() == "-9007199254740992");
  CHECK(Json::parse("9007199254740991").as_int() == 9007199254740991LL);
  CHECK(Json(int64_t(1) << 40).dump() == "1099511627776");
  CHECK(Json(1000000).dump() == "1000000");
  CHECK(Json(0.1).dump() == "0.1");
  CHECK(Json(1.5e-7).dump() == "1.5e-07");
  CHECK(Json(1e21).dump() == "1e+21");
  CHECK(Json(-2.5).dump() == "-2.5");
  CHECK(Json(0.1f).as_number() == double(0.1f));
  CHECK(Json(NAN).dump() == "null");
  CHECK(Json(INFINITY).dump() == "null");
  CHECK(Json(-INFINITY).dump() == "null");
  CHECK(Json::parse("1E+2").as_number() == 100.0);
  CHECK(Json::parse("-12.5e-1").as_number() == -1.25);
  CHECK(Json::parse("100000000000000000000000").as_number() == 1e23);
  CHECK(Json::parse("2").is_integer());
  CHECK_FALSE(Json::parse("2.5").is_integer());
  CHECK_FALSE(Json::parse("1e300").is_integer());

  // Random bit patterns: every finite double survives dump -> parse bit for bit.
  std::mt19937_64 rng(7);
  int checked = 0;
  for (int i = 0; i < 20000; ++i) {
    const uint64_t bits = rng();
    double x;
    std::memcpy(&x, &bits, 8);
    if (!std::isfinite(x)) continue;
    const double y = Json::parse(Json(x).dump()).as_number();
    uint64_t back;
    std::memcpy(&back, &y, 8);
    if (back != bits) FAIL("double did not round-trip: " << Json(x).dump());
    ++checked;
  }
  CHECK(checked > 19000);
}

TEST_CASE("json: each malformed input names what and where") {
  struct Case {
    std::string text, message;
  };
  const std::vector<Case> cases = {
      {"", "json: unexpected end of input, expected a value at 1:1 (byte 0)"},
      {"   ", "json: unexpected end of input, expected a value at 1:4 (byte 3)"},
      {"{\"a\":1,}", "json: trailing comma in object at 1:8 (byte 7)"},
      {"[1,2,]", "json: trailing comma in array at 1:6 (byte 5)"},
      {"{\"a\" 1}", "json: unexpected '1', expected ':' after the key at 1:6 (byte 5)"},
      {"{a:1}", "json: unexpected 'a', expected a string key at 1:2 (byte 1)"},
      {"[1 2]", "json: unexpected '2', expected ',' or ']' in array at 1:4 (byte 3)"},
      {"{\"a\":1 \"b\":2}", "json: unexpected '\"', expected ',' or '}' in object at 1:8 (byte 7)"},
      {"[1,2", "json: unexpected end of input, expected ',' or ']' in array at 1:5 (byte 4)"},
      {"{\"a\":", "json: unexpected end of input, expected a value at 1:6 (byte 5)"},
      {"{\"key\": \"an unterminated value", "json: unterminated string at 1:9 (byte 8)"},
      {"\"a\\qb\"", "json: invalid escape '\\q' at 1:3 (byte 2)"},
      {"\"ab\\", "json: unterminated escape at 1:4 (byte 3)"},
      {"\"\\u12", "json: unterminated \\u escape at 1:2 (byte 1)"},
      {"\"\\u12G4\"", "json: invalid hex digit 'G' in \\u escape at 1:6 (byte 5)"},
      {"\"\\u12\"", "json: invalid hex digit '\"' in \\u escape at 1:6 (byte 5)"},
      {"\"\\ud800\"", "json: high surrogate not followed by a low surrogate at 1:2 (byte 1)"},
      {"\"\\ud800\\u0041\"", "json: high surrogate not followed by a low surrogate at 1:2 (byte 1)"},
      {"\"\\udc00\"", "json: lone low surrogate in \\u escape at 1:2 (byte 1)"},
      {"\"a\nb\"", "json: unescaped control character U+000A in string at 1:3 (byte 2)"},
      {"\"a\xFF\"", "json: invalid UTF-8 in string at 1:3 (byte 2)"},
      {"\"\xC0\xAF\"", "json: invalid UTF-8 in string at 1:2 (byte 1)"},        // overlong '/'
      {"\"\xED\xA0\x80\"", "json: invalid UTF-8 in string at 1:2 (byte 1)"},    // encoded surrogate
      {"\"\xF4\x90\x80\x80\"", "json: invalid UTF-8 in string at 1:2 (byte 1)"},  // above U+10FFFF
      {"01", "json: invalid number: leading zero at 1:1 (byte 0)"},
      {"-", "json: invalid number: expected a digit at 1:2 (byte 1)"},
      {"+1", "json: unexpected '+', expected a value at 1:1 (byte 0)"},
      {"1.", "json: invalid number: expected a digit after '.' at 1:3 (byte 2)"},
      {".5", "json: unexpected '.', expected a value at 1:1 (byte 0)"},
      {"1e", "json: invalid number: expected a digit in the exponent at 1:3 (byte 2)"},
      {"1e400", "json: number 1e400 is out of range at 1:1 (byte 0)"},
      {"-1e400", "json: number -1e400 is out of range at 1:1 (byte 0)"},
      {"NaN", "json: unexpected 'N', expected a value at 1:1 (byte 0)"},
      {"tru", "json: invalid literal, expected 'true' at 1:1 (byte 0)"},
      {"nul", "json: invalid literal, expected 'null' at 1:1 (byte 0)"},
      {"[1] x", "json: unexpected 'x' after the JSON value at 1:5 (byte 4)"},
      {"1 2", "json: unexpected '2' after the JSON value at 1:3 (byte 2)"},
      {"// note\n1", "json: unexpected '/', expected a value at 1:1 (byte 0)"},
      {"\xEF\xBB\xBF{}", "json: unexpected byte 0xEF, expected a value at 1:1 (byte 0)"},
      {"{\"a\":1,\"a\":2}", "json: duplicate key \"a\" at 1:8 (byte 7)"},
      {"{\n  \"a\": [1,\n    2,,3]\n}", "json: unexpected ',', expected a value at 3:7 (byte 19)"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    CHECK(parse_error(c.text) == c.message);
  }
  JsonParseOptions opt;
  opt.source = "config.json";
  CHECK_THROWS_WITH_AS(Json::parse("[", opt), "config.json: unexpected end of input, expected a value at 1:2 (byte 1)",
                       InputError);
}

TEST_CASE("json: duplicate keys are caught in large objects too") {
  std::string text = "{";
  for (int i = 0; i < 100; ++i) text += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  CHECK(Json::parse(text + "\"end\":0}").size() == 101);
  CHECK(parse_error(text + "\"k50\":0}").find("duplicate key \"k50\"") != std::string::npos);
}

TEST_CASE("json: depth and size limits") {
  auto nested = [](int depth) { return std::string(size_t(depth), '[') + std::string(size_t(depth), ']'); };
  CHECK(Json::parse(nested(256)).is_array());
  CHECK(parse_error(nested(257)) == "json: nesting deeper than 256 levels at 1:257 (byte 256)");
  // Hostile depth fails fast without recursing into it.
  CHECK(parse_error(std::string(1000000, '[')).find("nesting deeper than 256") != std::string::npos);
  std::string objs;
  for (int i = 0; i < 300; ++i) objs += "{\"a\":";
  CHECK(parse_error(objs).find("nesting deeper than 256") != std::string::npos);
  JsonParseOptions opt;
  opt.max_values = 5;  // the array itself counts
  CHECK(Json::parse("[1,[2],3]", opt).size() == 3);
  CHECK_THROWS_WITH_AS(Json::parse("[1,[2],3,4]", opt), "json: more than 5 values at 1:10 (byte 9)", InputError);
  opt = {};
  opt.max_depth = 2;
  CHECK(Json::parse("[[1]]", opt).is_array());
  CHECK_THROWS_AS(Json::parse("[[[1]]]", opt), InputError);
}

TEST_CASE("json: files") {
  TempDir dir;
  const std::string path = dir.path + "/report.json";
  Json j = Json::object({{"method", "hamu"}, {"forget_acc", 0.125}, {"steps", 40}});
  save_json(path, j);
  CHECK(load_json(path) == j);
  CHECK_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(getpid())));
  CHECK_THROWS_WITH_AS(load_json(dir.path + "/missing.json"),
                       (dir.path + "/missing.json: cannot open: No such file or directory").c_str(), InputError);
  CHECK_THROWS_WITH_AS(load_json(dir.path), (dir.path + ": not a regular file").c_str(), InputError);
  CHECK_THROWS_AS(load_json(path, 4), InputError);  // above max_bytes
  {
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs("{\n  \"a\": tru\n}\n", f);
    std::fclose(f);
  }
  CHECK_THROWS_WITH_AS(load_json(path), (path + ": invalid literal, expected 'true' at 2:8 (byte 9)").c_str(), InputError);
  CHECK_THROWS_AS(save_json(dir.path + "/no/such/dir/x.json", j), InputError);
}

TEST_CASE("json: mutated documents parse or fail with InputError; what parses round-trips") {
  const std::string seed =
      R"({"a":[1,-2.5e3,true,false,null],"s":"x\u00e9\ud83d\ude00\n","o":{"k":[[]],"e":{}},"n":0.125})";
  std::mt19937 rng(99);
  const std::string alphabet = "{}[]:,\"\\/-+.0123456789eEtrufalsn \n\t\x01\x80\xC3\xA9\xFF";
  int parsed = 0;
  for (int trial = 0; trial < 5000; ++trial) {
    std::string text = seed;
    for (int k = 0; k < 1 + int(rng() % 4); ++k) {
      const size_t at = rng() % (text.size() + 1);
      switch (rng() % 3) {
        case 0: if (at < text.size()) text[at] = alphabet[rng() % alphabet.size()]; break;
        case 1: text.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
        case 2: if (at < text.size()) text.erase(at, 1); break;
      }
    }
    try {
      const Json j = Json::parse(text);
      ++parsed;
      if (!(Json::parse(j.dump()) == j) || !(Json::parse(j.dump(2)) == j)) FAIL("round trip changed: " << text);
    } catch (const InputError& e) {
      if (std::string(e.what()).find(" at ") == std::string::npos) FAIL("no position in: " << e.what());
    }
  }
  CHECK(parsed > 0);
}
