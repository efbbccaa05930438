#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets in fuzz/ (fuzz/corpus/<target>/), made with the
reference libraries (gguf-py, safetensors, numpy) plus struct for the llama2.c layouts.

Usage (from the repository root, with the reference venv):
  /work/pyref/bin/python tools/gen_fuzz_corpus.py
      writes fuzz/corpus/gguf/         meta.gguf (copy of tests/fixtures/gguf/meta.gguf) and
                                       tiny.gguf: llama metadata, gpt2 tokenizer arrays and one
                                       small tensor of each type F32/F16/BF16/Q4_0/Q4_1/Q5_0/
                                       Q5_1/Q8_0/Q2_K..Q6_K (K-quants as raw bytes with sane
                                       fp16 scales)
             fuzz/corpus/safetensors/  tiny.safetensors (F32/F16/I8/U8/I32/I64/F64, a 0-d and
                                       a 0-size tensor, metadata), bf16.safetensors (BF16,
                                       header written by hand: numpy has no bfloat16) and
                                       empty.safetensors (no tensors)
             fuzz/corpus/llama2c/      legacy.bin (untied), legacy_tied.bin, v1.bin, v2.bin
                                       (Q8_0, group 8): dim 8, 1 layer, vocab 16
             fuzz/corpus/tokenizer_json/  fuzz/corpus_tokenizer_json/*.json and each of them
                                       followed by 0xFF and a text to encode
             fuzz/corpus/config_json/  config.json of tests/fixtures/hf/tiny_llama and tiny_qwen2
             fuzz/corpus/gguf_model/   whole models model_load_gguf accepts: llama_bpe.gguf (F32,
                                       tied, gpt2 tokenizer), llama_spm.gguf (Q8_0 + F16, untied,
                                       rope_freqs, llama tokenizer with byte tokens) and
                                       qwen2.gguf (F16 with q/k/v biases, BF16 norms)
             fuzz/corpus/adapter/      PEFT adapters saved by PEFT itself for a Llama of
                                       stories260K's shapes (adapter_config.json, 0xFF,
                                       adapter_model.safetensors): every linear at r 1, and
                                       q/v at r 1 with rsLoRA (max_len 32768 for the first)
  /work/pyref/bin/python tools/gen_fuzz_corpus.py adapter gguf   only the corpora named
Seeds are small (every target < 64 KB) so libFuzzer's default max_len stays small; they are
seeds, not reference fixtures. numpy seed 7.
"""
import os
import shutil
import struct

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from safetensors.numpy import save_file

OUT = "fuzz/corpus"
RNG = np.random.default_rng(7)


def gguf_corpus(d):
    shutil.copy("tests/fixtures/gguf/meta.gguf", os.path.join(d, "meta.gguf"))
    w = gguf.GGUFWriter(os.path.join(d, "tiny.gguf"), "llama")
    w.add_context_length(16)
    w.add_embedding_length(32)
    w.add_block_count(1)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    toks = ["<s>", "</s>", "a", "b", "\u0120a", "ab"]
    w.add_token_list(toks)
    w.add_token_types([3, 3, 1, 1, 1, 1])
    w.add_token_merges(["a b", "\u0120 a"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    f = RNG.standard_normal((2, 32)).astype(np.float32)
    w.add_tensor("f32", f)
    w.add_tensor("f16", f.astype(np.float16))
    bf = (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(2, 64)
    w.add_tensor("bf16", bf, raw_dtype=QT.BF16)
    for qt in (QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0):
        q = gguf.quants.quantize(f, qt)
        w.add_tensor(qt.name.lower(), q, raw_dtype=qt)
    for qt in (QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K):
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        raw = RNG.integers(0, 256, ts, dtype=np.uint8)
        # the fp16 d (and dmin) sit at the end for Q2_K/Q3_K/Q6_K, at the start for Q4_K/Q5_K
        half = np.array([0.01, 0.002], dtype=np.float16).view(np.uint8)
        if qt in (QT.Q4_K, QT.Q5_K):
            raw[0:4] = half
        elif qt == QT.Q2_K:
            raw[ts - 4:ts] = half
        else:
            raw[ts - 2:ts] = half[0:2]
        w.add_tensor(qt.name.lower(), raw.reshape(1, ts), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def safetensors_corpus(d):
    f = RNG.standard_normal((3, 4)).astype(np.float32)
    bf = (f.view(np.uint32) >> 16).astype(np.uint16)
    t = {"a.f32": f, "b.f16": f.astype(np.float16), "c.i8": np.arange(-3, 3, dtype=np.int8),
         "d.u8": np.arange(5, dtype=np.uint8), "e.i32": np.arange(4, dtype=np.int32),
         "f.i64": np.arange(2, dtype=np.int64), "g.f64": np.ones(2), "h.scalar": np.array(1.5, dtype=np.float32),
         "i.empty": np.zeros((0, 4), dtype=np.float32)}
    save_file(t, os.path.join(d, "tiny.safetensors"), metadata={"format": "pt"})  # one key: deterministic order
    # BF16 has no numpy dtype: write a second file by hand (header + data)
    hdr = b'{"w":{"dtype":"BF16","shape":[3,4],"data_offsets":[0,24]}}'
    hdr += b" " * (-len(hdr) % 8)
    with open(os.path.join(d, "bf16.safetensors"), "wb") as fp:
        fp.write(struct.pack("<Q", len(hdr)) + hdr + bf.tobytes())
    save_file({}, os.path.join(d, "empty.safetensors"))


def llama2c_corpus(d):
    D, F, L, H, KV, V, T = 8, 16, 1, 2, 1, 16, 4
    HD = D // H
    def r(*shape):
        return RNG.standard_normal(shape).astype(np.float32)
    emb, att, wq, wk, wv, wo = r(V, D), r(L, D), r(L, D, D), r(L, KV * HD, D), r(L, KV * HD, D), r(L, D, D)
    ffn, w1, w2, w3, fin, cls = r(L, D), r(L, F, D), r(L, D, F), r(L, F, D), r(D), r(V, D)
    freqs = r(T, HD // 2), r(T, HD // 2)
    body = [emb, att, wq, wk, wv, wo, ffn, w1, w2, w3, fin, *freqs]
    for name, vocab, extra in (("legacy.bin", -V, [cls]), ("legacy_tied.bin", V, [])):
        with open(os.path.join(d, name), "wb") as fp:
            fp.write(struct.pack("<7i", D, F, L, H, KV, vocab, T))
            for a in body + extra:
                fp.write(a.tobytes())
    norms = [att, ffn, fin]
    mats = [emb, wq, wk, wv, wo, w1, w2, w3, cls]  # llama2.c export.py order, untied
    gs = 8
    for version in (1, 2):
        hdr = struct.pack("<Ii7iB", 0x616B3432, version, D, F, L, H, KV, V, T, 0)
        if version == 2:
            hdr += struct.pack("<i", gs)
        hdr += b"\0" * (256 - len(hdr))
        with open(os.path.join(d, "v%d.bin" % version), "wb") as fp:
            fp.write(hdr)
            for a in norms:
                fp.write(a.tobytes())
            for a in mats:
                if version == 1:
                    fp.write(a.tobytes())
                    continue
                g = a.reshape(-1, gs)
                scale = np.abs(g).max(axis=1) / 127.0
                q = np.round(g / scale[:, None]).astype(np.int8)
                fp.write(q.tobytes() + scale.astype(np.float32).tobytes())


def tokenizer_corpus(d):
    src = "fuzz/corpus_tokenizer_json"
    for n in sorted(os.listdir(src)):
        data = open(os.path.join(src, n), "rb").read()
        open(os.path.join(d, n), "wb").write(data)
        text = "Hello  world\n\t<s> 12345 caf\u00e9 \U0001F600 it's".encode()
        open(os.path.join(d, n + ".text"), "wb").write(data + b"\xff" + text)


def tiny_model_gguf(path, arch, D, F, H, KVH, toks, types, tok_model, wtype,
                    tied=True, bias=False, merges=None, scores=None, rope_freqs=False):
    """One-layer model of `arch` that model_load_gguf accepts (llama.cpp's tensor names)."""
    w = gguf.GGUFWriter(path, arch)
    HD = D // H
    w.add_context_length(32)
    w.add_embedding_length(D)
    w.add_block_count(1)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KVH)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model(tok_model)
    if tok_model == "gpt2":
        w.add_tokenizer_pre("smollm")
    w.add_token_list(toks)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges:
        w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    V = len(toks)

    def mat(name, rows, cols, qt):
        a = (RNG.standard_normal((rows, cols)) * 0.1).astype(np.float32)
        if qt == QT.F32:
            w.add_tensor(name, a)
        elif qt == QT.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qt), raw_dtype=qt)

    def vec(name, n, qt):
        a = (1 + 0.1 * RNG.standard_normal(n)).astype(np.float32)
        if qt == QT.BF16:
            w.add_tensor(name, (a.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8),
                         raw_dtype=QT.BF16)
        else:
            w.add_tensor(name, a)

    ntype = QT.BF16 if arch == "qwen2" else QT.F32
    mat("token_embd.weight", V, D, wtype)
    if rope_freqs:
        w.add_tensor("rope_freqs.weight", np.ones(HD // 2, dtype=np.float32))
    vec("blk.0.attn_norm.weight", D, ntype)
    mat("blk.0.attn_q.weight", H * HD, D, wtype)
    mat("blk.0.attn_k.weight", KVH * HD, D, wtype)
    mat("blk.0.attn_v.weight", KVH * HD, D, wtype)
    if bias:
        for n, r in (("q", H * HD), ("k", KVH * HD), ("v", KVH * HD)):
            w.add_tensor("blk.0.attn_%s.bias" % n, (0.1 * RNG.standard_normal(r)).astype(np.float32))
    mat("blk.0.attn_output.weight", D, H * HD, wtype)
    vec("blk.0.ffn_norm.weight", D, ntype)
    mat("blk.0.ffn_gate.weight", F, D, wtype)
    mat("blk.0.ffn_up.weight", F, D, wtype)
    mat("blk.0.ffn_down.weight", D, F, wtype)
    vec("output_norm.weight", D, ntype)
    if not tied:
        mat("output.weight", V, D, wtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_model_corpus(d):
    bpe = ["<|endoftext|>", "<s>", "</s>", "a", "b", "\u0120", "\u0120a", "ab", "\u00c3", "\u00a9"]
    tiny_model_gguf(os.path.join(d, "llama_bpe.gguf"), "llama", 8, 16, 2, 1, bpe,
                    [3, 3, 3] + [1] * 7, "gpt2", QT.F32, merges=["a b", "\u0120 a"])
    spm = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in (0x20, 0x61, 0x62, 0xC3, 0xA9)] + \
        ["\u2581", "\u2581a", "a", "b", "ab"]
    tiny_model_gguf(os.path.join(d, "llama_spm.gguf"), "llama", 32, 32, 4, 2, spm,
                    [2, 3, 3] + [6] * 5 + [1] * 5, "llama", QT.Q8_0, tied=False,
                    scores=[0.0] * 8 + [-1.0, -2.0, -3.0, -4.0, -5.0], rope_freqs=True)
    tiny_model_gguf(os.path.join(d, "qwen2.gguf"), "qwen2", 8, 16, 2, 2, bpe,
                    [3, 3, 3] + [1] * 7, "gpt2", QT.F16, bias=True, merges=["a b"])


def config_json_corpus(d):
    for n in ("tiny_llama", "tiny_qwen2"):
        shutil.copy("tests/fixtures/hf/%s/config.json" % n, os.path.join(d, n + ".json"))


def adapter_corpus(d):
    import tempfile

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(7)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=5,
                      num_attention_heads=8, num_key_value_heads=4, vocab_size=512,
                      max_position_embeddings=512)
    every = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # (every layer: lora_load_peft refuses layers_to_transform by name)
    cases = (("all_r1", LoraConfig(r=1, lora_alpha=2, target_modules=every)),
             ("qv_r1_rslora", LoraConfig(r=1, lora_alpha=2, use_rslora=True,
                                         target_modules=["q_proj", "v_proj"])))
    for name, lc in cases:
        pm = get_peft_model(LlamaForCausalLM(cfg), lc)
        with torch.no_grad():  # B = 0 after init: give the merge something to add
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
        with tempfile.TemporaryDirectory() as tmp:
            pm.save_pretrained(tmp)
            with open(os.path.join(tmp, "adapter_config.json"), "rb") as f:
                conf = f.read()
            with open(os.path.join(tmp, "adapter_model.safetensors"), "rb") as f:
                st = f.read()
        assert b"\xff" not in conf
        with open(os.path.join(d, name), "wb") as f:
            f.write(conf + b"\xff" + st)


def main():
    import sys

    corpora = (("gguf", gguf_corpus), ("safetensors", safetensors_corpus),
               ("llama2c", llama2c_corpus), ("tokenizer_json", tokenizer_corpus),
               ("config_json", config_json_corpus), ("gguf_model", gguf_model_corpus),
               ("adapter", adapter_corpus))
    for name, fn in corpora:
        if len(sys.argv) > 1 and name not in sys.argv[1:]:
            continue
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        fn(d)
        total = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print("%s: %d files, %d bytes" % (d, len(os.listdir(d)), total))


if __name__ == "__main__":
    main()
