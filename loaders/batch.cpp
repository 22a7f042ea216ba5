// loaders/batch.cpp: normalisation statistics, u8 -> float conversion and the seeded Batcher.
#include "loaders/batch.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "engine/error.h"
#include "engine/rng.h"

namespace hamu {
namespace {

void check_indices(const ImageDataset& ds, const int64_t* idx, int64_t count, const char* who) {
  for (int64_t i = 0; i < count; ++i)
    if (idx[i] < 0 || idx[i] >= ds.n)
      throw InputError(std::string(who) + ": index " + std::to_string(idx[i]) + " is outside the data set (" +
                       std::to_string(ds.n) + " images)");
}

void check_channels(const ImageDataset& ds, const Normalizer& norm, const char* who) {
  if (norm.channels() != ds.c || int64_t(norm.std.size()) != ds.c)
    throw InputError(std::string(who) + ": normaliser has " + std::to_string(norm.channels()) +
                     " channels, the data set has " + std::to_string(ds.c));
}

std::vector<float> parse_floats(const std::string& text, const std::string& whole) {
  std::vector<float> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    float v = 0;
    const char* b = text.data() + start;
    const char* e = text.data() + comma;
    const auto [p, ec] = std::from_chars(b, e, v);
    if (ec != std::errc() || p != e || b == e || !std::isfinite(v))
      throw InputError("normaliser '" + whole + "': '" + std::string(b, e) + "' is not a number");
    out.push_back(v);
    start = comma + 1;
  }
  return out;
}

}  // namespace

std::string Normalizer::to_string() const {
  auto list = [](const std::vector<float>& v) {
    std::string s;
    char buf[32];
    for (size_t i = 0; i < v.size(); ++i) {
      std::snprintf(buf, sizeof buf, "%.9g", double(v[i]));
      if (i) s += ',';
      s += buf;
    }
    return s;
  };
  return "mean=" + list(mean) + ";std=" + list(std);
}

Normalizer Normalizer::parse(const std::string& text) {
  const size_t semi = text.find(';');
  if (text.rfind("mean=", 0) != 0 || semi == std::string::npos || text.compare(semi + 1, 4, "std=") != 0)
    throw InputError("normaliser '" + text + "' is not of the form mean=a,b,...;std=c,d,...");
  Normalizer n;
  n.mean = parse_floats(text.substr(5, semi - 5), text);
  n.std = parse_floats(text.substr(semi + 5), text);
  if (n.mean.size() != n.std.size()) throw InputError("normaliser '" + text + "': mean and std differ in length");
  for (float s : n.std)
    if (!(s > 0)) throw InputError("normaliser '" + text + "': std must be positive");
  return n;
}

Normalizer Normalizer::identity(int64_t channels) {
  Normalizer n;
  n.mean.assign(size_t(channels), 0.0f);
  n.std.assign(size_t(channels), 1.0f);
  return n;
}

Normalizer compute_normalizer(const ImageDataset& ds, const std::vector<int64_t>& indices) {
  std::vector<int64_t> all;
  const std::vector<int64_t>* idx = &indices;
  if (indices.empty()) {
    all.resize(size_t(ds.n));
    for (int64_t i = 0; i < ds.n; ++i) all[size_t(i)] = i;
    idx = &all;
  }
  const int64_t count = int64_t(idx->size());
  if (count == 0) throw InputError("compute_normalizer: " + ds.source + " has no images");
  check_indices(ds, idx->data(), count, "compute_normalizer");
  const int64_t plane = ds.h * ds.w;
  Normalizer norm;
  for (int64_t c = 0; c < ds.c; ++c) {
    // Integer sums: exact, so the statistics are identical for any thread count.
    uint64_t s1 = 0, s2 = 0;
#pragma omp parallel for reduction(+ : s1, s2) schedule(static)
    for (int64_t k = 0; k < count; ++k) {
      const uint8_t* p = ds.image((*idx)[size_t(k)]) + c * plane;
      uint64_t a = 0, b = 0;
      for (int64_t j = 0; j < plane; ++j) {
        a += p[j];
        b += uint64_t(p[j]) * p[j];
      }
      s1 += a;
      s2 += b;
    }
    const __int128 m = __int128(count) * plane;
    const __int128 num = m * __int128(s2) - __int128(s1) * __int128(s1);  // m^2 * 255^2 * var
    const double mean = double(s1) / (double(m) * 255.0);
    const double var = double(num) / (double(m) * double(m) * 255.0 * 255.0);
    double sd = std::sqrt(std::max(0.0, var));
    if (sd < 1e-6) sd = 1.0;  // a constant channel carries no information; do not blow it up
    norm.mean.push_back(float(mean));
    norm.std.push_back(float(sd));
  }
  return norm;
}

void normalize_images(const ImageDataset& ds, const int64_t* indices, int64_t count, const Normalizer& norm,
                      float* out) {
  check_channels(ds, norm, "normalize_images");
  // One 256-entry table per channel turns the conversion into a lookup.
  std::vector<float> lut(size_t(ds.c) * 256);
  for (int64_t c = 0; c < ds.c; ++c)
    for (int v = 0; v < 256; ++v)
      lut[size_t(c * 256 + v)] = float((double(v) / 255.0 - double(norm.mean[size_t(c)])) / double(norm.std[size_t(c)]));
  const int64_t plane = ds.h * ds.w, img = ds.image_size();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* src = ds.image(indices[i]);
    float* dst = out + i * img;
    for (int64_t c = 0; c < ds.c; ++c) {
      const float* table = lut.data() + c * 256;
      for (int64_t j = 0; j < plane; ++j) dst[c * plane + j] = table[src[c * plane + j]];
    }
  }
}

Batch gather_batch(const ImageDataset& ds, const std::vector<int64_t>& indices, const Normalizer& norm, Device device) {
  const int64_t b = int64_t(indices.size());
  check_indices(ds, indices.data(), b, "gather_batch");
  check_channels(ds, norm, "gather_batch");
  Batch out;
  out.indices = indices;
  Tensor images = Tensor::empty({b, ds.c, ds.h, ds.w}, DType::f32);
  normalize_images(ds, indices.data(), b, norm, images.data<float>());
  std::vector<int32_t> labels(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) labels[size_t(i)] = ds.labels[size_t(indices[size_t(i)])];
  out.images = images.to(device);
  out.labels = Tensor::from_vector<int32_t>(labels, {b}).to(device);
  return out;
}

Batch batch_rows(const Batch& b, int64_t start, int64_t count) {
  if (start < 0 || count < 0 || start + count > b.size())
    throw Error("batch_rows: rows [" + std::to_string(start) + ", " + std::to_string(start + count) + ") of a batch of " +
                std::to_string(b.size()));
  Batch out;
  out.images = b.images.narrow(0, start, count);
  out.labels = b.labels.narrow(0, start, count);
  out.indices.assign(b.indices.begin() + start, b.indices.begin() + start + count);
  return out;
}

Batcher::Batcher(const ImageDataset& ds, std::vector<int64_t> subset, Normalizer norm, BatchOptions opt)
    : ds_(&ds), subset_(std::move(subset)), norm_(std::move(norm)), opt_(opt) {
  if (opt_.batch_size <= 0) throw InputError("batch size must be positive, not " + std::to_string(opt_.batch_size));
  check_indices(ds, subset_.data(), int64_t(subset_.size()), "Batcher");
  check_channels(ds, norm_, "Batcher");
  set_epoch(0);
}

int64_t Batcher::num_batches() const {
  const int64_t n = size(), bs = opt_.batch_size;
  return opt_.drop_last ? n / bs : (n + bs - 1) / bs;
}

void Batcher::set_epoch(int64_t epoch) {
  epoch_ = epoch;
  cursor_ = 0;
  order_ = subset_;
  if (opt_.shuffle) {
    // A fresh generator per (seed, epoch): any epoch can be replayed without running the earlier ones.
    Rng rng = Rng(opt_.seed).fork(uint64_t(epoch));
    rng.shuffle(order_);
  }
}

Batch Batcher::batch(int64_t b) const {
  if (b < 0 || b >= num_batches())
    throw Error("Batcher: batch " + std::to_string(b) + " of " + std::to_string(num_batches()));
  const int64_t start = b * opt_.batch_size;
  const int64_t len = std::min(opt_.batch_size, size() - start);
  const std::vector<int64_t> idx(order_.begin() + start, order_.begin() + start + len);
  return gather_batch(*ds_, idx, norm_, opt_.device);
}

void Batcher::seek(int64_t epoch, int64_t cursor) {
  if (epoch < 0 || cursor < 0 || cursor > num_batches())
    throw InputError("Batcher: position (epoch " + std::to_string(epoch) + ", batch " + std::to_string(cursor) +
                     ") is outside an epoch of " + std::to_string(num_batches()) + " batches");
  set_epoch(epoch);
  cursor_ = cursor;
}

bool Batcher::next(Batch& out) {
  if (cursor_ >= num_batches()) {
    set_epoch(epoch_ + 1);
    return false;
  }
  out = batch(cursor_++);
  return true;
}

}  // namespace hamu
