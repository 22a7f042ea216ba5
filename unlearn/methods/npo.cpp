// unlearn/methods/npo.cpp: NPO with retain cross-entropy (NPO+RT, HAMU.md §6): the forget term is
// grad of (2/beta) mean log(1 + (p_theta(y|x) / p_orig(y|x))^beta), beta = 0.1, a loss to descend.
#include "engine/ops.h"
#include "unlearn/method_registry.h"
#include "unlearn/methods/baseline.h"

namespace hamu {
namespace {

class Npo final : public BaselineMethod {
 public:
  Npo()
      : BaselineMethod("npo", "negative preference optimisation against the original model, plus retain cross-entropy",
                       {.needs_original = true, .sequence_level = true}) {}
  Tensor forget_objective(const MethodParams& p, const Tensor& logits, const Tensor& labels,
                          const Tensor& original_logits) const override {
    // log p(y|x) - log p_orig(y|x) = NLL_orig - NLL (text: summed over each sequence's answer tokens, the
    // sequence log-likelihood ratio of the NPO paper); softplus(beta * that), scaled by 2/beta.
    Tensor ce = sample_nll(logits, labels);
    Tensor ce_orig = sample_nll(original_logits.detach(), labels);
    Tensor z = mul_scalar(sub(ce_orig, ce), p.npo_beta);
    Tensor softplus = log(add_scalar(exp(z), 1.0));
    return mul_scalar(mean(softplus), 2.0 / p.npo_beta);
  }
  // Both objectives are losses to descend.
  BaselineRule rule(const MethodParams& p, double, double, double) const override { return {-p.lr / 2, -p.lr / 2}; }
};

const MethodRegistration kRegistration(std::make_unique<Npo>(), 80);

}  // namespace
}  // namespace hamu
