// unlearn/text_metrics.cpp: text evaluation: teacher-forced answer-token scores, Min-K%, membership AUCs,
// the KS test against a reference, ROUGE-L.
#include "unlearn/text_metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>

#include "models/lm/generate.h"

namespace hamu {

SplitEval evaluate_text_split(models::CausalLM& model, const std::vector<QaTokens>& seqs, const TextEvalOptions& opt) {
  SplitEval out;
  out.n = int64_t(seqs.size());
  out.losses.assign(seqs.size(), 0.0f);
  out.min_k_scores.assign(seqs.size(), 0.0f);
  if (seqs.empty()) return out;
  std::vector<std::vector<int32_t>> ids, labels;
  ids.reserve(seqs.size());
  labels.reserve(seqs.size());
  for (const QaTokens& s : seqs) {
    ids.push_back(s.ids);
    labels.push_back(s.labels);
  }
  models::ScoreOptions so;
  so.batch = std::max<int64_t>(1, opt.batch);
  so.pad_id = opt.pad_id;
  // Longest first, so each batch pads to about its own length.
  so.order.resize(seqs.size());
  std::iota(so.order.begin(), so.order.end(), 0);
  std::stable_sort(so.order.begin(), so.order.end(),
                   [&](int64_t a, int64_t b) { return seqs[size_t(a)].length() > seqs[size_t(b)].length(); });
  const bool was_training = model.training();
  model.eval();
  const models::ScoreResult scores = models::score_sequences(model, ids, labels, so);
  model.train(was_training);
  // Sums in the batching order, token by token.
  double prob = 0, min_k_sum = 0;
  std::vector<double> logps;
  for (const int64_t i : so.order) {
    const models::TokenScore& s = scores.sequences[size_t(i)];
    logps.clear();
    for (const float l : s.token_nll) {
      logps.push_back(-double(l));
      prob += std::exp(-double(l));
    }
    out.losses[size_t(i)] = float(s.loss());
    // Min-K%: the mean of the k lowest token log-probs (the published code's k = max(1, floor(k_pct * n))).
    const int64_t n = int64_t(logps.size());
    double mk = 0;
    if (n > 0) {
      const int64_t k = std::max<int64_t>(1, int64_t(std::floor(opt.k_pct * double(n))));
      std::partial_sort(logps.begin(), logps.begin() + k, logps.end());
      for (int64_t j = 0; j < k; ++j) mk += logps[size_t(j)];
      mk /= double(k);
    }
    out.min_k_scores[size_t(i)] = float(mk);
    min_k_sum += mk;
  }
  out.tokens = scores.total.tokens;
  out.loss = scores.total.loss();
  out.acc = scores.total.accuracy();
  out.prob = out.tokens ? prob / double(out.tokens) : 0.0;
  out.min_k = min_k_sum / double(seqs.size());
  return out;
}

EvalReport evaluate_text_model(models::CausalLM& model, const TextSplits& splits, const TextEvalOptions& opt) {
  EvalReport r;
  r.text = true;
  static const std::vector<QaTokens> none;
  r.forget = evaluate_text_split(model, splits.forget ? *splits.forget : none, opt);
  r.retain = evaluate_text_split(model, splits.retain ? *splits.retain : none, opt);
  r.test = evaluate_text_split(model, splits.test ? *splits.test : none, opt);
  if (splits.duplicate) r.duplicate = evaluate_text_split(model, *splits.duplicate, opt);
  r.retain_forget_auc = roc_auc(r.retain.losses, r.forget.losses);
  r.forget_test_auc = roc_auc(r.forget.losses, r.test.losses);
  r.retain_forget_mink_auc = roc_auc(r.forget.min_k_scores, r.retain.min_k_scores);
  r.forget_test_mink_auc = roc_auc(r.test.min_k_scores, r.forget.min_k_scores);
  return r;
}

void compare_text_to_reference(EvalReport& r, const EvalReport& ref) {
  // The accuracy gaps as for images; forget_kl stays 0, per-token distributions are not kept for text (no
  // probs), so the KS test compares the models instead.
  compare_to_reference(r, ref);
  const KsResult ks = ks_2samp(std::vector<double>(r.forget.losses.begin(), r.forget.losses.end()),
                               std::vector<double>(ref.forget.losses.begin(), ref.forget.losses.end()));
  r.ks_stat = ks.statistic;
  r.ks_p = ks.p_value;
}

// ---- KS test (scipy.stats.ks_2samp, alternative='two-sided', method='auto') ----------------------------------

namespace {

// Pr(D_{n,n} >= h/n), scipy's _compute_prob_outside_square (Horner form of the alternating sum).
double prob_outside_square(int64_t n, int64_t h) {
  double p = 0.0;
  int64_t k = n / h;
  while (k >= 0) {
    double p1 = 1.0;
    for (int64_t j = 0; j < h; ++j) p1 = double(n - k * h - j) * p1 / double(n + k * h + j + 1);
    p = p1 * (1.0 - p);
    --k;
  }
  return 2 * p;
}

// scipy's _compute_outer_prob_inside_method: the share of lattice paths from (0,0) to (m,n) that leave the band
// |x/m - y/n| < h/lcm, one column at a time, scaled by i/(i+j) as it goes (the column holds probabilities).
double outer_prob_inside(int64_t m, int64_t n, int64_t g, int64_t h) {
  if (m < n) std::swap(m, n);
  const int64_t mg = m / g, ng = n / g;
  int64_t minj = 0, maxj = std::min<int64_t>(int64_t(std::ceil(double(h) / double(mg))), n + 1);
  int64_t curlen = maxj - minj;
  const int64_t len_a = std::min<int64_t>(2 * maxj + 2, n + 1);
  std::vector<double> a(size_t(len_a), 1.0);
  for (int64_t i = minj; i < maxj; ++i) a[size_t(i)] = 0.0;
  for (int64_t i = 1; i <= m; ++i) {
    const int64_t lastminj = minj, lastlen = curlen;
    minj = std::max<int64_t>(int64_t(std::floor(double(ng * i - h) / double(mg))) + 1, 0);
    minj = std::min(minj, n);
    maxj = std::min<int64_t>(int64_t(std::ceil(double(ng * i + h) / double(mg))), n + 1);
    if (maxj <= minj) return 1.0;
    double val = minj == 0 ? 0.0 : 1.0;
    for (int64_t jj = 0; jj < maxj - minj; ++jj) {
      const int64_t j = jj + minj;
      val = (a[size_t(jj + minj - lastminj)] * double(i) + val * double(j)) / double(i + j);
      a[size_t(jj)] = val;
    }
    curlen = maxj - minj;
    if (lastlen > curlen)
      for (int64_t q = maxj - minj; q < maxj - minj + (lastlen - curlen) && q < len_a; ++q) a[size_t(q)] = 1.0;
  }
  return a[size_t(maxj - minj - 1)];
}

// Survival function of the Kolmogorov distribution, sum 2 (-1)^(k-1) exp(-2 k^2 x^2) (the asymptotic form
// for large samples; scipy uses kstwo.sf(d, round(n1 n2 / (n1 + n2))) there, which this approaches).
double kolmogorov_sf(double x) {
  if (x <= 0) return 1.0;
  if (x < 0.2) return 1.0;  // the series converges slowly there and the value is 1 to double precision
  double s = 0;
  for (int k = 1; k < 200; ++k) {
    const double term = std::exp(-2.0 * k * k * x * x);
    s += (k % 2 ? 2.0 : -2.0) * term;
    if (term < 1e-300) break;
  }
  return std::min(1.0, std::max(0.0, s));
}

}  // namespace

KsResult ks_2samp(std::vector<double> a, std::vector<double> b) {
  KsResult out;
  if (a.empty() || b.empty()) return out;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  const int64_t n1 = int64_t(a.size()), n2 = int64_t(b.size());
  // D = max |F1 - F2| over all observed values (ties handled as scipy does: searchsorted side='right').
  double d = 0;
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    double x;
    if (j >= b.size() || (i < a.size() && a[i] <= b[j])) x = a[i];
    else x = b[j];
    while (i < a.size() && a[i] <= x) ++i;
    while (j < b.size() && b[j] <= x) ++j;
    d = std::max(d, std::fabs(double(i) / double(n1) - double(j) / double(n2)));
  }
  out.statistic = d;
  const int64_t g = std::gcd(n1, n2);
  if (std::max(n1, n2) <= 10000) {
    const double lcm = double(n1 / g) * double(n2);
    const int64_t h = int64_t(std::nearbyint(d * lcm));
    out.statistic = double(h) / lcm;
    if (h == 0) {
      out.p_value = 1.0;
      return out;
    }
    const double p = n1 == n2 ? prob_outside_square(n1, h) : outer_prob_inside(n1, n2, g, h);
    if (std::isfinite(p) && p >= 0 && p <= 1) {
      out.p_value = p;
      return out;
    }
  }
  const double m = double(std::max(n1, n2)), n = double(std::min(n1, n2));
  const double en = std::nearbyint(m * n / (m + n));
  out.p_value = kolmogorov_sf(std::sqrt(en) * out.statistic);
  return out;
}

// ---- ROUGE-L ------------------------------------------------------------------------------------------------

namespace {

std::vector<std::string> rouge_words(const std::string& text) {
  std::vector<std::string> out;
  std::string w;
  for (unsigned char c : text) {
    if (std::isalnum(c)) w += char(std::tolower(c));
    else if (!w.empty()) out.push_back(std::move(w)), w.clear();
  }
  if (!w.empty()) out.push_back(std::move(w));
  return out;
}

}  // namespace

double rouge_l_recall(const std::string& reference, const std::string& candidate) {
  const std::vector<std::string> r = rouge_words(reference), c = rouge_words(candidate);
  if (r.empty()) return 0.0;
  std::vector<int64_t> prev(c.size() + 1, 0), cur(c.size() + 1, 0);
  for (size_t i = 1; i <= r.size(); ++i) {
    for (size_t j = 1; j <= c.size(); ++j)
      cur[j] = r[i - 1] == c[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return double(prev[c.size()]) / double(r.size());
}

}  // namespace hamu
