// engine/nn_ops.cpp: neural-network ops (convolution, pooling, normalisation, softmax and losses,
// embedding, causal attention, dropout) with their backward passes.
#include <algorithm>
#include <cmath>
#include <string>

#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/ops_internal.h"
#include "engine/paired.h"
#include "kernels/kernels.h"

namespace hamu {
namespace {

void require_dim(const char* op, const Tensor& x, int dim, const char* what) {
  if (x.dim() != dim)
    throw InputError(std::string(op) + ": expected " + what + ", got shape " + shape_str(x.shape()));
}

Tensor workspace_for(const Tensor& like, int64_t elems) {
  return Tensor::empty({std::max<int64_t>(elems, 1)}, like.dtype(), like.device());
}

kernels::PoolShape pool_shape(const char* op, const Tensor& x, const Pool2dOptions& o) {
  require_dim(op, x, 4, "an [N,C,H,W] input");
  kernels::PoolShape p;
  p.n = x.shape()[0];
  p.c = x.shape()[1];
  p.h = x.shape()[2];
  p.w = x.shape()[3];
  p.r = o.kernel_h;
  p.s = o.kernel_w;
  p.stride_h = o.stride_h;
  p.stride_w = o.stride_w;
  p.pad_h = o.pad_h;
  p.pad_w = o.pad_w;
  if (p.r < 1 || p.s < 1 || p.stride_h < 1 || p.stride_w < 1 || p.pad_h < 0 || p.pad_w < 0 || 2 * p.pad_h > p.r ||
      2 * p.pad_w > p.s || p.oh() < 1 || p.ow() < 1)
    throw InputError(std::string(op) + ": kernel " + std::to_string(p.r) + "x" + std::to_string(p.s) + " stride " +
                     std::to_string(p.stride_h) + " pad " + std::to_string(p.pad_h) + " does not fit input " +
                     shape_str(x.shape()));
  return p;
}

// Host-side validation of int32 indices (labels, token ids) when they live on the CPU.
void check_indices(const char* op, const Tensor& idx, int64_t limit, int64_t allowed_extra) {
  if (idx.dtype() != DType::i32) throw InputError(std::string(op) + ": indices must be int32");
  if (idx.is_cuda()) return;  // validated where they were made (loaders), before moving to the device
  const int32_t* p = idx.contiguous().data<int32_t>();
  for (int64_t i = 0, n = idx.numel(); i < n; ++i)
    if ((p[i] < 0 || p[i] >= limit) && p[i] != allowed_extra)
      throw InputError(std::string(op) + ": index " + std::to_string(p[i]) + " at position " + std::to_string(i) +
                       " is outside [0, " + std::to_string(limit) + ")");
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Convolution

namespace {

// conv2d's checks and geometry; bc: the contiguous bias (undefined when b is).
kernels::ConvShape conv_shape_checked(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& opt,
                                      Tensor& bc) {
  check_same("conv2d", x, w);
  require_dim("conv2d", x, 4, "an [N,C,H,W] input");
  require_dim("conv2d", w, 4, "a [K,C,R,S] weight");
  if (x.shape()[1] != w.shape()[1])
    throw InputError("conv2d: input " + shape_str(x.shape()) + " has " + std::to_string(x.shape()[1]) +
                     " channels, weight " + shape_str(w.shape()) + " expects " + std::to_string(w.shape()[1]));
  kernels::ConvShape cs;
  cs.n = x.shape()[0];
  cs.c = x.shape()[1];
  cs.h = x.shape()[2];
  cs.w = x.shape()[3];
  cs.k = w.shape()[0];
  cs.r = w.shape()[2];
  cs.s = w.shape()[3];
  cs.stride_h = opt.stride_h;
  cs.stride_w = opt.stride_w;
  cs.pad_h = opt.pad_h;
  cs.pad_w = opt.pad_w;
  if (cs.stride_h < 1 || cs.stride_w < 1 || cs.pad_h < 0 || cs.pad_w < 0 || cs.oh() < 1 || cs.ow() < 1)
    throw InputError("conv2d: weight " + shape_str(w.shape()) + " with stride " + std::to_string(cs.stride_h) + " pad " +
                     std::to_string(cs.pad_h) + " does not fit input " + shape_str(x.shape()));
  if (b.defined()) {
    check_same("conv2d", x, b);
    if (b.dim() != 1 || b.shape()[0] != cs.k)
      throw InputError("conv2d: bias " + shape_str(b.shape()) + " does not match weight " + shape_str(w.shape()));
    bc = b.contiguous();
  }
  return cs;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& opt) {
  Tensor bc;
  const kernels::ConvShape cs = conv_shape_checked(x, w, b, opt, bc);
  Tensor xc = x.contiguous(), wc = w.contiguous();
  Tensor y = Tensor::empty({cs.n, cs.k, cs.oh(), cs.ow()}, x.dtype(), x.device());
  dispatch("conv2d", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    Tensor ws = workspace_for(xc, kernels::conv2d_workspace_elems(ctx, cs));
    kernels::conv2d_forward(ctx, cs, xc.data<T>(), wc.data<T>(), bc.defined() ? bc.data<T>() : nullptr, y.data<T>(),
                            ws.data<T>());
  });
  CaptureTicket ticket = capture_layer("conv2d", w, b, xc, cs.n, cs.oh() * cs.ow(), cs);
  // Paired backward (engine/paired.h): backward_filter on the two sub-batches [0, split) and
  // [split, n) (pointer offsets), each into its own buffer.
  const PairedTicket paired = paired_ticket("conv2d", w, b, cs.n);
  if (needs_grad({&xc, &wc, &bc})) {
    Tensor xd = xc.detach(), wd = wc.detach();
    const bool need_x = xc.requires_grad(), need_w = wc.requires_grad(), need_b = bc.defined() && bc.requires_grad();
    const bool has_b = bc.defined();
    const bool route_w = need_w && paired.weight, route_b = need_b && paired.bias;
    std::vector<Tensor> inputs{xc, wc};
    if (has_b) inputs.push_back(bc);
    record(y, "conv2d", inputs, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      capture_output_grad(ticket, gc);
      Tensor gx, gw, gb;
      dispatch("conv2d_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::ConvShape part[2] = {cs, cs};
        part[0].n = paired.split;
        part[1].n = cs.n - paired.split;
        int64_t ws_elems = kernels::conv2d_workspace_elems(ctx, cs);
        if (route_w || route_b)
          for (const auto& p : part) ws_elems = std::max(ws_elems, kernels::conv2d_workspace_elems(ctx, p));
        Tensor ws = workspace_for(gc, ws_elems);
        if (need_x) {
          gx = empty_like(xd);
          kernels::conv2d_backward_data(ctx, cs, gc.data<T>(), wd.data<T>(), gx.data<T>(), ws.data<T>());
        }
        if (need_w || need_b) {
          if (!route_w) gw = zeros_like(wd);
          if (has_b && !route_b) gb = Tensor::zeros({cs.k}, gc.dtype(), gc.device());
          if (route_w || route_b) {
            const int64_t n0[2] = {0, paired.split};
            for (int h = 0; h < 2; ++h) {
              T* gw_dst = route_w ? (h ? paired.weight->second : paired.weight->first).template data<T>() : gw.data<T>();
              T* gb_dst = !has_b ? nullptr
                                 : route_b ? (h ? paired.bias->second : paired.bias->first).template data<T>()
                                           : gb.data<T>();
              kernels::conv2d_backward_filter(ctx, part[h], xd.data<T>() + n0[h] * cs.c * cs.h * cs.w,
                                              gc.data<T>() + n0[h] * cs.k * cs.oh() * cs.ow(), gw_dst, gb_dst,
                                              ws.data<T>());
            }
          } else {
            kernels::conv2d_backward_filter(ctx, cs, xd.data<T>(), gc.data<T>(), gw.data<T>(),
                                            has_b ? gb.data<T>() : nullptr, ws.data<T>());
          }
        }
      });
      std::vector<Tensor> grads{gx, need_w && !route_w ? gw : Tensor()};
      if (has_b) grads.push_back(need_b && !route_b ? gb : Tensor());
      return grads;
    });
  }
  return y;
}

// ------------------------------------------------------------------------------------------------
// Pooling

Tensor max_pool2d(const Tensor& x, const Pool2dOptions& opt) {
  const kernels::PoolShape ps = pool_shape("max_pool2d", x, opt);
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty({ps.n, ps.c, ps.oh(), ps.ow()}, x.dtype(), x.device());
  Tensor arg = Tensor::empty(y.shape(), DType::i32, x.device());
  dispatch("max_pool2d", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::maxpool2d_forward(ctx, ps, xc.data<T>(), y.data<T>(), arg.data<int32_t>());
  });
  if (needs_grad({&xc})) {
    const Shape in_shape = xc.shape();
    record(y, "max_pool2d", {xc}, [ps, arg, in_shape](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gx = Tensor::empty(in_shape, g.dtype(), g.device());
      dispatch("max_pool2d_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::maxpool2d_backward(ctx, ps, gc.data<T>(), arg.data<int32_t>(), gx.data<T>());
      });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& opt) {
  const kernels::PoolShape ps = pool_shape("avg_pool2d", x, opt);
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty({ps.n, ps.c, ps.oh(), ps.ow()}, x.dtype(), x.device());
  dispatch("avg_pool2d", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::avgpool2d_forward(ctx, ps, xc.data<T>(), y.data<T>());
  });
  if (needs_grad({&xc})) {
    const Shape in_shape = xc.shape();
    record(y, "avg_pool2d", {xc}, [ps, in_shape](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gx = Tensor::empty(in_shape, g.dtype(), g.device());
      dispatch("avg_pool2d_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::avgpool2d_backward(ctx, ps, gc.data<T>(), gx.data<T>());
      });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor global_avg_pool2d(const Tensor& x) {
  require_dim("global_avg_pool2d", x, 4, "an [N,C,H,W] input");
  const int64_t n = x.shape()[0], c = x.shape()[1];
  return mean(x.reshape({n, c, -1}), 2);
}

// ------------------------------------------------------------------------------------------------
// Normalisation

namespace {

struct BnDims {
  int64_t n, c, hw;
  bool have_running;
};

// The checks batch_norm and batch_norm_train_act share (op: the name errors carry): x [N,C,H,W] or [N,C], gamma
// and beta of C values, the running statistics (both or neither; needed without batch statistics) of C values,
// and, with batch statistics, more than one value per channel.
BnDims check_bn(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                const Tensor& running_var, bool batch_stats) {
  const std::string name = op;
  if (x.dim() != 4 && x.dim() != 2)
    throw InputError(name + ": expected an [N,C,H,W] or [N,C] input, got " + shape_str(x.shape()));
  check_same(op, x, gamma);
  check_same(op, x, beta);
  const BnDims d{x.shape()[0], x.shape()[1], x.dim() == 4 ? x.shape()[2] * x.shape()[3] : 1,
                 running_mean.defined() && running_var.defined()};
  for (const Tensor* p : {&gamma, &beta})
    if (p->numel() != d.c)
      throw InputError(name + ": parameter " + shape_str(p->shape()) + " does not match " + std::to_string(d.c) +
                       " channels of input " + shape_str(x.shape()));
  if (!batch_stats && !d.have_running) throw InputError(name + ": evaluation mode needs running statistics");
  if (d.have_running) {
    check_same(op, x, running_mean);
    check_same(op, x, running_var);
    if (running_mean.numel() != d.c || running_var.numel() != d.c)
      throw InputError(name + ": running statistics do not match " + std::to_string(d.c) + " channels");
  }
  if (batch_stats && d.n * d.hw < 2)
    throw InputError(name + ": training statistics need more than one value per channel, got input " +
                     shape_str(x.shape()));
  return d;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                  const Tensor& running_var, bool batch_stats, double momentum, double eps) {
  const BnDims dims = check_bn("batch_norm", x, gamma, beta, running_mean, running_var, batch_stats);
  const int64_t n = dims.n, c = dims.c, hw = dims.hw;
  const bool have_running = dims.have_running;
  Tensor xc = x.contiguous(), gc_ = gamma.contiguous(), bc = beta.contiguous();
  Tensor y = empty_like(xc);
  Tensor save_mean = Tensor::empty({c}, x.dtype(), x.device()), save_invstd = Tensor::empty({c}, x.dtype(), x.device());
  dispatch("batch_norm", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    if (batch_stats) {
      Tensor rm = have_running ? running_mean : Tensor::zeros({c}, x.dtype(), x.device());
      Tensor rv = have_running ? running_var : Tensor::full({c}, 1.0, x.dtype(), x.device());
      kernels::batchnorm_forward_train(ctx, n, c, hw, xc.data<T>(), gc_.data<T>(), bc.data<T>(), T(eps), T(momentum),
                                       y.data<T>(), save_mean.data<T>(), save_invstd.data<T>(), rm.data<T>(),
                                       rv.data<T>());
    } else {
      kernels::batchnorm_forward_infer(ctx, n, c, hw, xc.data<T>(), gc_.data<T>(), bc.data<T>(),
                                       running_mean.data<T>(), running_var.data<T>(), T(eps), y.data<T>(),
                                       save_mean.data<T>(), save_invstd.data<T>());
    }
  });
  CaptureTicket ticket = capture_norm("batch_norm", gamma, beta, xc, save_mean, save_invstd, n, hw, batch_stats);
  // Paired backward: only the fixed-statistics branch keeps samples independent; with batch
  // statistics the paired pass is not valid and the scope says so.
  PairedTicket paired;
  if (batch_stats) paired_invalidate("batch_norm '" + gamma.name() + "' normalises with batch statistics (BatchNorm not frozen)");
  else paired = paired_ticket("batch_norm", gamma, beta, n);
  if (needs_grad({&xc, &gc_, &bc})) {
    Tensor xd = xc.detach(), gd = gc_.detach();
    const bool route_g = gc_.requires_grad() && paired.weight, route_b = bc.requires_grad() && paired.bias;
    record(y, "batch_norm", {xc, gc_, bc}, [=](const Tensor& g) {
      Tensor gcont = g.contiguous();
      capture_output_grad(ticket, gcont);
      Tensor gx = empty_like(xd);
      Tensor ggamma = Tensor::zeros({c}, g.dtype(), g.device()), gbeta = Tensor::zeros({c}, g.dtype(), g.device());
      dispatch("batch_norm_backward", gcont, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        if (route_g || route_b) {
          // Fixed statistics: a per-channel affine map, so the two sub-batches are exact.
          const int64_t n0[2] = {0, paired.split}, nn[2] = {paired.split, n - paired.split};
          for (int h = 0; h < 2; ++h) {
            const int64_t off = n0[h] * c * hw;
            T* gg = route_g ? (h ? paired.weight->second : paired.weight->first).template data<T>() : ggamma.data<T>();
            T* gb = route_b ? (h ? paired.bias->second : paired.bias->first).template data<T>() : gbeta.data<T>();
            kernels::batchnorm_backward(ctx, nn[h], c, hw, false, xd.data<T>() + off, gcont.data<T>() + off,
                                        gd.data<T>(), save_mean.data<T>(), save_invstd.data<T>(), gx.data<T>() + off,
                                        gg, gb);
          }
        } else {
          kernels::batchnorm_backward(ctx, n, c, hw, batch_stats, xd.data<T>(), gcont.data<T>(), gd.data<T>(),
                                      save_mean.data<T>(), save_invstd.data<T>(), gx.data<T>(), ggamma.data<T>(),
                                      gbeta.data<T>());
        }
      });
      return std::vector<Tensor>{gx, route_g ? Tensor() : ggamma.reshape(gd.shape()),
                                 route_b ? Tensor() : gbeta.reshape(gd.shape())};
    });
  }
  return y;
}

namespace {

// batch_norm_act's checks of the parameters, the statistics and the residual against its input, of `shape`
// ([N,C,H,W] or [N,C]) and of x's device and type (x: the input, or the convolution's input when the BatchNorm
// is folded into it). op: the name errors carry. Returns C.
int64_t check_bn_act(const char* op, const Tensor& x, const std::vector<int64_t>& shape, const Tensor& gamma,
                     const Tensor& beta, const Tensor& running_mean, const Tensor& running_var,
                     const Tensor& residual) {
  const std::string name = op;
  if (shape.size() != 4 && shape.size() != 2)
    throw InputError(name + ": expected an [N,C,H,W] or [N,C] input, got " + shape_str(shape));
  for (const Tensor* p : {&gamma, &beta, &running_mean, &running_var}) {
    if (!p->defined()) throw InputError(name + ": needs gamma, beta and the running statistics");
    check_same(op, x, *p);
  }
  const int64_t c = shape[1];
  for (const Tensor* p : {&gamma, &beta, &running_mean, &running_var})
    if (p->numel() != c)
      throw InputError(name + ": parameter or statistics " + shape_str(p->shape()) + " do not match " +
                       std::to_string(c) + " channels of input " + shape_str(shape));
  if (residual.defined()) {
    check_same(op, x, residual);
    if (residual.shape() != shape)
      throw InputError(name + ": residual " + shape_str(residual.shape()) + " does not match input " +
                       shape_str(shape));
  }
  return c;
}

}  // namespace

Tensor batch_norm_act(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                      const Tensor& running_var, double eps, const Tensor& residual, bool relu) {
  const char* op = "batch_norm_act";
  const int64_t c = check_bn_act(op, x, x.shape(), gamma, beta, running_mean, running_var, residual);
  const int64_t n = x.shape()[0], hw = x.dim() == 4 ? x.shape()[2] * x.shape()[3] : 1;
  const bool has_res = residual.defined();
  Tensor xc = x.contiguous(), gc_ = gamma.contiguous(), bc = beta.contiguous();
  Tensor rc = has_res ? residual.contiguous() : Tensor();
  Tensor rm = running_mean.contiguous(), rv = running_var.contiguous();
  Tensor y = empty_like(xc);
  Tensor save_mean = Tensor::empty({c}, x.dtype(), x.device()), save_invstd = Tensor::empty({c}, x.dtype(), x.device());
  dispatch("fused_batch_norm_act", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::batchnorm_act_forward(ctx, n, c, hw, xc.data<T>(), gc_.data<T>(), bc.data<T>(), rm.data<T>(), rv.data<T>(),
                                   T(eps), has_res ? rc.data<T>() : nullptr, relu, y.data<T>(), save_mean.data<T>(),
                                   save_invstd.data<T>());
  });
  // The same record batch_norm makes (the hardness rule of "batch_norm" reads it); its G is the gradient
  // at the normalisation's output, i.e. before the add and the ReLU, handed over by the backward below.
  CaptureTicket ticket = capture_norm("batch_norm", gamma, beta, xc, save_mean, save_invstd, n, hw, false);
  const PairedTicket paired = paired_ticket("batch_norm", gamma, beta, n);
  if (needs_grad({&xc, &gc_, &bc, &rc})) {
    // Saved: x (for the gamma gradient) and, with the ReLU, the output y, whose sign is the mask. y is the
    // tensor the next layer holds anyway, so the mask costs no memory (a byte mask would cost N*C*H*W).
    Tensor xd = xc.detach(), gd = gc_.detach(), yd = relu ? y.detach() : Tensor();
    const bool need_g = gc_.requires_grad(), need_b = bc.requires_grad(), need_r = has_res && rc.requires_grad();
    const bool route_g = need_g && paired.weight, route_b = need_b && paired.bias;
    std::vector<Tensor> inputs{xc, gc_, bc};
    if (has_res) inputs.push_back(rc);
    record(y, "batch_norm_act", inputs, [=](const Tensor& g) {
      Tensor gcont = g.contiguous();
      Tensor gx = empty_like(xd);
      Tensor gres = need_r ? empty_like(xd) : Tensor();
      Tensor gz = ticket.record ? empty_like(xd) : Tensor();
      Tensor ggamma = need_g && !route_g ? Tensor::zeros({c}, g.dtype(), g.device()) : Tensor();
      Tensor gbeta = need_b && !route_b ? Tensor::zeros({c}, g.dtype(), g.device()) : Tensor();
      dispatch("fused_batch_norm_act_backward", gcont, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        auto ptr = [](const Tensor& t) { return t.defined() ? t.template data<T>() : static_cast<T*>(nullptr); };
        // Unrouted: both sample ranges add into the one gradient. Routed: each range into its own buffer.
        T* gg[2] = {ptr(ggamma), ptr(ggamma)};
        T* gb[2] = {ptr(gbeta), ptr(gbeta)};
        if (route_g) gg[0] = ptr(paired.weight->first), gg[1] = ptr(paired.weight->second);
        if (route_b) gb[0] = ptr(paired.bias->first), gb[1] = ptr(paired.bias->second);
        const int64_t split = route_g || route_b ? paired.split : n;
        Tensor ws = workspace_for(gcont, kernels::batchnorm_act_workspace_elems(ctx, n, c, hw));
        kernels::batchnorm_act_backward(ctx, n, c, hw, split, xd.data<T>(), relu ? yd.data<T>() : nullptr,
                                        gcont.data<T>(), relu, gd.data<T>(), save_mean.data<T>(),
                                        save_invstd.data<T>(), gx.data<T>(), ptr(gres), ptr(gz), gg[0], gb[0], gg[1],
                                        gb[1], ws.data<T>());
      });
      if (gz.defined()) capture_output_grad(ticket, gz);
      std::vector<Tensor> grads{gx, ggamma.defined() ? ggamma.reshape(gd.shape()) : Tensor(),
                                gbeta.defined() ? gbeta.reshape(gd.shape()) : Tensor()};
      if (has_res) grads.push_back(gres);
      return grads;
    });
  }
  return y;
}

Tensor batch_norm_train_act(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                            const Tensor& running_var, double momentum, double eps, const Tensor& residual, bool relu) {
  const char* op = "batch_norm_train_act";
  const bool has_res = residual.defined();
  if (x.is_cuda()) {  // no fused kernel on the GPU: the three ops
    Tensor y = batch_norm(x, gamma, beta, running_mean, running_var, true, momentum, eps);
    if (has_res) y = add(y, residual);
    return relu ? hamu::relu(y) : y;
  }
  const BnDims dims = check_bn(op, x, gamma, beta, running_mean, running_var, true);
  const int64_t n = dims.n, c = dims.c, hw = dims.hw;
  const bool have_running = dims.have_running;
  if (have_running && (!running_mean.is_contiguous() || !running_var.is_contiguous()))
    throw InputError(std::string(op) + ": running statistics must be contiguous (they are updated in place)");
  if (has_res) {
    check_same(op, x, residual);
    if (residual.shape() != x.shape())
      throw InputError(std::string(op) + ": residual " + shape_str(residual.shape()) + " does not match input " +
                       shape_str(x.shape()));
  }
  Tensor xc = x.contiguous(), gc_ = gamma.contiguous(), bc = beta.contiguous();
  Tensor rc = has_res ? residual.contiguous() : Tensor();
  Tensor y = empty_like(xc);
  Tensor save_mean = Tensor::empty({c}, x.dtype(), x.device()), save_invstd = Tensor::empty({c}, x.dtype(), x.device());
  dispatch("fused_batch_norm_train_act", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<std::decay_t<decltype(ctx)>, kernels::CpuCtx>) {
      auto mut = [](const Tensor& t) { return t.defined() ? t.template data<T>() : static_cast<T*>(nullptr); };
      kernels::batchnorm_train_act_forward(ctx, n, c, hw, xc.data<T>(), gc_.data<T>(), bc.data<T>(), T(eps),
                                           T(momentum), has_res ? rc.data<T>() : nullptr, relu, y.data<T>(),
                                           save_mean.data<T>(), save_invstd.data<T>(),
                                           have_running ? mut(running_mean) : nullptr,
                                           have_running ? mut(running_var) : nullptr);
    } else {
      throw Error("batch_norm_train_act: the fused kernel is CPU-only");
    }
  });
  // batch_norm's record (G: the gradient at the normalisation's output, before the add and the ReLU) and its
  // refusal of the paired pass: batch statistics couple the samples.
  CaptureTicket ticket = capture_norm("batch_norm", gamma, beta, xc, save_mean, save_invstd, n, hw, true);
  paired_invalidate("batch_norm '" + gamma.name() + "' normalises with batch statistics (BatchNorm not frozen)");
  if (needs_grad({&xc, &gc_, &bc, &rc})) {
    Tensor xd = xc.detach(), gd = gc_.detach(), yd = relu ? y.detach() : Tensor();
    const bool need_g = gc_.requires_grad(), need_b = bc.requires_grad(), need_r = has_res && rc.requires_grad();
    std::vector<Tensor> inputs{xc, gc_, bc};
    if (has_res) inputs.push_back(rc);
    record(y, "batch_norm_train_act", inputs, [=](const Tensor& g) {
      Tensor gcont = g.contiguous();
      Tensor gx = empty_like(xd);
      Tensor gres = need_r ? empty_like(xd) : Tensor();
      Tensor gz = ticket.record ? empty_like(xd) : Tensor();
      Tensor ggamma = need_g ? Tensor::zeros({c}, g.dtype(), g.device()) : Tensor();
      Tensor gbeta = need_b ? Tensor::zeros({c}, g.dtype(), g.device()) : Tensor();
      dispatch("fused_batch_norm_train_act_backward", gcont, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<std::decay_t<decltype(ctx)>, kernels::CpuCtx>) {
          auto ptr = [](const Tensor& t) { return t.defined() ? t.template data<T>() : static_cast<T*>(nullptr); };
          kernels::batchnorm_train_act_backward(ctx, n, c, hw, xd.data<T>(), relu ? yd.data<T>() : nullptr,
                                                gcont.data<T>(), relu, gd.data<T>(), save_mean.data<T>(),
                                                save_invstd.data<T>(), gx.data<T>(), ptr(gres), ptr(gz), ptr(ggamma),
                                                ptr(gbeta));
        } else {
          throw Error("batch_norm_train_act: the fused kernel is CPU-only");
        }
      });
      if (gz.defined()) capture_output_grad(ticket, gz);
      std::vector<Tensor> grads{gx, ggamma.defined() ? ggamma.reshape(gd.shape()) : Tensor(),
                                gbeta.defined() ? gbeta.reshape(gd.shape()) : Tensor()};
      if (has_res) grads.push_back(gres);
      return grads;
    });
  }
  return y;
}

Tensor conv2d_bn_act(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& opt,
                     const Tensor& gamma, const Tensor& beta, const Tensor& running_mean, const Tensor& running_var,
                     double eps, const Tensor& residual, bool relu) {
  Tensor bc;
  const kernels::ConvShape cs = conv_shape_checked(x, w, b, opt, bc);
  // One kernel only where it exists (the CPU) and where nothing needs what the two ops leave behind: a
  // gradient (the BatchNorm backward needs the convolution's output) or a per-sample capture (hardness
  // records both layers). Everywhere else the two ops, which give the same bits.
  const bool fuse = !x.is_cuda() && !capture_active() &&
                    !needs_grad({&x, &w, &b, &gamma, &beta, &running_mean, &running_var, &residual});
  if (!fuse)
    return batch_norm_act(conv2d(x, w, b, opt), gamma, beta, running_mean, running_var, eps, residual, relu);
  const std::vector<int64_t> out_shape{cs.n, cs.k, cs.oh(), cs.ow()};
  check_bn_act("conv2d_bn_act", x, out_shape, gamma, beta, running_mean, running_var, residual);
  Tensor xc = x.contiguous(), wc = w.contiguous(), rc = residual.defined() ? residual.contiguous() : Tensor();
  Tensor gc_ = gamma.contiguous(), bt = beta.contiguous(), rm = running_mean.contiguous(), rv = running_var.contiguous();
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  dispatch("conv2d_bn_act", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<std::decay_t<decltype(ctx)>, kernels::CpuCtx>) {
      auto ptr = [](const Tensor& t) { return t.defined() ? t.template data<T>() : static_cast<const T*>(nullptr); };
      Tensor ws = workspace_for(xc, kernels::conv2d_workspace_elems(ctx, cs));
      kernels::conv2d_bn_act_forward(ctx, cs, xc.data<T>(), wc.data<T>(), ptr(bc), gc_.data<T>(), bt.data<T>(),
                                     rm.data<T>(), rv.data<T>(), T(eps), ptr(rc), relu, y.data<T>(), ws.data<T>());
    } else {
      throw Error("conv2d_bn_act: the single-kernel form is CPU-only");
    }
  });
  return y;
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  check_same("layer_norm", x, gamma);
  check_same("layer_norm", x, beta);
  if (x.dim() < 1) throw InputError("layer_norm: scalar input");
  const int64_t d = x.shape().back();
  if (gamma.numel() != d || beta.numel() != d)
    throw InputError("layer_norm: parameters " + shape_str(gamma.shape()) + " do not match input " + shape_str(x.shape()));
  const int64_t rows = d ? x.numel() / d : 0;
  Tensor xc = x.contiguous(), gc_ = gamma.contiguous(), bc = beta.contiguous();
  Tensor y = empty_like(xc);
  Tensor mu = Tensor::empty({rows}, x.dtype(), x.device()), rstd = Tensor::empty({rows}, x.dtype(), x.device());
  dispatch("layer_norm", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::layernorm_forward(ctx, rows, d, xc.data<T>(), gc_.data<T>(), bc.data<T>(), T(eps), y.data<T>(),
                               mu.data<T>(), rstd.data<T>());
  });
  const int64_t samples = x.dim() >= 2 ? x.shape()[0] : 1;
  const int64_t per_sample = samples ? rows / samples : 0;
  CaptureTicket ticket = capture_norm("layer_norm", gamma, beta, xc, mu, rstd, samples, per_sample, false);
  const PairedTicket paired = paired_ticket("layer_norm", gamma, beta, samples);
  if (needs_grad({&xc, &gc_, &bc})) {
    Tensor xd = xc.detach(), gd = gc_.detach();
    const bool route_g = gc_.requires_grad() && paired.weight, route_b = bc.requires_grad() && paired.bias;
    const int64_t split_rows = paired.split * per_sample;
    record(y, "layer_norm", {xc, gc_, bc}, [=](const Tensor& g) {
      Tensor gcont = g.contiguous();
      capture_output_grad(ticket, gcont);
      Tensor gx = empty_like(xd);
      Tensor ggamma = Tensor::zeros(gd.shape(), g.dtype(), g.device()), gbeta = Tensor::zeros(gd.shape(), g.dtype(), g.device());
      dispatch("layer_norm_backward", gcont, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        if (route_g || route_b) {
          const int64_t r0[2] = {0, split_rows}, nr[2] = {split_rows, rows - split_rows};
          for (int h = 0; h < 2; ++h) {
            T* gg = route_g ? (h ? paired.weight->second : paired.weight->first).template data<T>() : ggamma.data<T>();
            T* gb = route_b ? (h ? paired.bias->second : paired.bias->first).template data<T>() : gbeta.data<T>();
            kernels::layernorm_backward(ctx, nr[h], d, xd.data<T>() + r0[h] * d, gcont.data<T>() + r0[h] * d,
                                        gd.data<T>(), mu.data<T>() + r0[h], rstd.data<T>() + r0[h],
                                        gx.data<T>() + r0[h] * d, gg, gb);
          }
        } else {
          kernels::layernorm_backward(ctx, rows, d, xd.data<T>(), gcont.data<T>(), gd.data<T>(), mu.data<T>(),
                                      rstd.data<T>(), gx.data<T>(), ggamma.data<T>(), gbeta.data<T>());
        }
      });
      return std::vector<Tensor>{gx, route_g ? Tensor() : ggamma, route_b ? Tensor() : gbeta};
    });
  }
  return y;
}

// ------------------------------------------------------------------------------------------------
// Softmax and losses

namespace {

Tensor softmax_like(const char* op, bool log_form, const Tensor& x) {
  if (x.dim() < 1) throw InputError(std::string(op) + ": scalar input");
  const int64_t d = x.shape().back();
  const int64_t rows = d ? x.numel() / d : 0;
  Tensor xc = x.contiguous();
  Tensor y = empty_like(xc);
  dispatch(op, xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    if (log_form) kernels::log_softmax_forward(ctx, rows, d, xc.data<T>(), y.data<T>());
    else kernels::softmax_forward(ctx, rows, d, xc.data<T>(), y.data<T>());
  });
  if (needs_grad({&xc})) {
    Tensor yd = y.detach();
    record(y, op, {xc}, [yd, rows, d, log_form, op](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gx = empty_like(gc);
      dispatch(op, gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        if (log_form) kernels::log_softmax_backward(ctx, rows, d, yd.data<T>(), gc.data<T>(), gx.data<T>());
        else kernels::softmax_backward(ctx, rows, d, yd.data<T>(), gc.data<T>(), gx.data<T>());
      });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x) { return softmax_like("softmax", false, x); }
Tensor log_softmax(const Tensor& x) { return softmax_like("log_softmax", true, x); }

namespace {

// The fused forward of both cross-entropy forms: per-row losses and, when the logits need a gradient, the
// gradient of each row's loss (softmax - onehot, zero where ignored) in the same pass over the logits.
struct CrossEntropyRows {
  Tensor losses, grad, labels;  // grad: undefined when no gradient is needed
  int64_t rows = 0, classes = 0;
};

CrossEntropyRows cross_entropy_rows(const Tensor& logits, const Tensor& labels, int ignore_index, Tensor* lc) {
  require_dim("cross_entropy", logits, 2, "[N,C] logits");
  if (labels.dim() != 1 || labels.numel() != logits.shape()[0])
    throw InputError("cross_entropy: labels " + shape_str(labels.shape()) + " do not match logits " + shape_str(logits.shape()));
  if (labels.device() != logits.device()) throw InputError("cross_entropy: labels and logits on different devices");
  CrossEntropyRows ce;
  ce.rows = logits.shape()[0];
  ce.classes = logits.shape()[1];
  check_indices("cross_entropy", labels, ce.classes, ignore_index);
  *lc = logits.contiguous();
  ce.labels = labels.contiguous();
  ce.losses = Tensor::empty({ce.rows}, logits.dtype(), logits.device());
  if (needs_grad({lc})) ce.grad = empty_like(*lc);
  dispatch("cross_entropy", *lc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    T* grad = ce.grad.defined() ? ce.grad.data<T>() : nullptr;
    kernels::cross_entropy_forward(ctx, ce.rows, ce.classes, lc->data<T>(), ce.labels.data<int32_t>(), ignore_index,
                                   ce.losses.data<T>(), grad);
  });
  return ce;
}

// Records the backward of `out` (the per-row losses, or their mean) on the logits: one elementwise launch that
// scales the saved gradient by the upstream one, per row (stride 1, no scale) or by the mean's scalar times
// 1/count (stride 0, scale: the device scalar cross_entropy_mean wrote). A node's backward runs once, so it
// scales the saved buffer in place and hands that on as the logits' gradient: nothing is allocated and the
// logits are not read again.
void record_cross_entropy(Tensor& out, const Tensor& lc, const CrossEntropyRows& ce, int ignore_index,
                          int64_t gloss_stride, const Tensor& scale) {
  const Tensor grad = ce.grad, yc = ce.labels;
  const int64_t rows = ce.rows, classes = ce.classes;
  record(out, "cross_entropy", {lc}, [=](const Tensor& g) {
    Tensor gc = g.contiguous();
    dispatch("cross_entropy_backward", gc, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      const T* sc = scale.defined() ? scale.data<T>() : nullptr;
      kernels::cross_entropy_backward(ctx, rows, classes, grad.data<T>(), yc.data<int32_t>(), ignore_index,
                                      gc.data<T>(), gloss_stride, sc, grad.data<T>());
    });
    return std::vector<Tensor>{grad};
  });
}

}  // namespace

Tensor cross_entropy_per_sample(const Tensor& logits, const Tensor& labels, int ignore_index) {
  Tensor lc;
  CrossEntropyRows ce = cross_entropy_rows(logits, labels, ignore_index, &lc);
  if (ce.grad.defined()) record_cross_entropy(ce.losses, lc, ce, ignore_index, 1, Tensor());
  return ce.losses;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, int ignore_index) {
  Tensor lc;
  CrossEntropyRows ce = cross_entropy_rows(logits, labels, ignore_index, &lc);
  // The mean over the rows not ignored (0, with a zero gradient, when all are), counted beside the labels:
  // device labels need no synchronising copy.
  Tensor loss = Tensor::empty({}, lc.dtype(), lc.device()), inv_count = empty_like(loss);
  dispatch("cross_entropy_mean", lc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::cross_entropy_mean(ctx, ce.rows, ce.losses.data<T>(), ce.labels.data<int32_t>(), ignore_index,
                                loss.data<T>(), inv_count.data<T>());
  });
  if (ce.grad.defined()) record_cross_entropy(loss, lc, ce, ignore_index, 0, inv_count);
  return loss;
}

Tensor kl_div_per_sample(const Tensor& ref_logits, const Tensor& logits) {
  check_same("kl_div", ref_logits, logits);
  if (ref_logits.shape() != logits.shape() || logits.dim() != 2)
    throw InputError("kl_div: logits " + shape_str(ref_logits.shape()) + " and " + shape_str(logits.shape()) +
                     " must be equal [N,C] shapes");
  Tensor ref_lp = log_softmax(ref_logits.detach());
  Tensor lp = log_softmax(logits);
  return sum(mul(exp(ref_lp), sub(ref_lp, lp)), 1);
}

// ------------------------------------------------------------------------------------------------
// Embedding, attention, dropout

Tensor embedding(const Tensor& indices, const Tensor& table) {
  require_dim("embedding", table, 2, "a [V,D] table");
  if (indices.device() != table.device()) throw InputError("embedding: indices and table on different devices");
  const int64_t vocab = table.shape()[0], dim = table.shape()[1];
  check_indices("embedding", indices, vocab, -1);
  Tensor ic = indices.contiguous(), tc = table.contiguous();
  Shape out_shape = indices.shape();
  out_shape.push_back(dim);
  const int64_t n = ic.numel();
  Tensor y = Tensor::empty(out_shape, table.dtype(), table.device());
  dispatch("embedding", tc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::embedding_forward(ctx, n, dim, ic.data<int32_t>(), tc.data<T>(), y.data<T>());
  });
  const int64_t samples = indices.dim() >= 1 ? indices.shape()[0] : 1;
  CaptureTicket ticket = capture_layer("embedding", table, Tensor(), ic, samples, samples ? n / samples : 0);
  const PairedTicket paired = paired_ticket("embedding", table, Tensor(), samples);
  if (needs_grad({&tc})) {
    const Shape t_shape = table.shape();
    const int64_t split_idx = samples ? paired.split * (n / samples) : 0;
    record(y, "embedding", {tc}, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      capture_output_grad(ticket, gc);
      Tensor gt;
      dispatch("embedding_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        if (paired.weight) {
          // Scatter-add each index range into its own buffer.
          kernels::embedding_backward(ctx, split_idx, dim, vocab, ic.data<int32_t>(), gc.data<T>(),
                                      paired.weight->first.template data<T>());
          kernels::embedding_backward(ctx, n - split_idx, dim, vocab, ic.data<int32_t>() + split_idx,
                                      gc.data<T>() + split_idx * dim, paired.weight->second.template data<T>());
        } else {
          gt = Tensor::zeros(t_shape, g.dtype(), g.device());
          kernels::embedding_backward(ctx, n, dim, vocab, ic.data<int32_t>(), gc.data<T>(), gt.data<T>());
        }
      });
      return std::vector<Tensor>{gt};
    });
  }
  return y;
}

Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  check_same("causal_attention", q, k);
  check_same("causal_attention", q, v);
  require_dim("causal_attention", q, 4, "[B,H,T,Dh] queries");
  if (k.shape() != q.shape() || v.shape() != q.shape())
    throw InputError("causal_attention: q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " +
                     shape_str(v.shape()) + " must have equal shapes");
  const int64_t bh = q.shape()[0] * q.shape()[1], t = q.shape()[2], dh = q.shape()[3];
  const double scale = 1.0 / std::sqrt(double(std::max<int64_t>(dh, 1)));
  Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  Tensor scores = Tensor::empty({bh, t, t}, q.dtype(), q.device());
  Tensor probs = Tensor::empty({bh, t, t}, q.dtype(), q.device());
  Tensor y = empty_like(qc);
  dispatch("causal_attention", qc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::gemm_batched(ctx, false, true, t, t, dh, T(1), qc.data<T>(), dh, t * dh, kc.data<T>(), dh, t * dh, T(0),
                          scores.data<T>(), t, t * t, bh);
    kernels::causal_softmax_forward(ctx, bh, t, T(scale), scores.data<T>(), probs.data<T>());
    kernels::gemm_batched(ctx, false, false, t, dh, t, T(1), probs.data<T>(), t, t * t, vc.data<T>(), dh, t * dh, T(0),
                          y.data<T>(), dh, t * dh, bh);
  });
  if (needs_grad({&qc, &kc, &vc})) {
    Tensor qd = qc.detach(), kd = kc.detach(), vd = vc.detach();
    record(y, "causal_attention", {qc, kc, vc}, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gq = empty_like(qd), gk = empty_like(kd), gv = empty_like(vd);
      Tensor gprobs = Tensor::empty({bh, t, t}, g.dtype(), g.device());
      Tensor gscores = Tensor::empty({bh, t, t}, g.dtype(), g.device());
      dispatch("causal_attention_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        // dP = dY V^T, dV = P^T dY, dS = softmax'(dP), dQ = dS K, dK = dS^T Q
        kernels::gemm_batched(ctx, false, true, t, t, dh, T(1), gc.data<T>(), dh, t * dh, vd.data<T>(), dh, t * dh,
                              T(0), gprobs.data<T>(), t, t * t, bh);
        kernels::gemm_batched(ctx, true, false, t, dh, t, T(1), probs.data<T>(), t, t * t, gc.data<T>(), dh, t * dh,
                              T(0), gv.data<T>(), dh, t * dh, bh);
        kernels::causal_softmax_backward(ctx, bh, t, T(scale), probs.data<T>(), gprobs.data<T>(), gscores.data<T>());
        kernels::gemm_batched(ctx, false, false, t, dh, t, T(1), gscores.data<T>(), t, t * t, kd.data<T>(), dh, t * dh,
                              T(0), gq.data<T>(), dh, t * dh, bh);
        kernels::gemm_batched(ctx, true, false, t, dh, t, T(1), gscores.data<T>(), t, t * t, qd.data<T>(), dh, t * dh,
                              T(0), gk.data<T>(), dh, t * dh, bh);
      });
      return std::vector<Tensor>{gq, gk, gv};
    });
  }
  return y;
}

Tensor dropout(const Tensor& x, double p, bool training, uint64_t seed) {
  if (!(p >= 0.0 && p < 1.0)) throw InputError("dropout: probability " + std::to_string(p) + " outside [0, 1)");
  if (!training || p == 0.0) return x;
  Tensor xc = x.contiguous();
  Tensor y = empty_like(xc);
  Tensor mask = Tensor::empty(xc.shape(), DType::u8, xc.device());
  dispatch("dropout", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::dropout_forward(ctx, xc.numel(), T(p), seed, xc.data<T>(), y.data<T>(), mask.data<uint8_t>());
  });
  if (needs_grad({&xc})) {
    record(y, "dropout", {xc}, [mask, p](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gx = empty_like(gc);
      dispatch("dropout_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::dropout_backward(ctx, gc.numel(), T(p), mask.data<uint8_t>(), gc.data<T>(), gx.data<T>());
      });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

}  // namespace hamu
