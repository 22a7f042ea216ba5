// unlearn/hardness.cpp: capture pass, per-block plans (ghost / materialise / per-sample backward),
// the similarity, row-form and norm kernels over captured data, and the tiled `hamu hardness` driver.
#include "unlearn/hardness.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/paired.h"
#include "engine/progress.h"
#include "engine/rng.h"

namespace hamu {
namespace {

template <class F> void kernels_for(const Tensor& like, F&& f) { dispatch("hardness", like, f); }

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

// The model in eval mode for the duration (BatchNorm on running statistics, dropout off).
class EvalMode {
 public:
  explicit EvalMode(nn::Module& m) : m_(m), was_(m.training()) { m_.eval(); }
  ~EvalMode() { m_.train(was_); }
  EvalMode(const EvalMode&) = delete;
  EvalMode& operator=(const EvalMode&) = delete;

 private:
  nn::Module& m_;
  bool was_;
};

void clear_grads(const std::vector<Tensor>& params) {
  for (Tensor p : params) p.zero_grad();
}

bool is_weight_kind(BlockKind k) {
  return k == BlockKind::linear_weight || k == BlockKind::conv_weight || k == BlockKind::embedding_weight;
}

const CaptureRecord& record_of(const HardnessBlock& b, const CapturedBatch& cb) {
  auto it = cb.by_param.find(b.params[0].impl());
  if (it == cb.by_param.end() || it->second.size() != 1)
    throw Error("hardness: block '" + b.name + "' was not captured in this pass (the model's layers changed between passes?)");
  const CaptureRecord& rec = *it->second[0];
  if (!rec.output_grad.defined()) throw Error("hardness: layer '" + rec.name + "' received no output gradient");
  return rec;
}

// Rows [r0, r0 + n) of t viewed as [rows, width].
Tensor rows_of(const Tensor& t, int64_t width, int64_t r0, int64_t n) {
  return t.reshape({-1, width}).narrow(0, r0, n);
}

// The data of one non-fallback block, materialised ([n, numel]) or as ghost factors.
BlockRep block_rep(const HardnessBlock& b, const CapturedBatch& cb, int64_t s0, int64_t n, bool ghost) {
  const CaptureRecord& rec = record_of(b, cb);
  const Tensor& g = rec.output_grad;
  const DType dt = g.dtype();
  const Device dev = g.device();
  const int64_t t = rec.positions;
  BlockRep rep;
  switch (b.kind) {
    case BlockKind::linear_weight: {
      Tensor a = rows_of(rec.input, b.in, s0 * t, n * t), gy = rows_of(g, b.out, s0 * t, n * t);
      if (ghost) {
        rep.x = a;
        rep.y = gy;
        break;
      }
      rep.p = Tensor::empty({n, b.numel}, dt, dev);
      kernels_for(g, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        // P_i [out, in] = G_i^T A_i over the sample's T rows.
        kernels::gemm_batched(ctx, true, false, b.out, b.in, t, T(1), gy.data<T>(), b.out, t * b.out, a.data<T>(), b.in,
                              t * b.in, T(0), rep.p.data<T>(), b.in, b.numel, n);
      });
      break;
    }
    case BlockKind::linear_bias: {
      Tensor gy = rows_of(g, b.numel, s0 * t, n * t);
      rep.p = Tensor::empty({n, b.numel}, dt, dev);
      kernels_for(g, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::reduce_axis(ctx, kernels::Reduce::sum, n, t, b.numel, gy.data<T>(), rep.p.data<T>(), nullptr);
      });
      break;
    }
    case BlockKind::conv_weight: {
      const kernels::ConvShape& cs = rec.conv;
      const int64_t d = b.in, k = b.out, img = cs.c * cs.h * cs.w;
      Tensor u = Tensor::empty({n, d, t}, dt, dev);
      if (ghost) {
        rep.x = Tensor::empty({n * t, d}, dt, dev);
        rep.y = Tensor::empty({n * t, k}, dt, dev);
      } else {
        rep.p = Tensor::empty({n, b.numel}, dt, dev);
      }
      kernels_for(g, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        const T* x = rec.input.data<T>() + s0 * img;
        const T* gy = g.data<T>() + s0 * k * t;
        kernels::ConvShape one = cs;
        one.n = 1;
        for (int64_t i = 0; i < n; ++i) kernels::im2col(ctx, one, x + i * img, u.data<T>() + i * d * t);
        if (ghost) {
          // Rows per output position: U_i^T [T, D] and G_i^T [T, K].
          const int64_t shape_u[3] = {n, t, d}, stride_u[3] = {d * t, 1, t};
          kernels::strided_copy(ctx, 3, shape_u, stride_u, u.data<T>(), rep.x.data<T>());
          const int64_t shape_g[3] = {n, t, k}, stride_g[3] = {k * t, 1, t};
          kernels::strided_copy(ctx, 3, shape_g, stride_g, gy, rep.y.data<T>());
        } else {
          // P_i [K, D] = G_i [K, T] U_i^T.
          kernels::gemm_batched(ctx, false, true, k, d, t, T(1), gy, t, k * t, u.data<T>(), t, d * t, T(0),
                                rep.p.data<T>(), d, k * d, n);
        }
      });
      break;
    }
    case BlockKind::conv_bias: {
      const int64_t k = rec.conv.k;
      rep.p = Tensor::empty({n, k}, dt, dev);
      kernels_for(g, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::reduce_axis(ctx, kernels::Reduce::sum, n * k, t, 1, g.data<T>() + s0 * k * t, rep.p.data<T>(), nullptr);
      });
      break;
    }
    case BlockKind::embedding_weight: {
      const int64_t vocab = b.in, dim = b.out;
      const int32_t* idx = rec.input.data<int32_t>() + s0 * t;
      Tensor gy = rows_of(g, dim, s0 * t, n * t);
      if (ghost) {
        // One-hot rows: a.a' = [x == x'], through a GEMM like every other block.
        std::vector<double> eye(size_t(vocab * vocab), 0.0);
        for (int64_t v = 0; v < vocab; ++v) eye[size_t(v * vocab + v)] = 1.0;
        Tensor table = Tensor::from_doubles(eye, {vocab, vocab}, dt).to(dev);
        rep.x = Tensor::empty({n * t, vocab}, dt, dev);
        rep.y = gy;
        kernels_for(g, [&](const auto& ctx, auto tag) {
          using T = decltype(tag);
          kernels::embedding_forward(ctx, n * t, vocab, idx, table.data<T>(), rep.x.data<T>());
        });
      } else {
        rep.p = Tensor::zeros({n, b.numel}, dt, dev);
        kernels_for(g, [&](const auto& ctx, auto tag) {
          using T = decltype(tag);
          for (int64_t i = 0; i < n; ++i)
            kernels::embedding_backward(ctx, t, dim, vocab, idx + i * t, gy.data<T>() + i * t * dim,
                                        rep.p.data<T>() + i * b.numel);
        });
      }
      break;
    }
    case BlockKind::norm_weight:
    case BlockKind::norm_bias: {
      const bool bn = rec.kind == CaptureKind::batch_norm;
      // BN: x, G [N, C, HW], statistics per channel; LN: x, G [N*T, d], statistics per row.
      const int64_t c = rec.weight.numel();
      const int64_t per = bn ? c * t : t * c;  // elements per sample
      rep.p = Tensor::empty({n, c}, dt, dev);
      kernels_for(g, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        const T* gy = g.data<T>() + s0 * per;
        if (b.kind == BlockKind::norm_bias) {
          if (bn) kernels::reduce_axis(ctx, kernels::Reduce::sum, n * c, t, 1, gy, rep.p.data<T>(), nullptr);
          else kernels::reduce_axis(ctx, kernels::Reduce::sum, n, t, c, gy, rep.p.data<T>(), nullptr);
          return;
        }
        Tensor centred = Tensor::empty({n * per}, dt, dev), xhat = Tensor::empty({n * per}, dt, dev);
        const T* x = rec.input.data<T>() + s0 * per;
        if (bn) {
          const int64_t shape[3] = {n, c, t}, sx[3] = {c * t, t, 1}, ss[3] = {0, 1, 0};
          kernels::binary_bcast(ctx, kernels::Binary::sub, 3, shape, sx, ss, x, rec.stat_a.data<T>(), centred.data<T>());
          kernels::binary_bcast(ctx, kernels::Binary::mul, 3, shape, sx, ss, centred.data<T>(), rec.stat_b.data<T>(),
                                xhat.data<T>());
        } else {
          const int64_t shape[2] = {n * t, c}, sx[2] = {c, 1}, ss[2] = {1, 0};
          kernels::binary_bcast(ctx, kernels::Binary::sub, 2, shape, sx, ss, x, rec.stat_a.data<T>() + s0 * t,
                                centred.data<T>());
          kernels::binary_bcast(ctx, kernels::Binary::mul, 2, shape, sx, ss, centred.data<T>(),
                                rec.stat_b.data<T>() + s0 * t, xhat.data<T>());
        }
        kernels::binary(ctx, kernels::Binary::mul, n * per, xhat.data<T>(), gy, centred.data<T>());
        if (bn) kernels::reduce_axis(ctx, kernels::Reduce::sum, n * c, t, 1, centred.data<T>(), rep.p.data<T>(), nullptr);
        else kernels::reduce_axis(ctx, kernels::Reduce::sum, n, t, c, centred.data<T>(), rep.p.data<T>(), nullptr);
      });
      break;
    }
    case BlockKind::fallback: throw Error("hardness: internal: fallback block has no captured data");
  }
  return rep;
}

int64_t ghost_t(const HardnessBlock& b) { return b.ghost ? b.positions : 0; }

}  // namespace

GhostPath parse_ghost_path(const std::string& s) {
  if (s == "auto") return GhostPath::automatic;
  if (s == "ghost") return GhostPath::ghost;
  if (s == "materialise" || s == "materialize") return GhostPath::materialise;
  throw InputError("--path: '" + s + "' is not auto, ghost or materialise");
}

const char* HardnessBlock::path() const {
  if (kind == BlockKind::fallback) return "per-sample backward";
  return ghost ? "ghost" : "materialise";
}

const char* HardnessBlock::kind_name() const {
  switch (kind) {
    case BlockKind::linear_weight: return "linear";
    case BlockKind::linear_bias: return "linear bias";
    case BlockKind::conv_weight: return "conv2d";
    case BlockKind::conv_bias: return "conv2d bias";
    case BlockKind::embedding_weight: return "embedding";
    case BlockKind::norm_weight: return layer == CaptureKind::batch_norm ? "batch_norm weight" : "layer_norm weight";
    case BlockKind::norm_bias: return layer == CaptureKind::batch_norm ? "batch_norm bias" : "layer_norm bias";
    case BlockKind::fallback: return "uncaptured";
  }
  return "?";
}

// ------------------------------------------------------------------------------------------------
// Capture and the per-sample reference

CapturedBatch capture_batch(nn::Module& model, const Tensor& inputs, const Tensor& labels, bool param_grads) {
  if (!inputs.defined() || inputs.dim() < 1 || inputs.shape()[0] < 1) throw InputError("hardness: empty batch");
  CapturedBatch cb;
  cb.inputs = inputs;
  cb.labels = labels;
  cb.n = inputs.shape()[0];
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
    CaptureScope scope;
    Tensor logits = model.forward(x);
    if (logits.dim() != 2 || logits.shape()[0] != cb.n)
      throw InputError("hardness: the model's output " + shape_str(logits.shape()) + " is not [samples, classes]");
    Tensor losses = cross_entropy_per_sample(logits, labels);
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
                            const std::vector<Tensor>& params) {
  if (params.empty()) throw Error("per_sample_gradients: no parameters");
  const int64_t n = inputs.shape()[0];
  int64_t total = 0;
  for (const Tensor& p : params) total += p.numel();
  Tensor out = Tensor::zeros({n, total}, params[0].dtype(), params[0].device());
  const std::vector<Tensor> all = model.parameters();
  for (int64_t i = 0; i < n; ++i) {
    clear_grads(all);
    Tensor xi = inputs.narrow(0, i, 1).contiguous(), yi = labels.narrow(0, i, 1).contiguous();
    Tensor loss = sum(cross_entropy_per_sample(model.forward(xi), yi));
    if (loss.requires_grad()) loss.backward();
    int64_t off = 0;
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (g.defined()) {
        Tensor gc = g.contiguous();
        kernels_for(out, [&](const auto& ctx, auto tag) {
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

BlockPlan plan_blocks(nn::Module& model, const CapturedBatch& probe, GhostPath path) {
  if (probe.param_grads.empty()) throw Error("plan_blocks: the probe capture needs parameter gradients");
  BlockPlan plan;
  const nn::Named named = model.named_parameters();
  HardnessBlock fb;
  fb.kind = BlockKind::fallback;
  for (size_t i = 0; i < named.size(); ++i) {
    const auto& [name, p] = named[i];
    if (!p.requires_grad()) continue;
    auto it = probe.by_param.find(p.impl());
    const size_t count = it == probe.by_param.end() ? 0 : it->second.size();
    std::string uncaptured;
    if (count == 1 && !it->second[0]->output_grad.defined()) uncaptured = "its layer received no output gradient";
    else if (count > 1)
      uncaptured = "shared by " + std::to_string(count) + " layers (its per-sample gradient needs their cross terms)";
    else if (count == 0) {
      if (i < probe.param_grads.size() && probe.param_grads[i].defined())
        uncaptured = "reached by an op other than linear, conv2d, embedding, batch_norm or layer_norm";
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
    if (rec.kind == CaptureKind::batch_norm && rec.batch_stats)
      throw InputError("hardness: BatchNorm '" + rec.name +
                       "' normalises with batch statistics, where per-sample gradients do not exist; evaluate the "
                       "model in eval mode (running statistics)");
    const bool is_weight = rec.weight.impl() == p.impl();
    HardnessBlock b;
    b.name = name;
    b.layer = rec.kind;
    b.params = {p};
    b.param_index = {int(i)};
    b.numel = p.numel();
    b.positions = rec.positions;
    switch (rec.kind) {
      case CaptureKind::linear:
        b.kind = is_weight ? BlockKind::linear_weight : BlockKind::linear_bias;
        b.in = rec.input.shape().back();
        b.out = rec.weight.shape()[0];
        break;
      case CaptureKind::conv2d:
        b.kind = is_weight ? BlockKind::conv_weight : BlockKind::conv_bias;
        b.in = rec.conv.c * rec.conv.r * rec.conv.s;
        b.out = rec.conv.k;
        break;
      case CaptureKind::embedding:
        b.kind = BlockKind::embedding_weight;
        b.in = rec.vocab;
        b.out = rec.weight.shape()[1];
        break;
      case CaptureKind::batch_norm:
      case CaptureKind::layer_norm:
        b.kind = is_weight ? BlockKind::norm_weight : BlockKind::norm_bias;
        b.in = b.out = p.numel();
        break;
    }
    if (is_weight_kind(b.kind)) {
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
    if (b.kind == BlockKind::fallback) {
      BlockRep r;
      r.p = per_sample_gradients(model, cb.inputs.narrow(0, s0, n), cb.labels.narrow(0, s0, n), b.params);
      reps.blocks.push_back(r);
    } else {
      reps.blocks.push_back(block_rep(b, cb, s0, n, b.ghost));
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
    kernels_for(out, [&](const auto& ctx, auto tag) {
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
    kernels_for(k, [&](const auto& ctx, auto tag) {
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
    if (b.kind == BlockKind::norm_weight && b.layer == CaptureKind::batch_norm) {
      // BatchNorm gamma without forming x_hat: sum_{c,t} h_c g (x - mu_c) s_c
      //   = S1 . (h s) - S2 . (h s mu) with S1[j,c] = sum_t g x and S2[j,c] = sum_t g per sample,
      // which reads x and G once each instead of four elementwise passes.
      const CaptureRecord& rec = record_of(b, cb);
      const int64_t c = b.numel, t = rec.positions, per = c * t;
      const Tensor& g = rec.output_grad;
      const Tensor hv = h[size_t(b.param_index[0])].contiguous();
      Tensor prod = Tensor::empty({n * per}, out.dtype(), out.device());
      Tensor s1 = Tensor::empty({n, c}, out.dtype(), out.device()), s2 = Tensor::empty({n, c}, out.dtype(), out.device());
      Tensor hs = Tensor::empty({c}, out.dtype(), out.device()), hsm = Tensor::empty({c}, out.dtype(), out.device());
      kernels_for(out, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        const T* gy = g.data<T>() + s0 * per;
        kernels::binary(ctx, kernels::Binary::mul, n * per, rec.input.data<T>() + s0 * per, gy, prod.data<T>());
        kernels::reduce_axis(ctx, kernels::Reduce::sum, n * c, t, 1, prod.data<T>(), s1.data<T>(), nullptr);
        kernels::reduce_axis(ctx, kernels::Reduce::sum, n * c, t, 1, gy, s2.data<T>(), nullptr);
        kernels::binary(ctx, kernels::Binary::mul, c, hv.data<T>(), rec.stat_b.data<T>(), hs.data<T>());
        kernels::binary(ctx, kernels::Binary::mul, c, hs.data<T>(), rec.stat_a.data<T>(), hsm.data<T>());
        kernels::gemm(ctx, false, false, n, 1, c, T(1), s1.data<T>(), c, hs.data<T>(), 1, T(1), out.data<T>(), 1);
        kernels::gemm(ctx, false, false, n, 1, c, T(-1), s2.data<T>(), c, hsm.data<T>(), 1, T(1), out.data<T>(), 1);
      });
      continue;
    }
    if (b.kind == BlockKind::fallback || !is_weight_kind(b.kind)) {
      // Small (or uncaptured) blocks: materialised per-sample gradients times h, one GEMV.
      BlockRep rep;
      Tensor hv;
      if (b.kind == BlockKind::fallback) {
        rep.p = per_sample_gradients(model, cb.inputs.narrow(0, s0, n), cb.labels.narrow(0, s0, n), b.params);
        std::vector<Tensor> parts;
        for (int idx : b.param_index) parts.push_back(h[size_t(idx)].reshape({-1}));
        hv = concat(parts, 0);
      } else {
        rep = block_rep(b, cb, s0, n, false);
        hv = h[size_t(b.param_index[0])].contiguous();
      }
      kernels_for(out, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::gemm(ctx, false, false, n, 1, b.numel, T(1), rep.p.data<T>(), b.numel, hv.data<T>(), 1, T(1),
                      out.data<T>(), 1);
      });
      continue;
    }
    const CaptureRecord& rec = record_of(b, cb);
    const Tensor hw = h[size_t(b.param_index[0])].contiguous();
    const Tensor& g = rec.output_grad;
    const int64_t t = rec.positions;
    kernels_for(out, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      if (b.kind == BlockKind::linear_weight) {
        // kappa_j = sum_t g_{j,t} . (H a_{j,t}): Q = A H^T, then per-sample row dots with G.
        Tensor a = rows_of(rec.input, b.in, s0 * t, n * t), gy = rows_of(g, b.out, s0 * t, n * t);
        Tensor q = Tensor::empty({n * t, b.out}, out.dtype(), out.device());
        kernels::gemm(ctx, false, true, n * t, b.out, b.in, T(1), a.data<T>(), b.in, hw.data<T>(), b.in, T(0),
                      q.data<T>(), b.out);
        kernels::segment_rowdot(ctx, n, t, b.out, q.data<T>(), gy.data<T>(), out.data<T>());
      } else if (b.kind == BlockKind::conv_weight) {
        // The same through the convolution itself: Q = conv(x_j; H), then <Q_j, G_j>.
        kernels::ConvShape cs = rec.conv;
        cs.n = n;
        const int64_t img = cs.c * cs.h * cs.w;
        Tensor q = Tensor::empty({n, cs.k, t}, out.dtype(), out.device());
        Tensor ws = Tensor::empty({std::max<int64_t>(1, kernels::conv2d_workspace_elems(ctx, cs))}, out.dtype(), out.device());
        kernels::conv2d_forward(ctx, cs, rec.input.data<T>() + s0 * img, hw.data<T>(), static_cast<const T*>(nullptr),
                                q.data<T>(), ws.data<T>());
        kernels::segment_rowdot(ctx, n, 1, cs.k * t, q.data<T>(), g.data<T>() + s0 * cs.k * t, out.data<T>());
      } else {
        // Embedding: Q = H[x_{j,t}], then row dots with G.
        Tensor gy = rows_of(g, b.out, s0 * t, n * t);
        Tensor q = Tensor::empty({n * t, b.out}, out.dtype(), out.device());
        kernels::embedding_forward(ctx, n * t, b.out, rec.input.data<int32_t>() + s0 * t, hw.data<T>(), q.data<T>());
        kernels::segment_rowdot(ctx, n, t, b.out, q.data<T>(), gy.data<T>(), out.data<T>());
      }
    });
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
  {
    PairedScope scope(nr + nf, nr);
    for (const Tensor& p : params) {
      rsum.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
      fsum.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
      if (p.requires_grad()) scope.route(p, rsum.back(), fsum.back());
    }
    CaptureScope capture;
    Tensor losses = cross_entropy_per_sample(model.forward(cb.inputs), cb.labels);
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
    if (is_weight_kind(b.kind)) fl.row_form += f * (2 * t * double(b.out) * double(b.in) + 2 * t * double(b.out));
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
    kernels_for(sums[i], [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::axpby(ctx, sums[i].numel(), T(1), add[i].contiguous().template data<T>(), T(1), sums[i].data<T>());
    });
  }
}

}  // namespace

HardnessReport compute_hardness(nn::Module& model, const ImageDataset& train, const Normalizer& norm,
                                const std::vector<int64_t>& forget_all, const std::vector<int64_t>& retain_all,
                                const HardnessOptions& opt) {
  const double t_start = now_s();
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

  EvalMode eval_mode(model);
  const std::vector<Tensor> params = model.parameters();
  if (params.empty()) throw InputError("hardness: the model has no parameters");
  const DType dt = params[0].dtype();
  const Device dev = params[0].device();
  const size_t esz = dtype_size(dt);
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

  // Plan from a small probe capture (which layers, which path).
  BlockPlan plan;
  {
    std::vector<int64_t> probe_idx(retain_order.begin(), retain_order.begin() + std::min<size_t>(4, retain_order.size()));
    Batch pb = gather_batch(train, probe_idx, norm, dev);
    if (pb.images.dtype() != dt) pb.images = pb.images.to(dt);
    CapturedBatch probe = capture_batch(model, pb.images, pb.labels, true);
    plan = plan_blocks(model, probe, opt.path);
  }
  rep.notices = plan.notices;
  if (plan.blocks.empty()) throw InputError("hardness: no parameter of the model is reached by the loss");

  // Tiles and the retain sample from the memory budget.
  const double budget = double(opt.memory_bytes);
  const double rep_bytes = double(esz) * double(plan.rep_elems);
  const int64_t nf_all = int64_t(forget.size());
  int64_t bf = opt.forget_tile > 0 ? opt.forget_tile : std::min<int64_t>(opt.chunk, nf_all);
  int64_t br = opt.retain_tile > 0 ? opt.retain_tile : std::min<int64_t>(1024, int64_t(retain_all.size()));
  bf = std::min(bf, nf_all);
  br = std::min<int64_t>(br, int64_t(retain_all.size()));
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
    nr = std::min<int64_t>(capacity, int64_t(retain_all.size()));
    if (nr < 1) throw InputError("--memory-mb: " + mb(budget) + " holds no retain sample besides the tiles");
    if (nr < int64_t(retain_all.size()))
      rep.notices.push_back("retain sample: " + std::to_string(nr) + " of " + std::to_string(retain_all.size()) +
                            " retain images (all that --memory-mb " + mb(budget) +
                            " holds; --retain-samples or --memory-mb to change)");
  }
  if (nr < 200 && nr < int64_t(retain_all.size()))
    rep.notices.push_back("only " + std::to_string(nr) +
                          " retain samples: g_r, kappa and the verdict carry sampling noise of that size");
  std::vector<int64_t> retain(retain_order.begin(), retain_order.begin() + nr);
  std::sort(retain.begin(), retain.end());
  br = std::min(br, nr);
  rep.n_forget = nf_all;
  rep.n_retain = nr;
  rep.forget_tile = bf;
  rep.retain_tile = br;

  std::unique_ptr<Progress> bar;
  if (opt.progress) bar = std::make_unique<Progress>(nr + nf_all, "hardness", "img/s");
  int64_t done = 0;
  auto gather = [&](const std::vector<int64_t>& idx, size_t a, size_t b) {
    std::vector<int64_t> sub(idx.begin() + int64_t(a), idx.begin() + int64_t(b));
    Batch batch = gather_batch(train, sub, norm, dev);
    if (batch.images.dtype() != dt) batch.images = batch.images.to(dt);
    return batch;
  };
  auto check_losses = [&](const CapturedBatch& cb, const std::vector<int64_t>& idx, size_t a, const char* side) {
    for (size_t i = 0; i < cb.losses.size(); ++i)
      if (!std::isfinite(cb.losses[i]))
        throw Error(std::string("hardness: ") + side + " sample " + std::to_string(idx[a + i]) +
                    " has a non-finite loss; its gradient is undefined");
  };

  // Phase 1: the retain sample: its per-sample data into the store, norms, the summed gradient.
  SampleReps store = allocate_reps(plan, nr, dt, dev);
  Tensor r_norm2 = Tensor::zeros({nr}, dt, dev);
  std::vector<Tensor> retain_sum, forget_sum;
  for (size_t a = 0; a < retain.size(); a += size_t(opt.chunk)) {
    const size_t b = std::min(retain.size(), a + size_t(opt.chunk));
    Batch batch = gather(retain, a, b);
    CapturedBatch cb = capture_batch(model, batch.images, batch.labels, true);
    check_losses(cb, retain, a, "retain");
    SampleReps reps = build_reps(model, plan, cb, 0, cb.n);
    store_reps(plan, reps, store, int64_t(a));
    Tensor nslice = r_norm2.narrow(0, int64_t(a), cb.n);
    add_sample_norms(plan, reps, nslice);
    accumulate(retain_sum, cb.param_grads);
    done += cb.n;
    if (bar) bar->update(done, "retain");
  }
  std::vector<Tensor> g_r(params.size());
  for (size_t i = 0; i < params.size(); ++i)
    g_r[i] = retain_sum[i].defined() ? mul_scalar(retain_sum[i], 1.0 / double(nr)) : Tensor::zeros(params[i].shape(), dt, dev);
  const std::vector<double> r_norms = [&] {
    std::vector<double> v = host_doubles(r_norm2);
    for (double& x : v) x = std::sqrt(std::max(0.0, x));
    return v;
  }();

  // Phase 2: forget tiles against the store: K (tiled), row form, norms.
  rep.samples.resize(forget.size());
  const int heat = opt.heat_size;
  const int64_t heat_stride_f = heat > 0 ? std::max<int64_t>(1, nf_all / heat) : 0;
  const int64_t heat_stride_r = heat > 0 ? std::max<int64_t>(1, nr / heat) : 0;
  if (heat > 0) {
    for (int64_t j = 0; j < nf_all && int64_t(rep.heat_rows.size()) < heat; j += heat_stride_f) rep.heat_rows.push_back(j);
    for (int64_t i = 0; i < nr && int64_t(rep.heat_cols.size()) < heat; i += heat_stride_r) {
      rep.heat_cols.push_back(retain[size_t(i)]);
      rep.heat_col_labels.push_back(train.labels[size_t(retain[size_t(i)])]);
    }
    rep.heat.assign(rep.heat_rows.size(), std::vector<double>(rep.heat_cols.size(), 0.0));
    for (size_t c = 0; c < rep.heat_cols.size(); ++c) rep.heat_col_norms.push_back(r_norms[c * size_t(heat_stride_r)]);
  }
  Tensor gram = plan.max_ghost_t > 0 ? Tensor::empty({std::max<int64_t>(1, gram_elems(plan, bf, br))}, dt, dev) : Tensor();
  Tensor ktile = Tensor::empty({bf * br}, dt, dev);
  for (size_t a = 0; a < forget.size(); a += size_t(bf)) {
    const size_t b = std::min(forget.size(), a + size_t(bf));
    Batch batch = gather(forget, a, b);
    CapturedBatch cb = capture_batch(model, batch.images, batch.labels, true);
    check_losses(cb, forget, a, "forget");
    const int64_t n = cb.n;
    SampleReps reps = build_reps(model, plan, cb, 0, n);
    Tensor f_norm2 = Tensor::zeros({n}, dt, dev), row = Tensor::zeros({n}, dt, dev);
    add_sample_norms(plan, reps, f_norm2);
    add_row_form(model, plan, cb, 0, n, g_r, row);
    accumulate(forget_sum, cb.param_grads);
    const std::vector<double> fn2 = host_doubles(f_norm2), kap = host_doubles(row);
    std::vector<double> ksum(size_t(n), 0.0), best_cos(size_t(n), -std::numeric_limits<double>::infinity()),
        best_k(size_t(n), 0.0);
    std::vector<int64_t> best_i(size_t(n), -1);
    for (int64_t r0 = 0; r0 < nr; r0 += br) {
      const int64_t m = std::min(br, nr - r0);
      Tensor k = ktile.narrow(0, 0, n * m);
      k.zero_();
      add_similarity(plan, reps, store, r0, m, k, gram);
      const std::vector<double> kh = host_doubles(k);
      for (int64_t j = 0; j < n; ++j) {
        const double fnorm = std::sqrt(std::max(0.0, fn2[size_t(j)]));
        const int64_t jj = int64_t(a) + j;
        const bool heat_row = heat > 0 && jj % heat_stride_f == 0 && jj / heat_stride_f < int64_t(rep.heat_rows.size());
        for (int64_t i = 0; i < m; ++i) {
          const double kv = kh[size_t(j * m + i)];
          ksum[size_t(j)] += kv;
          const double den = fnorm * r_norms[size_t(r0 + i)];
          const double c = den > 0 ? kv / den : 0.0;
          if (c > best_cos[size_t(j)]) {
            best_cos[size_t(j)] = c;
            best_k[size_t(j)] = kv;
            best_i[size_t(j)] = r0 + i;
          }
          const int64_t ii = r0 + i;
          if (heat_row && ii % heat_stride_r == 0 && ii / heat_stride_r < int64_t(rep.heat_cols.size()))
            rep.heat[size_t(jj / heat_stride_f)][size_t(ii / heat_stride_r)] = kv;
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      SampleHardness& s = rep.samples[a + size_t(j)];
      s.index = forget[a + size_t(j)];
      s.label = train.labels[size_t(s.index)];
      s.loss = cb.losses[size_t(j)];
      s.kappa = kap[size_t(j)];
      s.kappa_k = ksum[size_t(j)] / double(nr);
      s.norm = std::sqrt(std::max(0.0, fn2[size_t(j)]));
      if (best_i[size_t(j)] >= 0) {
        s.similar_index = retain[size_t(best_i[size_t(j)])];
        s.similar_label = train.labels[size_t(s.similar_index)];
        s.similar_k = best_k[size_t(j)];
        s.similar_cosine = best_cos[size_t(j)];
      }
    }
    done += n;
    if (bar) bar->update(done, "forget");
  }
  if (bar) bar->finish();

  // Mean gradients per block, kappa, and the solver's view at --ratio / --lr.
  std::vector<double> stats;
  double rr = 0, ff = 0, rf = 0;
  std::vector<int> stat_param;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].requires_grad()) continue;
    Tensor gf = forget_sum.size() > i && forget_sum[i].defined() ? mul_scalar(forget_sum[i], 1.0 / double(nf_all))
                                                                  : Tensor::zeros(params[i].shape(), dt, dev);
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
  kernels::HamuConfig cfg;
  cfg.variant = kernels::hamu_q;
  cfg.scope = kernels::scope_layer;
  cfg.split = kernels::split_grad_norm;
  cfg.lr = opt.lr;
  cfg.constraint = opt.ratio * opt.lr;
  cfg.clip = opt.clip;
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
          bh.kind = hb.kind_name();
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
    bh.collateral = d > bh.kappa2;
    rep.blocks.push_back(bh);
  }

  // Per-sample summaries and the verdict.
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
  rep.share_hard = double(hard) / double(nf_all);
  rep.mean_sample_cosine = cos_sum / double(nf_all);
  rep.row_form_check = kmax > 0 ? dmax / kmax : 0.0;
  int64_t same = 0;
  double sim_sum = 0;
  for (const SampleHardness& s : rep.samples) {
    same += s.similar_label == s.label;
    sim_sum += s.similar_cosine;
  }
  rep.share_same_class = double(same) / double(nf_all);
  rep.mean_similar_cosine = sim_sum / double(nf_all);
  rep.verdict = hardness_verdict(rep.kappa, rep.solver.n_collateral, rep.solver.n_blocks, rep.share_hard);
  char detail[768];
  std::snprintf(detail, sizeof detail,
                "kappa = <g_r, g_f> = %.4g, cosine %.3f: %s; at ratio %g, lr %g (clip %g) kappa_l > kappa2_l in %d of "
                "%d blocks%s; %.1f%% of the %lld forget samples are hard (kappa_j > 0), and for %.1f%% the most "
                "similar retain sample is of their own class (mean cosine %.3f)",
                rep.kappa, rep.cosine,
                rep.kappa > 0 ? "descending the retain loss also lowers the forget loss"
                              : "descending the retain loss already raises the forget loss",
                opt.ratio, opt.lr, opt.clip, rep.solver.n_collateral, rep.solver.n_blocks,
                rep.solver.n_collateral > 0 ? " (there every step that keeps forgetting also raises the retain loss)" : "",
                100.0 * rep.share_hard, (long long)nf_all, 100.0 * rep.share_same_class, rep.mean_similar_cosine);
  rep.verdict_detail = detail;
  if (rep.solver.criterion_met) rep.verdict_detail += "; the stopping criterion is already met (no retain-neutral forget step of size B)";
  if (rep.solver.feasibility_margin < 0) {
    std::snprintf(detail, sizeof detail, "; the constraint B = %g is infeasible at this lr (margin %.3g)",
                  cfg.constraint, rep.solver.feasibility_margin);
    rep.verdict_detail += detail;
  }
  rep.seconds = now_s() - t_start;
  return rep;
}

}  // namespace hamu
