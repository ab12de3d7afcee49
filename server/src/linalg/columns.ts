// Tall-skinny blocks kept as arrays of contiguous float64 columns: Gram–Schmidt, Gram
// matrices and linear combinations then run over contiguous memory (row-major m×k blocks
// would make every column access strided, which dominated the host-side time).

export type Columns = Float64Array[];

/** Row-major float32 m×k (a GEMM result) → k contiguous columns. */
export function toColumns(a: Float32Array, m: number, k: number): Columns {
  const cols: Columns = Array.from({ length: k }, () => new Float64Array(m));
  for (let i = 0; i < m; i++) {
    const row = i * k;
    for (let j = 0; j < k; j++) cols[j][i] = a[row + j];
  }
  return cols;
}

/** Columns → row-major float32 m×k (a GEMM operand). */
export function toRowMajor(cols: Columns, m: number): Float32Array {
  const k = cols.length;
  const out = new Float32Array(m * k);
  for (let j = 0; j < k; j++) {
    const c = cols[j];
    for (let i = 0; i < m; i++) out[i * k + j] = c[i];
  }
  return out;
}

export function dot(a: Float64Array, b: Float64Array): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  const n = a.length, n4 = n - (n % 4);
  let i = 0;
  for (; i < n4; i += 4) {
    s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; s2 += a[i + 2] * b[i + 2]; s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; i++) s0 += a[i] * b[i];
  return s0 + s1 + s2 + s3;
}

/** y ← y + alpha·x */
export function axpy(alpha: number, x: Float64Array, y: Float64Array): void {
  for (let i = 0; i < y.length; i++) y[i] += alpha * x[i];
}

/** Orthonormalises `cols` in place against `basis` (already orthonormal) and among
 *  themselves by modified Gram–Schmidt, repeating a column's projection only when it lost
 *  most of its norm ("twice is enough", Kahan–Parlett). A column whose remainder falls
 *  below 1e-10 of its original norm is numerically dependent and set to zero — normalising
 *  rounding noise would inject arbitrary directions. */
export function orthonormalizeColumns(cols: Columns, basis: Columns = []): void {
  for (let j = 0; j < cols.length; j++) {
    const c = cols[j];
    const original = Math.sqrt(dot(c, c));
    let before = original;
    let norm = 0;
    for (let pass = 0; pass < 3; pass++) {
      for (const q of basis) { const d = dot(q, c); if (d !== 0) axpy(-d, q, c); }
      for (let p = 0; p < j; p++) { const d = dot(cols[p], c); if (d !== 0) axpy(-d, cols[p], c); }
      norm = Math.sqrt(dot(c, c));
      if (norm > 0.5 * before) break;
      before = norm;
    }
    const inv = norm > 1e-10 * original && norm > 1e-300 ? 1 / norm : 0;
    for (let i = 0; i < c.length; i++) c[i] *= inv;
  }
}

/** G = Cᵀ·C (k×k, row-major float64). */
export function gramColumns(cols: Columns): Float64Array {
  const k = cols.length;
  const g = new Float64Array(k * k);
  for (let p = 0; p < k; p++) for (let q = p; q < k; q++) g[p * k + q] = g[q * k + p] = dot(cols[p], cols[q]);
  return g;
}

/** Σ_p w[p·stride + j]·cols[p] — column j of C·W for a row-major W with `stride` columns. */
export function combine(cols: Columns, w: Float64Array, stride: number, j: number, out = new Float64Array(cols[0].length)): Float64Array {
  out.fill(0);
  for (let p = 0; p < cols.length; p++) {
    const coef = w[p * stride + j];
    if (coef !== 0) axpy(coef, cols[p], out);
  }
  return out;
}
