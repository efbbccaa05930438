#!/usr/bin/env python3
"""Reference fixtures for the inference engine's parity tests (tests/test_infer.c).

Usage:
    /work/pyref/bin/python tools/gen_llama_parity.py tiny      # tests/fixtures/parity/<name>/
    /work/pyref/bin/python tools/gen_llama_parity.py smollm2   # tests/fixtures/parity/smollm2_ref.safetensors
                                                                # (needs models/smollm2/*.gguf)

tiny: three tiny random models built with transformers and saved with save_pretrained
(config.json + model.safetensors), each covering part of the architecture space:
    llama_gqa_tied     LlamaForCausalLM, GQA 4/2, tied classifier, F32 weights
    llama3_rope_untied LlamaForCausalLM, GQA 4/1, untied classifier, llama3 rope_scaling,
                       BF16 weights (values rounded to bf16, the reference computes in F32)
    qwen2_bias         Qwen2ForCausalLM (q/k/v bias), GQA 4/2, untied, F16 weights
Next to each model, ref.safetensors holds two input sequences of different lengths
(ids_a, ids_b as int64) and the float32 logits transformers computes for every position
of each, run separately (no padding), eager attention, torch float32.

smollm2: transformers loads the Q4_1 GGUF (dequantized to float32) and computes, for 4
prompts (token ids from the GGUF's tokenizer): the full last-position logits, the top-8
logits (ids and values) of every position, and a 64-token greedy continuation of prompt 0.

Library versions and seeds are recorded in each file's __metadata__.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "parity")
SEED = 1234


def meta(extra):
    m = {
        "generator": "tools/gen_llama_parity.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "seed": str(SEED),
    }
    m.update({k: str(v) for k, v in extra.items()})
    return m


def tiny_configs():
    common = dict(vocab_size=160, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                  num_attention_heads=4, rms_norm_eps=1e-5, max_position_embeddings=128,
                  bos_token_id=1, eos_token_id=2, hidden_act="silu")
    return [
        ("llama_gqa_tied", transformers.LlamaConfig(
            **common, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0),
         torch.float32),
        ("llama3_rope_untied", transformers.LlamaConfig(
            **common, num_key_value_heads=1, tie_word_embeddings=False, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
         torch.bfloat16),
        ("qwen2_bias", transformers.Qwen2Config(
            **common, num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0,
            use_sliding_window=False),
         torch.float16),
    ]


def gen_tiny():
    for i, (name, cfg, dtype) in enumerate(tiny_configs()):
        torch.manual_seed(SEED + i)
        cfg._attn_implementation = "eager"
        cls = transformers.Qwen2ForCausalLM if isinstance(cfg, transformers.Qwen2Config) \
            else transformers.LlamaForCausalLM
        model = cls(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                # larger than the default init (std 0.02) so that attention is not uniform
                # and every part of the network moves the logits; norms around 1
                if p.dim() == 1 and p.shape[0] == cfg.hidden_size:
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.15 * torch.randn_like(p))
                p.copy_(p.to(dtype).to(torch.float32))  # values exactly representable in dtype
        g = torch.Generator().manual_seed(SEED + 100 + i)
        ids_a = torch.randint(0, cfg.vocab_size, (20,), generator=g)
        ids_b = torch.randint(0, cfg.vocab_size, (13,), generator=g)
        # reference logits before any dtype cast: .to(bf16) would also round the rotary
        # inv_freq buffer
        with torch.no_grad():
            la = model(ids_a[None]).logits[0].float().contiguous()
            lb = model(ids_b[None]).logits[0].float().contiguous()
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        model.to(dtype).save_pretrained(d, safe_serialization=True)
        save_file({"ids_a": ids_a.to(torch.int64), "ids_b": ids_b.to(torch.int64),
                   "logits_a": la, "logits_b": lb},
                  os.path.join(d, "ref.safetensors"),
                  metadata=meta({"config": name, "weights_dtype": str(dtype)}))
        for f in ("generation_config.json",):
            p = os.path.join(d, f)
            if os.path.exists(p):
                os.remove(p)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(f"{name}: {size} bytes, logit scale {la.abs().max():.3f}")


SMOL_PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
]


def gen_smollm2():
    gguf = os.path.join(ROOT, "models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    d, f = os.path.split(gguf)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, torch_dtype=torch.float32, attn_implementation="eager").eval()
    out, K = {}, 8
    with torch.no_grad():
        for i, p in enumerate(SMOL_PROMPTS):
            ids = torch.tensor(tok(p, add_special_tokens=False)["input_ids"], dtype=torch.int64)
            logits = model(ids[None]).logits[0].float()
            top = torch.topk(logits, K, dim=-1)
            out[f"ids_{i}"] = ids
            out[f"last_logits_{i}"] = logits[-1].contiguous()
            out[f"top_ids_{i}"] = top.indices.to(torch.int64).contiguous()
            out[f"top_logits_{i}"] = top.values.contiguous()
            print(f"prompt {i}: {len(ids)} tokens, logit scale {logits.abs().max():.3f}")
        ids0 = out["ids_0"][None]
        gen = model.generate(ids0, max_new_tokens=64, do_sample=False, min_new_tokens=64,
                             attention_mask=torch.ones_like(ids0), pad_token_id=0)
        out["greedy_0"] = gen[0, ids0.shape[1]:].to(torch.int64).contiguous()
        print("greedy:", repr(tok.decode(out["greedy_0"])))
    sha = os.popen(f"sha256sum '{gguf}'").read().split()[0]
    save_file(out, os.path.join(OUT, "smollm2_ref.safetensors"),
              metadata=meta({"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "gguf_sha256": sha,
                             "prompts": json.dumps(SMOL_PROMPTS), "top_k": K}))


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("tiny", "smollm2"):
        print(__doc__)
        sys.exit(2)
    torch.manual_seed(SEED)
    os.makedirs(OUT, exist_ok=True)
    gen_tiny() if sys.argv[1] == "tiny" else gen_smollm2()
