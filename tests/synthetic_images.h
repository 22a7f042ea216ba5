// tests/synthetic_images.h: a small ImageDataset of uniformly random pixels for tests that need images of a
// given shape but no learnable signal (graph, evaluation and batching tests).
#pragma once
#include <cstdint>
#include <random>
#include <string>

#include "loaders/dataset.h"

namespace hamu::testing {

// n images of channels x side x side, `classes` classes; labels cycle 0, 1, ... (cyclic) or are drawn at random.
inline ImageDataset random_images(int64_t n, int64_t channels, int64_t side, int32_t classes, uint64_t seed,
                                  bool cyclic_labels = true) {
  ImageDataset ds;
  ds.n = n;
  ds.c = channels;
  ds.h = ds.w = side;
  ds.num_classes = classes;
  for (int32_t k = 0; k < classes; ++k) ds.class_names.push_back(std::string(1, char('a' + k)));
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int> px(0, 255);
  ds.pixels.resize(size_t(n * ds.image_size()));
  for (uint8_t& p : ds.pixels) p = uint8_t(px(g));
  for (int64_t i = 0; i < n; ++i)
    ds.labels.push_back(cyclic_labels ? int32_t(i % classes) : int32_t(g() % uint64_t(classes)));
  ds.source = "synthetic";
  return ds;
}

}  // namespace hamu::testing
