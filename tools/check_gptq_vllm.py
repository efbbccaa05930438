#!/usr/bin/env python3
"""Checks that vLLM loads the GPTQ v1 checkpoints `edgeforge quantize` writes and scores text
as edgeforge does.

Usage (repository root, after `make`; a venv with vLLM's CPU build, see docs/gptq.md):
    VPY=/tmp/vllmvenv/bin/python
    $VPY tools/check_gptq_vllm.py [--work /tmp/vllm_check] [--edgeforge build/edgeforge]

For the tiny random Llama of tools/check_gptq_transformers.py (hidden 128, intermediate 256,
2 layers, 4 heads / 2 KV heads, vocab 512, every in/out feature a multiple of the group), in
plain group-32, act-order and asymmetric variants: quantize it with `edgeforge quantize ...
--logits ours.safetensors` (our engine's logits on a held-out chunk from the reloaded packed
checkpoint), load the checkpoint with vllm.LLM(quantization="gptq") (bfloat16: vLLM's GPTQ
path takes float16/bfloat16 only) and compare vLLM's prompt log-probabilities of the chunk's
tokens with ours. Tolerance: |Δ log p| <= 0.05 (bfloat16 activations); the mean is printed.
vLLM's CPU GPTQ GEMM (`cpu_gemm_wna16`) exists only in its AVX-512 library: on an AVX2-only CPU
the checkpoint is loaded and repacked by vLLM's CPU GPTQ kernel and the first forward fails;
that is reported as "loaded, no forward" (exit status 2 when nothing worse happened), and
so is the refusal of asymmetric GPTQ by vLLM builds without it.
Exit status 1 when a check fails.
"""
import argparse
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_gptq_transformers as base_check  # noqa: E402  (make_tiny, run)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"g32": ["--group", "32"], "g32_actorder": ["--group", "32", "--act-order"],
            "g64_asym": ["--group", "64", "--asym"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/vllm_check")
    ap.add_argument("--edgeforge", default=os.path.join(ROOT, "build/edgeforge"))
    ap.add_argument("--tol", type=float, default=0.05)
    a = ap.parse_args()
    os.chdir(ROOT)
    os.makedirs(a.work, exist_ok=True)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine in-process: errors reach us
    import vllm
    from vllm import LLM, SamplingParams
    base = base_check.make_tiny(a.work, a.edgeforge)
    ok, partial = True, False
    for tag, flags in VARIANTS.items():
        out = os.path.join(a.work, tag)
        shutil.rmtree(out, ignore_errors=True)
        logits = os.path.join(a.work, tag + "_ours.safetensors")
        base_check.run([a.edgeforge, "-q", "quantize", base, "--calib",
                        "tests/fixtures/quant/stories_calib.txt", "--nsamples", "16",
                        "--seq-len", "64", "--fidelity-data",
                        "tests/fixtures/quant/stories_heldout.txt", "--fidelity-chunks", "1",
                        "--fidelity-ctx", "64", "--logits", logits, "--out", out] + flags)
        ours = load_file(logits)
        ids = [int(t) for t in ours["tokens"]]
        lo = ours["logits"].astype(np.float64)
        lsm = lo - lo.max(1, keepdims=True)
        lsm -= np.log(np.exp(lsm).sum(1, keepdims=True))
        try:
            llm = LLM(model=out, quantization="gptq", dtype="bfloat16", skip_tokenizer_init=True,
                      enforce_eager=True, max_model_len=256, seed=0, gpu_memory_utilization=0.1)
        except Exception as e:  # noqa: BLE001 - classify the failure
            if "cpu_gemm_wna16" in repr(e):
                print(f"{tag}: vLLM {vllm.__version__} loaded and repacked the checkpoint; no "
                      "forward (its CPU GPTQ GEMM is in the AVX-512 build only)", flush=True)
                partial = True
                continue
            if "sym=False" in repr(e):
                print(f"{tag}: refused by vLLM {vllm.__version__}'s config check: asymmetric "
                      "GPTQ is not supported by this build (its limitation, not the file's)",
                      flush=True)
                partial = True
                continue
            print(f"{tag}: vLLM FAILED to load: {type(e).__name__}: {e}", flush=True)
            ok = False
            continue
        res = llm.generate([{"prompt_token_ids": ids}],
                           SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0,
                                          detokenize=False))
        pl = res[0].prompt_logprobs
        d = np.array([abs(pl[t][ids[t]].logprob - lsm[t - 1, ids[t]]) for t in range(1, len(ids))])
        good = bool(d.max() <= a.tol)
        ok &= good
        print(f"{tag}: vLLM {vllm.__version__} loaded the checkpoint; {len(d)} prompt "
              f"log-probs: max |Δ| {d.max():.4f}, mean {d.mean():.4f} -> "
              f"{'OK' if good else 'FAIL'}", flush=True)
        del llm
    return 1 if not ok else 2 if partial else 0


if __name__ == "__main__":
    sys.exit(main())
