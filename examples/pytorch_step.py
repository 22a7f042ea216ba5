#!/usr/bin/env python3
# examples/pytorch_step.py: libhamu as the unlearning step of a PyTorch training stack. A real nn.Module (an
# MLP; CUDA when available, else CPU) computes its retain and forget gradients the usual way; the published
# implementation's per-tensor HAMU-Q solve (clip, per-tensor norms and dot products with host round trips,
# per-tensor update) is replaced by one hamu_step call on p.data_ptr() / grad.data_ptr(), on PyTorch's
# current stream. Checks: (1) the parameters after the step equal the engine's own step (`hamu unlearn`'s
# FusedUpdate, examples/engine_step) on the same gradients: bit for bit on the CPU, to float rounding on CUDA
# (a different reduction order); (2) they agree with the published per-tensor solve computed in float64.
#
# Usage: pytorch_step.py BUILD_DIR
import os
import sys
import tempfile

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except Exception as e:  # noqa: BLE001
    print(f"pytorch_step: skipped: PyTorch is not importable ({type(e).__name__})")
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hamu_ctypes as hc  # noqa: E402


def published_delta(g_r, g_f, lr, ratio, clip=1.0, eps=1e-12):
    """The published per-tensor HAMU-Q solve (bench/peer/hamu_step_torch.py), in float64; None if infeasible."""
    g_r = [g.double() for g in g_r]
    g_f = [g.double() for g in g_f]
    for gs in (g_r, g_f):  # clip_grad_norm_: total norm over all tensors
        total = torch.sqrt(sum((g * g).sum() for g in gs)).item()
        s = min(1.0, clip / (total + 1e-6))
        for g in gs:
            g.mul_(s)
    norms = [(a.norm().item(), c.norm().item()) for a, c in zip(g_r, g_f)]
    total = max(sum(na * nc for na, nc in norms), eps)
    B = ratio * lr
    out = []
    for a, c, (na, nc) in zip(g_r, g_f, norms):
        b = B * na * nc / total
        R = lr * na
        cc = nc * nc
        d = torch.dot(a.flatten(), c.flatten()).item()
        if cc < eps:
            out.append(-(R / max(na, eps)) * a)
            continue
        disc = R * R - b * b / cc
        if disc < 0:
            return None
        if d <= -b * max(na, eps) / max(R, eps):
            out.append(-(R / max(na, eps)) * a)
        else:
            perp = a - (d / cc) * c
            nperp = perp.norm().item()
            asc = (b / cc) * c
            out.append(asc if nperp < eps else asc - (R if b <= eps else disc ** 0.5) * perp / nperp)
    return out


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    hl = hc.Library(os.path.join(build, "libhamu.so"))
    dev = "cuda" if torch.cuda.is_available() and hl.has_cuda() else "cpu"
    if torch.cuda.is_available() and dev == "cpu":
        print("pytorch_step: PyTorch sees a GPU but this libhamu has no CUDA backend (make CUDA=1): on the CPU")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)).to(dev)
    xr, yr = torch.randn(256, 32, device=dev), torch.randint(0, 10, (256,), device=dev)
    xf, yf = torch.randn(64, 32, device=dev), torch.randint(0, 10, (64,), device=dev)
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(x, y):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        return [p.grad.detach().clone().contiguous() for p in params]

    g_r, g_f = grads(xr, yr), grads(xf, yf)
    lr = 0.05
    ratio = 0.3 * sum(a.norm().item() * c.norm().item() for a, c in zip(g_r, g_f)) / max(
        1.0, sum(a.norm().item() ** 2 for a in g_r) ** 0.5) / max(1.0, sum(c.norm().item() ** 2 for c in g_f) ** 0.5)
    before = [p.detach().clone() for p in params]

    with hl.context("cuda:0" if dev == "cuda" else "cpu") as ctx, tempfile.TemporaryDirectory() as tmp:
        if dev == "cuda":
            ctx.set_stream(torch.cuda.current_stream().cuda_stream)
        # The whole step: one call over every parameter tensor (replaces the per-tensor solve and SGD step).
        blocks = [(p.data_ptr(), r.data_ptr(), f.data_ptr(), p.numel()) for p, r, f in zip(params, g_r, g_f)]
        st, rep = ctx.step(blocks, "hamu-q", lr=lr, ratio=ratio, clip=1.0)
        print(f"pytorch_step: {dev}, {len(blocks)} tensors, {sum(p.numel() for p in params)} parameters: "
              f"{hc.HAMU_OK == st and 'applied' or 'skipped'}, kappa {rep.kappa:+.5f}, branches "
              f"d{rep.n_direct}/r{rep.n_rectified}/c{rep.n_colinear}/i{rep.n_infeasible}")
        after = [p.detach().clone() for p in params]

        # (1) The engine's own step on the same gradients.
        cpu = lambda ts: [t.detach().cpu().numpy() for t in ts]  # noqa: E731
        want = hc.engine_step(os.path.join(build, "examples", "engine_step"), tmp, cpu(before), cpu(g_r), cpu(g_f),
                              "hamu-q", lr, ratio, 1.0)
        got = cpu(after)
        if dev == "cpu":
            ok = all((a == b).all() for a, b in zip(got, want))
            print(f"pytorch_step: vs hamu's engine step on the same gradients: {'bit-identical' if ok else 'DIFFERENT'}")
        else:
            err = max(float(abs(a - b).max()) for a, b in zip(got, want))
            ok = err <= 1e-6
            print(f"pytorch_step: vs hamu's engine step (CPU) on the same gradients: max |diff| {err:.2e}")

        # (2) The published per-tensor solve.
        pub = published_delta(g_r, g_f, lr, ratio)
        if pub is None:
            print("pytorch_step: the published solve calls this step infeasible")
            return 1
        dmax = max(float(d.abs().max()) for d in pub)
        diff = max(float((a.double() - b.double() - d).abs().max()) for a, b, d in zip(after, before, pub))
        print(f"pytorch_step: vs the published per-tensor solve (float64): max |diff| {diff:.2e} "
              f"(largest step {dmax:.2e})")
        if not ok or diff > 1e-4 * dmax + 1e-7:
            print("pytorch_step: FAILED")
            return 1
    print("pytorch_step: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
