#!/usr/bin/env python3
"""Reference fixture for tests/test_analyze.c (edgeforge analyze) from transformers + scipy.

Converts models/stories260K to a Hugging Face directory with our own converter (weights are
copied, not computed), loads it in transformers (float32, eager attention), runs calibration
token windows through it with forward pre-hooks on every decoder nn.Linear and computes with
scipy.stats.kurtosis (fisher=False, bias=True: edgeforge's Pearson default):
  w_kurt    kurtosis of all elements of the weight
  a_kurt    nanmean over input channels k of kurtosis(X[:, k]) over all calibration tokens
  a_absmax  kurtosis of max_t |X[t, k]|;  a_rms  of sqrt(mean_t X[t, k]^2);  a_all  of X.ravel()
and the parameter-count-weighted means (paper Table 7). The windows' token ids are stored so
that the C test feeds identical inputs. Correlation check: scipy.stats.pearsonr/spearmanr of
the per-linear kurtosis against a seeded pseudo "GPTQ loss" vector (with ties).

Usage (from the repo root, after building edgeforge):
    /work/pyref/bin/python tools/gen_analyze_fixtures.py \
        [--exe build-analyze/edgeforge] [--out tests/fixtures/analyze/stories_analyze.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import scipy
import scipy.stats as ss
import tokenizers
import torch
import transformers

SEED = 0
N_SEQS, SEQ_LEN = 16, 64
NAMES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def kurt(x):
    return float(ss.kurtosis(np.asarray(x, dtype=np.float64), fisher=False, bias=True))


def windows(tok_json, text_path, rng):
    tok = tokenizers.Tokenizer.from_file(tok_json)
    text = open(text_path, encoding="utf-8").read()
    docs = [d.strip() for d in text.split("\n\n") if d.strip()]
    stream = []
    for d in docs:
        stream += [1] + tok.encode(d, add_special_tokens=False).ids + [2]
    n_win = len(stream) // SEQ_LEN
    pick = rng.choice(n_win, size=N_SEQS, replace=False)
    return np.array([stream[i * SEQ_LEN:(i + 1) * SEQ_LEN] for i in pick], dtype=np.int64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exe", default="build-analyze/edgeforge")
    ap.add_argument("--model", default="models/stories260K/stories260K.bin")
    ap.add_argument("--text", default="tests/fixtures/quant/stories_calib.txt")
    ap.add_argument("--out", default="tests/fixtures/analyze/stories_analyze.json")
    a = ap.parse_args()
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as td:
        hf = os.path.join(td, "hf")
        subprocess.run([a.exe, "convert", a.model, hf, "--format", "hf"], check=True)
        toks = windows(os.path.join(hf, "tokenizer.json"), a.text, rng)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            hf, torch_dtype=torch.float32, attn_implementation="eager").eval()
    L = model.config.num_hidden_layers
    caps = {}

    def hook(name):
        def f(mod, inp):
            caps.setdefault(name, []).append(inp[0].detach().reshape(-1, inp[0].shape[-1]).double())
        return f

    hs = []
    for l in range(L):
        for n in NAMES:
            mod = model.model.layers[l].get_submodule(n)
            hs.append(mod.register_forward_pre_hook(hook(f"model.layers.{l}.{n}")))
    with torch.no_grad():
        for s in range(N_SEQS):  # one window at a time, as edgeforge runs them
            model(torch.tensor(toks[s:s + 1]))
    for h in hs:
        h.remove()
    lins = []
    for l in range(L):
        for n in NAMES:
            name = f"model.layers.{l}.{n}"
            W = model.model.layers[l].get_submodule(n).weight.detach().double().numpy()
            X = torch.cat(caps[name]).numpy()  # (tokens, K)
            per_ch = ss.kurtosis(X, axis=0, fisher=False, bias=True)
            lins.append({"name": name, "out_features": W.shape[0], "in_features": W.shape[1],
                         "w_kurt": kurt(W.ravel()), "a_kurt": float(np.nanmean(per_ch)),
                         "a_absmax": kurt(np.abs(X).max(axis=0)),
                         "a_rms": kurt(np.sqrt((X * X).mean(axis=0))),
                         "a_all": kurt(X.ravel())})
    p = np.array([x["out_features"] * x["in_features"] for x in lins], dtype=np.float64)
    wm = float((p * [x["w_kurt"] for x in lins]).sum() / p.sum())
    am = float((p * [x["a_kurt"] for x in lins]).sum() / p.sum())
    # pseudo losses: rounded so that ties occur (spearman's average ranks are exercised)
    loss = np.round(rng.gamma(2.0, 1.0, size=len(lins)), 1)
    wk = np.array([x["w_kurt"] for x in lins])
    ak = np.array([x["a_kurt"] for x in lins])
    corr = {"loss": loss.tolist(),
            "pearson_w": float(ss.pearsonr(wk, loss)[0]), "spearman_w": float(ss.spearmanr(wk, loss)[0]),
            "pearson_a": float(ss.pearsonr(ak, loss)[0]), "spearman_a": float(ss.spearmanr(ak, loss)[0])}
    out = {"meta": {"generator": "tools/gen_analyze_fixtures.py", "seed": SEED,
                    "model": a.model, "text": a.text, "kurtosis": "scipy fisher=False bias=True",
                    "numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__,
                    "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                    "python": sys.version.split()[0]},
           "n_seqs": N_SEQS, "seq_len": SEQ_LEN, "tokens": toks.tolist(),
           "w_mean": wm, "a_mean": am, "linears": lins, "correlation": corr}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {a.out}: {len(lins)} linears, W {wm:.6f} A {am:.6f}")


if __name__ == "__main__":
    main()
