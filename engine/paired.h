// engine/paired.h: the paired backward: one forward and one backward over a concatenated batch
// [first; second] (dim 0) that yields the parameter gradients of the two row ranges separately.
//
// With BatchNorm on fixed statistics and no dropout, every sample's computation is independent, so the
// gradient of L = L_first(rows [0, split)) + L_second(rows [split, N)) with respect to a layer's
// activations is, row by row, exactly what two separate backward passes would produce. Only the
// parameter gradients mix the rows (they are sums over rows); the parametric ops (linear, conv2d,
// embedding, batch_norm on fixed statistics, layer_norm) therefore reduce their weight gradient
// separately over the two row ranges and add the halves straight into two destination buffers
// registered here (for unlearning: FusedUpdate's r and f), returning no gradient for the parameter.
//
// An op learns about the scope at FORWARD time (like capture tickets), so only ops recorded while the
// scope was active take part. Anything the scope cannot split (BatchNorm with batch statistics, an op
// whose dim 0 is not the paired batch) marks the scope invalid with a reason; the caller then discards
// the result and falls back to two passes. A parameter reached by an op without a paired backward gets
// an ordinary .grad, which the caller also treats as "not valid" (unlearn/gradients.cpp).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "engine/tensor.h"

namespace hamu {

// Where one parameter's two partial gradients go (both accumulate, shape of the parameter).
struct PairedRoute {
  Tensor first, second;
};

class PairedScope {
 public:
  // rows: the batch size (dim 0) of the concatenated batch; [0, split) is the first range.
  PairedScope(int64_t rows, int64_t split);
  ~PairedScope();
  PairedScope(const PairedScope&) = delete;
  PairedScope& operator=(const PairedScope&) = delete;

  // Sends param's gradient to the two buffers (same shape, dtype and device as param).
  void route(const Tensor& param, const Tensor& first, const Tensor& second);
  std::shared_ptr<PairedRoute> find(const Tensor& param) const;

  int64_t rows() const { return rows_; }
  int64_t split() const { return split_; }
  bool valid() const { return reason_.empty(); }
  const std::string& reason() const { return reason_; }  // the first reason it became invalid
  void invalidate(const std::string& why);

 private:
  int64_t rows_, split_;
  std::unordered_map<TensorImpl*, std::shared_ptr<PairedRoute>> routes_;
  std::string reason_;
  PairedScope* prev_ = nullptr;
};

// What a parametric op keeps until its backward: the routes of its weight and bias (null: that
// parameter's gradient is computed as usual) and the split in units of dim 0.
struct PairedTicket {
  std::shared_ptr<PairedRoute> weight, bias;
  int64_t split = 0;  // in samples (dim 0 of the op's input)
  bool active() const { return weight || bias; }
};

// Called by the parametric ops at forward time. batch_rows: the op's input size along dim 0 (the
// samples). When it is not the paired batch, the scope is marked invalid (naming op and parameter)
// and the ticket is inactive.
PairedTicket paired_ticket(const char* op, const Tensor& weight, const Tensor& bias, int64_t batch_rows);
// Marks the active scope (if any, and grad mode is on) invalid.
void paired_invalidate(const std::string& why);

}  // namespace hamu
