// Truncated SVD by randomized block Krylov iteration (Musco & Musco 2015): the Krylov
// blocks R·Ω, R·Rᵀ·R·Ω, … are kept and a Rayleigh–Ritz step over their span picks the
// top-r singular triplets. For the flat spectra of quantization residuals this converges
// far faster per matrix product than plain subspace iteration, at the same cost: each
// pass is two GEMMs (R·Ω and Rᵀ·Y, with R and Rᵀ both held on the device: a transposed
// product on the wasm backend repacks R, which costs more than uploading Rᵀ), and Rᵀ·K
// comes for free from the passes. The Krylov-space algebra runs in float64 in the kernels.
// LoftQ calls this once per iteration on a residual that changes little between
// iterations: the previous top-k right singular vectors are a warm start.
//
// In a metric H (symmetric positive semidefinite, cols × cols) the same iteration gives the
// truncated SVD of R·S for every S with S·Sᵀ = H — without S: (R·S)(R·S)ᵀ = R·H·Rᵀ, so the
// passes R·Ω and H·(Rᵀ·Y) build the same left Krylov space, B·Bᵀ = (Rᵀ·K)ᵀ·H·(Rᵀ·K), and the
// best rank-r approximation of R·S is K_r·K_rᵀ·R·S = (K_r·K_rᵀ·R)·S: its factors are K_r·√Σ
// and √Σ⁻¹·K_rᵀ·R, read off Rᵀ·K as in the plain case. Calibrated LoftQ (H = G + λI) thus
// needs neither a factor of H nor a solve against it.

import type { DeviceMatrix } from './backend';
import { symmetricEigen } from './dense';
import { ColumnBlock, scaledRows } from './columns';
import { withWorkspace } from '../kernels/kernels';

export interface TruncatedSvd {
  /** rows × r, = U_r·√Σ_r (PEFT's lora_B). */
  left: Float32Array;
  /** r × cols, = √Σ_r·V_rᵀ (PEFT's lora_A); in a metric, √Σ_r⁻¹·U_rᵀ·R, so that left·right
   *  is R projected onto the top-r left singular vectors of R·S. */
  right: Float32Array;
  /** Singular value estimates (of R·S in a metric), descending (as many as the Krylov space
   *  holds). */
  singularValues: Float64Array;
  /** cols × k row-major: the next warm start Ω, whose product R·Ω spans the top-k left
   *  singular vector estimates (the right singular vectors; in a metric H·Rᵀ·U·Σ⁻²). */
  subspace: Float32Array;
}

export interface HeldMatrix {
  rows: number;
  cols: number;
  held: DeviceMatrix;
  heldT: DeviceMatrix;
  /** H: the SVD is that of R·S with S·Sᵀ = H (see above). */
  metric?: DeviceMatrix;
}

export async function truncatedSvd(
  matrix: HeldMatrix,
  rank: number,
  start: Float32Array,
  k: number,
  passes: number,
  /** Accumulates seconds: svd.gemm (the products), svd.krylov (the Krylov blocks'
   *  orthonormalisation), svd.ritz (the Rayleigh–Ritz step). */
  phases?: Record<string, number>,
): Promise<TruncatedSvd> {
  let mark = performance.now();
  const lap = (phase: string) => {
    const now = performance.now();
    if (phases) phases[phase] = (phases[phase] ?? 0) + (now - mark) / 1000;
    mark = now;
  };
  const { rows: m, cols: n } = matrix;
  // The Krylov space cannot usefully exceed the matrix's rank.
  const q = Math.max(1, Math.min(passes, Math.ceil(Math.min(m, n) / k)));
  return withWorkspace(async (ws) => {
    const ys = new ColumnBlock(ws, m, q * k, k);
    const zs = new ColumnBlock(ws, n, q * k, k);
    // In a metric: H·Rᵀ·Y beside Rᵀ·Y (the next Ω and the Rayleigh–Ritz step use it).
    const hzs = matrix.metric ? new ColumnBlock(ws, n, q * k, k) : zs;
    const next = new ColumnBlock(ws, n, k, k);
    let omega = start;
    for (let j = 0; j < q; j++) {
      const y = await matrix.held.times(omega, k);
      lap('svd.gemm');
      ys.appendRows(y, k);
      ys.orthonormalizeLast(k);
      const yRows = ys.rowMajor(ys.count - k, k);
      lap('svd.krylov');
      const z = await matrix.heldT.times(yRows, k);
      lap('svd.gemm');
      zs.appendRows(z, k);
      if (matrix.metric) {
        hzs.appendRows(await matrix.metric.times(z, k), k);
        lap('svd.gemm');
      }
      if (j < q - 1) {
        next.count = 0;
        next.appendCopy(hzs, hzs.count - k, k);
        next.orthonormalizeLast(k);
        omega = next.rowMajor(0, k);
      }
      lap('svd.krylov');
    }
    // K = [Y_0 … Y_{q-1}] (m × K, orthonormal) and Z = Rᵀ·K (n × K). B = Kᵀ·R = Zᵀ;
    // B·Bᵀ = Zᵀ·Z = W·Λ·Wᵀ gives B's left singular vectors W and σ = √λ, its right ones
    // Z·W·Σ⁻¹, so R ≈ (K·W)·Σ·(Z·W·Σ⁻¹)ᵀ.
    const K = ys.count;
    const { values, vectors: w } = symmetricEigen(matrix.metric ? symmetrized(zs.crossGram(hzs), K) : zs.gram(), K, ws);
    const sigma = Float64Array.from(values, (v) => Math.sqrt(Math.max(v, 0)));
    const r = Math.min(rank, K);
    const kk = Math.min(k, K);
    // Rank-deficient: a column with σ = 0 gets scale 0 and stays zero.
    const scales = (count: number, f: (s: number) => number) =>
      Float64Array.from({ length: count }, (_, j) => (sigma[j] > 0 ? f(sigma[j]) : 0));
    const left = scaledRows(ws, ys.product(w, K, r), m, scales(r, Math.sqrt), rank);
    const zw = zs.product(w, K, Math.max(r, kk));
    // R·(H·Rᵀ·U·Σ⁻²) = U in a metric; R·V·Σ⁻¹ = U without one.
    const subspace = matrix.metric
      ? scaledRows(
          ws,
          hzs.product(w, K, kk),
          n,
          scales(kk, (s) => 1 / (s * s)),
          k,
        )
      : scaledRows(
          ws,
          zw,
          n,
          scales(kk, (s) => 1 / s),
          k,
        );
    const right = new Float32Array(rank * n);
    const v = zw.view();
    const down = scales(r, (s) => 1 / Math.sqrt(s));
    for (let j = 0; j < r; j++) for (let i = 0; i < n; i++) right[j * n + i] = v[j * n + i] * down[j];
    lap('svd.ritz');
    return { left, right, singularValues: sigma, subspace };
  });
}

/** (M + Mᵀ)/2: Rᵀ·K and H·Rᵀ·K's cross Gram is symmetric up to the products' rounding. */
function symmetrized(m: Float64Array, n: number): Float64Array {
  for (let i = 0; i < n; i++)
    for (let j = 0; j < i; j++) m[i * n + j] = m[j * n + i] = (m[i * n + j] + m[j * n + i]) / 2;
  return m;
}
