// train/graph_train.cpp: capture and replay of whole training steps (see the header).
#include "train/graph_train.h"

#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/kernels.h"

namespace hamu {
namespace {

void collect_norms(nn::Module& m, std::vector<nn::BatchNorm2d*>& out) {
  if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(&m)) out.push_back(bn);
  for (const auto& child : m.children()) collect_norms(*child.second, out);
}

}  // namespace

std::string GraphedTrainSteps::objection(const nn::Module& model, const TrainOptions& opt, int ranks) {
  if (ranks > 1) return "a run of " + std::to_string(ranks) + " processes exchanges gradients inside the step";
  if (std::string d = nn::first_active_dropout(model); !d.empty()) return d + ": a replay would repeat the captured mask";
  return "";
}

GraphedTrainSteps::GraphedTrainSteps(nn::Module& model, Optimizer& optimizer, Device device, double clip)
    : model_(model), optimizer_(optimizer), device_(device), clip_(clip), graph_(device) {
  collect_norms(model, norms_);
}

GraphedTrainSteps::~GraphedTrainSteps() = default;

void GraphedTrainSteps::queue_step() {
  optimizer_.zero_grad();
  copy_from_host_async(scalars_, host_->data());
  Tensor logits = model_.forward(x_);
  Tensor loss = cross_entropy(logits, y_);
  Tensor pred;
  {
    NoGradGuard ng;
    pred = argmax(logits.detach(), 1);
    // The skip flag: 1 when the loss is NaN or Inf (the ordinary step skips such a batch on the host; the
    // clipping below adds a non-finite gradient norm).
    dispatch("nonfinite_any", loss, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::nonfinite_any(ctx, 1, loss.data<T>(), skip_.data<T>());
    });
  }
  loss.backward();
  if (clip_ > 0) clip_grad_norm_dev(optimizer_.params(), clip_, &skip_);
  optimizer_.step_from(scalars_, skip_);
  auto* host = static_cast<char*>(host_->data());
  copy_to_host_async(host + skip_offset_, skip_);
  copy_to_host_async(host + loss_offset_, loss);
  copy_to_host_async(host + pred_offset_, pred);
  loss_dtype_ = loss.dtype();
}

std::optional<GraphedTrainSteps::Result> GraphedTrainSteps::step(const Batch& b) {
  if (!disabled_.empty()) return std::nullopt;
  const bool same_shape = warm_ && b.images.shape() == x_.shape() && b.labels.shape() == y_.shape() &&
                          b.images.dtype() == x_.dtype() && b.images.device() == x_.device();
  // The first batch, or (before anything was captured) a larger one: learn its shape; the caller's ordinary
  // step is the warm-up. (A run resumed at an epoch's partial last batch then still captures the full batches
  // after it; a smaller batch never displaces the full shape.)
  if (!warm_ || (!same_shape && !graph_.captured() && b.size() > x_.shape()[0])) {
    warm_ = true;
    x_ = Tensor::empty(b.images.shape(), b.images.dtype(), b.images.device());
    y_ = Tensor::empty(b.labels.shape(), b.labels.dtype(), b.labels.device());
    const DType dt = optimizer_.params().empty() ? DType::f32 : optimizer_.params().front().dtype();
    scalars_ = Tensor::zeros({optimizer_.graph_scalars()}, dt, device_);
    skip_ = Tensor::zeros({1}, dt, device_);
    skip_offset_ = size_t(optimizer_.graph_scalars()) * sizeof(double);
    loss_offset_ = skip_offset_ + sizeof(double);
    pred_offset_ = loss_offset_ + sizeof(double);
    host_ = std::make_unique<HostBuffer>(pred_offset_ + size_t(b.size()) * sizeof(int32_t), device_);
    return std::nullopt;
  }
  if (!same_shape) return std::nullopt;  // another shape (an epoch's last, partial batch): the ordinary way
  if (scalars_.dtype() != DType::f32 && scalars_.dtype() != DType::f64) {
    disabled_ = std::string("parameters of dtype ") + dtype_name(scalars_.dtype());
    return std::nullopt;
  }
  if (!graph_.captured()) {
    // On a GPU the capture runs the step's host code once without executing it: what that moved on the
    // host (BatchNorm's counters) is measured, undone, and applied after every replay instead.
    std::vector<int64_t> before;
    for (nn::BatchNorm2d* bn : norms_) before.push_back(bn->num_batches_tracked);
    optimizer_.prepare_graph();
    std::string why;
    const bool ok = graph_.capture([this] { queue_step(); }, &why);
    norm_delta_.assign(norms_.size(), 0);
    for (size_t i = 0; i < norms_.size(); ++i) {
      norm_delta_[i] = norms_[i]->num_batches_tracked - before[i];
      norms_[i]->num_batches_tracked = before[i];
    }
    if (!ok) {
      disabled_ = "the capture of a step failed: " + why;
      return std::nullopt;
    }
    ++captures_;
  }
  copy_into(x_, b.images);
  copy_into(y_, b.labels);
  optimizer_.write_next_scalars(host_->data(), scalars_.dtype());
  graph_.replay();
  device_synchronize(device_);
  ++replays_;
  if (!graph_.replays_host_code())
    for (size_t i = 0; i < norms_.size(); ++i) norms_[i]->num_batches_tracked += norm_delta_[i];
  const char* host = static_cast<const char*>(host_->data());
  Result r;
  r.loss = read_host_scalar(host + loss_offset_, loss_dtype_);
  r.taken = read_host_scalar(host + skip_offset_, skip_.dtype()) == 0;
  r.predicted = reinterpret_cast<const int32_t*>(host + pred_offset_);
  if (r.taken) optimizer_.count_step();
  return r;
}

}  // namespace hamu
