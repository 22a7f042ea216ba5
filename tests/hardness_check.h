// tests/hardness_check.h: the check every hardness rule passes: K by the ghost and materialised paths,
// the row form and per-sample norms against per-sample gradients from one backward per sample.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "engine/nn.h"
#include "tests/gradcheck.h"
#include "unlearn/hardness.h"

namespace hamu::testing {

// a [m, k] times b [n, k] transposed.
inline std::vector<double> matmul_t(const std::vector<double>& a, const std::vector<double>& b, int64_t m, int64_t n,
                                    int64_t k) {
  std::vector<double> c(size_t(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t q = 0; q < k; ++q) s += a[size_t(i * k + q)] * b[size_t(j * k + q)];
      c[size_t(i * n + j)] = s;
    }
  return c;
}

// From per-sample gradients pf [nf, total] and pr [nr, total]: K = pf pr^T, the row form against the
// summed retain gradient and the forget samples' squared norms.
struct PerSampleReference {
  std::vector<double> k, row, norm;
};
inline PerSampleReference per_sample_reference(const std::vector<double>& pf, const std::vector<double>& pr, int64_t nf,
                                               int64_t nr, int64_t total) {
  PerSampleReference ref{matmul_t(pf, pr, nf, nr, total), std::vector<double>(size_t(nf), 0.0),
                         std::vector<double>(size_t(nf), 0.0)};
  std::vector<double> h(size_t(total), 0.0);
  for (int64_t i = 0; i < nr; ++i)
    for (int64_t q = 0; q < total; ++q) h[size_t(q)] += pr[size_t(i * total + q)];
  for (int64_t j = 0; j < nf; ++j)
    for (int64_t q = 0; q < total; ++q) {
      ref.row[size_t(j)] += pf[size_t(j * total + q)] * h[size_t(q)];
      ref.norm[size_t(j)] += pf[size_t(j * total + q)] * pf[size_t(j * total + q)];
    }
  return ref;
}

// K (whole and in two retain tiles), the row form against the summed retain gradient, the per-sample
// norms and a sub-range of a capture, by `path`, against per-sample gradients from one backward per
// sample. inputs(n): n fresh samples of the model's input.
inline void check_against_per_sample(nn::Module& model, const std::function<Tensor(int64_t)>& inputs, int classes,
                                     DType dt, GhostPath path, double tol) {
  const int64_t nf = 3, nr = 4;
  Tensor xf = inputs(nf), xr = inputs(nr);
  Tensor yf = random_labels(nf, classes), yr = random_labels(nr, classes);
  // Reference: per-sample gradients by one backward per sample.
  const std::vector<Tensor> params = model.parameters();
  int64_t total = 0;
  for (const Tensor& p : params) total += p.numel();
  const std::vector<double> pf = as_doubles(per_sample_gradients(model, xf, yf, params));
  const std::vector<double> pr = as_doubles(per_sample_gradients(model, xr, yr, params));
  const PerSampleReference ref = per_sample_reference(pf, pr, nf, nr, total);
  const std::vector<double>& k_ref = ref.k;
  const std::vector<double>& row_ref = ref.row;
  const std::vector<double>& norm_ref = ref.norm;

  CapturedBatch cf = capture_batch(model, xf, yf, true), cr = capture_batch(model, xr, yr, true);
  BlockPlan plan = plan_blocks(model, cr, path);
  SampleReps rf = build_reps(model, plan, cf, 0, nf), rr = build_reps(model, plan, cr, 0, nr);
  Tensor k = Tensor::zeros({nf * nr}, dt);
  Tensor gram = Tensor::empty({std::max<int64_t>(1, gram_elems(plan, nf, nr))}, dt);
  add_similarity(plan, rf, rr, 0, nr, k, gram);
  CHECK(rel_error(as_doubles(k), k_ref) <= tol);
  // The same K from two retain slices (tiles).
  Tensor k2a = Tensor::zeros({nf * 2}, dt), k2b = Tensor::zeros({nf * 2}, dt);
  add_similarity(plan, rf, rr, 0, 2, k2a, gram);
  add_similarity(plan, rf, rr, 2, 2, k2b, gram);
  std::vector<double> ka = as_doubles(k2a), kb = as_doubles(k2b), kt(size_t(nf * nr));
  for (int64_t j = 0; j < nf; ++j)
    for (int64_t i = 0; i < nr; ++i) kt[size_t(j * nr + i)] = i < 2 ? ka[size_t(j * 2 + i)] : kb[size_t(j * 2 + i - 2)];
  CHECK(rel_error(kt, k_ref) <= tol);
  // Row form against the summed retain gradient, and the per-sample norms.
  std::vector<Tensor> h;
  for (size_t i = 0; i < params.size(); ++i)
    h.push_back(cr.param_grads[i].defined() ? cr.param_grads[i] : Tensor::zeros(params[i].shape(), dt));
  Tensor row = Tensor::zeros({nf}, dt), norms = Tensor::zeros({nf}, dt);
  add_row_form(model, plan, cf, 0, nf, h, row);
  add_sample_norms(plan, rf, norms);
  CHECK(rel_error(as_doubles(row), row_ref) <= tol);
  CHECK(rel_error(as_doubles(norms), norm_ref) <= tol);
  // A sub-range of a captured batch (sample offset s0 > 0) gives the matching rows.
  SampleReps tail = build_reps(model, plan, cr, 1, 2);
  Tensor kt2 = Tensor::zeros({2 * nr}, dt);
  add_similarity(plan, tail, rr, 0, nr, kt2, gram);
  const std::vector<double> krr = matmul_t(pr, pr, nr, nr, total);
  CHECK(rel_error(as_doubles(kt2), std::vector<double>(krr.begin() + nr, krr.begin() + 3 * nr)) <= tol);
}

}  // namespace hamu::testing
