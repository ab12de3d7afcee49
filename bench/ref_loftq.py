#!/usr/bin/env python3
"""The bench's reference: PEFT's LoftQ (NFQuantizer + loftq_init) with an exact SVD, in numpy.

Written for this project and checked against ../shared/tools/ref_loftq.py and the
reference fixtures by bench/check_ref.py.  Everything is float32, as in PEFT:
  - 'nf': block absmax scale, NormalFloat table (bitsandbytes NF4 for 4 bits, otherwise
    PEFT's create_normal_map(offset=0.9677083, symmetric=False));
  - 'uniform': block scale = mean + 2.5 * std (unbiased), table linspace(-1, 1, 2^b);
  - nearest table entry, the lower index on ties (argmin semantics);
  - LoftQ: T times Q = quantize(W - L R); L R = best rank-r approximation of W - Q by a full
    SVD, split as L = U sqrt(S) (lora_B, out x r), R = sqrt(S) Vh (lora_A, r x in).

Used by the bench as a subprocess:
  python3 bench/ref_loftq.py --input W.npy|W.f32 [--shape ROWS,COLS] --bits 2 --rank 16
      --iters 5 [--method nf|uniform] [--block-size 64] [--save OUT.npz]
prints one JSON line: {"seconds", "svd_seconds", "quant_seconds", "rel_err": [...],
"qlora_rel_err", "numpy", "threads"}.  A raw input (.f32 / .bin) is little-endian float32,
row-major, and needs --shape.
"""
import argparse
import json
import os
import sys
import time
from statistics import NormalDist

import numpy as np

NF_OFFSET = 0.9677083
# bitsandbytes' NF4 code (functional.py), which PEFT uses for 4 bits.
NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


def _quantiles(lo, hi, count):
    """Normal quantiles of count float32-rounded points from lo to hi (torch.linspace is float32)."""
    pts = np.linspace(lo, hi, count).astype(np.float32)
    inv = NormalDist().inv_cdf
    return [inv(float(p)) for p in pts]


def nf_table(bits):
    if bits == 4:
        return NF4.copy()
    half = 2 ** bits // 2
    positive = _quantiles(NF_OFFSET, 0.5, half + 1)[:-1]       # one more positive level
    negative = [-x for x in _quantiles(NF_OFFSET, 0.5, half)[:-1]]
    t = np.sort(np.array(positive + [0.0] + negative, dtype=np.float32))
    return (t / t.max()).astype(np.float32)


def uniform_table(bits):
    return np.linspace(-1.0, 1.0, 2 ** bits).astype(np.float32)


def table_for(method, bits):
    return nf_table(bits) if method == "nf" else uniform_table(bits)


def block_scales(blocks, method):
    if method == "nf":
        return np.max(np.abs(blocks), axis=1)
    mean = blocks.mean(axis=1, dtype=np.float32)
    std = blocks.std(axis=1, ddof=1, dtype=np.float32)
    return (mean + np.float32(2.5) * std).astype(np.float32)


def quantize(w, table, method, block):
    """Blockwise quantization of the row-major flattened w -> (codes u8, scales f32, dequantized f32)."""
    if w.size % block:
        raise ValueError(f"matrix size {w.size} is not a multiple of the block size {block}")
    blocks = np.ascontiguousarray(w, dtype=np.float32).reshape(-1, block)
    scales = block_scales(blocks, method)
    safe = np.where(scales == 0, np.float32(1), scales).astype(np.float32)
    codes = np.empty(blocks.shape, dtype=np.uint8)
    # argmin over |x/scale - level| returns the first (lowest) index on ties, as torch does;
    # chunked so the (elements x levels) distance array stays ~64 MB.
    rows = max(1, (1 << 24) // (block * len(table)))
    for start in range(0, blocks.shape[0], rows):
        x = blocks[start:start + rows] / safe[start:start + rows, None]
        dist = np.abs(x[..., None] - table[None, None, :])
        codes[start:start + rows] = np.argmin(dist, axis=2)
    deq = table[codes] * scales[:, None]
    return codes.reshape(-1), scales, deq.astype(np.float32).reshape(w.shape)


def rel(num, wnorm):
    return float(np.linalg.norm(num.astype(np.float64)) / wnorm)


def loftq(w, bits, rank, iters, method="nf", block=64):
    w = np.asarray(w, dtype=np.float32)
    table = table_for(method, bits)
    wnorm = float(np.linalg.norm(w.astype(np.float64)))
    t0 = time.perf_counter()
    tq = tsvd = 0.0
    res = w
    errs = []
    for _ in range(iters):
        a = time.perf_counter()
        codes, scales, q = quantize(res, table, method, block)
        b = time.perf_counter()
        u, s, vh = np.linalg.svd(w - q, full_matrices=False)
        c = time.perf_counter()
        tq += b - a
        tsvd += c - b
        root = np.sqrt(s[:rank]).astype(np.float32)
        lora_b = (u[:, :rank] * root[None, :]).astype(np.float32)
        lora_a = (root[:, None] * vh[:rank]).astype(np.float32)
        lr = lora_b @ lora_a
        res = w - lr
        errs.append(rel(w - q - lr, wnorm))
    seconds = time.perf_counter() - t0
    qlora = rel(w - quantize(w, table, method, block)[2], wnorm)
    return dict(codes=codes, scales=scales, q=q, lora_a=lora_a, lora_b=lora_b, rel_err=errs,
                qlora_rel_err=qlora, seconds=seconds, svd_seconds=tsvd, quant_seconds=tq)


def load_matrix(path, shape):
    if path.endswith(".npy"):
        w = np.load(path)
    else:
        if not shape:
            raise ValueError(f"{path}: a raw float32 file needs --shape ROWS,COLS")
        w = np.fromfile(path, dtype="<f4").reshape(shape)
    if w.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D matrix, got shape {w.shape}")
    return w.astype(np.float32, copy=False)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--shape", type=lambda s: tuple(int(x) for x in s.split(",")))
    p.add_argument("--bits", type=int, required=True, choices=[2, 3, 4, 8])
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--iters", type=int, required=True)
    p.add_argument("--method", default="nf", choices=["nf", "normal", "uniform"])
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--save", help="also write codes, scales, q, lora_A, lora_B to this .npz")
    a = p.parse_args(argv)
    method = "nf" if a.method == "normal" else a.method
    try:
        w = load_matrix(a.input, a.shape)
        r = loftq(w, a.bits, a.rank, a.iters, method, a.block_size)
    except (ValueError, OSError) as e:
        print(f"ref_loftq: {e}", file=sys.stderr)
        return 2
    if a.save:
        np.savez(a.save, codes=r["codes"], scales=r["scales"], q=r["q"], lora_A=r["lora_a"], lora_B=r["lora_b"])
    out = {k: r[k] for k in ("seconds", "svd_seconds", "quant_seconds", "rel_err", "qlora_rel_err")}
    out["numpy"] = np.__version__
    out["threads"] = os.cpu_count()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
