// unlearn/hardness.cpp: capture pass, per-block plans and the cost model (ghost / materialise /
// per-sample backward), K and per-sample norms from the layer rules' data (unlearn/hardness_rule.h),
// and the tiled `hamu hardness` driver.
#include "unlearn/hardness.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "engine/ops.h"
#include "engine/paired.h"
#include "engine/progress.h"
#include "engine/rng.h"

namespace hamu {
namespace {


std::vector<double> host_doubles(const Tensor& t) {
  Tensor h = t.detach().to(Device{}).contiguous();
  if (h.dtype() == DType::f64) return h.to_vector<double>();
  std::vector<float> v = h.to_vector<float>();
  return std::vector<double>(v.begin(), v.end());
}

// Parameters' requires_grad switched off for a capture pass that only needs the output gradients.
class ParamsNoGrad {
 public:
  explicit ParamsNoGrad(std::vector<Tensor> params) : params_(std::move(params)) {
    for (Tensor& p : params_) {
      was_.push_back(p.requires_grad());
      p.requires_grad_(false);
    }
  }
  ~ParamsNoGrad() {
    for (size_t i = 0; i < params_.size(); ++i) params_[i].requires_grad_(was_[i]);
  }
  ParamsNoGrad(const ParamsNoGrad&) = delete;
  ParamsNoGrad& operator=(const ParamsNoGrad&) = delete;

 private:
  std::vector<Tensor> params_;
  std::vector<bool> was_;
};

void clear_grads(const std::vector<Tensor>& params) {
  for (Tensor p : params) p.zero_grad();
}

// "a, b or c" over the op tags that have a hardness rule.
std::string captured_ops() {
  const std::vector<std::string> ops = hardness_rule_ops();
  std::string s;
  for (size_t i = 0; i < ops.size(); ++i) s += (i == 0 ? "" : i + 1 == ops.size() ? " or " : ", ") + ops[i];
  return s;
}

// The record of a block (or of part `part` of a shared block) in a capture.
const CaptureRecord& record_of(const HardnessBlock& b, const CapturedBatch& cb, size_t part = 0) {
  auto it = cb.by_param.find(b.params[0].impl());
  const size_t want = b.parts.empty() ? 1 : b.parts.size();
  if (it == cb.by_param.end() || it->second.size() != want)
    throw Error("hardness: block '" + b.name + "' was not captured in this pass (the model's layers changed between passes?)");
  const CaptureRecord& rec = *it->second[part];
  if (!rec.output_grad.defined()) throw Error("hardness: layer '" + rec.name + "' received no output gradient");
  return rec;
}

int64_t ghost_t(const HardnessBlock& b) { return b.ghost ? b.positions : 0; }

}  // namespace

GhostPath parse_ghost_path(const std::string& s) {
  if (s == "auto") return GhostPath::automatic;
  if (s == "ghost") return GhostPath::ghost;
  if (s == "materialise" || s == "materialize") return GhostPath::materialise;
  throw InputError("--path: '" + s + "' is not auto, ghost or materialise");
}

// ------------------------------------------------------------------------------------------------
// Capture and the per-sample reference

Tensor image_sample_losses(nn::Module& model, const Tensor& inputs, const Tensor& labels) {
  Tensor logits = model.forward(inputs);
  if (logits.dim() != 2 || logits.shape()[0] != inputs.shape()[0])
    throw InputError("hardness: the model's output " + shape_str(logits.shape()) + " is not [samples, classes]");
  return cross_entropy_per_sample(logits, labels);
}

Batch ImageHardnessSource::gather(const std::vector<int64_t>& idx, DType dt, Device dev) const {
  Batch batch = gather_batch(train_, idx, norm_, dev);
  if (batch.images.dtype() != dt) batch.images = batch.images.to(dt);
  return batch;
}

CapturedBatch capture_batch(nn::Module& model, const Tensor& inputs, const Tensor& labels, bool param_grads,
                            const SampleLoss& loss) {
  if (!inputs.defined() || inputs.dim() < 1 || inputs.shape()[0] < 1) throw InputError("hardness: empty batch");
  CapturedBatch cb;
  cb.inputs = inputs;
  cb.labels = labels;
  cb.n = inputs.shape()[0];
  cb.loss = loss;
  const std::vector<Tensor> params = model.parameters();
  clear_grads(params);
  const bool skip_params = !param_grads && inputs.is_floating();
  {
    std::unique_ptr<ParamsNoGrad> frozen;
    Tensor x = inputs;
    if (skip_params) {
      // Differentiate with respect to the input only: the backward still reaches every layer (so the
      // capture sees every G) but skips the weight-gradient GEMMs.
      frozen = std::make_unique<ParamsNoGrad>(params);
      x = inputs.detach();
      x.requires_grad_(true);
    }
    CaptureScope scope(params);  // trainable layers only: a LoRA model records its adapters, not the frozen base
    Tensor losses = loss(model, x, labels);
    if (losses.dim() != 1 || losses.shape()[0] != cb.n)
      throw Error("hardness: the per-sample loss " + shape_str(losses.shape()) + " is not [samples]");
    cb.losses = host_doubles(losses);
    Tensor total = sum(losses);
    if (total.requires_grad()) total.backward();
    cb.records = scope.records();
  }
  if (param_grads) {
    for (const Tensor& p : params) cb.param_grads.push_back(p.grad());
    clear_grads(params);
  }
  for (const auto& rec : cb.records) {
    if (rec->weight.defined()) cb.by_param[rec->weight.impl()].push_back(rec);
    if (rec->bias.defined()) cb.by_param[rec->bias.impl()].push_back(rec);
  }
  return cb;
}

Tensor per_sample_gradients(nn::Module& model, const Tensor& inputs, const Tensor& labels,
                            const std::vector<Tensor>& params, const SampleLoss& sample_loss) {
  if (params.empty()) throw Error("per_sample_gradients: no parameters");
  const int64_t n = inputs.shape()[0];
  int64_t total = 0;
  for (const Tensor& p : params) total += p.numel();
  Tensor out = Tensor::zeros({n, total}, params[0].dtype(), params[0].device());
  const std::vector<Tensor> all = model.parameters();
  for (int64_t i = 0; i < n; ++i) {
    clear_grads(all);
    Tensor xi = inputs.narrow(0, i, 1).contiguous(), yi = labels.narrow(0, i, 1).contiguous();
    Tensor loss = sum(sample_loss(model, xi, yi));
    if (loss.requires_grad()) loss.backward();
    int64_t off = 0;
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (g.defined()) {
        Tensor gc = g.contiguous();
        hardness_kernels(out, [&](const auto& ctx, auto tag) {
          using T = decltype(tag);
          kernels::copy(ctx, p.numel(), gc.data<T>(), out.data<T>() + i * total + off);
        });
      }
      off += p.numel();
    }
  }
  clear_grads(all);
  return out;
}

// ------------------------------------------------------------------------------------------------
// Plans

namespace {

// A parameter several captured layers use: one part per layer (forward order), always materialised as
// the sum of the parts' per-sample gradients (the ghost form would need the parts' cross terms).
HardnessBlock shared_block(const std::string& name, const Tensor& p, int index,
                           const std::vector<std::shared_ptr<CaptureRecord>>& records) {
  HardnessBlock b;
  b.name = name;
  b.params = {p};
  b.param_index = {index};
  b.numel = p.numel();
  b.positions = 0;
  for (const auto& rec : records) {
    HardnessBlock part;
    part.name = name;
    part.rule = find_hardness_rule(rec->op);
    part.role = rec->weight.impl() == p.impl() ? ParamRole::weight : ParamRole::bias;
    part.params = {p};
    part.param_index = {index};
    part.numel = p.numel();
    part.positions = rec->positions;
    part.rule->plan(*rec, part);
    b.kind += (b.kind.empty() ? "" : " + ") + part.kind;
    b.positions = std::max(b.positions, part.positions);
    b.mat_sample_flops += part.factored ? 2.0 * double(part.positions) * double(part.out) * double(part.in)
                                        : 2.0 * double(part.positions) * double(part.numel);
    b.parts.push_back(part);
  }
  b.kind += " (shared)";
  b.rule = b.parts[0].rule;
  b.mat_pair_flops = 2.0 * double(b.numel);
  b.rep_elems = b.numel;
  return b;
}

// A shared block's per-sample gradients: the sum of its parts'.
BlockRep shared_rep(const HardnessBlock& b, const CapturedBatch& cb, int64_t s0, int64_t n) {
  BlockRep out;
  out.p = Tensor::zeros({n, b.numel}, b.params[0].dtype(), b.params[0].device());
  for (size_t k = 0; k < b.parts.size(); ++k) {
    const BlockRep r = b.parts[k].rule->rep(record_of(b, cb, k), b.parts[k], s0, n, false);
    const Tensor pc = r.p.contiguous();
    hardness_kernels(out.p, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::axpby(ctx, n * b.numel, T(1), pc.data<T>(), T(1), out.p.data<T>());
    });
  }
  return out;
}

}  // namespace

BlockPlan plan_blocks(nn::Module& model, const CapturedBatch& probe, GhostPath path) {
  if (probe.param_grads.empty()) throw Error("plan_blocks: the probe capture needs parameter gradients");
  BlockPlan plan;
  const nn::Named named = model.named_parameters();
  HardnessBlock fb;
  fb.kind = "uncaptured";
  for (size_t i = 0; i < named.size(); ++i) {
    const auto& [name, p] = named[i];
    if (!p.requires_grad()) continue;
    auto it = probe.by_param.find(p.impl());
    const size_t count = it == probe.by_param.end() ? 0 : it->second.size();
    const HardnessRule* rule = count == 1 ? find_hardness_rule(it->second[0]->op) : nullptr;
    std::string uncaptured;
    if (count == 1 && !rule) uncaptured = "its op '" + it->second[0]->op + "' has no hardness rule";
    else if (count == 1 && !it->second[0]->output_grad.defined()) uncaptured = "its layer received no output gradient";
    else if (count > 1) {
      std::string why;
      for (const auto& rec : it->second)
        if (!find_hardness_rule(rec->op)) why = "its op '" + rec->op + "' has no hardness rule";
        else if (!rec->output_grad.defined()) why = "a layer using it received no output gradient";
      if (why.empty()) {
        plan.blocks.push_back(shared_block(name, p, int(i), it->second));
        continue;
      }
      uncaptured = "shared by " + std::to_string(count) + " layers and " + why;
    }
    else if (count == 0) {
      if (i < probe.param_grads.size() && probe.param_grads[i].defined())
        uncaptured = "reached by an op other than " + captured_ops();
      else {
        plan.notices.push_back("block '" + name + "': not reached by the loss (zero gradient); left out");
        continue;
      }
    }
    if (!uncaptured.empty()) {
      fb.params.push_back(p);
      fb.param_index.push_back(int(i));
      fb.numel += p.numel();
      fb.name += (fb.name.empty() ? "" : ", ") + name;
      plan.notices.push_back("block '" + name + "': not captured (" + uncaptured +
                             "); fallback: per-sample gradients by one backward per sample (exact, slow)");
      continue;
    }
    const CaptureRecord& rec = *it->second[0];
    HardnessBlock b;
    b.name = name;
    b.rule = rule;
    b.role = rec.weight.impl() == p.impl() ? ParamRole::weight : ParamRole::bias;
    b.params = {p};
    b.param_index = {int(i)};
    b.numel = p.numel();
    b.positions = rec.positions;
    rule->plan(rec, b);
    // The cost model (see hardness.h): exact FLOPs per (forget, retain) pair.
    if (b.factored) {
      const double t = double(b.positions), pp = double(b.out), d = double(b.in);
      b.ghost_pair_flops = 2 * t * t * (pp + d) + t * t;
      b.mat_pair_flops = 2 * pp * d;
      b.mat_sample_flops = 2 * t * pp * d;
      b.ghost = path == GhostPath::ghost || (path == GhostPath::automatic && b.ghost_pair_flops < b.mat_pair_flops);
    } else {
      b.mat_pair_flops = 2.0 * double(b.numel);
      b.mat_sample_flops = 2.0 * double(b.positions) * double(b.numel);
    }
    b.rep_elems = b.ghost ? b.positions * (b.in + b.out) : b.numel;
    plan.blocks.push_back(b);
  }
  if (!fb.params.empty()) {
    fb.rep_elems = fb.numel;
    fb.mat_pair_flops = 2.0 * double(fb.numel);
    plan.blocks.push_back(fb);
  }
  for (const HardnessBlock& b : plan.blocks) {
    plan.rep_elems += b.rep_elems;
    plan.max_ghost_t = std::max(plan.max_ghost_t, ghost_t(b));
  }
  return plan;
}

// ------------------------------------------------------------------------------------------------
// Representations, norms, similarity, row form

SampleReps build_reps(nn::Module& model, const BlockPlan& plan, const CapturedBatch& cb, int64_t s0, int64_t n) {
  if (s0 < 0 || n < 1 || s0 + n > cb.n) throw Error("build_reps: sample range outside the captured batch");
  SampleReps reps;
  reps.n = n;
  for (const HardnessBlock& b : plan.blocks) {
    if (!b.rule) {
      BlockRep r;
      r.p = per_sample_gradients(model, cb.inputs.narrow(0, s0, n), cb.labels.narrow(0, s0, n), b.params, cb.loss);
      reps.blocks.push_back(r);
    } else {
      reps.blocks.push_back(b.parts.empty() ? b.rule->rep(record_of(b, cb), b, s0, n, b.ghost) : shared_rep(b, cb, s0, n));
    }
  }
  return reps;
}

SampleReps allocate_reps(const BlockPlan& plan, int64_t n, DType dtype, Device device) {
  SampleReps reps;
  reps.n = n;
  for (const HardnessBlock& b : plan.blocks) {
    BlockRep r;
    if (b.ghost) {
      r.x = Tensor::empty({n * b.positions, b.in}, dtype, device);
      r.y = Tensor::empty({n * b.positions, b.out}, dtype, device);
    } else {
      r.p = Tensor::empty({n, b.numel}, dtype, device);
    }
    reps.blocks.push_back(r);
  }
  return reps;
}

void store_reps(const BlockPlan& plan, const SampleReps& src, SampleReps& dst, int64_t at) {
  if (at < 0 || at + src.n > dst.n) throw Error("store_reps: samples outside the store");
  for (size_t i = 0; i < plan.blocks.size(); ++i) {
    const HardnessBlock& b = plan.blocks[i];
    const BlockRep& s = src.blocks[i];
    BlockRep& d = dst.blocks[i];
    if (b.ghost) {
      d.x.narrow(0, at * b.positions, src.n * b.positions).copy_(s.x);
      d.y.narrow(0, at * b.positions, src.n * b.positions).copy_(s.y);
    } else {
      d.p.narrow(0, at, src.n).copy_(s.p);
    }
  }
}

void add_sample_norms(const BlockPlan& plan, const SampleReps& reps, Tensor& out) {
  const int64_t n = reps.n;
  for (size_t bi = 0; bi < plan.blocks.size(); ++bi) {
    const HardnessBlock& b = plan.blocks[bi];
    const BlockRep& r = reps.blocks[bi];
    hardness_kernels(out, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      if (!b.ghost) {
        kernels::segment_rowdot(ctx, n, 1, b.numel, r.p.data<T>(), r.p.data<T>(), out.data<T>());
        return;
      }
      // Ghost norm: ||grad_i||^2 = <A_i A_i^T, G_i G_i^T>_F with two T x T Gram matrices per sample.
      const int64_t t = b.positions;
      Tensor ga = Tensor::empty({n, t, t}, out.dtype(), out.device()), gg = Tensor::empty({n, t, t}, out.dtype(), out.device());
      kernels::gemm_batched(ctx, false, true, t, t, b.in, T(1), r.x.data<T>(), b.in, t * b.in, r.x.data<T>(), b.in,
                            t * b.in, T(0), ga.data<T>(), t, t * t, n);
      kernels::gemm_batched(ctx, false, true, t, t, b.out, T(1), r.y.data<T>(), b.out, t * b.out, r.y.data<T>(), b.out,
                            t * b.out, T(0), gg.data<T>(), t, t * t, n);
      kernels::segment_rowdot(ctx, n, t, t, ga.data<T>(), gg.data<T>(), out.data<T>());
    });
  }
}

int64_t gram_elems(const BlockPlan& plan, int64_t nf, int64_t nr) {
  return 2 * nf * nr * plan.max_ghost_t * plan.max_ghost_t;
}

void add_similarity(const BlockPlan& plan, const SampleReps& f, const SampleReps& r, int64_t r0, int64_t nr, Tensor& k,
                    Tensor& gram) {
  const int64_t nf = f.n;
  if (r0 < 0 || nr < 1 || r0 + nr > r.n) throw Error("add_similarity: retain slice outside the retain samples");
  if (k.numel() < nf * nr) throw Error("add_similarity: K tile too small");
  if (plan.max_ghost_t > 0 && (!gram.defined() || gram.numel() < gram_elems(plan, nf, nr)))
    throw Error("add_similarity: Gram workspace too small");
  for (size_t bi = 0; bi < plan.blocks.size(); ++bi) {
    const HardnessBlock& b = plan.blocks[bi];
    const BlockRep& fr = f.blocks[bi];
    const BlockRep& rr = r.blocks[bi];
    hardness_kernels(k, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      if (!b.ghost) {
        // K += P_f P_r^T
        kernels::gemm(ctx, false, true, nf, nr, b.numel, T(1), fr.p.data<T>(), b.numel,
                      rr.p.data<T>() + r0 * b.numel, b.numel, T(1), k.data<T>(), nr);
        return;
      }
      // K[j,i] += sum_{t,s} (A_f A_r^T)[jt, is] (G_f G_r^T)[jt, is]
      const int64_t t = b.positions, mf = nf * t, mr = nr * t;
      T* ga = gram.data<T>();
      T* gg = ga + mf * mr;
      kernels::gemm(ctx, false, true, mf, mr, b.in, T(1), fr.x.data<T>(), b.in, rr.x.data<T>() + r0 * t * b.in, b.in,
                    T(0), ga, mr);
      kernels::gemm(ctx, false, true, mf, mr, b.out, T(1), fr.y.data<T>(), b.out, rr.y.data<T>() + r0 * t * b.out,
                    b.out, T(0), gg, mr);
      kernels::ghost_hadamard_reduce(ctx, nf, nr, t, t, ga, gg, mr, k.data<T>());
    });
  }
}

void add_row_form(nn::Module& model, const BlockPlan& plan, const CapturedBatch& cb, int64_t s0, int64_t n,
                  const std::vector<Tensor>& h, Tensor& out) {
  for (const HardnessBlock& b : plan.blocks) {
    if (b.rule) {
      const Tensor hb = h[size_t(b.param_index[0])].contiguous();
      if (b.parts.empty()) b.rule->row_form(record_of(b, cb), b, s0, n, hb, out);
      for (size_t k = 0; k < b.parts.size(); ++k) b.parts[k].rule->row_form(record_of(b, cb, k), b.parts[k], s0, n, hb, out);
      continue;
    }
    // Uncaptured parameters: per-sample gradients by backward passes times h, one GEMV.
    const Tensor p = per_sample_gradients(model, cb.inputs.narrow(0, s0, n), cb.labels.narrow(0, s0, n), b.params, cb.loss);
    std::vector<Tensor> parts;
    for (int idx : b.param_index) parts.push_back(h[size_t(idx)].reshape({-1}));
    add_rows_dot(p, concat(parts, 0), n, b.numel, out);
  }
}

namespace {

Tensor concat_labels(const Tensor& a, const Tensor& b) {
  std::vector<int32_t> v = a.to(Device{}).contiguous().to_vector<int32_t>();
  std::vector<int32_t> w = b.to(Device{}).contiguous().to_vector<int32_t>();
  v.insert(v.end(), w.begin(), w.end());
  return Tensor::from_vector<int32_t>(v, {int64_t(v.size())}).to(a.device());
}

}  // namespace

PairedRowForm row_form_paired(nn::Module& model, const BlockPlan& plan, const Tensor& retain_x, const Tensor& retain_y,
                              const Tensor& forget_x, const Tensor& forget_y) {
  const int64_t nr = retain_x.shape()[0], nf = forget_x.shape()[0];
  const std::vector<Tensor> params = model.parameters();
  clear_grads(params);
  std::vector<Tensor> rsum, fsum;
  CapturedBatch cb;
  cb.inputs = concat({retain_x, forget_x}, 0);
  cb.labels = concat_labels(retain_y, forget_y);
  cb.n = nr + nf;
  cb.loss = image_sample_losses;
  {
    PairedScope scope(nr + nf, nr);
    for (const Tensor& p : params) {
      rsum.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
      fsum.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
      if (p.requires_grad()) scope.route(p, rsum.back(), fsum.back());
    }
    CaptureScope capture(params);
    Tensor losses = image_sample_losses(model, cb.inputs, cb.labels);
    cb.losses = host_doubles(losses);
    sum(losses).backward();
    if (!scope.valid()) throw Error("row_form_paired: the paired pass is not valid here: " + scope.reason());
    cb.records = capture.records();
  }
  for (const Tensor& p : params)
    if (p.grad().defined()) {
      clear_grads(params);
      throw Error("row_form_paired: parameter '" + p.name() + "' is used by an op without a paired backward");
    }
  for (const auto& rec : cb.records) {
    if (rec->weight.defined()) cb.by_param[rec->weight.impl()].push_back(rec);
    if (rec->bias.defined()) cb.by_param[rec->bias.impl()].push_back(rec);
  }
  PairedRowForm out;
  for (size_t i = 0; i < params.size(); ++i) {
    out.retain_mean.push_back(mul_scalar(rsum[i], 1.0 / double(nr)));
    out.forget_mean.push_back(mul_scalar(fsum[i], 1.0 / double(nf)));
  }
  out.kappa = Tensor::zeros({nf}, params[0].dtype(), params[0].device());
  add_row_form(model, plan, cb, nr, nf, out.retain_mean, out.kappa);
  return out;
}

SimilarityFlops similarity_flops(const BlockPlan& plan, int64_t nf, int64_t nr) {
  SimilarityFlops fl;
  const double f = double(nf), r = double(nr);
  double total_params = 0;
  for (const HardnessBlock& b : plan.blocks) {
    total_params += double(b.numel);
    const double t = double(b.positions);
    if (b.ghost) fl.full_k += f * r * b.ghost_pair_flops;
    else fl.full_k += (f + r) * b.mat_sample_flops + f * r * b.mat_pair_flops;
    if (b.factored) fl.row_form += f * (2 * t * double(b.out) * double(b.in) + 2 * t * double(b.out));
    else fl.row_form += f * (b.mat_sample_flops + 2 * double(b.numel));
  }
  fl.baseline_gemm = 2 * f * r * total_params;
  return fl;
}

// ------------------------------------------------------------------------------------------------
// The report

std::string hardness_verdict(double kappa, int collateral_blocks, int blocks, double share_hard) {
  if (2 * collateral_blocks > blocks) return "hard: expect collateral forgetting";
  // A well-trained model sits near a minimum of the full loss, where the retain and forget mean
  // gradients nearly cancel (kappa < 0 whatever the split); the per-sample view then tells whether
  // many forget samples are retain-like all the same.
  if (kappa <= 0 && share_hard <= kEasyHardShare) return "easy";
  return "moderate";
}

namespace {

std::vector<int64_t> pick(const std::vector<int64_t>& all, int64_t n, uint64_t seed) {
  if (n >= int64_t(all.size())) return all;
  std::vector<int64_t> v = all;
  Rng rng(seed);
  rng.shuffle(v);
  v.resize(size_t(n));
  std::sort(v.begin(), v.end());
  return v;
}

std::string mb(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f MB", bytes / (1024.0 * 1024.0));
  return b;
}

// Bytes of the per-forget-tile buffers: its representations, the Gram workspace, K and its host copy.
double tile_bytes(const BlockPlan& plan, int64_t bf, int64_t br, size_t esz) {
  return double(esz) * (double(bf) * double(plan.rep_elems) + double(gram_elems(plan, bf, br)) + double(bf) * double(br)) +
         8.0 * double(bf) * double(br);
}

void accumulate(std::vector<Tensor>& sums, const std::vector<Tensor>& add) {
  if (sums.empty()) {
    for (const Tensor& g : add) sums.push_back(g.defined() ? g.clone() : Tensor());
    return;
  }
  for (size_t i = 0; i < add.size(); ++i) {
    if (!add[i].defined()) continue;
    if (!sums[i].defined()) {
      sums[i] = add[i].clone();
      continue;
    }
    hardness_kernels(sums[i], [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::axpby(ctx, sums[i].numel(), T(1), add[i].contiguous().template data<T>(), T(1), sums[i].data<T>());
    });
  }
}

// The samples [start, start + count) of n that a rank handles: whole chunks of `chunk` samples dealt
// out by shard_of, so every capture batch is the one the 1-rank run makes (per-sample results then do
// not depend on the number of ranks; only the sums over samples change order).
Shard chunk_shard(int64_t n, int64_t chunk, int rank, int ranks) {
  const int64_t chunks = (n + chunk - 1) / chunk;
  const Shard c = shard_of(chunks, rank, ranks);
  const int64_t start = std::min(n, c.start * chunk);
  return {start, std::min(n, (c.start + c.count) * chunk) - start};
}

// Sums a tensor in place over the ranks (host or device memory, f32 or f64).
void all_reduce_tensor(Collectives& comm, Tensor& t) {
  if (comm.size() == 1 || t.numel() == 0) return;
  if (!t.is_contiguous()) throw Error("hardness: all_reduce of a non-contiguous tensor");
  if (t.dtype() == DType::f64) comm.all_reduce_sum(t.data<double>(), size_t(t.numel()), t.device());
  else comm.all_reduce_sum(t.data<float>(), size_t(t.numel()), t.device());
}

// Per-parameter gradient sums over the ranks; a rank without a gradient for a parameter adds zeros.
void all_reduce_sums(Collectives& comm, std::vector<Tensor>& sums, const std::vector<Tensor>& params, DType dt, Device dev) {
  if (comm.size() == 1) return;
  sums.resize(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    if (!sums[i].defined()) sums[i] = Tensor::zeros(params[i].shape(), dt, dev);
    all_reduce_tensor(comm, sums[i]);
  }
}

void check_options(const std::vector<int64_t>& forget_all, const std::vector<int64_t>& retain_all,
                   const HardnessOptions& opt) {
  if (forget_all.empty()) throw InputError("--split: the forget set is empty");
  if (retain_all.empty()) throw InputError("--split: the retain set is empty");
  if (opt.forget_samples < 0 || opt.retain_samples < 0) throw InputError("--forget-samples / --retain-samples must be >= 0");
  if (opt.forget_samples > int64_t(forget_all.size()))
    throw InputError("--forget-samples " + std::to_string(opt.forget_samples) + ": the forget set has only " +
                     std::to_string(forget_all.size()) + " samples");
  if (opt.retain_samples > int64_t(retain_all.size()))
    throw InputError("--retain-samples " + std::to_string(opt.retain_samples) + ": the retain set has only " +
                     std::to_string(retain_all.size()) + " samples");
  if (opt.memory_bytes < 1) throw InputError("--memory-mb must be positive");
  if (opt.chunk < 1) throw InputError("--batch must be at least 1");
  if (!(opt.lr > 0) || !std::isfinite(opt.lr)) throw InputError("--lr: must be a positive number");
  if (!(opt.ratio >= 0) || !std::isfinite(opt.ratio)) throw InputError("--ratio: must be >= 0");
  if (opt.heat_size < 0) throw InputError("heat map size must be >= 0");
}

// The model and data of one `hamu hardness` run: batches in the model's dtype on its device, captured.
struct Pass {
  nn::Module& model;
  const HardnessSource& source;
  DType dt;
  Device dev;

  Batch gather(const std::vector<int64_t>& idx, size_t a, size_t b) const {
    return source.gather(std::vector<int64_t>(idx.begin() + int64_t(a), idx.begin() + int64_t(b)), dt, dev);
  }
  // Samples [a, b) of idx captured with parameter gradients; a non-finite loss is refused by name.
  CapturedBatch capture(const std::vector<int64_t>& idx, size_t a, size_t b, const char* side) const {
    Batch batch = gather(idx, a, b);
    CapturedBatch cb = capture_batch(model, batch.images, batch.labels, true, source.loss());
    for (size_t i = 0; i < cb.losses.size(); ++i)
      if (!std::isfinite(cb.losses[i]))
        throw Error(std::string("hardness: ") + side + " sample " + std::to_string(idx[a + i]) +
                    " has a non-finite loss; its gradient is undefined");
    return cb;
  }
};

// The plan from a small probe capture (which layers, which path).
BlockPlan probe_plan(const Pass& pass, const std::vector<int64_t>& retain_order, GhostPath path) {
  std::vector<int64_t> probe_idx(retain_order.begin(), retain_order.begin() + std::min<size_t>(4, retain_order.size()));
  Batch pb = pass.gather(probe_idx, 0, probe_idx.size());
  CapturedBatch probe = capture_batch(pass.model, pb.images, pb.labels, true, pass.source.loss());
  return plan_blocks(pass.model, probe, path);
}

// Tile sizes (forget bf x retain br) and the retain sample size nr from the memory budget.
struct Sizing {
  int64_t bf = 0, br = 0, nr = 0;
};
Sizing size_from_budget(const BlockPlan& plan, const HardnessOptions& opt, int64_t nf_all, int64_t retain_total,
                        size_t esz, std::vector<std::string>& notices) {
  const double budget = double(opt.memory_bytes);
  const double rep_bytes = double(esz) * double(plan.rep_elems);
  int64_t bf = opt.forget_tile > 0 ? opt.forget_tile : std::min<int64_t>(opt.chunk, nf_all);
  int64_t br = opt.retain_tile > 0 ? opt.retain_tile : std::min<int64_t>(1024, retain_total);
  bf = std::min(bf, nf_all);
  br = std::min<int64_t>(br, retain_total);
  const double min_need = tile_bytes(plan, 1, 1, esz) + rep_bytes;
  if (min_need > budget)
    throw InputError("--memory-mb: " + mb(budget) + " is too small for one tile: 1 forget x 1 retain sample needs " +
                     mb(min_need) + " (" + std::to_string(plan.rep_elems) + " per-sample values per sample" +
                     (plan.max_ghost_t ? ", Gram tiles of " + std::to_string(plan.max_ghost_t) + " positions" : std::string()) + ")");
  if (opt.forget_tile <= 0 || opt.retain_tile <= 0) {
    while (tile_bytes(plan, bf, br, esz) > budget / 2 && (bf > 1 || br > 1)) {
      if (br >= bf && br > 1) br = (br + 1) / 2;
      else bf = (bf + 1) / 2;
    }
  }
  const double tiles = tile_bytes(plan, bf, br, esz);
  const int64_t capacity = int64_t(std::max(0.0, (budget - tiles) / rep_bytes));
  int64_t nr = 0;
  if (opt.retain_samples > 0) {
    if (opt.retain_samples > capacity)
      throw InputError("--retain-samples " + std::to_string(opt.retain_samples) + " needs " +
                       mb(rep_bytes * double(opt.retain_samples) + tiles) + " (" + mb(rep_bytes) +
                       " of per-sample data per retain sample plus " + mb(tiles) + " of tiles), more than --memory-mb " +
                       mb(budget) + " allows: raise --memory-mb or ask for at most " + std::to_string(capacity));
    nr = opt.retain_samples;
  } else {
    nr = std::min<int64_t>(capacity, retain_total);
    if (nr < 1) throw InputError("--memory-mb: " + mb(budget) + " holds no retain sample besides the tiles");
    if (nr < retain_total)
      notices.push_back("retain sample: " + std::to_string(nr) + " of " + std::to_string(retain_total) +
                        " retain images (all that --memory-mb " + mb(budget) +
                        " holds; --retain-samples or --memory-mb to change)");
  }
  if (nr < 200 && nr < retain_total)
    notices.push_back("only " + std::to_string(nr) +
                      " retain samples: g_r, kappa and the verdict carry sampling noise of that size");
  return {bf, std::min(br, nr), nr};
}

// Phase 1: the retain sample's per-sample data (kept for every forget tile), its per-sample gradient
// norms and its mean gradient g_r.
struct RetainSide {
  SampleReps store;
  std::vector<Tensor> g_r;     // per model parameter
  std::vector<double> norms;   // ||grad l(r_i)||
};
RetainSide retain_phase(const Pass& pass, const BlockPlan& plan, const std::vector<Tensor>& params,
                        const std::vector<int64_t>& retain, int64_t chunk, Collectives& comm, Progress* bar,
                        int64_t& done) {
  const int64_t nr = int64_t(retain.size());
  RetainSide rs;
  rs.store = allocate_reps(plan, nr, pass.dt, pass.dev);
  // Several ranks: each fills its shard of the store and the others add zeros.
  if (comm.size() > 1)
    for (BlockRep& r : rs.store.blocks)
      for (Tensor* t : {&r.p, &r.x, &r.y})
        if (t->defined()) t->zero_();
  Tensor r_norm2 = Tensor::zeros({nr}, pass.dt, pass.dev);
  std::vector<Tensor> retain_sum;
  const Shard mine = chunk_shard(nr, chunk, comm.rank(), comm.size());
  const size_t end = size_t(mine.start + mine.count);
  for (size_t a = size_t(mine.start); a < end; a += size_t(chunk)) {
    const size_t b = std::min(end, a + size_t(chunk));
    CapturedBatch cb = pass.capture(retain, a, b, "retain");
    SampleReps reps = build_reps(pass.model, plan, cb, 0, cb.n);
    store_reps(plan, reps, rs.store, int64_t(a));
    Tensor nslice = r_norm2.narrow(0, int64_t(a), cb.n);
    add_sample_norms(plan, reps, nslice);
    accumulate(retain_sum, cb.param_grads);
    done += cb.n;
    if (bar) bar->update(done, "retain");
  }
  if (comm.size() > 1) {
    for (BlockRep& r : rs.store.blocks)
      for (Tensor* t : {&r.p, &r.x, &r.y})
        if (t->defined()) all_reduce_tensor(comm, *t);
    all_reduce_tensor(comm, r_norm2);
    all_reduce_sums(comm, retain_sum, params, pass.dt, pass.dev);
  }
  rs.g_r.resize(params.size());
  for (size_t i = 0; i < params.size(); ++i)
    rs.g_r[i] = retain_sum[i].defined() ? mul_scalar(retain_sum[i], 1.0 / double(nr))
                                        : Tensor::zeros(params[i].shape(), pass.dt, pass.dev);
  rs.norms = host_doubles(r_norm2);
  for (double& x : rs.norms) x = std::sqrt(std::max(0.0, x));
  return rs;
}

// Which entries of K the heat map keeps: every stride_f-th forget row, every stride_r-th retain column.
struct HeatGrid {
  int64_t stride_f = 0, stride_r = 0;
  bool row(const HardnessReport& rep, int64_t j) const {
    return stride_f > 0 && j % stride_f == 0 && j / stride_f < int64_t(rep.heat_rows.size());
  }
  bool col(const HardnessReport& rep, int64_t i) const {
    return i % stride_r == 0 && i / stride_r < int64_t(rep.heat_cols.size());
  }
};
HeatGrid init_heat(HardnessReport& rep, int heat, int64_t nf_all, const std::vector<int64_t>& retain,
                   const HardnessSource& source, const std::vector<double>& r_norms) {
  const int64_t nr = int64_t(retain.size());
  HeatGrid grid;
  if (heat <= 0) return grid;
  grid.stride_f = std::max<int64_t>(1, nf_all / heat);
  grid.stride_r = std::max<int64_t>(1, nr / heat);
  for (int64_t j = 0; j < nf_all && int64_t(rep.heat_rows.size()) < heat; j += grid.stride_f) rep.heat_rows.push_back(j);
  for (int64_t i = 0; i < nr && int64_t(rep.heat_cols.size()) < heat; i += grid.stride_r) {
    rep.heat_cols.push_back(retain[size_t(i)]);
    rep.heat_col_labels.push_back(source.label(retain[size_t(i)]));
  }
  rep.heat.assign(rep.heat_rows.size(), std::vector<double>(rep.heat_cols.size(), 0.0));
  for (size_t c = 0; c < rep.heat_cols.size(); ++c) rep.heat_col_norms.push_back(r_norms[c * size_t(grid.stride_r)]);
  return grid;
}

// Phase 2: forget tiles against the retain store: K (tiled), row form and norms, per forget sample
// (rep.samples) and into the heat map, for this rank's shard `mine` of the forget samples. Returns the
// summed forget gradient per model parameter (of the shard).
std::vector<Tensor> forget_phase(const Pass& pass, const BlockPlan& plan, const RetainSide& rs,
                                 const std::vector<int64_t>& forget, const std::vector<int64_t>& retain,
                                 const Sizing& sz, const HeatGrid& grid, const Shard& mine, HardnessReport& rep,
                                 Progress* bar, int64_t& done) {
  const int64_t nr = sz.nr, br = sz.br;
  std::vector<Tensor> forget_sum;
  Tensor gram = plan.max_ghost_t > 0 ? Tensor::empty({std::max<int64_t>(1, gram_elems(plan, sz.bf, br))}, pass.dt, pass.dev)
                                     : Tensor();
  Tensor ktile = Tensor::empty({sz.bf * br}, pass.dt, pass.dev);
  const size_t end = size_t(mine.start + mine.count);
  for (size_t a = size_t(mine.start); a < end; a += size_t(sz.bf)) {
    const size_t b = std::min(end, a + size_t(sz.bf));
    CapturedBatch cb = pass.capture(forget, a, b, "forget");
    const int64_t n = cb.n;
    SampleReps reps = build_reps(pass.model, plan, cb, 0, n);
    Tensor f_norm2 = Tensor::zeros({n}, pass.dt, pass.dev), row = Tensor::zeros({n}, pass.dt, pass.dev);
    add_sample_norms(plan, reps, f_norm2);
    add_row_form(pass.model, plan, cb, 0, n, rs.g_r, row);
    accumulate(forget_sum, cb.param_grads);
    const std::vector<double> fn2 = host_doubles(f_norm2), kap = host_doubles(row);
    std::vector<double> ksum(size_t(n), 0.0), best_cos(size_t(n), -std::numeric_limits<double>::infinity()),
        best_k(size_t(n), 0.0);
    std::vector<int64_t> best_i(size_t(n), -1);
    for (int64_t r0 = 0; r0 < nr; r0 += br) {
      const int64_t m = std::min(br, nr - r0);
      Tensor k = ktile.narrow(0, 0, n * m);
      k.zero_();
      add_similarity(plan, reps, rs.store, r0, m, k, gram);
      const std::vector<double> kh = host_doubles(k);
      for (int64_t j = 0; j < n; ++j) {
        const double fnorm = std::sqrt(std::max(0.0, fn2[size_t(j)]));
        const int64_t jj = int64_t(a) + j;
        const bool heat_row = grid.row(rep, jj);
        for (int64_t i = 0; i < m; ++i) {
          const double kv = kh[size_t(j * m + i)];
          ksum[size_t(j)] += kv;
          const double den = fnorm * rs.norms[size_t(r0 + i)];
          // A zero gradient (a pair whose answer was truncated away, a saturated image) has no direction:
          // no retain sample is similar to it (similar_index stays -1).
          const double c = den > 0 ? kv / den : 0.0;
          if (den > 0 && c > best_cos[size_t(j)]) {
            best_cos[size_t(j)] = c;
            best_k[size_t(j)] = kv;
            best_i[size_t(j)] = r0 + i;
          }
          const int64_t ii = r0 + i;
          if (heat_row && grid.col(rep, ii)) rep.heat[size_t(jj / grid.stride_f)][size_t(ii / grid.stride_r)] = kv;
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      SampleHardness& s = rep.samples[a + size_t(j)];
      s.index = forget[a + size_t(j)];
      s.label = pass.source.label(s.index);
      s.loss = cb.losses[size_t(j)];
      s.kappa = kap[size_t(j)];
      s.kappa_k = ksum[size_t(j)] / double(nr);
      s.norm = std::sqrt(std::max(0.0, fn2[size_t(j)]));
      if (best_i[size_t(j)] >= 0) {
        s.similar_index = retain[size_t(best_i[size_t(j)])];
        s.similar_label = pass.source.label(s.similar_index);
        s.similar_k = best_k[size_t(j)];
        s.similar_cosine = best_cos[size_t(j)];
      }
    }
    done += n;
    if (bar) bar->update(done, "forget");
  }
  return forget_sum;
}

// Every rank's forget samples (and heat-map rows) to every rank: fixed-size records, each rank's shard
// (whole forget tiles of `tile` samples) padded to the largest, in rank order.
void gather_samples(Collectives& comm, HardnessReport& rep, int64_t tile) {
  if (comm.size() == 1) return;
  constexpr size_t kFields = 10;
  const int64_t nf = int64_t(rep.samples.size());
  const int ranks = comm.size();
  int64_t widest = 1;
  for (int r = 0; r < ranks; ++r) widest = std::max(widest, chunk_shard(nf, tile, r, ranks).count);
  const Shard mine = chunk_shard(nf, tile, comm.rank(), ranks);
  std::vector<double> pack(size_t(widest) * kFields, 0.0);
  for (int64_t j = 0; j < mine.count; ++j) {
    const SampleHardness& x = rep.samples[size_t(mine.start + j)];
    const double f[kFields] = {double(x.index), double(x.label), x.loss, x.kappa, x.kappa_k, x.norm,
                               double(x.similar_index), double(x.similar_label), x.similar_k, x.similar_cosine};
    std::copy(f, f + kFields, pack.begin() + int64_t(size_t(j) * kFields));
  }
  const std::vector<uint8_t> all = comm.all_gather(pack.data(), pack.size() * sizeof(double));
  for (int r = 0; r < ranks; ++r) {
    const Shard sh = chunk_shard(nf, tile, r, ranks);
    const double* base = reinterpret_cast<const double*>(all.data()) + size_t(r) * pack.size();
    for (int64_t j = 0; j < sh.count; ++j) {
      const double* f = base + size_t(j) * kFields;
      SampleHardness& x = rep.samples[size_t(sh.start + j)];
      x.index = int64_t(f[0]);
      x.label = int32_t(f[1]);
      x.loss = f[2];
      x.kappa = f[3];
      x.kappa_k = f[4];
      x.norm = f[5];
      x.similar_index = int64_t(f[6]);
      x.similar_label = int32_t(f[7]);
      x.similar_k = f[8];
      x.similar_cosine = f[9];
    }
  }
  // Heat-map rows: each is filled on the rank that owns its forget sample, zero elsewhere.
  std::vector<double> heat;
  for (const auto& row : rep.heat) heat.insert(heat.end(), row.begin(), row.end());
  all_reduce_host(comm, heat);
  size_t k = 0;
  for (auto& row : rep.heat)
    for (double& v : row) v = heat[k++];
}

kernels::HamuConfig solver_config(const HardnessOptions& opt) {
  kernels::HamuConfig cfg;
  cfg.variant = kernels::hamu_q;
  cfg.scope = kernels::scope_layer;
  cfg.split = kernels::split_grad_norm;
  cfg.lr = opt.lr;
  cfg.constraint = opt.ratio * opt.lr;
  cfg.clip = opt.clip;
  return cfg;
}

// Mean gradients per block, kappa, and the solver's view at --ratio / --lr (rep.kappa, norms, cosine,
// solver, blocks).
void report_blocks(HardnessReport& rep, const Pass& pass, const BlockPlan& plan, const std::vector<Tensor>& params,
                   const std::vector<Tensor>& g_r, const std::vector<Tensor>& forget_sum, int64_t nf_all,
                   const HardnessOptions& opt) {
  std::vector<double> stats;
  double rr = 0, ff = 0, rf = 0;
  std::vector<int> stat_param;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].requires_grad()) continue;
    Tensor gf = forget_sum.size() > i && forget_sum[i].defined()
                    ? mul_scalar(forget_sum[i], 1.0 / double(nf_all))
                    : Tensor::zeros(params[i].shape(), pass.dt, pass.dev);
    const double a2 = sum_squares(g_r[i]).item(), b2 = sum_squares(gf).item(), ab = dot(g_r[i], gf).item();
    stats.insert(stats.end(), {a2, b2, ab});
    stat_param.push_back(int(i));
    rr += a2;
    ff += b2;
    rf += ab;
  }
  rep.kappa = rf;
  rep.retain_norm = std::sqrt(rr);
  rep.forget_norm = std::sqrt(ff);
  rep.cosine = rep.retain_norm * rep.forget_norm > 0 ? rf / (rep.retain_norm * rep.forget_norm) : 0.0;
  const kernels::HamuConfig cfg = solver_config(opt);
  const int count = int(stat_param.size());
  std::vector<double> coef(size_t(2 * count));
  kernels::hamu_solve_step(cfg, count, stats.data(), coef.data(), &rep.solver);
  // Per-block thresholds as the solver sees them (clipped statistics, grad-norm split of B).
  const double sr = rep.solver.retain_scale, sf = rep.solver.forget_scale;
  double norm_sum = 0;
  for (int b = 0; b < count; ++b)
    norm_sum += std::sqrt(stats[size_t(3 * b)] * sr * sr) * std::sqrt(stats[size_t(3 * b + 1)] * sf * sf);
  for (int b = 0; b < count; ++b) {
    const int pi = stat_param[size_t(b)];
    BlockHardness bh;
    bh.name = params[size_t(pi)].name();
    bh.numel = params[size_t(pi)].numel();
    bh.kind = "unused";
    bh.path = "-";
    for (const HardnessBlock& hb : plan.blocks)
      for (int idx : hb.param_index)
        if (idx == pi) {
          bh.kind = hb.kind;
          bh.path = hb.path();
          bh.positions = hb.positions;
          bh.ghost_pair_flops = hb.ghost_pair_flops;
          bh.mat_pair_flops = hb.mat_pair_flops;
        }
    const double a2 = stats[size_t(3 * b)], b2 = stats[size_t(3 * b + 1)], ab = stats[size_t(3 * b + 2)];
    bh.kappa = ab;
    bh.retain_norm = std::sqrt(a2);
    bh.forget_norm = std::sqrt(b2);
    bh.cosine = a2 > 0 && b2 > 0 ? ab / (bh.retain_norm * bh.forget_norm) : 0.0;
    const double aa = a2 * sr * sr, cc = b2 * sf * sf, d = ab * sr * sf;
    const double radius = kernels::hamu_block_radius(cfg, aa);
    const double bl = kernels::hamu_block_constraint(cfg, aa, cc, d, count, norm_sum, 0.0);
    bh.kappa1 = -bl * std::sqrt(aa) / std::max(radius, kernels::hamu_eps);
    bh.kappa2 = kernels::hamu_kappa2(aa, cc, bl, radius);
    // As the solver counts it (n_collateral, the verdict): a block that cannot gain its B_l within R_l has
    // no step at all, so none that raises the retain loss either; its kappa2 is 0 there (the root clamped).
    const bool infeasible = kernels::hamu_solve_block(aa, cc, d, bl, radius, false).branch == kernels::branch_infeasible;
    bh.collateral = d > bh.kappa2 && !infeasible;
    rep.blocks.push_back(bh);
  }
}

// Per-sample summaries and the verdict.
void summarise(HardnessReport& rep, const HardnessOptions& opt, const char* same_label) {
  const double nf_all = double(rep.samples.size());
  const double grn = rep.retain_norm;
  int64_t hard = 0;
  double cos_sum = 0, kmax = 0, dmax = 0;
  for (SampleHardness& s : rep.samples) {
    s.cosine = s.norm * grn > 0 ? s.kappa / (s.norm * grn) : 0.0;
    hard += s.kappa > 0;
    cos_sum += s.cosine;
    kmax = std::max(kmax, std::abs(s.kappa));
    dmax = std::max(dmax, std::abs(s.kappa - s.kappa_k));
  }
  rep.share_hard = double(hard) / nf_all;
  rep.mean_sample_cosine = cos_sum / nf_all;
  rep.row_form_check = kmax > 0 ? dmax / kmax : 0.0;
  int64_t same = 0;
  double sim_sum = 0;
  for (const SampleHardness& s : rep.samples) {
    same += s.similar_label == s.label;
    sim_sum += s.similar_cosine;
  }
  rep.share_same_class = double(same) / nf_all;
  rep.mean_similar_cosine = sim_sum / nf_all;
  rep.verdict = hardness_verdict(rep.kappa, rep.solver.n_collateral, rep.solver.n_blocks, rep.share_hard);
  char detail[768];
  std::snprintf(detail, sizeof detail,
                "kappa = <g_r, g_f> = %.4g, cosine %.3f: %s; at ratio %g, lr %g (clip %g) kappa_l > kappa2_l in %d of "
                "%d blocks%s; %.1f%% of the %lld forget samples are hard (kappa_j > 0), and for %.1f%% the most "
                "similar retain sample %s (mean cosine %.3f)",
                rep.kappa, rep.cosine,
                rep.kappa > 0 ? "descending the retain loss also lowers the forget loss"
                              : "descending the retain loss already raises the forget loss",
                opt.ratio, opt.lr, opt.clip, rep.solver.n_collateral, rep.solver.n_blocks,
                rep.solver.n_collateral > 0 ? " (there every step that keeps forgetting also raises the retain loss)" : "",
                100.0 * rep.share_hard, (long long)rep.samples.size(), 100.0 * rep.share_same_class, same_label,
                rep.mean_similar_cosine);
  rep.verdict_detail = detail;
  if (rep.solver.criterion_met) rep.verdict_detail += "; the stopping criterion is already met (no retain-neutral forget step of size B)";
  if (rep.solver.feasibility_margin < 0) {
    std::snprintf(detail, sizeof detail, "; the constraint B = %g is infeasible at this lr (margin %.3g)",
                  solver_config(opt).constraint, rep.solver.feasibility_margin);
    rep.verdict_detail += detail;
  }
}

}  // namespace

HardnessReport compute_hardness(nn::Module& model, const ImageDataset& train, const Normalizer& norm,
                                const std::vector<int64_t>& forget, const std::vector<int64_t>& retain,
                                const HardnessOptions& opt) {
  return compute_hardness(model, ImageHardnessSource(train, norm), forget, retain, opt);
}

HardnessReport compute_hardness(nn::Module& model, const HardnessSource& source, const std::vector<int64_t>& forget_all,
                                const std::vector<int64_t>& retain_all, const HardnessOptions& opt) {
  const double t_start = now_s();
  check_options(forget_all, retain_all, opt);
  nn::EvalModeScope eval_mode(model);
  const std::vector<Tensor> params = model.parameters();
  if (params.empty()) throw InputError("hardness: the model has no parameters");
  const Pass pass{model, source, params[0].dtype(), params[0].device()};
  HardnessReport rep;
  rep.forget_total = int64_t(forget_all.size());
  rep.retain_total = int64_t(retain_all.size());

  const std::vector<int64_t> forget =
      opt.forget_samples > 0 ? pick(forget_all, opt.forget_samples, opt.seed * 7919 + 1) : forget_all;
  std::vector<int64_t> retain_order = retain_all;
  {
    Rng rng(opt.seed * 7919 + 2);
    rng.shuffle(retain_order);
  }
  if (!opt.retain_priority.empty()) {
    std::vector<int64_t> first = opt.retain_priority;
    std::sort(first.begin(), first.end());
    std::stable_partition(retain_order.begin(), retain_order.end(),
                          [&](int64_t i) { return std::binary_search(first.begin(), first.end(), i); });
  }
  const BlockPlan plan = probe_plan(pass, retain_order, opt.path);
  rep.notices = plan.notices;
  if (plan.blocks.empty()) throw InputError("hardness: no parameter of the model is reached by the loss");

  const int64_t nf_all = int64_t(forget.size());
  const Sizing sz = size_from_budget(plan, opt, nf_all, rep.retain_total, dtype_size(pass.dt), rep.notices);
  std::vector<int64_t> retain(retain_order.begin(), retain_order.begin() + sz.nr);
  std::sort(retain.begin(), retain.end());
  rep.n_forget = nf_all;
  rep.n_retain = sz.nr;
  rep.forget_tile = sz.bf;
  rep.retain_tile = sz.br;

  Collectives& comm = opt.comm ? *opt.comm : world();
  const Shard retain_part = chunk_shard(sz.nr, opt.chunk, comm.rank(), comm.size()),
              forget_part = chunk_shard(nf_all, sz.bf, comm.rank(), comm.size());
  std::unique_ptr<Progress> bar;
  if (opt.progress) bar = std::make_unique<Progress>(retain_part.count + forget_part.count, "hardness", source.unit());
  int64_t done = 0;
  const RetainSide rs = retain_phase(pass, plan, params, retain, opt.chunk, comm, bar.get(), done);
  rep.samples.resize(forget.size());
  const HeatGrid grid = init_heat(rep, opt.heat_size, nf_all, retain, source, rs.norms);
  std::vector<Tensor> forget_sum =
      forget_phase(pass, plan, rs, forget, retain, sz, grid, forget_part, rep, bar.get(), done);
  if (bar) bar->finish();
  all_reduce_sums(comm, forget_sum, params, pass.dt, pass.dev);
  gather_samples(comm, rep, sz.bf);

  report_blocks(rep, pass, plan, params, rs.g_r, forget_sum, nf_all, opt);
  summarise(rep, opt, source.same_label());
  rep.seconds = now_s() - t_start;
  return rep;
}

}  // namespace hamu
