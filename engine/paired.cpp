// engine/paired.cpp: the active paired scope (thread-local) and the forward-time tickets.
#include "engine/paired.h"

namespace hamu {
namespace {
thread_local PairedScope* t_paired = nullptr;
}  // namespace

PairedScope::PairedScope(int64_t rows, int64_t split) : rows_(rows), split_(split), prev_(t_paired) {
  if (split < 1 || split >= rows)
    throw Error("paired scope: split " + std::to_string(split) + " must leave both ranges of " + std::to_string(rows) +
                " rows non-empty");
  t_paired = this;
}

PairedScope::~PairedScope() { t_paired = prev_; }

void PairedScope::route(const Tensor& param, const Tensor& first, const Tensor& second) {
  if (first.shape() != param.shape() || second.shape() != param.shape() || first.dtype() != param.dtype() ||
      second.dtype() != param.dtype() || first.device() != param.device() || second.device() != param.device() ||
      !first.is_contiguous() || !second.is_contiguous())
    throw Error("paired scope: buffers for '" + param.name() + "' do not match the parameter " + shape_str(param.shape()));
  routes_[param.impl()] = std::make_shared<PairedRoute>(PairedRoute{first, second});
}

std::shared_ptr<PairedRoute> PairedScope::find(const Tensor& param) const {
  if (!param.defined()) return nullptr;
  auto it = routes_.find(param.impl());
  return it == routes_.end() ? nullptr : it->second;
}

void PairedScope::invalidate(const std::string& why) {
  if (reason_.empty()) reason_ = why;
}

PairedTicket paired_ticket(const char* op, const Tensor& weight, const Tensor& bias, int64_t batch_rows) {
  PairedTicket t;
  if (!t_paired || !grad_enabled()) return t;
  auto w = t_paired->find(weight), b = t_paired->find(bias);
  if (!w && !b) return t;
  if (batch_rows != t_paired->rows()) {
    t_paired->invalidate(std::string(op) + " '" + weight.name() + "' sees " + std::to_string(batch_rows) +
                         " rows in dim 0, not the paired batch of " + std::to_string(t_paired->rows()));
    return t;
  }
  t.weight = w;
  t.bias = b;
  t.split = t_paired->split();
  return t;
}

void paired_invalidate(const std::string& why) {
  if (t_paired && grad_enabled()) t_paired->invalidate(why);
}

}  // namespace hamu
