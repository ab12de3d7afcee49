// Small dense linear algebra on the host: the symmetric eigenproblem of k × k matrices
// (Householder + implicit QL, float64), seeded Gaussian samples, blocked transposes.

import { Workspace, withWorkspace } from '../kernels/kernels';

export interface SymmetricEigen {
  /** Descending. */
  values: Float64Array;
  /** Column j (row-major k×k, element [i*k + j]) is the eigenvector of values[j]. */
  vectors: Float64Array;
}

/** Eigen-decomposition of a symmetric k×k matrix: Householder reduction to tridiagonal
 *  form, then the implicit QL algorithm (the EISPACK tred2/tql2 pair, in the WebAssembly
 *  kernels: in JavaScript it was a fifth of a rank-64 run). O(k³). */
export function symmetricEigen(s: Float64Array, k: number, within?: Workspace): SymmetricEigen {
  // Inside a job's workspace (the SVD's) rather than a third one: withWorkspace keeps two
  // idle, so a third nested one made the matrix's own workspace the one dropped, and every
  // matrix grew a fresh one.
  const solve = (ws: Workspace) => {
    const a = ws.f64(k * k, s),
      d = ws.f64(k),
      e = ws.f64(k);
    ws.k.symmetricEigen(a.ptr, k, d.ptr, e.ptr);
    const dv = d.view(),
      av = a.view();
    const order = Array.from({ length: k }, (_, i) => i).sort((x, y) => dv[y] - dv[x]);
    const values = Float64Array.from(order, (i) => dv[i]);
    const vectors = new Float64Array(k * k);
    order.forEach((src, dst) => {
      for (let r = 0; r < k; r++) vectors[r * k + dst] = av[r * k + src];
    });
    return { values, vectors };
  };
  return within ? solve(within) : withWorkspace(solve);
}

/** Deterministic standard-normal samples (mulberry32 + Box–Muller). */
export function gaussian(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const u = 1 - next(),
      v = next();
    const r = Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < count) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** Transpose of a row-major rows×cols float32 matrix. */
export function transpose(
  a: Float32Array,
  rows: number,
  cols: number,
  out = new Float32Array(rows * cols),
): Float32Array {
  const B = 64; // cache blocking
  for (let i0 = 0; i0 < rows; i0 += B) {
    const i1 = Math.min(rows, i0 + B);
    for (let j0 = 0; j0 < cols; j0 += B) {
      const j1 = Math.min(cols, j0 + B);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) out[j * rows + i] = a[i * cols + j];
    }
  }
  return out;
}
