// unlearn/hardness_rule.h: per-layer hardness rules and their registry. A rule reads the capture
// records of one op tag (engine/capture.h) and says what one block (parameter) of that layer is: its
// shape for the cost model, its per-sample data (ghost factors or materialised gradients) and its row
// form against a direction h. Everything else (planning, the cost model, Gram tiles, K, norms, tiling,
// the report) is generic and lives in unlearn/hardness.cpp.
//
// A new parametric layer kind is one new file in unlearn/hardness/ (the Makefile links the whole
// library, so a file-scope registrar is never dropped), next to the op that captures it:
//
//   class MyRule : public HardnessRule { ... };
//   const HardnessRuleRegistrar my_rule("my_op", std::make_unique<MyRule>());
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/capture.h"
#include "engine/dispatch.h"

namespace hamu {

class HardnessRule;

// Which of a record's parameters a block is.
enum class ParamRole { weight, bias };

// One block (a parameter tensor; the fallback block groups every uncaptured parameter).
struct HardnessBlock {
  std::string name;
  std::string kind;                     // report name ("linear", "conv2d bias", ...; "uncaptured")
  const HardnessRule* rule = nullptr;   // null: the fallback (per-sample gradients by one backward each)
  ParamRole role = ParamRole::weight;
  std::vector<Tensor> params;   // the parameter (fallback: all of them, in model order)
  std::vector<int> param_index; // their positions in model.parameters()
  int64_t numel = 0;
  int64_t positions = 1, in = 0, out = 0;  // T, d, p of the cost model
  // The per-sample gradient is sum_t y_t x_t^T over T positions with x_t in R^d, y_t in R^p, so the
  // ghost path exists and the cost model chooses; otherwise the block is always materialised.
  bool factored = false;
  bool ghost = false;
  double ghost_pair_flops = 0, mat_pair_flops = 0, mat_sample_flops = 0;
  int64_t rep_elems = 0;        // elements stored per sample (ghost: T (p+d); materialised: numel)
  // A parameter used by several captured layers (GPT-2's token embedding, also its output layer): one
  // part per layer, in forward order, each planned by its own rule; the block is materialised as the
  // sum of the parts' per-sample gradients, and its row form is the sum of theirs.
  std::vector<HardnessBlock> parts;
  const char* path() const;     // "ghost", "materialise" or "per-sample backward"
};

// Per-block per-sample data of a set of samples: ghost blocks keep (x [n*T, d], y [n*T, p]),
// materialised ones p [n, numel]. Views into a capture or owned storage.
struct BlockRep {
  Tensor p, x, y;
};

class HardnessRule {
 public:
  virtual ~HardnessRule() = default;
  // Planning: fills b.kind, b.factored, b.in, b.out (and b.positions where it differs from
  // rec.positions, which it holds on entry) for the block b.role of rec. InputError where the record
  // has no per-sample gradients.
  virtual void plan(const CaptureRecord& rec, HardnessBlock& b) const = 0;
  // The block's data for samples [s0, s0 + n) of the record: ghost (factored blocks only) the factors
  // x, y; otherwise p, the materialised per-sample gradients.
  virtual BlockRep rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, bool ghost) const = 0;
  // out[j] += <grad_b l(sample s0 + j), h> with h the block's direction (contiguous, the parameter's
  // shape). The default materialises the block and does one GEMV.
  virtual void row_form(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, const Tensor& h,
                        Tensor& out) const;
};

// One rule per op tag; registering a tag twice is an Error (two files claim the same layer).
void register_hardness_rule(const std::string& op, std::unique_ptr<HardnessRule> rule);
const HardnessRule* find_hardness_rule(const std::string& op);  // null when the tag has no rule
std::vector<std::string> hardness_rule_ops();                    // the registered tags, sorted

// A rule file's registration at static-initialisation time.
struct HardnessRuleRegistrar {
  HardnessRuleRegistrar(const char* op, std::unique_ptr<HardnessRule> rule) { register_hardness_rule(op, std::move(rule)); }
};

// Helpers the rules share.
template <class F> void hardness_kernels(const Tensor& like, F&& f) { dispatch("hardness", like, f); }
// Rows [r0, r0 + n) of t viewed as [rows, width].
inline Tensor sample_rows(const Tensor& t, int64_t width, int64_t r0, int64_t n) {
  return t.reshape({-1, width}).narrow(0, r0, n);
}
// out[j] += <p_j, h> for the n rows of p [n, numel] (one GEMV).
void add_rows_dot(const Tensor& p, const Tensor& h, int64_t n, int64_t numel, Tensor& out);

}  // namespace hamu
