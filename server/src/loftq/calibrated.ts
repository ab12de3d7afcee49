// Calibrated (activation-aware) LoftQ for one matrix W (out × in), in the metric H = G + λI of
// the layer's input second moment G (calibrationMetric.ts), S·Sᵀ = H. T times:
//   Q ← quantize(W − B·A);  (B, M) ← rank-r SVD of (W − Q)·S;  A ← M·S⁻¹,
// which is the exact minimiser of ‖(W − Q − B·A)·S‖_F over rank-r B·A (Eckart–Young on the
// invertible change of variables L ↦ L·S). M·S⁻¹ = U_rᵀ·(W − Q) for the top-r left singular
// vectors U_r, which the SVD in the metric H returns directly (rsvd.ts): neither S nor a solve
// against it is computed. The quantizer step still minimises the weight
// error, so the output error need not fall at every iteration: the iterate with the lowest
// ‖(W − Q − B·A)·S‖ / ‖W·S‖ is the one returned (bestIter), not blindly the last.
// G lives on the input side: W must be stored [out, in] (GPT-2's Conv1D, stored [in, out],
// is refused by the engine before it gets here).

import type { MatrixSettings } from '../protocol/lsp_ext';
import type { MatmulBackend } from '../linalg/backend';
import { matrixGrid } from '../quant/grid';
import { withWorkspace, type F32Region, type Workspace } from '../kernels/kernels';
import { gaussian } from '../linalg/dense';
import { truncatedSvd } from '../linalg/rsvd';
import { throwIfAborted } from '../base/errors';
import { transposeInParts } from '../kernels/pool';
import { LoftqOptions, LoftqRegions, LoftqResult, phaseClock, resultOf, svdSchedule } from './loftq';
import type { CalibrationMetric } from './calibrationMetric';
import { HeldMetric, holdMetric } from './heldMetric';

export interface CalibratedResult extends LoftqResult {
  /** ‖(W − Q − B·A)·S‖ / ‖W·S‖ after each iteration. */
  outputRelErrorPerIter: number[];
  /** The QLoRA counterpart ‖(W − quantize(W))·S‖ / ‖W·S‖. */
  qloraOutputRelError: number;
  /** 1-based iteration whose (Q, A, B) are returned. */
  bestIter: number;
  /** ‖W·S‖_F. */
  outputNorm: number;
}

export interface CalibratedWorkspaceOptions extends LoftqOptions {
  /** ‖W·S‖² without a product: tr(W·G·Wᵀ) = Σ_t ‖W·x_t‖² / count, which the calibration pass
   *  summed from the outputs it computed anyway (InputStat.outputSquares), and H's ridge λ:
   *  ‖W·S‖² = meanSquare + λ·‖W‖². Otherwise measured like every iterate (one of the seven
   *  products as large as the matrix times its width). */
  knownOutput?: { meanSquare: number; lambda: number };
}

export interface CalibratedOptions extends CalibratedWorkspaceOptions {
  /** `metric` already held on `backend` (the caller measures the written matrix with it
   *  afterwards). */
  heldMetric?: HeldMetric;
}

export async function calibratedLoftqMatrix(
  w: Float32Array,
  rows: number,
  cols: number,
  s: MatrixSettings,
  backend: MatmulBackend,
  metric: CalibrationMetric,
  opts: CalibratedOptions = {},
): Promise<CalibratedResult> {
  const size = rows * cols;
  if (w.length !== size) throw new Error(`calibratedLoftqMatrix: ${w.length} values for ${rows}x${cols}`);
  if (metric.dim !== cols)
    throw new Error(`calibratedLoftqMatrix: statistics of width ${metric.dim} for a matrix with ${cols} inputs`);
  const held = opts.heldMetric ?? (await holdMetric(metric, backend));
  try {
    return await withWorkspace(async (ws) => {
      const W = ws.f32(size, w);
      return resultOf(await calibratedInWorkspace(ws, W, rows, cols, s, backend, held, opts));
    });
  } finally {
    if (held !== opts.heldMetric) held.dispose();
  }
}

/** Calibrated LoftQ's results still in the caller's workspace (loftq.ts LoftqRegions): the
 *  kept iterate's Q, codes and scales in `quantized`. */
export type CalibratedRegions = LoftqRegions & Omit<CalibratedResult, keyof LoftqResult>;

/** Calibrated LoftQ of W, a region of `ws` the caller filled, in the metric held on `backend`;
 *  W is not written. Matrix-sized kernel memory: W, the quantizer's target (Rᵀ in between, as
 *  in loftq.ts), the residual, Q's values and codes, and the kept iterate's codes. */
export async function calibratedInWorkspace(
  ws: Workspace,
  W: F32Region,
  rows: number,
  cols: number,
  s: MatrixSettings,
  backend: MatmulBackend,
  metric: HeldMetric,
  opts: CalibratedWorkspaceOptions = {},
): Promise<CalibratedRegions> {
  const size = rows * cols;
  if (W.length !== size) throw new Error(`calibratedLoftqMatrix: ${W.length} values for ${rows}x${cols}`);
  if (metric.h.rows !== cols)
    throw new Error(`calibratedLoftqMatrix: statistics of width ${metric.h.rows} for a matrix with ${cols} inputs`);
  const grid = matrixGrid(s, opts.dtype ?? 'F32');
  const { rank, k, firstPasses, laterPasses, lastPasses } = svdSchedule(rows, cols, s.rank, opts);
  // Every region is carved before any view is handed out: growing the memory detaches views.
  const target = ws.f32(size);
  const residual = ws.f32(size);
  // Rᵀ lives in target's memory, as in loftq.ts: the quantizer consumes target and the low-rank
  // step refills it; the transpose is needed only in between.
  const residualT = target;
  const factorB = ws.f32(rows * rank);
  const factorA = ws.f32(rank * cols);
  const packed = ws.f32(rank * cols);
  const quantized = grid.regions(ws, size);
  // The kept iterate's codes while later ones run; its values are decoded from them at the end
  // (grid.dequantize: the same bits), so no second copy of Q.
  const keptCodes = ws.u8(size);

  const sumSqW = ws.k.sumSquares(W.ptr, size);
  const normW = Math.sqrt(sumSqW);
  // Kernels plain LoftQ uses too (loftq.ts): the fused quantizer and the band transpose run
  // natively where the backend is native; quantize + difference and transpose did not.
  const pool = backend.kernels;
  const transpose = (src: F32Region, dst: F32Region) => transposeInParts(ws, pool, src.ptr, rows, cols, dst.ptr);
  const known = opts.knownOutput;
  let normWSq: number;
  if (known) normWSq = known.meanSquare + known.lambda * sumSqW;
  else {
    await transpose(W, residualT);
    normWSq = await metric.quadratic(residualT.view(), rows);
  }
  const normWS = Math.sqrt(normWSq);
  target.view().set(W.view());
  const rel = (sumSq: number, norm: number) => (norm > 0 ? Math.sqrt(sumSq) / norm : 0);

  let subspace: Float32Array = gaussian(cols * k, opts.seed ?? 0x10f7);
  const relErrorPerIter: number[] = [];
  const outputRelErrorPerIter: number[] = [];
  let qloraRelError = 0,
    qloraOutputRelError = 0;
  let best:
    | {
        iter: number;
        err: number;
        scales: Float32Array;
        zero?: Float32Array;
        a: Float32Array;
        b: Float32Array;
        /** σ of (W − Q)·S for this iterate's Q: the planner truncates this iterate's factors. */
        spectrum: Float64Array;
      }
    | undefined;

  const lap = phaseClock(opts.phases ?? {});
  for (let t = 0; t < s.iters; t++) {
    throwIfAborted(opts.signal);
    const qErr = await grid.quantizeResidual(ws, target, quantized, W, residual, pool);
    lap('quantize');
    await transpose(residual, residualT);
    // ‖R·S‖² = tr(R·H·Rᵀ) exactly (a band-triangular product): the output error of this
    // iterate is ‖R·S‖² minus what the rank-r step captures.
    const outSq = await metric.quadratic(residualT.view(), rows);
    if (t === 0) {
      qloraRelError = rel(qErr, normW);
      qloraOutputRelError = rel(outSq, normWS);
    }
    lap('calib');
    const held = await backend.hold(residual.view(), rows, cols);
    const heldT = await backend.hold(residualT.view(), cols, rows);
    let svd;
    try {
      svd = await truncatedSvd(
        { rows, cols, held, heldT, metric: metric.h },
        rank,
        subspace,
        k,
        t === 0 ? firstPasses : t === s.iters - 1 ? lastPasses : laterPasses,
      );
    } finally {
      held.dispose();
      heldT.dispose();
    }
    subspace = svd.subspace;
    lap('svd');
    throwIfAborted(opts.signal);
    factorB.view().set(svd.left);
    const a = svd.right;
    factorA.view().set(a);
    // ‖(R − B·A)·S‖² = ‖R·S − U_r·U_rᵀ·R·S‖² = ‖R·S‖² − Σ_{j<r} σ_j²: B·A·S is R·S projected
    // onto the span of r orthonormal left vectors (rsvd's Rayleigh–Ritz step), the σ_j² are
    // the squared norms it keeps.
    let kept = 0;
    for (let j = 0; j < Math.min(rank, svd.singularValues.length); j++) kept += svd.singularValues[j] ** 2;
    const outErr = rel(Math.max(outSq - kept, 0), normWS);
    const last = t === s.iters - 1;
    relErrorPerIter.push(
      rel(
        ws.k.lowRankStep(
          W.ptr,
          quantized.values.ptr,
          factorB.ptr,
          factorA.ptr,
          rows,
          cols,
          rank,
          last ? 0 : target.ptr,
          packed.ptr,
        ),
        normW,
      ),
    );
    outputRelErrorPerIter.push(outErr);
    if (!best || outErr < best.err) {
      // The last iterate stays where it is; an earlier one's codes are kept aside.
      if (!last) keptCodes.view().set(quantized.codes.view());
      best = {
        iter: t + 1,
        err: outErr,
        scales: quantized.scales.view().slice(),
        zero: quantized.zero?.view().slice(),
        a,
        b: svd.left,
        spectrum: svd.singularValues,
      };
    }
    lap('lowRank');
  }
  if (!best) throw new Error('calibratedLoftqMatrix: iters must be ≥ 1');
  if (best.iter !== s.iters) {
    quantized.codes.view().set(keptCodes.view());
    quantized.scales.view().set(best.scales);
    if (best.zero) quantized.zero!.view().set(best.zero);
    grid.dequantize(ws, quantized);
    lap('lowRank');
  }
  return {
    quantized,
    spare: [target, residual],
    spareCodes: keptCodes,
    loraA: best.a,
    loraB: best.b,
    rank,
    relErrorPerIter,
    qloraRelError,
    frobeniusNorm: normW,
    // In the metric: σ of (W − Q)·S for the returned iterate (the output error's rank shortcut).
    residualSpectrum: opts.spectrum ? Array.from(best.spectrum.subarray(0, opts.spectrum)) : undefined,
    outputRelErrorPerIter,
    qloraOutputRelError,
    bestIter: best.iter,
    outputNorm: normWS,
  };
}
