#!/usr/bin/env python3
"""Writes an F32 or F16 copy of a GGUF model (all metadata copied, every tensor dequantized
with gguf-py; for F16, 2-D weights are stored as F16 and 1-D norms stay F32, as llama.cpp's
convert_hf_to_gguf.py --outtype f16 does). Used by bench/bench_infer.sh so that llama.cpp
and edgeforge read the same weights at the same precision.

Usage: python bench/make_gguf.py IN.gguf OUT.gguf {f32|f16}
"""
import sys

import numpy as np
import gguf


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("f32", "f16"):
        print(__doc__)
        sys.exit(2)
    src, dst, kind = sys.argv[1:]
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            w.add_file_type(gguf.LlamaFileType.ALL_F32 if kind == "f32" else gguf.LlamaFileType.MOSTLY_F16)
            continue
        vtype = f.types[0]
        sub = f.types[1] if vtype == gguf.GGUFValueType.ARRAY and len(f.types) > 1 else None
        w.add_key_value(name, f.contents(), vtype, sub_type=sub)
    for t in r.tensors:
        x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape.tolist())]  # gguf shape is innermost-first
        x = x.reshape(shape)
        if kind == "f16" and x.ndim == 2:
            w.add_tensor(t.name, x.astype(np.float16), raw_dtype=gguf.GGMLQuantizationType.F16)
        else:
            w.add_tensor(t.name, x, raw_dtype=gguf.GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
