// Blockwise quantization over the row-major flattened matrix, bit-exact with PEFT's
// NFQuantizer as restated in numpy (float32 throughout):
//   nf:      scale = max |x| over the block
//   uniform: scale = mean + 2.5 · std (unbiased), with numpy's float32 pairwise sums
//   code   = the nearest table entry to fround(x / scale), ties to the lower index
//   value  = fround(table[code] · scale)
// A block of zeros (scale 0) gives code of the entry nearest 0 and value 0, never NaN.
// When the size is not a multiple of the block size, the last block is shorter and gets
// its own scale from its own elements (a 1-element uniform block has std 0).

import { QUANTIZERS } from '../registry';
import type { Quantizer } from '../registry';
import { F32Region, U8Region, Workspace, withWorkspace } from '../kernels/kernels';
import { inParts, KernelPool } from '../kernels/pool';

const fr = Math.fround;

/** numpy's float32 pairwise summation (npy pairwise_sum, PW_BLOCKSIZE 128, 8 accumulators). */
export function pairwiseSumF32(a: Float32Array, start: number, n: number): number {
  if (n < 8) {
    let r = 0;
    for (let i = 0; i < n; i++) r = fr(r + a[start + i]);
    return r;
  }
  if (n <= 128) {
    let r0 = a[start],
      r1 = a[start + 1],
      r2 = a[start + 2],
      r3 = a[start + 3];
    let r4 = a[start + 4],
      r5 = a[start + 5],
      r6 = a[start + 6],
      r7 = a[start + 7];
    const full = n - (n % 8);
    let i = 8;
    for (; i < full; i += 8) {
      const p = start + i;
      r0 = fr(r0 + a[p]);
      r1 = fr(r1 + a[p + 1]);
      r2 = fr(r2 + a[p + 2]);
      r3 = fr(r3 + a[p + 3]);
      r4 = fr(r4 + a[p + 4]);
      r5 = fr(r5 + a[p + 5]);
      r6 = fr(r6 + a[p + 6]);
      r7 = fr(r7 + a[p + 7]);
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

/** Nearest-code lookup in O(1), run by the assignCodes kernel: a grid of CELLS cells over
 *  [-1, 1] (the first and last reaching to ∓∞) holding, per cell, its code — or AMBIGUOUS
 *  when a midpoint between two table entries lies within 1e-6 of the cell. Outside those
 *  cells the code is decided by a wide margin, so the kernel's x·(CELLS/2)/scale (a few ulp
 *  from the reference's fround(x / scale)) picks it safely; inside them the exact float32
 *  quotient and the reference's rule decide (where rounding can turn a near-miss into a
 *  tie, and ties go to the lower index). */
class CodeLookup {
  static readonly CELLS = 4096;
  static readonly AMBIGUOUS = 0xffff;
  readonly mids: Float64Array;
  /** CELLS + 1 entries: index CELLS is v = 1 exactly. */
  readonly cells: Uint16Array;
  constructor(readonly table: Float32Array) {
    const n = table.length,
      CELLS = CodeLookup.CELLS,
      half = CELLS / 2;
    this.mids = new Float64Array(n - 1);
    for (let j = 0; j < n - 1; j++) this.mids[j] = (table[j] + table[j + 1]) / 2;
    this.cells = new Uint16Array(CELLS + 1);
    for (let cell = 0; cell <= CELLS; cell++) {
      const lo = cell === 0 ? -Infinity : -1 + cell / half;
      const hi = cell >= CELLS - 1 ? Infinity : -1 + (cell + 1) / half;
      let code = 0,
        ambiguous = false;
      for (const m of this.mids) {
        if (m >= lo - 1e-6 && m <= hi + 1e-6) ambiguous = true;
        if (m < lo) code++;
      }
      this.cells[cell] = ambiguous ? CodeLookup.AMBIGUOUS : code;
    }
  }
}

const lookups = new WeakMap<Float32Array, CodeLookup>();
function lookupFor(table: Float32Array): CodeLookup {
  let l = lookups.get(table);
  if (!l) lookups.set(table, (l = new CodeLookup(table)));
  return l;
}

export interface QuantizedRegions {
  codes: U8Region;
  scales: F32Region;
  values: F32Region;
}

/** Quantizes a matrix held in kernel memory (the engine's hottest code: six times per
 *  matrix); codes, scales and values land in `out`'s regions. */
export function quantizeRegion(
  ws: Workspace,
  x: F32Region,
  table: Float32Array,
  quantizer: Quantizer,
  blockSize: number,
  out: QuantizedRegions,
): void {
  const n = x.length;
  if (QUANTIZERS[quantizer].scale === 'absmax') ws.k.absMaxScales(x.ptr, n, blockSize, out.scales.ptr);
  else {
    const xs = x.view(),
      scales = out.scales.view();
    for (let b = 0; b < scales.length; b++)
      scales[b] = uniformScale(xs, b * blockSize, Math.min(blockSize, n - b * blockSize));
  }
  assignCodes(ws, x, blockSize, out.scales, table, out);
}

function assignCodes(
  ws: Workspace,
  x: F32Region,
  blockSize: number,
  scales: F32Region,
  table: Float32Array,
  out: { codes: U8Region; values: F32Region },
): void {
  const args = assignCodesArgs(ws, x, blockSize, scales, table, out);
  ws.k.assignCodes(...args(0, x.length));
}

/** The assignCodes kernel's arguments for elements first … last−1 (first on a block boundary). */
function assignCodesArgs(
  ws: Workspace,
  x: F32Region,
  blockSize: number,
  scales: F32Region,
  table: Float32Array,
  out: { codes: U8Region; values: F32Region },
) {
  const tableRegion = ws.f32(table.length, table);
  const cells = ws.u16(CodeLookup.CELLS + 1, lookupFor(table).cells);
  return (first: number, last: number) =>
    [
      x.ptr + 4 * first,
      last - first,
      blockSize,
      scales.ptr + 4 * (first / blockSize),
      tableRegion.ptr,
      table.length,
      cells.ptr,
      out.codes.ptr + first,
      out.values.ptr + 4 * first,
    ] as const;
}

/** quantizeRegion of x, and residual = w − values (the same shape); returns Σ residual².
 *  With NF's absmax scales, one fused pass (quantizeAbsMaxResidual); with a kernel pool (the
 *  split backend's workers) the passes are split by whole blocks over this thread and the
 *  helpers. The same codes, scales and values as quantizeRegion. */
export async function quantizeResidual(
  ws: Workspace,
  x: F32Region,
  table: Float32Array,
  quantizer: Quantizer,
  blockSize: number,
  out: QuantizedRegions,
  w: F32Region,
  residual: F32Region,
  pool?: KernelPool,
): Promise<number> {
  const n = x.length;
  if (QUANTIZERS[quantizer].scale !== 'absmax') {
    quantizeRegion(ws, x, table, quantizer, blockSize, out);
    return inParts(ws, pool, n, 4, 'difference', (a, b) => [
      w.ptr + 4 * a,
      out.values.ptr + 4 * a,
      residual.ptr + 4 * a,
      b - a,
    ]);
  }
  const args = assignCodesArgs(ws, x, blockSize, out.scales, table, out);
  return inParts(ws, pool, n, blockSize, 'quantizeAbsMaxResidual', (a, b) => [
    ...args(a, b),
    w.ptr + 4 * a,
    residual.ptr + 4 * a,
  ]);
}

export function quantizedRegions(ws: Workspace, size: number, blockSize: number): QuantizedRegions {
  return { codes: ws.u8(size), scales: ws.f32(blockCount(size, blockSize)), values: ws.f32(size) };
}

export function quantize(x: Float32Array, table: Float32Array, quantizer: Quantizer, blockSize: number): Quantized {
  return withWorkspace((ws) => {
    const out = quantizedRegions(ws, x.length, blockSize);
    quantizeRegion(ws, ws.f32(x.length, x), table, quantizer, blockSize, out);
    return { codes: out.codes.view().slice(), scales: out.scales.view().slice(), values: out.values.view().slice() };
  });
}

/** Dequantizes codes + per-block scales. */
export function dequantize(
  codes: Uint8Array,
  scales: Float32Array,
  table: Float32Array,
  blockSize: number,
): Float32Array {
  return dequantizeInto(codes, scales, table, blockSize, new Float32Array(codes.length));
}

/** out ← fround(table[code] · scale), block by block: the values quantizeRegion gives (a block
 *  of scale 0 is +0, as the kernel writes it, never table[code]·0 = −0). */
export function dequantizeInto(
  codes: Uint8Array,
  scales: Float32Array,
  table: Float32Array,
  blockSize: number,
  out: Float32Array,
): Float32Array {
  for (let b = 0, i = 0; i < codes.length; b++) {
    const scale = scales[b],
      end = Math.min(codes.length, i + blockSize);
    if (scale === 0) out.fill(0, i, (i = end));
    for (; i < end; i++) out[i] = fr(table[codes[i]] * scale);
  }
  return out;
}

/** The kernel's codes for values already divided by their scale (every scale 1): the O(1)
 *  lookup and its exact fallback, as `quantize` runs them; exported for tests. */
export function codesAtUnitScale(table: Float32Array, v: Float32Array): Uint8Array {
  return withWorkspace((ws) => {
    const out = { codes: ws.u8(v.length), values: ws.f32(v.length) };
    assignCodes(ws, ws.f32(v.length, v), v.length, ws.f32(1, Float32Array.of(1)), table, out);
    return out.codes.view().slice();
  });
}
