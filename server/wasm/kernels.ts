// AssemblyScript: the engine's element-wise hot loops, compiled to WebAssembly (SIMD) by
// `node esbuild.mjs`. V8 runs these loops 2–3× slower in JavaScript when the arrays are
// parameters rather than constants; WebAssembly runs them at memory speed. Every pointer is
// a byte offset into this module's memory (see server/src/kernels/kernels.ts, which owns
// the layout). Results are bit-identical to the JavaScript definitions in quant/quantize.ts:
// codes and values use the same float32 rules, and sums accumulate in float64.

const CELLS: i32 = 4096;
const HALF_CELLS: f64 = 2048;
const AMBIGUOUS: u16 = 0xffff;

@inline function f32At(p: usize, i: i32): f32 { return load<f32>(p + (<usize>i << 2)); }
@inline function setF32(p: usize, i: i32, v: f32): void { store<f32>(p + (<usize>i << 2), v); }

/** max |x| over each block of `blockSize` (the last block may be shorter). */
export function absMaxScales(x: usize, n: i32, blockSize: i32, scales: usize): void {
  let b = 0;
  for (let start = 0; start < n; start += blockSize, b++) {
    const end = min(n, start + blockSize);
    let i = start;
    let m4 = f32x4.splat(0);
    for (; i + 4 <= end; i += 4) m4 = f32x4.max(m4, f32x4.abs(v128.load(x + (<usize>i << 2))));
    let m = max(max(f32x4.extract_lane(m4, 0), f32x4.extract_lane(m4, 1)), max(f32x4.extract_lane(m4, 2), f32x4.extract_lane(m4, 3)));
    for (; i < end; i++) m = max(m, abs(f32At(x, i)));
    setF32(scales, b, m);
  }
}

/** Index of the table entry nearest v: float32 distances, the lower index on ties. */
function nearestCode(table: usize, len: i32, v: f32): i32 {
  const last = len - 1;
  if (!(v > f32At(table, 0))) return 0;
  if (v >= f32At(table, last)) return last;
  let lo = 0, hi = last;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (f32At(table, mid) <= v) lo = mid; else hi = mid;
  }
  const dl = v - f32At(table, lo);
  const dh = f32At(table, hi) - v;
  return dh < dl ? hi : lo;
}

/** Codes and dequantized values from per-block scales. `cells` is the O(1) lookup grid of
 *  quant/quantize.ts (CELLS + 1 u16 entries over [-1, 1], AMBIGUOUS near a midpoint). */
export function assignCodes(x: usize, n: i32, blockSize: i32, scales: usize, table: usize, tableLen: i32, cells: usize, codes: usize, values: usize): void {
  const zeroCode = <u8>nearestCode(table, tableLen, 0);
  let b = 0;
  for (let start = 0; start < n; start += blockSize, b++) {
    const end = min(n, start + blockSize);
    const scale = f32At(scales, b);
    if (scale == 0) {
      for (let i = start; i < end; i++) { store<u8>(codes + <usize>i, zeroCode); setF32(values, i, 0); }
      continue;
    }
    const toCell = HALF_CELLS / <f64>scale;
    for (let i = start; i < end; i++) {
      const xi = f32At(x, i);
      const v = <f64>xi * toCell + HALF_CELLS;
      const cell = v > 0 ? (v < <f64>CELLS ? <i32>v : CELLS) : 0;
      let c = <i32>load<u16>(cells + (<usize>cell << 1));
      if (c == AMBIGUOUS) c = nearestCode(table, tableLen, xi / scale);
      store<u8>(codes + <usize>i, <u8>c);
      setF32(values, i, f32At(table, c) * scale);
    }
  }
}

/** out = a − b; returns Σ out². */
export function difference(a: usize, b: usize, out: usize, n: i32): f64 {
  let s0: f64 = 0, s1: f64 = 0;
  let i = 0;
  for (; i + 2 <= n; i += 2) {
    const d0 = f32At(a, i) - f32At(b, i);
    const d1 = f32At(a, i + 1) - f32At(b, i + 1);
    setF32(out, i, d0); setF32(out, i + 1, d1);
    s0 += <f64>d0 * <f64>d0; s1 += <f64>d1 * <f64>d1;
  }
  for (; i < n; i++) { const d = f32At(a, i) - f32At(b, i); setF32(out, i, d); s0 += <f64>d * <f64>d; }
  return s0 + s1;
}

/** Σ (a − b − c)², the error of a low-rank correction c to the residual a − b. */
export function errorOf(a: usize, b: usize, c: usize, n: i32): f64 {
  let s0: f64 = 0, s1: f64 = 0;
  let i = 0;
  for (; i + 2 <= n; i += 2) {
    const d0 = <f64>f32At(a, i) - <f64>f32At(b, i) - <f64>f32At(c, i);
    const d1 = <f64>f32At(a, i + 1) - <f64>f32At(b, i + 1) - <f64>f32At(c, i + 1);
    s0 += d0 * d0; s1 += d1 * d1;
  }
  for (; i < n; i++) { const d = <f64>f32At(a, i) - <f64>f32At(b, i) - <f64>f32At(c, i); s0 += d * d; }
  return s0 + s1;
}

/** Σ x² in float64. */
export function sumSquares(x: usize, n: i32): f64 {
  let s0: f64 = 0, s1: f64 = 0;
  let i = 0;
  for (; i + 2 <= n; i += 2) { const a = <f64>f32At(x, i), b = <f64>f32At(x, i + 1); s0 += a * a; s1 += b * b; }
  for (; i < n; i++) { const a = <f64>f32At(x, i); s0 += a * a; }
  return s0 + s1;
}

/** The LoftQ step after an SVD: returns Σ (residual − lowRank)², and (when target ≠ 0)
 *  writes the next quantizer input target = w − lowRank. */
export function applyLowRank(residual: usize, lowRank: usize, w: usize, target: usize, n: i32): f64 {
  let s0: f64 = 0, s1: f64 = 0;
  let i = 0;
  for (; i + 2 <= n; i += 2) {
    const l0 = f32At(lowRank, i), l1 = f32At(lowRank, i + 1);
    const d0 = <f64>f32At(residual, i) - <f64>l0, d1 = <f64>f32At(residual, i + 1) - <f64>l1;
    s0 += d0 * d0; s1 += d1 * d1;
    if (target) { setF32(target, i, f32At(w, i) - l0); setF32(target, i + 1, f32At(w, i + 1) - l1); }
  }
  for (; i < n; i++) {
    const l = f32At(lowRank, i);
    const d = <f64>f32At(residual, i) - <f64>l;
    s0 += d * d;
    if (target) setF32(target, i, f32At(w, i) - l);
  }
  return s0 + s1;
}

/** dst (cols × rows) = srcᵀ, in 32×32 tiles that stay in cache. */
export function transpose(src: usize, rows: i32, cols: i32, dst: usize): void {
  const T = 32;
  for (let i0 = 0; i0 < rows; i0 += T) {
    const i1 = min(rows, i0 + T);
    for (let j0 = 0; j0 < cols; j0 += T) {
      const j1 = min(cols, j0 + T);
      for (let i = i0; i < i1; i++) {
        const row = src + (<usize>i * <usize>cols << 2);
        for (let j = j0; j < j1; j++) store<f32>(dst + ((<usize>j * <usize>rows + <usize>i) << 2), load<f32>(row + (<usize>j << 2)));
      }
    }
  }
}
