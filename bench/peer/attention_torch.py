#!/usr/bin/env python3
# bench/peer/attention_torch.py: the PyTorch peer of bench_attention: torch.nn.functional.
# scaled_dot_product_attention (causal; GQA by enable_gqa where the heads differ) forward and forward +
# backward at B x H x T x Dh, medians over --reps, in float32 (bench_attention's precision) and bfloat16
# (the flash kernels' precision), same FLOP convention and peak memory from torch.cuda.max_memory_allocated.
#   python3 bench/peer/attention_torch.py [--device cuda] [--batch 4] [--heads 32] [--kv-heads 32]
#                                         [--tokens 2048] [--dim 128] [--reps 10]
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--heads", type=int, default=32)
ap.add_argument("--kv-heads", type=int, default=0)
ap.add_argument("--tokens", type=int, default=2048)
ap.add_argument("--dim", type=int, default=128)
ap.add_argument("--reps", type=int, default=10)
a = ap.parse_args()
hkv = a.kv_heads or a.heads
dev = torch.device(a.device)
cuda = dev.type == "cuda"


def sync():
    if cuda:
        torch.cuda.synchronize()


flop_fwd = 4.0 * a.batch * a.heads * a.tokens * a.tokens * a.dim / 2.0
print(f"attention_torch: torch {torch.__version__}, {a.device}, B {a.batch} x H {a.heads} (Hkv {hkv}) x T {a.tokens} "
      f"x Dh {a.dim}, causal, {a.reps} reps")
print("| path | forward ms | fwd+bwd ms | forward GFLOP/s | fwd+bwd GFLOP/s | peak MiB |")
print("|---|---:|---:|---:|---:|---:|")
for dtype in (torch.float32, torch.bfloat16):
    if not cuda and dtype == torch.bfloat16:
        continue
    g = torch.Generator(device=dev).manual_seed(7)
    q = (torch.rand(a.batch, a.heads, a.tokens, a.dim, device=dev, generator=g, dtype=dtype) * 2 - 1).requires_grad_()
    k = (torch.rand(a.batch, hkv, a.tokens, a.dim, device=dev, generator=g, dtype=dtype) * 2 - 1).requires_grad_()
    v = (torch.rand(a.batch, hkv, a.tokens, a.dim, device=dev, generator=g, dtype=dtype) * 2 - 1).requires_grad_()
    proj = torch.rand(a.batch, a.heads, a.tokens, a.dim, device=dev, generator=g, dtype=dtype)
    kw = {"is_causal": True}
    if hkv != a.heads:
        kw["enable_gqa"] = True
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    fwd, both = [], []
    for r in range(a.reps + 1):
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, **kw)
        sync()
        t1 = time.perf_counter()
        y = F.scaled_dot_product_attention(q, k, v, **kw)
        (y * proj).sum().backward()
        q.grad = k.grad = v.grad = None
        sync()
        t2 = time.perf_counter()
        if r:
            fwd.append(t1 - t0)
            both.append(t2 - t1)
    mf, mb = statistics.median(fwd), statistics.median(both)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    name = f"torch sdpa {str(dtype).replace('torch.', '')}"
    print(f"| {name} | {mf * 1e3:.3f} | {mb * 1e3:.3f} | {flop_fwd / mf / 1e9:.0f} | {3.5 * flop_fwd / mb / 1e9:.0f} | {peak:.0f} |")
