#!/usr/bin/env python3
"""Reference fixtures for edgeforge's LoRA + KD training (tests/test_train_parity.c).

Usage (from the repository root):
    /work/pyref/bin/python tools/gen_train_fixtures.py [--out tests/fixtures/train]

Builds, with a fixed seed, a tiny random Llama student (D=64, L=2, H=4, KVH=2, F=172,
V=256, llama3 RoPE scaling, untied lm_head) and a tiny random Llama teacher with the same
vocabulary (D=32, L=1, H=2, KVH=1, F=64), wraps the student with PEFT LoRA (r=4,
lora_alpha=8, all seven linears) and records:

  - both models as Hugging Face directories (config.json + model.safetensors, F32);
  - input ids (B=2, T=16), targets (ids shifted by one; prompt and padding = -100);
  - teacher logits; student logits;
  - loss / KL / CE and every LoRA gradient, (case 0) at PEFT's init (B = 0) and (case 1)
    with random B, computed in float64 (the reference is the exact math, our F32 code is
    compared to it);
  - LoRA weights and losses after 10 steps of torch.optim.AdamW, of torch.optim.Muon with
    the Newton-Schulz iteration run in float64 instead of bf16 (patched, everything else is
    torch's own code), and of a hybrid run (Muon on B with "match_rms_adamw", AdamW on A).

Loss (reference.md §7.1, docs/training.md): over positions with a target,
    KL = mean_n T^2 sum_i p_T log(p_T / p_S), p = softmax(logits / T)
    CE = mean_n -log softmax(s)[y]  (untempered)
    L = alpha KL + (1 - alpha) CE.
Everything goes into <out>/parity.safetensors (metadata records versions, seed and
hyper-parameters).

<out>/optim.safetensors (tests/test_optim.c): 3 torch.optim.AdamW steps on a small vector,
the float64 Newton-Schulz output for a few shapes, the lr factors of transformers'
get_cosine_schedule_with_warmup / get_linear_schedule_with_warmup, and
torch.nn.utils.clip_grad_norm_ on a vector.
"""
import argparse
import json
import math
import os

import numpy as np
import peft
import safetensors
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

SEED = 1234
B, T = 2, 16
RANK, LORA_ALPHA = 4, 8.0
KD_T, KD_ALPHA = 2.0, 0.5
STEPS = 10
ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
MUON = dict(lr=2e-2, momentum=0.95, nesterov=True, weight_decay=0.1, adjust_lr_fn="original")
MUONB = dict(lr=2e-3, momentum=0.95, nesterov=True, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
ORIG_NS = None
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def student_config():
    return LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                       max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                        "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 8},
                       attn_implementation="eager")


def teacher_config():
    return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, vocab_size=256,
                       max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=True,
                       rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                       attn_implementation="eager")


def random_model(cfg):
    m = LlamaForCausalLM(cfg)
    # larger than HF's init (std 0.02) so logits are not flat and every path matters
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)
    return m.eval()


def kd_loss(s, t, targets):
    """s, t (B, T, V) float64, targets (B, T) with -100 = ignore."""
    mask = targets != -100
    n = mask.sum()
    ls = torch.log_softmax(s / KD_T, dim=-1)
    lt = torch.log_softmax(t / KD_T, dim=-1)
    kl = (lt.exp() * (lt - ls)).sum(-1)
    kl = KD_T ** 2 * (kl * mask).sum() / n
    ce = torch.nn.functional.cross_entropy(s.reshape(-1, s.shape[-1]), targets.reshape(-1),
                                           ignore_index=-100, reduction="sum") / n
    return KD_ALPHA * kl + (1 - KD_ALPHA) * ce, kl, ce


def lora_params(model):
    """{peft key: parameter} in the saved-adapter naming (no adapter name)."""
    out = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            out[name.replace(".default", "")] = p
    return out


def ns_f64(grad, ns_coefficients, ns_steps, eps):
    """torch.optim._muon._zeropower_via_newtonschulz without the bf16 cast."""
    a, b, c = ns_coefficients
    x = grad.to(dtype=torch.float64, copy=True)
    if grad.size(0) > grad.size(1):
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = x @ x.T
        upd = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, upd, x, beta=a)
    if grad.size(0) > grad.size(1):
        x = x.T
    return x.to(grad.dtype)


def optim_fixture(out):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup
    g = torch.Generator().manual_seed(SEED + 10)
    t = {}
    # AdamW: 3 steps, float32 (torch's own kernels), decoupled weight decay
    p = torch.nn.Parameter(torch.randn(6, generator=g))
    t["adamw_p0"] = p.detach().clone()
    opt = torch.optim.AdamW([p], lr=0.05, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.3)
    grads = torch.randn(3, 6, generator=g)
    grads[1, 2] = 0.0
    t["adamw_grads"] = grads
    for i in range(3):
        p.grad = grads[i].clone()
        opt.step()
        t[f"adamw_p{i + 1}"] = p.detach().clone()
    # Newton-Schulz (float64, torch's algorithm without the bf16 cast)
    for (r, c) in [(4, 24), (24, 4), (7, 7), (1, 9)]:
        x = torch.randn(r, c, generator=g)
        t[f"ns_in_{r}x{c}"] = x
        t[f"ns_out_{r}x{c}"] = ns_f64(x.double(), (3.4445, -4.7750, 2.0315), 5, 1e-7).float()
        # torch's own bf16 version, to document the bf16/F32 difference
        t[f"ns_bf16_{r}x{c}"] = ORIG_NS(x, (3.4445, -4.7750, 2.0315), 5, 1e-7).float()
    # schedules: lr factor for steps 0..24 with W = 3, S = 20
    for name, fn in (("cosine", get_cosine_schedule_with_warmup),
                     ("linear", get_linear_schedule_with_warmup)):
        o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sch = fn(o, num_warmup_steps=3, num_training_steps=20)
        lrs = []
        for _ in range(25):
            lrs.append(o.param_groups[0]["lr"])
            o.step()
            sch.step()
        t[f"sched_{name}"] = torch.tensor(lrs, dtype=torch.float64)
    # clip_grad_norm_
    q = torch.nn.Parameter(torch.zeros(10))
    q.grad = 3.0 * torch.randn(10, generator=g)
    t["clip_in"] = q.grad.clone()
    norm = torch.nn.utils.clip_grad_norm_([q], max_norm=1.5)
    t["clip_out"] = q.grad.clone()
    t["clip_norm"] = torch.tensor([float(norm)], dtype=torch.float64)
    meta = {"tool": "tools/gen_train_fixtures.py", "torch": torch.__version__,
            "transformers": transformers.__version__, "seed": str(SEED + 10),
            "adamw": json.dumps(dict(lr=0.05, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.3)),
            "schedule": "W=3 S=20", "clip_max_norm": "1.5"}
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(out, "optim.safetensors"),
              metadata=meta)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/train")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    assert hasattr(torch.optim, "Muon"), "this script needs torch.optim.Muon (PyTorch >= 2.9)"
    import torch.optim._muon as muon_mod
    global ORIG_NS
    ORIG_NS = muon_mod._zeropower_via_newtonschulz
    optim_fixture(args.out)
    muon_mod._zeropower_via_newtonschulz = ns_f64  # F64 NS, torch's code for the rest

    torch.manual_seed(SEED)
    student = random_model(student_config())
    teacher = random_model(teacher_config())
    student.save_pretrained(os.path.join(args.out, "tiny_student"), safe_serialization=True)
    teacher.save_pretrained(os.path.join(args.out, "tiny_teacher"), safe_serialization=True)

    g = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, 256, (B, T), generator=g)
    # sequence 0: prompt 5 tokens, no padding; sequence 1: prompt 9 tokens, 3 padding
    labels = ids.clone()
    labels[0, :5] = -100
    labels[1, :9] = -100
    labels[1, T - 3:] = -100
    ids[1, T - 3:] = 0
    targets = torch.full_like(labels, -100)
    targets[:, :-1] = labels[:, 1:]

    with torch.no_grad():
        t_logits = teacher.double()(input_ids=ids).logits  # (B, T, V) float64

    tensors = {"ids": ids.to(torch.int64), "targets": targets.to(torch.int64),
               "teacher_logits": t_logits.float()}

    lcfg = LoraConfig(r=RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=TARGETS,
                      bias="none", task_type="CAUSAL_LM")
    base_sd = {k: v.clone() for k, v in student.state_dict().items()}

    def fresh_peft():
        st = LlamaForCausalLM(student_config())
        st.load_state_dict(base_sd)
        torch.manual_seed(SEED + 2)  # PEFT draws A from the global generator
        return get_peft_model(st, lcfg).double().eval()

    pm = fresh_peft()
    init = {k: p.detach().clone() for k, p in lora_params(pm).items()}
    for k, v in init.items():
        tensors["init." + k] = v.float()

    # case 0: PEFT init (B = 0); case 1: B random
    gb = torch.Generator().manual_seed(SEED + 3)
    brand = {k: 0.1 * torch.randn(v.shape, generator=gb, dtype=torch.float64)
             for k, v in init.items() if "lora_B" in k}
    meta_vals = {}
    for case in (0, 1):
        pm = fresh_peft()
        params = lora_params(pm)
        if case == 1:
            with torch.no_grad():
                for k, v in brand.items():
                    params[k].copy_(v)
                    tensors["brand." + k] = v.float()
        out = pm(input_ids=ids).logits
        loss, kl, ce = kd_loss(out, t_logits, targets)
        loss.backward()
        meta_vals[f"loss{case}"], meta_vals[f"kl{case}"], meta_vals[f"ce{case}"] = (
            loss.item(), kl.item(), ce.item())
        tensors[f"scalars{case}"] = torch.tensor([loss.item(), kl.item(), ce.item()],
                                                 dtype=torch.float64)
        tensors[f"student_logits{case}"] = out.detach().float()
        for k, p in params.items():
            tensors[f"grad{case}." + k] = p.grad.detach().float()

    def train(make_opt, tag):
        pm = fresh_peft()
        params = lora_params(pm)
        opts = make_opt(params)
        losses = []
        for _ in range(STEPS):
            for o in opts:
                o.zero_grad()
            loss, _, _ = kd_loss(pm(input_ids=ids).logits, t_logits, targets)
            losses.append(loss.item())
            loss.backward()
            for o in opts:
                o.step()
        tensors[tag + "_losses"] = torch.tensor(losses, dtype=torch.float64)
        for k, p in params.items():
            tensors[tag + "." + k] = p.detach().float()

    train(lambda ps: [torch.optim.AdamW(list(ps.values()), **ADAMW)], "adamw")
    train(lambda ps: [torch.optim.Muon(list(ps.values()), **MUON)], "muon")
    train(lambda ps: [torch.optim.Muon([p for k, p in ps.items() if "lora_B" in k], **MUONB),
                      torch.optim.AdamW([p for k, p in ps.items() if "lora_A" in k],
                                        lr=MUONB["lr"], weight_decay=MUONB["weight_decay"])],
          "muonb")

    meta = {
        "tool": "tools/gen_train_fixtures.py",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "safetensors": safetensors.__version__,
        "numpy": np.__version__, "seed": str(SEED),
        "B": str(B), "T": str(T), "rank": str(RANK), "lora_alpha": str(LORA_ALPHA),
        "kd_temperature": str(KD_T), "kd_alpha": str(KD_ALPHA), "steps": str(STEPS),
        "adamw": json.dumps(ADAMW), "muon": json.dumps(MUON), "muonb": json.dumps(MUONB),
        "muon_ns": "float64 (torch.optim.Muon with its bf16 Newton-Schulz replaced)",
        "values": json.dumps(meta_vals),
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(args.out, "parity.safetensors"), metadata=meta)
    print(json.dumps(meta_vals, indent=1))
    print("kaiming bound check:", [(k, float(v.abs().max()), 1 / math.sqrt(v.shape[1]))
                                   for k, v in list(init.items())[:1]])


if __name__ == "__main__":
    main()
