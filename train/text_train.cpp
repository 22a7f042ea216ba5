// train/text_train.cpp: the completion-only training loop of a causal language model on QA pairs.
#include "train/text_train.h"

#include <cmath>
#include <cstdio>
#include <memory>

#include "engine/collectives.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/progress.h"
#include "engine/rng.h"
#include "loaders/batch.h"
#include "loaders/text_batch.h"
#include "train/train.h"

namespace hamu {

std::vector<TextEpochSummary> train_text_model(models::CausalLM& model, const std::vector<QaTokens>& seqs,
                                               const TextTrainOptions& opt,
                                               const std::function<void(const TextEpochSummary&)>& on_epoch) {
  if (seqs.empty()) throw InputError("train: no training sequences");
  check_loop_options(opt.epochs, opt.batch, opt.lr, opt.schedule);
  AdamWOptions ao;
  ao.lr = opt.lr;
  ao.weight_decay = opt.weight_decay;
  AdamW optimizer(model.parameters(), ao);
  const int64_t n = int64_t(seqs.size());
  const int64_t steps_per_epoch = (n + opt.batch - 1) / opt.batch;
  const int64_t total_steps = opt.epochs * steps_per_epoch;
  int64_t epoch_tokens = 0;
  for (const QaTokens& s : seqs) epoch_tokens += s.length();
  std::vector<TextEpochSummary> out;
  // Many ranks: each takes its rows of every padded global batch; its loss is its answer tokens' sum
  // over the global batch's answer-token count, so the gradients summed over the ranks are the 1-rank
  // step's (LoRA dropout draws its masks per rank, so with dropout the run matches only in distribution).
  Collectives& comm = opt.comm ? *opt.comm : world();
  const int ranks = comm.size();
  check_rank_options(opt, ranks);
  if (ranks > 1) {
    char text[256];
    std::snprintf(text, sizeof text, "text lr=%.17g wd=%.17g clip=%.17g %s warmup=%lld epochs=%lld batch=%lld seed=%llu %s pad=%d bucket=%zu",
                  opt.lr, opt.weight_decay, opt.clip, opt.schedule.c_str(), (long long)opt.warmup_steps,
                  (long long)opt.epochs, (long long)opt.batch, (unsigned long long)opt.seed, opt.device.str().c_str(),
                  int(opt.pad_id), overlap_bucket_bytes());
    uint64_t h = hash_tensors(model.parameters(), hash_string(text));
    for (const QaTokens& q : seqs) {
      h = hash_bytes(q.ids.data(), q.ids.size() * sizeof(q.ids[0]), h);
      h = hash_bytes(q.labels.data(), q.labels.size() * sizeof(q.labels[0]), h);
    }
    check_same_on_all_ranks(comm, "training configuration", h);
  }
  DataParallelGrads dp(comm, model.parameters());
  model.train(true);
  int64_t global_step = 0;
  // Where the run starts: epoch 1, step 0, or a state's epoch and step with the epoch's accumulators.
  int64_t first_epoch = 1, first_step = 0;
  if (opt.resume) {
    const TrainPosition p = restore_train_state(*opt.resume, model, optimizer, opt.epochs, steps_per_epoch);
    first_epoch = p.epoch;
    first_step = p.step;
    global_step = p.global_step;
    out = epoch_rows(*opt.resume, first_epoch - 1, &TextEpochSummary::tokens_per_s);
  }
  for (int64_t epoch = first_epoch; epoch <= opt.epochs; ++epoch) {
    const std::vector<int64_t> order = Rng(opt.seed).fork(uint64_t(epoch)).permutation(n);
    const bool resumed = opt.resume && epoch == first_epoch;
    TextEpochSummary es;
    es.epoch = epoch;
    const double t0 = now_s();
    std::unique_ptr<Progress> bar;
    if (opt.progress)
      bar = std::make_unique<Progress>(epoch_tokens, "epoch " + std::to_string(epoch) + "/" + std::to_string(opt.epochs),
                                       "tok/s");
    double nll = 0, seconds_before = 0;  // seconds_before: this epoch's training time before a resume
    int64_t scored = 0, correct = 0, done_tokens = 0;
    if (resumed) {
      const RunState& st = *opt.resume;
      const std::vector<double> acc = st.get_doubles("loop.accumulators", 2);
      nll = acc[0];
      seconds_before = acc[1];
      scored = st.counter("loop.scored");
      correct = st.counter("loop.correct");
      done_tokens = st.counter("loop.done_tokens");
      es.skipped_steps = st.counter("loop.skipped");
    }
    // The state after step `step` of this epoch.
    auto write_state = [&](int64_t step) {
      RunState st;
      st.kind = "text-train";
      put_train_state(st, model, optimizer, {epoch, step, global_step});
      st.put_counter("loop.scored", scored);
      st.put_counter("loop.correct", correct);
      st.put_counter("loop.done_tokens", done_tokens);
      st.put_counter("loop.skipped", es.skipped_steps);
      st.put_doubles("loop.accumulators", {nll, seconds_before + now_s() - t0});
      put_epoch_rows(st, out, &TextEpochSummary::tokens_per_s);
      opt.write_state(st);
    };
    auto maybe_write_state = [&](int64_t step) {
      if (checkpoint_due(opt.checkpoint_every, bool(opt.write_state), global_step, total_steps)) write_state(step + 1);
    };
    for (int64_t step = resumed ? first_step : 0; step < steps_per_epoch; ++step) {
      const std::vector<int64_t> idx(order.begin() + step * opt.batch,
                                     order.begin() + std::min(n, (step + 1) * opt.batch));
      Batch b = make_text_batch(seqs, idx, opt.pad_id, 0, opt.device);
      const int64_t count = count_scored_tokens(b.labels, 1, kIgnoreLabel);
      if (ranks > 1) {
        const Shard share = shard_of(int64_t(idx.size()), comm.rank(), ranks);
        b = batch_rows(b, share.start, share.count);
      }
      optimizer.lr = scheduled_lr(opt.lr, opt.schedule, global_step, total_steps, opt.warmup_steps);
      ++global_step;
      optimizer.zero_grad();
      dp.begin(1.0);
      // A rank whose share of a short last batch is empty adds nothing but still takes part.
      const bool has_rows = b.size() > 0;
      Tensor logits, loss;
      double lv = 0;
      if (has_rows) {
        logits = model.logits(b.images, {}, row_positions(b.images));
        Tensor losses = token_cross_entropy(logits, b.labels, 1, kIgnoreLabel);
        loss = mul_scalar(sum(losses), count ? 1.0 / double(count) : 0.0);
        lv = loss.item();
      }
      if (has_rows && std::isfinite(lv)) dp.backward(loss);
      dp.finish();
      int64_t batch_correct = 0;
      if (has_rows) {
        NoGradGuard ng;
        const std::vector<int32_t> pred = argmax(logits.detach(), 2).to(Device{}).to_vector<int32_t>();
        const std::vector<int32_t> lab = b.labels.to(Device{}).to_vector<int32_t>();
        const int64_t t = b.images.shape()[1], rows = b.images.shape()[0];
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j + 1 < t; ++j) {
            const int32_t l = lab[size_t(r * t + j + 1)];
            if (l != kIgnoreLabel) batch_correct += pred[size_t(r * t + j)] == l;
          }
      }
      if (ranks > 1) {  // the global loss and accuracy; a non-finite loss anywhere skips the step everywhere
        std::vector<double> sums = {lv, double(batch_correct)};
        all_reduce_host(comm, sums);
        lv = sums[0];
        batch_correct = int64_t(sums[1]);
      }
      if (!std::isfinite(lv)) {
        ++es.skipped_steps;
        maybe_write_state(step);
        continue;
      }
      if (opt.clip > 0) clip_grad_norm(model.parameters(), opt.clip);
      optimizer.step();
      correct += batch_correct;
      nll += lv * double(count);
      scored += count;
      for (int64_t i : idx) done_tokens += seqs[size_t(i)].length();
      if (bar) {
        char status[64];
        std::snprintf(status, sizeof status, "loss %.4f acc %.1f%%", scored ? nll / double(scored) : 0.0,
                      scored ? 100.0 * double(correct) / double(scored) : 0.0);
        bar->update(done_tokens, status);
      }
      maybe_write_state(step);
    }
    es.seconds = seconds_before + now_s() - t0;
    es.train_loss = scored ? nll / double(scored) : 0.0;
    es.train_acc = scored ? double(correct) / double(scored) : 0.0;
    es.tokens_per_s = es.seconds > 0 ? double(done_tokens) / es.seconds : 0.0;
    if (bar) bar->finish();
    out.push_back(es);
    if (on_epoch) on_epoch(es);
    model.train(true);
  }
  return out;
}

}  // namespace hamu
