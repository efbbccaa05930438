#!/usr/bin/env python3
"""Reference fp16/bf16 conversions from PyTorch for tests/test_core.c.

Writes tests/fixtures/dtype_ref.safetensors:
  x_f32           float32 inputs: random normals at many scales, fp16/bf16 edge cases
                  (halfway points, subnormals, overflow boundary, inf, nan)
  x_f16, x_bf16   torch's round-to-nearest-even conversions (stored as I16 bit patterns)
  all_f16_as_f32  every fp16 bit pattern widened to float32 by torch
Usage: python3 tools/gen_dtype_fixture.py   (seed 0; torch version recorded in metadata)
"""
import numpy as np
import torch
from safetensors.numpy import save_file

rng = np.random.default_rng(0)
parts = [rng.standard_normal(4000).astype(np.float32) * np.float32(s)
         for s in (1e-8, 1e-6, 1e-4, 1e-2, 1, 100, 1e4, 6e4, 1e6)]
# halfway cases for fp16 and bf16: take random fp16 values and add half an ulp
h = rng.standard_normal(2000).astype(np.float16)
hb = h.view(np.uint16).astype(np.uint32)
half = (h.astype(np.float32) + (np.nextafter(h, np.float16(np.inf)).astype(np.float32) - h.astype(np.float32)) / 2)
bf = rng.standard_normal(2000).astype(np.float32)
bfh = (bf.view(np.uint32) & 0xffff0000) | 0x8000
edges = np.array([0.0, -0.0, 65504, 65519.996, 65520, -65520, 6.1035156e-05, 5.9604645e-08,
                  2.9802322e-08, 2.9802326e-08, 8.940697e-08, 1e-30, np.inf, -np.inf, np.nan,
                  3.4028235e38, -3.4028235e38, 1.1754944e-38], dtype=np.float32)
x = np.concatenate(parts + [half.astype(np.float32), bfh.astype(np.uint32).view(np.float32), edges])
t = torch.from_numpy(x)
x16 = t.to(torch.float16).view(torch.int16).numpy()
xb = t.to(torch.bfloat16).view(torch.int16).numpy()
allh = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16).to(torch.float32).numpy()
save_file({"x_f32": x, "x_f16": x16, "x_bf16": xb, "all_f16_as_f32": allh},
          "tests/fixtures/dtype_ref.safetensors", metadata={"torch": torch.__version__, "seed": "0"})
print("wrote", len(x), "values")
