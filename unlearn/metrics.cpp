// unlearn/metrics.cpp: batched no-grad evaluation, membership AUCs and reference gaps.
#include "unlearn/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "engine/graph.h"
#include "engine/ops.h"
#include "engine/progress.h"

namespace hamu {

namespace {

std::string fmt_acc(double acc) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f%%", 100 * acc);
  return b;
}

// One split; `bar` (may be null) counts images, `done_before` of them evaluated by earlier splits; `graphs`
// (null: none) replays the full batches after the first (unlearn/graph_eval.h).
SplitEval evaluate_split(nn::Module& model, const ImageDataset& ds, const std::vector<int64_t>& indices,
                         const Normalizer& norm, const EvalOptions& opt, Progress* bar, int64_t done_before,
                         EvalGraphs* graphs) {
  SplitEval out;
  out.n = int64_t(indices.size());
  if (out.n == 0) return out;
  nn::EvalModeScope eval_mode(model);
  NoGradGuard no_grad;
  out.losses.reserve(indices.size());
  out.predicted.reserve(indices.size());
  double correct = 0, loss_sum = 0, ent_sum = 0;
  const int64_t bs = std::min<int64_t>(std::max<int64_t>(1, opt.batch), out.n);
  GraphedEvalBatch* graphed = graphs ? graphs->entry(model, ds, bs, opt.keep_probs, opt.device) : nullptr;
  if (graphed) graphed->begin_split();
  // A batch's per-sample losses, entropies and predictions land here together (pinned on a GPU): one wait
  // per batch; the labels are the host data set's.
  HostBuffer readback(size_t(bs) * (2 * sizeof(float) + sizeof(int32_t)), opt.device);
  float* lv = static_cast<float*>(readback.data());
  float* ev = lv + bs;
  int32_t* pv = reinterpret_cast<int32_t*>(ev + bs);
  std::vector<float> probs;
  // Both ways of running a batch end here: the same sums in the same order.
  auto absorb = [&](const int64_t* idx, int64_t len, const float* l, const float* e, const int32_t* p, const float* pr,
                    size_t pr_count) {
    for (int64_t i = 0; i < len; ++i) {
      correct += p[i] == ds.labels[size_t(idx[i])];
      loss_sum += l[i];
      ent_sum += e[i];
    }
    out.losses.insert(out.losses.end(), l, l + len);
    out.predicted.insert(out.predicted.end(), p, p + len);
    if (opt.keep_probs) out.probs.insert(out.probs.end(), pr, pr + pr_count);
  };
  for (int64_t start = 0; start < out.n; start += bs) {
    const int64_t len = std::min(bs, out.n - start);
    const int64_t* first = indices.data() + start;
    if (graphed && len == bs && graphed->warm()) {
      // The next batch is staged while this one replays when it is a full one too.
      const int64_t* next = start + 2 * bs <= out.n ? first + bs : nullptr;
      if (auto r = graphed->run(ds, first, next, norm)) {
        absorb(first, len, r->losses, r->entropies, r->predicted, r->probs, size_t(len * r->classes));
        if (bar) bar->update(done_before + start + len);
        continue;
      }
    }
    std::vector<int64_t> idx(first, first + len);
    Batch b = gather_batch(ds, idx, norm, opt.device);
    Tensor logits = model.forward(b.images);
    Tensor lp = log_softmax(logits);
    Tensor losses = cross_entropy_per_sample(logits, b.labels);
    Tensor ent = neg(sum(mul(exp(lp), lp), 1));
    Tensor pred = argmax(logits, 1);
    if (losses.dtype() != DType::f32 || ent.dtype() != DType::f32)
      throw Error("evaluation: float32 logits expected, got " + std::string(dtype_name(losses.dtype())));
    copy_to_host_async(lv, losses);
    copy_to_host_async(ev, ent);
    copy_to_host_async(pv, pred);
    device_synchronize(opt.device);
    if (opt.keep_probs) probs = exp(lp).to(Device{}).to_vector<float>();
    absorb(first, len, lv, ev, pv, probs.data(), probs.size());
    // The first full batch of a shape is the graph's warm-up.
    if (graphed && len == bs && !graphed->warm()) graphed->warmed_up(logits.shape()[1]);
    if (bar) bar->update(done_before + start + len);
  }
  out.acc = correct / double(out.n);
  out.loss = loss_sum / double(out.n);
  out.entropy = ent_sum / double(out.n);
  return out;
}

std::unique_ptr<Progress> eval_bar(const EvalOptions& opt, int64_t images) {
  if (opt.progress.empty()) return nullptr;
  return std::make_unique<Progress>(images, opt.progress, "img/s");
}

// The graphs an evaluation uses: the caller's, else `local`'s (kept for this call), or none.
EvalGraphs* eval_graphs(const EvalOptions& opt, std::unique_ptr<EvalGraphs>& local) {
  if (!opt.graph) return nullptr;
  if (opt.graphs) return opt.graphs;
  local = std::make_unique<EvalGraphs>();
  return local.get();
}

}  // namespace

SplitEval evaluate_indices(nn::Module& model, const ImageDataset& ds, const std::vector<int64_t>& indices,
                           const Normalizer& norm, const EvalOptions& opt) {
  std::unique_ptr<Progress> bar = eval_bar(opt, int64_t(indices.size()));
  std::unique_ptr<EvalGraphs> local;
  SplitEval out = evaluate_split(model, ds, indices, norm, opt, bar.get(), 0, eval_graphs(opt, local));
  if (bar) bar->finish("accuracy " + fmt_acc(out.acc));
  return out;
}

double roc_auc(const std::vector<float>& negatives, const std::vector<float>& positives) {
  if (negatives.empty() || positives.empty()) return 0.5;
  // Rank-sum with ties sharing their average rank (NaN scores count as 0, as the reference does).
  std::vector<std::pair<float, int>> all;
  all.reserve(negatives.size() + positives.size());
  for (float v : negatives) all.push_back({std::isnan(v) ? 0.0f : v, 0});
  for (float v : positives) all.push_back({std::isnan(v) ? 0.0f : v, 1});
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  double pos_rank_sum = 0;
  size_t i = 0;
  while (i < all.size()) {
    size_t j = i;
    while (j < all.size() && all[j].first == all[i].first) ++j;
    const double avg_rank = (double(i) + double(j - 1)) / 2.0 + 1.0;
    for (size_t k = i; k < j; ++k)
      if (all[k].second == 1) pos_rank_sum += avg_rank;
    i = j;
  }
  const double np = double(positives.size()), nn_ = double(negatives.size());
  return (pos_rank_sum - np * (np + 1) / 2.0) / (np * nn_);
}

EvalReport evaluate_model(nn::Module& model, const DataBundle& data, const SplitIndices& splits,
                          const Normalizer& norm, const EvalOptions& opt) {
  EvalReport r;
  const int64_t nf = int64_t(splits.forget->size()), nr = int64_t(splits.retain->size());
  std::unique_ptr<Progress> bar = eval_bar(opt, nf + nr + int64_t(splits.test->size()));
  std::unique_ptr<EvalGraphs> local;
  EvalGraphs* graphs = eval_graphs(opt, local);
  r.forget = evaluate_split(model, data.train, *splits.forget, norm, opt, bar.get(), 0, graphs);
  EvalOptions plain = opt;
  plain.keep_probs = false;
  r.retain = evaluate_split(model, data.train, *splits.retain, norm, plain, bar.get(), nf, graphs);
  r.test = evaluate_split(model, data.test, *splits.test, norm, plain, bar.get(), nf + nr, graphs);
  if (bar) bar->finish("forget " + fmt_acc(r.forget.acc) + ", retain " + fmt_acc(r.retain.acc) + ", test " + fmt_acc(r.test.acc));
  r.retain_forget_auc = roc_auc(r.retain.losses, r.forget.losses);
  r.forget_test_auc = roc_auc(r.forget.losses, r.test.losses);
  return r;
}

void compare_to_reference(EvalReport& r, const EvalReport& ref) {
  r.has_reference = true;
  r.gap_forget = std::fabs(r.forget.acc - ref.forget.acc);
  r.gap_retain = std::fabs(r.retain.acc - ref.retain.acc);
  r.gap_test = std::fabs(r.test.acc - ref.test.acc);
  // A text split without holdout= or --test has no test set: its 0% against 0% is no agreement to average in.
  const bool has_test = r.test.n > 0 || ref.test.n > 0;
  r.avg_gap = (r.gap_forget + r.gap_retain + (has_test ? r.gap_test : 0.0)) / (has_test ? 3.0 : 2.0);
  r.forget_kl = 0;
  const size_t n = size_t(r.forget.n);
  if (n == 0 || r.forget.probs.size() != ref.forget.probs.size() || r.forget.probs.empty()) return;
  const size_t classes = r.forget.probs.size() / n;
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    double kl = 0;
    for (size_t c = 0; c < classes; ++c) {
      const double p_ref = ref.forget.probs[i * classes + c];
      const double p = std::max<double>(r.forget.probs[i * classes + c], 1e-30);
      if (p_ref > 0) kl += p_ref * (std::log(p_ref) - std::log(p));
    }
    total += std::max(kl, 0.0);
  }
  r.forget_kl = total / double(n);
}

namespace {

Json split_json(const SplitEval& s, bool text) {
  if (text) {
    Json j = Json::object({{"n", Json(s.n)}, {"tokens", Json(s.tokens)}, {"acc", Json(s.acc)}, {"loss", Json(s.loss)},
                           {"prob", Json(s.prob)}, {"min_k", Json(s.min_k)}});
    if (s.gen_n > 0) {
      j.set("gen_n", Json(s.gen_n));
      j.set("exact_match", Json(s.exact_match));
      j.set("rouge_l", Json(s.rouge_l));
    }
    return j;
  }
  return Json::object({{"n", Json(s.n)}, {"acc", Json(s.acc)}, {"loss", Json(s.loss)}, {"entropy", Json(s.entropy)}});
}

}  // namespace

Json eval_to_json(const EvalReport& r) {
  Json j = Json::object({{"model", Json(r.model)}, {"data", Json(r.data)}, {"split", Json(r.split)}});
  Json splits = Json::object({{"forget", split_json(r.forget, r.text)}, {"retain", split_json(r.retain, r.text)},
                              {"test", split_json(r.test, r.text)}});
  if (r.text && r.duplicate.n > 0) splits.set("duplicate", split_json(r.duplicate, true));
  j.set("splits", splits);
  Json mia = Json::object({{"retain_forget_auc", Json(r.retain_forget_auc)}, {"forget_test_auc", Json(r.forget_test_auc)}});
  if (r.text) {
    mia.set("retain_forget_min_k_auc", Json(r.retain_forget_mink_auc));
    mia.set("forget_test_min_k_auc", Json(r.forget_test_mink_auc));
  }
  j.set("mia", mia);
  if (r.has_reference) {
    Json ref = Json::object({{"acc_gap", Json::object({{"forget", Json(r.gap_forget)},
                                                       {"retain", Json(r.gap_retain)},
                                                       {"test", Json(r.gap_test)}})},
                             {"avg_gap", Json(r.avg_gap)},
                             {"forget_kl", Json(r.forget_kl)}});
    if (r.text) {
      ref.set("ks_stat", Json(r.ks_stat));
      ref.set("ks_p", Json(r.ks_p));
    }
    j.set("reference", ref);
  }
  return j;
}

Json eval_graphs_json(const EvalGraphs& graphs) {
  return Json::object({{"replays", Json(graphs.replays())},
                       {"captures", Json(graphs.captures())},
                       {"not_used", Json(graphs.not_used())}});
}

std::string eval_table(const EvalReport& r) {
  std::string s;
  char line[256];
  std::snprintf(line, sizeof line, "%-8s %8s %9s %8s %9s\n", "split", "n", "accuracy", "loss", "entropy");
  s += line;
  const std::pair<const char*, const SplitEval*> rows[] = {{"forget", &r.forget}, {"retain", &r.retain}, {"test", &r.test}};
  for (auto& [name, e] : rows) {
    std::snprintf(line, sizeof line, "%-8s %8lld %8.2f%% %8.4f %9.4f\n", name, (long long)e->n, 100.0 * e->acc, e->loss,
                  e->entropy);
    s += line;
  }
  std::snprintf(line, sizeof line, "membership AUC: retain-vs-forget %.4f, forget-vs-test %.4f (0.5 = indistinguishable)\n",
                r.retain_forget_auc, r.forget_test_auc);
  s += line;
  if (r.has_reference) {
    std::snprintf(line, sizeof line,
                  "vs retrained: accuracy gaps forget %.2f, retain %.2f, test %.2f points (avg %.2f); forget KL %.4f\n",
                  100 * r.gap_forget, 100 * r.gap_retain, 100 * r.gap_test, 100 * r.avg_gap, r.forget_kl);
    s += line;
  }
  return s;
}

std::string eval_side_by_side(const std::vector<std::pair<std::string, const EvalReport*>>& reports) {
  std::string s;
  char cell[128];
  std::snprintf(cell, sizeof cell, "%-22s", "");
  s += cell;
  for (auto& [name, r] : reports) {
    std::snprintf(cell, sizeof cell, " %14s", name.c_str());
    s += cell;
  }
  s += "\n";
  auto row = [&](const char* label, auto value) {
    std::snprintf(cell, sizeof cell, "%-22s", label);
    s += cell;
    for (auto& [name, r] : reports) {
      std::snprintf(cell, sizeof cell, " %14s", value(*r).c_str());
      s += cell;
    }
    s += "\n";
  };
  auto pct = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f%%", 100 * v);
    return std::string(b);
  };
  auto num = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.4f", v);
    return std::string(b);
  };
  bool text = false, dup = false, gen = false, ref = false, test = false, forget = false;
  for (auto& [name, r] : reports) {
    text = text || r->text;
    dup = dup || r->duplicate.n > 0;
    gen = gen || r->forget.gen_n > 0;
    ref = ref || r->has_reference;
    test = test || r->test.n > 0;
    forget = forget || r->forget.n > 0 || !r->text;
  }
  // A text split without holdout=/test= has no test set, a text run without --split no forget set: their rows
  // would read 0.00% and AUCs of 0.5.
  if (forget) row("forget accuracy", [&](const EvalReport& r) { return pct(r.forget.acc); });
  row("retain accuracy", [&](const EvalReport& r) { return pct(r.retain.acc); });
  if (test) row("test accuracy", [&](const EvalReport& r) { return pct(r.test.acc); });
  if (forget) row("forget loss", [&](const EvalReport& r) { return num(r.forget.loss); });
  row("retain loss", [&](const EvalReport& r) { return num(r.retain.loss); });
  if (test) row("test loss", [&](const EvalReport& r) { return num(r.test.loss); });
  if (!text) row("forget entropy", [&](const EvalReport& r) { return num(r.forget.entropy); });
  if (forget) row("AUC retain-vs-forget", [&](const EvalReport& r) { return num(r.retain_forget_auc); });
  if (forget && test) row("AUC forget-vs-test", [&](const EvalReport& r) { return num(r.forget_test_auc); });
  if (!text) return s;
  if (dup) {
    row("duplicate accuracy", [&](const EvalReport& r) { return pct(r.duplicate.acc); });
    row("duplicate loss", [&](const EvalReport& r) { return num(r.duplicate.loss); });
  }
  if (forget) {
    row("forget token prob", [&](const EvalReport& r) { return num(r.forget.prob); });
    row("forget Min-K% logp", [&](const EvalReport& r) { return num(r.forget.min_k); });
    row("Min-K AUC retain-forget", [&](const EvalReport& r) { return num(r.retain_forget_mink_auc); });
  }
  if (forget && test) row("Min-K AUC forget-test", [&](const EvalReport& r) { return num(r.forget_test_mink_auc); });
  if (gen) {
    row("forget exact match", [&](const EvalReport& r) { return pct(r.forget.exact_match); });
    row("forget ROUGE-L recall", [&](const EvalReport& r) { return num(r.forget.rouge_l); });
    row("retain exact match", [&](const EvalReport& r) { return pct(r.retain.exact_match); });
    row("retain ROUGE-L recall", [&](const EvalReport& r) { return num(r.retain.rouge_l); });
  }
  if (ref) {
    row("avg gap to retrained", [&](const EvalReport& r) { return r.has_reference ? pct(r.avg_gap) : std::string("-"); });
    row("KS p (forget losses)", [&](const EvalReport& r) {
      char b[32];
      std::snprintf(b, sizeof b, "%.3g", r.ks_p);
      return r.has_reference ? std::string(b) : std::string("-");
    });
  }
  return s;
}

}  // namespace hamu
