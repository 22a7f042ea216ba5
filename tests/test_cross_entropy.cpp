// tests/test_cross_entropy.cpp: the image classifiers' cross-entropy (engine cross_entropy and
// cross_entropy_per_sample), whose forward also writes the gradient that the backward only scales: the
// mean over non-ignored rows and its gradient, an all-ignored batch, per-row upstream gradients, float64
// finite differences through a graph that reuses the saved gradient, what the tape keeps, and the CUDA
// kernels against the CPU (skipped without a GPU).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/allocator.h"
#include "engine/ops.h"
#include "kernels/kernels.h"
#include "tests/gradcheck.h"

using namespace hamu;
using namespace hamu::testing;

namespace {

using Vec = std::vector<double>;

// Labels in [0, classes) with every `every`-th row (from row 1) set to ignore_index.
Tensor labels_ignoring(int64_t rows, int classes, int every, int32_t ignore_index = -100) {
  std::vector<int32_t> v = random_labels(rows, classes).to_vector<int32_t>();
  for (int64_t r = 1; every > 0 && r < rows; r += every) v[size_t(r)] = ignore_index;
  return Tensor::from_vector<int32_t>(v, {rows});
}

// Reference in double: per-row losses and d loss_r / d x_r (softmax - onehot; zero rows where ignored).
struct Ref {
  Vec losses, grad;
};
Ref reference(const Vec& x, const std::vector<int32_t>& y, int64_t classes, int32_t ignore_index) {
  const int64_t rows = int64_t(y.size());
  Ref ref{Vec(size_t(rows), 0.0), Vec(x.size(), 0.0)};
  for (int64_t r = 0; r < rows; ++r) {
    if (y[size_t(r)] == ignore_index) continue;
    const double* xr = x.data() + r * classes;
    double m = xr[0], s = 0;
    for (int64_t k = 1; k < classes; ++k) m = std::max(m, xr[k]);
    for (int64_t k = 0; k < classes; ++k) s += std::exp(xr[k] - m);
    ref.losses[size_t(r)] = std::log(s) + m - xr[y[size_t(r)]];
    for (int64_t k = 0; k < classes; ++k)
      ref.grad[size_t(r * classes + k)] = std::exp(xr[k] - m) / s - (k == y[size_t(r)] ? 1.0 : 0.0);
  }
  return ref;
}

double tol_of(DType dt) { return dt == DType::f64 ? 1e-12 : 2e-6; }

}  // namespace

TEST_CASE("cross_entropy: the mean over non-ignored rows, its gradient, per-row upstream gradients, all ignored") {
  const int64_t rows = 9, classes = 6;
  for (DType dt : {DType::f64, DType::f32}) {
    INFO("dtype " << (dt == DType::f64 ? "float64" : "float32"));
    const Tensor x0 = random_tensor({rows, classes}, -3, 3).to(dt).to(DType::f64);  // representable in both
    const Tensor y = labels_ignoring(rows, int(classes), 4);                        // rows 1 and 5 ignored
    const std::vector<int32_t> yv = y.to_vector<int32_t>();
    const Ref ref = reference(x0.to_vector<double>(), yv, classes, -100);
    const double kept = 7;

    Tensor x = x0.to(dt).clone().requires_grad_(true);
    Tensor loss = cross_entropy(x, y);
    double want = 0;
    for (double l : ref.losses) want += l / kept;
    CHECK(std::fabs(loss.item() - want) <= tol_of(dt) * std::fabs(want));
    loss.backward();
    Vec gwant = ref.grad;
    for (double& g : gwant) g /= kept;
    CHECK(rel_error(as_doubles(x.grad()), gwant) <= tol_of(dt));
    // A second backward through the same loss is refused (the saved gradient was scaled in place).
    CHECK_THROWS(loss.backward());

    // Per-row upstream gradients, one of them infinite on an ignored row: that row's gradient stays 0.
    Vec up = as_doubles(random_tensor({rows}, -2, 2).to(dt));
    up[1] = INFINITY;
    x.zero_grad();
    Tensor per = cross_entropy_per_sample(x, y);
    CHECK(rel_error(as_doubles(per), ref.losses) <= tol_of(dt));
    per.backward(Tensor::from_doubles(up, {rows}, dt));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < classes; ++k) {
        const size_t e = size_t(r * classes + k);
        gwant[e] = yv[size_t(r)] == -100 ? 0.0 : up[size_t(r)] * ref.grad[e];
      }
    CHECK(rel_error(as_doubles(x.grad()), gwant) <= tol_of(dt));

    // Evaluation (no tape) gives the same losses to the bit.
    {
      NoGradGuard ng;
      CHECK(as_doubles(cross_entropy_per_sample(x, y)) == as_doubles(per));
      CHECK(cross_entropy(x, y).item() == loss.item());
    }

    // Every row ignored: a loss of 0 and a zero gradient, as before the fusion.
    x.zero_grad();
    Tensor none = cross_entropy(x, Tensor::from_vector<int32_t>(std::vector<int32_t>(size_t(rows), -100), {rows}));
    CHECK(none.item() == 0.0);
    none.backward();
    for (double g : as_doubles(x.grad())) CHECK(g == 0.0);
  }
}

TEST_CASE("cross_entropy: float64 finite differences with ignored rows, per-row upstream gradients and a class as ignore index") {
  // The logits come out of an op (x * w), so the scaled saved gradient travels on through the tape; both forms
  // read the same logits, and the per-row losses also feed two consumers (their gradients add up first).
  auto graph = [](int ignore_index) {
    return [ignore_index](const std::vector<Tensor>& in) {
      Tensor logits = mul(in[0], in[1]);
      Tensor per = cross_entropy_per_sample(logits, in[2], ignore_index);
      Tensor mean_loss = cross_entropy(logits, in[2], ignore_index);
      return add(add(mul(per, in[3]), mul(per, per)), mul_scalar(mean_loss, 0.7));
    };
  };
  for (int ignore : {-100, 2}) {
    INFO("ignore_index " << ignore);
    const int64_t rows = 8, classes = 5;
    std::vector<int32_t> yv = random_labels(rows, int(classes)).to_vector<int32_t>();
    yv[1] = 2;
    yv[4] = ignore;
    yv[6] = ignore;
    std::vector<Tensor> in = {random_tensor({rows, classes}, -2, 2).requires_grad_(true),
                              random_tensor({rows, classes}, 0.5, 1.5).requires_grad_(true),
                              Tensor::from_vector<int32_t>(yv, {rows}), random_tensor({rows}, -1, 1)};
    const double err = gradcheck(graph(ignore), in);
    INFO("rel err " << err);
    CHECK(err < 1e-6);
  }
}

TEST_CASE("cross_entropy: the tape keeps one [rows, classes] gradient, evaluation keeps none") {
  const int64_t rows = 64, classes = 100;
  const Device cpu{};
  Tensor x = random_tensor({rows, classes}, -3, 3, DType::f32).requires_grad_(true);
  const Tensor y = labels_ignoring(rows, int(classes), 9);
  const size_t logits_bytes = size_t(rows * classes) * sizeof(float), slack = 4096;
  size_t before = allocator_stats(cpu).in_use;
  Tensor loss = cross_entropy(x, y);
  const size_t held = allocator_stats(cpu).in_use - before;
  CHECK(held >= logits_bytes);
  CHECK(held <= logits_bytes + slack);  // the saved gradient (was: the saved log-probabilities), no more
  loss.backward();
  {
    NoGradGuard ng;
    before = allocator_stats(cpu).in_use;
    Tensor l = cross_entropy_per_sample(x, y);
    CHECK(allocator_stats(cpu).in_use - before <= slack);
  }
}

#ifdef HAMU_CUDA
TEST_CASE("cuda: fused cross-entropy matches the CPU (losses and gradient; 1024 x 10, 1000 classes, ignored rows)") {
  if (kernels::cuda_device_count() == 0) {
    std::printf("cuda cross-entropy test: skipped: no GPU\n");
    return;
  }
  const Device gpu{Device::cuda, 0};
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1024, 10}, {7, 10},    {300, 1000}, {64, 1000},
                                                           {33, 1025},  {3, 5003}, {2, 1},      {1, 32000}};
  for (const auto& [rows, classes] : shapes) {
    for (int every : {0, 5, 1}) {  // no row ignored, every fifth, all but row 0
      INFO(rows << " x " << classes << ", rows ignored from row 1 on, every " << every << " (0: none)");
      const Tensor xh = random_tensor({rows, classes}, -8, 8, DType::f32);
      const Tensor yh = labels_ignoring(rows, int(classes), every);
      const Tensor up = random_tensor({rows}, -1, 1, DType::f32);
      Tensor xc = xh.clone().requires_grad_(true), xg = xh.to(gpu).requires_grad_(true);
      const Tensor yg = yh.to(gpu);

      // Per-row losses under per-row upstream gradients.
      Tensor lc = cross_entropy_per_sample(xc, yh), lg = cross_entropy_per_sample(xg, yg);
      const double loss_err = rel_error(as_doubles(lg.to(Device{})), as_doubles(lc));
      lc.backward(up);
      lg.backward(up.to(gpu));
      const double grad_err = rel_error(as_doubles(xg.grad().to(Device{})), as_doubles(xc.grad()));
      INFO("per-row: losses rel err " << loss_err << ", gradient rel err " << grad_err);
      CHECK(loss_err <= 1e-5);
      CHECK(grad_err <= 1e-5);
      {
        NoGradGuard ng;  // the loss-only kernel path gives the same losses
        CHECK(as_doubles(cross_entropy_per_sample(xg, yg).to(Device{})) == as_doubles(lg.to(Device{})));
      }

      // The mean over the rows not ignored (counted on the device), and its gradient.
      xc.zero_grad();
      xg.zero_grad();
      Tensor mc = cross_entropy(xc, yh), mg = cross_entropy(xg, yg);
      const double mean_err = std::fabs(mg.item() - mc.item()) / std::max(std::fabs(mc.item()), 1e-30);
      mc.backward();
      mg.backward();
      const double mgrad_err = rel_error(as_doubles(xg.grad().to(Device{})), as_doubles(xc.grad()));
      INFO("mean: loss rel err " << mean_err << ", gradient rel err " << mgrad_err);
      CHECK(mean_err <= 1e-5);
      CHECK(mgrad_err <= 1e-5);
    }
  }
  // Every row ignored: a loss of 0 and a zero gradient on the device too.
  Tensor x = random_tensor({6, 10}, -8, 8, DType::f32).to(gpu).requires_grad_(true);
  Tensor none = cross_entropy(x, Tensor::from_vector<int32_t>(std::vector<int32_t>(6, -100), {6}).to(gpu));
  CHECK(none.item() == 0.0);
  none.backward();
  for (double g : as_doubles(x.grad().to(Device{}))) CHECK(g == 0.0);
}
#endif
