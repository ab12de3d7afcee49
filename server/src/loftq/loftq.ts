// LoftQ for one matrix W (rows × cols): starting from A·Bᵀ = 0, T times
//   Q ← quantize(W − A·Bᵀ);  (A, B) ← best rank-r approximation of (W − Q),
// recording ‖W − Q − A·Bᵀ‖_F / ‖W‖_F after each iteration and the QLoRA baseline
// ‖W − quantize(W)‖_F / ‖W‖_F. float32 values, float64 accumulation of norms.

import type { MatrixSettings } from '../protocol/lsp_ext';
import type { MatmulBackend } from '../linalg/backend';
import { codebook } from '../quant/codebook';
import { quantizeRegion, quantizedRegions } from '../quant/quantize';
import { withWorkspace } from '../kernels/kernels';
import { gaussian } from '../linalg/dense';
import { truncatedSvd } from '../linalg/rsvd';
import { throwIfAborted } from '../base/errors';

export interface LoftqResult {
  codes: Uint8Array;
  scales: Float32Array;
  /** Dequantized backbone Q (rows × cols). */
  q: Float32Array;
  /** r × cols (PEFT lora_A). */
  loraA: Float32Array;
  /** rows × r (PEFT lora_B). */
  loraB: Float32Array;
  rank: number;
  relErrorPerIter: number[];
  qloraRelError: number;
  frobeniusNorm: number;
  /** Top singular values of the last residual W − Q (when asked for). */
  residualSpectrum?: number[];
}

export interface LoftqOptions {
  signal?: AbortSignal;
  /** Keep this many top singular values of the final residual. */
  spectrum?: number;
  /** Block-Krylov passes in the first LoftQ iteration (random start) and later ones. */
  firstPasses?: number;
  laterPasses?: number;
  /** Passes in the final iteration, whose factors are the ones written. */
  lastPasses?: number;
  /** Matrices whose whole column space fits in this many passes get an exact SVD. */
  exactPasses?: number;
  oversampling?: number;
  seed?: number;
  /** Accumulates seconds per phase (quantize, svd — of which svd.gemm, svd.krylov, svd.ritz — lowRank). */
  phases?: Record<string, number>;
}

/** Oversampling of the randomized SVD: enough to make the top-r estimates accurate. */
export function defaultOversampling(rank: number): number {
  return Math.max(8, Math.ceil(rank / 2));
}

/** Rank, Krylov block width and block-Krylov passes per iteration for a rows × cols matrix
 *  (shared with calibrated LoftQ, which runs the same SVD on (W − Q)·S). */
export function svdSchedule(rows: number, cols: number, requestedRank: number, opts: LoftqOptions = {}) {
  const rank = Math.min(requestedRank, rows, cols);
  const k = Math.min(Math.max(rank + (opts.oversampling ?? defaultOversampling(rank)), opts.spectrum ?? 0), rows, cols);
  // Small matrices: a Krylov space as large as the matrix makes the SVD exact, cheaply.
  // Larger ones: 4 passes from the random start, 1 per warm-started iteration (2 at high
  // rank), 2 for the last (whose factors are written).
  const fullSpace = Math.ceil(Math.min(rows, cols) / k);
  const exact = fullSpace <= (opts.exactPasses ?? 8) || (Math.min(rows, cols) <= 256 && rows * cols <= 1 << 18);
  const firstPasses = exact ? fullSpace : (opts.firstPasses ?? 3);
  // High ranks reach further into the residual's flat spectrum, where one warm pass loses
  // measurably (≈0.5% at r = 64): they keep two.
  const laterPasses = exact ? fullSpace : (opts.laterPasses ?? (rank >= 32 ? 2 : 1));
  const lastPasses = exact ? fullSpace : (opts.lastPasses ?? 2);
  return { rank, k, firstPasses, laterPasses, lastPasses };
}

export async function loftqMatrix(
  w: Float32Array,
  rows: number,
  cols: number,
  s: MatrixSettings,
  backend: MatmulBackend,
  opts: LoftqOptions = {},
): Promise<LoftqResult> {
  const size = rows * cols;
  if (w.length !== size) throw new Error(`loftqMatrix: ${w.length} values for ${rows}x${cols}`);
  const table = codebook(s.quantizer, s.bits);
  const { rank, k, firstPasses, laterPasses, lastPasses } = svdSchedule(rows, cols, s.rank, opts);

  // The matrix-sized buffers live in kernel memory, where the element-wise passes run.
  return withWorkspace(async (ws) => {
    const W = ws.f32(size, w);
    const normW = Math.sqrt(ws.k.sumSquares(W.ptr, size));
    const rel = (sumSq: number) => (normW > 0 ? Math.sqrt(sumSq) / normW : 0);

    const target = ws.f32(size, w);
    const residual = ws.f32(size);
    // Rᵀ lives in target's memory: target is consumed by the quantizer and refilled only by
    // the low-rank step, and the transpose is needed only in between. (Kernel memory is
    // wasm32, at most 4 GiB: this keeps a 8192×28672 matrix within it.)
    const residualT = target;
    const factorB = ws.f32(rows * rank);
    const factorA = ws.f32(rank * cols);
    const packedA = ws.f32(rank * cols);
    const quantized = quantizedRegions(ws, size, s.blockSize);
    let loraA: Float32Array = new Float32Array(rank * cols);
    let loraB: Float32Array = new Float32Array(rows * rank);
    let subspace: Float32Array = gaussian(cols * k, opts.seed ?? 0x10f7);
    let spectrum: Float64Array | undefined;
    const relErrorPerIter: number[] = [];
    let qloraRelError = 0;

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
      if (t === 0) qloraRelError = rel(qErr);
      lap('quantize');

      ws.k.transpose(residual.ptr, rows, cols, residualT.ptr);
      // Some backends (cpu, webgpu) keep these views until first use rather than copying:
      // the regions are not written, and the workspace does not grow, until disposal.
      const held = await backend.hold(residual.view(), rows, cols);
      const heldT = await backend.hold(residualT.view(), cols, rows);
      try {
        const svd = await truncatedSvd(
          { rows, cols, held, heldT },
          rank,
          subspace,
          k,
          t === 0 ? firstPasses : t === s.iters - 1 ? lastPasses : laterPasses,
          phases,
        );
        loraA = svd.right;
        loraB = svd.left;
        subspace = svd.subspace;
        spectrum = svd.singularValues;
      } finally {
        held.dispose();
        heldT.dispose();
      }
      lap('svd');
      throwIfAborted(opts.signal);
      factorB.view().set(loraB);
      factorA.view().set(loraA);
      // One pass: this iteration's error ‖W − Q − B·A‖ and (but after the last) the next
      // iteration's input W − B·A.
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
            packedA.ptr,
          ),
        ),
      );
      lap('lowRank');
    }

    return {
      codes: quantized.codes.view().slice(),
      scales: quantized.scales.view().slice(),
      q: quantized.values.view().slice(),
      loraA,
      loraB,
      rank,
      relErrorPerIter,
      qloraRelError,
      frobeniusNorm: normW,
      residualSpectrum: opts.spectrum && spectrum ? Array.from(spectrum.subarray(0, opts.spectrum)) : undefined,
    };
  });
}
