#!/usr/bin/env python3
"""Numpy dequantizer for GPTQ v1 checkpoints, written from the format description
(docs/reference.md §2.1), independently of our C code:

  qweight int32 (ceil(K*bits/32), N): word (r, c) holds input rows r*pw .. r*pw+pw-1 of output
          column c (pw = 32/bits), row r*pw+j in bits j*bits .. j*bits+bits-1 (LSB first)
  qzeros  int32 (G, ceil(N*bits/32)): packed along the output dim, same order; v1 stores zero-1
  scales  fp16 (G, N);  g_idx int32 (K)
  w[c, i] = scales[g_idx[i], c] * (q[i, c] - (stored_zero[g_idx[i], c] + 1))

Returns W as float32 (N, K) (PyTorch's (out, in) layout). The product of an fp16 scale and a
small integer is exact in float32, so this is bit-exact, not approximate.

Usage:
  /work/pyref/bin/python tools/dequant_ref.py CKPT.safetensors PREFIX [OUT.npy]
  (tools/gptq_ref.py imports dequantize() to write tests/fixtures/gptq/pack_*.safetensors)
"""
import sys

import numpy as np


def unpack_rows(words, bits, n_rows):
    """words (R, C) uint32 -> (R*pw, C) ints, truncated to n_rows."""
    pw = 32 // bits
    mask = (1 << bits) - 1
    w = words.view(np.uint32).astype(np.int64)
    out = np.zeros((w.shape[0] * pw, w.shape[1]), dtype=np.int64)
    for j in range(pw):
        out[j::pw] = (w >> (bits * j)) & mask
    return out[:n_rows]


def dequantize(qweight, qzeros, scales, g_idx, bits=4):
    K = g_idx.shape[0]
    G, N = scales.shape
    q = unpack_rows(qweight, bits, K)                       # (K, N)
    z = unpack_rows(qzeros.T.copy(), bits, N).T + 1        # (G, N): zero = stored + 1
    s = scales.astype(np.float32)
    g = g_idx.astype(np.int64)
    w = s[g] * (q - z[g]).astype(np.float32)                # (K, N)
    return np.ascontiguousarray(w.T.astype(np.float32))


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    from safetensors.numpy import load_file
    t = load_file(sys.argv[1])
    p = sys.argv[2]
    w = dequantize(t[p + ".qweight"], t[p + ".qzeros"], t[p + ".scales"], t[p + ".g_idx"])
    if len(sys.argv) > 3:
        np.save(sys.argv[3], w)
    print(w.shape, float(np.abs(w).max()))


if __name__ == "__main__":
    main()
