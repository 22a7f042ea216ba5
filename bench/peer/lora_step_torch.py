#!/usr/bin/env python3
# bench/peer/lora_step_torch.py: the PyTorch eager peer of bench_lora_step: one HAMU-Q unlearning step of a
# Llama-shaped model (transformers' LlamaForCausalLM, random weights) with peft LoRA adapters (r 8, alpha 16,
# dropout 0.05 on q, k, v, o, gate, up, down; base frozen), a retain and a forget batch of random token
# sequences (the first 32 tokens a prompt with labels -100), done as the published code does it: two
# forward/backward passes, each gradient clipped, then the per-tensor solve with host round trips
# (hamu_step_torch.hamu_q_update) and an SGD step. Prints one markdown table: median ms per step and the
# peak memory (CUDA: max_memory_allocated; CPU: peak resident set). Run only where torch, transformers and
# peft are importable.
import argparse
import os
import resource
import statistics
import sys
import time

try:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
except Exception as e:  # noqa: BLE001
    print(f"lora_step_torch: skipped: torch/transformers/peft not importable ({e})")
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hamu_step_torch import hamu_q_update  # noqa: E402

PRESETS = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32, num_hidden_layers=32),
    "tiny": dict(hidden_size=256, intermediate_size=688, num_attention_heads=8, num_key_value_heads=8, num_hidden_layers=4),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int, default=0, help="keep this many layers of the preset (0: all)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when visible)")
    ap.add_argument("--base-dtype", default="float32", choices=["float32", "bfloat16"],
                    help="the frozen base weights' dtype (adapters stay float32)")
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("lora_step_torch: skipped: no GPU visible to PyTorch")
        return
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    shape = dict(PRESETS[args.preset])
    if args.layers > 0:
        shape["num_hidden_layers"] = args.layers
    cfg = LlamaConfig(vocab_size=32000, max_position_embeddings=max(4096, args.tokens), rms_norm_eps=1e-5,
                      tie_word_embeddings=False, attn_implementation=args.attention, **shape)
    dtype = getattr(torch, args.base_dtype)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(dtype)
    lcfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, bias="none",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, lcfg)
    for n, p in model.named_parameters():  # adapters in float32 whatever the base
        if p.requires_grad:
            p.data = p.data.float()
    model.train()
    build_s = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4)
    g = torch.Generator().manual_seed(1)

    def batch():
        x = torch.randint(0, 32000, (args.batch, args.tokens), generator=g)
        y = x.clone()
        y[:, :32] = -100
        return x.to(dev), y.to(dev)

    (xr, yr), (xf, yf) = batch(), batch()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for s in range(args.steps + 1):
        sync()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(input_ids=xr, labels=yr).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        g_r = [p.grad.detach().clone() for p in params]
        opt.zero_grad(set_to_none=True)
        model(input_ids=xf, labels=yf).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        g_f = [p.grad.detach().clone() for p in params]
        hamu_q_update(params, g_r, g_f, opt, 1e-4, 0.5)
        sync()
        if s > 0:
            times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    where = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    adapter = sum(p.numel() for p in params)
    print(f"lora_step_torch: PyTorch {torch.__version__}, transformers + peft, {where}, llama {args.preset}-shaped, "
          f"{shape['num_hidden_layers']} layers, base {args.base_dtype}, {args.attention} attention, {adapter} adapter "
          f"params in {len(params)} tensors, batch {args.batch} + {args.batch} x {args.tokens} tokens, TF32 off; model "
          f"built in {build_s:.1f} s")
    print("| implementation | median ms/step | peak MiB |")
    print("|---|---|---|")
    print(f"| pytorch eager + peft, published-style HAMU-Q (two passes, per-tensor host round trips), base "
          f"{args.base_dtype} | {1e3 * statistics.median(times):.1f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
