#!/usr/bin/env python3
# bench/peer/capi_step_torch.py: the unlearning step of a PyTorch model, from its retain and forget
# gradients: the published implementation's per-tensor HAMU-Q solve (clip_grad_norm_ on both gradients,
# per-tensor norms and dot products with a host round trip each, per-tensor delta, SGD step) against one
# libhamu call (hamu_step over every parameter tensor, in place). ResNet-20 (0.27M parameters, 65 tensors,
# bench/peer/hamu_step_torch.py) and an MLP of ~20M parameters; on the GPU when PyTorch sees one (the C API
# on PyTorch's current stream), else on the CPU. Prints one markdown table.
#
# Usage: capi_step_torch.py BUILD_DIR [--reps N]
import argparse
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except Exception as e:  # noqa: BLE001
    print(f"capi_step_torch: skipped: PyTorch not importable ({e})")
    sys.exit(0)

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "..", "examples"))
import hamu_ctypes as hc  # noqa: E402
from hamu_step_torch import ResNet20  # noqa: E402


def published_step(params, g_r, g_f, lr, ratio, clip=1.0, eps=1e-12):
    """bench/peer/hamu_step_torch.py's solve, from given gradients (clipped in place, as clip_grad_norm_ does)."""
    for gs in (g_r, g_f):
        _clip(gs, clip)
    norms = [(a.norm().item(), c.norm().item()) for a, c in zip(g_r, g_f)]
    total = max(sum(na * nc for na, nc in norms), eps)
    B = ratio * lr
    with torch.no_grad():
        for p, a, c, (na, nc) in zip(params, g_r, g_f, norms):
            b = B * na * nc / total
            R = lr * na
            cc = nc * nc
            d = torch.dot(a.flatten(), c.flatten()).item()
            if cc < eps or d <= -b * max(na, eps) / max(R, eps):
                delta = -(R / max(na, eps)) * a
            else:
                disc = R * R - b * b / cc
                if disc < 0:
                    return False
                perp = a - (d / cc) * c
                nperp = perp.norm().item()
                asc = (b / cc) * c
                delta = asc if nperp < eps else asc - (R if b <= eps else disc ** 0.5) * perp / nperp
            p.add_(delta)  # = SGD with p.grad = -delta / lr
    return True


def _clip(gs, clip):
    # clip_grad_norm_'s arithmetic on plain tensors (it works on .grad of parameters)
    total = torch.sqrt(sum((g * g).sum() for g in gs))
    s = torch.clamp(clip / (total + 1e-6), max=1.0)
    for g in gs:
        g.mul_(s)


def grads_of(model, x, y):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def bench(name, model, x, y, dev, hl, reps, sync):
    params = list(model.parameters())
    n = x.shape[0] // 2
    g_r, g_f = grads_of(model, x[:n], y[:n]), grads_of(model, x[n:], y[n:])
    lr, ratio = 1e-4, 0.01
    ctx = hl.context("cuda:0" if dev.type == "cuda" else "cpu")
    if dev.type == "cuda":
        ctx.set_stream(torch.cuda.current_stream().cuda_stream)
    blocks = [(p.data_ptr(), r.data_ptr(), f.data_ptr(), p.numel()) for p, r, f in zip(params, g_r, g_f)]

    # Interleaved (published, libhamu, published, ...) so load changes on a shared machine hit both alike.
    t_pub, t_api = [], []
    for i in range(reps + 2):
        a = ([g.clone() for g in g_r], [g.clone() for g in g_f])
        sync()
        t0 = time.perf_counter()
        published_step(params, a[0], a[1], lr, ratio)
        sync()
        t1 = time.perf_counter()
        ctx.step(blocks, "hamu-q", lr=lr, ratio=ratio)
        sync()
        t2 = time.perf_counter()
        if i >= 2:
            t_pub.append(1e3 * (t1 - t0))
            t_api.append(1e3 * (t2 - t1))
    t_pub, t_api = statistics.median(t_pub), statistics.median(t_api)
    ctx.close()
    nparam = sum(p.numel() for p in params)
    print(f"| {name} | {dev.type} | {nparam / 1e6:.2f}M | {len(params)} | {t_pub:.3f} | {t_api:.3f} | {t_pub / t_api:.1f}x |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    hl = hc.Library(os.path.join(args.build, "libhamu.so"))
    dev = torch.device("cuda" if torch.cuda.is_available() and hl.has_cuda() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    print(f"capi_step_torch: PyTorch {torch.__version__}, {dev.type}"
          f"{' ' + torch.cuda.get_device_name(0) if dev.type == 'cuda' else f', {torch.get_num_threads()} threads'}; "
          f"one HAMU-Q step from given gradients, median ms of {args.reps}")
    print("| model | device | params | tensors | published per-tensor solve ms | libhamu hamu_step ms | speedup |")
    print("|---|---|---|---|---|---|---|")
    resnet = ResNet20().to(dev).eval()
    x = torch.randn(64, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (64,), device=dev)
    bench("resnet20", resnet, x, y, dev, hl, args.reps, sync)
    mlp = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), *[m for _ in range(4) for m in (nn.Linear(2048, 2048), nn.ReLU())],
                        nn.Linear(2048, 10)).to(dev)
    x = torch.randn(64, 1024, device=dev)
    y = torch.randint(0, 10, (64,), device=dev)
    bench("mlp-20M", mlp, x, y, dev, hl, args.reps, sync)


if __name__ == "__main__":
    main()
