#!/usr/bin/env python3
"""The bench's reference: PEFT's LoftQ (NFQuantizer + loftq_init) with an exact SVD, in numpy.

Written for this project and checked against ../shared/tools/ref_loftq.py and the
reference fixtures by bench/check_ref.py.  Everything is float32, as in PEFT (and for
'hqq', as hqq 0.2.8.post1 computes on CPU):
  - 'nf': block absmax scale, NormalFloat table (bitsandbytes NF4 for 4 bits, otherwise
    PEFT's create_normal_map(offset=0.9677083, symmetric=False));
  - 'uniform': block scale = mean + 2.5 * std (unbiased), table linspace(-1, 1, 2^b);
  - nearest table entry, the lower index on ties (argmin semantics);
  - 'hqq': HQQ's affine grid (hqq 0.2.8.post1, axis 1, HqqConfig's defaults), restated from its
    definition, not copied: groups = consecutive runs of block-size values of the row-major
    flattened [out, in] matrix; s_inv = fl(fl(1/(max-min)) * (2^b-1)) (torch's int / tensor is
    a reciprocal then a multiply), 1 where |max-min| <= fl32(1e-4), at most 2e4; zero =
    -min * s_inv, rounded half-even for 4 bits (round_zero); then the release's proximal zero
    solver (optimize_weights_proximal_legacy: lp 0.7, beta 10 never updated, 20 steps, stop
    at the first step whose whole-matrix mean |W - W_r| does not fall, keeping that step's
    zero); codes = clamp(rne(W*s_inv + zero), 0, 2^b-1); stored scale = fl(1/s_inv); Q =
    (codes - zero) * scale in float32 (HQQLinear's dequantize at compute dtype float32).
    Every step is float32 as torch's CPU kernels do it, each group's mean summed in torch
    2.6's order for a contiguous row (AVX2: 8 lanes, 4 interleaved accumulators); what is
    not torch's to the last bit: x^-0.3 (numpy's powf, torch's SLEEF pow is within 1 ulp)
    and the early stop's whole-matrix mean (float64 here, rounded to float32; torch's is a
    threaded float32 sum).  check_ref.py measures how close that is on the hqq fixtures
    (optimize=False cases: bit for bit).
  - LoftQ: T times Q = quantize(W - L R); L R = best rank-r approximation of W - Q by a full
    SVD, split as L = U sqrt(S) (lora_B, out x r), R = sqrt(S) Vh (lora_A, r x in).

Used by the bench as a subprocess:
  python3 bench/ref_loftq.py --input W.npy|W.f32 [--shape ROWS,COLS] --bits 2 --rank 16
      --iters 5 [--method nf|uniform|hqq] [--block-size 64] [--save OUT.npz]
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


# ---- HQQ (hqq 0.2.8.post1, axis 1) ---------------------------------------------------------

HQQ_BITS = (1, 2, 3, 4, 8)
F32 = np.float32


def torch_row_sums(x, lanes=8):
    """Sums of the rows of float32 x [rows, n], each in the order torch 2.6's CPU sum reduces a
    contiguous row (SumKernel.cpp vectorized_inner_sum with `lanes`-wide vectors): the row as
    vectors, summed by 4 interleaved vector accumulators (multi_row_sum's cascade of levels of
    16), vectors left over added to the first, the four folded ((a0 + a1) + a2) + a3; then the
    scalar tail from 0, then the lanes one by one.  Every addition is float32; vectorized over
    the rows."""
    rows, n = x.shape
    nvec = n // lanes
    ilp = nvec // 4
    total = np.zeros(rows, dtype=F32)
    for k in range(nvec * lanes, n):
        total = total + x[:, k]
    v = x[:, :nvec * lanes].reshape(rows, nvec, lanes)
    levels = 4
    power = max(4, (int(ilp - 1).bit_length() if ilp > 1 else 0) // levels)
    step, mask = 1 << power, (1 << power) - 1
    acc = np.zeros((levels, 4, rows, lanes), dtype=F32)
    i = 0
    while i + step <= ilp:
        for _ in range(step):
            for k in range(4):
                acc[0, k] = acc[0, k] + v[:, i * 4 + k]
            i += 1
        for j in range(1, levels):
            acc[j] = acc[j] + acc[j - 1]
            acc[j - 1] = 0
            if i & (mask << (j * power)):
                break
    for r in range(i, ilp):
        for k in range(4):
            acc[0, k] = acc[0, k] + v[:, r * 4 + k]
    for j in range(1, levels):
        acc[0] = acc[0] + acc[j]
    p = acc[0]
    for m in range(ilp * 4, nvec):
        p[0] = p[0] + v[:, m]
    lane = ((p[0] + p[1]) + p[2]) + p[3]
    for l in range(lanes):
        total = total + lane[:, l]
    return total


def hqq_scales(groups, bits, round_zero):
    """s_inv and the initial zero per group (the min/max rule with HQQ's guards)."""
    lo = groups.min(axis=1)
    hi = groups.max(axis=1)
    denom = hi - lo
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        s_inv = (F32(1) / denom) * F32(2 ** bits - 1)
    s_inv = np.where(np.abs(denom) <= F32(1e-4), F32(1), s_inv)
    s_inv = np.minimum(s_inv, F32(2e4)).astype(F32)
    zero = (-lo * s_inv).astype(F32)
    if round_zero:
        zero = np.rint(zero)  # half-even, keeps the sign of a zero, as torch.round
    return s_inv, zero


def hqq_codes(groups, s_inv, zero, max_v):
    return np.clip(np.rint(groups * s_inv[:, None] + zero[:, None]), 0, max_v)


CHUNK = 1 << 16  # groups per pass of the solver (4 M values at group 64)


def hqq_proximal(groups, s_inv, zero, max_v, lp_norm=0.7, beta=10.0, kappa=1.01, iters=20, update_beta=False,
                 trace=None):
    """The proximal zero solver (optimize_weights_proximal_legacy of the release; update_beta: hqq
    master's beta *= kappa after each step).  A step, per group, from the zero z it starts with:
    q = clamp(rne(W*s + z)), W_r = (q - z) / s, d = W - W_r, W_e = sign(d) * max(|d| - |d|^(p-1)/beta,
    0), new z = mean(q - (W - W_e) * s); the step's error is mean |d| over the whole matrix.  The
    solver stops after the first step whose error is not below the best so far; the zero of the
    last step taken is kept."""
    expo = F32(lp_norm - 1)
    best = np.inf
    g = groups.shape[1]
    for it in range(iters):
        inv_beta = F32(1.0 / beta)
        new_zero = np.empty_like(zero)
        abs_sum = 0.0
        for a in range(0, groups.shape[0], CHUNK):
            w = groups[a:a + CHUNK]
            s = s_inv[a:a + CHUNK, None]
            z = zero[a:a + CHUNK, None]
            q = np.clip(np.rint(w * s + z), 0, max_v)
            d = w - (q - z) / s
            mag = np.abs(d)
            abs_sum += float(mag.sum(dtype=np.float64))
            with np.errstate(divide="ignore"):
                shrunk = np.maximum(mag - inv_beta * np.power(mag, expo), F32(0)) * np.sign(d)
            new_zero[a:a + CHUNK] = torch_row_sums(q - (w - shrunk) * s) / F32(g)
        zero = new_zero
        if update_beta:
            beta *= kappa
        err = F32(abs_sum / groups.size)
        if trace is not None:
            trace.append(float(err))
        if err < best:
            best = err
        else:
            break
    return zero


def hqq_quantize(w, bits, group, optimize=True, round_zero=None, update_beta=False, trace=None):
    """HQQ's axis-1 quantization of w -> (codes u8 [numel], stored scale f32 [groups], zero f32
    [groups], Q f32 = (codes - zero) * scale in w's shape)."""
    if bits not in HQQ_BITS:
        raise ValueError(f"hqq bits must be one of {HQQ_BITS}: {bits}")
    if w.size % group:
        raise ValueError(f"matrix size {w.size} is not a multiple of the group size {group}")
    groups = np.ascontiguousarray(w, dtype=F32).reshape(-1, group)
    max_v = F32(2 ** bits - 1)
    s_inv, zero = hqq_scales(groups, bits, bits == 4 if round_zero is None else round_zero)
    if optimize:
        zero = hqq_proximal(groups, s_inv, zero, max_v, update_beta=update_beta, trace=trace)
    codes = hqq_codes(groups, s_inv, zero, max_v).astype(np.uint8)
    scale = (F32(1) / s_inv).astype(F32)
    q = (codes.astype(F32) - zero[:, None]) * scale[:, None]
    return codes.reshape(-1), scale, zero, q.astype(F32).reshape(w.shape)


def rel(num, wnorm):
    return float(np.linalg.norm(num.astype(np.float64)) / wnorm)


def quantizer_for(method, bits, block):
    """quantize(x) -> (codes, scales, dequantized) on the method's grid."""
    if method == "hqq":
        def q(x):
            codes, scale, zero, deq = hqq_quantize(x, bits, block)
            return codes, scale, deq
        return q
    table = table_for(method, bits)
    return lambda x: quantize(x, table, method, block)


def loftq(w, bits, rank, iters, method="nf", block=64):
    w = np.asarray(w, dtype=np.float32)
    quant = quantizer_for(method, bits, block)
    wnorm = float(np.linalg.norm(w.astype(np.float64)))
    t0 = time.perf_counter()
    tq = tsvd = 0.0
    res = w
    errs = []
    for _ in range(iters):
        a = time.perf_counter()
        codes, scales, q = quant(res)
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
    qlora = rel(w - quant(w)[2], wnorm)
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
    p.add_argument("--bits", type=int, required=True, choices=[1, 2, 3, 4, 8])
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--iters", type=int, required=True)
    p.add_argument("--method", default="nf", choices=["nf", "normal", "uniform", "hqq"])
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--save", help="also write codes, scales, q, lora_A, lora_B to this .npz")
    a = p.parse_args(argv)
    method = "nf" if a.method == "normal" else a.method
    try:
        if a.bits == 1 and method != "hqq":
            raise ValueError("1 bit is HQQ's only (--method hqq)")
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
