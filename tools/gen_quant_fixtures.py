#!/usr/bin/env python3
"""Fixtures for tests/test_quantize.c (end-to-end GPTQ, fidelity report).

Usage (from the repository root, after `make BUILD=build-quantize`):
    /work/pyref/bin/python tools/gen_quant_fixtures.py [--edgeforge build-quantize/edgeforge]

Writes into tests/fixtures/quant/:
  stories_calib.txt, stories_heldout.txt
      TinyStories-like texts sampled from models/stories260K (temperature 1.0, seeds 1..N for
      the calibration file and 10001.. for the held-out file, prompts cycling through a fixed
      list), one story per paragraph. This is only *data* for calibration / held-out text
      (the model's own distribution), not a reference for any computation.
  fidelity_ref.safetensors
      Fixed logits and the fidelity statistics computed from them with numpy in float64, as
      llama.cpp's KL-divergence report defines them (docs/reference.md §12.4):
        logits_base, logits_quant (n, V) f32; targets (n) i32; and f64 scalars kl_mean, kl_se,
        kl_median, kl_p90, kl_p95, kl_p99, kl_p999, kl_max, top1, top1_se, nll_base,
        nll_quant, nll_base_se, nll_quant_se, ppl_base, ppl_quant, ln_ppl_ratio,
        ln_ppl_ratio_se, dp_rms. Seed numpy default_rng(5).
"""
import argparse
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import save_file

OUT = "tests/fixtures/quant"
PROMPTS = ["Once", "One day", "Tom", "The little", "Lily", "Once upon a time", "A big", "Sam"]


def gen_stories(exe, seeds, n_tokens):
    stories = []
    for i, seed in enumerate(seeds):
        p = PROMPTS[i % len(PROMPTS)]
        r = subprocess.run([exe, "generate", "models/stories260K/stories260K.bin", "-p", p,
                            "-n", str(n_tokens), "--temp", "1.0", "--seed", str(seed)],
                           capture_output=True, text=True, check=True)
        text = " ".join(r.stdout.split())  # one paragraph per story
        stories.append(text)
    return "\n\n".join(stories) + "\n"


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))


def mean_se(v):
    # llama.cpp mean_and_uncertainty: sqrt((E[v^2] - E[v]^2) / (n - 1))
    n = len(v)
    m = v.mean()
    var = (v * v).mean() - m * m
    return m, np.sqrt(var / (n - 1)) if var > 0 else 0.0


def fidelity_fixture():
    rng = np.random.default_rng(5)
    n, V = 777, 97
    base = (rng.standard_normal((n, V)) * 3.0).astype(np.float32)
    quant = (base + rng.standard_normal((n, V)) * 0.4).astype(np.float32)
    targets = rng.integers(0, V, n).astype(np.int32)
    lb, lq = log_softmax(base), log_softmax(quant)
    kl = (np.exp(lb) * (lb - lq)).sum(axis=1)
    nb = -lb[np.arange(n), targets]
    nq = -lq[np.arange(n), targets]
    dp = np.exp(lq[np.arange(n), targets]) - np.exp(lb[np.arange(n), targets])
    same = (base.argmax(axis=1) == quant.argmax(axis=1)).astype(np.float64)
    ref = {}
    ref["kl_mean"], ref["kl_se"] = mean_se(kl)
    for name, q in [("kl_median", 50), ("kl_p90", 90), ("kl_p95", 95), ("kl_p99", 99),
                    ("kl_p999", 99.9)]:
        ref[name] = np.percentile(kl, q)  # linear interpolation (numpy default)
    ref["kl_max"] = kl.max()
    p = same.mean()
    ref["top1"], ref["top1_se"] = p, np.sqrt(p * (1 - p) / (n - 1))
    ref["nll_base"], ref["nll_base_se"] = mean_se(nb)
    ref["nll_quant"], ref["nll_quant_se"] = mean_se(nq)
    ref["ppl_base"], ref["ppl_quant"] = np.exp(ref["nll_base"]), np.exp(ref["nll_quant"])
    ref["ln_ppl_ratio"], ref["ln_ppl_ratio_se"] = mean_se(nq - nb)
    ref["dp_rms"] = np.sqrt((dp * dp).mean())
    tensors = {"logits_base": base, "logits_quant": quant, "targets": targets}
    for k, v in ref.items():
        tensors[k] = np.array([v], dtype=np.float64)
    meta = {"tool": "tools/gen_quant_fixtures.py", "numpy": np.__version__, "seed": "5",
            "n": str(n), "V": str(V)}
    save_file(tensors, os.path.join(OUT, "fidelity_ref.safetensors"), metadata=meta)
    print("fidelity: kl_mean %.6f p99 %.6f top1 %.4f ppl %.3f -> %.3f" %
          (ref["kl_mean"], ref["kl_p99"], ref["top1"], ref["ppl_base"], ref["ppl_quant"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edgeforge", default="build-quantize/edgeforge")
    ap.add_argument("--n-calib", type=int, default=96)
    ap.add_argument("--n-heldout", type=int, default=32)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "stories_calib.txt"), "w") as f:
        f.write(gen_stories(a.edgeforge, range(1, a.n_calib + 1), 200))
    with open(os.path.join(OUT, "stories_heldout.txt"), "w") as f:
        f.write(gen_stories(a.edgeforge, range(10001, 10001 + a.n_heldout), 200))
    fidelity_fixture()
    return 0


if __name__ == "__main__":
    sys.exit(main())
