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

// What follows the gradients in a step that reads nothing back: the two losses copied into `host` behind
// the report, the statistics, the method's device-side step (its report copied to the front of `host`).
// Returns the losses' dtype.
DType queue_tail(const GradientResult& g, FusedUpdate& update, const UnlearnOptions& opt, HostBuffer& host) {
  const Method& method = *opt.method;
  auto* bytes = static_cast<unsigned char*>(host.data());
  copy_to_host_async(bytes + kLossOffset, g.retain_loss_device);
  copy_to_host_async(bytes + kLossOffset + 8, g.forget_loss_device);
  update.compute_stats();
  if (!method.own_step_async(opt, update, static_cast<HamuReport*>(host.data())))
    throw Error("unlearn: method " + method.name() + " has no asynchronous step to queue");
  return g.retain_loss_device.dtype();
}

// After the stream synchronised: the losses and the decision from `host`. A non-finite loss: the ordinary
// step skips without a decision; here the update refused the step (its statistics were non-finite), so the
// parameters did not move either.
GraphedStep read_back(const HostBuffer& host, DType loss_dtype, bool paired, const std::string& fallback,
                      const UnlearnOptions& opt) {
  const auto* bytes = static_cast<const unsigned char*>(host.data());
  GraphedStep out;
  HamuReport report;
  std::memcpy(&report, bytes, sizeof report);
  out.gradients.retain_loss = read_host_scalar(bytes + kLossOffset, loss_dtype);
  out.gradients.forget_loss = read_host_scalar(bytes + kLossOffset + 8, loss_dtype);
  out.gradients.paired = paired;
  out.gradients.finite = std::isfinite(out.gradients.retain_loss) && std::isfinite(out.gradients.forget_loss);
  out.fallback = fallback;
  if (out.gradients.finite) out.decision = opt.method->own_decision(opt, report);
  return out;
}

std::string device_step_objection(const UnlearnOptions& opt, int ranks) {
  const Method& method = *opt.method;
  if (!method.is_hamu())
    return "method " + method.name() +
           " takes its coefficients on the host from the block statistics (a wait inside the step); only hamu-q "
           "and hamu-u solve on the device";
  if (method.needs_original()) return "method " + method.name() + " reads the original model";
  if (opt.optimizer != OptimizerKind::sgd) return "--optimizer adamw feeds the step to AdamW on the host";
  if (ranks > 1) return "a run of " + std::to_string(ranks) + " processes exchanges gradients inside the step";
  return "";
}

}  // namespace

std::string OneWaitSteps::objection(const UnlearnOptions& opt, int ranks) { return device_step_objection(opt, ranks); }

bool OneWaitSteps::wanted(const UnlearnOptions& opt, int ranks) {
  if (opt.one_wait == 0 || (opt.one_wait < 0 && !opt.device.is_cuda())) return false;
  return objection(opt, ranks).empty();
}

OneWaitSteps::OneWaitSteps(FusedUpdate& update, const UnlearnOptions& opt, const UnlearnTask* task)
    : update_(update), opt_(opt), task_(task), host_(std::make_unique<HostBuffer>(kHostBytes, update.device())) {}

OneWaitSteps::~OneWaitSteps() = default;

GraphedStep OneWaitSteps::step(nn::Module& model, const Batch& retain, const Batch& forget) {
  std::string fallback;
  const GradientResult g = compute_gradients(model, nullptr, update_, retain, forget, *opt_.method, opt_.params,
                                             opt_.paired, &fallback, task_, nullptr, /*defer=*/true);
  const DType loss_dtype = queue_tail(g, update_, opt_, *host_);
  device_synchronize(update_.device());
  ++steps_;
  return read_back(*host_, loss_dtype, g.paired, fallback, opt_);
}

std::string GraphedSteps::objection(const nn::Module& model, const UnlearnOptions& opt, const UnlearnTask& task,
                                    int ranks) {
  if (std::string why = device_step_objection(opt, ranks); !why.empty()) return why;
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
  loss_dtype_ = queue_tail(g, update_, opt_, *host_);
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
  out = read_back(*host_, loss_dtype_, paired_, fallback_, opt_);
  out.replayed = true;
  return out;
}

}  // namespace hamu
