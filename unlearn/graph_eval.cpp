// unlearn/graph_eval.cpp: capture, staging and replay of evaluation batches (see the header).
#include "unlearn/graph_eval.h"

#include <cstring>

#include "engine/ops.h"

namespace hamu {

GraphedEvalBatch::GraphedEvalBatch(EvalGraphs& owner, nn::Module& model, const ImageDataset& ds, int64_t batch,
                                   bool keep_probs, Device device)
    : owner_(owner),
      model_(model),
      weights_(weight_places(model)),
      batch_(batch),
      c_(ds.c),
      h_(ds.h),
      w_(ds.w),
      keep_probs_(keep_probs),
      device_(device),
      graph_(device) {}

GraphedEvalBatch::~GraphedEvalBatch() = default;

std::vector<std::pair<const void*, int64_t>> GraphedEvalBatch::weight_places(const nn::Module& model) {
  std::vector<std::pair<const void*, int64_t>> out;
  for (const auto& [name, t] : model.named_weights()) out.push_back({t.raw(), t.numel()});
  for (const auto& [name, t] : model.named_buffers()) out.push_back({t.raw(), t.numel()});
  return out;
}

bool GraphedEvalBatch::serves(const nn::Module& model, const ImageDataset& ds, int64_t batch, bool keep_probs,
                              Device device) const {
  return &model == &model_ && ds.c == c_ && ds.h == h_ && ds.w == w_ && batch == batch_ && keep_probs == keep_probs_ &&
         device == device_ && weight_places(model) == weights_;
}

void GraphedEvalBatch::warmed_up(int64_t classes) {
  if (classes < 1) throw Error("graphed evaluation: the warm-up batch gave no classes");
  classes_ = classes;
  x_ = Tensor::empty({batch_, c_, h_, w_}, DType::f32, device_);
  y_ = Tensor::empty({batch_}, DType::i32, device_);
  const size_t image_bytes = size_t(batch_ * c_ * h_ * w_) * sizeof(float);
  for (auto& s : slots_) s = std::make_unique<HostBuffer>(image_bytes + size_t(batch_) * sizeof(int32_t), device_);
  out_ = std::make_unique<HostBuffer>(size_t(batch_) * (2 * sizeof(float) + sizeof(int32_t)) +
                                          (keep_probs_ ? size_t(batch_ * classes) * sizeof(float) : 0),
                                      device_);
}

void GraphedEvalBatch::queue_batch() {
  // The ordinary batch's ops (unlearn/metrics.cpp), on the fixed buffers.
  Tensor logits = model_.forward(x_);
  Tensor lp = log_softmax(logits);
  Tensor losses = cross_entropy_per_sample(logits, y_);
  Tensor ent = neg(sum(mul(exp(lp), lp), 1));
  Tensor pred = argmax(logits, 1);
  if (losses.dtype() != DType::f32 || ent.dtype() != DType::f32)
    throw Error("evaluation: float32 logits expected, got " + std::string(dtype_name(losses.dtype())));
  if (logits.dim() != 2 || logits.shape()[1] != classes_)
    throw Error("graphed evaluation: the logits are " + shape_str(logits.shape()) + ", the warm-up's had " +
                std::to_string(classes_) + " classes");
  auto* out = static_cast<char*>(out_->data());
  copy_to_host_async(out, losses);
  copy_to_host_async(out + size_t(batch_) * sizeof(float), ent);
  copy_to_host_async(out + size_t(batch_) * 2 * sizeof(float), pred);
  if (keep_probs_) copy_to_host_async(out + size_t(batch_) * (2 * sizeof(float) + sizeof(int32_t)), exp(lp));
}

void GraphedEvalBatch::stage(const ImageDataset& ds, const int64_t* idx, const Normalizer& norm) {
  for (int64_t i = 0; i < batch_; ++i)
    if (idx[i] < 0 || idx[i] >= ds.n)
      throw InputError("evaluation: index " + std::to_string(idx[i]) + " is outside the data set (" +
                       std::to_string(ds.n) + " images)");
  // As gather_batch: the same normalisation into the slot, the labels as int32 after the images.
  auto* images = static_cast<float*>(slots_[slot_]->data());
  normalize_images(ds, idx, batch_, norm, images);
  auto* labels = reinterpret_cast<int32_t*>(images + batch_ * c_ * h_ * w_);
  for (int64_t i = 0; i < batch_; ++i) labels[i] = ds.labels[size_t(idx[i])];
  staged_for_ = idx;
}

std::optional<GraphedEvalBatch::Results> GraphedEvalBatch::run(const ImageDataset& ds, const int64_t* idx,
                                                               const int64_t* next, const Normalizer& norm) {
  if (!owner_.not_used_.empty() || !warm()) return std::nullopt;
  if (!graph_.captured()) {
    std::string why;
    if (!graph_.capture([this] { queue_batch(); }, &why)) {
      owner_.give_up("the capture of an evaluation batch failed: " + why);
      return std::nullopt;
    }
    ++owner_.captures_;
  }
  if (staged_for_ != idx) stage(ds, idx, norm);
  // Stream-ordered copies into the fixed buffers: they run after the previous replay finished reading them.
  const auto* images = static_cast<const float*>(slots_[slot_]->data());
  copy_from_host_async(x_, images);
  copy_from_host_async(y_, images + batch_ * c_ * h_ * w_);
  if (!replayed_ && graph_.replays_host_code()) {
    // The CPU's stand-in for the capture: the first run under the guard shows whether the batch is capturable.
    try {
      graph_.replay();
    } catch (const std::exception& e) {
      owner_.give_up(std::string("the capture of an evaluation batch failed: capture aborted: ") + e.what());
      graph_.reset();
      staged_for_ = nullptr;
      return std::nullopt;
    }
  } else {
    graph_.replay();
  }
  replayed_ = true;
  ++owner_.replays_;
  // The other slot's copy finished with the previous batch's wait: the host fills it while the device works.
  slot_ ^= 1;
  staged_for_ = nullptr;
  if (next) stage(ds, next, norm);
  device_synchronize(device_);
  const char* out = static_cast<const char*>(out_->data());
  Results r;
  r.losses = reinterpret_cast<const float*>(out);
  r.entropies = r.losses + batch_;
  r.predicted = reinterpret_cast<const int32_t*>(r.entropies + batch_);
  r.probs = keep_probs_ ? reinterpret_cast<const float*>(r.predicted + batch_) : nullptr;
  r.classes = keep_probs_ ? classes_ : 0;
  return r;
}

GraphedEvalBatch* EvalGraphs::entry(nn::Module& model, const ImageDataset& ds, int64_t batch, bool keep_probs,
                                    Device device) {
  if (!not_used_.empty()) {
    entries_.clear();  // here, not in give_up: give_up is called from inside an entry's run
    return nullptr;
  }
  for (auto& e : entries_)
    if (e->serves(model, ds, batch, keep_probs, device)) return e.get();
  // A stale entry of the same model (weights moved) is dropped with the oldest.
  for (auto it = entries_.begin(); it != entries_.end();)
    it = (&(*it)->model_ == &model && (*it)->batch_ == batch && (*it)->keep_probs_ == keep_probs) ? entries_.erase(it)
                                                                                               : it + 1;
  if (entries_.size() >= kMaxEntries) entries_.erase(entries_.begin());
  entries_.push_back(std::make_unique<GraphedEvalBatch>(*this, model, ds, batch, keep_probs, device));
  return entries_.back().get();
}

void EvalGraphs::give_up(const std::string& why) {
  if (not_used_.empty()) not_used_ = why;
}

std::string EvalGraphs::summary() const {
  std::string s = std::to_string(replays_) + " batches replayed from " + std::to_string(captures_) + " capture(s)";
  if (!not_used_.empty()) s += "; not used: " + not_used_;
  return s;
}

}  // namespace hamu
