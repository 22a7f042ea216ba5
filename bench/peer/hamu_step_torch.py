#!/usr/bin/env python3
# bench/peer/hamu_step_torch.py: the PyTorch eager peer of bench_unlearn_step: one HAMU-Q step of
# ResNet-20 (3x3 stem, 16/32/64, projection shortcuts, BatchNorm frozen), retain batch + forget batch,
# done the way the published implementation does it: two forward/backward passes, each gradient
# clipped, then a per-tensor solve with host round trips (.item() per tensor), the step fed to SGD.
# Variants: eager (NCHW), channels-last, torch.compile (cuda: all three with cudnn.benchmark; cpu: eager unless
# --variants says more). Timed on the same card (or CPU) as our bench; prints one markdown table and a
# "best" line. Run only where torch is importable.
import argparse
import math
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except Exception as e:  # noqa: BLE001
    print(f"hamu_step_torch: skipped: PyTorch not importable ({e})")
    sys.exit(0)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if cin != cout or stride != 1:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet20(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for stage, w in enumerate([16, 32, 64]):
            blocks = []
            for b in range(3):
                blocks.append(Block(cin, w, 2 if stage > 0 and b == 0 else 1))
                cin = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.layer3(self.layer2(self.layer1(h)))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def hamu_q_step(model, opt, xr, yr, xf, yf, lr, ratio, clip=1.0, eps=1e-12):
    params = [p for p in model.parameters() if p.requires_grad]
    # retain pass, clipped, stored
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(xr), yr).backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    g_r = [p.grad.detach().clone() for p in params]
    opt.zero_grad(set_to_none=True)
    # forget pass, clipped
    F.cross_entropy(model(xf), yf).backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    g_f = [p.grad.detach().clone() for p in params]
    return hamu_q_update(params, g_r, g_f, opt, lr, ratio, eps)


def hamu_q_update(params, g_r, g_f, opt, lr, ratio, eps=1e-12):
    """The published per-tensor HAMU-Q solve (host round trips per tensor) and the SGD step; False when infeasible."""
    # constraint split by grad norm products (host round trips per tensor, as published)
    norms = [(a.norm().item(), c.norm().item()) for a, c in zip(g_r, g_f)]
    total = max(sum(na * nc for na, nc in norms), eps)
    B = ratio * lr
    for p, a, c, (na, nc) in zip(params, g_r, g_f, norms):
        b = B * na * nc / total
        R = lr * na
        cc = nc * nc
        d = torch.dot(a.flatten(), c.flatten()).item()
        if cc < eps:
            delta = -(R / max(na, eps)) * a
        else:
            disc = R * R - b * b / cc
            if disc < 0:
                return False
            if d <= -b * max(na, eps) / max(R, eps):
                delta = -(R / max(na, eps)) * a
            else:
                perp = a - (d / cc) * c
                nperp = perp.norm().item()
                asc = (b / cc) * c
                if nperp < eps:
                    delta = asc
                else:
                    s = R if b <= eps else math.sqrt(disc)
                    delta = asc - s * perp / nperp
        p.grad = -delta / lr
    opt.step()
    return True


def time_variant(name, args, dev, lr):
    """Median seconds per step of one PyTorch variant (fresh model, same seed and batches)."""
    torch.manual_seed(0)
    channels_last = name in ("channels_last", "compile")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = ResNet20().to(dev).to(memory_format=fmt)
    model.eval()  # BatchNorm frozen (running statistics), gradients still flow
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    xr = torch.randn(args.batch, 3, 32, 32, generator=g).to(dev).to(memory_format=fmt)
    xf = torch.randn(args.batch, 3, 32, 32, generator=g).to(dev).to(memory_format=fmt)
    yr = torch.randint(0, 10, (args.batch,), generator=g).to(dev)
    yf = torch.randint(0, 10, (args.batch,), generator=g).to(dev)
    run = model
    if name == "compile":
        run = torch.compile(model)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    warm = args.warmup if name != "compile" else max(args.warmup, 3)
    times = []
    for s in range(args.steps + warm):
        sync()
        t0 = time.perf_counter()
        hamu_q_step_with(run, model, opt, xr, yr, xf, yf, lr, 0.5)
        sync()
        if s >= warm:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def hamu_q_step_with(run, model, opt, xr, yr, xf, yf, lr, ratio):
    # run: the module or its torch.compile wrapper (same parameters).
    class _M:
        def __call__(self, x):
            return run(x)

        def parameters(self):
            return model.parameters()

    return hamu_q_step(_M(), opt, xr, yr, xf, yf, lr, ratio)


DESCRIPTIONS = {
    "eager": "pytorch eager, published-style HAMU-Q (two passes, per-tensor host round trips), NCHW",
    "channels_last": "same, channels-last (NHWC) tensors",
    "compile": "same, torch.compile(model), channels-last",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when visible)")
    ap.add_argument("--variants", default="",
                    help="comma list of eager,channels_last,compile (default: all three on cuda, eager on the cpu)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("hamu_step_torch: skipped: no GPU visible to PyTorch")
        return
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    else:
        # As PyTorch users run it: cuDNN picks algorithms by measurement; exact float32 (no TF32).
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    variants = [v for v in (args.variants or ("eager,channels_last,compile" if dev.type == "cuda" else "eager")).split(",") if v]
    where = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"hamu_step_torch: PyTorch {torch.__version__}, {where}, resnet20, batch {args.batch} + {args.batch}, "
          f"TF32 off, median of {args.steps} steps")
    rows = []
    for v in variants:
        if v not in DESCRIPTIONS:
            print(f"hamu_step_torch: unknown variant {v}", file=sys.stderr)
            sys.exit(2)
        try:
            rows.append((v, 1e3 * time_variant(v, args, dev, 1e-4)))
        except Exception as e:  # noqa: BLE001  (torch.compile may not run on a machine: say so, go on)
            msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            print(f"hamu_step_torch: variant {v} did not run: {type(e).__name__}: {msg}")
    print("| implementation | median ms/step |")
    print("|---|---|")
    for v, ms in rows:
        print(f"| {DESCRIPTIONS[v]} | {ms:.3f} |")
    if rows:
        best = min(rows, key=lambda r: r[1])
        print(f"hamu_step_torch: best {best[0]} {best[1]:.3f} ms; eager {dict(rows).get('eager', float('nan')):.3f} ms")


if __name__ == "__main__":
    main()
