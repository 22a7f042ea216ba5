// unlearn/graph_eval.h: evaluation batches replayed as captured CUDA graphs (`hamu eval --cuda-graph`,
// and the evaluations of `hamu train/unlearn --cuda-graph`: issue #12 item 4's "the same for ...
// evaluation batches").
//
// For the evaluation's full batch shape one batch is captured: the forward on fixed device buffers,
// log_softmax, the per-sample cross-entropy, the entropy, the argmax (and the probabilities when kept), and
// the copies of all of them into pinned host memory. Each full batch is normalised on the host into one of
// two pinned staging slots, copied into the fixed buffers on the device stream (stream order keeps it behind
// the previous replay, which still reads them) and replayed; while the device runs batch k the host
// normalises batch k+1 into the other slot, and waits only right before reading batch k's results. The first
// full batch of a shape runs the ordinary way (the warm-up: cuDNN's algorithm search, plans and scratch), and
// so does a split's last, partial batch. The results equal the ordinary evaluation's bit for bit: the same
// kernels on the same data, summed on the host in the same order (unlearn/metrics.cpp does both).
//
// Nothing is refused up front (evaluation runs in eval mode: no dropout, no BatchNorm update); a failed capture
// gives graphing up for every later batch, with the reason (EvalGraphs::not_used()), and the batches run the
// ordinary way. On the CPU the "graph" is the batch's closure run again under engine/graph.h's HostSyncGuard
// (a first replay that throws counts as the failed capture): what the CPU tests use to prove the batch is
// capturable and equal to the ordinary one. Text evaluation (unlearn/text_metrics.h) is not graphed.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/nn.h"
#include "loaders/batch.h"

namespace hamu {

class EvalGraphs;

// One captured evaluation batch: one model, one batch shape, with or without the probabilities.
class GraphedEvalBatch {
 public:
  struct Results {
    const float* losses;     // batch values each (valid until the next launch)
    const float* entropies;
    const int32_t* predicted;
    const float* probs;      // batch x classes, or null when not kept
    int64_t classes;         // 0 when the probabilities are not kept
  };

  GraphedEvalBatch(EvalGraphs& owner, nn::Module& model, const ImageDataset& ds, int64_t batch, bool keep_probs,
                   Device device);
  ~GraphedEvalBatch();
  GraphedEvalBatch(const GraphedEvalBatch&) = delete;
  GraphedEvalBatch& operator=(const GraphedEvalBatch&) = delete;

  // Whether this entry serves (model, data shape, batch, keep_probs, device), with the model's weights and
  // buffers still where they were captured (a reloaded or moved model gets a new capture).
  bool serves(const nn::Module& model, const ImageDataset& ds, int64_t batch, bool keep_probs, Device device) const;
  // Whether the ordinary warm-up batch ran; warmed_up records it with the classes that batch's logits had.
  bool warm() const { return classes_ > 0; }
  void warmed_up(int64_t classes);
  // The start of a split: nothing staged is carried over.
  void begin_split() { staged_for_ = nullptr; }
  // One full batch `idx` (batch indices), in eval mode and without gradients (the caller's scopes): stages it
  // unless it is staged already, copies it in, replays, stages `next` (a full batch too, or null) while the
  // replay runs, waits. Nothing when graphing was given up (the caller runs this batch the ordinary way).
  std::optional<Results> run(const ImageDataset& ds, const int64_t* idx, const int64_t* next, const Normalizer& norm);

 private:
  friend class EvalGraphs;
  void queue_batch();  // what the graph holds
  void stage(const ImageDataset& ds, const int64_t* idx, const Normalizer& norm);
  static std::vector<std::pair<const void*, int64_t>> weight_places(const nn::Module& model);

  EvalGraphs& owner_;
  nn::Module& model_;
  std::vector<std::pair<const void*, int64_t>> weights_;  // (address, numel) of every weight and buffer
  int64_t batch_, c_, h_, w_;
  bool keep_probs_;
  Device device_;
  int64_t classes_ = 0;
  Tensor x_, y_;                            // the graph's inputs: every batch is copied here
  std::unique_ptr<HostBuffer> slots_[2];    // staging: [images][labels] of a batch, normalised on the host
  int slot_ = 0;                            // the slot the next launch copies from
  const int64_t* staged_for_ = nullptr;     // the batch staged in slot_ (null: none)
  std::unique_ptr<HostBuffer> out_;         // [losses][entropies][predictions][probs], written by the replay
  StepGraph graph_;                         // after the buffers: destroyed first (it waits for a replay)
  bool replayed_ = false;
};

// The graphed batches of a run (a command's evaluations share them: each model and batch shape is captured
// once), their counts, and why graphing was given up. The models must outlive it.
class EvalGraphs {
 public:
  // The entry for this evaluation (created when new; the oldest of more than kMaxEntries goes); null once
  // graphing was given up.
  GraphedEvalBatch* entry(nn::Module& model, const ImageDataset& ds, int64_t batch, bool keep_probs, Device device);
  void give_up(const std::string& why);
  const std::string& not_used() const { return not_used_; }
  int64_t captures() const { return captures_; }
  int64_t replays() const { return replays_; }
  // "N batches replayed from M capture(s)[; not used: WHY]" (the CLI's stderr line).
  std::string summary() const;

 private:
  friend class GraphedEvalBatch;
  // hamu unlearn's evaluations use up to 6 shapes of one model (each split's min(batch, n), the stop probe's,
  // with and without probabilities); each entry holds its graph's activations until it goes.
  static constexpr size_t kMaxEntries = 8;
  std::vector<std::unique_ptr<GraphedEvalBatch>> entries_;
  std::string not_used_;
  int64_t captures_ = 0, replays_ = 0;
};

}  // namespace hamu
