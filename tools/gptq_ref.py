#!/usr/bin/env python3
"""PyTorch reference GPTQ for tests/test_gptq.c, written from the published algorithm
(Frantar et al. 2022, Alg. 1) and the IST-DASLab/gptq reference behaviour as
docs/reference.md §1.2-§1.3 describes it. Our own code; nothing is imported from GPTQ
libraries.

What it follows exactly (see docs/gptq.md):
  * Hessian: running average H *= n/(n+m); n += m; H += (sqrt(2/n) X)^T (sqrt(2/n) X),
    n counting sequences (add_batch rows), X the batch's tokens.
  * per-channel grid (group -1) from the full W *before* dead columns are zeroed;
    dead columns (diag H == 0): H[i,i] = 1, W[:, i] = 0; static groups from the zeroed W.
  * act-order: perm = argsort(diag H, descending) -- we use a *stable* sort (ties keep
    column order; torch's default sort is not stable, so this is our documented choice).
  * damp = percdamp * mean(diag H) after the dead-column fix; H^-1 = cholesky_inverse;
    upper Cholesky factor U of H^-1; lazy blocks of 128; a group's grid is found from the
    *outer* W (not the in-block updated copy) when column % group == 0.
  * quantizer: maxq = 2^bits - 1; xmin = min(min x, 0), xmax = max(max x, 0); sym:
    xmax = max(|xmin|, xmax), xmin = -xmax where xmin < 0; xmin = xmax = 0 -> -1, +1;
    scale = (xmax - xmin) / maxq; zero = (maxq + 1) / 2 (sym) or round(-xmin / scale);
    q = clamp(round(x / scale) + zero, 0, maxq) with torch.round (half to even).
  * loss = sum((w - q)^2 / d^2) / 2 over the layer.
  * RTN baseline: the same grids as static groups, no error feedback, no act-order.

The arithmetic runs in float64 by default (--dtype float32 mirrors the reference's fp32).
In float32 it reproduces the reference's own code bit for bit on the fixture layers
(tools/gptq_check_upstream.py runs both). Our C code computes in double, so the float64
fixtures give identical integer codes;
mismatches are only allowed at exact rounding ties (|frac(x/scale)| = 0.5 up to 1e-9),
whose distance we record per code ("tie").

Usage:
  /work/pyref/bin/python tools/gptq_ref.py fixtures      # writes tests/fixtures/gptq/*.safetensors
  /work/pyref/bin/python tools/gptq_ref.py bench [--rows 1536 --cols 576 --seqs 128 --seq-len 512]
      times add_batch (Hessian) and fasterquant on this CPU, float32 like the reference.
Seeds are fixed per case (recorded in the metadata with the torch/numpy versions).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dequant_ref  # noqa: E402  (our numpy dequantizer written from the format description)

OUT_DIR = "tests/fixtures/gptq"


# ---- quantizer (reference §1.3) --------------------------------------------------------
def find_params(x, bits, sym, mse=False):
    """x: (rows, cols) -> scale (rows,), zero (rows,) as float tensors of x.dtype.
    mse: the reference quantizer's grid search (quant.py Quantizer with mse=True and its
    defaults grid=100, maxshrink=0.8, norm=2.4), transcribed below."""
    maxq = 2 ** bits - 1
    tmp = torch.zeros(x.shape[0], dtype=x.dtype)
    xmin = torch.minimum(x.min(1)[0], tmp)
    xmax = torch.maximum(x.max(1)[0], tmp)
    if sym:
        xmax = torch.maximum(torch.abs(xmin), xmax)
        neg = xmin < 0
        xmin[neg] = -xmax[neg]
    both0 = (xmin == 0) & (xmax == 0)
    xmin[both0] = -1
    xmax[both0] = +1
    scale = (xmax - xmin) / maxq
    if sym:
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zero = torch.round(-xmin / scale)
    if mse:
        grid, maxshrink, norm = 100, 0.8, 2.4
        best = torch.full([x.shape[0]], float("inf"), dtype=x.dtype)
        for i in range(int(maxshrink * grid)):
            p = 1 - i / grid
            xmin1 = p * xmin
            xmax1 = p * xmax
            scale1 = (xmax1 - xmin1) / maxq
            zero1 = torch.round(-xmin1 / scale1) if not sym else zero
            q = torch.clamp(torch.round(x / scale1.unsqueeze(1)) + zero1.unsqueeze(1), 0, maxq)
            q = scale1.unsqueeze(1) * (q - zero1.unsqueeze(1))
            q -= x
            q.abs_()
            q.pow_(norm)
            err = torch.sum(q, 1)
            tmp = err < best
            if torch.any(tmp):
                best[tmp] = err[tmp]
                scale[tmp] = scale1[tmp]
                zero[tmp] = zero1[tmp]
    return scale, zero


def quantize_codes(x, scale, zero, maxq):
    """Integer codes (as float) and the distance of x/scale from the nearest .5 tie."""
    t = x / scale
    frac = t - torch.floor(t)
    tie = torch.abs(frac - 0.5)
    q = torch.clamp(torch.round(t) + zero, 0, maxq)
    return q, tie


# ---- Hessian ---------------------------------------------------------------------------
class Hessian:
    def __init__(self, k, dtype):
        self.H = torch.zeros((k, k), dtype=dtype)
        self.n = 0

    def add_batch(self, x, m):
        """x: (tokens, K) of one batch holding m sequences."""
        self.H *= self.n / (self.n + m)
        self.n += m
        xs = np.sqrt(2 / self.n) * x.to(self.H.dtype)
        self.H += xs.t() @ xs


# ---- GPTQ (reference §1.2) ---------------------------------------------------------------
def gptq(W, H, bits=4, group=128, sym=True, act_order=False, static_groups=False,
         percdamp=0.01, blocksize=128, mse=False):
    """W: (N, K), H: (K, K) (not modified). Returns a dict of codes (N, K) in original
    column order, per-group scale/zero (G, N), g_idx (K), perm, loss, tie (N, K)."""
    W = W.clone()
    H = H.clone()
    N, K = W.shape
    maxq = 2 ** bits - 1
    G = 1 if group == -1 else (K + group - 1) // group
    scale, zero = find_params(W, bits, sym, mse)  # per-channel grid from W before dead zeroing
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    groups = []
    if static_groups and group != -1:
        for i in range(0, K, group):
            groups.append(find_params(W[:, i:i + group], bits, sym, mse))
    perm = torch.arange(K)
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    invperm = torch.argsort(perm)
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(K)
    H[idx, idx] += damp
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    U = torch.linalg.cholesky(Hinv, upper=True)

    Q = torch.zeros_like(W)
    Wq = torch.zeros_like(W)
    Losses = torch.zeros_like(W)
    Tie = torch.zeros_like(W)
    scales = torch.zeros((G, N), dtype=W.dtype)
    zeros = torch.zeros((G, N), dtype=W.dtype)
    if group == -1:
        scales[0], zeros[0] = scale, zero
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            c = i1 + i
            w = W1[:, i]
            d = U1[i, i]
            if group != -1:
                if not static_groups:
                    if c % group == 0:
                        scale, zero = find_params(W[:, c:c + group], bits, sym, mse)
                        scales[c // group], zeros[c // group] = scale, zero
                else:
                    gi = int(perm[c]) // group
                    scale, zero = groups[gi]
                    scales[gi], zeros[gi] = scale, zero
            q, tie = quantize_codes(w, scale, zero, maxq)
            wq = scale * (q - zero)
            Q[:, c] = q
            Wq[:, c] = wq
            Tie[:, c] = tie
            Losses[:, c] = (w - wq) ** 2 / d ** 2 / 2
            err = (w - wq) / d
            W1[:, i:] -= err.unsqueeze(1) @ U1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    if group == -1:
        g_idx = torch.zeros(K, dtype=torch.int64)
    elif act_order and not static_groups:
        g_idx = invperm // group
    else:
        g_idx = torch.arange(K) // group
    return {"q": Q[:, invperm], "wq": Wq[:, invperm], "tie": Tie[:, invperm], "scale": scales, "zero": zeros,
            "g_idx": g_idx, "perm": perm, "loss": float(Losses.sum())}


def rtn(W, bits=4, group=128, sym=True, mse=False):
    """Round-to-nearest on the same grids (static groups from W, no error feedback)."""
    N, K = W.shape
    maxq = 2 ** bits - 1
    g = K if group == -1 else group
    Q = torch.zeros_like(W)
    for i in range(0, K, g):
        s, z = find_params(W[:, i:i + g], bits, sym, mse)
        Q[:, i:i + g], _ = quantize_codes(W[:, i:i + g], s.unsqueeze(1), z.unsqueeze(1), maxq)
    return Q


# ---- v1 packing, written from reference §2.1 --------------------------------------------
def pack_v1(q, zeros, scales, g_idx, bits=4):
    """q: (N, K) ints, zeros/scales: (G, N). Returns the four checkpoint tensors (numpy).
    qweight (ceil(K*bits/32), N): word r holds input rows r*pw .. r*pw+pw-1 of a column,
    row r*pw+j in bits j*bits .. (LSB first); qzeros (G, ceil(N*bits/32)) packs zero-1
    along the output dim in the same order."""
    pw = 32 // bits
    N, K = q.shape
    G = zeros.shape[0]
    qt = np.zeros((((K + pw - 1) // pw) * pw, N), dtype=np.uint64)
    qt[:K] = q.T.astype(np.uint64)
    qweight = np.zeros((qt.shape[0] // pw, N), dtype=np.uint64)
    for j in range(pw):
        qweight |= qt[j::pw] << np.uint64(bits * j)
    z = np.zeros((G, ((N + pw - 1) // pw) * pw), dtype=np.int64)
    z[:, :N] = zeros.astype(np.int64) - 1
    assert (z[:, :N] >= 0).all(), "v1 cannot store a zero point of 0"
    z = z.astype(np.uint64)
    qzeros = np.zeros((G, z.shape[1] // pw), dtype=np.uint64)
    for j in range(pw):
        qzeros |= z[:, j::pw] << np.uint64(bits * j)
    return {"qweight": qweight.astype(np.uint32).view(np.int32),
            "qzeros": qzeros.astype(np.uint32).view(np.int32),
            "scales": scales.astype(np.float16),
            "g_idx": g_idx.astype(np.int32)}


# ---- test data ---------------------------------------------------------------------------
def make_layer(rng, N, K, T, n_outliers=4, n_dead=0, odd_rows=False):
    """Correlated Gaussian activations with a few outlier channels; Gaussian weights with
    varied row scales. Returns X (T, K) float32, W (N, K) float32."""
    A = rng.standard_normal((K, K)) / np.sqrt(K) + np.eye(K)
    chan = np.exp(0.5 * rng.standard_normal(K))
    X = (rng.standard_normal((T, K)) @ A) * chan
    out = rng.choice(K, n_outliers, replace=False)
    X[:, out] *= 20.0
    if n_dead:
        dead = rng.choice(np.setdiff1d(np.arange(K), out), n_dead, replace=False)
        X[:, dead] = 0.0
    W = rng.standard_normal((N, K)) * 0.02 * np.exp(0.3 * rng.standard_normal((N, 1)))
    if odd_rows:
        W[1] = 0.0                        # all-zero row: grid -1..+1
        W[2] = np.abs(W[2])               # all-positive row: sym quirk / asym zero 0
    return X.astype(np.float32), W.astype(np.float32)


CASES = [
    # name, N, K, T, bits, group, sym, act_order, static_groups, n_dead, odd_rows
    ("plain_g128_k172", 64, 172, 384, 4, 128, True, False, False, 0, True),
    ("actorder_g32_k172", 48, 172, 384, 4, 32, True, True, False, 2, False),
    ("static_actorder_g64_k256", 64, 256, 384, 4, 64, True, True, True, 0, False),
    ("asym_g128_k172", 48, 172, 384, 4, 128, False, False, False, 0, True),
    ("asym_actorder_g64_k256", 64, 256, 384, 4, 64, False, True, False, 1, False),
    ("perchannel_actorder_k96", 32, 96, 256, 4, -1, True, True, False, 3, False),
    # MSE grid search (mse=True)
    ("mse_g128_k172", 64, 172, 384, 4, 128, True, False, False, 0, True),
    ("mse_asym_static_actorder_g64_k256", 48, 256, 384, 4, 64, False, True, True, 1, False),
    ("mse_asym_perchannel_k96", 32, 96, 256, 4, -1, False, False, False, 0, True),
]


def write_fixtures():
    os.makedirs(OUT_DIR, exist_ok=True)
    dtype = torch.float64
    for ci, (name, N, K, T, bits, group, sym, act, static, n_dead, odd) in enumerate(CASES):
        seed = 1000 + ci
        rng = np.random.default_rng(seed)
        X, W = make_layer(rng, N, K, T, n_dead=n_dead, odd_rows=odd)
        # batches of 64 tokens per sequence, 1..3 sequences per add_batch call
        seqs, rows, t = [], [], 0
        while t < T:
            m = int(rng.integers(1, 4))
            m = min(m, (T - t) // 64)
            seqs.append(m)
            rows.append(64 * m)
            t += 64 * m
        hs = Hessian(K, dtype)
        t = 0
        for m, r in zip(seqs, rows):
            hs.add_batch(torch.from_numpy(X[t:t + r]), m)
            t += r
        mse = name.startswith("mse_")
        res = gptq(torch.from_numpy(W).to(dtype), hs.H, bits, group, sym, act, static, mse=mse)
        rq = rtn(torch.from_numpy(W).to(dtype), bits, group, sym, mse)
        t = {"x": X, "w": W, "batch_rows": np.array(rows, np.int64),
             "batch_seqs": np.array(seqs, np.int64), "h": hs.H.numpy(),
             "q": res["q"].numpy().astype(np.int32), "tie": res["tie"].numpy().astype(np.float32),
             "scale": res["scale"].numpy(), "zero": res["zero"].numpy().astype(np.int32),
             "g_idx": res["g_idx"].numpy().astype(np.int32), "perm": res["perm"].numpy(),
             "loss": np.array([res["loss"]], np.float64),
             "rtn_q": rq.numpy().astype(np.int32)}
        if K > 200:
            del t["h"]  # keep the fixture small; the K=172 cases check the Hessian
        meta = {"tool": "tools/gptq_ref.py", "torch": torch.__version__, "numpy": np.__version__,
                "seed": str(seed), "dtype": "float64", "bits": str(bits), "group": str(group),
                "sym": str(int(sym)), "act_order": str(int(act)), "static_groups": str(int(static)),
                "percdamp": "0.01", "blocksize": "128", "n_dead": str(n_dead),
                "mse": str(int(mse))}
        save_file(t, f"{OUT_DIR}/{name}.safetensors", metadata=meta)
        ties = int((res["tie"] < 1e-9).sum())
        print(f"{name}: loss {res['loss']:.6g} ties {ties}")
    write_pack_fixtures()


def write_pack_fixtures():
    """Checkpoint tensors packed here from codes made here, plus dequant_ref's dequantization:
    the C packer/unpacker/dequantizer are checked against them."""
    for name, N, K, group, sym, act, seed, bits in (
            ("pack_sym_actorder_g32", 64, 256, 32, True, True, 7, 4),
            ("pack_asym_g128_k384", 40, 384, 128, False, False, 8, 4),
            ("pack_perchannel", 24, 128, -1, True, False, 9, 4),
            ("pack_8bit_asym_g64", 24, 192, 64, False, False, 10, 8),
            ("pack_2bit_sym_actorder_g32", 32, 128, 32, True, True, 11, 2)):
        rng = np.random.default_rng(seed)
        G = 1 if group == -1 else (K + group - 1) // group
        top = 2 ** bits
        q = rng.integers(0, top, (N, K))
        if sym:
            zeros = np.full((G, N), top // 2)
        else:
            zeros = rng.integers(1, top, (G, N))
        scales = (np.abs(rng.standard_normal((G, N))) * 0.01 + 1e-3).astype(np.float16)
        if act:
            perm = rng.permutation(K)
            g_idx = np.argsort(perm) // group
        else:
            g_idx = np.arange(K) // (K if group == -1 else group)
        t = {f"layer.{k}": v for k, v in pack_v1(q, zeros, scales, g_idx, bits).items()}
        deq = dequant_ref.dequantize(t["layer.qweight"], t["layer.qzeros"], t["layer.scales"],
                                     t["layer.g_idx"], bits=bits)
        t["q"] = q.astype(np.int32)
        t["zero"] = zeros.astype(np.int32)
        t["dequant"] = deq
        meta = {"tool": "tools/gptq_ref.py + tools/dequant_ref.py", "numpy": np.__version__,
                "seed": str(seed), "bits": str(bits), "group": str(group), "sym": str(int(sym)),
                "desc_act": str(int(act)), "in_features": str(K), "out_features": str(N)}
        save_file(t, f"{OUT_DIR}/{name}.safetensors", metadata=meta)
        print(f"{name}: packed {N}x{K}")


def bench(args):
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    N, K = args.rows, args.cols
    X, W = make_layer(rng, N, K, 4096)
    Xt = torch.from_numpy(X)
    dt = torch.float32 if args.dtype == "float32" else torch.float64
    hs = Hessian(K, dt)
    c0 = time.process_time()
    t0 = time.time()
    for s in range(args.seqs):  # one add_batch per sequence, as llama.py feeds them
        i = (s * args.seq_len) % (4096 - args.seq_len + 1)
        hs.add_batch(Xt[i:i + args.seq_len], 1)
    t1 = time.time()
    c1 = time.process_time()
    res = gptq(torch.from_numpy(W).to(dt), hs.H, 4, args.group, True, args.act_order, False)
    t2 = time.time()
    c2 = time.process_time()
    print(f"torch {torch.__version__} threads {args.threads} dtype {args.dtype}: W ({N}, {K}), "
          f"{args.seqs}x{args.seq_len} tokens: hessian {t1 - t0:.3f} s (cpu {c1 - c0:.3f} s), "
          f"gptq {t2 - t1:.3f} s (cpu {c2 - c1:.3f} s), loss {res['loss']:.6g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fixtures")
    b = sub.add_parser("bench")
    b.add_argument("--rows", type=int, default=1536)
    b.add_argument("--cols", type=int, default=576)
    b.add_argument("--seqs", type=int, default=128)
    b.add_argument("--seq-len", type=int, default=512)
    b.add_argument("--group", type=int, default=128)
    b.add_argument("--act-order", action="store_true")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    a = ap.parse_args()
    if a.cmd == "fixtures":
        write_fixtures()
    else:
        bench(a)


if __name__ == "__main__":
    main()
