// tests/test_text_unlearn.cpp: text unlearning (issue #11): the task losses on [B,T,V] logits, the text task's
// paired pass against two passes for every method family, the completion-only training loop, the text
// metrics (Min-K%, AUC orientation), the KS test against scipy.stats.ks_2samp and ROUGE-L recall.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "loaders/text_batch.h"
#include "models/lm/lm.h"
#include "models/lm/lora.h"
#include "tests/gradcheck.h"
#include "train/text_train.h"
#include "unlearn/gradients.h"
#include "unlearn/method_registry.h"
#include "unlearn/runner.h"
#include "unlearn/text_metrics.h"
#include "unlearn/text_task.h"
#include "unlearn/update.h"

using namespace hamu;

namespace {

std::shared_ptr<models::CausalLM> tiny_lm(int64_t vocab, uint64_t seed) {
  models::LmConfig c = models::lm_config_by_name("gpt-small", vocab);
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 64;
  c.max_positions = 32;
  Rng rng(seed);
  return models::build_lm(c, rng);
}

// Random sequences with a prompt of 2..4 tokens and an answer of 1..5 tokens (labels -100 on the prompt).
std::vector<QaTokens> random_seqs(int64_t n, int32_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<QaTokens> out;
  for (int64_t i = 0; i < n; ++i) {
    QaTokens s;
    s.n_prompt = 2 + int64_t(rng.below(3));
    const int64_t len = s.n_prompt + 1 + int64_t(rng.below(5));
    for (int64_t j = 0; j < len; ++j) {
      const int32_t id = int32_t(1 + rng.below(uint64_t(vocab - 1)));
      s.ids.push_back(id);
      s.labels.push_back(j < s.n_prompt ? kIgnoreLabel : id);
    }
    out.push_back(s);
  }
  return out;
}

std::vector<double> flat(const std::vector<Tensor>& ts) {
  std::vector<double> out;
  for (const Tensor& t : ts) {
    std::vector<double> v = testing::as_doubles(t);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

}  // namespace

TEST_CASE("text losses: task_loss, sample_nll and task_kl on [B,T,V] logits against a direct computation") {
  const int64_t b = 3, t = 6, v = 7;
  Tensor logits = testing::random_tensor({b, t, v}, -2, 2, DType::f64);
  Tensor orig = testing::random_tensor({b, t, v}, -2, 2, DType::f64);
  std::vector<int32_t> labels = {-100, -100, 3, 1, 4, -100, -100, 2, 2, 6, 0, 5, -100, -100, -100, 1, -100, -100};
  Tensor lab = Tensor::from_vector<int32_t>(labels, {b, t});
  const std::vector<double> lg = testing::as_doubles(logits), og = testing::as_doubles(orig);
  auto logp = [&](const std::vector<double>& x, int64_t r, int64_t pos, int64_t k) {
    double m = -1e300, z = 0;
    for (int64_t c = 0; c < v; ++c) m = std::max(m, x[size_t((r * t + pos) * v + c)]);
    for (int64_t c = 0; c < v; ++c) z += std::exp(x[size_t((r * t + pos) * v + c)] - m);
    return x[size_t((r * t + pos) * v + k)] - m - std::log(z);
  };
  double total = 0, kl = 0;
  int64_t count = 0;
  std::vector<double> seq(size_t(b), 0.0);
  for (int64_t r = 0; r < b; ++r)
    for (int64_t j = 0; j + 1 < t; ++j) {
      const int32_t l = labels[size_t(r * t + j + 1)];
      if (l == -100) continue;
      const double nll = -logp(lg, r, j, l);
      total += nll;
      seq[size_t(r)] += nll;
      ++count;
      for (int64_t c = 0; c < v; ++c) {
        const double po = logp(og, r, j, c);
        kl += std::exp(po) * (po - logp(lg, r, j, c));
      }
    }
  CHECK(task_loss(logits, lab).item() == doctest::Approx(total / double(count)).epsilon(1e-12));
  CHECK(testing::rel_error(testing::as_doubles(sample_nll(logits, lab)), seq) < 1e-12);
  CHECK(task_kl(orig, logits, lab).item() == doctest::Approx(kl / double(count)).epsilon(1e-10));
  CHECK(task_kl(logits, logits, lab).item() == doctest::Approx(0.0).epsilon(1e-12));
  // Images: exactly the cross-entropy (the image path is unchanged).
  Tensor il = testing::random_tensor({5, 4}, -1, 1, DType::f32);
  Tensor y = testing::random_labels(5, 4);
  CHECK(task_loss(il, y).item() == cross_entropy(il, y).item());
}

TEST_CASE("text task: the paired pass over [retain; forget] equals two passes for every method family") {
  const int32_t vocab = 40;
  auto model = tiny_lm(vocab, 11);
  auto original = tiny_lm(vocab, 12);
  const std::vector<QaTokens> retain = random_seqs(9, vocab, 1), forget = random_seqs(5, vocab, 2);
  UnlearnOptions opt;
  opt.batch = 4;
  opt.forget_batch = 3;
  std::unique_ptr<UnlearnTask> task = make_text_task(retain, forget, 0, opt);
  Batch r, f;
  task->next_pair(r, f);
  CHECK(r.images.shape()[1] == f.images.shape()[1]);
  for (const char* name : {"hamu-q", "gdiff", "kl", "scrub", "npo", "ga", "ft"}) {
    CAPTURE(name);
    const Method& m = parse_method(name);
    nn::Module* orig = m.needs_original() ? original.get() : nullptr;
    MethodParams params;
    FusedUpdate two(model->parameters()), one(model->parameters());
    std::string why2, why1;
    GradientResult g2 = compute_gradients(*model, orig, two, r, f, m, params, false, &why2, task.get());
    GradientResult g1 = compute_gradients(*model, orig, one, r, f, m, params, true, &why1, task.get());
    CHECK_MESSAGE(g1.paired, why1);
    CHECK(g1.retain_loss == doctest::Approx(g2.retain_loss).epsilon(1e-5));
    CHECK(g1.forget_loss == doctest::Approx(g2.forget_loss).epsilon(1e-5));
    if (m.uses_retain()) CHECK(testing::rel_error(flat(one.retain_grads()), flat(two.retain_grads())) < 1e-4);
    if (m.uses_forget()) CHECK(testing::rel_error(flat(one.forget_grads()), flat(two.forget_grads())) < 1e-4);
  }
}

TEST_CASE("text unlearning runs through the shared runner: ga and hamu-q raise the forget loss") {
  const int32_t vocab = 30;
  auto model = tiny_lm(vocab, 5);
  const std::vector<QaTokens> retain = random_seqs(24, vocab, 3), forget = random_seqs(8, vocab, 4);
  TextTrainOptions to;
  to.epochs = 60;
  to.batch = 8;
  to.lr = 1e-2;
  to.progress = false;
  const std::vector<QaTokens> all = [&] {
    std::vector<QaTokens> a = retain;
    a.insert(a.end(), forget.begin(), forget.end());
    return a;
  }();
  const std::vector<TextEpochSummary> log = train_text_model(*model, all, to);
  CHECK(log.back().train_loss < 0.5 * log.front().train_loss);
  TextEvalOptions eo;
  const EvalReport before = evaluate_text_model(*model, {&forget, &retain, &retain}, eo);
  CHECK(before.text);
  CHECK(before.forget.acc > 0.6);
  for (const char* name : {"ga", "hamu-q"}) {
    CAPTURE(name);
    auto work = tiny_lm(vocab, 5);
    for (size_t i = 0; i < work->parameters().size(); ++i) work->parameters()[i].copy_(model->parameters()[i]);
    UnlearnOptions opt;
    opt.method = &parse_method(name);
    opt.steps = 15;
    opt.batch = 8;
    opt.forget_batch = 8;
    opt.params.lr = 0.5;
    opt.ratio = 0.001;  // a memorised model's gradients are small: B = ratio * lr must stay reachable
    opt.progress = false;
    std::unique_ptr<UnlearnTask> task = make_text_task(retain, forget, 0, opt);
    UnlearnResult res = run_unlearning(*work, nullptr, *task, opt, {});
    CAPTURE(stop_reason_name(res.stop_reason));
    CHECK(res.paired_fallback.empty());
    CHECK(res.steps_done > 0);
    const EvalReport after = evaluate_text_model(*work, {&forget, &retain, &retain}, eo);
    CHECK(after.forget.loss > before.forget.loss);
  }
}

TEST_CASE("text unlearning with one wait per step equals the three-wait steps (batches of changing length, LoRA dropout)") {
  const int32_t vocab = 30;
  const std::vector<QaTokens> retain = random_seqs(24, vocab, 3), forget = random_seqs(8, vocab, 4);
  for (double dropout : {0.0, 0.2}) {
    CAPTURE(dropout);
    UnlearnResult res[2];
    std::vector<double> params[2];
    for (int one_wait : {0, 1}) {
      auto lm = tiny_lm(vocab, 5);
      models::LoraSpec spec;
      spec.r = 4;
      spec.dropout = dropout;
      spec.targets = {"q", "v", "up"};
      models::add_lora(*lm, spec, 7);
      lm->train(true);
      UnlearnOptions opt;
      opt.method = &parse_method("hamu-q");
      opt.steps = 6;
      opt.batch = 5;
      opt.forget_batch = 3;
      opt.params.lr = 0.5;
      opt.ratio = 0.01;
      opt.progress = false;
      opt.stop.rule = StopRule::none;
      opt.one_wait = one_wait;
      std::unique_ptr<UnlearnTask> task = make_text_task(retain, forget, 0, opt);
      res[one_wait] = run_unlearning(*lm, nullptr, *task, opt, {});
      params[one_wait] = flat(lm->parameters());
    }
    CHECK(res[0].one_wait_steps == 0);
    CHECK(res[1].one_wait_steps == int64_t(res[1].log.size()));
    CHECK(res[1].steps_done > 0);
    REQUIRE(res[0].log.size() == res[1].log.size());
    for (size_t i = 0; i < res[0].log.size(); ++i) {
      CAPTURE(i);
      CHECK(res[0].log[i].retain_loss == res[1].log[i].retain_loss);
      CHECK(res[0].log[i].forget_loss == res[1].log[i].forget_loss);
      CHECK(res[0].log[i].paired == res[1].log[i].paired);
      CHECK(res[0].log[i].paired == (dropout == 0.0));  // active dropout: two passes, in both
      CHECK(res[0].log[i].report.kappa == res[1].log[i].report.kappa);
      CHECK(res[0].log[i].report.applied == res[1].log[i].report.applied);
    }
    CHECK(res[0].paired_fallback == res[1].paired_fallback);
    CHECK(params[0] == params[1]);
  }
}

TEST_CASE("text metrics: per-sequence loss, accuracy, probability and Min-K% match the token losses") {
  const int32_t vocab = 25;
  auto model = tiny_lm(vocab, 9);
  const std::vector<QaTokens> seqs = random_seqs(7, vocab, 8);
  TextEvalOptions eo;
  eo.batch = 3;
  const SplitEval s = evaluate_text_split(*model, seqs, eo);
  double nll = 0, prob = 0;
  int64_t tokens = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    Batch b = make_text_batch(seqs, {int64_t(i)}, 0);
    Tensor logits = model->logits(b.images, {}, row_positions(b.images));
    std::vector<float> l = token_cross_entropy(logits, b.labels).to_vector<float>();
    std::vector<double> lp;
    for (int64_t j = 0; j + 1 < seqs[i].length(); ++j)
      if (seqs[i].labels[size_t(j + 1)] != kIgnoreLabel) lp.push_back(-double(l[size_t(j)]));
    double sum = 0;
    for (double x : lp) sum -= x, prob += std::exp(x);
    nll += sum;
    tokens += int64_t(lp.size());
    CHECK(s.losses[i] == doctest::Approx(sum / double(lp.size())).epsilon(1e-5));
    std::sort(lp.begin(), lp.end());
    const size_t k = std::max<size_t>(1, size_t(std::floor(0.1 * double(lp.size()))));
    double mk = 0;
    for (size_t q = 0; q < k; ++q) mk += lp[q];
    CHECK(s.min_k_scores[i] == doctest::Approx(mk / double(k)).epsilon(1e-5));
  }
  CHECK(s.tokens == tokens);
  CHECK(s.loss == doctest::Approx(nll / double(tokens)).epsilon(1e-5));
  CHECK(s.prob == doctest::Approx(prob / double(tokens)).epsilon(1e-5));
}

TEST_CASE("ks_2samp matches scipy.stats.ks_2samp (method auto: exact for these sizes)") {
  struct Case {
    std::vector<double> a, b;
    double stat, p;
  };
  // Generated with scipy 1.17.1 (numpy default_rng(7) samples, rounded); see the test name.
  const std::vector<Case> cases = {
{{0.001,0.299,-0.274,-0.891,-0.455,-0.992,0.06,1.34,-0.492,-0.62,0.49,0.357,0.105,-0.93,-0.029,0.695,-1.344,-0.458,-1.901,-1.29,-1.842,-0.235,-1.267,0.271,0.157,-0.187,-2.517,-0.539,-0.049,0.113},{-1.03,0.022,-0.479,-0.309,1.561,-0.308,0.467,1.384,-0.084,0.388,0.61,0.564,-0.725,0.576,1.859,-1.047,1.359,0.619,-0.141,2.5,1.262,-0.699,0.575,1.077,0.311,1.183,0.433,1.167,1.939,-0.176},0.5,0.0008995776840176799},
{{0.203,-0.463,0.127,-1.187,-0.579,-0.196,0.899,1.145,-1.324,-0.795,0.647,-1.992,-0.463,-0.097,1.257,0.689,-0.327,-0.369,-0.25,1.524,-0.428,-0.304,0.353,-0.121,-0.197,-1.114,-0.012,-0.444,1.166,0.653,-0.024,0.668,-0.34,1.052,-0.005,0.583,-1.291,0.347,-1.688,-2.035},{-0.065,-0.78,0.497,2.994,-0.698,-0.449,0.546,0.892,0.088,0.053,1.143,0.924,-0.94,0.205,0.342,-0.965,0.612,-0.73,1.466,0.531,0.407,-0.409,0.158,-2.097,-1.058},0.225,0.36059955378556596},
{{0.36,-2.13,0.85,-1.75,0.76,-0.85,0.78},{0.13,-1.54,1.25,1.44,-0.07,-0.27,-0.16,-0.98,1.1,-0.54,-0.05},0.2987012987012987,0.7302664655605834},
{{0.677,2.209,0.111,0.548,0.346,1.076,0.479,3.611,0.899,2.678,1.693,1.152,1.214,0.593,0.324,0.263,0.114,2.312,0.634,0.302,1.323,0.548,0.921,2.462,0.228,0.882,0.099,0.411,0.631,0.274,0.012,0.342,1.749,1.291,0.551,0.21,2.203,1.36,3.932,0.469,2.176,0.053,0.043,0.027,0.054,0.444,0.061,1.55,0.032,0.497,0.211,0.841,0.028,0.551,2.889,1.121,0.371,1.599,0.704,0.171,1.737,0.075,1.609,1.998,0.994,0.352,1.992,0.118,0.448,1.373,0.98,0.837,5.075,0.774,0.236,0.638,1.496,0.151,1.506,2.814,0.844,0.084,0.284,0.435,0.727,0.521,1.9,0.963,0.264,0.031,0.27,0.273,1.492,0.379,2.457,0.933,1.171,1.61,0.019,0.939,0.14,0.903,1.607,0.548,0.329,1.384,0.569,0.232,0.453,0.608,0.098,0.917,2.86,0.482,0.035,1.424,0.229,0.084,0.13,0.024,0.473,0.807,0.275,1.423,0.817,0.378,0.71,1.368,0.341,0.599,0.196,0.322,4.4,0.881,0.676,2.573,0.108,1.872,2.27,0.3,1.417,1.956,2.167,1.063,0.082,0.107,3.412,1.679,4.241,0.891,1.629,0.041,1.223,0.392,0.697,0.125,2.371,0.777,0.608,0.625,0.03,2.83,0.602,0.376,0.358,1.689,0.541,0.27,3.655,0.623,0.218,1.388,1.49,0.506,0.294,5.047,0.334,0.453,3.097,0.421,0.328,2.227,0.745,0.989,0.474,1.694,0.124,1.855,0.244,0.347,0.034,1.928,1.769,2.256,0.339,0.194,1.748,0.488,1.633,0.487},{0.683,0.039,2.014,0.488,0.122,1.537,0.858,0.531,2.399,0.515,1.196,0.381,1.734,3.487,1.905,0.672,3.165,1.347,0.251,0.298,0.226,2.127,9.422,2.235,0.063,1.083,3.062,0.832,0.046,0.433,0.446,0.232,0.412,2.757,1.599,0.844,2.66,2.914,0.745,1.203,0.473,0.278,0.878,0.081,0.903,0.151,0.781,1.164,0.684,2.306,0.753,0.786,0.217,1.138,3.098,2.809,0.142,2.283,1.743,2.508,3.097,1.412,1.107,2.499,1.786,0.521,1.66,0.538,1.571,0.842,0.466,0.552,0.015,2.537,0.817,0.511,0.829,1.718,0.994,0.544,1.468,1.23,3.132,0.122,1.271,1.118,1.651,0.072,0.459,0.212,0.657,2.735,0.286,1.538,2.976,1.253,1.157,3.383,2.235,0.904,2.474,0.884,0.667,1.408,2.12,0.696,1.641,1.099,0.889,2.538,0.29,0.143,1.563,1.077,6.223,1.266,2.872,0.851,0.058,1.385,0.325,0.683,4.266,0.775,0.809,0.729,3.098,0.185,0.731,0.337,0.568,1.469,0.748,2.668,1.61,0.589,0.747,0.62,1.117,2.11,4.886,0.25,1.882,0.369,2.522,1.514,0.66,1.149,2.557,0.505},0.22,0.00041873802440024684},
{{1.0,2.0,2.0,3.0,3.0,3.0,4.0},{2.0,3.0,3.0,5.0,6.0},0.4,0.6388888888888888},
  };
  for (const Case& c : cases) {
    const KsResult r = ks_2samp(c.a, c.b);
    CAPTURE(c.a.size());
    CAPTURE(c.b.size());
    CHECK(r.statistic == doctest::Approx(c.stat).epsilon(1e-12));
    CHECK(r.p_value == doctest::Approx(c.p).epsilon(1e-9));
  }
  CHECK(ks_2samp({1, 2, 3}, {1, 2, 3}).p_value == 1.0);
  CHECK(ks_2samp({}, {1.0}).p_value == 1.0);
}

TEST_CASE("ROUGE-L recall: longest common word subsequence over the reference's words") {
  CHECK(rouge_l_recall("a large cat of Africa", "a large cat") == doctest::Approx(0.6));
  CHECK(rouge_l_recall("The cat, sat!", "the cat sat") == doctest::Approx(1.0));
  CHECK(rouge_l_recall("one two three four", "four three two one") == doctest::Approx(0.25));
  CHECK(rouge_l_recall("", "anything") == 0.0);
  CHECK(rouge_l_recall("x y", "") == 0.0);
}
