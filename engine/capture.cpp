// engine/capture.cpp: the active capture scope (thread-local) and record bookkeeping.
#include "engine/capture.h"

namespace hamu {
namespace {
thread_local CaptureScope* t_scope = nullptr;
}  // namespace

const char* capture_kind_name(CaptureKind k) {
  switch (k) {
    case CaptureKind::linear: return "linear";
    case CaptureKind::conv2d: return "conv2d";
    case CaptureKind::embedding: return "embedding";
    case CaptureKind::batch_norm: return "batch_norm";
    case CaptureKind::layer_norm: return "layer_norm";
  }
  return "?";
}

CaptureScope::CaptureScope() : prev_(t_scope) { t_scope = this; }
CaptureScope::~CaptureScope() { t_scope = prev_; }

CaptureTicket capture_layer(CaptureKind kind, const Tensor& weight, const Tensor& bias, const Tensor& input,
                            int64_t samples, const kernels::ConvShape& conv) {
  if (!t_scope || !grad_enabled()) return {};
  auto rec = std::make_shared<CaptureRecord>();
  rec->kind = kind;
  rec->name = weight.name();
  rec->weight = weight;
  rec->bias = bias;
  rec->input = input.detach();
  rec->samples = samples;
  rec->conv = conv;
  if (kind == CaptureKind::conv2d) rec->positions = conv.oh() * conv.ow();
  else if (kind == CaptureKind::embedding) {
    rec->positions = samples ? input.numel() / samples : 0;
    rec->vocab = weight.shape()[0];
  } else rec->positions = samples ? (input.numel() / input.shape().back()) / samples : 0;
  t_scope->add_record(rec);
  return {rec};
}

CaptureTicket capture_norm(CaptureKind kind, const Tensor& gamma, const Tensor& beta, const Tensor& input,
                           const Tensor& mean, const Tensor& invstd, int64_t samples, int64_t positions,
                           bool batch_stats) {
  if (!t_scope || !grad_enabled()) return {};
  auto rec = std::make_shared<CaptureRecord>();
  rec->kind = kind;
  rec->name = gamma.name();
  rec->weight = gamma;
  rec->bias = beta;
  rec->input = input.detach();
  rec->stat_a = mean.detach();
  rec->stat_b = invstd.detach();
  rec->samples = samples;
  rec->positions = positions;
  rec->batch_stats = batch_stats;
  t_scope->add_record(rec);
  return {rec};
}

void capture_output_grad(const CaptureTicket& ticket, const Tensor& output_grad) {
  if (!ticket.record) return;
  if (ticket.record->output_grad.defined())
    throw Error("capture: layer '" + ticket.record->name + "' received a second output gradient; capture one backward at a time");
  ticket.record->output_grad = output_grad.detach();
}

}  // namespace hamu
