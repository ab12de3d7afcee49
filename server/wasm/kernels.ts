// AssemblyScript: the engine's hot loops, compiled to WebAssembly (SIMD) by `node
// esbuild.mjs` — the element-wise passes over whole matrices and the float64 algebra over
// the SVD's Krylov columns. V8 runs such loops 2–3× slower in JavaScript when the arrays are
// parameters rather than constants; WebAssembly runs them at memory speed. Every pointer is
// a byte offset into this module's memory (server/src/kernels/kernels.ts owns the layout).
// Codes and values follow PEFT's float32 rules exactly; sums accumulate in float64.

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

/** NF (absmax) quantization and the residual in one pass, block by block while the block is
 *  in cache: the scale max |x| (absMaxScales), codes and values (assignCodes), and
 *  residual = w − values; returns Σ residual². Four passes over the matrix were bound by
 *  memory, not arithmetic. */
export function quantizeAbsMaxResidual(x: usize, n: i32, blockSize: i32, scales: usize, table: usize, tableLen: i32, cells: usize, codes: usize, values: usize, w: usize, residual: usize): f64 {
  let s: f64 = 0;
  let b = 0;
  for (let start = 0; start < n; start += blockSize, b++) {
    const len = min(n - start, blockSize);
    const at = <usize>start << 2;
    const scale = scales + (<usize>b << 2);
    absMaxScales(x + at, len, blockSize, scale);
    assignCodes(x + at, len, blockSize, scale, table, tableLen, cells, codes + <usize>start, values + at);
    s += difference(w + at, values + at, residual + at, len);
  }
  return s;
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

/** Σ x² in float64. */
export function sumSquares(x: usize, n: i32): f64 {
  let s0: f64 = 0, s1: f64 = 0;
  let i = 0;
  for (; i + 2 <= n; i += 2) { const a = <f64>f32At(x, i), b = <f64>f32At(x, i + 1); s0 += a * a; s1 += b * b; }
  for (; i < n; i++) { const a = <f64>f32At(x, i); s0 += a * a; }
  return s0 + s1;
}

/** (w − q − acc)² summed over the 4 lanes into two float64 lanes. */
@inline function residualSquares(wv: v128, qv: v128, acc: v128): v128 {
  const lo = f64x2.sub(f64x2.sub(f64x2.promote_low_f32x4(wv), f64x2.promote_low_f32x4(qv)), f64x2.promote_low_f32x4(acc));
  const wh = v128.shuffle<f32>(wv, wv, 2, 3, 0, 1), qh = v128.shuffle<f32>(qv, qv, 2, 3, 0, 1), ah = v128.shuffle<f32>(acc, acc, 2, 3, 0, 1);
  const hi = f64x2.sub(f64x2.sub(f64x2.promote_low_f32x4(wh), f64x2.promote_low_f32x4(qh)), f64x2.promote_low_f32x4(ah));
  return f64x2.add(f64x2.mul(lo, lo), f64x2.mul(hi, hi));
}

/** The epilogue of four columns of one row whose B·A part is `acc`: target ← w − acc, and
 *  the squared error added to s2. */
@inline function finish4(w: usize, q: usize, target: usize, at: usize, acc: v128, s2: v128): v128 {
  const wv = v128.load(w + at);
  if (target) v128.store(target + at, f32x4.sub(wv, acc));
  return f64x2.add(s2, residualSquares(wv, v128.load(q + at), acc));
}

/** lowRankStep for row i from column j0 (a multiple of 4) on: four columns at a time from
 *  the packed A, then one at a time. */
function lowRankRow(w: usize, q: usize, bf: usize, af: usize, i: i32, j0: i32, cols: i32, r: i32, target: usize, packed: usize): f64 {
  const rowBytes = <usize>cols << 2, groupBytes = <usize>r << 4;
  const rowB = bf + (<usize>(i * r) << 2);
  const base = <usize>i * rowBytes;
  let s2 = f64x2.splat(0);
  let s: f64 = 0;
  let j = j0;
  for (; j + 4 <= cols; j += 4) {
    let acc = f32x4.splat(0);
    const group = packed + (<usize>(j >> 2)) * groupBytes;
    for (let k = 0; k < r; k++) acc = f32x4.add(acc, f32x4.mul(f32x4.splat(load<f32>(rowB + (<usize>k << 2))), v128.load(group + (<usize>k << 4))));
    s2 = finish4(w, q, target, base + (<usize>j << 2), acc, s2);
  }
  for (; j < cols; j++) {
    let lr: f32 = 0;
    for (let k = 0; k < r; k++) lr += load<f32>(rowB + (<usize>k << 2)) * load<f32>(af + <usize>k * rowBytes + (<usize>j << 2));
    const wj = load<f32>(w + base + (<usize>j << 2));
    const d = <f64>wj - <f64>load<f32>(q + base + (<usize>j << 2)) - <f64>lr;
    s += d * d;
    if (target) store<f32>(target + base + (<usize>j << 2), wj - lr);
  }
  return s + f64x2.extract_lane(s2, 0) + f64x2.extract_lane(s2, 1);
}

/** Σ (w − q − B·A)² for row-major factors B (rows × r) and A (r × cols), the product formed
 *  on the fly instead of materialised. When target ≠ 0 it also writes the next quantizer
 *  input target = w − B·A. `packed` is scratch for r × cols floats: A's columns in groups of
 *  four, each group's r rows contiguous (reading A row by row would stride by the row
 *  length, often a power of two that maps every row to one cache set). Tiles of 4 rows × 8
 *  columns keep eight accumulators in registers, so each A load feeds four products and
 *  the additions of one tile do not wait on each other (one accumulator per four columns
 *  ran at a third of the speed, bound by the latency of its additions). */
export function lowRankStep(w: usize, q: usize, bf: usize, af: usize, rows: i32, cols: i32, r: i32, target: usize, packed: usize): f64 {
  const rowBytes = <usize>cols << 2;
  const groupBytes = <usize>r << 4;
  const bRow = <usize>r << 2;
  for (let j = 0; j + 4 <= cols; j += 4) {
    for (let k = 0; k < r; k++) v128.store(packed + (<usize>(j >> 2)) * groupBytes + (<usize>k << 4), v128.load(af + <usize>k * rowBytes + (<usize>j << 2)));
  }
  let s2 = f64x2.splat(0);
  let s: f64 = 0;
  let i = 0;
  for (; i + 4 <= rows; i += 4) {
    const b0 = bf + (<usize>(i * r) << 2), b1 = b0 + bRow, b2 = b1 + bRow, b3 = b2 + bRow;
    const base = <usize>i * rowBytes;
    let j = 0;
    for (; j + 8 <= cols; j += 8) {
      const g0 = packed + (<usize>(j >> 2)) * groupBytes, g1 = g0 + groupBytes;
      let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
      let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
      for (let k = 0; k < r; k++) {
        const ko = <usize>k << 4, kb = <usize>k << 2;
        const a0 = v128.load(g0 + ko), a1 = v128.load(g1 + ko);
        let x = f32x4.splat(load<f32>(b0 + kb)); c00 = f32x4.add(c00, f32x4.mul(x, a0)); c01 = f32x4.add(c01, f32x4.mul(x, a1));
        x = f32x4.splat(load<f32>(b1 + kb)); c10 = f32x4.add(c10, f32x4.mul(x, a0)); c11 = f32x4.add(c11, f32x4.mul(x, a1));
        x = f32x4.splat(load<f32>(b2 + kb)); c20 = f32x4.add(c20, f32x4.mul(x, a0)); c21 = f32x4.add(c21, f32x4.mul(x, a1));
        x = f32x4.splat(load<f32>(b3 + kb)); c30 = f32x4.add(c30, f32x4.mul(x, a0)); c31 = f32x4.add(c31, f32x4.mul(x, a1));
      }
      const at = base + (<usize>j << 2);
      s2 = finish4(w, q, target, at, c00, s2); s2 = finish4(w, q, target, at + 16, c01, s2);
      s2 = finish4(w, q, target, at + rowBytes, c10, s2); s2 = finish4(w, q, target, at + rowBytes + 16, c11, s2);
      s2 = finish4(w, q, target, at + 2 * rowBytes, c20, s2); s2 = finish4(w, q, target, at + 2 * rowBytes + 16, c21, s2);
      s2 = finish4(w, q, target, at + 3 * rowBytes, c30, s2); s2 = finish4(w, q, target, at + 3 * rowBytes + 16, c31, s2);
    }
    if (j < cols) for (let ii = i; ii < i + 4; ii++) s += lowRankRow(w, q, bf, af, ii, j, cols, r, target, packed);
  }
  for (; i < rows; i++) s += lowRankRow(w, q, bf, af, i, 0, cols, r, target, packed);
  return s + f64x2.extract_lane(s2, 0) + f64x2.extract_lane(s2, 1);
}

/** dst (cols × rows) = srcᵀ: 32×32 tiles that stay in cache, moved as 4×4 SIMD blocks. */
export function transpose(src: usize, rows: i32, cols: i32, dst: usize): void {
  transposeBand(src, rows, cols, dst, 0, rows);
}

/** Rows first … last−1 of src (rows × cols) into columns first … last−1 of dst = srcᵀ (a
 *  helper thread's share of a transpose; `first` a multiple of 32 keeps the tiles aligned). */
export function transposeBand(src: usize, rows: i32, cols: i32, dst: usize, first: i32, last: i32): void {
  const T = 32;
  const rs = <usize>rows << 2, cs = <usize>cols << 2;
  for (let i0 = first; i0 < last; i0 += T) {
    const i1 = min(last, i0 + T);
    const iFull = i0 + ((i1 - i0) & ~3);
    for (let j0 = 0; j0 < cols; j0 += T) {
      const j1 = min(cols, j0 + T);
      const jFull = j0 + ((j1 - j0) & ~3);
      for (let i = i0; i < iFull; i += 4) {
        const p = src + <usize>i * cs;
        for (let j = j0; j < jFull; j += 4) {
          const at = p + (<usize>j << 2);
          const r0 = v128.load(at), r1 = v128.load(at + cs), r2 = v128.load(at + 2 * cs), r3 = v128.load(at + 3 * cs);
          const t0 = v128.shuffle<f32>(r0, r1, 0, 4, 1, 5), t1 = v128.shuffle<f32>(r0, r1, 2, 6, 3, 7);
          const t2 = v128.shuffle<f32>(r2, r3, 0, 4, 1, 5), t3 = v128.shuffle<f32>(r2, r3, 2, 6, 3, 7);
          const out = dst + <usize>j * rs + (<usize>i << 2);
          v128.store(out, v128.shuffle<f32>(t0, t2, 0, 1, 4, 5));
          v128.store(out + rs, v128.shuffle<f32>(t0, t2, 2, 3, 6, 7));
          v128.store(out + 2 * rs, v128.shuffle<f32>(t1, t3, 0, 1, 4, 5));
          v128.store(out + 3 * rs, v128.shuffle<f32>(t1, t3, 2, 3, 6, 7));
        }
        for (let j = jFull; j < j1; j++) for (let ii = i; ii < i + 4; ii++) setF32(dst, j * rows + ii, f32At(src, ii * cols + j));
      }
      for (let i = iFull; i < i1; i++) for (let j = j0; j < j1; j++) setF32(dst, j * rows + i, f32At(src, i * cols + j));
    }
  }
}

/** Rounds float32 values to bfloat16 (nearest even, as torch does; NaN stays NaN): writes
 *  the 16-bit patterns to `bits` and replaces x by the values they encode. */
export function roundToBf16(x: usize, bits: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const b = load<u32>(x + (<usize>i << 2));
    const h = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    store<u16>(bits + (<usize>i << 1), <u16>h);
    store<u32>(x + (<usize>i << 2), (h & 0xffff) << 16);
  }
}

// --- Float64 column blocks (the randomized SVD's Krylov algebra) ---------------------------
// A block is `count` contiguous float64 columns of `len` values each.

@inline function col(block: usize, j: i32, len: i32): usize { return block + ((<usize>j * <usize>len) << 3); }

function dot(a: usize, b: usize, len: i32): f64 {
  let s0 = f64x2.splat(0), s1 = f64x2.splat(0);
  let i = 0;
  for (; i + 4 <= len; i += 4) {
    const o = <usize>i << 3;
    s0 = f64x2.add(s0, f64x2.mul(v128.load(a + o), v128.load(b + o)));
    s1 = f64x2.add(s1, f64x2.mul(v128.load(a + o + 16), v128.load(b + o + 16)));
  }
  const s = f64x2.add(s0, s1);
  let t = f64x2.extract_lane(s, 0) + f64x2.extract_lane(s, 1);
  for (; i < len; i++) t += load<f64>(a + (<usize>i << 3)) * load<f64>(b + (<usize>i << 3));
  return t;
}

/** y ← y + alpha·x */
function axpy(alpha: f64, x: usize, y: usize, len: i32): void {
  const a = f64x2.splat(alpha);
  let i = 0;
  for (; i + 2 <= len; i += 2) {
    const o = <usize>i << 3;
    v128.store(y + o, f64x2.add(v128.load(y + o), f64x2.mul(a, v128.load(x + o))));
  }
  for (; i < len; i++) store<f64>(y + (<usize>i << 3), load<f64>(y + (<usize>i << 3)) + alpha * load<f64>(x + (<usize>i << 3)));
}

@inline function hsum(v: v128): f64 { return f64x2.extract_lane(v, 0) + f64x2.extract_lane(v, 1); }
@inline function fma2(acc: v128, a: v128, b: v128): v128 { return f64x2.add(acc, f64x2.mul(a, b)); }

/** out (pCount × jCount, row-major) = A[:, pFirst…]ᵀ · B[:, jFirst…] for column blocks A and B
 *  of one length. Tiles of 4 × 2 columns: each pair of loads feeds four products instead of
 *  one (column-by-column dot products streamed the whole block from cache once per pair).
 *  `symmetric` (A = B, same ranges): tiles wholly below the diagonal are mirrored, not computed. */
export function dotBlock(a: usize, pFirst: i32, pCount: i32, b: usize, jFirst: i32, jCount: i32, len: i32, out: usize, symmetric: i32): void {
  const even = len & ~1;
  let p = 0;
  for (; p + 4 <= pCount; p += 4) {
    const a0 = col(a, pFirst + p, len), a1 = col(a, pFirst + p + 1, len), a2 = col(a, pFirst + p + 2, len), a3 = col(a, pFirst + p + 3, len);
    let j = symmetric ? max(0, p - 1) : 0;
    for (; j + 2 <= jCount; j += 2) {
      const b0 = col(b, jFirst + j, len), b1 = col(b, jFirst + j + 1, len);
      let s00 = f64x2.splat(0), s01 = f64x2.splat(0), s10 = f64x2.splat(0), s11 = f64x2.splat(0);
      let s20 = f64x2.splat(0), s21 = f64x2.splat(0), s30 = f64x2.splat(0), s31 = f64x2.splat(0);
      for (let i = 0; i < even; i += 2) {
        const o = <usize>i << 3;
        const x0 = v128.load(b0 + o), x1 = v128.load(b1 + o);
        let y = v128.load(a0 + o); s00 = fma2(s00, y, x0); s01 = fma2(s01, y, x1);
        y = v128.load(a1 + o); s10 = fma2(s10, y, x0); s11 = fma2(s11, y, x1);
        y = v128.load(a2 + o); s20 = fma2(s20, y, x0); s21 = fma2(s21, y, x1);
        y = v128.load(a3 + o); s30 = fma2(s30, y, x0); s31 = fma2(s31, y, x1);
      }
      let t00 = hsum(s00), t01 = hsum(s01), t10 = hsum(s10), t11 = hsum(s11);
      let t20 = hsum(s20), t21 = hsum(s21), t30 = hsum(s30), t31 = hsum(s31);
      if (even < len) {
        const o = <usize>even << 3;
        const x0 = load<f64>(b0 + o), x1 = load<f64>(b1 + o);
        const y0 = load<f64>(a0 + o), y1 = load<f64>(a1 + o), y2 = load<f64>(a2 + o), y3 = load<f64>(a3 + o);
        t00 += y0 * x0; t01 += y0 * x1; t10 += y1 * x0; t11 += y1 * x1;
        t20 += y2 * x0; t21 += y2 * x1; t30 += y3 * x0; t31 += y3 * x1;
      }
      setF64(out, p * jCount + j, t00); setF64(out, p * jCount + j + 1, t01);
      setF64(out, (p + 1) * jCount + j, t10); setF64(out, (p + 1) * jCount + j + 1, t11);
      setF64(out, (p + 2) * jCount + j, t20); setF64(out, (p + 2) * jCount + j + 1, t21);
      setF64(out, (p + 3) * jCount + j, t30); setF64(out, (p + 3) * jCount + j + 1, t31);
    }
    for (; j < jCount; j++) {
      const bj = col(b, jFirst + j, len);
      for (let q = 0; q < 4; q++) setF64(out, (p + q) * jCount + j, dot(col(a, pFirst + p + q, len), bj, len));
    }
  }
  for (; p < pCount; p++) {
    for (let j = symmetric ? p : 0; j < jCount; j++) setF64(out, p * jCount + j, dot(col(a, pFirst + p, len), col(b, jFirst + j, len), len));
  }
  if (symmetric) for (let q = 1; q < pCount; q++) for (let j = 0; j < q; j++) setF64(out, q * jCount + j, f64At(out, j * jCount + q));
}

/** X[:, jFirst + j] += alpha · Σ_p A[:, pFirst + p] · c[p·ldc + j] for j < jCount, p < pCount:
 *  a block of axpys, in row chunks that keep two X columns in cache while four A columns
 *  stream past them. */
export function axpyBlock(a: usize, pFirst: i32, pCount: i32, c: usize, ldc: i32, x: usize, jFirst: i32, jCount: i32, len: i32, alpha: f64): void {
  const CHUNK = 512;
  for (let i0 = 0; i0 < len; i0 += CHUNK) {
    const i1 = min(len, i0 + CHUNK);
    const even1 = i0 + ((i1 - i0) & ~1);
    let j = 0;
    for (; j < jCount; j += 2) {
      const pair = j + 1 < jCount;
      const x0 = col(x, jFirst + j, len), x1 = pair ? col(x, jFirst + j + 1, len) : x0;
      let p = 0;
      for (; p + 4 <= pCount; p += 4) {
        const c00 = alpha * f64At(c, p * ldc + j), c10 = alpha * f64At(c, (p + 1) * ldc + j);
        const c20 = alpha * f64At(c, (p + 2) * ldc + j), c30 = alpha * f64At(c, (p + 3) * ldc + j);
        const c01 = pair ? alpha * f64At(c, p * ldc + j + 1) : 0, c11 = pair ? alpha * f64At(c, (p + 1) * ldc + j + 1) : 0;
        const c21 = pair ? alpha * f64At(c, (p + 2) * ldc + j + 1) : 0, c31 = pair ? alpha * f64At(c, (p + 3) * ldc + j + 1) : 0;
        const a0 = col(a, pFirst + p, len), a1 = col(a, pFirst + p + 1, len), a2 = col(a, pFirst + p + 2, len), a3 = col(a, pFirst + p + 3, len);
        const v00 = f64x2.splat(c00), v10 = f64x2.splat(c10), v20 = f64x2.splat(c20), v30 = f64x2.splat(c30);
        if (pair) {
          const v01 = f64x2.splat(c01), v11 = f64x2.splat(c11), v21 = f64x2.splat(c21), v31 = f64x2.splat(c31);
          for (let i = i0; i < even1; i += 2) {
            const o = <usize>i << 3;
            let y0 = v128.load(x0 + o), y1 = v128.load(x1 + o);
            let z = v128.load(a0 + o); y0 = fma2(y0, z, v00); y1 = fma2(y1, z, v01);
            z = v128.load(a1 + o); y0 = fma2(y0, z, v10); y1 = fma2(y1, z, v11);
            z = v128.load(a2 + o); y0 = fma2(y0, z, v20); y1 = fma2(y1, z, v21);
            z = v128.load(a3 + o); y0 = fma2(y0, z, v30); y1 = fma2(y1, z, v31);
            v128.store(x0 + o, y0); v128.store(x1 + o, y1);
          }
        } else {
          for (let i = i0; i < even1; i += 2) {
            const o = <usize>i << 3;
            let y0 = v128.load(x0 + o);
            y0 = fma2(y0, v128.load(a0 + o), v00); y0 = fma2(y0, v128.load(a1 + o), v10);
            y0 = fma2(y0, v128.load(a2 + o), v20); y0 = fma2(y0, v128.load(a3 + o), v30);
            v128.store(x0 + o, y0);
          }
        }
        for (let i = even1; i < i1; i++) {
          const o = <usize>i << 3;
          const z0 = load<f64>(a0 + o), z1 = load<f64>(a1 + o), z2 = load<f64>(a2 + o), z3 = load<f64>(a3 + o);
          store<f64>(x0 + o, load<f64>(x0 + o) + z0 * c00 + z1 * c10 + z2 * c20 + z3 * c30);
          if (pair) store<f64>(x1 + o, load<f64>(x1 + o) + z0 * c01 + z1 * c11 + z2 * c21 + z3 * c31);
        }
      }
      for (; p < pCount; p++) {
        const ap = col(a, pFirst + p, len);
        const width = pair ? 2 : 1;
        for (let q = 0; q < width; q++) {
          const coef = alpha * f64At(c, p * ldc + j + q);
          if (coef == 0) continue;
          const xq = q ? x1 : x0;
          for (let i = i0; i < i1; i++) store<f64>(xq + (<usize>i << 3), load<f64>(xq + (<usize>i << 3)) + coef * load<f64>(ap + (<usize>i << 3)));
        }
      }
    }
  }
}

/** Orthonormalises columns first … first+count−1 of the block against columns 0 … first−1
 *  (already orthonormal) and among themselves. Against the earlier columns: block classical
 *  Gram–Schmidt (C = Qᵀ·X, X −= Q·C, as matrix products), twice, and a third time when the
 *  second pass still removed more than half of some column ("twice is enough",
 *  Kahan–Parlett). Among the new columns: modified Gram–Schmidt, repeating a column's
 *  projection only while it loses more than half its norm (at most three times). A column
 *  left with under 1e-10 of its original norm is numerically dependent and becomes zero:
 *  normalising rounding noise would inject arbitrary directions. `scratch`: first·count + 2·count
 *  float64. */
export function orthonormalize(block: usize, first: i32, count: i32, len: i32, scratch: usize): void {
  const original = scratch, before = scratch + (<usize>count << 3), coef = scratch + (<usize>count << 4);
  for (let j = 0; j < count; j++) { const c = col(block, first + j, len); setF64(original, j, Math.sqrt(dot(c, c, len))); }
  if (first > 0) {
    for (let pass = 0; pass < 3; pass++) {
      if (pass == 2) {
        let again = false;
        for (let j = 0; j < count; j++) { const c = col(block, first + j, len); if (Math.sqrt(dot(c, c, len)) <= 0.5 * f64At(before, j)) again = true; }
        if (!again) break;
      }
      if (pass == 1) for (let j = 0; j < count; j++) { const c = col(block, first + j, len); setF64(before, j, Math.sqrt(dot(c, c, len))); }
      dotBlock(block, 0, first, block, first, count, len, coef, 0);
      axpyBlock(block, 0, first, coef, count, block, first, count, len, -1);
    }
  }
  for (let j = first; j < first + count; j++) {
    const c = col(block, j, len);
    let prev = Math.sqrt(dot(c, c, len));
    let norm = prev;
    for (let pass = 0; pass < 3 && j > first; pass++) {
      for (let p = first; p < j; p++) {
        const q = col(block, p, len);
        const d = dot(q, c, len);
        if (d != 0) axpy(-d, q, c, len);
      }
      norm = Math.sqrt(dot(c, c, len));
      if (norm > 0.5 * prev) break;
      prev = norm;
    }
    const orig = f64At(original, j - first);
    const inv: f64 = norm > 1e-10 * orig && norm > 1e-300 ? 1 / norm : 0;
    const s = f64x2.splat(inv);
    let i = 0;
    for (; i + 2 <= len; i += 2) v128.store(c + (<usize>i << 3), f64x2.mul(v128.load(c + (<usize>i << 3)), s));
    for (; i < len; i++) store<f64>(c + (<usize>i << 3), load<f64>(c + (<usize>i << 3)) * inv);
  }
}

/** out (count × count, row-major) = Cᵀ·C. */
export function gram(block: usize, count: i32, len: i32, out: usize): void {
  dotBlock(block, 0, count, block, 0, count, len, out, 1);
}

// Row-major ↔ column conversions in bands of 8 rows: a band of the row-major side (8 rows)
// stays in cache while every column gets 64 contiguous bytes (element by element, each
// access to the column side touched another cache line).
const BAND: i32 = 8;

/** Columns first … first+k−1 of the block ← a row-major float32 (len × k) matrix. */
export function columnsFromRows(src: usize, len: i32, k: i32, block: usize, first: i32): void {
  for (let i0 = 0; i0 < len; i0 += BAND) {
    const i1 = min(len, i0 + BAND);
    for (let j = 0; j < k; j++) {
      const c = col(block, first + j, len);
      for (let i = i0; i < i1; i++) store<f64>(c + (<usize>i << 3), <f64>load<f32>(src + ((<usize>(i * k + j)) << 2)));
    }
  }
}

/** dst (len rows of stride ld, row-major float32), columns 0 … k−1 ← columns first …
 *  first+k−1 of the block, column j times scales[j] (scales = 0: unscaled). */
export function rowsFromColumns(block: usize, first: i32, k: i32, len: i32, dst: usize, ld: i32, scales: usize): void {
  for (let i0 = 0; i0 < len; i0 += BAND) {
    const i1 = min(len, i0 + BAND);
    for (let j = 0; j < k; j++) {
      const c = col(block, first + j, len);
      const sc: f64 = scales ? f64At(scales, j) : 1;
      for (let i = i0; i < i1; i++) store<f32>(dst + ((<usize>(i * ld + j)) << 2), <f32>(load<f64>(c + (<usize>i << 3)) * sc));
    }
  }
}

// --- Symmetric eigenproblem (the Rayleigh–Ritz step) ------------------------------------
// EISPACK's tred2 + tql2: Householder reduction to tridiagonal form, then implicit QL.
// `a` is a row-major n×n symmetric matrix, overwritten by the eigenvectors (column j for
// d[j]); d receives the eigenvalues, unsorted; e is scratch of n. O(n³).

@inline function at(a: usize, n: i32, i: i32, j: i32): usize { return a + ((<usize>i * <usize>n + <usize>j) << 3); }
@inline function f64At(p: usize, i: i32): f64 { return load<f64>(p + (<usize>i << 3)); }
@inline function setF64(p: usize, i: i32, x: f64): void { store<f64>(p + (<usize>i << 3), x); }

export function symmetricEigen(a: usize, n: i32, d: usize, e: usize): void {
  for (let j = 0; j < n; j++) setF64(d, j, load<f64>(at(a, n, n - 1, j)));
  for (let i = n - 1; i > 0; i--) {
    let scale: f64 = 0, h: f64 = 0;
    for (let c = 0; c < i; c++) scale += Math.abs(f64At(d, c));
    if (scale == 0) {
      setF64(e, i, f64At(d, i - 1));
      for (let j = 0; j < i; j++) { setF64(d, j, load<f64>(at(a, n, i - 1, j))); store<f64>(at(a, n, i, j), 0); store<f64>(at(a, n, j, i), 0); }
    } else {
      for (let c = 0; c < i; c++) { const x = f64At(d, c) / scale; setF64(d, c, x); h += x * x; }
      let f = f64At(d, i - 1);
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      setF64(e, i, scale * g);
      h -= f * g;
      setF64(d, i - 1, f - g);
      for (let j = 0; j < i; j++) setF64(e, j, 0);
      for (let j = 0; j < i; j++) {
        f = f64At(d, j);
        store<f64>(at(a, n, j, i), f);
        g = f64At(e, j) + load<f64>(at(a, n, j, j)) * f;
        for (let c = j + 1; c <= i - 1; c++) {
          const vcj = load<f64>(at(a, n, c, j));
          g += vcj * f64At(d, c);
          setF64(e, c, f64At(e, c) + vcj * f);
        }
        setF64(e, j, g);
      }
      f = 0;
      for (let j = 0; j < i; j++) { const x = f64At(e, j) / h; setF64(e, j, x); f += x * f64At(d, j); }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) setF64(e, j, f64At(e, j) - hh * f64At(d, j));
      for (let j = 0; j < i; j++) {
        f = f64At(d, j); g = f64At(e, j);
        for (let c = j; c <= i - 1; c++) store<f64>(at(a, n, c, j), load<f64>(at(a, n, c, j)) - (f * f64At(e, c) + g * f64At(d, c)));
        setF64(d, j, load<f64>(at(a, n, i - 1, j)));
        store<f64>(at(a, n, i, j), 0);
      }
    }
    setF64(d, i, h);
  }
  for (let i = 0; i < n - 1; i++) {
    store<f64>(at(a, n, n - 1, i), load<f64>(at(a, n, i, i)));
    store<f64>(at(a, n, i, i), 1);
    const h = f64At(d, i + 1);
    if (h != 0) {
      for (let c = 0; c <= i; c++) setF64(d, c, load<f64>(at(a, n, c, i + 1)) / h);
      for (let j = 0; j <= i; j++) {
        let g: f64 = 0;
        for (let c = 0; c <= i; c++) g += load<f64>(at(a, n, c, i + 1)) * load<f64>(at(a, n, c, j));
        for (let c = 0; c <= i; c++) store<f64>(at(a, n, c, j), load<f64>(at(a, n, c, j)) - g * f64At(d, c));
      }
    }
    for (let c = 0; c <= i; c++) store<f64>(at(a, n, c, i + 1), 0);
  }
  for (let j = 0; j < n; j++) { setF64(d, j, load<f64>(at(a, n, n - 1, j))); store<f64>(at(a, n, n - 1, j), 0); }
  if (n > 0) store<f64>(at(a, n, n - 1, n - 1), 1);
  setF64(e, 0, 0);
  // implicit QL on the tridiagonal (d, e), rotating the rows of Qᵀ: contiguous, where the
  // columns of Q are n apart (a rotation then touched 2n cache lines, at n = 288 more than
  // the cache held).
  transposeSquare(a, n);
  for (let i = 1; i < n; i++) setF64(e, i - 1, f64At(e, i));
  if (n > 0) setF64(e, n - 1, 0);
  let f: f64 = 0, tst1: f64 = 0;
  const eps: f64 = 2.220446049250313e-16;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(f64At(d, l)) + Math.abs(f64At(e, l)));
    let m = l;
    while (m < n && Math.abs(f64At(e, m)) > eps * tst1) m++;
    if (m > l) {
      for (let iter = 0; iter < 100; iter++) {
        let g = f64At(d, l);
        let p = (f64At(d, l + 1) - g) / (2 * f64At(e, l));
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        setF64(d, l, f64At(e, l) / (p + r));
        setF64(d, l + 1, f64At(e, l) * (p + r));
        const dl1 = f64At(d, l + 1);
        let h = g - f64At(d, l);
        for (let i = l + 2; i < n; i++) setF64(d, i, f64At(d, i) - h);
        f += h;
        p = f64At(d, m);
        let c: f64 = 1, c2: f64 = 1, c3: f64 = 1, s: f64 = 0, s2: f64 = 0;
        const el1 = f64At(e, l + 1);
        for (let i = m - 1; i >= l; i--) {
          c3 = c2; c2 = c; s2 = s;
          g = c * f64At(e, i);
          h = c * p;
          r = Math.hypot(p, f64At(e, i));
          setF64(e, i + 1, s * r);
          s = f64At(e, i) / r;
          c = p / r;
          p = c * f64At(d, i) - s * g;
          setF64(d, i + 1, h + s * (c * g + s * f64At(d, i)));
          rotateRows(at(a, n, i + 1, 0), at(a, n, i, 0), n, c, s);
        }
        p = (-s * s2 * c3 * el1 * f64At(e, l)) / dl1;
        setF64(e, l, s * p);
        setF64(d, l, c * p);
        if (!(Math.abs(f64At(e, l)) > eps * tst1)) break;
      }
    }
    setF64(d, l, f64At(d, l) + f);
    setF64(e, l, 0);
  }
  transposeSquare(a, n);
}

/** x ← s·y + c·x, y ← c·y − s·x for two contiguous float64 rows (x: row i + 1, y: row i). */
function rotateRows(x: usize, y: usize, n: i32, c: f64, s: f64): void {
  const c2 = f64x2.splat(c), s2 = f64x2.splat(s);
  let j = 0;
  for (; j + 2 <= n; j += 2) {
    const o = <usize>j << 3;
    const xv = v128.load(x + o), yv = v128.load(y + o);
    v128.store(x + o, f64x2.add(f64x2.mul(s2, yv), f64x2.mul(c2, xv)));
    v128.store(y + o, f64x2.sub(f64x2.mul(c2, yv), f64x2.mul(s2, xv)));
  }
  for (; j < n; j++) {
    const o = <usize>j << 3;
    const xj = load<f64>(x + o), yj = load<f64>(y + o);
    store<f64>(x + o, s * yj + c * xj);
    store<f64>(y + o, c * yj - s * xj);
  }
}

function transposeSquare(a: usize, n: i32): void {
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const p = at(a, n, i, j), q = at(a, n, j, i);
      const t = load<f64>(p);
      store<f64>(p, load<f64>(q));
      store<f64>(q, t);
    }
}

// --- HQQ (server/src/quant/hqq.ts) -----------------------------------------------------------
// hqq 0.2.8.post1's float32 arithmetic, every operation rounded to float32 as torch does on a
// CPU; the same results as hqq.ts's TypeScript reference (its tests compare the two).

/** Per group of g values: min and max (the first of equal values, as a scalar scan takes it),
 *  s_inv = fl(fl(1 / (max − min)) · maxV) (1 where |max − min| ≤ fl(1e-4), at most 2e4) and
 *  zero = fl(−min · s_inv), rounded half to even when roundZero. */
export function hqqScales(x: usize, n: i32, g: i32, maxV: f32, roundZero: i32, sInv: usize, zero: usize): void {
  const groups = n / g;
  for (let b = 0; b < groups; b++) {
    const p = x + (<usize>(b * g) << 2);
    let lo = load<f32>(p), hi = lo;
    let i = 0;
    if (g >= 8) {
      let lo4 = v128.load(p), hi4 = lo4;
      for (i = 4; i + 4 <= g; i += 4) {
        const v = v128.load(p + (<usize>i << 2));
        lo4 = f32x4.pmin(lo4, v);
        hi4 = f32x4.pmax(hi4, v);
      }
      lo4 = f32x4.pmin(lo4, v128.shuffle<f32>(lo4, lo4, 2, 3, 0, 1));
      hi4 = f32x4.pmax(hi4, v128.shuffle<f32>(hi4, hi4, 2, 3, 0, 1));
      lo = f32x4.extract_lane(f32x4.pmin(lo4, v128.shuffle<f32>(lo4, lo4, 1, 0, 3, 2)), 0);
      hi = f32x4.extract_lane(f32x4.pmax(hi4, v128.shuffle<f32>(hi4, hi4, 1, 0, 3, 2)), 0);
    }
    for (; i < g; i++) {
      const v = load<f32>(p + (<usize>i << 2));
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    // Equal values that differ (±0) or NaN: the scalar scan decides which one is kept.
    if (lo == 0 || hi == 0 || lo != lo || hi != hi) {
      lo = load<f32>(p); hi = lo;
      for (i = 1; i < g; i++) {
        const v = load<f32>(p + (<usize>i << 2));
        if (v < lo) lo = v;
        else if (v > hi) hi = v;
      }
    }
    const denom = hi - lo;
    let s: f32 = (<f32>1 / denom) * maxV;
    if (abs(denom) <= <f32>1e-4) s = 1;
    if (s > <f32>2e4) s = 2e4;
    let z: f32 = -lo * s;
    if (roundZero) z = nearest(z);
    store<f32>(sInv + (<usize>b << 2), s);
    store<f32>(zero + (<usize>b << 2), z);
  }
}

/** clamp(rne(fl(fl(w · s) + z)), 0, maxV) of four values (NaN → 0). */
@inline function hqqCode4(w: v128, s: v128, z: v128, maxV: v128): v128 {
  const q = f32x4.nearest(f32x4.add(f32x4.mul(w, s), z));
  return f32x4.pmin(maxV, f32x4.pmax(f32x4.splat(0), q));
}

/** codes = clamp(rne(fl(fl(w · s_inv) + zero)), 0, maxV), one byte each. */
export function hqqCodes(x: usize, n: i32, g: i32, maxV: f32, sInv: usize, zero: usize, codes: usize): void {
  const groups = n / g;
  const m4 = f32x4.splat(maxV);
  for (let b = 0; b < groups; b++) {
    const start = b * g;
    const s = load<f32>(sInv + (<usize>b << 2)), z = load<f32>(zero + (<usize>b << 2));
    const s4 = f32x4.splat(s), z4 = f32x4.splat(z);
    let i = 0;
    for (; i + 16 <= g; i += 16) {
      const at = start + i, px = x + (<usize>at << 2);
      const q0 = i32x4.trunc_sat_f32x4_u(hqqCode4(v128.load(px), s4, z4, m4));
      const q1 = i32x4.trunc_sat_f32x4_u(hqqCode4(v128.load(px + 16), s4, z4, m4));
      const q2 = i32x4.trunc_sat_f32x4_u(hqqCode4(v128.load(px + 32), s4, z4, m4));
      const q3 = i32x4.trunc_sat_f32x4_u(hqqCode4(v128.load(px + 48), s4, z4, m4));
      v128.store(codes + <usize>at, i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(q0, q1), i16x8.narrow_i32x4_u(q2, q3)));
    }
    for (; i + 4 <= g; i += 4) {
      const at = start + i;
      const q = i32x4.trunc_sat_f32x4_u(hqqCode4(v128.load(x + (<usize>at << 2)), s4, z4, m4));
      const bytes = i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(q, q), q);
      v128.store32_lane(codes + <usize>at, bytes, 0);
    }
    for (; i < g; i++) {
      const at = start + i;
      const q = nearest(load<f32>(x + (<usize>at << 2)) * s + z);
      store<u8>(codes + <usize>at, <u8>(q > 0 ? (q < maxV ? q : maxV) : 0));
    }
  }
}

/** One element of the proximal step where |d| may exceed the shrink threshold:
 *  q − fl(fl(w − e) · s) with e = sign(d) · max(0, |d| − (1/β) · |d|^(p−1)). */
function hqqShrunk(w: f32, q: f32, ws: f32, d: f32, s: f32, invBeta: f32, exponent: f32, floor: f32): f32 {
  const a = abs(d);
  if (!(a >= floor)) return q - ws;
  let e: f32 = a - invBeta * <f32>Math.pow(<f64>a, <f64>exponent);
  if (e < 0) e = 0;
  if (d < 0) e = -e;
  return q - (w - e) * s;
}

/** Sum of g (a multiple of 8) float32 values in torch 2.6's order for a contiguous row on
 *  AVX2 (8-lane vectors: row_sum's 4 interleaved accumulators, multi_row_sum's levels of 16
 *  rows, then the 8 lanes one by one); `acc` is 512 bytes of scratch. */
function hqqTorchSum(v: usize, g: i32, acc: usize): f32 {
  const vecSize = g >> 3, sizeIlp = vecSize >> 2;
  if (vecSize == 8) {
    // 64 values: lane l = ((v[l] + v[32+l]) + (v[8+l] + v[40+l])) + (v[16+l] + v[48+l]) + (v[24+l] + v[56+l]).
    let h0 = f32x4.add(f32x4.add(f32x4.add(
      f32x4.add(v128.load(v), v128.load(v + 128)),
      f32x4.add(v128.load(v + 32), v128.load(v + 160))),
      f32x4.add(v128.load(v + 64), v128.load(v + 192))),
      f32x4.add(v128.load(v + 96), v128.load(v + 224)));
    let h1 = f32x4.add(f32x4.add(f32x4.add(
      f32x4.add(v128.load(v + 16), v128.load(v + 144)),
      f32x4.add(v128.load(v + 48), v128.load(v + 176))),
      f32x4.add(v128.load(v + 80), v128.load(v + 208))),
      f32x4.add(v128.load(v + 112), v128.load(v + 240)));
    return hqqLanes(h0, h1);
  }
  // acc[level][k][half] at acc + ((level · 4 + k) · 2 + half) · 16
  memory.fill(acc, 0, 512);
  let i = 0;
  while (i + 16 <= sizeIlp) {
    for (let j = 0; j < 16; j++, i++) hqqAddRow(acc, v, i);
    for (let lev = 1; lev < 4; lev++) {
      for (let c = 0; c < 8; c++) {
        const dst = acc + (<usize>(lev * 8 + c) << 4), src = acc + (<usize>((lev - 1) * 8 + c) << 4);
        v128.store(dst, f32x4.add(v128.load(dst), v128.load(src)));
        v128.store(src, f32x4.splat(0));
      }
      if ((i & (15 << (lev * 4))) != 0) break;
    }
  }
  for (; i < sizeIlp; i++) hqqAddRow(acc, v, i);
  for (let lev = 1; lev < 4; lev++)
    for (let c = 0; c < 8; c++) {
      const dst = acc + (<usize>c << 4);
      v128.store(dst, f32x4.add(v128.load(dst), v128.load(acc + (<usize>(lev * 8 + c) << 4))));
    }
  for (let k = sizeIlp * 4; k < vecSize; k++)
    for (let h = 0; h < 2; h++) {
      const dst = acc + (<usize>h << 4);
      v128.store(dst, f32x4.add(v128.load(dst), v128.load(v + (<usize>(k * 8 + h * 4) << 2))));
    }
  let h0 = v128.load(acc), h1 = v128.load(acc + 16);
  for (let k = 1; k < 4; k++) {
    h0 = f32x4.add(h0, v128.load(acc + (<usize>(k * 2) << 4)));
    h1 = f32x4.add(h1, v128.load(acc + (<usize>(k * 2 + 1) << 4)));
  }
  return hqqLanes(h0, h1);
}

/** acc[0][k] += vector 4·row + k, for k < 4 (both halves). */
@inline function hqqAddRow(acc: usize, v: usize, row: i32): void {
  for (let c = 0; c < 8; c++) {
    const dst = acc + (<usize>c << 4);
    v128.store(dst, f32x4.add(v128.load(dst), v128.load(v + (<usize>(row * 32 + c * 4) << 2))));
  }
}

/** 0 + lane 0 + … + lane 7 of an 8-lane vector held as two halves, in float32. */
@inline function hqqLanes(h0: v128, h1: v128): f32 {
  let t: f32 = 0;
  t += f32x4.extract_lane(h0, 0); t += f32x4.extract_lane(h0, 1); t += f32x4.extract_lane(h0, 2); t += f32x4.extract_lane(h0, 3);
  t += f32x4.extract_lane(h1, 0); t += f32x4.extract_lane(h1, 1); t += f32x4.extract_lane(h1, 2); t += f32x4.extract_lane(h1, 3);
  return t;
}

/** The proximal solver (optimize_weights_proximal_legacy) group by group, every step taken
 *  speculatively while the group is in cache (g a multiple of 8): with the group's zero z,
 *  q = codes, W_r = fl(fl(q − z) / s), d = W − W_r; Σ|d| (four float32 accumulators by index
 *  mod 4, ((a0 + a1) + (a2 + a3)) in float64) is added to errs[chunk · iters + step], chunk =
 *  group / chunkGroups (float64 partial sums of whole chunks: the same whatever the split of
 *  the groups over threads, on chunk bounds), and the new zero
 *  mean(q − fl(fl(W − shrink(d)) · s)) in torch's summation order goes to
 *  traj[group · (iters + 1) + step + 1] (traj[group · (iters + 1)] = the initial zero). A
 *  group whose zero comes back unchanged, with no |d| ≥ minFloor, repeats itself: its later
 *  steps are copied. hqq.ts then keeps the steps the early stop allows. `scratch`: g + 128
 *  float32 values. */
export function hqqProximalSolve(x: usize, n: i32, g: i32, maxV: f32, sInv: usize, zero: usize, iters: i32, invBetas: usize, floors: usize, exponent: f32, minFloor: f32, traj: usize, errs: usize, chunkGroups: i32, scratch: usize): void {
  const groups = n / g, stride = iters + 1;
  const m4 = f32x4.splat(maxV);
  const acc = scratch + (<usize>g << 2);
  for (let b = 0; b < groups; b++) {
    const p = x + (<usize>(b * g) << 2);
    const s = load<f32>(sInv + (<usize>b << 2));
    let z = load<f32>(zero + (<usize>b << 2));
    const t = traj + (<usize>(b * stride) << 2);
    const errChunk = errs + (<usize>((b / chunkGroups) * iters) << 3);
    store<f32>(t, z);
    const s4 = f32x4.splat(s);
    let k = 0;
    let gErr: f64 = 0;
    for (; k < iters; k++) {
      const invBeta = load<f32>(invBetas + (<usize>k << 2)), floor = load<f32>(floors + (<usize>k << 2));
      const z4 = f32x4.splat(z);
      let e4 = f32x4.splat(0), top = f32x4.splat(0);
      for (let i = 0; i < g; i += 4) {
        const w = v128.load(p + (<usize>i << 2));
        const ws = f32x4.mul(w, s4);
        const q = f32x4.pmin(m4, f32x4.pmax(f32x4.splat(0), f32x4.nearest(f32x4.add(ws, z4))));
        const a = f32x4.abs(f32x4.sub(w, f32x4.div(f32x4.sub(q, z4), s4)));
        e4 = f32x4.add(e4, a);
        top = f32x4.pmax(top, a);
        v128.store(scratch + (<usize>i << 2), f32x4.sub(q, ws));
      }
      // Some |d| at or above min(floor, minFloor): this group's step again, element by
      // element, with the exact shrink (and whether |d| reached minFloor).
      let above = false;
      if (v128.any_true(f32x4.ge(top, f32x4.splat(min(floor, minFloor))))) {
        for (let i = 0; i < g; i++) {
          const w = load<f32>(p + (<usize>i << 2));
          const ws = w * s;
          let q = nearest(ws + z);
          q = q > 0 ? (q < maxV ? q : maxV) : 0;
          const d = w - (q - z) / s;
          if (abs(d) >= minFloor) above = true;
          store<f32>(scratch + (<usize>i << 2), hqqShrunk(w, q, ws, d, s, invBeta, exponent, floor));
        }
      }
      gErr = (<f64>f32x4.extract_lane(e4, 0) + <f64>f32x4.extract_lane(e4, 1)) + (<f64>f32x4.extract_lane(e4, 2) + <f64>f32x4.extract_lane(e4, 3));
      const ek = errChunk + (<usize>k << 3);
      store<f64>(ek, load<f64>(ek) + gErr);
      const next: f32 = hqqTorchSum(scratch, g, acc) / <f32>g;
      store<f32>(t + (<usize>(k + 1) << 2), next);
      const fixed = reinterpret<u32>(next) == reinterpret<u32>(z) && !above;
      z = next;
      if (fixed) break;
    }
    for (k++; k < iters; k++) {
      const ek = errChunk + (<usize>k << 3);
      store<f64>(ek, load<f64>(ek) + gErr);
      store<f32>(t + (<usize>(k + 1) << 2), z);
    }
  }
}

/** float32 bits → nearest bfloat16 (ties to even) as float32 bits, four at a time. */
@inline function hqqBf16x4(x: v128): v128 {
  const odd = v128.and(i32x4.shr_u(x, 16), i32x4.splat(1));
  return v128.and(i32x4.add(i32x4.add(x, i32x4.splat(0x7fff)), odd), i32x4.splat(0xffff0000));
}

/** The same for one value (NaN stays NaN). */
function hqqBf16(x: f32): f32 {
  const b = reinterpret<u32>(x);
  if ((b & 0x7fffffff) > 0x7f800000) return x;
  return reinterpret<f32>((b + 0x7fff + ((b >>> 16) & 1)) & 0xffff0000);
}

/** HQQLinear.dequantize per group of g (a multiple of 4): out = (code − zero) · scale, every
 *  operation in float32, or — when bf16 — scale and zero rounded to bfloat16 and every
 *  operation's result too. */
export function hqqDequantize(codes: usize, n: i32, g: i32, scale: usize, zero: usize, bf16: i32, out: usize): void {
  const groups = n / g;
  for (let b = 0; b < groups; b++) {
    const start = b * g;
    let s = load<f32>(scale + (<usize>b << 2)), z = load<f32>(zero + (<usize>b << 2));
    if (bf16) { s = hqqBf16(s); z = hqqBf16(z); }
    const s4 = f32x4.splat(s), z4 = f32x4.splat(z);
    let i = 0;
    for (; i + 16 <= g; i += 16) {
      const at = start + i, po = out + (<usize>at << 2);
      const c16 = v128.load(codes + <usize>at);
      const lo = i16x8.extend_low_i8x16_u(c16), hi = i16x8.extend_high_i8x16_u(c16);
      const c0 = f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(lo)), c1 = f32x4.convert_i32x4_u(i32x4.extend_high_i16x8_u(lo));
      const c2 = f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(hi)), c3 = f32x4.convert_i32x4_u(i32x4.extend_high_i16x8_u(hi));
      if (bf16) {
        v128.store(po, hqqBf16x4(f32x4.mul(hqqBf16x4(f32x4.sub(c0, z4)), s4)));
        v128.store(po + 16, hqqBf16x4(f32x4.mul(hqqBf16x4(f32x4.sub(c1, z4)), s4)));
        v128.store(po + 32, hqqBf16x4(f32x4.mul(hqqBf16x4(f32x4.sub(c2, z4)), s4)));
        v128.store(po + 48, hqqBf16x4(f32x4.mul(hqqBf16x4(f32x4.sub(c3, z4)), s4)));
      } else {
        v128.store(po, f32x4.mul(f32x4.sub(c0, z4), s4));
        v128.store(po + 16, f32x4.mul(f32x4.sub(c1, z4), s4));
        v128.store(po + 32, f32x4.mul(f32x4.sub(c2, z4), s4));
        v128.store(po + 48, f32x4.mul(f32x4.sub(c3, z4), s4));
      }
    }
    for (; i < g; i += 4) {
      const at = start + i;
      const c = f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(i16x8.extend_low_i8x16_u(v128.load32_zero(codes + <usize>at))));
      const r = bf16 ? hqqBf16x4(f32x4.mul(hqqBf16x4(f32x4.sub(c, z4)), s4)) : f32x4.mul(f32x4.sub(c, z4), s4);
      v128.store(out + (<usize>at << 2), r);
    }
  }
}
