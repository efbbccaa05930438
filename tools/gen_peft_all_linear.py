#!/usr/bin/env python3
"""gen_peft_all_linear.py - a PEFT adapter with target_modules="all-linear" on the 2-layer
tiny student (tests/fixtures/train/tiny_student, written by gen_train_fixtures.py), and
PEFT's own merge of it, for tests/test_train_parity.c (test_peft_all_linear).

The student has 14 linears besides lm_head, fewer than the 20 from which PEFT shortens
"all-linear" to module-name suffixes, so PEFT writes every module's full path into
adapter_config.json ("model.layers.0.self_attn.q_proj", ...): the form lora_load_peft must
read as "every module of every layer".

Usage (from the repository root, with the reference venv):
    /work/pyref/bin/python tools/gen_peft_all_linear.py

Writes tests/fixtures/train/peft_all_linear/ (adapter_config.json, adapter_model.safetensors:
PEFT's save_pretrained, lora_B drawn with a seed so that the merge changes the weights) and
tests/fixtures/train/peft_all_linear_merged.safetensors (the 14 linear weights after PEFT's
merge_and_unload, float32; metadata: library versions).
"""
import os

import peft
import safetensors.torch
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

FIX = "tests/fixtures/train"
SEED = 20261128


def main():
    torch.manual_seed(SEED)
    model = LlamaForCausalLM.from_pretrained(os.path.join(FIX, "tiny_student"),
                                             torch_dtype=torch.float32)
    cfg = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules="all-linear",
                     bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    out = os.path.join(FIX, "peft_all_linear")
    pm.save_pretrained(out)
    os.remove(os.path.join(out, "README.md"))  # PEFT's model card: not needed
    targets = pm.peft_config["default"].target_modules
    assert all(t.startswith("model.layers.") for t in targets) and len(targets) == 14, targets
    merged = pm.merge_and_unload()
    sd = {k: v.detach().float().contiguous() for k, v in merged.state_dict().items()
          if k.startswith("model.layers.") and k.endswith("_proj.weight")}
    assert len(sd) == 14
    safetensors.torch.save_file(sd, os.path.join(FIX, "peft_all_linear_merged.safetensors"),
                                metadata={"script": "tools/gen_peft_all_linear.py",
                                          "peft": peft.__version__,
                                          "transformers": transformers.__version__,
                                          "torch": torch.__version__})
    print(f"{out}: target_modules {sorted(targets)[:2]} ... ({len(targets)} paths)")


if __name__ == "__main__":
    main()
