// unlearn/method.h: the interface every unlearning method implements (HAMU.md §3-7). A method is an
// object in a file of its own under unlearn/methods/ that registers itself (unlearn/method_registry.h);
// the runner, the gradients and the CLI only talk to this interface.
//
// One step of any method: the runner computes the gradients r and f of the method's retain and
// forget objectives into the fused update's buffers and their per-block statistics; the method turns
// the statistics into per-block coefficients (theta_l += coef_r[l] r_l + coef_f[l] f_l, with its
// report), and the runner applies them: exactly (sgd) or as AdamW pseudo-gradients. A method whose step
// must run elsewhere (HAMU: the solver on the parameters' device, fused with the apply pass) takes
// its own step through own_step().
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "unlearn/hamu_config.h"
#include "unlearn/options.h"

namespace hamu {

class FusedUpdate;

// What a method needs from the runner and the gradients.
struct MethodTraits {
  bool needs_original = false;  // its objectives compare against the frozen original model (kl, scrub, npo)
  bool uses_retain = true;      // fills r (the retain-side gradient)
  bool uses_forget = true;      // fills f (the forget-side gradient)
  bool sequence_level = false;  // its objective scores whole sequences (npo: the sequence log-likelihood), so on
                                // text it needs per-sequence sums of answer-token log-probs, not token means
  bool hamu = false;            // HAMU's constrained solver: --ratio/--radius/--scope/... apply, the report
                                // carries the branch counts
};

// What a method decided for one step.
struct StepDecision {
  std::vector<double> coef;  // [count][2]: coefficients on (r, f) per block (empty when not applied)
  HamuReport report;         // report.applied: take the step; report.nonfinite: skip it (non-finite statistics)
  bool projected = false;    // gru/pcgrad projected this step
  StopReason stop = StopReason::max_steps;  // why the run stops when a finite step is refused (applied == 0)
};

class Method {
 public:
  Method(std::string name, std::string help, MethodTraits traits)
      : name_(std::move(name)), help_(std::move(help)), traits_(traits) {}
  virtual ~Method() = default;
  Method(const Method&) = delete;
  Method& operator=(const Method&) = delete;

  const std::string& name() const { return name_; }  // the --method spelling
  const std::string& help() const { return help_; }  // one line for --help
  const MethodTraits& traits() const { return traits_; }
  bool needs_original() const { return traits_.needs_original; }
  bool uses_retain() const { return traits_.uses_retain; }
  bool uses_forget() const { return traits_.uses_forget; }
  bool is_hamu() const { return traits_.hamu; }

  // Checks of the options only this method reads (InputError naming the flag); the runner checks the
  // shared ones first.
  virtual void validate(const UnlearnOptions& opt) const {}

  // The objective whose gradient goes to r (retain side) or f (forget side), from the current model's
  // logits on that batch and, where needed, the frozen original model's logits on the same inputs
  // (undefined unless needs_original). Batch means. Default: cross-entropy (task_loss below: images or text).
  virtual Tensor retain_objective(const MethodParams& p, const Tensor& logits, const Tensor& labels,
                                  const Tensor& original_logits) const;
  virtual Tensor forget_objective(const MethodParams& p, const Tensor& logits, const Tensor& labels,
                                  const Tensor& original_logits) const;

  // The step from the host copy of the block statistics, stats[count][3] = (<r,r>, <f,f>, <r,f>) of the
  // raw (unclipped) gradients; clipping is the method's business.
  virtual StepDecision coefficients(const UnlearnOptions& opt, int count, const std::vector<double>& stats) const = 0;

  // The method's own step where it must: the statistics are in `update` (compute_stats() ran); move
  // theta and return the decision, or return nothing to go through coefficients() and the runner's
  // apply. Asked only when theta moves by exactly the step (OptimizerKind::sgd). Default: nothing.
  virtual std::optional<StepDecision> own_step(const UnlearnOptions& opt, FusedUpdate& update) const {
    return std::nullopt;
  }

  // The own step queued without waiting (for a step captured as a CUDA graph, unlearn/graph_step.h): the
  // report is copied to *host_report (pinned memory) in stream order, and after the stream synchronises
  // own_decision() turns it into the step's decision. Returns false (queueing nothing) when the method
  // has no such step; then own_decision is never asked.
  virtual bool own_step_async(const UnlearnOptions& opt, FusedUpdate& update, HamuReport* host_report) const {
    return false;
  }
  virtual StepDecision own_decision(const UnlearnOptions& opt, const HamuReport& report) const { return {}; }

 private:
  std::string name_, help_;
  MethodTraits traits_;
};

// The losses of both kinds of task, chosen by the rank of the logits. Images: logits [N,C], labels [N].
// Text: logits [B,T,V], labels [B,T] unshifted with -100 on prompt and padding tokens (position t predicts
// label t+1, as Hugging Face's causal-LM loss), so only answer tokens (and the end token) count.
// The mean loss: cross-entropy over the samples | next-token cross-entropy over the batch's answer tokens.
Tensor task_loss(const Tensor& logits, const Tensor& labels);
// Per-sample negative log-likelihood [N]: cross-entropy per image | the summed answer-token NLL per
// sequence, -log p(y|x) (what sequence-level objectives such as npo compare).
Tensor sample_nll(const Tensor& logits, const Tensor& labels);
// Mean KL(p_orig || p) (original_logits carry no gradient): over the samples | over the answer-token
// positions (the positions whose next label is scored), each position's KL over the vocabulary.
Tensor task_kl(const Tensor& original_logits, const Tensor& logits, const Tensor& labels);

}  // namespace hamu
