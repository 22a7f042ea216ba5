// train/train.cpp: the supervised training loop (forward, cross-entropy, backward, optimizer step).
#include "train/train.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/progress.h"

namespace hamu {

std::vector<EpochSummary> train_model(nn::Module& model, const ImageDataset& ds, const std::vector<int64_t>& subset,
                                      const Normalizer& norm, const TrainOptions& opt,
                                      const std::function<void(const EpochSummary&)>& on_epoch) {
  if (subset.empty()) throw InputError("train: the training subset is empty");
  if (opt.epochs < 1) throw InputError("--epochs must be at least 1, got " + std::to_string(opt.epochs));
  if (opt.batch < 1) throw InputError("--batch must be at least 1, got " + std::to_string(opt.batch));
  if (!(opt.lr > 0) || !std::isfinite(opt.lr)) throw InputError("--lr must be a positive number");
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
  if (opt.schedule != "constant" && opt.schedule != "cosine")
    throw InputError("--schedule: '" + opt.schedule + "' is not constant or cosine");
  BatchOptions bo;
  bo.batch_size = opt.batch;
  bo.shuffle = true;
  bo.seed = opt.seed;
  bo.device = opt.device;
  // A final batch of one image cannot give BatchNorm batch statistics.
  bo.drop_last = int64_t(subset.size()) % opt.batch == 1;
  Batcher batcher(ds, subset, norm, bo);
  std::vector<EpochSummary> out;
  model.train(true);
  const int64_t total_steps = opt.epochs * batcher.num_batches();
  int64_t global_step = 0;
  for (int64_t epoch = 1; epoch <= opt.epochs; ++epoch) {
    batcher.set_epoch(epoch - 1);
    EpochSummary es;
    es.epoch = epoch;
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t steps = batcher.num_batches();
    std::unique_ptr<Progress> bar;
    if (opt.progress)
      bar = std::make_unique<Progress>(steps * opt.batch, "epoch " + std::to_string(epoch) + "/" + std::to_string(opt.epochs),
                                       "img/s");
    double loss_sum = 0, correct = 0;
    int64_t seen = 0, counted_batches = 0;
    for (int64_t step = 0; step < steps; ++step) {
      Batch b = batcher.batch(step);
      if (opt.schedule == "cosine")
        optimizer->lr = opt.lr * 0.5 * (1.0 + std::cos(M_PI * double(global_step) / double(total_steps)));
      ++global_step;
      optimizer->zero_grad();
      Tensor logits = model.forward(b.images);
      Tensor loss = cross_entropy(logits, b.labels);
      const double lv = loss.item();
      if (!std::isfinite(lv)) {
        ++es.skipped_steps;
        continue;
      }
      loss.backward();
      const double gnorm = opt.clip > 0 ? clip_grad_norm(optimizer->params(), opt.clip) : 0.0;
      if (!std::isfinite(gnorm)) {
        ++es.skipped_steps;
        continue;
      }
      optimizer->step();
      {
        NoGradGuard ng;
        std::vector<int32_t> pred = argmax(logits.detach(), 1).to(Device{}).to_vector<int32_t>();
        std::vector<int32_t> y = b.labels.to(Device{}).to_vector<int32_t>();
        for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == y[i];
      }
      loss_sum += lv;
      ++counted_batches;
      seen += b.size();
      if (bar) {
        char status[96];
        std::snprintf(status, sizeof status, "loss %.4f acc %.2f%%", loss_sum / double(counted_batches),
                      100.0 * correct / double(std::max<int64_t>(seen, 1)));
        bar->update(seen, status);
      }
    }
    es.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    es.train_loss = counted_batches ? loss_sum / double(counted_batches) : NAN;
    es.train_acc = seen ? correct / double(seen) : 0;
    es.images_per_s = es.seconds > 0 ? double(seen) / es.seconds : 0;
    if (bar) {
      char status[96];
      std::snprintf(status, sizeof status, "loss %.4f acc %.2f%%", es.train_loss, 100 * es.train_acc);
      bar->finish(status);
    }
    out.push_back(es);
    if (on_epoch) on_epoch(es);
  }
  return out;
}

}  // namespace hamu
