// unlearn/methods.cpp: objectives and baseline step rules.
#include "unlearn/methods.h"

#include <cmath>

#include "engine/ops.h"

namespace hamu {

namespace {
const std::vector<std::string> kNames = {"hamu-q", "hamu-u", "ft", "ga", "gdiff", "kl", "scrub", "npo", "gru", "pcgrad"};

double clip_scale(double norm2, double clip) {
  if (clip <= 0) return 1.0;
  const double s = clip / (std::sqrt(norm2) + 1e-6);
  return s < 1.0 ? s : 1.0;
}

// mean KL(p_orig || p) over the batch.
Tensor mean_kl(const Tensor& original_logits, const Tensor& logits) {
  return mean(kl_div_per_sample(original_logits, logits));
}
}  // namespace

const std::vector<std::string>& method_names() { return kNames; }

Method parse_method(const std::string& name) {
  for (size_t i = 0; i < kNames.size(); ++i)
    if (kNames[i] == name) return Method(i);
  std::string all;
  for (const auto& n : kNames) all += (all.empty() ? "" : ", ") + n;
  throw InputError("--method: unknown method '" + name + "' (choose " + all + ")");
}

const char* method_name(Method m) { return kNames[size_t(m)].c_str(); }
bool is_hamu(Method m) { return m == Method::hamu_q || m == Method::hamu_u; }
bool needs_original(Method m) { return m == Method::kl || m == Method::scrub || m == Method::npo; }
bool uses_retain(Method m) { return m != Method::ga; }
bool uses_forget(Method m) { return m != Method::ft; }

Tensor retain_objective(Method m, const MethodParams& p, const Tensor& logits, const Tensor& labels,
                        const Tensor& original_logits) {
  switch (m) {
    case Method::kl: return mean_kl(original_logits, logits);
    case Method::scrub:
      return add(mul_scalar(mean_kl(original_logits, logits), p.scrub_alpha),
                 mul_scalar(cross_entropy(logits, labels), p.scrub_gamma));
    default: return cross_entropy(logits, labels);
  }
}

Tensor forget_objective(Method m, const MethodParams& p, const Tensor& logits, const Tensor& labels,
                        const Tensor& original_logits) {
  switch (m) {
    case Method::scrub: return mean_kl(original_logits, logits);
    case Method::npo: {
      // log p(y|x) - log p_orig(y|x) = CE_orig - CE; softplus(beta * that), scaled by 2/beta.
      Tensor ce = cross_entropy_per_sample(logits, labels);
      Tensor ce_orig = cross_entropy_per_sample(original_logits.detach(), labels);
      Tensor z = mul_scalar(sub(ce_orig, ce), p.npo_beta);
      Tensor softplus = log(add_scalar(exp(z), 1.0));
      return mul_scalar(mean(softplus), 2.0 / p.npo_beta);
    }
    default: return cross_entropy(logits, labels);
  }
}

BaselineStep baseline_step(Method m, const MethodParams& p, double rr, double ff, double rf) {
  BaselineStep s;
  const double sr = clip_scale(rr, p.clip), sf = clip_scale(ff, p.clip);
  s.retain_scale = sr;
  s.forget_scale = sf;
  const double crr = rr * sr * sr, cff = ff * sf * sf, d = rf * sr * sf;  // clipped statistics
  s.kappa = d;
  const double eta = p.lr;
  double a = 0, b = 0;  // theta += a * r' + b * f' on the clipped gradients
  switch (m) {
    case Method::ft: a = -eta; break;
    case Method::ga: b = eta; break;
    case Method::gdiff:
    case Method::kl:
    case Method::scrub:
      a = -eta / 2;
      b = eta / 2;
      break;
    case Method::npo:
      a = -eta / 2;
      b = -eta / 2;
      break;
    case Method::gru: {
      // Forget ascent u = f'; when it would raise the retain loss (<r', f'> > 0) take its part
      // orthogonal to r'. The published code tests the opposite sign (paper_compat).
      const bool conflict = p.paper_compat ? d < 0 : d > 0;
      b = eta;
      if (conflict && crr > 1e-20) {
        a = -eta * d / crr;
        s.projected = true;
      }
      break;
    }
    case Method::pcgrad: {
      // Objectives L_r and -L_f with gradients g1 = r', g2 = -f'; they conflict when <g1,g2> < 0.
      const bool conflict = p.paper_compat ? d < 0 : d > 0;
      if (conflict && crr > 1e-20 && cff > 1e-20) {
        // g_eq = 1/2 [(g1 - <g1,g2>/|g2|^2 g2) + (g2 - <g2,g1>/|g1|^2 g1)], <g1,g2> = -d
        a = -eta / 2 * (1.0 + d / crr);
        b = eta / 2 * (1.0 + d / cff);
        s.projected = true;
      } else {
        a = -eta / 2;
        b = eta / 2;
      }
      break;
    }
    case Method::hamu_q:
    case Method::hamu_u:
      throw Error("baseline_step: HAMU steps go through the fused solver");
  }
  s.coef_r = a * sr;
  s.coef_f = b * sf;
  return s;
}

}  // namespace hamu
