// models/lm/generate.cpp: greedy generation with a KV cache (and its uncached reference) and teacher-forced
// scoring of labelled sequences.
#include "models/lm/generate.h"

#include <algorithm>
#include <string>

#include "engine/ops.h"

namespace hamu::models {
namespace {

Device model_device(const CausalLM& model) {
  const auto weights = model.named_weights();
  return weights.empty() ? Device{} : weights.front().second.device();
}

void check_ids(const CausalLM& model, const std::vector<int32_t>& ids, const std::string& what) {
  const int64_t vocab = model.config().vocab_size;
  if (ids.empty()) throw InputError(what + " is empty");
  for (const int32_t id : ids)
    if (id < 0 || id >= vocab)
      throw InputError(what + ": token id " + std::to_string(id) + " is outside the model's vocabulary of " +
                       std::to_string(vocab));
}

// Host-side state of a left-padded batch, rows of `stride` columns: each prompt ends at column `width`
// (padding before it); the columns after it receive the generated tokens.
struct LeftPadded {
  int64_t stride = 0;
  std::vector<int32_t> ids, mask, positions;  // [batch, stride]
};

LeftPadded left_pad(const std::vector<std::vector<int32_t>>& rows, int64_t width, int64_t stride) {
  LeftPadded p;
  p.stride = stride;
  p.ids.assign(rows.size() * size_t(stride), 0);
  p.mask.assign(p.ids.size(), 0);
  p.positions.assign(p.ids.size(), 0);
  for (size_t b = 0; b < rows.size(); ++b) {
    const auto& r = rows[b];
    const int64_t pad = width - int64_t(r.size());
    for (int64_t j = 0; j < int64_t(r.size()); ++j) {
      const size_t at = b * size_t(stride) + size_t(pad + j);
      p.ids[at] = r[size_t(j)];
      p.mask[at] = 1;
      p.positions[at] = int32_t(j);  // counted from the first real token, as generate() does
    }
  }
  return p;
}

// The order in which score_sequences batches n sequences: `order` when it is a permutation of [0, n), the
// identity when it is empty; InputError otherwise.
std::vector<int64_t> batch_order(const std::vector<int64_t>& order, int64_t n) {
  if (order.empty()) {
    std::vector<int64_t> identity(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) identity[size_t(i)] = i;
    return identity;
  }
  std::vector<bool> seen(size_t(n), false);
  for (const int64_t i : order) {
    if (i < 0 || i >= n || seen[size_t(i)]) break;
    seen[size_t(i)] = true;
  }
  if (int64_t(order.size()) != n || std::find(seen.begin(), seen.end(), false) != seen.end())
    throw InputError("score: the order is not a permutation of the " + std::to_string(n) + " sequences");
  return order;
}

// Row b's argmax of logits [B,V] (ties: lowest id; NaN wins).
std::vector<int32_t> greedy_tokens(const Tensor& logits) { return argmax(logits, 1).to_vector<int32_t>(); }

}  // namespace

bool GenerateOptions::is_stop(int32_t id) const {
  return std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end();
}

int64_t lm_context_length(const LmConfig& cfg) {
  int64_t n = cfg.max_positions > 0 ? cfg.max_positions : INT32_MAX;
  if (cfg.sliding_window > 0) n = std::min(n, cfg.sliding_window);
  return n;
}

GenerateResult generate_greedy(CausalLM& model, const std::vector<std::vector<int32_t>>& prompts,
                               const GenerateOptions& options) {
  NoGradGuard no_grad;
  GenerateResult out;
  out.tokens.resize(prompts.size());
  out.stops.assign(prompts.size(), GenerateStop::length);
  if (prompts.empty() || options.max_new_tokens < 1) return out;
  const int64_t context = lm_context_length(model.config());
  int64_t longest = 0, most_new = 0;
  std::vector<int64_t> limit(prompts.size());  // new tokens row r may make
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string what = "generate: prompt " + std::to_string(i + 1);
    check_ids(model, prompts[i], what);
    const int64_t n = int64_t(prompts[i].size());
    if (n > context)
      throw InputError(what + " has " + std::to_string(n) + " tokens, more than the model's context of " + std::to_string(context));
    longest = std::max(longest, n);
    limit[i] = std::min(options.max_new_tokens, context - n + 1);  // the last new token is never fed back
    most_new = std::max(most_new, limit[i]);
  }
  const int64_t b = int64_t(prompts.size());
  const int64_t capacity = longest + most_new;
  const Device dev = model_device(model);
  // The full left-padded layout, prompt then one column per step; the uncached reference reads its prefix.
  LeftPadded all = left_pad(prompts, longest, capacity);
  std::vector<int32_t> next_pos(static_cast<size_t>(b));
  for (int64_t r = 0; r < b; ++r) next_pos[size_t(r)] = int32_t(prompts[size_t(r)].size());
  // Columns [0, width) of the layout as device tensors.
  auto columns = [&](const std::vector<int32_t>& v, int64_t from, int64_t width) {
    std::vector<int32_t> part(size_t(b * width));
    for (int64_t r = 0; r < b; ++r)
      std::copy_n(v.begin() + r * capacity + from, width, part.begin() + r * width);
    return Tensor::from_vector<int32_t>(part, {b, width}, dev);
  };

  KvCache cache(capacity);
  auto step_logits = [&](int64_t width) {  // logits of column width-1, given columns [0, width)
    if (!options.use_cache) {
      const Tensor logits = model.logits(columns(all.ids, 0, width), columns(all.mask, 0, width),
                                         columns(all.positions, 0, width));
      return logits.narrow(1, width - 1, 1).reshape({b, model.config().vocab_size});
    }
    const int64_t from = cache.length();
    return model.next_token_logits(columns(all.ids, from, width - from), columns(all.mask, 0, width),
                                   columns(all.positions, from, width - from), cache);
  };

  std::vector<bool> done(size_t(b), false);
  int64_t width = longest, live = b;
  Tensor logits = step_logits(width);
  for (int64_t s = 0;; ++s) {
    const std::vector<int32_t> next = greedy_tokens(logits);
    for (int64_t r = 0; r < b; ++r) {
      if (done[size_t(r)]) continue;
      auto& toks = out.tokens[size_t(r)];
      toks.push_back(next[size_t(r)]);
      const bool at_end = options.is_stop(next[size_t(r)]);
      if (at_end || int64_t(toks.size()) >= limit[size_t(r)]) {
        done[size_t(r)] = true;
        --live;
        out.stops[size_t(r)] = at_end ? GenerateStop::end
                               : int64_t(toks.size()) >= options.max_new_tokens ? GenerateStop::length
                                                                               : GenerateStop::context;
      }
    }
    if (live == 0) break;
    // Column `width` holds each row's new token. A finished row repeats its last one at position 0 (always in
    // range); no other row attends to it, and its own output is ignored.
    for (int64_t r = 0; r < b; ++r) {
      const size_t at = size_t(r * capacity + width);
      all.ids[at] = out.tokens[size_t(r)].back();
      all.mask[at] = 1;
      all.positions[at] = done[size_t(r)] ? 0 : next_pos[size_t(r)]++;
    }
    ++width;
    logits = step_logits(width);
    ++out.steps;
  }
  return out;
}

ScoreResult score_sequences(CausalLM& model, const std::vector<std::vector<int32_t>>& ids,
                            const std::vector<std::vector<int32_t>>& labels, const ScoreOptions& options) {
  if (ids.size() != labels.size())
    throw InputError("score: " + std::to_string(ids.size()) + " sequences but " + std::to_string(labels.size()) +
                     " label rows");
  const int64_t batch = options.batch;
  if (batch < 1) throw InputError("score: batch must be at least 1");
  const int64_t context = lm_context_length(model.config()), vocab = model.config().vocab_size;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string what = "score: sequence " + std::to_string(i + 1);
    check_ids(model, ids[i], what);
    if (labels[i].size() != ids[i].size())
      throw InputError(what + " has " + std::to_string(ids[i].size()) + " tokens but " +
                       std::to_string(labels[i].size()) + " labels");
    if (int64_t(ids[i].size()) > context)
      throw InputError(what + " has " + std::to_string(ids[i].size()) + " tokens, more than the model's " +
                       std::to_string(context) + " positions");
    for (const int32_t l : labels[i])
      if (l != -100 && (l < 0 || l >= vocab))
        throw InputError(what + ": label " + std::to_string(l) + " is outside the vocabulary of " + std::to_string(vocab));
  }
  const int64_t n = int64_t(ids.size());
  const std::vector<int64_t> order = batch_order(options.order, n);
  NoGradGuard no_grad;
  const Device dev = model_device(model);
  ScoreResult res;
  res.sequences.resize(ids.size());
  const int64_t batches = (n + batch - 1) / batch;
  for (int64_t first = 0, k = 0; first < n; first += batch, ++k) {
    const int64_t rows = std::min(batch, n - first);
    const int64_t* row = order.data() + first;  // the batch's sequences
    int64_t width = 0;
    for (int64_t r = 0; r < rows; ++r) width = std::max<int64_t>(width, int64_t(ids[size_t(row[r])].size()));
    // Right padding: tokens at [0, len), then pad_id with mask 0 and label -100.
    std::vector<int32_t> x(size_t(rows * width), options.pad_id), m(x.size(), 0), y(x.size(), -100);
    for (int64_t r = 0; r < rows; ++r) {
      const auto& si = ids[size_t(row[r])];
      const auto& sl = labels[size_t(row[r])];
      std::copy(si.begin(), si.end(), x.begin() + r * width);
      std::fill_n(m.begin() + r * width, si.size(), 1);
      std::copy(sl.begin(), sl.end(), y.begin() + r * width);
    }
    const Tensor label_t = Tensor::from_vector<int32_t>(y, {rows, width}, dev);
    const Tensor logits = model.logits(Tensor::from_vector<int32_t>(x, {rows, width}, dev),
                                       Tensor::from_vector<int32_t>(m, {rows, width}, dev));
    const std::vector<float> losses = token_cross_entropy(logits, label_t).to(DType::f32).to_vector<float>();
    const std::vector<int32_t> pred = argmax(logits, 2).to_vector<int32_t>();
    for (int64_t r = 0; r < rows; ++r) {
      TokenScore& s = res.sequences[size_t(row[r])];
      for (int64_t t = 1; t < width; ++t) {
        const int32_t target = y[size_t(r * width + t)];
        if (target == -100) continue;
        // Position t-1 predicts token t (its loss sits at t-1, as token_cross_entropy shifts).
        const float nll = losses[size_t(r * width + t - 1)];
        s.token_nll.push_back(nll);
        s.nll += double(nll);
        s.correct += pred[size_t(r * width + t - 1)] == target;
        ++s.tokens;
      }
      res.total.nll += s.nll;
      res.total.tokens += s.tokens;
      res.total.correct += s.correct;
    }
    if (options.on_batch) options.on_batch(k + 1, batches);
  }
  return res;
}

ScoreResult score_sequences(CausalLM& model, const std::vector<std::vector<int32_t>>& ids,
                            const std::vector<std::vector<int32_t>>& labels, int64_t batch,
                            const std::function<void(int64_t, int64_t)>& on_batch) {
  ScoreOptions o;
  o.batch = batch;
  o.on_batch = on_batch;
  return score_sequences(model, ids, labels, o);
}

}  // namespace hamu::models
