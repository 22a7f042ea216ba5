// tests/fuzz/fuzz_indices.cpp: an index file for --split indices=FILE against a 200-image data set.
#include <vector>

#include "loaders/split.h"
#include "tests/fuzz/fuzz.h"

HAMU_FUZZ_TARGET(indices) {
  const std::string path = hamu::fuzz::write_scratch("forget.txt", data, size);
  std::vector<int32_t> labels(200);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = int32_t(i % 7);
  const hamu::Split s = hamu::make_split("indices=" + path, labels, 7, 1);
  if (s.forget.size() + s.retain.size() != labels.size()) std::abort();
}
