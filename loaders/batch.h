// loaders/batch.h: per-channel normalisation and seeded batching of an ImageDataset into Tensors.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "loaders/dataset.h"

namespace hamu {

// x_norm = (u8/255 - mean[c]) / std[c]. Kept with a checkpoint so evaluation normalises identically.
struct Normalizer {
  std::vector<float> mean, std;
  bool empty() const { return mean.empty(); }
  int64_t channels() const { return int64_t(mean.size()); }
  // "mean=0.286,0.1;std=0.353,0.2" with round-trip precision (%.9g).
  std::string to_string() const;
  // Parses to_string's form; InputError naming the text otherwise.
  static Normalizer parse(const std::string& text);
  // Identity for raw [0,1] pixels (mean 0, std 1).
  static Normalizer identity(int64_t channels);
};

// Population mean/std per channel over every pixel of the images in `indices` (all images when
// empty), pixels scaled to [0,1]. Exact: u8 sums are integers, so the result does not depend on the
// thread count. A constant channel (std below 1e-6) gets std = 1.
Normalizer compute_normalizer(const ImageDataset& ds, const std::vector<int64_t>& indices = {});

struct Batch {
  Tensor images;                 // [B, C, H, W] float32, normalised
  Tensor labels;                 // [B] int32
  std::vector<int64_t> indices;  // dataset index of each row
  int64_t size() const { return int64_t(indices.size()); }
};

// Normalises the listed images into out[count, C, H, W] (host memory); OpenMP over images.
void normalize_images(const ImageDataset& ds, const int64_t* indices, int64_t count, const Normalizer& norm, float* out);
// One batch holding exactly `indices`, in that order, on `device`.
Batch gather_batch(const ImageDataset& ds, const std::vector<int64_t>& indices, const Normalizer& norm,
                   Device device = {});

// Rows [start, start + count) of a batch (views of its tensors; a rank's share in a multi-process run).
Batch batch_rows(const Batch& b, int64_t start, int64_t count);

struct BatchOptions {
  int64_t batch_size = 128;
  bool shuffle = true;     // reshuffle every epoch from (seed, epoch)
  bool drop_last = false;  // drop the last partial batch
  uint64_t seed = 0;
  Device device;
};

// Batches over a subset of a data set. Holds a pointer to `ds`, which must outlive it.
// Deterministic: the order of epoch e depends only on (seed, e).
class Batcher {
 public:
  Batcher(const ImageDataset& ds, std::vector<int64_t> subset, Normalizer norm, BatchOptions opt);

  int64_t size() const { return int64_t(subset_.size()); }  // samples per epoch before drop_last
  int64_t num_batches() const;                              // batches per epoch
  int64_t epoch() const { return epoch_; }
  const std::vector<int64_t>& order() const { return order_; }  // this epoch's dataset indices

  void set_epoch(int64_t epoch);  // reorders; resets the cursor
  Batch batch(int64_t b) const;   // batch b of the current epoch
  // Iteration: the next batch of the current epoch; false (and set_epoch(epoch()+1)) at the end.
  bool next(Batch& out);
  // Where next() stands, and a jump back there (resumable runs): set_epoch(epoch), then the cursor.
  int64_t cursor() const { return cursor_; }
  void seek(int64_t epoch, int64_t cursor);

 private:
  const ImageDataset* ds_;
  std::vector<int64_t> subset_, order_;
  Normalizer norm_;
  BatchOptions opt_;
  int64_t epoch_ = 0, cursor_ = 0;
};

}  // namespace hamu
