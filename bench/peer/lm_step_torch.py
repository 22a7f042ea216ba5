#!/usr/bin/env python3
# bench/peer/lm_step_torch.py: the PyTorch peer of bench_lm_step: forward + backward of a GPT-2-124M-shaped
# GPT2LMHeadModel (random weights, dropout off) at batch B x T on the CPU, same thread count.
#   OMP_NUM_THREADS=2 python3 bench/peer/lm_step_torch.py [--batch 4] [--tokens 256] [--steps 2] [--layers 12]
import argparse
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--tokens", type=int, default=256)
ap.add_argument("--steps", type=int, default=2)
ap.add_argument("--layers", type=int, default=12)
a = ap.parse_args()
torch.manual_seed(1)
model = GPT2LMHeadModel(GPT2Config(n_layer=a.layers, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                   attn_implementation="eager"))
model.train()
ids = torch.randint(0, 50257, (a.batch, a.tokens))
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch} x {a.tokens}")
best_f = best_b = 1e30
for s in range(a.steps + 1):
    model.zero_grad()
    t0 = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    if s == 0:
        continue
    best_f, best_b = min(best_f, t1 - t0), min(best_b, t2 - t1)
    print(f"step {s}: loss {loss.item():.4f} forward {t1 - t0:.2f} s backward {t2 - t1:.2f} s")
print(f"best: forward {best_f:.2f} s + backward {best_b:.2f} s = {best_f + best_b:.2f} s per step")
