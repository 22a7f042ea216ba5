// unlearn/graph_step.cpp: capture and replay of whole unlearning steps (see the header).
#include "unlearn/graph_step.h"

#include <cmath>
#include <cstring>

#include "engine/nn.h"

namespace hamu {
namespace {

// The host buffer's layout: the report, then the two losses in their dtype (one 8-byte slot each).
constexpr size_t kLossOffset = (sizeof(HamuReport) + 7) / 8 * 8;
constexpr size_t kHostBytes = kLossOffset + 16;

Batch fixed_like(const Batch& b) {
  Batch out;
  out.images = Tensor::empty(b.images.shape(), b.images.dtype(), b.images.device());
  out.labels = Tensor::empty(b.labels.shape(), b.labels.dtype(), b.labels.device());
  out.indices = b.indices;
  return out;
}

}  // namespace

std::string GraphedSteps::objection(const nn::Module& model, const UnlearnOptions& opt, const UnlearnTask& task,
                                    int ranks) {
  const Method& method = *opt.method;
  if (!method.is_hamu())
    return "method " + method.name() +
           " takes its coefficients on the host from the block statistics (a wait inside the step); only hamu-q "
           "and hamu-u solve on the device";
  if (opt.optimizer != OptimizerKind::sgd) return "--optimizer adamw feeds the step to AdamW on the host";
  if (ranks > 1) return "a run of " + std::to_string(ranks) + " processes exchanges gradients inside the step";
  if (!task.fixed_shapes())
    return "this task's batches change shape from step to step or count their scored tokens on the host (text)";
  if (std::string d = nn::first_active_dropout(model); !d.empty()) return d + ": a replay would repeat the captured mask";
  return "";
}

GraphedSteps::GraphedSteps(nn::Module& model, FusedUpdate& update, const UnlearnOptions& opt, const UnlearnTask& task)
    : model_(model),
      update_(update),
      opt_(opt),
      task_(task),
      host_(std::make_unique<HostBuffer>(kHostBytes, update.device())),
      graph_(update.device()) {}

GraphedSteps::~GraphedSteps() = default;

bool GraphedSteps::same_shapes(const Batch& retain, const Batch& forget) const {
  auto same = [](const Tensor& fixed, const Tensor& t) {
    return fixed.defined() && t.defined() && fixed.shape() == t.shape() && fixed.dtype() == t.dtype() &&
           fixed.device() == t.device();
  };
  return same(fixed_retain_.images, retain.images) && same(fixed_retain_.labels, retain.labels) &&
         same(fixed_forget_.images, forget.images) && same(fixed_forget_.labels, forget.labels);
}

void GraphedSteps::queue_step() {
  const Method& method = *opt_.method;
  GradientResult g =
      compute_gradients_deferred(model_, update_, fixed_retain_, fixed_forget_, method, opt_.params, paired_, &task_);
  auto* host = static_cast<unsigned char*>(host_->data());
  copy_to_host_async(host + kLossOffset, g.retain_loss_device);
  copy_to_host_async(host + kLossOffset + 8, g.forget_loss_device);
  loss_dtype_ = g.retain_loss_device.dtype();
  update_.compute_stats();
  if (!method.own_step_async(opt_, update_, static_cast<HamuReport*>(host_->data())))
    throw Error("unlearn: method " + method.name() + " has no asynchronous step to capture");
}

std::optional<GraphedStep> GraphedSteps::step(const Batch& retain, const Batch& forget) {
  if (!disabled_.empty()) return std::nullopt;
  const Method& method = *opt_.method;
  if (!same_shapes(retain, forget)) {  // a new shape: new buffers, and a warm-up before the capture
    graph_.reset();
    fixed_retain_ = fixed_like(retain);
    fixed_forget_ = fixed_like(forget);
    warm_ = false;
  }
  copy_into(fixed_retain_.images, retain.images);
  copy_into(fixed_retain_.labels, retain.labels);
  copy_into(fixed_forget_.images, forget.images);
  copy_into(fixed_forget_.labels, forget.labels);
  fixed_retain_.indices = retain.indices;
  fixed_forget_.indices = forget.indices;
  GraphedStep out;
  if (!warm_) {
    // The warm-up: the ordinary step on the fixed buffers (algorithm search, plans, scratch; which pass).
    out.gradients = compute_gradients(model_, nullptr, update_, fixed_retain_, fixed_forget_, method, opt_.params,
                                      opt_.paired, &out.fallback, &task_);
    paired_ = out.gradients.paired;
    fallback_ = out.fallback;
    if (out.gradients.finite) {
      update_.compute_stats();
      std::optional<StepDecision> d = method.own_step(opt_, update_);
      if (!d) throw Error("unlearn: method " + method.name() + " has no own step to graph");
      out.decision = *d;
    }
    warm_ = true;
    return out;
  }
  if (!graph_.captured()) {
    std::string why;
    if (!graph_.capture([this] { queue_step(); }, &why)) {
      disabled_ = "the capture of a step failed: " + why;
      return std::nullopt;  // this step and the rest: the ordinary way
    }
    ++captures_;
  }
  graph_.replay();
  device_synchronize(update_.device());
  ++replays_;
  const auto* host = static_cast<const unsigned char*>(host_->data());
  HamuReport report;
  std::memcpy(&report, host, sizeof report);
  out.gradients.retain_loss = read_host_scalar(host + kLossOffset, loss_dtype_);
  out.gradients.forget_loss = read_host_scalar(host + kLossOffset + 8, loss_dtype_);
  out.gradients.paired = paired_;
  out.gradients.finite = std::isfinite(out.gradients.retain_loss) && std::isfinite(out.gradients.forget_loss);
  out.fallback = fallback_;
  // A non-finite loss: the ordinary step skips without a decision; the graph's update refused the step
  // (its statistics were non-finite), so the parameters did not move either.
  if (out.gradients.finite) out.decision = method.own_decision(opt_, report);
  out.replayed = true;
  return out;
}

}  // namespace hamu
