// engine/error.h: the two error kinds every layer above kernels throws, and shape formatting.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace hamu {

// A runtime failure (exit code 1 at the CLI).
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Bad usage or bad input: a wrong flag, a corrupt file, mismatched shapes (exit code 2 at the CLI).
struct InputError : Error {
  using Error::Error;
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace hamu
