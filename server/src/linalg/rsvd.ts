// Truncated SVD by randomized block Krylov iteration (Musco & Musco 2015): the Krylov
// blocks R·Ω, R·Rᵀ·R·Ω, … are kept and a Rayleigh–Ritz step over their span picks the
// top-r singular triplets. For the flat spectra of quantization residuals this converges
// far faster per matrix product than plain subspace iteration, at the same cost: each
// pass is two GEMMs (R·Ω and Rᵀ·Y, with R and Rᵀ both held on the device because
// transposed products are slow on the wasm backend), and Rᵀ·K comes for free from the
// passes. The Krylov-space algebra runs in float64 on the host.
// LoftQ calls this once per iteration on a residual that changes little between
// iterations: the previous top-k right singular vectors are a warm start.

import type { DeviceMatrix, MatmulBackend } from './backend';
import { columnNorms, gram, orthonormalize, symmetricEigen } from './dense';

export interface TruncatedSvd {
  /** rows × r, = U_r·√Σ_r (PEFT's lora_B). */
  left: Float32Array;
  /** r × cols, = √Σ_r·V_rᵀ (PEFT's lora_A). */
  right: Float32Array;
  /** Singular value estimates, descending (as many as the Krylov space holds). */
  singularValues: Float64Array;
  /** cols × k: the top-k right singular vector estimates, the next warm start. */
  subspace: Float32Array;
}

export interface HeldMatrix {
  rows: number;
  cols: number;
  held: DeviceMatrix;
  heldT: DeviceMatrix;
}

/** Removes from block y (m×k) its components along the earlier orthonormal blocks. */
function projectOut(y: Float64Array, blocks: Float64Array[], m: number, k: number): void {
  for (const q of blocks) {
    for (let a = 0; a < k; a++) {
      for (let b = 0; b < k; b++) {
        let dot = 0;
        for (let i = 0; i < m; i++) dot += q[i * k + a] * y[i * k + b];
        if (dot !== 0) for (let i = 0; i < m; i++) y[i * k + b] -= dot * q[i * k + a];
      }
    }
  }
}

export async function truncatedSvd(
  backend: MatmulBackend,
  matrix: HeldMatrix,
  rank: number,
  start: Float32Array,
  k: number,
  passes: number,
): Promise<TruncatedSvd> {
  const { rows: m, cols: n } = matrix;
  // The Krylov space cannot usefully exceed the matrix's rank.
  const q = Math.max(1, Math.min(passes, Math.ceil(Math.min(m, n) / k)));
  const ys: Float64Array[] = [];
  const zs: Float32Array[] = [];
  let omega = start;
  for (let j = 0; j < q; j++) {
    const y = Float64Array.from(await matrix.held.times(omega, k));
    const norms = columnNorms(y, m, k);
    // Twice, for orthogonality to working precision.
    projectOut(y, ys, m, k);
    projectOut(y, ys, m, k);
    const yq = orthonormalize(y, m, k, norms);
    ys.push(yq);
    const z = await matrix.heldT.times(Float32Array.from(yq), k);
    zs.push(z);
    if (j < q - 1) omega = Float32Array.from(orthonormalize(z, n, k));
  }
  // K = [Y_0 … Y_{q-1}] (m × K) and Z = Rᵀ·K (n × K), interleaved into row-major blocks.
  const K = k * q;
  const kk = new Float64Array(m * K);
  const zz = new Float64Array(n * K);
  for (let j = 0; j < q; j++) {
    const y = ys[j], z = zs[j];
    for (let i = 0; i < m; i++) for (let c = 0; c < k; c++) kk[i * K + j * k + c] = y[i * k + c];
    for (let i = 0; i < n; i++) for (let c = 0; c < k; c++) zz[i * K + j * k + c] = z[i * k + c];
  }
  // B = Kᵀ·R = Zᵀ. B·Bᵀ = Zᵀ·Z = W·Λ·Wᵀ: B's left singular vectors W, σ = √λ, right
  // singular vectors Z·W·Σ⁻¹; R ≈ (K·W)·Σ·(Z·W·Σ⁻¹)ᵀ.
  const { values, vectors: w } = symmetricEigen(gram(zz, n, K), K);
  const sigma = Float64Array.from(values, (v) => Math.sqrt(Math.max(v, 0)));
  const r = Math.min(rank, K);
  const left = new Float32Array(m * rank);
  const right = new Float32Array(rank * n);
  const kNext = Math.min(k, K);
  const subspace = new Float32Array(n * k);
  for (let j = 0; j < Math.max(r, kNext); j++) {
    const s = sigma[j];
    if (!(s > 0)) continue; // rank-deficient: the column stays zero
    if (j < r) {
      const up = Math.sqrt(s);
      for (let i = 0; i < m; i++) {
        let acc = 0;
        for (let p = 0; p < K; p++) acc += kk[i * K + p] * w[p * K + j];
        left[i * rank + j] = acc * up;
      }
    }
    const inv = 1 / s;
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (let p = 0; p < K; p++) acc += zz[i * K + p] * w[p * K + j];
      if (j < r) right[j * n + i] = acc / Math.sqrt(s);
      if (j < kNext) subspace[i * k + j] = acc * inv;
    }
  }
  return { left, right, singularValues: sigma, subspace };
}
