// engine/capture.cpp: the active capture scope (thread-local) and record bookkeeping.
#include "engine/capture.h"

namespace hamu {
namespace {
thread_local CaptureScope* t_scope = nullptr;
}  // namespace

CaptureScope::CaptureScope() : prev_(t_scope) { t_scope = this; }
CaptureScope::CaptureScope(const std::vector<Tensor>& only) : CaptureScope() {
  filtered_ = true;
  for (const Tensor& t : only) only_.insert(t.impl());
}
CaptureScope::~CaptureScope() { t_scope = prev_; }

bool CaptureScope::wants(const Tensor& weight, const Tensor& bias) const {
  if (!filtered_) return true;
  return (weight.defined() && only_.count(weight.impl())) || (bias.defined() && only_.count(bias.impl()));
}

bool capture_active() { return t_scope && grad_enabled(); }

CaptureTicket capture_layer(const char* op, const Tensor& weight, const Tensor& bias, const Tensor& input,
                            int64_t samples, int64_t positions, const kernels::ConvShape& conv) {
  if (!t_scope || !grad_enabled() || !t_scope->wants(weight, bias)) return {};
  auto rec = std::make_shared<CaptureRecord>();
  rec->op = op;
  rec->name = weight.name();
  rec->weight = weight;
  rec->bias = bias;
  rec->input = input.detach();
  rec->samples = samples;
  rec->positions = positions;
  rec->conv = conv;
  t_scope->add_record(rec);
  return {rec};
}

CaptureTicket capture_norm(const char* op, const Tensor& gamma, const Tensor& beta, const Tensor& input,
                           const Tensor& mean, const Tensor& invstd, int64_t samples, int64_t positions,
                           bool mixes_samples) {
  CaptureTicket ticket = capture_layer(op, gamma, beta, input, samples, positions);
  if (!ticket.record) return ticket;
  if (mean.defined()) ticket.record->stat_a = mean.detach();  // RMSNorm has none
  ticket.record->stat_b = invstd.detach();
  ticket.record->mixes_samples = mixes_samples;
  return ticket;
}

void capture_output_grad(const CaptureTicket& ticket, const Tensor& output_grad) {
  if (!ticket.record) return;
  if (ticket.record->output_grad.defined())
    throw Error("capture: layer '" + ticket.record->name + "' received a second output gradient; capture one backward at a time");
  ticket.record->output_grad = output_grad.detach();
}

}  // namespace hamu
