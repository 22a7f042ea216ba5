// engine/json.cpp: the JSON value's accessors, the strict parser and the writer.
#include "engine/json.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "engine/atomic_file.h"
#include "engine/input_file.h"

namespace hamu {
namespace {

constexpr double kMaxExactInt = 9007199254740992.0;  // 2^53

// Length of the valid UTF-8 sequence starting at p (at most n bytes available), or 0 when the bytes
// are not valid UTF-8 (overlong forms, surrogates and code points above U+10FFFF included).
size_t utf8_sequence_length(const unsigned char* p, size_t n) {
  const unsigned c = p[0];
  if (c < 0x80) return 1;
  auto cont = [&](size_t i, unsigned lo = 0x80, unsigned hi = 0xBF) { return i < n && p[i] >= lo && p[i] <= hi; };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// How a byte reads in an error message.
std::string describe_byte(char ch) {
  const unsigned char c = static_cast<unsigned char>(ch);
  if (c >= 0x20 && c < 0x7F) return std::string("'") + ch + "'";
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", c);
  return std::string("byte ") + buf;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Parser

class JsonParser {
 public:
  JsonParser(std::string_view text, const JsonParseOptions& opt) : s_(text), opt_(opt) {}

  Json parse_document() {
    skip_ws();
    Json v = parse_value(0);
    skip_ws();
    if (pos_ < s_.size()) fail("unexpected " + describe_byte(s_[pos_]) + " after the JSON value", pos_);
    return v;
  }

 private:
  std::string_view s_;
  const JsonParseOptions& opt_;
  size_t pos_ = 0;
  size_t values_ = 0;

  [[noreturn]] void fail(const std::string& what, size_t at) const {
    // Line and column are counted only here, on the error path.
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    throw InputError(opt_.source + ": " + what + " at " + std::to_string(line) + ":" + std::to_string(col) +
                     " (byte " + std::to_string(at) + ")");
  }

  void skip_ws() {
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  [[noreturn]] void fail_unexpected(const char* expected) const {
    if (pos_ >= s_.size()) fail(std::string("unexpected end of input, expected ") + expected, pos_);
    fail("unexpected " + describe_byte(s_[pos_]) + ", expected " + expected, pos_);
  }

  Json parse_value(int depth) {
    if (pos_ >= s_.size()) fail("unexpected end of input, expected a value", pos_);
    if (opt_.max_values && ++values_ > opt_.max_values)
      fail("more than " + std::to_string(opt_.max_values) + " values", pos_);
    switch (s_[pos_]) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return Json(parse_string());
      case 't': return parse_literal("true", Json(true));
      case 'f': return parse_literal("false", Json(false));
      case 'n': return parse_literal("null", Json());
      default:
        if (s_[pos_] == '-' || (s_[pos_] >= '0' && s_[pos_] <= '9')) return Json(parse_number());
        fail_unexpected("a value");
    }
  }

  Json parse_literal(std::string_view word, Json value) {
    if (s_.substr(pos_, word.size()) != word) fail("invalid literal, expected '" + std::string(word) + "'", pos_);
    pos_ += word.size();
    return value;
  }

  void check_depth(int depth) const {
    if (depth > opt_.max_depth) fail("nesting deeper than " + std::to_string(opt_.max_depth) + " levels", pos_);
  }

  Json parse_array(int depth) {
    check_depth(depth);
    ++pos_;  // '['
    Json out = Json::array();
    auto& items = std::get<Json::Array>(out.v_);
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return out;
    }
    for (;;) {
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ']') fail("trailing comma in array", pos_);
      items.push_back(parse_value(depth));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return out;
      }
      fail_unexpected("',' or ']' in array");
    }
  }

  Json parse_object(int depth) {
    check_depth(depth);
    ++pos_;  // '{'
    Json out = Json::object();
    auto& obj = std::get<JsonObject>(out.v_);
    // Duplicate keys are rejected; a hash set takes over from linear search once objects grow, so
    // a hostile header with many keys stays linear.
    std::unordered_set<std::string> seen;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return out;
    }
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') {
        if (pos_ < s_.size() && s_[pos_] == '}') fail("trailing comma in object", pos_);
        fail_unexpected("a string key");
      }
      const size_t key_pos = pos_;
      std::string key = parse_string();
      bool dup = false;
      if (obj.keys.size() < 16) {
        for (const auto& k : obj.keys) dup = dup || k == key;
      } else {
        if (seen.empty()) seen.insert(obj.keys.begin(), obj.keys.end());
        dup = !seen.insert(key).second;
      }
      if (dup) fail("duplicate key \"" + key + "\"", key_pos);
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':') fail_unexpected("':' after the key");
      ++pos_;
      skip_ws();
      Json value = parse_value(depth);
      obj.keys.push_back(std::move(key));
      obj.values.push_back(std::move(value));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return out;
      }
      fail_unexpected("',' or '}' in object");
    }
  }

  uint32_t parse_hex4(size_t at) const {
    uint32_t v = 0;
    for (size_t i = at; i < at + 4; ++i) {
      if (i >= s_.size()) fail("unterminated \\u escape", at - 2);
      const char c = s_[i];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= uint32_t(c - 'A' + 10);
      else fail("invalid hex digit " + describe_byte(c) + " in \\u escape", i);
    }
    return v;
  }

  std::string parse_string() {
    const size_t start = pos_;
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      // Copy the plain run in one go.
      size_t run = pos_;
      while (run < s_.size()) {
        const unsigned char c = static_cast<unsigned char>(s_[run]);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++run;
      }
      out.append(s_.data() + pos_, run - pos_);
      pos_ = run;
      if (pos_ >= s_.size()) fail("unterminated string", start);
      const unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "%04X", c);
        fail(std::string("unescaped control character U+") + buf + " in string", pos_);
      }
      if (c >= 0x80) {
        const size_t len = utf8_sequence_length(reinterpret_cast<const unsigned char*>(s_.data()) + pos_, s_.size() - pos_);
        if (len == 0) fail("invalid UTF-8 in string", pos_);
        out.append(s_.data() + pos_, len);
        pos_ += len;
        continue;
      }
      parse_escape(out);
    }
  }

  void parse_escape(std::string& out) {
    const size_t at = pos_;
    if (pos_ + 1 >= s_.size()) fail("unterminated escape", at);
    const char e = s_[pos_ + 1];
    pos_ += 2;
    switch (e) {
      case '"': out += '"'; return;
      case '\\': out += '\\'; return;
      case '/': out += '/'; return;
      case 'b': out += '\b'; return;
      case 'f': out += '\f'; return;
      case 'n': out += '\n'; return;
      case 'r': out += '\r'; return;
      case 't': out += '\t'; return;
      case 'u': break;
      default: fail("invalid escape '\\" + std::string(1, e) + "'", at);
    }
    uint32_t cp = parse_hex4(pos_);
    pos_ += 4;
    if (cp >= 0xDC00 && cp <= 0xDFFF) fail("lone low surrogate in \\u escape", at);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (pos_ + 1 >= s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u')
        fail("high surrogate not followed by a low surrogate", at);
      const uint32_t lo = parse_hex4(pos_ + 2);
      if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate not followed by a low surrogate", at);
      pos_ += 6;
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    append_utf8(out, cp);
  }

  double parse_number() {
    const size_t start = pos_;
    auto digit = [&](size_t i) { return i < s_.size() && s_[i] >= '0' && s_[i] <= '9'; };
    size_t i = pos_;
    if (s_[i] == '-') ++i;
    if (!digit(i)) fail("invalid number: expected a digit", i);
    if (s_[i] == '0') {
      ++i;
      if (digit(i)) fail("invalid number: leading zero", start);
    } else {
      while (digit(i)) ++i;
    }
    if (i < s_.size() && s_[i] == '.') {
      ++i;
      if (!digit(i)) fail("invalid number: expected a digit after '.'", i);
      while (digit(i)) ++i;
    }
    if (i < s_.size() && (s_[i] == 'e' || s_[i] == 'E')) {
      ++i;
      if (i < s_.size() && (s_[i] == '+' || s_[i] == '-')) ++i;
      if (!digit(i)) fail("invalid number: expected a digit in the exponent", i);
      while (digit(i)) ++i;
    }
    pos_ = i;
    const std::string_view text = s_.substr(start, i - start);
    double value = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), value);
    if (r.ec == std::errc::result_out_of_range) {
      // Too small to represent reads as (signed) zero, as every JSON reader does; too large is an error.
      if (decimal_magnitude(text) > 0) fail("number " + std::string(text.substr(0, 40)) + " is out of range", start);
      return text[0] == '-' ? -0.0 : 0.0;
    }
    if (r.ec != std::errc() || r.ptr != text.data() + text.size()) fail("invalid number", start);
    return value;
  }

  // Decimal exponent of the leading significant digit of a non-zero number (saturating).
  static int64_t decimal_magnitude(std::string_view t) {
    size_t i = t[0] == '-' ? 1 : 0;
    int64_t int_digits = 0, lead = INT64_MIN;
    for (; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i) {
      if (lead == INT64_MIN && t[i] != '0') lead = int_digits;
      ++int_digits;
    }
    if (lead != INT64_MIN) lead = int_digits - 1 - lead;
    if (i < t.size() && t[i] == '.') {
      int64_t k = 0;
      for (++i; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i, ++k)
        if (lead == INT64_MIN && t[i] != '0') lead = -(k + 1);
    }
    if (lead == INT64_MIN) return INT64_MIN;  // zero
    int64_t exp = 0;
    if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
      ++i;
      const bool neg = i < t.size() && t[i] == '-';
      if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
      for (; i < t.size(); ++i) exp = std::min<int64_t>(exp * 10 + (t[i] - '0'), int64_t(1) << 40);
      if (neg) exp = -exp;
    }
    return lead + exp;
  }
};

Json Json::parse(std::string_view text, const JsonParseOptions& options) {
  return JsonParser(text, options).parse_document();
}

// ------------------------------------------------------------------------------------------------
// Accessors

const char* Json::type_name(Type t) {
  switch (t) {
    case Type::null: return "null";
    case Type::boolean: return "bool";
    case Type::number: return "number";
    case Type::string: return "string";
    case Type::array: return "array";
    case Type::object: return "object";
  }
  return "?";
}

void Json::type_error(Type want) const {
  throw InputError(std::string("expected ") + type_name(want) + ", found " + type_name(type()));
}

int Json::check_index(int i) {
  if (i < 0) throw InputError("json: negative array index " + std::to_string(i));
  return i;
}

Json Json::array(std::initializer_list<Json> items) {
  Json j;
  j.v_ = Array(items);
  return j;
}

Json Json::object(std::initializer_list<std::pair<std::string, Json>> members) {
  Json j;
  j.v_ = JsonObject{};
  for (const auto& [k, v] : members) j.set(k, v);
  return j;
}

bool Json::is_integer() const {
  if (!is_number()) return false;
  const double x = std::get<double>(v_);
  return std::isfinite(x) && x == std::floor(x) && std::fabs(x) <= kMaxExactInt;
}

bool Json::as_bool() const {
  if (!is_bool()) type_error(Type::boolean);
  return std::get<bool>(v_);
}

double Json::as_number() const {
  if (!is_number()) type_error(Type::number);
  return std::get<double>(v_);
}

int64_t Json::as_int() const {
  const double x = as_number();
  if (!is_integer()) throw InputError("expected an integer, found " + dump());
  return static_cast<int64_t>(x);
}

const std::string& Json::as_string() const {
  if (!is_string()) type_error(Type::string);
  return std::get<std::string>(v_);
}

const Json::Array& Json::as_array() const {
  if (!is_array()) type_error(Type::array);
  return std::get<Array>(v_);
}

Json::Array& Json::as_array() {
  if (!is_array()) type_error(Type::array);
  return std::get<Array>(v_);
}

const JsonObject& Json::as_object() const {
  if (!is_object()) type_error(Type::object);
  return std::get<JsonObject>(v_);
}

size_t Json::size() const {
  if (is_array()) return std::get<Array>(v_).size();
  if (is_object()) return std::get<JsonObject>(v_).keys.size();
  return 0;
}

const Json& Json::at(size_t i) const {
  const Array& a = as_array();
  if (i >= a.size())
    throw InputError("json: index " + std::to_string(i) + " out of range for an array of " + std::to_string(a.size()));
  return a[i];
}

Json& Json::operator[](size_t i) {
  Array& a = as_array();
  if (i >= a.size())
    throw InputError("json: index " + std::to_string(i) + " out of range for an array of " + std::to_string(a.size()));
  return a[i];
}

Json& Json::push_back(Json value) {
  if (is_null()) v_ = Array{};
  Array& a = as_array();
  a.push_back(std::move(value));
  return a.back();
}

const Json* Json::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  const auto& o = std::get<JsonObject>(v_);
  for (size_t i = 0; i < o.keys.size(); ++i)
    if (o.keys[i] == key) return &o.values[i];
  return nullptr;
}

Json* Json::find(std::string_view key) { return const_cast<Json*>(static_cast<const Json&>(*this).find(key)); }

const Json& Json::at(std::string_view key) const {
  if (!is_object()) throw InputError("expected an object with key '" + std::string(key) + "', found " + type_name(type()));
  const Json* v = find(key);
  if (!v) throw InputError("missing key '" + std::string(key) + "'");
  return *v;
}

Json& Json::operator[](std::string_view key) {
  if (is_null()) v_ = JsonObject{};
  if (!is_object()) type_error(Type::object);
  if (Json* v = find(key)) return *v;
  auto& o = std::get<JsonObject>(v_);
  o.keys.emplace_back(key);
  o.values.emplace_back();
  return o.values.back();
}

Json& Json::set(std::string_view key, Json value) {
  (*this)[key] = std::move(value);
  return *this;
}

bool Json::erase(std::string_view key) {
  if (!is_object()) return false;
  auto& o = std::get<JsonObject>(v_);
  for (size_t i = 0; i < o.keys.size(); ++i) {
    if (o.keys[i] == key) {
      o.keys.erase(o.keys.begin() + i);
      o.values.erase(o.values.begin() + i);
      return true;
    }
  }
  return false;
}

Json::Members Json::members() const { return Members{&as_object()}; }

bool Json::operator==(const Json& other) const {
  if (type() != other.type()) return false;
  switch (type()) {
    case Type::null: return true;
    case Type::boolean: return as_bool() == other.as_bool();
    case Type::number: {
      const double a = as_number(), b = other.as_number();
      return a == b || (std::isnan(a) && std::isnan(b));
    }
    case Type::string: return as_string() == other.as_string();
    case Type::array: return as_array() == other.as_array();
    case Type::object: {
      const auto &a = as_object(), &b = other.as_object();
      return a.keys == b.keys && a.values == b.values;
    }
  }
  return false;
}

// ------------------------------------------------------------------------------------------------
// Writer

namespace {

void write_number(std::string& out, double x) {
  if (!std::isfinite(x)) {
    out += "null";
    return;
  }
  if (x == 0) {
    out += std::signbit(x) ? "-0" : "0";
    return;
  }
  // Integers print as integers (to_chars would pick "1e+06" as the shorter form of 1000000).
  if (x == std::floor(x) && std::fabs(x) <= kMaxExactInt) {
    out += std::to_string(static_cast<int64_t>(x));
    return;
  }
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);  // shortest form that round-trips
  out.append(buf, r.ptr);
}

void write_string(std::string& out, const std::string& s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c >= 0x80) {
      const size_t len = utf8_sequence_length(p + i, n - i);
      if (len == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD for a byte that is not UTF-8
        ++i;
      } else {
        out.append(s, i, len);
        i += len;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += char(c);
        }
    }
    ++i;
  }
  out += '"';
}

void newline(std::string& out, int indent, int level) {
  out += '\n';
  out.append(size_t(indent) * size_t(level), ' ');
}

void write_value(std::string& out, const Json& j, int indent, int level) {
  switch (j.type()) {
    case Json::Type::null: out += "null"; return;
    case Json::Type::boolean: out += j.as_bool() ? "true" : "false"; return;
    case Json::Type::number: write_number(out, j.as_number()); return;
    case Json::Type::string: write_string(out, j.as_string()); return;
    case Json::Type::array: {
      const auto& a = j.as_array();
      if (a.empty()) {
        out += "[]";
        return;
      }
      bool flat = indent < 0;
      if (!flat) {
        flat = true;
        for (const auto& x : a) flat = flat && (x.is_number() || x.is_bool() || x.is_null());
      }
      out += '[';
      for (size_t i = 0; i < a.size(); ++i) {
        if (i) out += (indent >= 0 && flat) ? ", " : ",";
        if (!flat) newline(out, indent, level + 1);
        write_value(out, a[i], indent, level + 1);
      }
      if (!flat) newline(out, indent, level);
      out += ']';
      return;
    }
    case Json::Type::object: {
      const auto& o = j.as_object();
      if (o.keys.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      for (size_t i = 0; i < o.keys.size(); ++i) {
        if (i) out += ',';
        if (indent >= 0) newline(out, indent, level + 1);
        write_string(out, o.keys[i]);
        out += indent >= 0 ? ": " : ":";
        write_value(out, o.values[i], indent, level + 1);
      }
      if (indent >= 0) newline(out, indent, level);
      out += '}';
      return;
    }
  }
}

}  // namespace

std::string Json::dump(int indent) const {
  std::string out;
  write_value(out, *this, indent, 0);
  return out;
}

// ------------------------------------------------------------------------------------------------
// Files

Json load_json(const std::string& path, size_t max_bytes) {
  const InputFile file(path);
  if (file.size() > max_bytes)
    throw InputError(path + ": " + std::to_string(file.size()) + " bytes is more than the " +
                     std::to_string(max_bytes) + " allowed for a JSON file");
  std::string text(size_t(file.size()), '\0');
  if (file.read_at(text.data(), text.size(), 0) != text.size()) throw InputError(path + ": read failed: file shrank");
  JsonParseOptions opt;
  opt.source = path;
  return Json::parse(text, opt);
}

void save_json(const std::string& path, const Json& value, int indent) {
  AtomicFile f(path);
  f.write(value.dump(indent) + "\n");
  f.commit();
}

}  // namespace hamu
