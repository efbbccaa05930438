#!/usr/bin/env python3
"""Helper of bench/bench_quant.sh.

Usage:
    python bench/bench_quant.py quantize IN.gguf OUT.gguf {q4_0|q4_k_m} [THREADS]
        llama.cpp's own quantizer (llama_model_quantize through llama-cpp-python's ctypes API)
    python bench/bench_quant.py bytes PATH
        bytes of weight data one decode step reads: all GGUF tensor data, or for a GPTQ
        checkpoint directory all safetensors tensors except g_idx (not read without act-order);
        an embedding untied from its lm_head / output tensor is left out (one row is read)
"""
import glob
import json
import os
import struct
import sys


def quantize(src, dst, kind, threads):
    import llama_cpp
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
               "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[kind]
    p.nthread = threads
    tmp = dst + ".tmp"
    rc = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), p)
    if rc != 0:
        sys.exit(f"error: llama_model_quantize '{src}' -> '{tmp}' failed ({rc})")
    os.replace(tmp, dst)


def nbytes(path):
    # an untied embedding is not read by a decode step (one row of it is): it is left out
    # when a separate lm_head / output tensor exists
    if os.path.isdir(path):
        tensors = {}
        for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
            with open(f, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                hdr = json.loads(fh.read(n))
            for name, t in hdr.items():
                if name == "__metadata__" or name.endswith(".g_idx"):
                    continue
                tensors[name] = t["data_offsets"][1] - t["data_offsets"][0]
        if "lm_head.weight" in tensors or "lm_head.qweight" in tensors:
            tensors.pop("model.embed_tokens.weight", None)
        return sum(tensors.values())
    import gguf
    tensors = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(path).tensors}
    if "output.weight" in tensors:
        tensors.pop("token_embd.weight", None)
    return sum(tensors.values())


def main():
    a = sys.argv[1:]
    if len(a) >= 4 and a[0] == "quantize":
        quantize(a[1], a[2], a[3], int(a[4]) if len(a) > 4 else 2)
    elif len(a) == 2 and a[0] == "bytes":
        print(nbytes(a[1]))
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
