// tests/test_collectives.cpp: the collectives layer and data-parallel training/unlearning against the
// 1-rank run. In `make test` the world is one process (the layer's identities and the single-process
// paths); tests/mpi_test.sh runs this suite again under `mpirun -np 2` and `-np 4` (MPI build), where
// every rank compares its N-rank result with the 1-rank run of the same global batch made in-process.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "engine/collectives.h"
#include "engine/overlap.h"
#include "engine/rng.h"
#include "kernels/kernels.h"
#include "models/models.h"
#include "train/train.h"

using namespace hamu;

namespace {

// Values of rank r's buffer (every rank can make every other rank's).
template <class T> std::vector<T> rank_values(int r, size_t n, uint64_t seed) {
  Rng rng(seed * 1000 + uint64_t(r));
  std::vector<T> v(n);
  for (T& x : v) x = T(rng.normal() * std::pow(10.0, double(int(rng.uniform() * 6)) - 3));  // mixed magnitudes
  return v;
}

template <class T> void check_all_reduce(Collectives& c, size_t n, uint64_t seed) {
  std::vector<T> mine = rank_values<T>(c.rank(), n, seed);
  c.all_reduce_sum(mine.data(), n, Device{});
  // The contract: the rank-order sum ((r0 + r1) + r2) + ..., bitwise.
  std::vector<T> want = rank_values<T>(0, n, seed);
  for (int r = 1; r < c.size(); ++r) {
    const std::vector<T> v = rank_values<T>(r, n, seed);
    for (size_t i = 0; i < n; ++i) want[i] += v[i];
  }
  // memcmp on empty vectors would pass null pointers (undefined even for 0 bytes; UBSan stops there).
  CHECK((n == 0 || std::memcmp(mine.data(), want.data(), n * sizeof(T)) == 0));
  // ... and bitwise the same on every rank.
  check_same_on_all_ranks(c, "all-reduce result", hash_bytes(mine.data(), n * sizeof(T)));
}

ImageDataset random_images(int64_t n, int64_t side, int32_t classes, uint64_t seed) {
  ImageDataset ds;
  ds.n = n;
  ds.c = 1;
  ds.h = ds.w = side;
  ds.num_classes = classes;
  for (int32_t k = 0; k < classes; ++k) ds.class_names.push_back(std::string(1, char('a' + k)));
  Rng rng(seed);
  ds.pixels.resize(size_t(n * side * side));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t y = int32_t(i % classes);
    ds.labels.push_back(y);
    for (int64_t p = 0; p < side * side; ++p)  // each class lights its own rows, plus noise
      ds.pixels[size_t(i * side * side + p)] =
          uint8_t(std::min(255.0, 40 * rng.uniform() + ((p / side) % classes == y ? 150 : 0)));
  }
  ds.source = "synthetic";
  return ds;
}

// Largest |a - b| over all parameters, relative to the largest |b|.
double max_rel_diff(nn::Module& a, nn::Module& b) {
  const std::vector<Tensor> pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < pa.size(); ++i) {
    const std::vector<float> x = pa[i].to(Device{}).to_vector<float>(), y = pb[i].to(Device{}).to_vector<float>();
    for (size_t j = 0; j < x.size(); ++j) {
      diff = std::max(diff, double(std::fabs(x[j] - y[j])));
      scale = std::max(scale, double(std::fabs(y[j])));
    }
  }
  return diff / std::max(scale, 1e-30);
}

struct OneThread {
  int saved = omp_get_max_threads();
  OneThread() { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(saved); }
};

}  // namespace

TEST_SUITE("collectives") {

TEST_CASE("shard_of tiles the batch exactly, parts differ by at most one row") {
  for (int64_t n : {1, 2, 3, 7, 64, 129}) {
    for (int parts : {1, 2, 3, 4, 8}) {
      int64_t next = 0, lo = n, hi = 0;
      for (int k = 0; k < parts; ++k) {
        const Shard s = shard_of(n, k, parts);
        CHECK(s.start == next);
        next = s.start + s.count;
        lo = std::min(lo, s.count);
        hi = std::max(hi, s.count);
      }
      CHECK(next == n);
      CHECK(hi - lo <= 1);
    }
  }
}

TEST_CASE("single process: the collectives are identities") {
  Collectives& c = single_process();
  CHECK(c.rank() == 0);
  CHECK(c.size() == 1);
  std::vector<float> v = {1.5f, -2.f, NAN};
  c.all_reduce_sum(v.data(), v.size(), Device{});
  CHECK(v[0] == 1.5f);
  CHECK(std::isnan(v[2]));
  const uint32_t x = 0xdeadbeef;
  const std::vector<uint8_t> g = c.all_gather(&x, sizeof x);
  REQUIRE(g.size() == 4);
  CHECK(std::memcmp(g.data(), &x, 4) == 0);
  CHECK_THROWS_AS(c.broadcast(v.data(), 4, 1, Device{}), Error);
  check_same_on_all_ranks(c, "anything", 42);  // one rank: nothing to disagree with
}

TEST_CASE("fingerprints: any changed byte, shape or value changes the hash") {
  std::vector<uint8_t> bytes(1000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 31 + 7);
  const uint64_t h = hash_bytes(bytes.data(), bytes.size());
  for (size_t i : {size_t(0), size_t(7), size_t(8), size_t(500), size_t(999)}) {
    bytes[i] ^= 1;
    CHECK(hash_bytes(bytes.data(), bytes.size()) != h);
    bytes[i] ^= 1;
  }
  CHECK(hash_bytes(bytes.data(), 999) != h);
  const Tensor a = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  CHECK(hash_tensors({a}) == hash_tensors({a.clone()}));
  CHECK(hash_tensors({a}) != hash_tensors({a.reshape({4})}));
  CHECK(hash_tensors({a}) != hash_tensors({Tensor::from_vector<float>({1, 2, 3, 4.0001f}, {2, 2})}));
}

TEST_CASE("TensorReducer packs, scales, reduces and unpacks in place") {
  // One rank: the result is factor * tensor; factor 0 gives zeros without reading (NaN stays out).
  TensorReducer red(single_process());
  Tensor a = Tensor::from_vector<float>({1, 2, 3}, {3});
  Tensor b = Tensor::from_vector<float>({NAN, 5}, {2});
  Tensor c = Tensor::from_vector<float>({4, 8}, {1, 2});
  Tensor undefined;
  red.all_reduce({&a, &undefined, &b, &c}, {0.5, 1.0, 0.0, 1.0});
  CHECK(a.to_vector<float>() == std::vector<float>{0.5f, 1.f, 1.5f});
  CHECK(b.to_vector<float>() == std::vector<float>{0.f, 0.f});
  CHECK(c.to_vector<float>() == std::vector<float>{4.f, 8.f});
  Tensor d = Tensor::from_vector<double>({1, 2}, {2});
  CHECK_THROWS_AS(red.all_reduce({&a, &d}, {1.0, 1.0}), Error);  // mixed dtypes
  CHECK_THROWS_AS(red.all_reduce({&a}, {1.0, 1.0}), Error);       // one factor per tensor
}

TEST_CASE("world: all-reduce is the rank-order sum, bitwise the same on every rank") {
  Collectives& w = world();
  MESSAGE("world: " << w.backend() << ", " << w.size() << " rank(s)");
  for (size_t n : {size_t(0), size_t(1), size_t(3), size_t(1000), size_t(100003)}) {
    check_all_reduce<float>(w, n, 11 + n);
    check_all_reduce<double>(w, n, 12 + n);
  }
  // Broadcast, all-gather and barrier.
  std::vector<int32_t> v(17, w.rank() == 0 ? 7 : -1);
  if (w.size() > 1) w.broadcast(v.data(), v.size() * sizeof(int32_t), 0, Device{});
  CHECK(std::all_of(v.begin(), v.end(), [](int32_t x) { return x == 7; }));
  const int32_t mine = 100 + w.rank();
  const std::vector<uint8_t> all = w.all_gather(&mine, sizeof mine);
  REQUIRE(all.size() == sizeof(int32_t) * size_t(w.size()));
  for (int r = 0; r < w.size(); ++r) {
    int32_t x;
    std::memcpy(&x, all.data() + sizeof x * size_t(r), sizeof x);
    CHECK(x == 100 + r);
  }
  w.barrier();
}

TEST_CASE("world: a configuration that differs between ranks is refused naming the rank") {
  Collectives& w = world();
  if (w.size() == 1) return;
  try {
    check_same_on_all_ranks(w, "test configuration", w.rank() == w.size() - 1 ? 2 : 1);
    FAIL("no error");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()).find("rank " + std::to_string(w.size() - 1)) != std::string::npos);
    CHECK(std::string(e.what()).find("test configuration") != std::string::npos);
  }
}

TEST_CASE("data-parallel training equals the 1-rank run (BatchNorm-free mlp), ranks stay identical") {
  OneThread one;
  const ImageDataset ds = random_images(96, 6, 4, 5);
  std::vector<int64_t> subset(size_t(ds.n));
  for (int64_t i = 0; i < ds.n; ++i) subset[size_t(i)] = i;
  const Normalizer norm = compute_normalizer(ds);
  for (const char* optimizer : {"sgd", "adamw"}) {
    Rng r1(3), r2(3);
    auto ref = models::build_model({"mlp", 1, 6, 6, 4}, r1);
    auto dp = models::build_model({"mlp", 1, 6, 6, 4}, r2);
    TrainOptions to;
    to.optimizer = optimizer;
    to.epochs = 2;
    to.batch = 20;  // 96 rows: 4 full batches and one of 16 per epoch
    to.lr = 0.01;
    to.clip = 1.0;
    to.seed = 9;
    to.progress = false;
    to.comm = &single_process();
    const std::vector<EpochSummary> a = train_model(*ref, ds, subset, norm, to);
    to.comm = &world();
    const std::vector<EpochSummary> b = train_model(*dp, ds, subset, norm, to);
    const double rel = max_rel_diff(*dp, *ref);
    MESSAGE(std::string(optimizer) << " training on " << world().size() << " rank(s): max relative parameter difference " << rel);
    // AdamW divides by sqrt(v): coordinates whose gradient is near zero carry their rounding into a
    // step of up to lr, so its bound is looser than SGD's (README "Many processes").
    CHECK(rel <= (std::string(optimizer) == "sgd" ? 1e-5 : 1e-4));
    CHECK(std::fabs(a.back().train_loss - b.back().train_loss) <= 1e-5 * std::max(1.0, std::fabs(a.back().train_loss)));
    CHECK(a.back().train_acc == b.back().train_acc);
    check_same_on_all_ranks(world(), "trained parameters", hash_tensors(dp->parameters()));
  }
}

namespace {

// One session of the overlapped reducer against TensorReducer on copies of the same tensors: ranks mark
// their tensors ready in different orders (and leave some to finish()); the sums must be bitwise equal.
template <class T>
void check_overlap_session(Collectives& c, OverlappedReducer& ov, const std::vector<int64_t>& sizes, uint64_t seed) {
  std::vector<Tensor> mine, ref;
  std::vector<double> factors;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 0) {  // an undefined tensor is skipped on every rank
      mine.emplace_back();
      ref.emplace_back();
      factors.push_back(1.0);
      continue;
    }
    std::vector<T> v = rank_values<T>(c.rank(), size_t(sizes[i]), seed + i);
    const double f = i % 4 == 2 ? 0.0 : (i % 3 == 1 ? 1.0 : 0.375);
    if (f == 0 && !v.empty()) v[0] = T(NAN);  // scaled by 0: not read
    mine.push_back(Tensor::full({sizes[i]}, 1e30, Tensor::from_vector<T>(v, {sizes[i]}).dtype()));  // not yet written
    ref.push_back(Tensor::from_vector<T>(v, {sizes[i]}));
    factors.push_back(f);
  }
  TensorReducer packed(c);
  std::vector<Tensor*> ptrs;
  for (Tensor& t : ref) ptrs.push_back(&t);
  packed.all_reduce(ptrs, factors);
  ov.begin(mine, factors);
  std::vector<size_t> order(sizes.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  Rng rng(seed * 31 + uint64_t(c.rank()));  // a different order on every rank
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.below(i))]);
  // Like a backward, each tensor gets its value after begin() and is marked ready after that; nothing
  // may be read or written back before (tensors scaled by 0 included). The last two are left to finish().
  std::vector<Tensor> values;
  for (size_t i = 0; i < sizes.size(); ++i) {
    values.push_back(sizes[i] < 0 ? Tensor() : Tensor::from_vector<T>(rank_values<T>(c.rank(), size_t(sizes[i]), seed + i), {sizes[i]}));
    if (sizes[i] > 0 && factors[i] == 0) values.back().data<T>()[0] = T(NAN);
  }
  auto write = [&](size_t i) {
    if (sizes[i] > 0) std::memcpy(mine[i].template data<T>(), values[i].template data<T>(), size_t(sizes[i]) * sizeof(T));
  };
  for (size_t k = 0; k + 2 < order.size(); ++k) {
    write(order[k]);
    ov.ready(order[k]);
  }
  ov.ready(order[0]);  // a repeated mark is ignored
  write(order[order.size() - 2]);
  write(order[order.size() - 1]);
  ov.finish();
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 0) continue;
    const std::vector<T> a = mine[i].to_vector<T>(), b = ref[i].to_vector<T>();
    CHECK((a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0));
  }
}

}  // namespace

TEST_CASE("overlapped all-reduce: buckets in any ready order equal the packed all-reduce bitwise") {
  Collectives& w = world();
  const std::vector<int64_t> sizes{37, 1, -1, 100, 5, 250, 64, 0, 1000, 3, 17};
  for (size_t cap : {size_t(0), size_t(16), size_t(300), size_t(4096), size_t(1) << 20}) {
    // force: with one rank the collective is the identity, and the buckets still run.
    OverlappedReducer ov(w, cap, /*force=*/true);
    check_overlap_session<float>(w, ov, sizes, 5 + cap);
    check_overlap_session<float>(w, ov, sizes, 6 + cap);  // the same layout again
    check_overlap_session<double>(w, ov, {9, 400, 2}, 7 + cap);  // another layout and dtype
    CHECK(ov.buckets() >= 1);
  }
  OverlappedReducer ov(w, 16, true);
  CHECK_THROWS_AS(ov.begin({Tensor::zeros({2}), Tensor::zeros({2}, DType::f64)}, {1.0, 1.0}), Error);
  CHECK_THROWS_AS(ov.begin({Tensor::zeros({2})}, {1.0, 1.0}), Error);
  // Without force and one rank the reducer does nothing at all.
  OverlappedReducer idle(single_process(), 16);
  Tensor t = Tensor::from_vector<float>({2}, {1});
  idle.begin({t}, {0.5});
  idle.finish();
  CHECK(t.to_vector<float>() == std::vector<float>{2.f});
}

TEST_CASE("overlapped all-reduce: HAMU_BUCKET_KB and HAMU_OVERLAP are read and checked") {
  const char* keep_kb = std::getenv("HAMU_BUCKET_KB");
  const char* keep_ov = std::getenv("HAMU_OVERLAP");
  const std::string saved_kb = keep_kb ? keep_kb : "", saved_ov = keep_ov ? keep_ov : "";
  ::unsetenv("HAMU_OVERLAP");
  ::setenv("HAMU_BUCKET_KB", "64", 1);
  CHECK(overlap_bucket_bytes() == size_t(64) << 10);
  ::setenv("HAMU_BUCKET_KB", "0", 1);
  CHECK(overlap_bucket_bytes() == 0);
  ::setenv("HAMU_BUCKET_KB", "12x", 1);
  CHECK_THROWS_AS(overlap_bucket_bytes(), InputError);
  ::setenv("HAMU_BUCKET_KB", "-1", 1);
  CHECK_THROWS_AS(overlap_bucket_bytes(), InputError);
  ::unsetenv("HAMU_BUCKET_KB");
  CHECK(overlap_bucket_bytes() == size_t(1) << 20);
  ::setenv("HAMU_OVERLAP", "0", 1);
  CHECK(overlap_bucket_bytes() == 0);
  ::setenv("HAMU_OVERLAP", "yes", 1);
  CHECK_THROWS_AS(overlap_bucket_bytes(), InputError);
  if (keep_kb) ::setenv("HAMU_BUCKET_KB", saved_kb.c_str(), 1);
  else ::unsetenv("HAMU_BUCKET_KB");
  if (keep_ov) ::setenv("HAMU_OVERLAP", saved_ov.c_str(), 1);
  else ::unsetenv("HAMU_OVERLAP");
}

TEST_CASE("data-parallel training: overlapping the all-reduce with the backward changes no bit") {
  OneThread one;
  const ImageDataset ds = random_images(96, 6, 4, 5);
  std::vector<int64_t> subset(size_t(ds.n));
  for (int64_t i = 0; i < ds.n; ++i) subset[size_t(i)] = i;
  const Normalizer norm = compute_normalizer(ds);
  std::vector<std::shared_ptr<nn::Module>> trained;
  for (const char* kb : {"0", "1"}) {  // no overlap; 1 KB buckets (several per step)
    ::setenv("HAMU_BUCKET_KB", kb, 1);
    Rng r(3);
    auto m = models::build_model({"mlp", 1, 6, 6, 4}, r);
    TrainOptions to;
    to.optimizer = "sgd";
    to.epochs = 1;
    to.batch = 20;
    to.lr = 0.01;
    to.seed = 9;
    to.progress = false;
    to.comm = &world();
    train_model(*m, ds, subset, norm, to);
    trained.push_back(m);
  }
  ::unsetenv("HAMU_BUCKET_KB");
  CHECK(max_rel_diff(*trained[0], *trained[1]) == 0.0);
}

#ifdef HAMU_CUDA
TEST_CASE("cuda: the overlapped all-reduce queues its buckets on the side stream after the compute stream") {
  if (kernels::cuda_device_count() == 0) {
    MESSAGE("skipped: no GPU");
    return;
  }
  // One rank, forced: the collective is the identity, so each tensor must end as factor * the value a
  // kernel on the compute stream wrote into it just before it was marked ready. A missing wait between
  // the streams would pack the zeros (or stale values) instead.
  const Device gpu{Device::cuda, 0};
  const kernels::CudaCtx& main = kernels::cuda_context(0);
  const std::vector<int64_t> sizes{4096, 1, 300000, 77, 65536, 3};
  for (size_t cap : {size_t(0), size_t(64), size_t(256) << 10}) {
    OverlappedReducer ov(single_process(), cap, /*force=*/true);
    std::vector<Tensor> mine, values;
    std::vector<double> factors;
    for (size_t i = 0; i < sizes.size(); ++i) {
      values.push_back(Tensor::from_vector<float>(rank_values<float>(0, size_t(sizes[i]), 40 + i), {sizes[i]}).to(gpu));
      mine.push_back(Tensor::zeros({sizes[i]}, DType::f32, gpu));
      factors.push_back(i % 3 == 0 ? 0.25 : (i % 3 == 1 ? 1.0 : 0.0));
    }
    ov.begin(mine, factors);
    for (size_t k = 0; k < sizes.size(); ++k) {
      const size_t i = sizes.size() - 1 - k;  // the backward's order: last first
      // A long chain of kernels before the write, so the write lands well after the mark is queued.
      for (int rep = 0; rep < 20; ++rep) kernels::affine(main, sizes[i], values[i].data<float>(), 1.f, 0.f, mine[i].data<float>());
      ov.ready(i);
    }
    ov.finish();
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::vector<float> got = mine[i].to(Device{}).to_vector<float>();
      const std::vector<float> v = values[i].to(Device{}).to_vector<float>();
      size_t bad = 0;
      for (size_t j = 0; j < got.size(); ++j) bad += got[j] != float(factors[i]) * v[j];
      CHECK_MESSAGE(bad == 0, "tensor " << i << " (cap " << cap << "): " << bad << " wrong values");
    }
  }
}
#endif

}  // TEST_SUITE
