// engine/capture.h: per-sample capture of parametric ops' inputs and output gradients (for hardness).
//
// Inside a CaptureScope, every parametric op that supports capture records what its parameters'
// per-sample gradients are made of, once at forward time (the input A, and what else the op saved) and
// once when the backward reaches it (the output gradient G). A record is tagged with the op's name; the
// engine does not interpret it: the hardness rule registered for that tag does (unlearn/hardness_rule.h,
// one file per op in unlearn/hardness/). What the built-in ops record:
//   "linear"     A = input rows [N*T, in],               G = [N*T, out]
//   "conv2d"     A = input images [N, C, H, W] (unfolded on demand with kernels::im2col), conv = the
//                geometry, T = OH*OW, G = [N, K, OH, OW]
//   "embedding"  A = int32 indices [N*T],                G = [N*T, dim]
//   "batch_norm" A = input [N, C, H, W] or [N, C], stat_a/stat_b = the mean and 1/std it normalised with
//                ([C]), T = H*W; G = [N, C, ...]. Only the fixed-statistics branch (eval / frozen) has
//                per-sample gradients; with batch statistics the record says so (mixes_samples).
//   "layer_norm" A = input rows [N*T, d], stat_a/stat_b = mean and 1/std per row ([N*T]), G = [N*T, d]
//   "rms_norm"   A = input rows [N*T, d], stat_a undefined (no centring), stat_b = 1/rms per row ([N*T]),
//                G = [N*T, d]; weight only
// G is exactly the gradient of whatever scalar was backpropagated. It is per-sample only when that
// scalar is the SUM of per-sample losses; for a batch-mean loss every G carries a factor 1/N. The
// consumer (unlearn/hardness) therefore backpropagates sum_i loss_i, and anything else must undo the
// scaling itself (multiply G by N).
#pragma once
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace hamu {

struct CaptureRecord {
  std::string op;          // the recording op's tag ("linear", "conv2d", ...): which rule reads the record
  std::string name;        // the weight's parameter name
  Tensor weight, bias;     // identities of the parameters (bias undefined when absent; norms: gamma, beta)
  Tensor input;            // A as described above
  Tensor stat_a, stat_b;   // statistics the op saved (normalisations), undefined otherwise
  Tensor output_grad;      // G, filled by the backward (undefined until then)
  int64_t samples = 0;     // N
  int64_t positions = 1;   // T per sample (rows, output positions, ...; the op says)
  bool mixes_samples = false;  // the output depends on other samples (BatchNorm on batch statistics):
                               // there are no per-sample gradients
  kernels::ConvShape conv; // convolution geometry (conv2d)
};

class CaptureScope {
 public:
  CaptureScope();
  // Records only the ops whose weight or bias is one of `only` (the trainable parameters): a frozen layer (a
  // LoRA adapter's base weight, a frozen embedding or norm) has no per-sample gradient anyone reads, and its A
  // and G would only hold memory until the scope ends.
  explicit CaptureScope(const std::vector<Tensor>& only);
  ~CaptureScope();
  CaptureScope(const CaptureScope&) = delete;
  CaptureScope& operator=(const CaptureScope&) = delete;
  // Records in forward order (one per layer call).
  const std::vector<std::shared_ptr<CaptureRecord>>& records() const { return records_; }
  void clear() { records_.clear(); }
  void add_record(std::shared_ptr<CaptureRecord> r) { records_.push_back(std::move(r)); }
  // Whether an op with these parameters is recorded (always, unless the scope names its parameters).
  bool wants(const Tensor& weight, const Tensor& bias) const;

 private:
  std::vector<std::shared_ptr<CaptureRecord>> records_;
  std::unordered_set<const TensorImpl*> only_;
  bool filtered_ = false;
  CaptureScope* prev_ = nullptr;
};

// Handle an op keeps until its backward; empty when no scope was active at forward time.
struct CaptureTicket {
  std::shared_ptr<CaptureRecord> record;
};

// Called by the parametric ops at forward time (engine internals): op tag, parameters, the input A,
// N and T; conv: the geometry.
CaptureTicket capture_layer(const char* op, const Tensor& weight, const Tensor& bias, const Tensor& input,
                            int64_t samples, int64_t positions, const kernels::ConvShape& conv = {});
// Normalisations: gamma, beta, the input and the statistics it was normalised with.
CaptureTicket capture_norm(const char* op, const Tensor& gamma, const Tensor& beta, const Tensor& input,
                           const Tensor& mean, const Tensor& invstd, int64_t samples, int64_t positions,
                           bool mixes_samples);
void capture_output_grad(const CaptureTicket& ticket, const Tensor& output_grad);
// Whether ops may record now (a scope is active and gradients are on): ops with a faster form that records
// nothing (conv2d_bn_act's single kernel) take it only when not.
bool capture_active();

}  // namespace hamu
