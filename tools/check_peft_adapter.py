#!/usr/bin/env python3
"""Checks an adapter written by `edgeforge distill` against PEFT and transformers.

Usage:
    /work/pyref/bin/python tools/check_peft_adapter.py BASE_HF_DIR ADAPTER_DIR [MERGED_HF_DIR]

Loads BASE with transformers, applies ADAPTER with peft.PeftModel.from_pretrained (which
fails on wrong tensor names or shapes), and compares its logits on a fixed random batch
with (a) merge_and_unload() and (b) MERGED (written by `edgeforge distill --merge` or
`edgeforge merge`), loaded as a plain transformers model. Prints the max |difference| and
exits non-zero above 1e-4.
"""
import sys

import peft
import torch
import transformers
from peft import PeftModel
from transformers import AutoModelForCausalLM


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    base, adapter = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32).eval()
    ids = torch.randint(0, m.config.vocab_size, (2, 24))
    with torch.no_grad():
        base_logits = m(input_ids=ids).logits
    pm = PeftModel.from_pretrained(m, adapter).eval()
    with torch.no_grad():
        lora_logits = pm(input_ids=ids).logits
    print(f"torch {torch.__version__} transformers {transformers.__version__} peft {peft.__version__}")
    print(f"adapter changes the logits by max {float((lora_logits - base_logits).abs().max()):.3g}")
    worst = 0.0
    if len(sys.argv) == 4:
        mm = AutoModelForCausalLM.from_pretrained(sys.argv[3], torch_dtype=torch.float32).eval()
        with torch.no_grad():
            merged = mm(input_ids=ids).logits
        d = float((merged - lora_logits).abs().max())
        worst = max(worst, d)
        print(f"edgeforge merged model vs PEFT base+adapter: max |diff| {d:.3g}")
    with torch.no_grad():
        mu = pm.merge_and_unload()(input_ids=ids).logits
    d = float((mu - lora_logits).abs().max())
    print(f"PEFT merge_and_unload vs unmerged: max |diff| {d:.3g}")
    sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
