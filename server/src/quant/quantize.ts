// Blockwise quantization over the row-major flattened matrix, bit-exact with PEFT's
// NFQuantizer as restated in numpy (float32 throughout):
//   nf:      scale = max |x| over the block
//   uniform: scale = mean + 2.5 · std (unbiased), with numpy's float32 pairwise sums
//   code   = the nearest table entry to fround(x / scale), ties to the lower index
//   value  = fround(table[code] · scale)
// A block of zeros (scale 0) gives code of the entry nearest 0 and value 0, never NaN.
// When the size is not a multiple of the block size, the last block is shorter and gets
// its own scale from its own elements (a 1-element uniform block has std 0).

import type { Quantizer } from '../protocol/lsp_ext';

const fr = Math.fround;

/** numpy's float32 pairwise summation (npy pairwise_sum, PW_BLOCKSIZE 128, 8 accumulators). */
export function pairwiseSumF32(a: Float32Array, start: number, n: number): number {
  if (n < 8) {
    let r = 0;
    for (let i = 0; i < n; i++) r = fr(r + a[start + i]);
    return r;
  }
  if (n <= 128) {
    let r0 = a[start], r1 = a[start + 1], r2 = a[start + 2], r3 = a[start + 3];
    let r4 = a[start + 4], r5 = a[start + 5], r6 = a[start + 6], r7 = a[start + 7];
    const full = n - (n % 8);
    let i = 8;
    for (; i < full; i += 8) {
      const p = start + i;
      r0 = fr(r0 + a[p]); r1 = fr(r1 + a[p + 1]); r2 = fr(r2 + a[p + 2]); r3 = fr(r3 + a[p + 3]);
      r4 = fr(r4 + a[p + 4]); r5 = fr(r5 + a[p + 5]); r6 = fr(r6 + a[p + 6]); r7 = fr(r7 + a[p + 7]);
    }
    let res = fr(fr(fr(r0 + r1) + fr(r2 + r3)) + fr(fr(r4 + r5) + fr(r6 + r7)));
    for (; i < n; i++) res = fr(res + a[start + i]);
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return fr(pairwiseSumF32(a, start, n2) + pairwiseSumF32(a, start + n2, n - n2));
}

const scratch = { buf: new Float32Array(256) };

/** mean + 2.5·std(ddof=1) of a block, in numpy float32 arithmetic. */
export function uniformScale(x: Float32Array, start: number, n: number): number {
  const mean = fr(pairwiseSumF32(x, start, n) / n);
  if (n < 2) return mean;
  if (scratch.buf.length < n) scratch.buf = new Float32Array(n);
  const sq = scratch.buf;
  for (let i = 0; i < n; i++) {
    const d = fr(x[start + i] - mean);
    sq[i] = fr(d * d);
  }
  const variance = fr(pairwiseSumF32(sq, 0, n) / (n - 1));
  return fr(mean + fr(2.5 * fr(Math.sqrt(variance))));
}

export function absMaxScale(x: Float32Array, start: number, n: number): number {
  let m = 0;
  for (let i = start; i < start + n; i++) {
    const v = Math.abs(x[i]);
    if (v > m) m = v;
  }
  return m;
}

export interface Quantized {
  codes: Uint8Array;
  scales: Float32Array;
  /** Dequantized values, same layout as the input. */
  values: Float32Array;
}

export function blockCount(size: number, blockSize: number): number {
  return Math.ceil(size / blockSize);
}

/** Index of the table entry nearest v (float32 distances, first index on ties). */
export function nearestCode(table: Float32Array, v: number): number {
  const last = table.length - 1;
  if (!(v > table[0])) return 0;
  if (v >= table[last]) return last;
  let lo = 0, hi = last; // table[lo] < v < table[hi] or v === table[lo]
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (table[mid] <= v) lo = mid; else hi = mid;
  }
  const dl = fr(v - table[lo]);
  const dh = fr(table[hi] - v);
  return dh < dl ? hi : lo;
}

/** Nearest-code lookup in O(1): midpoints between table entries (exact in float64) and a
 *  grid over [-1, 1] giving, per cell, the first code whose upper midpoint lies at or above
 *  the cell. Values within 1e-6 of a midpoint take the exact float32-distance rule, where
 *  rounding can turn a near-miss into a tie (ties go to the lower index). */
class CodeLookup {
  static readonly CELLS = 4096;
  readonly mids: Float64Array;
  readonly start: Uint16Array;
  constructor(readonly table: Float32Array) {
    const n = table.length;
    this.mids = new Float64Array(n);
    for (let j = 0; j < n - 1; j++) this.mids[j] = (table[j] + table[j + 1]) / 2;
    this.mids[n - 1] = Infinity;
    this.start = new Uint16Array(CodeLookup.CELLS + 1);
    let c = 0;
    for (let b = 0; b <= CodeLookup.CELLS; b++) {
      const lo = -1 + (2 * b) / CodeLookup.CELLS;
      while (this.mids[c] < lo) c++;
      this.start[b] = c;
    }
  }

  /** The code of v, or -1 when v lies within 1e-6 of a midpoint (the caller then applies
   *  the exact rule to the exactly divided value). */
  approx(v: number): number {
    let b = Math.floor((v + 1) * (CodeLookup.CELLS / 2));
    b = b < 0 ? 0 : b > CodeLookup.CELLS ? CodeLookup.CELLS : b;
    const mids = this.mids;
    let c = v < -1 ? 0 : this.start[b];
    while (v > mids[c]) c++;
    if ((c > 0 && v - mids[c - 1] < 1e-6) || mids[c] - v < 1e-6) return -1;
    return c;
  }

  code(v: number): number {
    let b = Math.floor((v + 1) * (CodeLookup.CELLS / 2));
    b = b < 0 ? 0 : b > CodeLookup.CELLS ? CodeLookup.CELLS : b;
    const mids = this.mids;
    let c = v < -1 ? 0 : this.start[b];
    while (v > mids[c]) c++;
    // c is the exact-arithmetic nearest (ties → lower). Near a midpoint, defer to the
    // float32 rule the reference uses.
    if ((c > 0 && v - mids[c - 1] < 1e-6) || mids[c] - v < 1e-6) return nearestCode(this.table, v);
    return c;
  }
}

const lookups = new WeakMap<Float32Array, CodeLookup>();
function lookupFor(table: Float32Array): CodeLookup {
  let l = lookups.get(table);
  if (!l) lookups.set(table, (l = new CodeLookup(table)));
  return l;
}

export function quantize(x: Float32Array, table: Float32Array, quantizer: Quantizer, blockSize: number, out?: Quantized): Quantized {
  const n = x.length;
  const blocks = blockCount(n, blockSize);
  const codes = out?.codes ?? new Uint8Array(n);
  const scales = out?.scales ?? new Float32Array(blocks);
  const values = out?.values ?? new Float32Array(n);
  const zeroCode = nearestCode(table, 0);
  const lookup = lookupFor(table);
  for (let b = 0; b < blocks; b++) {
    const start = b * blockSize;
    const len = Math.min(blockSize, n - start);
    const scale = quantizer === 'nf' ? absMaxScale(x, start, len) : uniformScale(x, start, len);
    scales[b] = scale;
    if (scale === 0) {
      for (let i = start; i < start + len; i++) { codes[i] = zeroCode; values[i] = 0; }
      continue;
    }
    // x·(1/scale) is within 2 ulp of fround(x / scale): it decides the code except near a
    // midpoint, where the exact quotient and the reference's float32 rule take over.
    const inv = 1 / scale;
    for (let i = start; i < start + len; i++) {
      let c = lookup.approx(fr(x[i] * inv));
      if (c < 0) c = nearestCode(table, fr(x[i] / scale));
      codes[i] = c;
      values[i] = fr(table[c] * scale);
    }
  }
  return { codes, scales, values };
}

/** Dequantizes codes + per-block scales. */
export function dequantize(codes: Uint8Array, scales: Float32Array, table: Float32Array, blockSize: number): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = fr(table[codes[i]] * scales[Math.floor(i / blockSize)]);
  return out;
}

/** The nearest code by the fast lookup (what `quantize` uses); exported for tests. */
export function fastCode(table: Float32Array, v: number): number {
  return lookupFor(table).code(v);
}
