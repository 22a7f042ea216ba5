#!/usr/bin/env python3
# bench/peer/train_cnn_torch.py: the PyTorch eager peer of `hamu train --model cnn` throughput: the same cnn
# (conv 32 3x3 + BN + ReLU + max-pool 2, conv 64 3x3 + BN + ReLU + max-pool 2, fc 128 + ReLU, fc 10; BatchNorm in
# training mode), Fashion-MNIST shapes (1x28x28, 10 classes), AdamW lr 1e-3, forward + backward + update per
# step on resident random batches (the data pipeline is not timed). Prints img/s (median over windows).
# Runs on the GPU when visible, else the CPU (--device overrides). Run only where torch is importable.
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
    print(f"train_cnn_torch: skipped: PyTorch not importable ({e})")
    sys.exit(0)


class Cnn(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        h = F.max_pool2d(F.relu(self.bn2(self.conv2(h))), 2)
        return self.fc2(F.relu(self.fc1(h.flatten(1))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed window")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("train_cnn_torch: skipped: no GPU visible to PyTorch")
        return
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = Cnn().to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [(torch.randn(args.batch, 1, 28, 28, device=dev), torch.randint(0, 10, (args.batch,), device=dev))
               for _ in range(4)]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(i):
        x, y = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for i in range(5):
        step(i)
    rates = []
    for w in range(args.windows):
        sync()
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i)
        sync()
        rates.append(args.batch * args.steps / (time.perf_counter() - t0))
    where = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"train_cnn_torch: PyTorch {torch.__version__} eager, {where}, cnn, batch {args.batch}, AdamW, TF32 off")
    print("| implementation | img/s (median of windows) |")
    print("|---|---|")
    print(f"| pytorch eager cnn training step | {statistics.median(rates):.0f} |")


if __name__ == "__main__":
    main()
