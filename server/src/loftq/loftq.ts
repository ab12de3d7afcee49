// LoftQ for one matrix W (rows × cols): starting from A·Bᵀ = 0, T times
//   Q ← quantize(W − A·Bᵀ);  (A, B) ← best rank-r approximation of (W − Q),
// recording ‖W − Q − A·Bᵀ‖_F / ‖W‖_F after each iteration and the QLoRA baseline
// ‖W − quantize(W)‖_F / ‖W‖_F. float32 values, float64 accumulation of norms.

import type { MatrixSettings } from '../protocol/lsp_ext';
import type { MatmulBackend } from '../linalg/backend';
import { matrixGrid, type GridRegions } from '../quant/grid';
import { withWorkspace, type F32Region, type U8Region, type Workspace } from '../kernels/kernels';
import { inParts, transposeInParts } from '../kernels/pool';
import { gaussian } from '../linalg/dense';
import { truncatedSvd } from '../linalg/rsvd';
import { throwIfAborted } from '../base/errors';

export interface LoftqResult {
  codes: Uint8Array;
  scales: Float32Array;
  /** HQQ's zero point per group (affine grids only). */
  zero?: Float32Array;
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
  /** The checkpoint's dtype: HQQ's grid computes Q in it (codebook grids ignore it). */
  dtype?: string;
  /** Accumulates seconds per phase (quantize, svd — of which svd.hold (transpose and upload),
   *  svd.gemm, svd.krylov, svd.ritz — lowRank). */
  phases?: Record<string, number>;
}

/** Oversampling of the randomized SVD. Block Krylov oversamples by itself: with two or more
 *  passes the space holds 2·(r + 8) vectors or more. At rank 64, 8 gave the same final
 *  errors as 32 (ratio to the exact-SVD reference 1.0020 against 1.0010 at 2048² NF2,
 *  0.9999 against 1.0000 at NF4, 1.0010 against 1.0008 at 4096² NF2) for 25% fewer GEMM
 *  flops and a Rayleigh–Ritz problem of 144 instead of 192. */
export function defaultOversampling(_rank: number): number {
  return 8;
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

/** LoftQ's results still in the caller's workspace: Q's values, codes, scales (and zero) in
 *  `quantized`'s regions, and two matrix-sized regions whose contents are dead (`spare`: the
 *  caller may reuse them — the matrix job measures the written files there instead of growing
 *  its memory). Valid until the workspace is released. */
export interface LoftqRegions extends Omit<LoftqResult, 'codes' | 'scales' | 'zero' | 'q'> {
  quantized: GridRegions;
  spare: [F32Region, F32Region];
  /** A dead byte a weight as well, where the run had one (calibrated: the kept codes). */
  spareCodes?: U8Region;
}

/** A LoftqRegions result copied out of its workspace. */
export function resultOf<R extends LoftqRegions>(r: R): Omit<R, 'quantized' | 'spare' | 'spareCodes'> & LoftqResult {
  const { quantized, spare: _spare, spareCodes: _codes, ...rest } = r;
  return {
    ...rest,
    codes: quantized.codes.view().slice(),
    scales: quantized.scales.view().slice(),
    zero: quantized.zero?.view().slice(),
    q: quantized.values.view().slice(),
  };
}

export async function loftqMatrix(
  w: Float32Array,
  rows: number,
  cols: number,
  s: MatrixSettings,
  backend: MatmulBackend,
  opts: LoftqOptions = {},
): Promise<LoftqResult> {
  if (w.length !== rows * cols) throw new Error(`loftqMatrix: ${w.length} values for ${rows}x${cols}`);
  return withWorkspace(async (ws) => {
    const W = ws.f32(w.length, w);
    return resultOf(await loftqInWorkspace(ws, W, rows, cols, s, backend, opts));
  });
}

/** Adds the seconds since the last lap (or since it was made) to `phases[phase]`. */
export function phaseClock(phases: Record<string, number>): (phase: string) => void {
  let mark = performance.now();
  return (phase) => {
    const now = performance.now();
    phases[phase] = (phases[phase] ?? 0) + (now - mark) / 1000;
    mark = now;
  };
}

/** LoftQ of W, a region of `ws` the caller filled (the matrix job reads the checkpoint straight
 *  into it); W is not written. */
export async function loftqInWorkspace(
  ws: Workspace,
  W: F32Region,
  rows: number,
  cols: number,
  s: MatrixSettings,
  backend: MatmulBackend,
  opts: LoftqOptions = {},
): Promise<LoftqRegions> {
  const size = rows * cols;
  if (W.length !== size) throw new Error(`loftqMatrix: ${W.length} values for ${rows}x${cols}`);
  const grid = matrixGrid(s, opts.dtype ?? 'F32');
  const { rank, k, firstPasses, laterPasses, lastPasses } = svdSchedule(rows, cols, s.rank, opts);

  // The matrix-sized buffers live in kernel memory, where the element-wise passes run.
  const normW = Math.sqrt(ws.k.sumSquares(W.ptr, size));
  const rel = (sumSq: number) => (normW > 0 ? Math.sqrt(sumSq) / normW : 0);

  const target = ws.f32(size);
  const residual = ws.f32(size);
  // Rᵀ lives in target's memory: target is consumed by the quantizer and refilled only by
  // the low-rank step, and the transpose is needed only in between. (Kernel memory is
  // wasm32, at most 4 GiB: this keeps a 8192×28672 matrix within it.)
  const residualT = target;
  const factorB = ws.f32(rows * rank);
  const factorA = ws.f32(rank * cols);
  // With a kernel pool (the split backend) the element-wise passes run on every GEMM
  // thread at once, each part with its own packed copy of A.
  const pool = backend.kernels;
  const packedA = Array.from({ length: 1 + (pool?.helpers ?? 0) }, () => ws.f32(rank * cols));
  const quantized = grid.regions(ws, size);
  target.view().set(W.view());
  let loraA: Float32Array = new Float32Array(rank * cols);
  let loraB: Float32Array = new Float32Array(rows * rank);
  let subspace: Float32Array = gaussian(cols * k, opts.seed ?? 0x10f7);
  let spectrum: Float64Array | undefined;
  const relErrorPerIter: number[] = [];
  let qloraRelError = 0;

  const phases = opts.phases ?? {};
  const lap = phaseClock(phases);
  for (let t = 0; t < s.iters; t++) {
    throwIfAborted(opts.signal);
    const qErr = await grid.quantizeResidual(ws, target, quantized, W, residual, pool);
    if (t === 0) qloraRelError = rel(qErr);
    lap('quantize');

    const holdStart = performance.now();
    await transposeInParts(ws, pool, residual.ptr, rows, cols, residualT.ptr);
    // Some backends (cpu, webgpu) keep these views until first use rather than copying:
    // the regions are not written, and the workspace does not grow, until disposal.
    const held = await backend.hold(residual.view(), rows, cols);
    const heldT = await backend.hold(residualT.view(), cols, rows);
    phases['svd.hold'] = (phases['svd.hold'] ?? 0) + (performance.now() - holdStart) / 1000;
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
    const sumSq = await inParts(ws, pool, rows, 4, 'lowRankStep', (a, b, part) => [
      W.ptr + 4 * a * cols,
      quantized.values.ptr + 4 * a * cols,
      factorB.ptr + 4 * a * rank,
      factorA.ptr,
      b - a,
      cols,
      rank,
      last ? 0 : target.ptr + 4 * a * cols,
      packedA[part].ptr,
    ]);
    relErrorPerIter.push(rel(sumSq));
    lap('lowRank');
  }

  return {
    quantized,
    spare: [target, residual],
    loraA,
    loraB,
    rank,
    relErrorPerIter,
    qloraRelError,
    frobeniusNorm: normW,
    residualSpectrum: opts.spectrum && spectrum ? Array.from(spectrum.subarray(0, opts.spectrum)) : undefined,
  };
}
