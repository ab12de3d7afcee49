// Calibrated (activation-aware) LoftQ for one matrix W (out × in), given S with S·Sᵀ = G + λI
// for the layer's input second moment G (calibrationFactor.ts). T times:
//   Q ← quantize(W − B·A);  (B, M) ← rank-r SVD of (W − Q)·S;  A ← M·S⁻¹,
// which is the exact minimiser of ‖(W − Q − B·A)·S‖_F over rank-r B·A (Eckart–Young on the
// invertible change of variables L ↦ L·S). The quantizer step still minimises the weight
// error, so the output error need not fall at every iteration: the iterate with the lowest
// ‖(W − Q − B·A)·S‖ / ‖W·S‖ is the one returned (bestIter), not blindly the last.
// G lives on the input side: W must be stored [out, in] (GPT-2's Conv1D, stored [in, out],
// is refused by the engine before it gets here).

import type { MatrixSettings } from '../protocol/lsp_ext';
import type { MatmulBackend } from '../linalg/backend';
import { codebook } from '../quant/codebook';
import { quantizeRegion, quantizedRegions } from '../quant/quantize';
import { withWorkspace } from '../kernels/kernels';
import { gaussian } from '../linalg/dense';
import { truncatedSvd } from '../linalg/rsvd';
import { throwIfAborted } from '../base/errors';
import { LoftqOptions, LoftqResult, svdSchedule } from './loftq';
import { applyFactor, CalibrationFactor, solveRight, transposeF64 } from './calibrationFactor';

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

/** X·B on the backend for row-major X (rows × cols) and B (cols × n). */
export function backendTimes(backend: MatmulBackend) {
  return async (x: Float32Array, rows: number, cols: number, b: Float32Array): Promise<Float32Array> => {
    const held = await backend.hold(x, rows, cols);
    try {
      return await held.times(b, b.length / cols);
    } finally {
      held.dispose();
    }
  };
}

export async function calibratedLoftqMatrix(
  w: Float32Array,
  rows: number,
  cols: number,
  s: MatrixSettings,
  backend: MatmulBackend,
  factor: CalibrationFactor,
  opts: LoftqOptions = {},
): Promise<CalibratedResult> {
  const size = rows * cols;
  if (w.length !== size) throw new Error(`calibratedLoftqMatrix: ${w.length} values for ${rows}x${cols}`);
  if (factor.dim !== cols)
    throw new Error(`calibratedLoftqMatrix: statistics of width ${factor.dim} for a matrix with ${cols} inputs`);
  const table = codebook(s.quantizer, s.bits);
  const { rank, k, firstPasses, laterPasses, lastPasses } = svdSchedule(rows, cols, s.rank, opts);
  const times = backendTimes(backend);
  const l32 = factor.kind === 'full' ? Float32Array.from(factor.l) : undefined;
  const lt = factor.kind === 'full' ? transposeF64(factor.l, cols) : undefined;
  const timesS = (x: Float32Array) => applyFactor(x, rows, factor, times, l32);

  return withWorkspace(async (ws) => {
    // Every region is carved before any view is handed out: growing the memory detaches views.
    const W = ws.f32(size, w);
    const target = ws.f32(size, w);
    const residual = ws.f32(size);
    const rs = ws.f32(size);
    const rsT = ws.f32(size);
    const zero = ws.f32(size);
    const factorB = ws.f32(rows * rank);
    const factorA = ws.f32(rank * cols);
    const factorM = ws.f32(rank * cols);
    const packed = ws.f32(rank * cols);
    const quantized = quantizedRegions(ws, size, s.blockSize);
    zero.view().fill(0); // a reused workspace holds the previous job's values

    const normW = Math.sqrt(ws.k.sumSquares(W.ptr, size));
    rs.view().set(await timesS(W.view()));
    const normWS = Math.sqrt(ws.k.sumSquares(rs.ptr, size));
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
          codes: Uint8Array;
          scales: Float32Array;
          q: Float32Array;
          a: Float32Array;
          b: Float32Array;
        }
      | undefined;
    let spectrum: Float64Array | undefined;

    const phases = opts.phases ?? {};
    let mark = performance.now();
    const lap = (phase: string) => {
      const now = performance.now();
      phases[phase] = (phases[phase] ?? 0) + (now - mark) / 1000;
      mark = now;
    };
    for (let t = 0; t < s.iters; t++) {
      throwIfAborted(opts.signal);
      quantizeRegion(ws, target, table, s.quantizer, s.blockSize, quantized);
      const qErr = ws.k.difference(W.ptr, quantized.values.ptr, residual.ptr, size);
      lap('quantize');
      rs.view().set(await timesS(residual.view()));
      if (t === 0) {
        qloraRelError = rel(qErr, normW);
        qloraOutputRelError = rel(ws.k.sumSquares(rs.ptr, size), normWS);
      }
      ws.k.transpose(rs.ptr, rows, cols, rsT.ptr);
      lap('calib');
      const held = await backend.hold(rs.view(), rows, cols);
      const heldT = await backend.hold(rsT.view(), cols, rows);
      let svd;
      try {
        svd = await truncatedSvd(
          { rows, cols, held, heldT },
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
      spectrum = svd.singularValues;
      lap('svd');
      throwIfAborted(opts.signal);
      factorB.view().set(svd.left);
      factorM.view().set(svd.right);
      const a = Float32Array.from(solveRight(Float64Array.from(svd.right), rank, factor, lt));
      factorA.view().set(a);
      lap('calib');
      // ‖(R − B·A)·S‖ = ‖R·S − B·M‖ (A·S = M): no second GEMM.
      const outErr = rel(
        ws.k.lowRankStep(rs.ptr, zero.ptr, factorB.ptr, factorM.ptr, rows, cols, rank, 0, packed.ptr),
        normWS,
      );
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
        best = {
          iter: t + 1,
          err: outErr,
          codes: quantized.codes.view().slice(),
          scales: quantized.scales.view().slice(),
          q: quantized.values.view().slice(),
          a,
          b: svd.left,
        };
      }
      lap('lowRank');
    }
    if (!best) throw new Error('calibratedLoftqMatrix: iters must be ≥ 1');
    return {
      codes: best.codes,
      scales: best.scales,
      q: best.q,
      loraA: best.a,
      loraB: best.b,
      rank,
      relErrorPerIter,
      qloraRelError,
      frobeniusNorm: normW,
      residualSpectrum: opts.spectrum && spectrum ? Array.from(spectrum.subarray(0, opts.spectrum)) : undefined,
      outputRelErrorPerIter,
      qloraOutputRelError,
      bestIter: best.iter,
      outputNorm: normWS,
    };
  });
}
