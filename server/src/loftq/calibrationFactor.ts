// The factor S of calibrated LoftQ: S·Sᵀ = G + λI, where G = XᵀX/N is the second moment of
// the layer's input. Then ‖(W − Q − B·A)·S‖_F² = Σ_tokens ‖(W − Q − B·A)·x‖² / N (+ the ridge
// term), the output error the init should minimise.
//
// The ridge λ = RIDGE × mean(diag G). Why it is needed, and why this size:
// - G is singular whenever the calibration tokens span fewer directions than the input
//   width (16×128 tokens against a 5632-wide down_proj input), and nearly singular along
//   directions the calibration text barely excites. The adapter is free there — any value
//   costs nothing on the calibration tokens — and S⁻¹ scales it up without bound, so the
//   init would fit the calibration set and hurt held-out tokens.
// - λ relative to mean(diag G) makes it independent of the activations' scale; 1% is the
//   damping GPTQ uses for the same Hessian (percdamp = 0.01). Measured on stories260K NF4 r16
//   (README "Calibrated LoftQ", held-out KL): see the sweep there; a wide range around 1%
//   gives nearly the same KL, far smaller ridges overfit, far larger ones tend to plain LoftQ.
//
// Full G → S = the lower Cholesky factor L (float64), applied as a GEMM. Diagonal G (wide
// inputs, imatrix) → S = diag(√(g_jj + λ)), applied as column scaling.

import type { InputStat } from '../model/stats';
import { CALIBRATION_SPECS } from '../registry';
import { withWorkspace, type Workspace } from '../kernels/kernels';
import { nativeKernelsOnArrays } from '../kernels/native';

/** Default ridge, relative to the mean of diag(G) (a registry setting). */
export const DEFAULT_RIDGE: number = CALIBRATION_SPECS.ridge.default;

/** Plain or shared (SharedArrayBuffer) memory. */
type F64 = Float64Array<ArrayBufferLike>;

export type CalibrationFactor =
  /** Lower-triangular L, row-major dim × dim, with L·Lᵀ = G + λI. */
  | { kind: 'full'; dim: number; l: F64 }
  /** S = diag(s). */
  | { kind: 'diag'; dim: number; s: F64 };

/** Thrown when G + λI is not positive definite (G was not a second moment). */
export class FactorError extends Error {
  override name = 'FactorError';
}

function meanDiagonal(stat: InputStat): number {
  let sum = 0;
  for (let i = 0; i < stat.dim; i++) sum += stat.kind === 'full' ? stat.g[i * stat.dim + i] : stat.d[i];
  return sum / stat.dim;
}

/**
 * S for one input statistic. An all-zero G (an input that was never nonzero) gives S = I,
 * the plain LoftQ objective: there is nothing to weight by. `alloc` lets the caller place
 * the result in shared memory (worker threads read it without a copy).
 */
export function calibrationFactor(
  stat: InputStat,
  ridge = DEFAULT_RIDGE,
  alloc: (n: number) => F64 = (n) => new Float64Array(n),
): CalibrationFactor {
  const n = stat.dim;
  const mean = meanDiagonal(stat);
  if (!Number.isFinite(mean) || mean < 0)
    throw new FactorError(`its second moment has a negative or non-finite diagonal (mean ${mean})`);
  const lambda = mean > 0 ? ridge * mean : 0;
  if (stat.kind === 'diag' || mean === 0) {
    const s = alloc(n);
    for (let i = 0; i < n; i++) {
      const v = mean === 0 ? 1 : (stat.kind === 'diag' ? stat.d[i] : stat.g[i * n + i]) + lambda;
      if (!(v > 0)) throw new FactorError(`diagonal entry ${i} of its second moment is ${v - lambda}`);
      s[i] = Math.sqrt(v);
    }
    return { kind: 'diag', dim: n, s };
  }
  return { kind: 'full', dim: n, l: cholesky(stat.g, n, lambda, alloc(n * n)) };
}

/** Lower Cholesky factor of G + λI (row-major, float64): in the native module, blocked and in
 *  place in `l`, when this thread runs native kernels; else in the WebAssembly kernels (a
 *  float64 JavaScript loop ran at ~0.3 GFLOP/s, 3 minutes for a 5632-wide input; the wasm
 *  kernel takes ~14 s, the native one under a second). */
export function cholesky(g: Float64Array, n: number, lambda: number, l: F64 = new Float64Array(n * n)): F64 {
  const native = nativeKernelsOnArrays();
  if (native) {
    l.set(g.subarray(0, n * n));
    // The array is the kernel's memory: L sits at offset 0.
    const bytes = new Uint8Array(l.buffer, l.byteOffset, l.byteLength);
    const bad = native.addon.cholesky(bytes, 0, n, lambda, native.threads);
    if (bad >= 0) throw notPositive(bad, l[bad * n + bad]);
    return l;
  }
  return withWorkspace((ws) => {
    const m = ws.f64(n * n, g);
    const bad = ws.k.cholesky(m.ptr, n, lambda);
    if (bad >= 0) throw notPositive(bad, m.view()[bad * n + bad]);
    l.set(m.view());
    return l;
  });
}

function notPositive(row: number, pivot: number): FactorError {
  return new FactorError(`its second moment plus the ridge is not positive definite (pivot ${row} is ${pivot})`);
}

/**
 * A = M·S⁻¹ for M (r × dim, float64 row-major): the adapter whose product with S is M, once
 * per LoftQ iteration. Full S = L: L is copied into the workspace once, and each solve is the
 * kernels' back substitution (solveRightLower; it was a JavaScript loop, ~0.6 s per solve at a
 * 5632-wide input). Diagonal: a division per column. Carves its regions when made, so make it
 * before any view of the workspace is handed out.
 */
export function adapterSolver(
  ws: Workspace,
  factor: CalibrationFactor,
  r: number,
): (m: ArrayLike<number>) => Float64Array {
  const n = factor.dim;
  if (factor.kind === 'diag') {
    const s = factor.s;
    return (m) => {
      const a = Float64Array.from(m);
      for (let p = 0; p < r; p++) for (let j = 0; j < n; j++) a[p * n + j] /= s[j];
      return a;
    };
  }
  // Native kernels: the solve reads L where it lies (shared memory), no 254 MB copy per matrix.
  const native = nativeKernelsOnArrays();
  if (native) {
    return (m) => {
      const a = Float64Array.from(m);
      native.addon.solveRightLowerArrays(a, r, factor.l as Float64Array, n, native.threads);
      return a;
    };
  }
  const l = ws.f64(n * n, factor.l as Float64Array);
  const rhs = ws.f64(r * n);
  return (m) => {
    rhs.view().set(m);
    ws.k.solveRightLower(rhs.ptr, r, l.ptr, n);
    return rhs.view().slice();
  };
}
