#!/usr/bin/env python3
# scripts/check_torch_load.py: hamu checkpoints load strictly into the equivalent torch.nn modules and give
# the same logits. For each architecture (mlp, cnn, resnet20): train one epoch with `hamu train` on a small
# synthetic IDX set, export the first test images and their logits with `hamu eval --logits`, build the
# torch.nn model below, load_state_dict(strict=True) from safetensors.torch.load_file, and compare logits.
#
# Run:  python3 scripts/check_torch_load.py [path/to/hamu]      (needs torch and safetensors; not part of the build)
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


# ---- the torch.nn equivalents (the same module names as hamu's checkpoints) ----------------------

def mlp(c, h, w, k):
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, k))


class Cnn(nn.Module):
    def __init__(self, c, h, w, k):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        self.fc1, self.fc2 = nn.Linear(64 * (h // 4) * (w // 4), 128), nn.Linear(128, k)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:  # projection shortcut: 1x1 conv + BN
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(h + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet20(nn.Module):
    def __init__(self, c, h, w, k):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        layers, cin = [], 16
        for stage, width in enumerate((16, 32, 64)):
            blocks = []
            for b in range(3):
                blocks.append(BasicBlock(cin, width, 2 if stage > 0 and b == 0 else 1))
                cin = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, k)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


BUILD = {"mlp": mlp, "cnn": Cnn, "resnet20": ResNet20}


# ---- synthetic data ------------------------------------------------------------------------------

def write_idx(folder, prefix, n, size, seed):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 4).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size), dtype=np.uint8)
    for i, y in enumerate(labels):  # each class lights its own band of rows
        images[i, y::4, :] += 150
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, prefix + "-images-idx3-ubyte"), "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + size.to_bytes(4, "big") * 2 + images.tobytes())
    with open(os.path.join(folder, prefix + "-labels-idx1-ubyte"), "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())


def main():
    hamu = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/hamu")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        write_idx(os.path.join(tmp, "data"), "train", 64, 16, 1)
        write_idx(os.path.join(tmp, "data"), "t10k", 32, 16, 2)
        for arch, build in BUILD.items():
            ckpt, logits = os.path.join(tmp, arch + ".safetensors"), os.path.join(tmp, arch + ".logits.safetensors")
            run = lambda *a: subprocess.run([hamu, *a, "--threads", "1", "--quiet"], check=True, capture_output=True)
            run("train", "--data", "idx:" + os.path.join(tmp, "data"), "--model", arch, "--epochs", "1", "--batch", "16",
                "--out", ckpt)
            run("eval", "--model", ckpt, "--logits", logits)
            model = build(1, 16, 16, 4)
            state = load_file(ckpt)
            model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
            model.eval()
            ref = load_file(logits)
            with torch.no_grad():
                got = model(ref["inputs"])
            rel = ((got - ref["logits"]).abs().max() / ref["logits"].abs().max()).item()
            tracked = sorted({int(v) for k, v in state.items() if k.endswith("num_batches_tracked")})
            print(f"{arch:9s} strict load ok, {len(state)} tensors, num_batches_tracked {tracked or '-'}, "
                  f"logits {tuple(got.shape)} max rel diff {rel:.2e}")
            worst = max(worst, rel)
    ok = worst < 1e-5
    print(("OK" if ok else "FAIL") + f": worst max rel diff {worst:.2e} (tolerance 1e-5)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
