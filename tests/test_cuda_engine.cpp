// tests/test_cuda_engine.cpp: whole-engine GPU vs CPU parity: model forward/backward, a full HAMU
// unlearning step through the fused update, and training-mode BatchNorm. Skipped without a GPU.
#include <doctest/doctest.h>

#ifdef HAMU_CUDA
#include <cmath>
#include <cstdio>

#include "engine/ops.h"
#include "kernels/kernels.h"
#include "models/models.h"
#include "tests/gradcheck.h"
#include "unlearn/hardness.h"
#include "unlearn/update.h"
#include "tests/gpu_skip.h"

using namespace hamu;

namespace {

bool have_gpu() {
  static const bool g = testing::gpu_or_say("cuda engine tests");
  return g;
}

// Two identical models, one on the CPU and one on the GPU.
struct Twin {
  std::shared_ptr<nn::Module> cpu, gpu;
};

Twin make_twin(const models::ModelSpec& spec) {
  Rng r1(11), r2(11);
  Twin t{models::build_model(spec, r1), models::build_model(spec, r2)};
  t.gpu->to(Device{Device::cuda, 0});
  return t;
}

double rel(const Tensor& gpu, const Tensor& cpu) {
  return testing::rel_error(testing::as_doubles(gpu.to(Device{})), testing::as_doubles(cpu));
}

}  // namespace

TEST_CASE("cuda: model forward and backward match the CPU (cnn, resnet20)") {
  if (!have_gpu()) return;
  for (const char* arch : {"cnn", "resnet20"}) {
    CAPTURE(arch);
    Twin t = make_twin({arch, 3, 16, 16, 10});
    t.cpu->train(true);
    t.gpu->train(true);
    Tensor x = testing::random_tensor({6, 3, 16, 16}, -1, 1, DType::f32);
    Tensor y = testing::random_labels(6, 10);
    Tensor loss_c = cross_entropy(t.cpu->forward(x), y);
    Tensor loss_g = cross_entropy(t.gpu->forward(x.to(Device{Device::cuda, 0})), y.to(Device{Device::cuda, 0}));
    CHECK(std::fabs(loss_g.item() - loss_c.item()) <= 1e-5 * std::fabs(loss_c.item()) + 1e-6);
    loss_c.backward();
    loss_g.backward();
    auto pc = t.cpu->named_parameters(), pg = t.gpu->named_parameters();
    REQUIRE(pc.size() == pg.size());
    double worst = 0;
    for (size_t i = 0; i < pc.size(); ++i) worst = std::max(worst, rel(pg[i].second.grad(), pc[i].second.grad()));
    // cuDNN and cuBLAS sum in other orders than the CPU GEMM: float rounding, not a tolerance of the
    // method (f32 without TF32).
    CHECK(worst < 1e-4);
    // Training-mode BatchNorm updated the running statistics identically.
    auto bc = t.cpu->named_buffers(), bg = t.gpu->named_buffers();
    for (size_t i = 0; i < bc.size(); ++i) CHECK(rel(bg[i].second, bc[i].second) < 1e-5);
  }
}

TEST_CASE("cuda: a full HAMU-Q step through the fused update matches the CPU") {
  if (!have_gpu()) return;
  const Device gpu{Device::cuda, 0};
  Twin t = make_twin({"resnet20", 3, 16, 16, 10});
  models::set_batchnorm_frozen(*t.cpu, true);
  models::set_batchnorm_frozen(*t.gpu, true);
  Tensor xr = testing::random_tensor({8, 3, 16, 16}, -1, 1, DType::f32), yr = testing::random_labels(8, 10);
  Tensor xf = testing::random_tensor({8, 3, 16, 16}, -1, 1, DType::f32), yf = testing::random_labels(8, 10);
  FusedUpdate uc(t.cpu->parameters()), ug(t.gpu->parameters());
  auto grads = [](nn::Module& m, FusedUpdate& u, const Tensor& xr, const Tensor& yr, const Tensor& xf, const Tensor& yf) {
    u.route_grads_to(true);
    cross_entropy(m.forward(xr), yr).backward();
    u.route_grads_to(false);
    cross_entropy(m.forward(xf), yf).backward();
    u.release_grads();
  };
  grads(*t.cpu, uc, xr, yr, xf, yf);
  grads(*t.gpu, ug, xr.to(gpu), yr.to(gpu), xf.to(gpu), yf.to(gpu));
  kernels::HamuConfig cfg;
  cfg.lr = 0.05;
  cfg.constraint = 0.5 * cfg.lr;
  cfg.clip = 1.0;
  uc.compute_stats();
  ug.compute_stats();
  const kernels::HamuReport rc = uc.hamu_step(cfg), rg = ug.hamu_step(cfg);
  CHECK(rg.n_direct == rc.n_direct);
  CHECK(rg.n_rectified == rc.n_rectified);
  CHECK(rg.n_infeasible == rc.n_infeasible);
  CHECK(std::fabs(rg.kappa - rc.kappa) <= 1e-4 * std::fabs(rc.kappa) + 1e-7);
  CHECK(std::fabs(rg.retain_norm - rc.retain_norm) <= 1e-4 * rc.retain_norm);
  auto pc = t.cpu->named_parameters(), pg = t.gpu->named_parameters();
  double worst = 0;
  for (size_t i = 0; i < pc.size(); ++i) worst = std::max(worst, rel(pg[i].second, pc[i].second));
  CHECK(worst < 1e-5);
}

TEST_CASE("cuda: the hardness matrix and per-sample similarities match the CPU") {
  if (!have_gpu()) return;
  // A small synthetic data set: 96 grey 12x12 images in 10 classes.
  ImageDataset ds;
  ds.n = 96;
  ds.c = 1;
  ds.h = ds.w = 12;
  ds.num_classes = 10;
  for (int i = 0; i < 10; ++i) ds.class_names.push_back("c" + std::to_string(i));
  Rng rng(21);
  ds.pixels.resize(size_t(ds.n * 144));
  for (auto& p : ds.pixels) p = uint8_t(rng.below(256));
  for (int64_t i = 0; i < ds.n; ++i) ds.labels.push_back(int32_t(i % 10));
  std::vector<int64_t> forget, retain;
  for (int64_t i = 0; i < ds.n; ++i) (i % 10 == 3 ? forget : retain).push_back(i);
  const Normalizer norm = compute_normalizer(ds);
  Twin t = make_twin({"cnn", 1, 12, 12, 10});
  HardnessOptions opt;
  opt.chunk = 16;
  HardnessReport rc = compute_hardness(*t.cpu, ds, norm, forget, retain, opt);
  HardnessReport rg = compute_hardness(*t.gpu, ds, norm, forget, retain, opt);
  CHECK(std::fabs(rg.kappa - rc.kappa) <= 1e-4 * std::fabs(rc.kappa) + 1e-6);
  REQUIRE(rg.samples.size() == rc.samples.size());
  std::vector<double> kc, kg, nc, ng;
  for (size_t j = 0; j < rc.samples.size(); ++j) {
    kc.push_back(rc.samples[j].kappa);
    kg.push_back(rg.samples[j].kappa);
    nc.push_back(rc.samples[j].norm);
    ng.push_back(rg.samples[j].norm);
  }
  CHECK(testing::rel_error(kg, kc) < 1e-4);
  CHECK(testing::rel_error(ng, nc) < 1e-4);
  REQUIRE(rg.heat.size() == rc.heat.size());
  std::vector<double> hc, hg;
  for (size_t r = 0; r < rc.heat.size(); ++r) {
    hc.insert(hc.end(), rc.heat[r].begin(), rc.heat[r].end());
    hg.insert(hg.end(), rg.heat[r].begin(), rg.heat[r].end());
  }
  CHECK(testing::rel_error(hg, hc) < 1e-4);
  CHECK(rg.verdict == rc.verdict);
}
#endif
