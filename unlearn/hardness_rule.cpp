// unlearn/hardness_rule.cpp: the hardness rule registry, the default (materialised) row form and the
// block path names.
#include "unlearn/hardness_rule.h"

#include <map>

namespace hamu {
namespace {

// Function-local so that registrars in other files' static initialisers find it constructed.
std::map<std::string, std::unique_ptr<HardnessRule>>& rules() {
  static std::map<std::string, std::unique_ptr<HardnessRule>> r;
  return r;
}

}  // namespace

void register_hardness_rule(const std::string& op, std::unique_ptr<HardnessRule> rule) {
  if (!rule) throw Error("register_hardness_rule: no rule for '" + op + "'");
  if (!rules().emplace(op, std::move(rule)).second)
    throw Error("register_hardness_rule: op '" + op + "' already has a hardness rule");
}

const HardnessRule* find_hardness_rule(const std::string& op) {
  auto it = rules().find(op);
  return it == rules().end() ? nullptr : it->second.get();
}

std::vector<std::string> hardness_rule_ops() {
  std::vector<std::string> ops;
  for (const auto& [op, rule] : rules()) ops.push_back(op);
  return ops;
}

void add_rows_dot(const Tensor& p, const Tensor& h, int64_t n, int64_t numel, Tensor& out) {
  hardness_kernels(out, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::gemm(ctx, false, false, n, 1, numel, T(1), p.data<T>(), numel, h.data<T>(), 1, T(1), out.data<T>(), 1);
  });
}

void HardnessRule::row_form(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, const Tensor& h,
                            Tensor& out) const {
  add_rows_dot(rep(rec, b, s0, n, false).p, h, n, b.numel, out);
}

const char* HardnessBlock::path() const {
  if (!rule) return "per-sample backward";
  return ghost ? "ghost" : "materialise";
}

}  // namespace hamu
