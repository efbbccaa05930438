#!/usr/bin/env python3
"""Sampler fixtures from transformers' own logits processors.

Usage:
    /work/pyref/bin/python tools/gen_sampler_fixtures.py [--out tests/fixtures/sampler/cases.json]

For each case a logits vector (seeded numpy draws: Gaussian, heavy-tailed, a peaked and a flat
one) goes through what `generate(do_sample=True)` applies, in its order:
TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper -> softmax. The fixture stores
the logits (as float32 values), the parameters and the resulting distribution over the kept
token ids. tests/test_sampler.c compares edgeforge's candidate set (same ids) and its
renormalised probabilities (1e-5 relative) and checks the draws of a seeded run against them
(chi-square).

Cases whose top-p boundary is within 2e-5 of top_p (where float32 and double cumulative sums
can disagree) are redrawn, and top-k cases have no tie at the k-th value (transformers then
keeps every tied token; edgeforge keeps exactly k, lower ids first: documented in sampler.h).
"""
import argparse
import json

import numpy as np
import torch
import transformers
from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)


def f32(v):
    """A double whose shortest repr is the float32 v's shortest one (reads back as v)."""
    return float(np.format_float_positional(np.float32(v), unique=True, trim="-"))


def hf_probs(logits, temperature, top_k, top_p):
    scores = torch.tensor(logits, dtype=torch.float32)[None]
    ids = torch.zeros((1, 1), dtype=torch.long)
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(ids, scores)
    if top_k > 0:
        scores = TopKLogitsWarper(top_k)(ids, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(ids, scores)
    return torch.softmax(scores, dim=-1)[0].double().numpy()


def boundary_margin(logits, temperature, top_k, top_p):
    """Distance from top_p of the two descending cumulative sums (double) around the cut."""
    x = np.asarray(logits, dtype=np.float64) / temperature
    order = np.argsort(-x, kind="stable")
    if top_k > 0:
        order = order[:top_k]
    p = np.exp(x[order] - x[order].max())
    p /= p.sum()
    if top_p >= 1.0:
        return 1.0
    c = np.cumsum(p)
    j = int(np.searchsorted(c, top_p))  # first cumulative sum >= top_p
    return float(min(abs(c[j] - top_p) if j < len(c) else 1.0,
                     abs(c[j - 1] - top_p) if j > 0 else 1.0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/sampler/cases.json")
    a = ap.parse_args()
    rng = np.random.default_rng(20261127)
    params = [(1.0, 0, 0.9), (0.7, 0, 0.95), (1.3, 40, 1.0), (0.8, 50, 0.9), (1.0, 5, 0.5),
              (0.5, 0, 0.3), (1.0, 0, 1.0), (2.0, 100, 0.99), (1.0, 1000, 0.8), (0.9, 0, 0.05)]
    kinds = ["gauss", "heavy", "peaked", "flat"]
    cases = []
    for ci, (temperature, top_k, top_p) in enumerate(params):
        for kind in kinds:
            # flat logits over 49152 tokens put consecutive cumulative sums ~2e-5 apart: too
            # close to keep a margin at the top-p cut
            V = int(rng.choice([50, 1000] if kind == "flat" else [50, 1000, 4096]))
            for attempt in range(1000):
                if kind == "gauss":
                    x = rng.normal(0, 3, V)
                elif kind == "heavy":
                    x = rng.standard_t(2, V) * 2
                elif kind == "peaked":
                    x = rng.normal(0, 1, V)
                    x[rng.integers(V)] += 12
                else:
                    x = rng.normal(0, 0.05, V)
                x = x.astype(np.float32)
                ok = boundary_margin(x, temperature, top_k, top_p) > 2e-5
                if top_k > 0 and top_k < V:
                    s = np.sort(x)[::-1]
                    ok = ok and s[top_k - 1] != s[top_k]
                if ok:
                    break
            else:
                raise SystemExit(f"no case with a safe margin for {kind} {params[ci]} V={V}")
            p = hf_probs(x, temperature, top_k, top_p)
            kept = np.nonzero(p > 0)[0]
            cases.append({"name": f"{kind}_t{temperature}_k{top_k}_p{top_p}_V{V}",
                          "temperature": temperature, "top_k": top_k, "top_p": top_p,
                          "logits": [f32(v) for v in x],
                          "ids": [int(i) for i in kept], "probs": [float(p[i]) for i in kept]})
    meta = {"transformers": transformers.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "seed": 20261127,
            "order": "temperature -> top-k -> top-p -> softmax (generate's warper order)"}
    text = json.dumps({"meta": meta, "cases": cases}, separators=(",", ":"))
    with open(a.out, "w") as f:
        f.write(text)
    print(f"wrote {len(cases)} cases to {a.out}")


if __name__ == "__main__":
    main()
