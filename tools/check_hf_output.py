#!/usr/bin/env python3
"""Checks that the Hugging Face directory edgeforge writes from a llama2.c checkpoint is
the same model for transformers.

1. Runs `edgeforge convert CHECKPOINT OUT --format hf` (f32, and --dtype given by --dtypes).
2. Loads OUT with transformers' AutoModelForCausalLM and computes logits for a token
   sequence (BOS + the first greedy ids of models/stories260K/golden.txt by default).
3. Computes the same logits from the ORIGINAL .bin with an independent float64 numpy
   implementation of llama2.c's run.c forward pass (interleaved RoPE on the unpermuted
   q/k rows, RMSNorm, SwiGLU, GQA), so the q/k permutation, tensor names, config keys
   (rope_theta, eps, tying, head counts) are all checked against transformers' reading.
4. Prints the max |difference| and top-1 agreement, checks position 0's top-5 against
   golden.txt, and exits 1 if the f32 difference exceeds --tol.
5. Converts the tiny transformers fixtures of tests/fixtures/hf (Llama with llama3 rope
   scaling and an untied head, Qwen2 with biases in bf16, a sharded f16 Llama) to HF with
   edgeforge and compares transformers' logits on the result with the logits
   tools/gen_hf_fixtures.py stored from the original models.

Usage (from the repository root):
  /work/pyref/bin/python tools/check_hf_output.py [--edgeforge build/edgeforge]
      [--checkpoint models/stories260K/stories260K.bin] [--dtypes f16,bf16] [--keep DIR]
The tokenizer files are written only when edgeforge can load tok512.bin (pass
--no-tokenizer through --convert-args otherwise); this check needs the weights only.
"""
import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM


def read_llama2c(path):
    raw = open(path, "rb").read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq = struct.unpack("7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // n_heads
    f = np.frombuffer(raw, dtype=np.float32, offset=28).astype(np.float64)
    o = 0

    def take(*shape):
        nonlocal o
        n = int(np.prod(shape))
        a = f[o:o + n].reshape(shape)
        o += n
        return a
    w = dict(tok=take(vocab, dim), att_norm=take(n_layers, dim), wq=take(n_layers, n_heads * hd, dim),
             wk=take(n_layers, n_kv * hd, dim), wv=take(n_layers, n_kv * hd, dim),
             wo=take(n_layers, dim, n_heads * hd), ffn_norm=take(n_layers, dim),
             w1=take(n_layers, hidden, dim), w2=take(n_layers, dim, hidden),
             w3=take(n_layers, hidden, dim), norm=take(dim))
    take(seq, hd // 2)
    take(seq, hd // 2)
    w["out"] = w["tok"] if shared else take(vocab, dim)
    cfg = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv, vocab=vocab,
               seq=seq, hd=hd)
    return cfg, w


def rmsnorm(x, g, eps=1e-5):
    return x / np.sqrt(np.mean(x * x) + eps) * g


def llama2c_forward(cfg, w, ids):
    """run.c's forward, token by token with a KV cache, in float64. Returns (T, V) logits."""
    D, H, KVH, HD, L = cfg["dim"], cfg["n_heads"], cfg["n_kv"], cfg["hd"], cfg["n_layers"]
    rep = H // KVH
    kc = np.zeros((L, len(ids), KVH * HD))
    vc = np.zeros((L, len(ids), KVH * HD))
    out = []
    for pos, tok in enumerate(ids):
        x = w["tok"][tok].copy()
        for l in range(L):
            xb = rmsnorm(x, w["att_norm"][l])
            q, k, v = w["wq"][l] @ xb, w["wk"][l] @ xb, w["wv"][l] @ xb
            # RoPE on interleaved pairs (i, i+1), frequency from the index within the head
            for i in range(0, H * HD, 2):
                freq = 1.0 / (10000.0 ** ((i % HD) / HD))
                c, s = np.cos(pos * freq), np.sin(pos * freq)
                for vec in ((q, k) if i < KVH * HD else (q,)):
                    a, b = vec[i], vec[i + 1]
                    vec[i], vec[i + 1] = a * c - b * s, a * s + b * c
            kc[l, pos], vc[l, pos] = k, v
            att_out = np.zeros(H * HD)
            for h in range(H):
                qh = q[h * HD:(h + 1) * HD]
                kvh = h // rep
                keys = kc[l, :pos + 1, kvh * HD:(kvh + 1) * HD]
                sc = keys @ qh / np.sqrt(HD)
                p = np.exp(sc - sc.max())
                p /= p.sum()
                att_out[h * HD:(h + 1) * HD] = p @ vc[l, :pos + 1, kvh * HD:(kvh + 1) * HD]
            x = x + w["wo"][l] @ att_out
            xb = rmsnorm(x, w["ffn_norm"][l])
            h1, h3 = w["w1"][l] @ xb, w["w3"][l] @ xb
            x = x + w["w2"][l] @ (h1 / (1 + np.exp(-h1)) * h3)
        out.append(w["out"] @ rmsnorm(x, w["norm"]))
    return np.array(out)


def golden(path):
    top5, ids = None, None
    for line in open(path):
        if line.startswith("pos0_top5"):
            top5 = [int(t) for t in re.findall(r'(\d+):"', line)]
        if line.startswith("greedy_ids"):
            ids = [int(t) for t in line.split()[1:]]
    return top5, ids


def hf_logits(model_dir, ids):
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].double().numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edgeforge", default="build/edgeforge")
    ap.add_argument("--checkpoint", default="models/stories260K/stories260K.bin")
    ap.add_argument("--golden", default="models/stories260K/golden.txt")
    ap.add_argument("--dtypes", default="f16,bf16", help="extra output dtypes to check (loosely)")
    ap.add_argument("--convert-args", default="", help="extra arguments for edgeforge convert")
    ap.add_argument("--n", type=int, default=48, help="sequence length")
    ap.add_argument("--tol", type=float, default=1e-3, help="max |logit diff| allowed for f32")
    ap.add_argument("--fixtures", default="tests/fixtures/hf")
    ap.add_argument("--keep", help="write the converted directories here instead of a temp dir")
    a = ap.parse_args()

    cfg, w = read_llama2c(a.checkpoint)
    top5, gids = golden(a.golden) if os.path.exists(a.golden) else (None, None)
    ids = [1] + (gids or list(range(3, 200)))[: a.n - 1]
    ref = llama2c_forward(cfg, w, ids)
    work = a.keep or tempfile.mkdtemp(prefix="ef_check_hf_")
    ok = True
    report = {"transformers": transformers.__version__, "torch": torch.__version__,
              "checkpoint": a.checkpoint, "tokens": len(ids)}
    for dt in ["f32"] + [d for d in a.dtypes.split(",") if d]:
        out = os.path.join(work, f"hf-{dt}")
        if os.path.exists(out):
            shutil.rmtree(out)
        cmd = [a.edgeforge, "convert", a.checkpoint, out, "--format", "hf", "--dtype", dt] + a.convert_args.split()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print("convert failed:", " ".join(cmd), r.stdout, r.stderr, file=sys.stderr)
            return 1
        got = hf_logits(out, ids)
        diff = float(np.abs(got - ref).max())
        agree = float(np.mean(got.argmax(-1) == ref.argmax(-1)))
        line = {"dtype": dt, "max_abs_diff": diff, "top1_agreement": agree,
                "pos0_top5": [int(i) for i in np.argsort(-got[0])[:5]]}
        if dt == "f32":
            ok &= diff <= a.tol
            if top5:
                line["golden_pos0_top5"] = top5
                ok &= line["pos0_top5"] == top5
        report[dt] = line
        print(json.dumps(line))
    # HF -> edgeforge -> HF for the tiny transformers fixtures (Qwen2 biases, llama3 rope
    # scaling, untied heads, sharded f16): logits against those stored by gen_hf_fixtures.py
    for name in ("tiny_llama", "tiny_qwen2", "tiny_llama_sharded"):
        src = os.path.join(a.fixtures, name)
        out = os.path.join(work, f"rt-{name}")
        if os.path.exists(out):
            shutil.rmtree(out)
        cmd = [a.edgeforge, "convert", src, out, "--format", "hf", "--no-tokenizer"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print("convert failed:", " ".join(cmd), r.stdout, r.stderr, file=sys.stderr)
            return 1
        refs = load_file(os.path.join(a.fixtures, f"{name}_ref.safetensors"))
        got = hf_logits(out, [int(i) for i in refs["ids"]])
        diff = float(np.abs(got - refs["logits"].astype(np.float64)).max())
        line = {"roundtrip": name, "max_abs_diff": diff}
        ok &= diff <= a.tol
        report[name] = line
        print(json.dumps(line))
    if not a.keep:
        shutil.rmtree(work)
    print(json.dumps(report))
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
