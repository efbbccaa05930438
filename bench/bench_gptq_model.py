#!/usr/bin/env python3
"""Whole-model GPTQ wall time: `edgeforge quantize` against a PyTorch GPTQ of the same model,
calibration size, group and threads on the same CPU, in one run.

Usage (from the repository root, after `make` and bench/bench_quant.sh has made the F32 HF
directory and the calibration text):
    /work/pyref/bin/python bench/bench_gptq_model.py [--model bench/out/smollm2-hf-f32]
        [--calib bench/out/hs_calib.txt] [--nsamples 32] [--seq-len 128] [--batch 8]
        [--threads 2] [--dtype float64] [--edgeforge build/edgeforge]

The PyTorch side follows the reference repository's sequential flow (IST-DASLab/gptq
llama.py, `llama_sequential`, true-sequential off): the decoder layers in order, each fed the
outputs of the already quantized layers before it; per layer one forward pass of the
calibration sequences with hooks that accumulate a Hessian for each of the seven linears
(H *= n/(n+m); n += m; H += (sqrt(2/n) X)^T (sqrt(2/n) X)), GPTQ of each linear
(`fasterquant`: dead columns, damp 0.01 * mean diag, upper Cholesky factor of H^-1, lazy
blocks of 128, group grids from the current weights, symmetric 4-bit, no act-order), the
dequantized weights written back, and a second forward pass for the next layer's inputs.
Forward passes in float32 as the reference; Hessian and GPTQ arithmetic in --dtype (float64
is what edgeforge computes in, so it is the "same result" comparison; float32 is the
reference's own choice). Sequences go through the layers --batch at a time (edgeforge's
default batch; the reference uses 1). edgeforge shares one Hessian between q/k/v and between
gate/up (the same inputs, so the same matrices); the reference accumulates seven.

Timed: the quantization itself on both sides (edgeforge: the `seconds` of its report, which
excludes model load, calibration tokenization and the checkpoint write; PyTorch: the layer
loop, after model load and tokenization). edgeforge's wall time is shown too.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from gptq_ref import Hessian, find_params  # noqa: E402  (our reference GPTQ's pieces)


def quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def fasterquant(W, H, dt, group=128, bits=4, blocksize=128, percdamp=0.01):
    # the reference's fasterquant loop (sym, no act-order); tools/gptq_ref.gptq also records
    # ties and per-column losses for the parity fixtures, work the timed peer should not do
    W = W.to(dt).clone()
    H = H.clone()
    N, K = W.shape
    maxq = 2 ** bits - 1
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(K)
    H[idx, idx] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    Q = torch.zeros_like(W)
    scale = zero = None
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = W1[:, i]
            d = Hinv1[i, i]
            if (i1 + i) % group == 0:
                scale, zero = find_params(W[:, i1 + i:i1 + i + group], bits, True)
            q = quantize(w.unsqueeze(1), scale.unsqueeze(1), zero.unsqueeze(1), maxq).flatten()
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q.to(torch.float32)


def calib_ids(model_dir, path, n, L, seed):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(open(path, encoding="utf-8").read(), add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - L, n)
    return torch.tensor([ids[s:s + L] for s in starts], dtype=torch.long)


def layer_call(layer, x, pe):
    out = layer(x, attention_mask=None, position_embeddings=pe)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def torch_gptq(model, ids, batch, dt):
    names = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    t = {"forward": 0.0, "hessian": 0.0, "gptq": 0.0}
    inner = model.model
    x = inner.embed_tokens(ids)
    pos = torch.arange(ids.shape[1])[None]
    pe = inner.rotary_emb(x, pos)
    for li, layer in enumerate(inner.layers):
        mods = {n: layer.get_submodule(n) for n in names}
        hs = {n: Hessian(m.in_features, dt) for n, m in mods.items()}

        def hook(name):
            def f(_mod, inp, _out):
                c = time.perf_counter()
                x = inp[0]  # (B, T, K): B sequences (the reference counts sequences)
                hs[name].add_batch(x.reshape(-1, x.shape[-1]), x.shape[0])
                t["hessian"] += time.perf_counter() - c
            return f

        handles = [m.register_forward_hook(hook(n)) for n, m in mods.items()]
        c = time.perf_counter()
        for b in range(0, x.shape[0], batch):
            layer_call(layer, x[b:b + batch], (pe[0].expand(min(batch, x.shape[0] - b), -1, -1),
                                               pe[1].expand(min(batch, x.shape[0] - b), -1, -1)))
        t["forward"] += time.perf_counter() - c
        for h in handles:
            h.remove()
        c = time.perf_counter()
        for n, m in mods.items():
            m.weight.data = fasterquant(m.weight.data, hs[n].H, dt)
        t["gptq"] += time.perf_counter() - c
        c = time.perf_counter()
        outs = torch.empty_like(x)
        for b in range(0, x.shape[0], batch):
            nb = min(batch, x.shape[0] - b)
            outs[b:b + nb] = layer_call(layer, x[b:b + nb], (pe[0].expand(nb, -1, -1),
                                                              pe[1].expand(nb, -1, -1)))
        t["forward"] += time.perf_counter() - c
        x = outs
        print(f"  torch layer {li + 1}/{len(inner.layers)}", file=sys.stderr, flush=True)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bench/out/smollm2-hf-f32")
    ap.add_argument("--calib", default="bench/out/hs_calib.txt")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--edgeforge", default="build/edgeforge")
    a = ap.parse_args()

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    with tempfile.TemporaryDirectory(prefix="ef_gptq_model_") as out:  # the 113 MB checkpoint
        c = time.perf_counter()
        subprocess.run([a.edgeforge, "quantize", a.model, "--calib", a.calib, "--out",
                        out + "/q", "--bits", "4", "--group", "128", "--nsamples",
                        str(a.nsamples), "--seq-len", str(a.seq_len), "--batch", str(a.batch),
                        "--seed", "0", "-t", str(a.threads)],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ef_wall = time.perf_counter() - c
        rep = json.load(open(out + "/q.report.json"))
    ef = rep["seconds"]
    ef_split = [rep.get(k, float("nan")) for k in ("seconds_forward", "seconds_hessian",
                                                    "seconds_gptq")]

    torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model.eval()
    ids = calib_ids(a.model, a.calib, a.nsamples, a.seq_len, 0)
    dt = torch.float32 if a.dtype == "float32" else torch.float64
    c = time.perf_counter()
    t = torch_gptq(model, ids, a.batch, dt)
    pt = time.perf_counter() - c

    cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t")
    print(f"### Whole-model GPTQ, {a.threads} thread(s)\n")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, CPU: {cpu}, model {a.model}, "
          f"{a.nsamples} x {a.seq_len} calibration tokens, batch {a.batch}, 4-bit group 128 sym, "
          f"torch {torch.__version__}, Hessian + GPTQ in {a.dtype} on the PyTorch side "
          f"(edgeforge: double). Command: `bench/bench_gptq_model.py --nsamples {a.nsamples} "
          f"--seq-len {a.seq_len} --batch {a.batch} --threads {a.threads} --dtype {a.dtype}`.\n")
    print("| | quantization s | forward s | Hessian s | GPTQ s |")
    print("|---|---|---|---|---|")
    print(f"| edgeforge quantize | {ef:.1f} (wall {ef_wall:.1f} with load and write) | "
          f"{ef_split[0]:.1f} | {ef_split[1]:.1f} | {ef_split[2]:.1f} |")
    print(f"| PyTorch sequential GPTQ | {pt:.1f} | {t['forward'] - t['hessian']:.1f} | "
          f"{t['hessian']:.1f} | {t['gptq']:.1f} |")
    print(f"\nedgeforge / PyTorch: **{pt / ef:.2f}x** faster.")


if __name__ == "__main__":
    main()
