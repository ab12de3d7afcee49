// Tall-skinny blocks kept as contiguous float64 columns in kernel memory: Gram–Schmidt,
// Gram matrices and linear combinations run over contiguous memory in the WebAssembly
// kernels (row-major m×k blocks would make every column access strided, and the same
// loops in JavaScript ran at a third of the speed).

import type { F32Region, F64Region, Workspace } from '../kernels/kernels';

export class ColumnBlock {
  private readonly columns: F64Region;
  /** Row-major float32 staging for GEMM operands and results (len × width). */
  private readonly staging: F32Region;
  /** Projection coefficients and norms of orthonormalizeLast (capacity × width + 2·width). */
  private readonly scratch: F64Region;
  count = 0;

  constructor(
    private readonly ws: Workspace,
    readonly len: number,
    readonly capacity: number,
    readonly width: number,
  ) {
    this.columns = ws.f64(len * capacity);
    this.staging = ws.f32(len * width);
    this.scratch = ws.f64((capacity + 2) * width);
  }

  /** Column j, as a view (valid until the workspace next grows). */
  column(j: number): Float64Array {
    return this.columns.view().subarray(j * this.len, (j + 1) * this.len);
  }

  /** Appends the k columns of a row-major float32 len × k matrix (a GEMM result). */
  appendRows(a: Float32Array, k: number): void {
    if (this.count + k > this.capacity)
      throw new Error(`ColumnBlock: ${this.count + k} columns exceed ${this.capacity}`);
    this.staging.view().set(a);
    this.ws.k.columnsFromRows(this.staging.ptr, this.len, k, this.columns.ptr, this.count);
    this.count += k;
  }

  /** Appends a copy of columns first … first+k−1 of another block of the same length. */
  appendCopy(from: ColumnBlock, first: number, k: number): void {
    this.columns
      .view()
      .set(from.columns.view().subarray(first * this.len, (first + k) * this.len), this.count * this.len);
    this.count += k;
  }

  /** Orthonormalises the last k columns against the earlier ones and among themselves. */
  orthonormalizeLast(k: number): void {
    if (k > this.width) throw new Error(`ColumnBlock: ${k} columns at once exceed the width ${this.width}`);
    this.ws.k.orthonormalize(this.columns.ptr, this.count - k, k, this.len, this.scratch.ptr);
  }

  /** Columns first … first+k−1 as a row-major float32 len × k matrix (a GEMM operand). */
  rowMajor(first: number, k: number): Float32Array {
    this.ws.k.rowsFromColumns(this.columns.ptr, first, k, this.len, this.staging.ptr, k, 0);
    return this.staging.view().slice(0, this.len * k);
  }

  /** G = Cᵀ·C (count × count, row-major). */
  gram(): Float64Array {
    const out = this.ws.f64(this.count * this.count);
    this.ws.k.gram(this.columns.ptr, this.count, this.len, out.ptr);
    return out.view().slice();
  }

  /** Cᵀ·D (count × count, row-major) for another block D of the same length and count. */
  crossGram(d: ColumnBlock): Float64Array {
    if (d.len !== this.len || d.count !== this.count) throw new Error('ColumnBlock: crossGram of unlike blocks');
    const out = this.ws.f64(this.count * this.count);
    this.ws.k.dotBlock(this.columns.ptr, 0, this.count, d.columns.ptr, 0, this.count, this.len, out.ptr, 0);
    return out.view().slice();
  }

  /** Columns 0 … n−1 of C·W for a row-major W with `stride` columns, as one block product:
   *  len × n float64 columns in the workspace (valid until it is reset). */
  product(w: Float64Array, stride: number, n: number): F64Region {
    const coef = this.ws.f64(this.count * n);
    const cv = coef.view();
    for (let p = 0; p < this.count; p++) for (let q = 0; q < n; q++) cv[p * n + q] = w[p * stride + q];
    const out = this.ws.f64(this.len * n);
    out.view().fill(0);
    if (n) this.ws.k.axpyBlock(this.columns.ptr, 0, this.count, coef.ptr, n, out.ptr, 0, n, this.len, 1);
    return out;
  }

  /** Σ_p w[p·stride + j]·column p for each j of `js` — columns of C·W for a row-major W,
   *  handed to `use` one at a time (each view valid only during its call). All are formed
   *  at once, as one block product. */
  combine(w: Float64Array, stride: number, js: number[], use: (j: number, v: Float64Array) => void): void {
    const n = js.length;
    if (!n) return;
    const coef = this.ws.f64(this.count * n);
    const cv = coef.view();
    for (let p = 0; p < this.count; p++) for (let q = 0; q < n; q++) cv[p * n + q] = w[p * stride + js[q]];
    const out = this.ws.f64(this.len * n);
    out.view().fill(0);
    this.ws.k.axpyBlock(this.columns.ptr, 0, this.count, coef.ptr, n, out.ptr, 0, n, this.len, 1);
    js.forEach((j, q) => use(j, out.view().subarray(q * this.len, (q + 1) * this.len)));
  }
}

/** Row-major float32 (len rows of `ld` values) whose columns 0 … n−1 are the float64 columns
 *  `cols` (len × n), column j times scales[j]; columns n … ld−1 are zero. */
export function scaledRows(
  ws: Workspace,
  cols: F64Region,
  len: number,
  scales: Float64Array,
  ld: number,
): Float32Array {
  const n = scales.length;
  const sc = ws.f64(n, scales);
  const dst = ws.f32(len * ld);
  if (ld > n) dst.view().fill(0);
  ws.k.rowsFromColumns(cols.ptr, 0, n, len, dst.ptr, ld, sc.ptr);
  return dst.view().slice();
}
