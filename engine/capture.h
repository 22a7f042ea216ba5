// engine/capture.h: per-sample capture of layer inputs and output gradients (for the hardness kernels).
//
// Inside a CaptureScope, every Linear, Conv2d and Embedding op records its input A at forward time
// and its output gradient G when the backward reaches it. Record i then holds what the ghost
// products of HAMU.md §2 need: A (linear [N*T, in]; conv: the input images, unfolded on demand;
// embedding: the int32 indices) and G ([N*T, out] for linear/embedding, [N, K, OH*OW] for conv),
// exactly as seen by the loss's backward (the consumer undoes any batch-mean scaling).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace hamu {

enum class CaptureKind { linear, conv2d, embedding };

struct CaptureRecord {
  CaptureKind kind = CaptureKind::linear;
  std::string name;        // the weight's parameter name
  Tensor weight, bias;     // identities of the parameters (bias undefined when absent)
  Tensor input;            // A as described above
  Tensor output_grad;      // G, filled by the backward (undefined until then)
  int64_t samples = 0;     // N
  int64_t positions = 1;   // T per sample (linear/embedding tokens, conv output positions)
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
void capture_output_grad(const CaptureTicket& ticket, const Tensor& output_grad);

}  // namespace hamu
