// engine/capture.h: per-sample capture of layer inputs and output gradients (for the hardness kernels).
//
// Inside a CaptureScope, every Linear, Conv2d, Embedding, BatchNorm and LayerNorm op records what its
// parameters' per-sample gradients are made of, once at forward time (the input A) and once when the
// backward reaches it (the output gradient G). Record i then holds what the ghost products of
// HAMU.md §2 need:
//   linear     A = input rows [N*T, in],               G = [N*T, out]
//   conv2d     A = input images [N, C, H, W] (unfolded on demand with kernels::im2col, T = OH*OW),
//              G = [N, K, OH, OW]
//   embedding  A = int32 indices [N*T],                G = [N*T, dim]
//   batch_norm A = input [N, C, H, W] or [N, C], stat_a/stat_b = the mean and 1/std it normalised with
//              ([C]); G = [N, C, ...]. Only the fixed-statistics branch (eval / frozen) has per-sample
//              gradients; with batch statistics the record says so (batch_stats) and consumers refuse it.
//   layer_norm A = input rows [N*T, d], stat_a/stat_b = mean and 1/std per row ([N*T]), G = [N*T, d]
// G is exactly the gradient of whatever scalar was backpropagated. It is per-sample only when that
// scalar is the SUM of per-sample losses; for a batch-mean loss every G carries a factor 1/N. The
// consumer (unlearn/hardness) therefore backpropagates sum_i loss_i, and anything else must undo the
// scaling itself (multiply G by N).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace hamu {

enum class CaptureKind { linear, conv2d, embedding, batch_norm, layer_norm };
const char* capture_kind_name(CaptureKind k);

struct CaptureRecord {
  CaptureKind kind = CaptureKind::linear;
  std::string name;        // the weight's parameter name
  Tensor weight, bias;     // identities of the parameters (bias undefined when absent; norms: gamma, beta)
  Tensor input;            // A as described above
  Tensor stat_a, stat_b;   // normalisation statistics (batch_norm, layer_norm)
  Tensor output_grad;      // G, filled by the backward (undefined until then)
  int64_t samples = 0;     // N
  int64_t positions = 1;   // T per sample (linear/embedding/layer_norm rows, conv output positions, BN H*W)
  int64_t vocab = 0;       // embedding table rows
  bool batch_stats = false;  // batch_norm normalised with batch statistics: no per-sample gradients
  kernels::ConvShape conv; // conv geometry
};

class CaptureScope {
 public:
  CaptureScope();
  ~CaptureScope();
  CaptureScope(const CaptureScope&) = delete;
  CaptureScope& operator=(const CaptureScope&) = delete;
  // Records in forward order (one per layer call).
  const std::vector<std::shared_ptr<CaptureRecord>>& records() const { return records_; }
  void clear() { records_.clear(); }
  void add_record(std::shared_ptr<CaptureRecord> r) { records_.push_back(std::move(r)); }

 private:
  std::vector<std::shared_ptr<CaptureRecord>> records_;
  CaptureScope* prev_ = nullptr;
};

// Handle an op keeps until its backward; empty when no scope was active at forward time.
struct CaptureTicket {
  std::shared_ptr<CaptureRecord> record;
};

// Called by the layer ops (engine internals).
CaptureTicket capture_layer(CaptureKind kind, const Tensor& weight, const Tensor& bias, const Tensor& input,
                            int64_t samples, const kernels::ConvShape& conv);
// batch_norm / layer_norm: gamma, beta, the input and the statistics it was normalised with.
CaptureTicket capture_norm(CaptureKind kind, const Tensor& gamma, const Tensor& beta, const Tensor& input,
                           const Tensor& mean, const Tensor& invstd, int64_t samples, int64_t positions,
                           bool batch_stats);
void capture_output_grad(const CaptureTicket& ticket, const Tensor& output_grad);

}  // namespace hamu
