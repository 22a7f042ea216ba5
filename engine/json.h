// engine/json.h: a small strict JSON value (insertion-ordered objects), its parser and its writer.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "engine/error.h"

namespace hamu {

class Json;

// Object members in insertion order. Keys and values are kept in two parallel vectors so that the
// type stays complete while Json itself is still being declared.
struct JsonObject {
  std::vector<std::string> keys;
  std::vector<Json> values;
};

struct JsonParseOptions {
  int max_depth = 256;  // nesting of arrays and objects; deeper input is rejected, never recursed into
  // Values (nodes) allowed in the document, 0 for no limit. A parsed value costs up to ~100 bytes
  // (node plus vector growth) for as little as 2 bytes of input, so readers of untrusted files that
  // may be large set this to bound memory independently of the file's size.
  size_t max_values = 0;
  // Prefix of every error message, usually the file the text came from.
  std::string source = "json";
};

class Json {
 public:
  enum class Type : uint8_t { null, boolean, number, string, array, object };
  using Array = std::vector<Json>;

  // Scalars convert implicitly so that builders read naturally: j.set("lr", 0.1).set("name", "x").
  Json() = default;
  Json(std::nullptr_t) {}
  Json(bool b) : v_(b) {}
  Json(double x) : v_(x) {}
  template <class T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Json(T x) : v_(static_cast<double>(x)) {}
  Json(const char* s) : v_(std::string(s)) {}
  Json(std::string s) : v_(std::move(s)) {}
  Json(std::string_view s) : v_(std::string(s)) {}
  template <class T, std::enable_if_t<std::is_constructible_v<Json, const T&>, int> = 0>
  Json(const std::vector<T>& xs) : v_(Array(xs.begin(), xs.end())) {}

  static Json array(std::initializer_list<Json> items = {});
  static Json object(std::initializer_list<std::pair<std::string, Json>> members = {});

  Type type() const { return Type(v_.index()); }
  static const char* type_name(Type t);
  bool is_null() const { return type() == Type::null; }
  bool is_bool() const { return type() == Type::boolean; }
  bool is_number() const { return type() == Type::number; }
  bool is_string() const { return type() == Type::string; }
  bool is_array() const { return type() == Type::array; }
  bool is_object() const { return type() == Type::object; }
  // A number with no fractional part that an int64 holds exactly (|x| <= 2^53).
  bool is_integer() const;

  // Typed reads; a wrong type throws InputError("expected number, found string").
  bool as_bool() const;
  double as_number() const;
  int64_t as_int() const;  // also rejects non-integral numbers
  const std::string& as_string() const;
  const Array& as_array() const;
  Array& as_array();
  const JsonObject& as_object() const;
  template <class T> T get() const;  // bool, any arithmetic type (range-checked), std::string

  // Arrays and objects: element count (0 for scalars).
  size_t size() const;
  const Json& at(size_t i) const;  // throws InputError when out of range
  const Json& operator[](size_t i) const { return at(i); }
  Json& operator[](size_t i);
  // int overloads keep j[0] from being ambiguous with the const char* key overload.
  const Json& operator[](int i) const { return at(size_t(check_index(i))); }
  Json& operator[](int i) { return (*this)[size_t(check_index(i))]; }
  Json& push_back(Json value);  // a null becomes an array first; returns the new element

  // Objects (linear lookup: objects here are small, and large ones are only iterated).
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  const Json* find(std::string_view key) const;
  Json* find(std::string_view key);
  const Json& at(std::string_view key) const;  // throws InputError("missing key 'name'")
  const Json& operator[](std::string_view key) const { return at(key); }
  Json& operator[](std::string_view key);  // inserts null when absent; a null becomes an object first
  Json& operator[](const char* key) { return (*this)[std::string_view(key)]; }
  const Json& operator[](const char* key) const { return at(std::string_view(key)); }
  // Replaces or appends; returns *this so builders chain.
  Json& set(std::string_view key, Json value);
  bool erase(std::string_view key);
  // The member's value, or `fallback` when the key is absent or null; a present value of the wrong
  // type throws InputError naming the key.
  template <class T> T get_or(std::string_view key, T fallback) const;
  std::string get_or(std::string_view key, const char* fallback) const { return get_or<std::string>(key, fallback); }

  // Iterates object members as (key, value) pairs of references, in insertion order.
  class MemberIter {
   public:
    MemberIter(const JsonObject* o, size_t i) : o_(o), i_(i) {}
    std::pair<const std::string&, const Json&> operator*() const { return {o_->keys[i_], o_->values[i_]}; }
    MemberIter& operator++() { ++i_; return *this; }
    bool operator!=(const MemberIter& other) const { return i_ != other.i_; }

   private:
    const JsonObject* o_;
    size_t i_;
  };
  struct Members {
    const JsonObject* o;
    MemberIter begin() const { return {o, 0}; }
    MemberIter end() const { return {o, o ? o->keys.size() : 0}; }
  };
  Members members() const;  // throws unless an object

  // Deep, order-sensitive equality (insertion order is part of the value here).
  bool operator==(const Json& other) const;
  bool operator!=(const Json& other) const { return !(*this == other); }

  // Compact when indent < 0; otherwise one member per line, `indent` spaces per level (arrays of
  // numbers, bools and nulls stay on one line). Numbers print in the shortest form that parses
  // back to the same double; NaN and infinities become null. Invalid UTF-8 in strings is written
  // as U+FFFD so the output is always valid JSON.
  std::string dump(int indent = -1) const;

  // Strict RFC 8259: no comments, trailing commas, leading zeros, NaN, duplicate keys, lone
  // surrogates or invalid UTF-8. Errors are InputError("<source>: <what> at LINE:COL (byte N)").
  static Json parse(std::string_view text, const JsonParseOptions& options = {});

 private:
  std::variant<std::nullptr_t, bool, double, std::string, Array, JsonObject> v_;
  [[noreturn]] void type_error(Type want) const;
  static int check_index(int i);
  friend class JsonParser;
};

// Reads and parses a whole file (errors name the file). Files above max_bytes are rejected unread.
Json load_json(const std::string& path, size_t max_bytes = size_t(16) << 20);
// Writes dump(indent) plus a newline to a temporary file and renames it over `path`.
void save_json(const std::string& path, const Json& value, int indent = 2);

// ------------------------------------------------------------------------------------------------
// Template definitions.

template <class T>
T Json::get() const {
  if constexpr (std::is_same_v<T, bool>) {
    return as_bool();
  } else if constexpr (std::is_same_v<T, std::string>) {
    return as_string();
  } else if constexpr (std::is_integral_v<T>) {
    const int64_t x = as_int();
    if constexpr (std::is_unsigned_v<T>) {
      if (x < 0 || uint64_t(x) > uint64_t(std::numeric_limits<T>::max()))
        throw InputError("value " + std::to_string(x) + " is out of range");
    } else {
      if (x < int64_t(std::numeric_limits<T>::min()) || x > int64_t(std::numeric_limits<T>::max()))
        throw InputError("value " + std::to_string(x) + " is out of range");
    }
    return static_cast<T>(x);
  } else {
    static_assert(std::is_floating_point_v<T>, "Json::get supports bool, arithmetic types and std::string");
    return static_cast<T>(as_number());
  }
}

template <class T>
T Json::get_or(std::string_view key, T fallback) const {
  const Json* v = find(key);
  if (!v || v->is_null()) return fallback;
  try {
    return v->get<T>();
  } catch (const InputError& e) {
    throw InputError("key '" + std::string(key) + "': " + e.what());
  }
}

}  // namespace hamu
