// unlearn/methods.h: the unlearning methods (HAMU.md §3-7): which objectives fill the two gradient
// buffers r and f, and how a baseline turns their global statistics into step coefficients.
#pragma once
#include <string>
#include <vector>

#include "engine/nn.h"
#include "engine/tensor.h"

namespace hamu {

enum class Method { hamu_q, hamu_u, ft, ga, gdiff, kl, scrub, npo, gru, pcgrad };

Method parse_method(const std::string& name);  // InputError listing the choices
const char* method_name(Method m);
const std::vector<std::string>& method_names();
bool is_hamu(Method m);
bool needs_original(Method m);  // kl, scrub, npo compare against the frozen original model
bool uses_retain(Method m);     // fills r
bool uses_forget(Method m);     // fills f

struct MethodParams {
  double lr = 0.01;
  double clip = 1.0;             // each objective gradient clipped to this total norm (0 = off)
  bool paper_compat = false;     // gru/pcgrad: the published (inverted) conflict test, HAMU.md §7.1
  double scrub_alpha = 0.001, scrub_gamma = 0.99, npo_beta = 0.1;
};

// The objective whose gradient goes to r (retain side) or f (forget side), from the current model's
// logits on that batch and, where needed, the frozen original model's logits on the same images.
// Both are batch means. Gradient directions (HAMU.md §6):
//   hamu/ft/gdiff/gru/pcgrad/npo: r = grad CE_retain;   kl: r = grad KL_retain;
//   scrub: r = grad (alpha KL_retain + gamma CE_retain);
//   hamu/ga/gdiff/kl/gru/pcgrad: f = grad CE_forget;    scrub: f = grad KL_forget;
//   npo: f = grad (2/beta) mean log(1 + (p/p_orig)^beta).
Tensor retain_objective(Method m, const MethodParams& p, const Tensor& logits, const Tensor& labels,
                        const Tensor& original_logits);
Tensor forget_objective(Method m, const MethodParams& p, const Tensor& logits, const Tensor& labels,
                        const Tensor& original_logits);

// A baseline's step theta += coef_r * r + coef_f * f (the same for every block) from the raw global
// statistics rr = ||r||^2, ff = ||f||^2, rf = <r,f> (clipping applied here).
struct BaselineStep {
  double coef_r = 0, coef_f = 0;
  bool projected = false;       // gru/pcgrad projected this step
  double kappa = 0;             // <r,f> after clipping
  double retain_scale = 1, forget_scale = 1;
};
BaselineStep baseline_step(Method m, const MethodParams& p, double rr, double ff, double rf);

}  // namespace hamu
