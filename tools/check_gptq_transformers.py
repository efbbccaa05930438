#!/usr/bin/env python3
"""Checks that transformers (with a GPTQ backend from PyPI, on CPU) loads the GPTQ v1
checkpoints `edgeforge quantize` writes and computes the logits edgeforge computes.

Usage (repository root; needs build-quantize/edgeforge, or --edgeforge):
    PY=/tmp/gptqvenv/bin/python        # a venv with gptqmodel (see docs/gptq.md "End to end")
    $PY tools/check_gptq_transformers.py [--work /tmp/gptq_check] [--smollm2 DIR_OR_GGUF]

Steps, for a tiny random Llama (hidden 128, intermediate 256, 2 layers, 4 heads / 2 KV heads,
vocab 512 with stories260K's tokenizer; torch.manual_seed(0); every in/out feature a multiple
of 32 as the GPTQ kernels require) in plain, act-order, asymmetric and quantized-lm_head
(--lm-head, GPTQModel's "lm_head": true) variants, and for
SmolLM2 when --smollm2 is given (group --smollm2-group, default 64: its K = 576 is not a
multiple of 128, and gptqmodel's CPU kernel refuses a ragged last group):
  1. save the float model with transformers (float32), quantize it with
     `edgeforge quantize ... --logits ours.safetensors` (our engine's logits on a held-out
     chunk, computed from the reloaded packed checkpoint);
  2. dequantize our checkpoint in numpy straight from the format description
     (reference.md §2.1: w = scales[g_idx] * (q - (qzeros + 1))), load those weights into a
     float LlamaForCausalLM and compare logits with ours (independent of any GPTQ backend);
  3. load the checkpoint with AutoModelForCausalLM.from_pretrained (transformers' GPTQ
     integration + gptqmodel, CPU) and compare its logits with ours. A quantized lm_head
     loads through GPTQModel.load instead: transformers' integration leaves lm_head.qweight
     unread (lm_head.weight reported missing) in transformers 5.24 / gptqmodel 7.7.
Tolerance: |ours - theirs| <= 2e-3 * max|logits| + 2e-3 for float32 runs (the backend is run
with dtype float32 and float16); for the float16 run, or twice the "fp16 noise floor" (the
dequantized float model itself run in float16 against ours) when that is larger. The report
prints the max abs difference and the top-1 agreement. Exit status 1 when any check fails, 2 when
the GPTQ backend is missing (the numpy check still runs).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def unpack_rows(qw, K):  # qweight (ceil(K/8), N) int32 -> (K, N) codes
    u = qw.astype(np.uint32)
    rows = [(u >> (4 * j)) & 15 for j in range(8)]
    q = np.stack(rows, axis=1).reshape(-1, qw.shape[1])  # row 8r+j
    return q[:K]


def unpack_cols(qz, N):  # qzeros (G, ceil(N/8)) -> (G, N)
    u = qz.astype(np.uint32)
    cols = [(u >> (4 * j)) & 15 for j in range(8)]
    return np.stack(cols, axis=2).reshape(qz.shape[0], -1)[:, :N]


def dequant_state_dict(ckpt_dir):
    t = load_file(os.path.join(ckpt_dir, "model.safetensors"))
    out = {}
    for name, v in t.items():
        if name.endswith(".qweight"):
            p = name[: -len(".qweight")]
            g_idx = t[p + ".g_idx"].astype(np.int64)
            K, N = g_idx.shape[0], t[p + ".scales"].shape[1]
            q = unpack_rows(t[p + ".qweight"], K).astype(np.float32)
            z = unpack_cols(t[p + ".qzeros"], N).astype(np.float32) + 1  # v1 stores zero - 1
            s = t[p + ".scales"].astype(np.float32)
            w = s[g_idx] * (q - z[g_idx])  # (K, N)
            out[p + ".weight"] = torch.from_numpy(np.ascontiguousarray(w.T))
            if p + ".bias" in t:
                out[p + ".bias"] = torch.from_numpy(t[p + ".bias"].astype(np.float32))
        elif name.endswith((".qzeros", ".scales", ".g_idx")) or (
                name.endswith(".bias") and name[: -5] + ".qweight" in t):
            continue
        else:
            out[name] = torch.from_numpy(v.astype(np.float32))
    return out


def compare(tag, ours, theirs, results, extra_tol=0.0):
    d = np.abs(ours - theirs).max()
    tol = max(2e-3 * np.abs(ours).max() + 2e-3, extra_tol)
    top1 = (ours.argmax(-1) == theirs.argmax(-1)).mean()
    ok = bool(d <= tol)
    print(f"{tag}: max |diff| {d:.3g} (tol {tol:.3g}), top-1 agreement {top1:.4f} -> "
          f"{'OK' if ok else 'FAIL'}", flush=True)
    results.append((tag, ok, float(d), float(top1)))


def make_tiny(work, exe):
    from transformers import LlamaConfig, LlamaForCausalLM
    base = os.path.join(work, "tiny_base")
    if os.path.isdir(base):
        shutil.rmtree(base)
    tokdir = os.path.join(work, "stories_hf")
    if not os.path.isdir(tokdir):
        run([exe, "convert", "models/stories260K/stories260K.bin", tokdir, "--format", "hf"])
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                      max_position_embeddings=512, rms_norm_eps=1e-5, bos_token_id=1,
                      eos_token_id=2, tie_word_embeddings=False)
    m = LlamaForCausalLM(cfg).float()
    with torch.no_grad():  # larger weights than the 0.02 init, so 4-bit error is visible
        for n, p in m.named_parameters():
            if "proj" in n:
                p.mul_(4.0)
    m.save_pretrained(base, safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copy(os.path.join(tokdir, f), base)
    return base


def check_one(tag, exe, base, work, extra, results, backend):
    out = os.path.join(work, tag)
    shutil.rmtree(out, ignore_errors=True)
    logits = os.path.join(work, tag + "_ours.safetensors")
    run([exe, "-q", "quantize", base, "--calib", "tests/fixtures/quant/stories_calib.txt",
         "--nsamples", extra.get("nsamples", "16"), "--seq-len", extra.get("seq_len", "64"),
         "--fidelity-data", "tests/fixtures/quant/stories_heldout.txt", "--fidelity-chunks", "1",
         "--fidelity-ctx", extra.get("ctx", "64"), "--logits", logits, "--out", out] +
        extra.get("flags", []))
    ours = load_file(logits)
    ids = torch.from_numpy(ours["tokens"].astype(np.int64))[None]
    lo = ours["logits"]
    from transformers import AutoConfig, LlamaForCausalLM
    cfg = AutoConfig.from_pretrained(out)
    cfg_dict = cfg.to_dict()
    cfg_dict.pop("quantization_config", None)
    fcfg = type(cfg).from_dict(cfg_dict)
    fm = LlamaForCausalLM(fcfg).float().eval()
    sd = dequant_state_dict(out)
    missing, unexpected = fm.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary" not in k and not (
        k == "lm_head.weight" and fcfg.tie_word_embeddings)]
    if missing or unexpected:
        raise SystemExit(f"{tag}: dequantized state dict mismatch: {missing} {unexpected}")
    if fcfg.tie_word_embeddings:
        fm.tie_weights()
    with torch.no_grad():
        ref = fm(ids).logits[0].float().numpy()
    compare(f"{tag}: numpy dequant + transformers float", lo, ref, results)
    # the fp16 noise floor: the same dequantized float model run in float16
    with torch.no_grad():
        half = fm.half()(ids).logits[0].float().numpy()
    floor = float(np.abs(half - lo).max())
    print(f"{tag}: fp16 noise floor (dequantized float model in fp16 vs ours): {floor:.3g}")
    if not backend:
        return
    from transformers import AutoModelForCausalLM
    lm_head = "--lm-head" in extra.get("flags", [])
    # GPTQModel.load's CPU kernel (TorchFusedLinear) in float32 is itself off by ~1e-2 on
    # the plain tiny checkpoint too (0.012 against transformers' TorchAtenLinear 6.8e-4),
    # so the quantized-lm_head check runs in float16, where it matches the noise floor
    for dt in ((torch.float16,) if lm_head else (torch.float32, torch.float16)):
        name = str(dt).replace("torch.", "")
        try:
            if lm_head:
                # transformers' GPTQ integration keeps lm_head unquantized (it leaves
                # lm_head.qweight unread); GPTQModel's own loader honours "lm_head": true
                from gptqmodel import GPTQModel
                qm = GPTQModel.load(out, device="cpu", dtype=dt).model
            else:
                qm = AutoModelForCausalLM.from_pretrained(out, device_map="cpu", dtype=dt)
            qm.eval()
            with torch.no_grad():
                got = qm(ids).logits[0].float().numpy()
            # float16 activations: within twice the fp16 noise floor measured above
            compare(f"{tag}: transformers GPTQ backend ({backend}, {name})", lo, got, results,
                    extra_tol=2 * floor if dt == torch.float16 else 0.0)
        except Exception as e:  # noqa: BLE001 - report any backend failure as a failed check
            print(f"{tag}: transformers GPTQ load ({name}) FAILED: {type(e).__name__}: {e}",
                  flush=True)
            results.append((f"{tag} backend {name}", False, float("nan"), float("nan")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edgeforge", default=os.path.join(ROOT, "build-quantize/edgeforge"))
    ap.add_argument("--work", default="/tmp/gptq_check")
    ap.add_argument("--smollm2", default=None, help="SmolLM2 model path (GGUF or HF dir)")
    ap.add_argument("--smollm2-group", type=int, default=64)
    ap.add_argument("--skip-tiny", action="store_true", help="only the SmolLM2 check")
    ap.add_argument("--smollm2-lm-head", action="store_true",
                    help="SmolLM2 with --lm-head too (its tied embedding is untied)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    backend = None
    try:
        import gptqmodel  # noqa: F401
        backend = "gptqmodel " + gptqmodel.__version__
    except Exception as e:  # noqa: BLE001
        print(f"no GPTQ backend importable ({e}); only the numpy dequantizer check runs")
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, backend {backend}")
    results = []
    base = None if a.skip_tiny else make_tiny(a.work, a.edgeforge)
    for tag, flags in ([] if a.skip_tiny else [
            ("tiny_sym_g32", ["--group", "32"]),
            ("tiny_actorder_g32", ["--group", "32", "--act-order"]),
            ("tiny_asym_g64", ["--group", "64", "--asym"]),
            ("tiny_sym_g32_lmhead", ["--group", "32", "--lm-head"])]):
        check_one(tag, a.edgeforge, base, a.work, {"flags": flags}, results, backend)
    if a.smollm2:
        # group 64: SmolLM2's K = 576 is not a multiple of 128, and gptqmodel's CPU kernel
        # (torch _weight_int4pack_mm_cpu) refuses a ragged last group (vLLM Marlin too)
        g = str(a.smollm2_group)
        check_one("smollm2_g" + g, a.edgeforge, a.smollm2, a.work,
                  {"nsamples": "8", "seq_len": "128", "ctx": "128", "flags": ["--group", g]},
                  results, backend)
        if a.smollm2_lm_head:
            check_one("smollm2_g" + g + "_lmhead", a.edgeforge, a.smollm2, a.work,
                      {"nsamples": "8", "seq_len": "128", "ctx": "128",
                       "flags": ["--group", g, "--lm-head"]}, results, backend)
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "backend": backend, "results": results}, f, indent=1)
    bad = [r for r in results if not r[1]]
    print(f"{len(results) - len(bad)} checks passed, {len(bad)} failed")
    if bad:
        return 1
    return 0 if backend else 2


if __name__ == "__main__":
    sys.exit(main())
