// train/train.cpp: the supervised training loop (forward, cross-entropy, backward, optimizer step).
#include "train/train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>

#include "engine/graph.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/interrupt.h"
#include "engine/overlap.h"
#include "engine/progress.h"
#include "train/graph_train.h"

namespace hamu {
namespace {

// The ranks' shared state: BatchNorm running statistics are averaged (each rank saw other rows).
void average_buffers(nn::Module& model, TensorReducer& reducer, int ranks) {
  std::vector<Tensor> bufs;
  for (auto& [name, t] : model.named_buffers())
    if (t.is_floating()) bufs.push_back(t);
  std::vector<Tensor*> ptrs;
  for (Tensor& t : bufs) ptrs.push_back(&t);
  if (!ptrs.empty()) reducer.all_reduce(ptrs, std::vector<double>(ptrs.size(), 1.0 / ranks));
}

bool has_batchnorm(const nn::Module& m) {
  if (dynamic_cast<const nn::BatchNorm2d*>(&m)) return true;
  for (const auto& [name, child] : m.children())
    if (has_batchnorm(*child)) return true;
  return false;
}

}  // namespace

DataParallelGrads::DataParallelGrads(Collectives& c, std::vector<Tensor> params)
    : c_(c),
      params_(std::move(params)),
      bucket_bytes_(c.size() > 1 ? overlap_bucket_bytes() : 0),
      packed_(c),
      overlap_(c, bucket_bytes_) {}

void DataParallelGrads::begin(double weight) {
  weight_ = weight;
  if (c_.size() == 1 || bucket_bytes_ == 0) return;
  if (bufs_.empty())
    for (const Tensor& p : params_) bufs_.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
  for (size_t i = 0; i < params_.size(); ++i) {
    bufs_[i].zero_();
    Tensor p = params_[i];
    p.set_grad(bufs_[i]);
  }
  overlap_.begin(std::vector<Tensor>(bufs_.rbegin(), bufs_.rend()), std::vector<double>(bufs_.size(), weight));
}

void DataParallelGrads::backward(const Tensor& loss) {
  if (c_.size() == 1 || bucket_bytes_ == 0) return loss.backward();
  const size_t n = params_.size();
  GradReadyScope scope(params_, [&](size_t i) { overlap_.ready(n - 1 - i); });
  loss.backward();
}

void DataParallelGrads::finish() {
  if (c_.size() == 1) return;
  if (bucket_bytes_ > 0) return overlap_.finish();
  std::vector<Tensor> grads;  // share the parameters' gradient storage
  for (Tensor p : params_) {
    if (!p.grad().defined()) p.set_grad(Tensor::zeros(p.shape(), p.dtype(), p.device()));
    grads.push_back(p.grad());
  }
  std::vector<Tensor*> ptrs;
  for (Tensor& g : grads) ptrs.push_back(&g);
  packed_.all_reduce(ptrs, std::vector<double>(ptrs.size(), weight_));
}

void check_rank_options(const LoopOptions& opt, int ranks) {
  if (ranks <= 1) return;
  if (opt.batch < ranks)
    throw InputError("--batch: a batch of " + std::to_string(opt.batch) + " cannot be shared by " +
                     std::to_string(ranks) + " ranks");
  if (opt.checkpoint_every > 0 || opt.resume)
    throw InputError("--checkpoint-every/--resume: resumable runs are single-process (this run has " +
                     std::to_string(ranks) + " ranks)");
}

void check_loop_options(int64_t epochs, int64_t batch, double lr, const std::string& schedule) {
  if (epochs < 1) throw InputError("--epochs must be at least 1, got " + std::to_string(epochs));
  if (batch < 1) throw InputError("--batch must be at least 1, got " + std::to_string(batch));
  if (!(lr > 0) || !std::isfinite(lr)) throw InputError("--lr must be a positive number");
  if (schedule != "constant" && schedule != "cosine") throw InputError("--schedule: '" + schedule + "' is not constant or cosine");
}

double scheduled_lr(double lr, const std::string& schedule, int64_t global_step, int64_t total_steps, int64_t warmup_steps) {
  if (warmup_steps > 0 && global_step < warmup_steps) return lr * double(global_step + 1) / double(warmup_steps);
  if (schedule != "cosine") return lr;
  const double span = double(std::max<int64_t>(1, total_steps - warmup_steps));
  return lr * 0.5 * (1.0 + std::cos(M_PI * double(global_step - warmup_steps) / span));
}

void put_train_state(RunState& st, nn::Module& model, const Optimizer& opt, const TrainPosition& p) {
  put_module_state(st, model, "model/");
  opt.save_state(st, "optim/");
  st.put_counter("loop.epoch", p.epoch);
  st.put_counter("loop.step", p.step);
  st.put_counter("loop.global_step", p.global_step);
}

TrainPosition restore_train_state(const RunState& st, nn::Module& model, Optimizer& opt, int64_t epochs,
                                  int64_t steps_per_epoch) {
  restore_module_state(st, model, "model/");
  opt.load_state(st, "optim/");
  TrainPosition p;
  p.epoch = st.counter("loop.epoch");
  p.step = st.counter("loop.step");
  p.global_step = st.counter("loop.global_step");
  if (p.epoch < 1 || p.epoch > epochs || p.step < 0 || p.step > steps_per_epoch ||
      p.global_step != (p.epoch - 1) * steps_per_epoch + p.step)
    throw InputError(st.path() + ": its loop position (epoch " + std::to_string(p.epoch) + ", step " +
                     std::to_string(p.step) + ") does not fit this run of " + std::to_string(epochs) + " epochs of " +
                     std::to_string(steps_per_epoch) + " steps");
  return p;
}

std::vector<EpochSummary> train_model(nn::Module& model, const ImageDataset& ds, const std::vector<int64_t>& subset,
                                      const Normalizer& norm, const TrainOptions& opt,
                                      const std::function<void(const EpochSummary&)>& on_epoch) {
  if (subset.empty()) throw InputError("train: the training subset is empty");
  check_loop_options(opt.epochs, opt.batch, opt.lr, opt.schedule);
  std::unique_ptr<Optimizer> optimizer;
  if (opt.optimizer == "adamw") {
    AdamWOptions o;
    o.lr = opt.lr;
    o.weight_decay = opt.weight_decay;
    optimizer = std::make_unique<AdamW>(model.parameters(), o);
  } else if (opt.optimizer == "sgd") {
    SgdOptions o;
    o.lr = opt.lr;
    o.momentum = opt.momentum;
    o.weight_decay = opt.weight_decay;
    optimizer = std::make_unique<Sgd>(model.parameters(), o);
  } else {
    throw InputError("--optimizer: unknown optimizer '" + opt.optimizer + "' (choose adamw or sgd)");
  }
  BatchOptions bo;
  bo.batch_size = opt.batch;
  bo.shuffle = true;
  bo.seed = opt.seed;
  bo.device = opt.device;
  // A final batch of one image cannot give BatchNorm batch statistics.
  bo.drop_last = int64_t(subset.size()) % opt.batch == 1;
  Batcher batcher(ds, subset, norm, bo);
  Collectives& comm = opt.comm ? *opt.comm : world();
  const int ranks = comm.size();
  TensorReducer reducer(comm);
  DataParallelGrads dp(comm, optimizer->params());
  check_rank_options(opt, ranks);
  if (ranks > 1) {
    char text[256];
    std::snprintf(text, sizeof text,
                  "%s lr=%.17g wd=%.17g m=%.17g clip=%.17g %s epochs=%lld batch=%lld seed=%llu %s bucket=%zu",
                  opt.optimizer.c_str(), opt.lr, opt.weight_decay, opt.momentum, opt.clip, opt.schedule.c_str(),
                  (long long)opt.epochs, (long long)opt.batch, (unsigned long long)opt.seed, opt.device.str().c_str(),
                  overlap_bucket_bytes());
    uint64_t h = hash_tensors(model.parameters(), hash_string(text));
    h = hash_bytes(subset.data(), subset.size() * sizeof(int64_t), h);
    h = hash_bytes(ds.pixels.data(), ds.pixels.size(), h);
    check_same_on_all_ranks(comm, "training configuration", h);
    if (opt.progress && has_batchnorm(model))
      std::fprintf(stderr,
                   "hamu train: %d ranks: BatchNorm normalises each rank's rows with their own statistics, so the "
                   "result is close to, not equal to, the 1-rank run's\n", ranks);
  }
  // --cuda-graph: whole steps captured once and replayed (train/graph_train.h).
  std::unique_ptr<GraphedTrainSteps> graphs;
  std::string graph_not_used;
  if (opt.graph) {
    graph_not_used = GraphedTrainSteps::objection(model, opt, ranks);
    if (graph_not_used.empty())
      graphs = std::make_unique<GraphedTrainSteps>(model, *optimizer, opt.device, opt.clip);
  }
  std::vector<EpochSummary> out;
  model.train(true);
  // Where one step's loss (8 bytes) and predictions (int32 per row) land (pinned on a GPU).
  HostBuffer readback(sizeof(double) + size_t(opt.batch) * sizeof(int32_t), opt.device);
  const int64_t total_steps = opt.epochs * batcher.num_batches();
  int64_t global_step = 0;
  // Where the run starts: epoch 1, step 0, or a state's epoch and step with the epoch's accumulators.
  int64_t first_epoch = 1, first_step = 0;
  double resumed_loss = 0, resumed_correct = 0, resumed_seconds = 0;
  int64_t resumed_seen = 0, resumed_counted = 0, resumed_skipped = 0;
  if (opt.resume) {
    const RunState& st = *opt.resume;
    const TrainPosition p = restore_train_state(st, model, *optimizer, opt.epochs, batcher.num_batches());
    first_epoch = p.epoch;
    first_step = p.step;
    global_step = p.global_step;
    resumed_seen = st.counter("loop.seen");
    resumed_counted = st.counter("loop.counted_batches");
    resumed_skipped = st.counter("loop.skipped");
    const std::vector<double> acc = st.get_doubles("loop.accumulators", 3);
    resumed_loss = acc[0];
    resumed_correct = acc[1];
    resumed_seconds = acc[2];
    out = epoch_rows(st, first_epoch - 1, &EpochSummary::images_per_s);
  }
  for (int64_t epoch = first_epoch; epoch <= opt.epochs; ++epoch) {
    batcher.set_epoch(epoch - 1);
    const bool resumed = opt.resume && epoch == first_epoch;
    EpochSummary es;
    es.epoch = epoch;
    es.skipped_steps = resumed ? resumed_skipped : 0;
    const auto t0 = std::chrono::steady_clock::now();
    const double seconds_before = resumed ? resumed_seconds : 0;  // this epoch's training time before the resume
    const int64_t steps = batcher.num_batches();
    std::unique_ptr<Progress> bar;
    if (opt.progress)
      bar = std::make_unique<Progress>(std::min<int64_t>(steps * opt.batch, batcher.size()), "epoch " + std::to_string(epoch) + "/" + std::to_string(opt.epochs),
                                       "img/s");
    double loss_sum = resumed ? resumed_loss : 0, correct = resumed ? resumed_correct : 0;
    int64_t seen = resumed ? resumed_seen : 0, counted_batches = resumed ? resumed_counted : 0;
    // One step; returns early (the step skipped) on a non-finite loss or gradient.
    auto train_step = [&](int64_t step) {
      Batch b = batcher.batch(step);
      const int64_t global_rows = b.size();
      if (ranks > 1) {
        const Shard share = shard_of(global_rows, comm.rank(), ranks);
        b = batch_rows(b, share.start, share.count);
      }
      optimizer->lr = scheduled_lr(opt.lr, opt.schedule, global_step, total_steps);
      ++global_step;
      optimizer->zero_grad();
      // Each rank's mean weighted by its rows: the sum is the 1-rank batch mean (gradient and loss).
      const double w = double(b.size()) / double(global_rows);
      dp.begin(w);
      // A rank whose share of a short last batch is empty adds nothing but still takes part.
      Tensor logits, loss;
      double lv = 0;
      int64_t batch_correct = 0;
      // Predictions read back against the host data set's labels (no copy of the labels back).
      auto correct_of = [&](const Batch& batch, const int32_t* predicted) {
        int64_t n = 0;
        for (int64_t i = 0; i < batch.size(); ++i) n += predicted[i] == ds.labels[size_t(batch.indices[size_t(i)])];
        return n;
      };
      std::optional<GraphedTrainSteps::Result> replayed = graphs ? graphs->step(b) : std::nullopt;
      if (replayed) {  // the replay zeroed, clipped, stepped (unless the loss or the norm was not finite), read back
        lv = replayed->loss;
        if (!replayed->taken) {
          ++es.skipped_steps;
          return;
        }
        batch_correct = correct_of(b, replayed->predicted);
      } else if (ranks == 1) {
        // One wait per step: the backward is queued before anything is read, then the loss and the
        // predictions come back together (the labels are the host data set's). A non-finite loss still
        // skips the step: its gradients are never applied, and the next step zeroes them.
        logits = model.forward(b.images);
        loss = cross_entropy(logits, b.labels);
        Tensor pred;
        {
          NoGradGuard ng;
          pred = argmax(logits.detach(), 1);
        }
        loss.backward();
        copy_to_host_async(readback.data(), loss);
        copy_to_host_async(static_cast<char*>(readback.data()) + sizeof(double), pred);
        device_synchronize(opt.device);
        lv = loss.dtype() == DType::f64 ? *static_cast<const double*>(readback.data())
                                        : double(*static_cast<const float*>(readback.data()));
        if (!std::isfinite(lv)) {
          ++es.skipped_steps;
          return;
        }
        const auto* pv = reinterpret_cast<const int32_t*>(static_cast<const char*>(readback.data()) + sizeof(double));
        batch_correct = correct_of(b, pv);
      } else {
        if (b.size() > 0) {
          logits = model.forward(b.images);
          loss = cross_entropy(logits, b.labels);
          lv = loss.item();
        }
        if (b.size() > 0 && std::isfinite(lv)) dp.backward(loss);
        dp.finish();
        if (b.size() > 0) {
          NoGradGuard ng;
          std::vector<int32_t> pred = argmax(logits.detach(), 1).to(Device{}).to_vector<int32_t>();
          std::vector<int32_t> y = b.labels.to(Device{}).to_vector<int32_t>();
          for (size_t i = 0; i < pred.size(); ++i) batch_correct += pred[i] == y[i];
        }
      }
      if (ranks > 1) {
        std::vector<double> sums = {std::isfinite(lv) ? lv * w : lv, double(batch_correct)};
        all_reduce_host(comm, sums);
        lv = sums[0];
        batch_correct = int64_t(sums[1]);
        if (!std::isfinite(lv)) {
          ++es.skipped_steps;
          return;
        }
      }
      if (!replayed) {
        const double gnorm = opt.clip > 0 ? clip_grad_norm(optimizer->params(), opt.clip) : 0.0;
        if (!std::isfinite(gnorm)) {
          ++es.skipped_steps;
          return;
        }
        optimizer->step();
      }
      correct += double(batch_correct);
      loss_sum += lv;
      ++counted_batches;
      seen += global_rows;
      if (bar) {
        char status[96];
        std::snprintf(status, sizeof status, "loss %.4f acc %.2f%%", loss_sum / double(counted_batches),
                      100.0 * correct / double(std::max<int64_t>(seen, 1)));
        bar->update(seen, status);
      }
    };
    // The state after step `step` of this epoch (parameters, optimizer, position, accumulators, past epochs).
    auto write_state = [&](int64_t step) {
      RunState st;
      st.kind = "train";
      put_train_state(st, model, *optimizer, {epoch, step, global_step});
      st.put_counter("loop.seen", seen);
      st.put_counter("loop.counted_batches", counted_batches);
      st.put_counter("loop.skipped", es.skipped_steps);
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      st.put_doubles("loop.accumulators", {loss_sum, correct, seconds_before + elapsed});
      put_epoch_rows(st, out, &EpochSummary::images_per_s);
      opt.write_state(st);
    };
    for (int64_t step = resumed ? first_step : 0; step < steps; ++step) {
      throw_if_interrupted();  // Ctrl-C: stop between batches (also when no bar is drawn)
      train_step(step);
      if (checkpoint_due(opt.checkpoint_every, bool(opt.write_state), global_step, total_steps)) write_state(step + 1);
    }
    es.seconds = seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    es.train_loss = counted_batches ? loss_sum / double(counted_batches) : NAN;
    es.train_acc = seen ? correct / double(seen) : 0;
    es.images_per_s = es.seconds > 0 ? double(seen) / es.seconds : 0;
    if (bar) {
      char status[96];
      std::snprintf(status, sizeof status, "loss %.4f acc %.2f%%", es.train_loss, 100 * es.train_acc);
      bar->finish(status);
    }
    if (ranks > 1) average_buffers(model, reducer, ranks);
    out.push_back(es);
    if (on_epoch) on_epoch(es);
  }
  if (opt.graph_report) {
    opt.graph_report->not_used = graphs && !graphs->disabled().empty() ? graphs->disabled() : graph_not_used;
    opt.graph_report->replays = graphs ? graphs->replays() : 0;
    opt.graph_report->captures = graphs ? graphs->captures() : 0;
  }
  return out;
}

}  // namespace hamu
