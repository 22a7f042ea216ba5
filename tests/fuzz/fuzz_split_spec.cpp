// tests/fuzz/fuzz_split_spec.cpp: --split SPEC text (class=, rho=, random=, seed=) against a small data
// set; the canonical spec must rebuild the same split. indices=FILE is the indices target's (a
// fuzzed path could name any file on the machine).
#include <string>
#include <vector>

#include "loaders/split.h"
#include "tests/fuzz/fuzz.h"

HAMU_FUZZ_TARGET(split_spec) {
  const std::string spec(reinterpret_cast<const char*>(data), size);
  if (spec.find("indices") != std::string::npos) return;
  std::vector<int32_t> labels(150);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = int32_t((i * 7) % 5);
  const std::vector<std::string> names = {"zero", "one", "two", "three", "four"};
  const hamu::Split s = hamu::make_split(spec, labels, 5, 3, names);
  if (s.forget.size() + s.retain.size() != labels.size()) std::abort();
  const hamu::Split again = hamu::make_split(s.spec, labels, 5, 99, names);
  if (again.forget != s.forget) std::abort();
}
