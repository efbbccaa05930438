#!/usr/bin/env python3
"""GGUF reference fixtures for tests/test_gguf.c, made with gguf-py (llama.cpp's `gguf`).

Usage (from the repository root, with the reference venv):
  /work/pyref/bin/python tools/gen_gguf_fixtures.py
      writes tests/fixtures/gguf/:
        meta.gguf            GGUFWriter file: every metadata value type (scalars, arrays of
                             each type, arrays of arrays of strings and ints) and F32/F16/BF16/
                             Q8_0 tensors; the C test hard-codes the same values (VALUES below).
        meta_ref.safetensors expected float32 contents of meta.gguf's tensors (gguf-py dequant)
        dequant_ref.safetensors  per type T: "T.bytes" (U8 blocks) and "T.f32" =
                             gguf.quants.dequantize(bytes, T). Legacy types: gguf.quants.quantize of
                             random normals plus random blocks; K-quants: random bytes with sane
                             fp16 scales (gguf-py has no K-quant quantizer).
        tiny_llama.gguf      a 2-layer llama-arch model (random weights, F32/F16/Q8_0/Q4_K/Q6_K
                             tensors, q/k stored permuted the way convert_hf_to_gguf.py does,
                             gpt2 tokenizer metadata, llama3 rope_freqs tensor computed with the
                             converter's formula)
        tiny_llama_ref.safetensors  HF-order float32 weights of tiny_llama.gguf
        tiny_qwen2.gguf, tiny_qwen2_ref.safetensors  1-layer qwen2 (biases, unpermuted, tied,
                             SPM "llama" tokenizer metadata with scores and byte tokens)
        smollm2_ref.safetensors     slices of models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
                             dequantized by gguf-py (only when that file exists)
  /work/pyref/bin/python tools/gen_gguf_fixtures.py --check-writer FILE
      reads FILE (written by test_gguf's writer test with EF_GGUF_WRITER_OUT=FILE) with
      gguf-py's GGUFReader and checks every metadata value and tensor.
  /work/pyref/bin/python tools/gen_gguf_fixtures.py --check-model FILE
      FILE = stories260K saved by model_save_gguf (EF_GGUF_MODEL_OUT=FILE): checks with
      gguf-py that every tensor equals the llama2.c checkpoint's bytes (which are in Meta's
      interleaved q/k order, the order llama.cpp expects) and the llama metadata.

  EF_GGUF_SMOL_OUT=/tmp/smol.gguf build/tests/test_gguf; \
  /work/pyref/bin/python tools/gen_gguf_fixtures.py --check-roundtrip \
      models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smol.gguf
      SmolLM2 loaded by edgeforge and saved as F16: metadata identical to the original and
      every tensor the fp16 rounding of the original, q/k back in llama.cpp's order.

  /work/pyref/bin/python tools/gen_gguf_fixtures.py --check-llamacpp ORIG.gguf OURS.gguf
      needs llama-cpp-python: llama.cpp loads OURS (e.g. the SmolLM2 re-save above) and
      gives the same token ids and top-1 predictions as on ORIG.
  /work/pyref/bin/python tools/gen_gguf_fixtures.py --check-llamacpp-stories FILE
      llama.cpp runs the stories260K GGUF written by model_save_gguf (EF_GGUF_MODEL_OUT=FILE)
      and reproduces models/stories260K/golden.txt (llama2.c's outputs).
  /work/pyref/bin/python tools/gen_gguf_fixtures.py --check-llamacpp-vocab FILE CASES COLUMN
      llama.cpp tokenizes every text of CASES (a tests/fixtures/tokenizers/*/cases.jsonl) with
      FILE's vocabulary and compares with COLUMN; e.g. EF_GGUF_SPM_OUT=/tmp/spm test_gguf, then
      FILE=/tmp/spm.bin.gguf CASES=tests/fixtures/tokenizers/llama2/cases.jsonl COLUMN=sp.

Seeds: numpy default_rng(1234). Library versions go into the safetensors metadata.
"""
import math
import os
import re
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT, GGUFValueType as VT
from safetensors.numpy import save_file

OUT = "tests/fixtures/gguf"
SEED = 1234
META = {"gguf_py": getattr(gguf, "__version__", "0.19.0"), "numpy": np.__version__,
        "seed": str(SEED), "tool": "tools/gen_gguf_fixtures.py"}

# Metadata of meta.gguf: (key, value, type, array subtype). Mirrored in tests/test_gguf.c.
VALUES = [
    ("t.u8", 200, VT.UINT8, None),
    ("t.i8", -100, VT.INT8, None),
    ("t.u16", 65000, VT.UINT16, None),
    ("t.i16", -32000, VT.INT16, None),
    ("t.u32", 4000000000, VT.UINT32, None),
    ("t.i32", -2000000000, VT.INT32, None),
    ("t.u64", 18000000000000000000, VT.UINT64, None),
    ("t.i64", -9000000000000000000, VT.INT64, None),
    ("t.f32", 3.14159, VT.FLOAT32, None),
    ("t.f64", -2.718281828459045, VT.FLOAT64, None),
    ("t.bool_t", True, VT.BOOL, None),
    ("t.bool_f", False, VT.BOOL, None),
    ("t.str", "h\u00e9llo \u4e16\u754c", VT.STRING, None),
    ("t.str_empty", "", VT.STRING, None),
    ("t.arr_u8", [1, 2, 255], VT.ARRAY, VT.UINT8),
    ("t.arr_i8", [-128, 0, 127], VT.ARRAY, VT.INT8),
    ("t.arr_u16", [0, 65535], VT.ARRAY, VT.UINT16),
    ("t.arr_i16", [-32768, 32767], VT.ARRAY, VT.INT16),
    ("t.arr_u32", [0, 4294967295], VT.ARRAY, VT.UINT32),
    ("t.arr_i32", [-5, 6, -7], VT.ARRAY, VT.INT32),
    ("t.arr_u64", [1, 18446744073709551615], VT.ARRAY, VT.UINT64),
    ("t.arr_i64", [-9223372036854775808, 9223372036854775807], VT.ARRAY, VT.INT64),
    ("t.arr_f32", [0.5, -1.25, 1e-3], VT.ARRAY, VT.FLOAT32),
    ("t.arr_f64", [0.1, -1e300], VT.ARRAY, VT.FLOAT64),
    ("t.arr_bool", [True, False, True], VT.ARRAY, VT.BOOL),
    ("t.arr_str", ["a", "", "\u00fcber", "x y"], VT.ARRAY, VT.STRING),
    ("t.arr_arr_str", [["p", "q"], ["r"]], VT.ARRAY, VT.ARRAY),
    ("t.arr_arr_i32", [[1, 2, 3], [-4]], VT.ARRAY, VT.ARRAY),
]


def gen_meta(rng):
    w = gguf.GGUFWriter(f"{OUT}/meta.gguf", arch="test")  # also writes general.architecture
    for key, val, vt, sub in VALUES:
        w.add_key_value(key, val, vt, sub_type=sub)
    ref = {}
    a = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    w.add_tensor("f32_3x4", a)
    ref["f32_3x4"] = a
    h = (rng.standard_normal((2, 8)) * 3).astype(np.float16)
    w.add_tensor("f16_2x8", h)
    ref["f16_2x8"] = h.astype(np.float32)
    b = rng.standard_normal((5, 2)).astype(np.float32)
    bq = gguf.quants.quantize(b, QT.BF16)
    w.add_tensor("bf16_5x2", bq, raw_dtype=QT.BF16)
    ref["bf16_5x2"] = gguf.quants.dequantize(bq, QT.BF16)
    q = rng.standard_normal((4, 64)).astype(np.float32)
    qq = gguf.quants.quantize(q, QT.Q8_0)
    w.add_tensor("q8_0_4x64", qq, raw_dtype=QT.Q8_0)
    ref["q8_0_4x64"] = gguf.quants.dequantize(qq, QT.Q8_0)
    v = rng.standard_normal(7).astype(np.float32)
    w.add_tensor("vec7", v)
    ref["vec7"] = v
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file(ref, f"{OUT}/meta_ref.safetensors", metadata=META)


# byte offsets of the fp16 scale fields inside one block, per type
HALF_FIELDS = {
    QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
    QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
}
LEGACY = [QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0]


def sane_halves(rng, n):
    # magnitudes 1e-6 .. 1 (fp16 subnormals included), both signs
    mag = np.exp(rng.uniform(np.log(1e-6), 0.0, n))
    return (mag * rng.choice([-1.0, 1.0], n)).astype(np.float16)


def gen_dequant(rng):
    out = {}
    for t, fields in HALF_FIELDS.items():
        bs, ts = gguf.GGML_QUANT_SIZES[t]
        nb = 40 if bs == 256 else 160
        blocks = rng.integers(0, 256, (nb, ts), dtype=np.uint8)
        for f in fields:
            blocks[:, f:f + 2] = sane_halves(rng, nb).view(np.uint8).reshape(nb, 2)
        data = blocks.reshape(-1)
        if t in LEGACY:  # plus blocks gguf-py's quantizer made from real-looking data
            x = (rng.standard_normal((8, 256)) * rng.uniform(0.01, 3, (8, 1))).astype(np.float32)
            data = np.concatenate([data, gguf.quants.quantize(x, t).reshape(-1)])
        nrow = data.size // ts
        y = gguf.quants.dequantize(data.reshape(nrow, ts), t).reshape(-1)
        assert y.dtype == np.float32 and np.all(np.isfinite(y))
        out[f"{t.name}.bytes"] = data
        out[f"{t.name}.f32"] = y
    for t in (QT.F16, QT.BF16):
        x = (rng.standard_normal(512) * 10).astype(np.float32)
        b = (x.astype(np.float16) if t == QT.F16 else gguf.quants.quantize(x, QT.BF16)).view(np.uint8)
        out[f"{t.name}.bytes"] = b.reshape(-1)
        out[f"{t.name}.f32"] = gguf.quants.dequantize(b.reshape(1, -1), t).reshape(-1)
    save_file(out, f"{OUT}/dequant_ref.safetensors", metadata=META)


# ---- tiny llama ---------------------------------------------------------------
TINY = dict(dim=256, hidden=64, layers=2, heads=4, kv_heads=2, vocab=48, ctx=256,
            theta=10000.0, eps=1e-5, rope=dict(factor=8.0, low=1.0, high=4.0, orig=64))


def llama3_rope_freqs(head_dim, theta, factor, low, high, orig):
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors (rope_type llama3)."""
    base = theta
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wl, high_wl = orig / low, orig / high
    out = []
    for freq in freqs:
        wl = 2 * math.pi / freq
        if wl < high_wl:
            out.append(1)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (orig / wl - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def to_gguf_qk(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute: HF rotate_half rows -> interleaved."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gen_tiny(rng):
    c = TINY
    D, F, L, H, KVH, V = c["dim"], c["hidden"], c["layers"], c["heads"], c["kv_heads"], c["vocab"]
    HD = D // H
    w = gguf.GGUFWriter(f"{OUT}/tiny_llama.gguf", arch="llama")
    w.add_context_length(c["ctx"])
    w.add_embedding_length(D)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KVH)
    w.add_rope_freq_base(c["theta"])
    w.add_layer_norm_rms_eps(c["eps"])
    w.add_rope_dimension_count(HD)
    w.add_vocab_size(V)
    # byte-level BPE tokenizer metadata (gpt2 model): 48 tokens, a few merges
    toks = ([chr(0x61 + i) for i in range(26)] + [chr(0x30 + i) for i in range(10)] +
            ["ab", "abc", "\u0120a", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "c\u0120",
             "\u0120", "xy", "!", ".", ","])
    assert len(toks) == V
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(toks)
    w.add_token_types([3 if t.startswith("<|") else 1 for t in toks])
    w.add_token_merges(["a b", "ab c", "\u0120 a", "x y"])
    w.add_bos_token_id(39)
    w.add_eos_token_id(41)
    w.add_add_bos_token(False)
    w.add_chat_template("{{ messages }}")
    ref = {}

    def add(name, arr, qt=None):
        nonlocal w
        if qt is None or qt == QT.F32:
            w.add_tensor(name, arr.astype(np.float32))
            return arr.astype(np.float32)
        if qt == QT.F16:
            w.add_tensor(name, arr.astype(np.float16))
            return arr.astype(np.float16).astype(np.float32)
        if qt in LEGACY or qt == QT.BF16:
            q = gguf.quants.quantize(arr.astype(np.float32), qt)
        else:  # K-quants: random blocks with sane scales (no quantizer in gguf-py)
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            nb = arr.size // bs
            q = rng.integers(0, 256, (nb, ts), dtype=np.uint8)
            for f in HALF_FIELDS[qt]:
                q[:, f:f + 2] = (np.abs(sane_halves(rng, nb)) * 0.01).astype(np.float16).view(np.uint8).reshape(nb, 2)
            q = q.reshape(arr.shape[0], -1)
        w.add_tensor(name, q, raw_dtype=qt)
        return gguf.quants.dequantize(q, qt).reshape(arr.shape)

    def rnd(*shape, s=0.1):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    ref["tok_emb"] = add("token_embd.weight", rnd(V, D), QT.Q8_0)
    for l in range(L):
        p = f"blk.{l}."
        ref[f"l{l}.attn_norm"] = add(p + "attn_norm.weight", 1 + rnd(D))
        # q/k: the reference is the HF-order matrix; the file holds the permuted one
        for nm, rows, nh, qt in (("attn_q", H * HD, H, QT.Q4_K), ("attn_k", KVH * HD, KVH, QT.F16)):
            hf = rnd(rows, D)
            stored = add(p + nm + ".weight", to_gguf_qk(hf, nh), qt)
            # undo the permutation on the dequantized values: HF order
            ref[f"l{l}.{nm}"] = stored.reshape(nh, HD // 2, 2, D).swapaxes(1, 2).reshape(rows, D)
        ref[f"l{l}.attn_v"] = add(p + "attn_v.weight", rnd(KVH * HD, D), QT.Q6_K)
        ref[f"l{l}.attn_output"] = add(p + "attn_output.weight", rnd(D, H * HD), QT.Q4_0)
        ref[f"l{l}.ffn_norm"] = add(p + "ffn_norm.weight", 1 + rnd(D))
        ref[f"l{l}.ffn_gate"] = add(p + "ffn_gate.weight", rnd(F, D), QT.Q5_K)
        ref[f"l{l}.ffn_up"] = add(p + "ffn_up.weight", rnd(F, D), QT.BF16)
        ref[f"l{l}.ffn_down"] = add(p + "ffn_down.weight", rnd(D, F), QT.F32)
    ref["final_norm"] = add("output_norm.weight", 1 + rnd(D))
    ref["lm_head"] = add("output.weight", rnd(V, D), QT.Q4_1)
    r = c["rope"]
    add("rope_freqs.weight", llama3_rope_freqs(HD, c["theta"], r["factor"], r["low"], r["high"], r["orig"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in ref.items()},
              f"{OUT}/tiny_llama_ref.safetensors", metadata=META)


def gen_qwen2(rng):
    """A 1-layer qwen2 model: q/k/v biases, NEOX rope, so nothing is permuted; tied."""
    D, F, H, KVH, V = 64, 96, 4, 2, 40
    HD = D // H
    w = gguf.GGUFWriter(f"{OUT}/tiny_qwen2.gguf", arch="qwen2")
    w.add_context_length(128)
    w.add_embedding_length(D)
    w.add_block_count(1)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KVH)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("llama")  # SPM with scores and byte tokens
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(32)] + ["\u2581a", "b", "\u2581ab", "c", "\u2581"]
    assert len(toks) == V
    w.add_token_list(toks)
    w.add_token_scores([0.0] * 35 + [-1.0, -2.0, -0.5, -3.0, -4.0])
    w.add_token_types([2, 3, 3] + [6] * 32 + [1] * 5)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    ref = {}

    def rnd(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    for name, key, shape in (("token_embd.weight", "tok_emb", (V, D)), ("blk.0.attn_norm.weight", "attn_norm", (D,)),
                             ("blk.0.attn_q.weight", "wq", (H * HD, D)), ("blk.0.attn_k.weight", "wk", (KVH * HD, D)),
                             ("blk.0.attn_v.weight", "wv", (KVH * HD, D)), ("blk.0.attn_q.bias", "bq", (H * HD,)),
                             ("blk.0.attn_k.bias", "bk", (KVH * HD,)), ("blk.0.attn_v.bias", "bv", (KVH * HD,)),
                             ("blk.0.attn_output.weight", "wo", (D, H * HD)), ("blk.0.ffn_norm.weight", "ffn_norm", (D,)),
                             ("blk.0.ffn_gate.weight", "w_gate", (F, D)), ("blk.0.ffn_up.weight", "w_up", (F, D)),
                             ("blk.0.ffn_down.weight", "w_down", (D, F)), ("output_norm.weight", "final_norm", (D,))):
        x = rnd(*shape)
        if key == "wq":  # one block-quantized tensor
            q = gguf.quants.quantize(x, QT.Q8_0)
            w.add_tensor(name, q, raw_dtype=QT.Q8_0)
            x = gguf.quants.dequantize(q, QT.Q8_0)
        else:
            w.add_tensor(name, x)
        ref[key] = x
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file(ref, f"{OUT}/tiny_qwen2_ref.safetensors", metadata=META)


SMOL = "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def gen_smollm2():
    if not os.path.exists(SMOL):
        print("skip smollm2 (missing)", SMOL)
        return
    r = gguf.GGUFReader(SMOL)
    t = {x.name: x for x in r.tensors}

    def deq(name):
        x = t[name]
        return gguf.quants.dequantize(x.data, x.tensor_type).reshape([int(v) for v in reversed(x.shape)])

    out = {}
    emb = deq("token_embd.weight")  # (V, D), Q8_0
    out["token_embd.rows0_8"] = emb[:8]
    out["token_embd.rows49144_49152"] = emb[-8:]
    q = deq("blk.0.attn_q.weight")  # (576, 576) Q4_1, GGUF interleaved order
    out["blk.0.attn_q.gguf_rows0_64"] = q[:64]
    HD = 64
    out["blk.0.attn_q.hf_rows0_64"] = q[:HD].reshape(HD // 2, 2, -1).swapaxes(0, 1).reshape(HD, -1)
    k = deq("blk.0.attn_k.weight")
    out["blk.0.attn_k.hf_rows64_128"] = k[HD:2 * HD].reshape(HD // 2, 2, -1).swapaxes(0, 1).reshape(HD, -1)
    out["blk.29.ffn_down.rows0_4"] = deq("blk.29.ffn_down.weight")[:4]
    out["output_norm"] = deq("output_norm.weight")
    meta = dict(META, source=os.path.basename(SMOL))
    save_file({k2: np.ascontiguousarray(v, dtype=np.float32) for k2, v in out.items()},
              f"{OUT}/smollm2_ref.safetensors", metadata=meta)


# ---- checks of files written by edgeforge ---------------------------------------
def field_value(f):
    return f.contents()


def check_writer(path):
    """The C writer test writes the VALUES metadata and the tensors described in test_gguf.c."""
    r = gguf.GGUFReader(path)
    ref = gguf.GGUFReader(f"{OUT}/meta.gguf")  # the same metadata as written by GGUFWriter
    bad = 0
    for key, val, vt, sub in VALUES:
        f = r.fields.get(key)
        if f is None:
            print("missing", key); bad += 1; continue
        got = field_value(f)
        if f.types[0] != vt or (sub is not None and f.types[1] != sub):
            print("type", key, f.types); bad += 1
        if vt == VT.FLOAT32 or sub == VT.FLOAT32:
            ok = np.array_equal(np.float32(got), np.float32(val))
        elif sub == VT.ARRAY:  # gguf-py flattens nested arrays in contents()
            ok = got == [x for sublist in val for x in sublist]
        else:
            ok = got == val
        # and the serialized bytes equal GGUFWriter's
        raw = b"".join(bytes(p_) for p_ in f.parts)
        raw_ref = b"".join(bytes(p_) for p_ in ref.fields[key].parts)
        if not ok or raw != raw_ref:
            print("value", key, got, val, raw == raw_ref); bad += 1
    tens = {t.name: t for t in r.tensors}
    # tensors: f32 arange (3,4), f16 of the same, bf16 of the same, raw q8_0 bytes of 0..31
    a = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    for name, qt in (("w_f32", QT.F32), ("w_f16", QT.F16), ("w_bf16", QT.BF16)):
        t = tens[name]
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(3, 4)
        if t.tensor_type != qt or not np.array_equal(got, a) or list(t.shape) != [4, 3]:
            print("tensor", name, t.tensor_type, t.shape); bad += 1
    t = tens["w_q8_0"]
    got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)
    want = np.arange(32, dtype=np.float32) * np.float32(0.5)
    if t.tensor_type != QT.Q8_0 or not np.array_equal(got, want):
        print("tensor w_q8_0", got[:4]); bad += 1
    print(f"check-writer {path}: {len(VALUES)} keys, {len(r.tensors)} tensors, {bad} problems")
    return bad


def read_llama2c(path):
    d = np.fromfile(path, dtype=np.uint8)
    dim, hidden, L, H, KVH, V, seq = np.frombuffer(d[:28], dtype=np.int32)
    shared = V > 0
    V = abs(V)
    f = np.frombuffer(d[28:], dtype=np.float32)
    HD = dim // H
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        x = f[pos:pos + n].reshape(shape)
        pos += n
        return x
    w = {"token_embd.weight": take(V, dim)}
    an = take(L, dim); wq = take(L, H * HD, dim); wk = take(L, KVH * HD, dim); wv = take(L, KVH * HD, dim)
    wo = take(L, dim, H * HD); fn = take(L, dim); w1 = take(L, hidden, dim); w2 = take(L, dim, hidden)
    w3 = take(L, hidden, dim)
    w["output_norm.weight"] = take(dim)
    take(seq, HD)
    if not shared:
        w["output.weight"] = take(V, dim)
    for l in range(L):
        p = f"blk.{l}."
        w[p + "attn_norm.weight"] = an[l]; w[p + "attn_q.weight"] = wq[l]; w[p + "attn_k.weight"] = wk[l]
        w[p + "attn_v.weight"] = wv[l]; w[p + "attn_output.weight"] = wo[l]; w[p + "ffn_norm.weight"] = fn[l]
        w[p + "ffn_gate.weight"] = w1[l]; w[p + "ffn_down.weight"] = w2[l]; w[p + "ffn_up.weight"] = w3[l]
    cfg = dict(dim=int(dim), hidden=int(hidden), L=int(L), H=int(H), KVH=int(KVH), V=int(V), seq=int(seq))
    return w, cfg


def check_model(path, ckpt="models/stories260K/stories260K.bin"):
    r = gguf.GGUFReader(path)
    want, cfg = read_llama2c(ckpt)
    bad = 0
    arch = r.fields["general.architecture"].contents()
    kv = {"llama.embedding_length": cfg["dim"], "llama.block_count": cfg["L"],
          "llama.feed_forward_length": cfg["hidden"], "llama.attention.head_count": cfg["H"],
          "llama.attention.head_count_kv": cfg["KVH"], "llama.context_length": cfg["seq"]}
    if arch != "llama":
        print("arch", arch); bad += 1
    for k, v in kv.items():
        if r.fields[k].contents() != v:
            print("meta", k, r.fields[k].contents(), v); bad += 1
    tens = {t.name: t for t in r.tensors}
    for name, w in want.items():
        t = tens.get(name)
        if t is None:
            print("missing tensor", name); bad += 1; continue
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape)
        if t.tensor_type != QT.F32 or not np.array_equal(got, w):
            print("tensor differs", name, t.tensor_type.name); bad += 1
    extra = set(tens) - set(want)
    if extra:
        print("extra tensors", sorted(extra)); bad += 1
    ntok = len(r.fields["tokenizer.ggml.tokens"].data)
    print(f"check-model {path}: {len(want)} tensors vs {ckpt}, {ntok} tokens, {bad} problems")
    return bad


def check_roundtrip(orig, ours):
    """ours = orig loaded by edgeforge (HF order in memory) and saved as F16: every non-general
    key must be identical and every tensor equal the fp16 rounding of orig's dequantized
    values in llama.cpp's (interleaved q/k) order."""
    a, b = gguf.GGUFReader(orig), gguf.GGUFReader(ours)
    bad = 0
    for k, fa in a.fields.items():
        if k.startswith(("GGUF.", "general.")) or k == "tokenizer.ggml.add_space_prefix":
            continue  # add_space_prefix: SPM-only in llama.cpp, not written for gpt2
        fb = b.fields.get(k)
        if fb is None or fa.contents() != fb.contents():
            print("metadata differs:", k); bad += 1
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    if set(ta) != set(tb):
        print("tensor names differ", set(ta) ^ set(tb)); bad += 1
    for n, t in ta.items():
        if n not in tb:
            continue
        x = gguf.quants.dequantize(t.data, t.tensor_type)
        y = gguf.quants.dequantize(tb[n].data, tb[n].tensor_type).reshape(x.shape)
        want = x.astype(np.float16).astype(np.float32) if tb[n].tensor_type == QT.F16 else x
        if not np.array_equal(want, y):
            print("tensor differs", n); bad += 1
    print(f"check-roundtrip {ours}: {len(a.fields)} keys, {len(ta)} tensors, {bad} problems")
    return bad


def check_llamacpp(orig, ours):
    """llama.cpp itself (llama-cpp-python) loads `ours` and agrees with `orig`: same token ids
    for a prompt and, after evaluating it, close logits with the same top-1 at every position."""
    from llama_cpp import Llama
    text = "The capital of France is Paris. Once upon a time, there was a little cat named 42."
    outs = []
    for path in (orig, ours):
        llm = Llama(model_path=path, n_ctx=256, logits_all=True, verbose=False, n_threads=2)
        ids = llm.tokenize(text.encode(), add_bos=True)
        llm.eval(ids)
        outs.append((ids, np.array(llm.scores[:len(ids)], dtype=np.float32)))
        del llm
    (ia, la), (ib, lb) = outs
    top = float(np.mean(la.argmax(-1) == lb.argmax(-1)))
    rel = float(np.abs(la - lb).max() / np.abs(la).max())
    bad = int(ia != ib) + int(top < 1.0)
    print(f"check-llamacpp {ours}: tokens equal {ia == ib} ({len(ia)}), top-1 agreement {top:.3f}, "
          f"max |dlogit|/max|logit| {rel:.2e}, {bad} problems")
    return bad


def check_llamacpp_stories(path, golden="models/stories260K/golden.txt"):
    """llama.cpp runs stories260K as saved by edgeforge (EF_GGUF_MODEL_OUT) and reproduces
    llama2.c's golden outputs: top-5 logits after BOS, 64 greedy ids, the encode cases."""
    from llama_cpp import Llama
    g = {}
    for line in open(golden):
        if line.startswith("pos0_top5"):
            g["top5"] = [(int(i), float(v)) for i, v in re.findall(r'(\d+):".*?":([-\d.]+)', line)]
        elif line.startswith("greedy_ids"):
            g["greedy"] = [int(t) for t in line.split()[1:]]
    llm = Llama(model_path=path, n_ctx=128, logits_all=True, verbose=False, n_threads=2)
    bad = 0
    llm.eval([1])
    l0 = np.array(llm.scores[0], dtype=np.float64)
    top = list(np.argsort(-l0)[:5])
    if top != [i for i, _ in g["top5"]] or max(abs(l0[i] - v) for i, v in g["top5"]) > 1e-3:
        print("top5", top, [l0[i] for i in top]); bad += 1
    ids = [1]
    for _ in range(64):
        nxt = int(np.argmax(llm.scores[len(ids) - 1]))
        ids.append(nxt)
        llm.eval([nxt])
    if ids[1:] != g["greedy"]:
        print("greedy differs", ids[1:12], g["greedy"][:11]); bad += 1
    enc = llm.tokenize(b"Once upon a time", add_bos=False)
    if enc != [403, 407, 261, 378]:
        print("encode", enc); bad += 1
    print(f"check-llamacpp-stories {path}: top5 {top}, greedy 64 ids equal {ids[1:] == g['greedy']}, "
          f"{bad} problems")
    return bad


def check_llamacpp_vocab(path, cases, column):
    """llama.cpp tokenizes every text of a tokenizer fixture (tests/fixtures/tokenizers/*/
    cases.jsonl) with the vocabulary of `path`; counts mismatches against `column`."""
    import json
    from llama_cpp import Llama
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    rows = [json.loads(line) for line in open(cases)][1:]
    bad = [r for r in rows if llm.tokenize(r["text"].encode(), add_bos=False, special=False) != r[column]]
    for r in bad[:3]:
        print("differs:", repr(r["text"][:40]), llm.tokenize(r["text"].encode(), add_bos=False)[:8], r[column][:8])
    print(f"check-llamacpp-vocab {path}: {len(rows) - len(bad)}/{len(rows)} equal to '{column}'")
    return len(bad)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--check-llamacpp-vocab":
        sys.exit(1 if check_llamacpp_vocab(sys.argv[2], sys.argv[3], sys.argv[4]) else 0)
    if len(sys.argv) == 3 and sys.argv[1] == "--check-llamacpp-stories":
        sys.exit(1 if check_llamacpp_stories(sys.argv[2]) else 0)
    if len(sys.argv) == 4 and sys.argv[1] == "--check-llamacpp":
        sys.exit(1 if check_llamacpp(sys.argv[2], sys.argv[3]) else 0)
    if len(sys.argv) == 4 and sys.argv[1] == "--check-roundtrip":
        sys.exit(1 if check_roundtrip(sys.argv[2], sys.argv[3]) else 0)
    if len(sys.argv) == 3 and sys.argv[1] == "--check-writer":
        sys.exit(1 if check_writer(sys.argv[2]) else 0)
    if len(sys.argv) == 3 and sys.argv[1] == "--check-model":
        sys.exit(1 if check_model(sys.argv[2]) else 0)
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(SEED)
    gen_meta(rng)
    gen_dequant(rng)
    gen_tiny(rng)
    gen_qwen2(rng)
    gen_smollm2()
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
