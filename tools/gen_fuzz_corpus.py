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


def config_json_corpus(d):
    for n in ("tiny_llama", "tiny_qwen2"):
        shutil.copy("tests/fixtures/hf/%s/config.json" % n, os.path.join(d, n + ".json"))


def main():
    for name, fn in (("gguf", gguf_corpus), ("safetensors", safetensors_corpus),
                     ("llama2c", llama2c_corpus), ("tokenizer_json", tokenizer_corpus),
                     ("config_json", config_json_corpus)):
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        fn(d)
        total = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print("%s: %d files, %d bytes" % (d, len(os.listdir(d)), total))


if __name__ == "__main__":
    main()
