// loaders/number_text.h: how a number is written into a canonical --data / --split spec: the shortest decimal
// text that parses back to the same double, so the canonical spec reproduces the run exactly.
#pragma once
#include <charconv>
#include <string>

namespace hamu {

inline std::string exact_number_text(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

}  // namespace hamu
