// tests/test_run_state.cpp: the state files of resumable runs (engine/run_state.h): exact round trips of
// tensors, doubles (NaN included), counters and metadata; optimizers and batchers continued from a saved
// state step bitwise as the uninterrupted ones; bad state files refused naming the file. The end-to-end
// kill-and-resume checks of hamu train/unlearn are tests/resume_test.sh.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "engine/optim.h"
#include "engine/run_state.h"
#include "loaders/batch.h"
#include "tests/files.h"

namespace hamu {
namespace {

using testing::TempDir;

std::vector<Tensor> random_params(uint64_t seed) {
  Rng rng(seed);
  std::vector<Tensor> ps;
  for (Shape s : {Shape{7, 5}, Shape{5}, Shape{3, 2, 2}}) {
    Tensor p = Tensor::zeros(s);
    rng.fill_normal(p, 0, 1);
    p.requires_grad_(true);
    ps.push_back(p);
  }
  return ps;
}

// Step `opt` over `params` with gradients drawn from `grads` (the same stream for twin optimizers).
void take_steps(Optimizer& opt, std::vector<Tensor>& params, Rng& grads, int n) {
  for (int i = 0; i < n; ++i) {
    for (Tensor& p : params) {
      Tensor g = Tensor::zeros(p.shape());
      grads.fill_normal(g, 0, 1);
      p.set_grad(g);
    }
    opt.step();
  }
}

bool same_bits(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    const std::vector<float> x = a[i].to_vector<float>(), y = b[i].to_vector<float>();
    if (x.size() != y.size() || std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) != 0) return false;
  }
  return true;
}

// Runs `make` twice: once 3+4 steps straight, once 3 steps, a save, a fresh optimizer loaded from the file,
// 4 more steps. The parameters must agree to the bit.
void check_optimizer_resume(const std::function<std::unique_ptr<Optimizer>(std::vector<Tensor>)>& make) {
  TempDir dir;
  std::vector<Tensor> straight = random_params(11), resumed = random_params(11);
  Rng g1(5), g2(5);
  auto a = make(straight);
  take_steps(*a, straight, g1, 7);

  auto b = make(resumed);
  take_steps(*b, resumed, g2, 3);
  RunState st;
  st.kind = "test";
  b->save_state(st, "optim/");
  for (size_t i = 0; i < resumed.size(); ++i) st.put(std::to_string(i) + ".p", resumed[i]);
  save_run_state(dir / "s.state", st);

  const RunState back = load_run_state(dir / "s.state", "test");
  std::vector<Tensor> fresh = random_params(99);  // other values: everything must come from the file
  for (size_t i = 0; i < fresh.size(); ++i) back.restore(std::to_string(i) + ".p", fresh[i]);
  auto c = make(fresh);
  c->load_state(back, "optim/");
  take_steps(*c, fresh, g2, 4);
  CHECK(same_bits(straight, fresh));
}

}  // namespace

TEST_CASE("run state: tensors, doubles with NaN, counters and metadata round-trip exactly") {
  TempDir dir;
  RunState st;
  st.kind = "unlearn";
  const std::vector<double> v = {0.1, -1e-300, std::numeric_limits<double>::quiet_NaN(), INFINITY, 1.0 / 3.0};
  st.put_doubles("loop.values", v);
  st.put("w", Tensor::from_vector<float>({1.5f, -2.25f, 3e-38f}, {3}));
  st.put_counter("loop.step", 123456789012345);
  st.meta.set("note", Json("x")).set("ratio", Json(0.1 + 0.2));
  save_run_state(dir / "a.state", st);

  const RunState back = load_run_state(dir / "a.state", "unlearn");
  const std::vector<double> w = back.get_doubles("loop.values", 5);
  CHECK(std::memcmp(w.data(), v.data(), v.size() * sizeof(double)) == 0);
  CHECK(back.get("w").to_vector<float>() == std::vector<float>{1.5f, -2.25f, 3e-38f});
  CHECK(back.counter("loop.step") == 123456789012345);
  CHECK(back.meta_at("ratio").as_number() == 0.1 + 0.2);
  CHECK(testing::contains(testing::input_error([&] { back.get_doubles("loop.values", 4); }), "loop.values"));
  CHECK(testing::contains(testing::input_error([&] { back.counter("loop.epoch"); }), "loop.epoch"));
  Tensor wrong = Tensor::zeros({4});
  CHECK(testing::contains(testing::input_error([&] { back.restore("w", wrong); }), "a.state"));
}

TEST_CASE("run state: missing, another kind, corrupt and truncated files are InputErrors naming the file") {
  TempDir dir;
  RunState st;
  st.kind = "train";
  st.put_doubles("x", {1, 2, 3});
  save_run_state(dir / "t.state", st);
  CHECK(testing::contains(testing::input_error([&] { load_run_state(dir / "none.state", "train"); }), "no state file"));
  CHECK(testing::contains(testing::input_error([&] { load_run_state(dir / "t.state", "unlearn"); }), "cannot resume"));
  testing::write_bytes(dir / "c.state", testing::Bytes(64, 'x'));
  CHECK(testing::contains(testing::input_error([&] { load_run_state(dir / "c.state", "train"); }), "c.state"));
  std::ifstream in(dir / "t.state", std::ios::binary);
  testing::Bytes all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  testing::write_bytes(dir / "cut.state", testing::Bytes(all.begin(), all.end() - 5));
  CHECK(testing::contains(testing::input_error([&] { load_run_state(dir / "cut.state", "train"); }), "cut.state"));
}

TEST_CASE("run state: AdamW and SGD with momentum continue bitwise from a saved state") {
  check_optimizer_resume([](std::vector<Tensor> ps) -> std::unique_ptr<Optimizer> {
    AdamWOptions o;
    o.lr = 0.01;
    o.weight_decay = 0.1;
    return std::make_unique<AdamW>(std::move(ps), o);
  });
  check_optimizer_resume([](std::vector<Tensor> ps) -> std::unique_ptr<Optimizer> {
    SgdOptions o;
    o.lr = 0.05;
    o.momentum = 0.9;
    o.weight_decay = 1e-3;
    return std::make_unique<Sgd>(std::move(ps), o);
  });
}

TEST_CASE("run state: a batcher seeked to a saved position yields the batches that followed it") {
  ImageDataset ds;
  ds.n = 23, ds.c = 1, ds.h = 2, ds.w = 2, ds.num_classes = 2;
  for (int64_t i = 0; i < ds.n * 4; ++i) ds.pixels.push_back(uint8_t(i * 37));
  for (int64_t i = 0; i < ds.n; ++i) ds.labels.push_back(int32_t(i % 2));
  ds.class_names = {"a", "b"};
  std::vector<int64_t> subset;
  for (int64_t i = 0; i < ds.n; ++i) subset.push_back(i);
  BatchOptions bo;
  bo.batch_size = 5;
  bo.shuffle = true;
  bo.seed = 42;
  Batcher a(ds, subset, Normalizer::identity(1), bo), b(ds, subset, Normalizer::identity(1), bo);
  Batch x;
  for (int i = 0; i < 7; ++i)
    if (!a.next(x)) a.next(x);
  b.seek(a.epoch(), a.cursor());
  for (int i = 0; i < 9; ++i) {
    Batch ya, yb;
    if (!a.next(ya)) a.next(ya);
    if (!b.next(yb)) b.next(yb);
    CHECK(ya.indices == yb.indices);
  }
  CHECK_THROWS_AS(b.seek(0, 99), InputError);
}

}  // namespace hamu
