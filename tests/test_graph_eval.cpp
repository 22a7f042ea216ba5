// tests/test_graph_eval.cpp: evaluation batches captured once and replayed (unlearn/graph_eval.h, `hamu eval
// --cuda-graph`). On the CPU the "graph" is the batch's closure run again under the host-transfer guard, so these
// tests prove (1) the captured part of a batch reads nothing on the host (the same call on a GPU would end the
// capture), (2) it reads only the fixed buffers each batch is copied into (a replay on stale inputs would differ
// from the ordinary evaluation), and (3) the staging of batch k+1 during batch k, the warm-up, the partial last
// batch and the host-side sums give the ordinary SplitEval bit for bit. The cuda: case runs the real capture.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/rng.h"
#include "kernels/kernels.h"
#include "loaders/batch.h"
#include "models/models.h"
#include "tests/perf_scope.h"
#include "tests/synthetic_images.h"
#include "unlearn/graph_eval.h"
#include "unlearn/metrics.h"

using namespace hamu;

namespace {

// Random labels: accuracy counts depend on the predictions of every row.
ImageDataset eval_images(int64_t n, int64_t channels, int64_t side, int32_t classes, uint64_t seed) {
  return testing::random_images(n, channels, side, classes, seed, false);
}

// A model whose eval-mode BatchNorm statistics are not the identity (fresh random ones), so that the eval path
// of every layer matters.
std::shared_ptr<nn::Module> eval_model(const std::string& arch, const ImageDataset& ds, uint64_t seed, Device device) {
  Rng rng(seed);
  auto model = models::build_model({arch, ds.c, ds.h, ds.w, ds.num_classes}, rng);
  std::mt19937_64 g(seed + 1);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (auto& [name, t] : model->named_buffers()) {
    if (t.dtype() != DType::f32) continue;
    std::vector<float> v(size_t(t.numel()));
    for (float& x : v) x = u(g) - (name.find("mean") != std::string::npos ? 1.0f : 0.0f);
    Tensor dst = t;
    dst.copy_(Tensor::from_vector<float>(v, t.shape()));
  }
  model->to(device);
  return model;
}

// Indices in a shuffled order (the staging must follow the split's order, not the data set's).
std::vector<int64_t> shuffled(int64_t n, uint64_t seed) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = i;
  std::shuffle(v.begin(), v.end(), std::mt19937_64(seed));
  return v;
}

template <class T> bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}
bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

EvalOptions with_graphs(EvalOptions eo, EvalGraphs& graphs) {
  eo.graph = true;
  eo.graphs = &graphs;
  return eo;
}

void check_same(const SplitEval& graphed, const SplitEval& plain) {
  CHECK(graphed.n == plain.n);
  CHECK(same_bits(graphed.acc, plain.acc));
  CHECK(same_bits(graphed.loss, plain.loss));
  CHECK(same_bits(graphed.entropy, plain.entropy));
  CHECK(same_bits(graphed.losses, plain.losses));
  CHECK(same_bits(graphed.predicted, plain.predicted));
  CHECK(same_bits(graphed.probs, plain.probs));
  CHECK(graphed.losses.size() == size_t(plain.n));
}

struct Case {
  int64_t n, batch;
};

// Graphed against ordinary evaluation of `arch` for several batch shapes and with/without probabilities; every
// split is evaluated twice through one EvalGraphs (the second time every full batch replays).
void check_arch(const std::string& arch, Device device) {
  const bool rgb = arch == "resnet20";
  const ImageDataset ds = eval_images(70, rgb ? 3 : 1, rgb ? 8 : 12, 5, 31);
  const Normalizer norm = compute_normalizer(ds);
  auto model = eval_model(arch, ds, 5, device);
  // 70 = 4 x 16 + 6 (a partial last batch), 5 x 14 (exact), 13 < 32 (the split is smaller than one batch).
  for (const Case c : {Case{70, 16}, Case{70, 14}, Case{13, 32}}) {
    for (const bool keep : {false, true}) {
      INFO(arch << ": n " << c.n << ", batch " << c.batch << ", keep_probs " << keep);
      std::vector<int64_t> idx = shuffled(70, 100 + uint64_t(c.batch));
      idx.resize(size_t(c.n));
      EvalOptions eo;
      eo.batch = c.batch;
      eo.device = device;
      eo.keep_probs = keep;
      const SplitEval plain = evaluate_indices(*model, ds, idx, norm, eo);
      if (keep) CHECK(plain.probs.size() == size_t(c.n * ds.num_classes));
      EvalGraphs graphs;
      const EvalOptions geo = with_graphs(eo, graphs);
      const SplitEval first = evaluate_indices(*model, ds, idx, norm, geo);
      const SplitEval second = evaluate_indices(*model, ds, idx, norm, geo);
      check_same(first, plain);
      check_same(second, plain);
      CHECK(graphs.not_used() == "");
      CHECK(graphs.captures() == 1);
      const int64_t full = c.n >= c.batch ? c.n / c.batch : 1;
      // The first full batch is the warm-up; every later full one replays.
      CHECK(graphs.replays() == 2 * full - 1);
      CHECK(model->training());  // the caller's mode is restored
    }
  }
}

// The model behind a forward that reads a value on the host: a GPU capture would end there.
class HostReading : public nn::Module {
 public:
  explicit HostReading(std::shared_ptr<nn::Module> inner) : inner_(register_module("inner", std::move(inner))) {}
  Tensor forward(const Tensor& x) override {
    if (std::isnan(sum(x).item())) throw Error("unreachable: the inputs are finite");
    return inner_->forward(x);
  }

 private:
  std::shared_ptr<nn::Module> inner_;
};

}  // namespace

TEST_CASE("graph eval: graphed evaluation equals the ordinary one bit for bit (mlp, cnn, resnet20)") {
  for (const char* arch : {"mlp", "cnn", "resnet20"}) check_arch(arch, Device{});
}

TEST_CASE("graph eval: evaluate_model shares the graphs over its splits and equals the ordinary report") {
  const ImageDataset train = eval_images(90, 1, 12, 4, 41), test = eval_images(37, 1, 12, 4, 42);
  const Normalizer norm = compute_normalizer(train);
  auto model = eval_model("cnn", train, 6, Device{});
  DataBundle data;
  data.train = train;
  data.test = test;
  std::vector<int64_t> forget = shuffled(90, 1), retain, test_idx = shuffled(37, 2);
  retain.assign(forget.begin() + 25, forget.end());
  forget.resize(25);
  EvalOptions eo;
  eo.batch = 8;
  eo.keep_probs = true;  // the forget split's probabilities (reference comparisons); the others keep none
  const EvalReport plain = evaluate_model(*model, data, {&forget, &retain, &test_idx}, norm, eo);
  EvalGraphs graphs;
  eo.graph = true;
  eo.graphs = &graphs;
  const EvalReport graphed = evaluate_model(*model, data, {&forget, &retain, &test_idx}, norm, eo);
  check_same(graphed.forget, plain.forget);
  check_same(graphed.retain, plain.retain);
  check_same(graphed.test, plain.test);
  CHECK(same_bits(graphed.retain_forget_auc, plain.retain_forget_auc));
  CHECK(same_bits(graphed.forget_test_auc, plain.forget_test_auc));
  // Forget: 3 full batches (with probabilities: its own graph); retain 8 and test 4 share the other one.
  CHECK(graphs.captures() == 2);
  CHECK(graphs.replays() == (3 - 1) + (8 - 1) + 4);
  CHECK(graphs.summary() == "13 batches replayed from 2 capture(s)");
  // Without the caller's EvalGraphs, each call keeps its own, with the same results.
  eo.graphs = nullptr;
  const EvalReport local = evaluate_model(*model, data, {&forget, &retain, &test_idx}, norm, eo);
  check_same(local.forget, plain.forget);
  check_same(local.test, plain.test);
}

TEST_CASE("graph eval: a forward that reads the host fails the (emulated) capture: graphing is given up, with the reason") {
  const ImageDataset ds = eval_images(40, 1, 10, 4, 51);
  const Normalizer norm = compute_normalizer(ds);
  Rng rng(3);
  auto model = std::make_shared<HostReading>(models::build_model({"mlp", 1, 10, 10, 4}, rng));
  const std::vector<int64_t> idx = shuffled(40, 4);
  EvalOptions eo;
  eo.batch = 8;
  const SplitEval plain = evaluate_indices(*model, ds, idx, norm, eo);
  EvalGraphs graphs;
  const EvalOptions geo = with_graphs(eo, graphs);
  check_same(evaluate_indices(*model, ds, idx, norm, geo), plain);
  CHECK(graphs.replays() == 0);
  CHECK(graphs.not_used().find("the capture of an evaluation batch failed") != std::string::npos);
  CHECK(graphs.not_used().find("inside a captured step") != std::string::npos);
  CHECK(graphs.not_used().find("to_vector/item") != std::string::npos);
  CHECK(graphs.entry(*model, ds, 8, false, Device{}) == nullptr);  // given up for the rest of the run
  check_same(evaluate_indices(*model, ds, idx, norm, geo), plain);
}

TEST_CASE("graph eval: NaN and infinite inputs and weights propagate as in the ordinary evaluation") {
  const ImageDataset ds = eval_images(30, 1, 10, 4, 61);
  const std::vector<int64_t> idx = shuffled(30, 5);
  for (const char* arch : {"mlp", "cnn"}) {
    INFO(arch);
    auto model = eval_model(arch, ds, 7, Device{});
    // std 0: pixel 0 -> 0/0 = NaN, every other pixel +Inf.
    Normalizer broken;
    broken.mean = {0.0f};
    broken.std = {0.0f};
    EvalOptions eo;
    eo.batch = 8;
    eo.keep_probs = true;
    const SplitEval plain = evaluate_indices(*model, ds, idx, broken, eo);
    CHECK(std::isnan(plain.loss));
    EvalGraphs graphs;
    eo.graph = true;
    eo.graphs = &graphs;
    check_same(evaluate_indices(*model, ds, idx, broken, eo), plain);
    // A NaN weight instead (finite inputs).
    const Normalizer norm = compute_normalizer(ds);
    const SplitEval finite = evaluate_indices(*model, ds, idx, norm, eo);
    {
      NoGradGuard ng;
      Tensor w = model->parameters().front();
      std::vector<float> v = w.to_vector<float>();
      v[0] = std::nanf("");
      w.copy_(Tensor::from_vector<float>(v, w.shape()));
    }
    eo.graph = false;
    const SplitEval nan_plain = evaluate_indices(*model, ds, idx, norm, eo);
    eo.graph = true;
    const SplitEval nan_graphed = evaluate_indices(*model, ds, idx, norm, eo);
    check_same(nan_graphed, nan_plain);
    CHECK(!same_bits(nan_plain.losses, finite.losses));
    CHECK(graphs.not_used() == "");
    CHECK(graphs.replays() > 0);
  }
}

TEST_CASE("graph eval: moved weights get a new capture; a new batch shape its own entry") {
  const ImageDataset ds = eval_images(48, 1, 10, 4, 71);
  const Normalizer norm = compute_normalizer(ds);
  auto model = eval_model("mlp", ds, 8, Device{});
  const std::vector<int64_t> idx = shuffled(48, 6);
  EvalOptions eo;
  eo.batch = 8;
  const SplitEval plain = evaluate_indices(*model, ds, idx, norm, eo);
  EvalGraphs graphs;
  eo.graph = true;
  eo.graphs = &graphs;
  check_same(evaluate_indices(*model, ds, idx, norm, eo), plain);
  CHECK(graphs.captures() == 1);
  model->to(DType::f64);  // new storage for every weight: the captured addresses are gone
  model->to(DType::f32);
  check_same(evaluate_indices(*model, ds, idx, norm, eo), plain);
  CHECK(graphs.captures() == 2);
  EvalOptions plain12;
  plain12.batch = 12;
  eo.batch = 12;
  check_same(evaluate_indices(*model, ds, idx, norm, eo), evaluate_indices(*model, ds, idx, norm, plain12));
  CHECK(graphs.captures() == 3);
  CHECK(graphs.not_used() == "");
}

TEST_CASE("graph eval: a bad index is an InputError naming it, graphed as ordinary") {
  const ImageDataset ds = eval_images(20, 1, 10, 4, 81);
  const Normalizer norm = compute_normalizer(ds);
  auto model = eval_model("mlp", ds, 9, Device{});
  std::vector<int64_t> idx = shuffled(20, 7);
  idx[15] = 20;  // in the third full batch of 5: a staged (replayed) one
  EvalGraphs graphs;
  EvalOptions eo;
  eo.batch = 5;
  eo.graph = true;
  eo.graphs = &graphs;
  CHECK_THROWS_AS(evaluate_indices(*model, ds, idx, norm, eo), InputError);
  eo.graph = false;
  CHECK_THROWS_AS(evaluate_indices(*model, ds, idx, norm, eo), InputError);
}

#ifdef HAMU_CUDA
TEST_CASE("cuda: graphed evaluation equals the ordinary one on the device bit for bit (mlp, cnn, resnet20)") {
  if (kernels::cuda_device_count() == 0) return;
  const testing::PerfScope det(testing::deterministic_algorithms);
  for (const char* arch : {"mlp", "cnn", "resnet20"}) check_arch(arch, Device{Device::cuda, 0});
}

TEST_CASE("cuda: graphed evaluation of many batches (the staging overlap) equals the ordinary one") {
  if (kernels::cuda_device_count() == 0) return;
  const testing::PerfScope det(testing::deterministic_algorithms);
  const Device gpu{Device::cuda, 0};
  const ImageDataset ds = eval_images(5000, 1, 28, 10, 91);
  const Normalizer norm = compute_normalizer(ds);
  auto model = eval_model("cnn", ds, 10, gpu);
  const std::vector<int64_t> idx = shuffled(5000, 8);
  EvalOptions eo;
  eo.batch = 256;  // 19 full batches + 136
  eo.device = gpu;
  eo.keep_probs = true;
  const SplitEval plain = evaluate_indices(*model, ds, idx, norm, eo);
  EvalGraphs graphs;
  eo.graph = true;
  eo.graphs = &graphs;
  for (int r = 0; r < 3; ++r) check_same(evaluate_indices(*model, ds, idx, norm, eo), plain);
  MESSAGE("cuda graph eval: " << graphs.summary());
  CHECK(graphs.not_used() == "");
  CHECK(graphs.replays() == 3 * 19 - 1);
}
#endif
