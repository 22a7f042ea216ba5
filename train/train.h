// train/train.h: the plain supervised training loop, used for the original model (retain ∪ forget) and
// the retrained reference (retain only) that unlearning is judged against. A layer of its own between
// {models, loaders} and unlearn/: it needs the data sets, and unlearning does not need it.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/collectives.h"
#include "engine/overlap.h"
#include "engine/nn.h"
#include "engine/run_state.h"
#include "loaders/data.h"

namespace hamu {

class Optimizer;

// What the image and the text training loops (train/text_train.h) both take.
struct LoopOptions {
  double lr = 1e-3, weight_decay = 0.0;
  double clip = 0.0;                 // total-norm gradient clipping (0 = off)
  std::string schedule = "cosine";   // constant | cosine (lr decays to 0 over all steps, after any warmup)
  int64_t epochs = 3, batch = 128;
  uint64_t seed = 0;                 // the per-epoch shuffles
  Device device;
  bool progress = true;
  // Resumable runs (engine/run_state.h; one process only): after every checkpoint_every-th step of the run
  // (global count; 0 = never) the loop's state goes to write_state, which adds the caller's records and
  // writes the file. A non-null resume continues from such a state: parameters, buffers, optimizer moments,
  // epoch and batch, the epoch's accumulators and the finished epochs' summaries (on_epoch runs only for the
  // epochs that end after it). On the CPU the result is bitwise that of the uninterrupted run.
  int64_t checkpoint_every = 0;
  std::function<void(RunState&)> write_state;
  const RunState* resume = nullptr;
  // The ranks (null: world(), a single process unless launched by mpirun). With N ranks each takes rows
  // [floor(B*k/N), floor(B*(k+1)/N)) of every batch and the gradients are summed (weighted by the rows,
  // or by the answer tokens for text) before the optimizer step, so every rank takes the 1-rank run's
  // step (DataParallelGrads below).
  Collectives* comm = nullptr;
};

// --cuda-graph's outcome (train/graph_train.h): steps replayed, captures, and why graphing was not used or
// given up (empty when every full batch after the warm-up was replayed).
struct TrainGraphReport {
  int64_t replays = 0, captures = 0;
  std::string not_used;
};

struct TrainOptions : LoopOptions {
  std::string optimizer = "adamw";  // adamw | sgd
  double momentum = 0.9;
  bool graph = false;               // --cuda-graph: capture the step once, replay it (train/graph_train.h)
  TrainGraphReport* graph_report = nullptr;  // filled when set
  // Many ranks (LoopOptions::comm): BatchNorm in training mode normalises each rank's rows with their own
  // statistics (as DDP without SyncBatchNorm) and the running statistics are averaged over the ranks after
  // every epoch: such models match the 1-rank run only approximately; BatchNorm-free models (mlp) match it
  // to float rounding.
};

// The gradient sum of one data-parallel training step (README "Many processes"): each rank's gradients
// of its mean loss, weighted by its share of the global batch, summed over the ranks, overlapped with the
// backward (engine/overlap.h: the gradients get zeroed buffers before it, cut into buckets last parameter
// first, the order the backward finishes them) or, with HAMU_OVERLAP=0, one packed all-reduce after it;
// both bitwise the same. begin() before the forward, backward(loss) (or no backward: a skipped step still
// takes part), finish() after; then every rank's .grad holds the sum. One rank: a plain backward.
class DataParallelGrads {
 public:
  DataParallelGrads(Collectives& c, std::vector<Tensor> params);
  void begin(double weight);
  void backward(const Tensor& loss);
  void finish();

 private:
  Collectives& c_;
  std::vector<Tensor> params_, bufs_;
  size_t bucket_bytes_;
  double weight_ = 1;
  TensorReducer packed_;
  OverlappedReducer overlap_;
};

struct EpochSummary {
  int64_t epoch = 0;      // 1-based
  double train_loss = 0;  // mean over the epoch's batches
  double train_acc = 0;
  double seconds = 0;     // training time of this epoch (evaluation excluded)
  double images_per_s = 0;
  int64_t skipped_steps = 0;  // non-finite loss or gradient: step skipped
};

// What the image and text training loops share in their resumable states (engine/run_state.h).
struct TrainPosition {
  int64_t epoch = 1, step = 0;  // the next step: `step` (0-based) of `epoch` (1-based)
  int64_t global_step = 0;      // steps taken before it
};
// The loop options both loops refuse alike (InputError naming the flag): epochs and batch at least 1, a positive
// finite learning rate, a known schedule.
void check_loop_options(int64_t epochs, int64_t batch, double lr, const std::string& schedule);
// What both loops refuse on several ranks (InputError naming the flag): a batch smaller than the ranks that
// share it, and resumable runs (--checkpoint-every/--resume are single-process). A no-op for one rank.
void check_rank_options(const LoopOptions& opt, int ranks);
// The learning rate of step `global_step` (0-based) of `total_steps`: a linear warmup over the first
// `warmup_steps`, then `lr` (constant) or a cosine decay to 0 over the remaining steps.
double scheduled_lr(double lr, const std::string& schedule, int64_t global_step, int64_t total_steps, int64_t warmup_steps = 0);
// True when a resumable run writes its state after `global_step` steps: every `every`-th step (0 = never), not
// after the last one (the run's result follows at once), and only with a writer.
inline bool checkpoint_due(int64_t every, bool has_writer, int64_t global_step, int64_t total_steps) {
  return every > 0 && has_writer && global_step % every == 0 && global_step < total_steps;
}

// The model (trainable parameters, buffers, counters), the optimizer and the position.
void put_train_state(RunState& st, nn::Module& model, const Optimizer& opt, const TrainPosition& p);
// Restores what put_train_state wrote; InputError naming the state when the position does not fit a run of
// `epochs` epochs of `steps_per_epoch` steps.
TrainPosition restore_train_state(const RunState& st, nn::Module& model, Optimizer& opt, int64_t epochs,
                                  int64_t steps_per_epoch);
// The finished epochs' summaries as "loop.epochs" rows (epoch, loss, acc, seconds, rate, skipped steps) and
// back; `rate` names the summary's throughput field.
template <class Summary> void put_epoch_rows(RunState& st, const std::vector<Summary>& done, double Summary::*rate) {
  std::vector<double> rows;
  for (const Summary& e : done)
    rows.insert(rows.end(), {double(e.epoch), e.train_loss, e.train_acc, e.seconds, e.*rate, double(e.skipped_steps)});
  st.put_doubles("loop.epochs", rows);
}
template <class Summary> std::vector<Summary> epoch_rows(const RunState& st, int64_t count, double Summary::*rate) {
  const std::vector<double> rows = st.get_doubles("loop.epochs", 6 * count);
  std::vector<Summary> out(static_cast<size_t>(count));
  for (size_t i = 0; i < out.size(); ++i) {
    const double* r = rows.data() + 6 * i;
    out[i].epoch = int64_t(r[0]);
    out[i].train_loss = r[1];
    out[i].train_acc = r[2];
    out[i].seconds = r[3];
    out[i].*rate = r[4];
    out[i].skipped_steps = int64_t(r[5]);
  }
  return out;
}

// Trains `model` on `subset` of `ds` (seeded shuffling per epoch). on_epoch runs after each epoch
// (evaluation, logging); its time is not counted in the epoch's seconds.
std::vector<EpochSummary> train_model(nn::Module& model, const ImageDataset& ds, const std::vector<int64_t>& subset,
                                      const Normalizer& norm, const TrainOptions& opt,
                                      const std::function<void(const EpochSummary&)>& on_epoch = {});

}  // namespace hamu
