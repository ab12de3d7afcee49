// The metric of calibrated LoftQ: H = G + λI, where G = XᵀX/N is the second moment of the
// layer's input. Then ‖(W − Q − B·A)·S‖_F² = tr((W − Q − B·A)·H·(W − Q − B·A)ᵀ) for any S with
// S·Sᵀ = H is Σ_tokens ‖(W − Q − B·A)·x‖² / N (+ the ridge term), the output error the init
// should minimise. Only products with H are needed (rsvd.ts, heldMetric.ts): no factor of H.
//
// The ridge λ = RIDGE × mean(diag G). Why it is needed, and why this size:
// - G is singular whenever the calibration tokens span fewer directions than the input
//   width (16×128 tokens against a 5632-wide down_proj input), and nearly singular along
//   directions the calibration text barely excites. Errors there cost nothing on the
//   calibration tokens, so without a ridge the rank-r step would be chosen by the calibration
//   set alone and could hurt held-out tokens. (With the factor S of earlier versions, A = M·S⁻¹
//   also needed S well conditioned; in the metric form the adapter is U_rᵀ·R, bounded by R.)
// - λ relative to mean(diag G) makes it independent of the activations' scale; 1% is the
//   damping GPTQ uses for the same Hessian (percdamp = 0.01). Measured on stories260K NF4 r16
//   (README "Calibrated LoftQ", held-out KL): see the sweep there; a wide range around 1%
//   gives nearly the same KL, far smaller ridges overfit, far larger ones tend to plain LoftQ.
//
// Full G → H applied as two triangular products of G's lower triangle. Diagonal G (wide
// inputs, imatrix) → H = diag(g_jj + λ), applied as row scaling.

import type { InputStat } from '../model/stats';
import { CALIBRATION_SPECS } from '../registry';

/** Default ridge, relative to the mean of diag(G) (a registry setting). */
export const DEFAULT_RIDGE: number = CALIBRATION_SPECS.ridge.default;

/** Plain or shared (SharedArrayBuffer) memory. */
type F64 = Float64Array<ArrayBufferLike>;

export type CalibrationMetric =
  /** H = G + λI, G symmetric row-major dim × dim (read, never written: q/k/v share it). */
  | { kind: 'full'; dim: number; g: F64; lambda: number }
  /** H = diag(d). */
  | { kind: 'diag'; dim: number; d: F64 };

/** Thrown when the statistics cannot be a second moment (negative or non-finite diagonal). */
export class StatisticsError extends Error {
  override name = 'StatisticsError';
}

/** H is held and multiplied in float32 (heldMetric.ts): an entry that overflows it would turn
 *  the adapters into NaN, so it is refused in that precision, not in float64's. */
function checkFloat32(i: number, h: number, lambda: number): void {
  if (!Number.isFinite(Math.fround(h)))
    throw new StatisticsError(
      `diagonal entry ${i} of its second moment (${h - lambda}, + ridge ${lambda}) overflows float32 (at most 3.4e38)`,
    );
}

function meanDiagonal(stat: InputStat): number {
  let sum = 0;
  for (let i = 0; i < stat.dim; i++) sum += stat.kind === 'full' ? stat.g[i * stat.dim + i] : stat.d[i];
  return sum / stat.dim;
}

/**
 * H for one input statistic. An all-zero G (an input that was never nonzero) gives H = I,
 * the plain LoftQ objective: there is nothing to weight by.
 */
export function calibrationMetric(stat: InputStat, ridge = DEFAULT_RIDGE): CalibrationMetric {
  const n = stat.dim;
  const mean = meanDiagonal(stat);
  if (!Number.isFinite(mean) || mean < 0)
    throw new StatisticsError(`its second moment has a negative or non-finite diagonal (mean ${mean})`);
  const lambda = mean > 0 ? ridge * mean : 0;
  if (!Number.isFinite(Math.fround(lambda)))
    throw new StatisticsError(`the ridge λ = ${ridge} × mean(diag G) = ${lambda} overflows float32`);
  if (stat.kind === 'diag' || mean === 0) {
    const d = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const v = mean === 0 ? 1 : (stat.kind === 'diag' ? stat.d[i] : stat.g[i * n + i]) + lambda;
      if (!(v > 0)) throw new StatisticsError(`diagonal entry ${i} of its second moment is ${v - lambda}`);
      checkFloat32(i, v, lambda);
      d[i] = v;
    }
    return { kind: 'diag', dim: n, d };
  }
  // A second moment's diagonal is ≥ 0; a negative one was not made by a forward pass.
  for (let i = 0; i < n; i++) {
    const v = stat.g[i * n + i];
    if (!(v >= 0)) throw new StatisticsError(`diagonal entry ${i} of its second moment is ${v}`);
    // |g_ij| ≤ √(g_ii·g_jj): a diagonal that fits float32 bounds every entry of G.
    checkFloat32(i, v + lambda, lambda);
  }
  return { kind: 'full', dim: n, g: stat.g, lambda };
}
