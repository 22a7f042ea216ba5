#!/usr/bin/env python3
# bench/peer/hamu_step_torch.py: the PyTorch eager peer of bench_unlearn_step: one HAMU-Q step of
# ResNet-20 (3x3 stem, 16/32/64, projection shortcuts, BatchNorm frozen), retain batch + forget batch,
# done the way the published implementation does it: two forward/backward passes, each gradient
# clipped, then a per-tensor solve with host round trips (.item() per tensor), the step fed to SGD.
# Timed on the same card as our bench; prints one markdown table. Run only where torch is importable.
import argparse
import math
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("hamu_step_torch: skipped: no GPU visible to PyTorch")
        return
    dev = torch.device("cuda")
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = ResNet20().to(dev)
    model.eval()  # BatchNorm frozen (running statistics), gradients still flow
    for p in model.parameters():
        p.requires_grad_(True)
    lr = 1e-4
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xr = torch.randn(args.batch, 3, 32, 32, device=dev)
    xf = torch.randn(args.batch, 3, 32, 32, device=dev)
    yr = torch.randint(0, 10, (args.batch,), device=dev)
    yf = torch.randint(0, 10, (args.batch,), device=dev)
    times = []
    for s in range(args.steps + 5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        hamu_q_step(model, opt, xr, yr, xf, yf, lr, 0.5)
        torch.cuda.synchronize()
        if s >= 5:
            times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    print(f"hamu_step_torch: PyTorch {torch.__version__} eager, {torch.cuda.get_device_name(0)}, "
          f"resnet20, batch {args.batch} + {args.batch}, TF32 off")
    print("| implementation | median ms/step |")
    print("|---|---|")
    print(f"| pytorch eager, published-style HAMU-Q (two passes, per-tensor host round trips) | {ms:.3f} |")


if __name__ == "__main__":
    main()
