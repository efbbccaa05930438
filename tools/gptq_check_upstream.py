#!/usr/bin/env python3
"""Checks tools/gptq_ref.py against the reference implementation itself: runs the
IST-DASLab/gptq `GPTQ.add_batch` / `fasterquant` (from a local checkout given on the command
line; nothing of it is copied into this repository) and our tools/gptq_ref.py, both in float32
on the CPU, on the layers of tests/fixtures/gptq/*.safetensors, and compares the quantized
weights bit for bit and the printed layer error.

Usage:
  /work/pyref/bin/python tools/gptq_check_upstream.py /path/to/IST-DASLab/gptq
  (a checkout whose gptq.py and quant.py run on the CPU: torch.cuda.synchronize() in
  fasterquant has to be removed or the script run where CUDA exists)

Expected differences: act-order with equal diagonal entries (dead columns all become 1), where
torch.argsort's unstable order may differ from our stable one.
"""
import io
import os
import sys
from contextlib import redirect_stdout

import numpy as np
import torch
import torch.nn as nn
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gptq_ref as ours  # noqa: E402


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.path.insert(0, sys.argv[1])
    with redirect_stdout(io.StringIO()):
        import gptq as upstream  # noqa: E402
        import quant as upstream_quant  # noqa: E402
    torch.set_num_threads(1)
    for name, N, K, T, bits, group, sym, act, static, nd, odd in ours.CASES:
        t = load_file(f"tests/fixtures/gptq/{name}.safetensors")
        X, W = torch.from_numpy(t["x"]), torch.from_numpy(t["w"])
        layer = nn.Linear(K, N, bias=False)
        layer.weight.data = W.clone()
        g = upstream.GPTQ(layer)
        g.quantizer = upstream_quant.Quantizer()
        g.quantizer.configure(bits, perchannel=True, sym=sym, mse=False)
        hs = ours.Hessian(K, torch.float32)
        r0 = 0
        for m, r in zip(t["batch_seqs"], t["batch_rows"]):
            # add_batch counts rows of its 3-d input as samples: m sequences of r/m tokens
            g.add_batch(X[r0:r0 + r].reshape(int(m), -1, K), None)
            hs.add_batch(X[r0:r0 + r], int(m))
            r0 += r
        assert torch.equal(g.H, hs.H), f"{name}: hessians differ"
        out = io.StringIO()
        with redirect_stdout(out):
            g.fasterquant(groupsize=group, actorder=act, static_groups=static)
        up_err = float([ln for ln in out.getvalue().splitlines() if ln.startswith("error")][0].split()[1])
        res = ours.gptq(W.clone(), hs.H.clone(), bits, group, sym, act, static)
        a, b = layer.weight.data.numpy(), res["wq"].numpy()
        diff = a.view(np.uint32) != b.view(np.uint32)
        print(f"{name}: weights differing {int(diff.sum())} of {diff.size} "
              f"(rows {int(diff.any(1).sum())}), error upstream {up_err:.7g} ours {res['loss']:.7g}")


if __name__ == "__main__":
    main()
