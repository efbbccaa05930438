#!/usr/bin/env python3
"""Training throughput: `edgeforge distill` vs PyTorch + PEFT on the same CPU, in one run.

Usage (from the repository root, after `make`):
    /work/pyref/bin/python bench/bench_train.py [--model models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf]
        [--seq-len 512] [--batch 1] [--steps 3] [--rank 16] [--threads N] [--edgeforge build/edgeforge]

Configuration (issue 4): LoRA r=16 (lora_alpha 16) on all seven linears, alpha = 1 (pure KL,
T = 1), the model itself as the teacher, AdamW, sequences filled to --seq-len. The GGUF is
converted once to an F32 Hugging Face directory so both sides run the same weights.
Reports training tokens/s of both (after one warm-up step), the ratio, and model FLOPs
utilisation against the SGEMM peak measured here with torch.matmul (same threads):
FLOPs/token ~ 2P (student forward) + 2P (backward to activations; base weights frozen)
+ 2P (teacher forward) + LoRA and attention terms (counted).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch


def sgemm_peak(threads):
    torch.set_num_threads(threads)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def flops_per_token(cfg, rank, seq_len):
    D, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H, KVH = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    HD = D // H
    V = cfg["vocab_size"]
    lin = L * (D * H * HD + 2 * D * KVH * HD + H * HD * D + 3 * D * F) + D * V
    lora = L * rank * (2 * (D + H * HD) + 2 * (D + KVH * HD) + (H * HD + D) + 3 * (D + F))
    attn = L * 2 * H * HD * seq_len  # QK^T and PV per token (full square)
    fwd = 2 * lin + 2 * lora + 2 * attn
    # student fwd + backward (activations only for frozen weights, both for LoRA) + teacher fwd
    return fwd + (2 * lin + 4 * lora + 4 * attn) + (2 * lin + 2 * attn)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--edgeforge", default="build/edgeforge")
    ap.add_argument("--work", default=None)
    ap.add_argument("--hf", default=None,
                    help="an F32 Hugging Face directory to use as is (instead of converting --model)")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="ef_bench_train_")
    hf = a.hf or os.path.join(work, "model_hf")
    if not os.path.isdir(hf):
        subprocess.run([a.edgeforge, "convert", "-f", "hf", "--dtype", "f32", a.model, hf],
                       check=True, stdout=subprocess.DEVNULL)
    cfg = json.load(open(os.path.join(hf, "config.json")))
    # records long enough to fill the window
    data = os.path.join(work, "data.jsonl")
    words = ("the quick brown fox jumps over a lazy dog while seven small birds sing "
             "about rivers mountains and distant cities ").split()
    with open(data, "w") as f:
        for i in range(a.batch * (a.steps + 1) + 2):
            out = " ".join(words[(i + j) % len(words)] for j in range(a.seq_len * 2))
            f.write(json.dumps({"instruction": f"Write text {i}.", "input": "", "output": out}) + "\n")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads))
    run = os.path.join(work, "run")
    cmd = [a.edgeforge, "-q", "distill", "--student", hf, "--teacher", hf, "--data", data,
           "--out", run, "--rank", str(a.rank), "--scale", "1", "--alpha", "1",
           "--temperature", "1", "--lr", "1e-4", "--batch", str(a.batch), "--seq-len",
           str(a.seq_len), "--max-steps", str(a.steps + 1), "--val-frac", "0",
           "--schedule", "constant"]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    log = [json.loads(l) for l in open(os.path.join(run, "train_log.jsonl")) if '"loss"' in l]
    # tok_per_s is cumulative: tokens after the warm-up step over the time they took
    t1 = log[0]["tokens"] / log[0]["tok_per_s"]
    tn = sum(r["tokens"] for r in log) / log[-1]["tok_per_s"]
    ef_tps = sum(r["tokens"] for r in log[1:]) / (tn - t1)

    # PyTorch + PEFT, same configuration
    torch.set_num_threads(a.threads)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(hf, torch_dtype=torch.float32)
    pm = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=a.rank, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, cfg["vocab_size"], (a.batch, a.seq_len))
    times = []
    for s in range(a.steps + 1):
        t = time.perf_counter()
        with torch.no_grad(), pm.disable_adapter():
            tl = pm(input_ids=ids).logits
        sl = pm(input_ids=ids).logits
        loss = torch.nn.functional.kl_div(torch.log_softmax(sl, -1), torch.log_softmax(tl, -1),
                                          log_target=True, reduction="sum") / (a.batch * a.seq_len)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    pt_tps = a.batch * a.seq_len * a.steps / sum(times[1:])
    peak = sgemm_peak(a.threads)
    fpt = flops_per_token(cfg, a.rank, a.seq_len)
    print(json.dumps({
        "model": a.model, "seq_len": a.seq_len, "batch": a.batch, "steps": a.steps,
        "rank": a.rank, "threads": a.threads, "torch": torch.__version__,
        "edgeforge_tok_s": round(ef_tps, 2), "pytorch_tok_s": round(pt_tps, 2),
        "ratio": round(ef_tps / pt_tps, 3), "sgemm_peak_gflops": round(peak / 1e9, 1),
        "flops_per_token": fpt, "edgeforge_mfu": round(ef_tps * fpt / peak, 4),
        "pytorch_mfu": round(pt_tps * fpt / peak, 4)}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
