// unlearn/gradients.cpp: the two objective gradients of one step: by one paired pass over
// [retain; forget] where that is valid (engine/paired.h), otherwise by two sequential passes.
//
// Paired pass: L = O_r(logits[0:n_r]) + O_f(logits[n_r:]) with the method's own objectives (each a
// mean over its own rows), one forward and one backward; the parametric ops reduce their weight
// gradients over the two row ranges straight into the fused update's r and f buffers. Valid when
// (checked before the pass) no BatchNorm normalises with batch statistics and no dropout is active,
// and (checked after it) the paired scope stayed valid and no parameter received an ordinary gradient
// (i.e. every parameter was reached only through ops with a paired backward). When the after-check
// fails the pass is discarded and the two passes run, so the result is always the two-pass gradient.
#include "unlearn/gradients.h"

#include <cmath>
#include <functional>

#include "engine/ops.h"
#include "engine/paired.h"

namespace hamu {
namespace {

Tensor forward(const UnlearnTask* task, nn::Module& model, const Tensor& inputs) {
  return task ? task->logits(model, inputs) : model.forward(inputs);
}

Tensor original_logits(const UnlearnTask* task, nn::Module* original, const Tensor& images) {
  if (!original) return Tensor();
  NoGradGuard ng;
  return forward(task, *original, images);
}

// Runs `backward` telling the observer (if any) which parameters' sides became final as it goes.
template <class F>
void observed_backward(GradientObserver* observer, const FusedUpdate& update, bool retain, bool forget, F&& backward) {
  if (!observer) return backward();
  GradReadyScope scope(update.params(), [&](size_t i) {
    if (retain) observer->ready(int(i), true);
    if (forget) observer->ready(int(i), false);
  });
  backward();
}

// One side: forward, loss for the log, objective backward into the routed buffers. Returns the loss
// on the device; unless `defer`, also read back (*host), and a non-finite loss skips the backward (the
// step will be skipped). With `defer` nothing is read back and the backward always runs: a non-finite
// loss then shows as non-finite gradient statistics, and the update refuses the step.
Tensor one_side(nn::Module& model, nn::Module* original, FusedUpdate& update, const Batch& b, const Method& method,
                const MethodParams& params, bool retain_side, bool needed, const UnlearnTask* task,
                GradientObserver* observer, bool defer, double* host) {
  update.route_grads_to(retain_side);
  Tensor logits = forward(task, model, b.images);
  const Tensor orig = method.needs_original() ? original_logits(task, original, b.images) : Tensor();
  Tensor ce;
  {
    NoGradGuard ng;
    ce = task_loss(logits.detach(), b.labels);
  }
  if (!defer) *host = ce.item();
  if (needed && (defer || std::isfinite(*host))) {
    Tensor obj = retain_side ? method.retain_objective(params, logits, b.labels, orig)
                             : method.forget_objective(params, logits, b.labels, orig);
    observed_backward(observer, update, retain_side, !retain_side, [&] { obj.backward(); });
  }
  return ce;
}

GradientResult two_passes(nn::Module& model, nn::Module* original, FusedUpdate& update, const Batch& retain,
                          const Batch& forget, const Method& method, const MethodParams& params,
                          const UnlearnTask* task, GradientObserver* observer, bool defer) {
  GradientResult out;
  if (observer) observer->start(false);
  out.retain_loss_device = one_side(model, original, update, retain, method, params, true, method.uses_retain(), task,
                                    observer, defer, &out.retain_loss);
  out.forget_loss_device = one_side(model, original, update, forget, method, params, false, method.uses_forget(), task,
                                    observer, defer, &out.forget_loss);
  if (observer) observer->done();
  update.release_grads();
  out.finite = defer || (std::isfinite(out.retain_loss) && std::isfinite(out.forget_loss));
  return out;
}

// Why the model cannot take a paired pass as it stands (empty: no objection found before running).
std::string module_objection(const nn::Module& m, const std::string& path) {
  if (auto* bn = dynamic_cast<const nn::BatchNorm2d*>(&m)) {
    if (bn->training() && !bn->frozen)
      return "BatchNorm '" + (path.empty() ? std::string("(root)") : path) +
             "' is in training mode and not frozen (batch statistics couple the samples)";
  }
  if (std::string d = nn::active_dropout(m, path); !d.empty()) return d + ", so one pass would draw other masks than two";
  for (const auto& [name, child] : m.children()) {
    std::string why = module_objection(*child, path.empty() ? name : path + "." + name);
    if (!why.empty()) return why;
  }
  return "";
}

// The paired pass. Returns false (with *why) when its result must be discarded.
bool paired_pass(nn::Module& model, nn::Module* original, FusedUpdate& update, const Batch& retain,
                 const Batch& forget, const Method& method, const MethodParams& params, GradientResult& out,
                 std::string* why, const UnlearnTask* task, GradientObserver* observer, bool defer) {
  const int64_t nr = retain.images.shape()[0], nf = forget.images.shape()[0];
  update.release_grads();
  update.zero(true);
  update.zero(false);
  Tensor images = task ? task->concat_inputs(retain.images, forget.images) : concat({retain.images, forget.images}, 0);
  {
    PairedScope scope(nr + nf, nr);
    const std::vector<Tensor>& ps = update.params();
    for (int i = 0; i < update.count(); ++i) scope.route(ps[size_t(i)], update.retain_grads()[size_t(i)],
                                                         update.forget_grads()[size_t(i)]);
    Tensor logits = forward(task, model, images);
    const Tensor orig = method.needs_original() ? original_logits(task, original, images) : Tensor();
    Tensor lr = logits.narrow(0, 0, nr), lf = logits.narrow(0, nr, nf);
    Tensor orig_r = orig.defined() ? orig.narrow(0, 0, nr) : Tensor();
    Tensor orig_f = orig.defined() ? orig.narrow(0, nr, nf) : Tensor();
    {
      NoGradGuard ng;
      out.retain_loss_device = task_loss(lr.detach(), retain.labels);
      out.forget_loss_device = task_loss(lf.detach(), forget.labels);
    }
    if (!defer) {
      out.retain_loss = out.retain_loss_device.item();
      out.forget_loss = out.forget_loss_device.item();
    }
    // Deferred (nothing read back): both objectives always; a non-finite loss shows in the statistics.
    out.finite = defer || (std::isfinite(out.retain_loss) && std::isfinite(out.forget_loss));
    Tensor total;
    if (method.uses_retain() && (defer || std::isfinite(out.retain_loss)))
      total = method.retain_objective(params, lr, retain.labels, orig_r);
    if (method.uses_forget() && (defer || std::isfinite(out.forget_loss))) {
      Tensor fo = method.forget_objective(params, lf, forget.labels, orig_f);
      total = total.defined() ? add(total, fo) : fo;
    }
    if (observer) observer->start(true);
    if (total.defined() && total.requires_grad())
      observed_backward(observer, update, true, true, [&] { total.backward(); });
    if (observer) observer->done();  // also when the pass is discarded below: every rank discards it
    if (!scope.valid()) {
      *why = scope.reason();
      return false;
    }
  }
  for (const Tensor& p : update.params())
    if (p.grad().defined()) {
      *why = "parameter '" + p.name() + "' is used by an op without a paired backward";
      return false;
    }
  out.paired = true;
  return true;
}

}  // namespace

GradientResult compute_side_gradient(nn::Module& model, nn::Module* original, FusedUpdate& update, const Batch& batch,
                                     const Method& method, const MethodParams& params, bool retain_side,
                                     const UnlearnTask* task, GradientObserver* observer) {
  if (method.needs_original() && !original)
    throw Error("unlearn: method " + method.name() + " needs the original model");
  GradientResult out;
  update.zero(!retain_side);
  if (observer) observer->start(false);
  double loss = 0;
  Tensor device_loss = one_side(model, original, update, batch, method, params, retain_side,
                                retain_side ? method.uses_retain() : method.uses_forget(), task, observer, false, &loss);
  if (observer) observer->done();
  update.release_grads();
  (retain_side ? out.retain_loss : out.forget_loss) = loss;
  (retain_side ? out.retain_loss_device : out.forget_loss_device) = device_loss;
  out.finite = std::isfinite(loss);
  return out;
}

GradientResult compute_gradients(nn::Module& model, nn::Module* original, FusedUpdate& update, const Batch& retain,
                                 const Batch& forget, const Method& method, const MethodParams& params, bool allow_paired,
                                 std::string* fallback_reason, const UnlearnTask* task,
                                 GradientObserver* observer, bool defer) {
  if (method.needs_original() && !original)
    throw Error("unlearn: method " + method.name() + " needs the original model");
  std::string why;
  if (!allow_paired) why = "paired pass turned off";
  else if (!retain.images.defined() || !forget.images.defined() || retain.images.dim() < 1 ||
           forget.images.dim() < 1 || retain.images.shape()[0] < 1 || forget.images.shape()[0] < 1)
    why = "an empty batch";
  else if (retain.images.device() != forget.images.device() || retain.images.dtype() != forget.images.dtype())
    why = "retain and forget batches differ in device or dtype";
  else why = module_objection(model, "");
  if (why.empty()) {
    GradientResult out;
    if (paired_pass(model, original, update, retain, forget, method, params, out, &why, task, observer, defer)) {
      if (fallback_reason) fallback_reason->clear();
      return out;
    }
    update.release_grads();  // discard: the two passes below rebuild r and f from zero
  }
  if (fallback_reason) *fallback_reason = why;
  return two_passes(model, original, update, retain, forget, method, params, task, observer, defer);
}

GradientResult compute_gradients_deferred(nn::Module& model, FusedUpdate& update, const Batch& retain,
                                          const Batch& forget, const Method& method, const MethodParams& params,
                                          bool paired, const UnlearnTask* task) {
  if (method.needs_original()) throw Error("unlearn: method " + method.name() + " is not deferrable (original model)");
  if (!paired) return two_passes(model, nullptr, update, retain, forget, method, params, task, nullptr, true);
  GradientResult out;
  std::string why;
  if (!paired_pass(model, nullptr, update, retain, forget, method, params, out, &why, task, nullptr, true))
    throw Error("unlearn: the paired pass, valid before, failed in a deferred step: " + why);
  return out;
}

}  // namespace hamu
