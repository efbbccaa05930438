#!/usr/bin/env python3
"""Reference model files for tests/test_model_io.c (Hugging Face directories, llama2.c).

Writes, under tests/fixtures/hf/:
  tiny_llama/          LlamaForCausalLM saved by transformers' save_pretrained (safetensors,
                       float32): hidden 32, 2 layers, 4 heads / 2 KV heads, head_dim 8,
                       vocab 64, untied lm_head, rope_theta 500000 with llama3 rope scaling,
                       rms_norm_eps 1e-5, bos 1, eos [2, 3] in generation_config.json.
  tiny_qwen2/          Qwen2ForCausalLM (q/k/v biases, tied embeddings), bfloat16.
  tiny_llama_sharded/  tiny_llama's weights in float16, save_pretrained(max_shard_size="24KB")
                       so model.safetensors.index.json maps the tensors to several shards.
  tiny_llama_ref.safetensors, tiny_qwen2_ref.safetensors, tiny_llama_sharded_ref.safetensors
                       every tensor of the model as transformers holds it after loading the
                       saved directory (float32, HF names), plus "logits" (8, 64) for the ids in
                       "ids" (reference for forward-pass tests).
and under tests/fixtures/hf/llama2c/:
  stories260K_qk_hf.safetensors
                       layers 0 and 4 of models/stories260K/stories260K.bin: wq/wk permuted to
                       HF order with transformers' convert_llama_weights_to_hf permutation
                       (w.view(H, HD/2, 2, D).transpose(1, 2).reshape(H*HD, D)), read with numpy.
  tiny_legacy.bin, tiny_v1.bin, tiny_v2.bin
                       one random tiny model (dim 32, hidden 48, 2 layers, 4 heads, 2 KV heads,
                       vocab 40, seq_len 16, untied classifier) in the three llama2.c layouts
                       of karpathy/llama2.c export.py: legacy (7 int32, negative vocab = untied,
                       freq_cis tables), version 1 ("ak42", 256-byte header, fp32) and version 2
                       (Q8_0, group size 32: per tensor int8 values then fp32 scales).
  tiny_tied_legacy.bin the same model with the classifier tied (positive vocab).
  tiny_ref.safetensors the tiny model's weights in HF names and order (q/k permuted) as float32,
                       and "v2.<name>" = the Q8_0 dequantized matrices (int8 * scale in float32,
                       as llama2.c's runq.c computes them), both in HF order.

Usage (from the repository root):  /work/pyref/bin/python tools/gen_hf_fixtures.py
Seeds: torch.manual_seed(0) for the HF models, numpy default_rng(1) for the llama2.c model.
Library versions are recorded in each safetensors file's metadata.
"""
import json
import os
import shutil
import struct

import numpy as np
import safetensors
import torch
import transformers
from safetensors.numpy import save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

HF = "tests/fixtures/hf"
L2C = "tests/fixtures/hf/llama2c"
META = {"transformers": transformers.__version__, "torch": torch.__version__,
        "numpy": np.__version__, "safetensors": safetensors.__version__,
        "script": "tools/gen_hf_fixtures.py"}
IDS = [1, 5, 9, 17, 33, 2, 60, 7]


def reset(path):
    if os.path.isdir(path):
        shutil.rmtree(path)


def save_ref(model_dir, ref_path, seed):
    """Loads the saved directory back with transformers and stores every tensor + logits."""
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    m.eval()
    sd = {k: v.detach().to(torch.float32).contiguous().numpy() for k, v in m.state_dict().items()}
    with torch.no_grad():
        logits = m(torch.tensor([IDS])).logits[0].to(torch.float32).numpy()
    sd["logits"] = np.ascontiguousarray(logits)
    sd["ids"] = np.array(IDS, dtype=np.int64)
    save_file(sd, ref_path, metadata=dict(META, seed=str(seed)))


def gen_hf():
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=64,
                      max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 64},
                      rope_theta=500000.0)
    m = LlamaForCausalLM(cfg).eval()
    # the default init leaves norms at 1; perturb them so a swapped norm is caught
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    m.generation_config.eos_token_id = [2, 3]
    d = f"{HF}/tiny_llama"
    reset(d)
    m.save_pretrained(d)
    save_ref(d, f"{HF}/tiny_llama_ref.safetensors", 0)

    ds = f"{HF}/tiny_llama_sharded"
    reset(ds)
    m.to(torch.float16).save_pretrained(ds, max_shard_size="24KB")
    save_ref(ds, f"{HF}/tiny_llama_sharded_ref.safetensors", 0)

    torch.manual_seed(0)
    qcfg = Qwen2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                       max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       rope_theta=1000000.0, bos_token_id=None, eos_token_id=5)
    q = Qwen2ForCausalLM(qcfg).eval()
    with torch.no_grad():
        for n, p in q.named_parameters():
            if "norm" in n or "bias" in n:
                p.add_(0.1 * torch.randn_like(p))
    dq = f"{HF}/tiny_qwen2"
    reset(dq)
    q.to(torch.bfloat16).save_pretrained(dq)
    save_ref(dq, f"{HF}/tiny_qwen2_ref.safetensors", 0)


def hf_permute(w, n_heads):
    """transformers convert_llama_weights_to_hf: interleaved (Meta) rows -> rotate_half rows."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def read_legacy(path):
    """llama2.c legacy checkpoint -> (config dict, dict of fp32 arrays in llama2.c names)."""
    raw = open(path, "rb").read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq = struct.unpack("7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // n_heads
    f = np.frombuffer(raw, dtype=np.float32, offset=28)
    o = 0

    def take(*shape):
        nonlocal o
        n = int(np.prod(shape))
        a = f[o:o + n].reshape(shape)
        o += n
        return a
    w = {"tok": take(vocab, dim), "att_norm": take(n_layers, dim),
         "wq": take(n_layers, n_heads * hd, dim), "wk": take(n_layers, n_kv * hd, dim),
         "wv": take(n_layers, n_kv * hd, dim), "wo": take(n_layers, dim, n_heads * hd),
         "ffn_norm": take(n_layers, dim), "w1": take(n_layers, hidden, dim),
         "w2": take(n_layers, dim, hidden), "w3": take(n_layers, hidden, dim),
         "norm": take(dim)}
    take(seq, hd // 2)
    take(seq, hd // 2)
    w["out"] = w["tok"] if shared else take(vocab, dim)
    assert o == f.size
    cfg = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv,
               vocab=vocab, seq=seq, shared=shared)
    return cfg, w


def gen_stories_qk():
    cfg, w = read_legacy("models/stories260K/stories260K.bin")
    out = {}
    for l in (0, 4):
        out[f"model.layers.{l}.self_attn.q_proj.weight"] = np.ascontiguousarray(
            hf_permute(w["wq"][l], cfg["n_heads"]))
        out[f"model.layers.{l}.self_attn.k_proj.weight"] = np.ascontiguousarray(
            hf_permute(w["wk"][l], cfg["n_kv"]))
        out[f"model.layers.{l}.self_attn.v_proj.weight"] = np.ascontiguousarray(w["wv"][l])
    save_file(out, f"{L2C}/stories260K_qk_hf.safetensors", metadata=dict(META, config=json.dumps(cfg)))


def quantize_q80(w, gs):
    """export.py's quantize_q80 in numpy: symmetric int8 per group of gs, round half to even."""
    g = w.astype(np.float32).reshape(-1, gs)
    scale = (np.abs(g).max(axis=1) / np.float32(127.0)).astype(np.float32)
    q = np.round(g / scale[:, None]).astype(np.int8)
    deq = (q.astype(np.float32) * scale[:, None]).astype(np.float32).reshape(w.shape)
    return q, scale, deq


def gen_llama2c():
    rng = np.random.default_rng(1)
    dim, hidden, L, H, KVH, V, T = 32, 48, 2, 4, 2, 40, 16
    hd = dim // H

    def rnd(*shape, s=0.2):
        return (rng.standard_normal(shape) * s).astype(np.float32)
    w = {"tok": rnd(V, dim), "att_norm": 1 + rnd(L, dim, s=0.1), "wq": rnd(L, H * hd, dim),
         "wk": rnd(L, KVH * hd, dim), "wv": rnd(L, KVH * hd, dim), "wo": rnd(L, dim, H * hd),
         "ffn_norm": 1 + rnd(L, dim, s=0.1), "w1": rnd(L, hidden, dim), "w2": rnd(L, dim, hidden),
         "w3": rnd(L, hidden, dim), "norm": 1 + rnd(dim, s=0.1), "out": rnd(V, dim)}
    # llama2.c model.py's precompute_freqs_cis tables (only skipped by the loader)
    freqs = 1.0 / (10000.0 ** (np.arange(0, hd, 2)[: hd // 2].astype(np.float32) / hd))
    ang = np.outer(np.arange(T, dtype=np.float32), freqs).astype(np.float32)
    fcos, fsin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def legacy(path, shared):
        with open(path, "wb") as f:
            f.write(struct.pack("7i", dim, hidden, L, H, KVH, V if shared else -V, T))
            for k in ("tok", "att_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3", "norm"):
                f.write(w[k].tobytes())
            f.write(fcos.tobytes())
            f.write(fsin.tobytes())
            if not shared:
                f.write(w["out"].tobytes())

    def header(f, version, shared, gs=None):
        f.write(struct.pack("I", 0x616B3432))
        f.write(struct.pack("i", version))
        f.write(struct.pack("7i", dim, hidden, L, H, KVH, V, T))
        f.write(struct.pack("B", int(shared)))
        if gs is not None:
            f.write(struct.pack("i", gs))
        f.write(b"\0" * (256 - f.tell()))

    mats = [w["tok"]] + [w[k][l] for k in ("wq", "wk", "wv", "wo", "w1", "w2", "w3") for l in range(L)]
    mats.append(w["out"])  # untied
    norms = [w["att_norm"][l] for l in range(L)] + [w["ffn_norm"][l] for l in range(L)] + [w["norm"]]

    legacy(f"{L2C}/tiny_legacy.bin", False)
    legacy(f"{L2C}/tiny_tied_legacy.bin", True)
    with open(f"{L2C}/tiny_v1.bin", "wb") as f:
        header(f, 1, False)
        for a in norms + mats:
            f.write(a.astype(np.float32).tobytes())
    gs = 64
    while dim % gs != 0:  # export.py's back-off
        gs //= 2
    deq = []
    with open(f"{L2C}/tiny_v2.bin", "wb") as f:
        header(f, 2, False, gs)
        for a in norms:
            f.write(a.astype(np.float32).tobytes())
        for a in mats:
            q, s, d = quantize_q80(a, gs)
            f.write(q.tobytes())
            f.write(s.tobytes())
            deq.append(d)

    # references in HF names and row order
    ref = {}

    def put(prefix, name, a):
        ref[prefix + name] = np.ascontiguousarray(a.astype(np.float32))
    for prefix, src in (("", {"tok": w["tok"], "out": w["out"], **{k: w[k] for k in w}}), ("v2.", None)):
        if prefix == "v2.":
            it = iter(deq)
            src = {"tok": next(it)}
            for k in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
                src[k] = [next(it) for _ in range(L)]
            src["out"] = next(it)
        put(prefix, "model.embed_tokens.weight", src["tok"])
        put(prefix, "lm_head.weight", src["out"])
        for l in range(L):
            p = f"model.layers.{l}."
            put(prefix, p + "self_attn.q_proj.weight", hf_permute(np.asarray(src["wq"][l]), H))
            put(prefix, p + "self_attn.k_proj.weight", hf_permute(np.asarray(src["wk"][l]), KVH))
            put(prefix, p + "self_attn.v_proj.weight", src["wv"][l])
            put(prefix, p + "self_attn.o_proj.weight", src["wo"][l])
            put(prefix, p + "mlp.gate_proj.weight", src["w1"][l])
            put(prefix, p + "mlp.down_proj.weight", src["w2"][l])
            put(prefix, p + "mlp.up_proj.weight", src["w3"][l])
    for l in range(L):
        put("", f"model.layers.{l}.input_layernorm.weight", w["att_norm"][l])
        put("", f"model.layers.{l}.post_attention_layernorm.weight", w["ffn_norm"][l])
    put("", "model.norm.weight", w["norm"])
    save_file(ref, f"{L2C}/tiny_ref.safetensors",
              metadata=dict(META, seed="1", group_size=str(gs),
                            config=json.dumps(dict(dim=dim, hidden=hidden, n_layers=L, n_heads=H,
                                                   n_kv_heads=KVH, vocab=V, seq_len=T))))


if __name__ == "__main__":
    os.makedirs(HF, exist_ok=True)
    os.makedirs(L2C, exist_ok=True)
    gen_hf()
    gen_stories_qk()
    gen_llama2c()
    print("wrote", HF, L2C)
