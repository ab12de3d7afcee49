// One matrix, start to finish: read W, run LoftQ, cast to the output dtype, measure the
// error of what will be written, and store the result as a journal entry. Runs inside a
// worker thread (engine/worker.ts) or in-process; either way the same bytes come out.

import {
  readTensorBytes,
  readTensorF32,
  fromFloat32,
  toFloat32,
  roundTrip,
  SafetensorsWriter,
  TensorInfo,
  TensorSpec,
  DType,
} from '../checkpoint';
import type { MatmulBackend } from '../linalg/backend';
import { loftqInWorkspace, loftqMatrix, type LoftqRegions } from '../loftq/loftq';
import { calibratedInWorkspace, type CalibratedRegions, type CalibratedWorkspaceOptions } from '../loftq/calibrated';
import { calibrationMetric, StatisticsError, type CalibrationMetric } from '../loftq/calibrationMetric';
import type { InputStat } from '../model/stats';
import { holdMetric, type HeldMetric } from '../loftq/heldMetric';
import { gridShapeProblem, storedCodes } from '../quant/grid';
import { codebook } from '../quant/codebook';
import { blockCount, quantizeResidual } from '../quant/quantize';
import { KernelMemoryError, reserveWorkspace, withWorkspace, type F32Region, type Workspace } from '../kernels/kernels';
import { nativeKernelsOnArrays, prefault } from '../kernels/native';
import { transpose } from '../linalg/dense';
import type { AnalysisEntry, MatrixReport, MatrixSettings } from '../protocol/lsp_ext';
import { InputError } from '../base/errors';
import { ENTRY } from '../base/journal';
import { quantizerSpec } from '../registry';
import { ScratchBuffers, withScratchBuffers } from '../base/scratchBuffers';

export interface MatrixJob {
  tensor: TensorInfo;
  settings: MatrixSettings;
  /** GPT-2 style Conv1D weights are stored [in, out]; adapters are then transposed. */
  fanInFanOut: boolean;
  /** Keep the codes and scales in the journal entry (the format writes them). */
  packed: boolean;
  onNonFinite: 'refuse' | 'skip';
  journalFile: string;
  /** Calibrated LoftQ: this matrix's input statistic G (shared memory across threads, read in
   *  place: q/k/v and gate/up share one) and the ridge of H = G + λI. `origin` names the
   *  statistics in messages. */
  calibration?: { stat: InputStat; ridge: number; origin: string };
}

function countNonFinite(w: Float32Array): number {
  const native = nativeKernelsOnArrays();
  if (native) return native.addon.widen(null, w, native.threads);
  let n = 0;
  for (let i = 0; i < w.length; i++) if (!Number.isFinite(w[i])) n++;
  return n;
}

/** The tensor as float32 and its NaN/Inf count: on a native thread a BF16 one is widened and
 *  counted in one pass over the module's threads (the same values as readTensorF32's). Into W,
 *  a kernel region, when given (a matrix job's W is read straight into LoftQ's memory). */
async function readCounted(
  tensor: TensorInfo,
  buffers: ScratchBuffers,
  W?: F32Region,
): Promise<{ w: Float32Array; bad: number }> {
  const native = nativeKernelsOnArrays();
  if (!native || tensor.dtype !== 'BF16') {
    const into = W ? { u8: (name: string, n: number) => buffers.u8(name, n), f32: () => W.view() } : buffers;
    const w = await readTensorF32(tensor, into);
    return { w, bad: countNonFinite(w) };
  }
  const bytes = await readTensorBytes(tensor, buffers);
  const w = W ? W.view() : buffers.f32('read.f32', tensor.parameters);
  const src = new Uint16Array(bytes.buffer, bytes.byteOffset, tensor.parameters);
  return { w, bad: native.addon.widen(src, w, native.threads) };
}

async function readChecked(
  tensor: TensorInfo,
  onNonFinite: 'refuse' | 'skip',
  buffers: ScratchBuffers,
  W?: F32Region,
): Promise<{ w: Float32Array } | { skipped: string }> {
  const { w, bad } = await readCounted(tensor, buffers, W);
  if (bad === 0) return { w };
  const problem = `holds ${bad} NaN/Inf value${bad === 1 ? '' : 's'}`;
  if (onNonFinite === 'skip') return { skipped: problem };
  throw new InputError(
    tensor.file,
    `${problem}; quantizing it would propagate them (use --on-nonfinite skip to copy it unchanged)`,
    tensor.name,
  );
}

function frob(x: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

function allFinite(x: ArrayLike<number>): boolean {
  if (x instanceof Float32Array && x.length > 1 << 16) return countNonFinite(x) === 0;
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return false;
  return true;
}

/** Nothing non-finite is ever written or reported: finite weights give finite results, so a NaN
 *  here comes from the statistics (values that overflow in the products with H), and the job is
 *  refused naming them and the matrix (exit 2) before its journal entry exists. */
function checkFinite(
  job: Pick<MatrixJob, 'tensor' | 'calibration'>,
  res: Omit<LoftqRegions, 'quantized' | 'spare'> & Partial<CalibratedRegions>,
  q: Float32Array,
  w: Written,
): void {
  const bad = [
    ['the quantized matrix', allFinite(q)],
    ['lora_A', allFinite(w.loraA)],
    ['lora_B', allFinite(w.loraB)],
    ['its error', allFinite([w.err, w.errNf4 ?? 0, res.qloraRelError, ...res.relErrorPerIter])],
    [
      'its output error',
      // ‖W·S‖ itself too: an infinite norm made every output error read 0, a perfect result.
      [res.outputNorm, w.output.outputRelError, w.output.qloraOutputRelError, ...(res.outputRelErrorPerIter ?? [])]
        .filter((e) => e !== undefined)
        .every(Number.isFinite),
    ],
  ].find(([, ok]) => !ok);
  if (!bad) return;
  const c = job.calibration;
  const from = c ? ' (the calibration statistics are too large for float32 products; scale them down)' : '';
  const file = c?.origin ?? job.tensor.file;
  throw new InputError(file, `LoftQ gave non-finite values in ${bad[0]}${from}`, job.tensor.name);
}

/** H = G + λI for a calibrated job. */
function metricFor(c: NonNullable<MatrixJob['calibration']>, name: string): CalibrationMetric {
  try {
    return calibrationMetric(c.stat, c.ridge);
  } catch (e) {
    if (e instanceof StatisticsError) throw new InputError(c.origin, `statistics unusable: ${e.message} (for ${name})`);
    throw e;
  }
}

/** ‖W·S‖²'s part the calibration pass already summed (InputStat.outputSquares), with H's ridge:
 *  for a full G only — an all-zero G's H is I, not G + λI. */
function knownOutput(
  c: MatrixJob['calibration'],
  metric: CalibrationMetric | undefined,
  name: string,
): CalibratedWorkspaceOptions['knownOutput'] {
  const meanSquare = c?.stat.kind === 'full' ? c.stat.outputSquares?.[name] : undefined;
  if (metric?.kind !== 'full' || meanSquare === undefined || !Number.isFinite(meanSquare)) return undefined;
  return { meanSquare, lambda: metric.lambda };
}

export function runMatrixJob(job: MatrixJob, backend: MatmulBackend): Promise<MatrixReport> {
  return withScratchBuffers((buffers) => matrixJob(job, backend, buffers)).then(async (r) => {
    await r.committed;
    return r.report;
  });
}

/** As runMatrixJob, but `computed` is called once the job's buffers are free and its entry is
 *  written (its fsync and rename still running): a worker may start its next matrix then, and
 *  the commit's I/O waits overlap that matrix's work. The promise settles when the entry is
 *  committed. */
export async function runMatrixJobOverlapped(
  job: MatrixJob,
  backend: MatmulBackend,
  computed: () => void,
): Promise<MatrixReport> {
  const r = await withScratchBuffers((buffers) => matrixJob(job, backend, buffers));
  computed();
  await r.committed;
  return r.report;
}

/** A job's report once its bytes are written, and the commit of its entry (flush, rename). */
interface JobOutcome {
  report: MatrixReport;
  committed: Promise<void>;
}

async function matrixJob(job: MatrixJob, backend: MatmulBackend, buffers: ScratchBuffers): Promise<JobOutcome> {
  const t0 = performance.now();
  const { tensor, settings } = job;
  const [rows, cols] = tensor.shape as [number, number];
  prepareMemory(rows * cols, tensor.byteLength, buffers);
  const base = { name: tensor.name, shape: [rows, cols] as [number, number], dtype: tensor.dtype, ...settings };
  const phases: Record<string, number> = {};
  const dtype = tensor.dtype as DType;
  // One workspace for the whole job: W is read into it, LoftQ runs in it, and the written files
  // are measured in LoftQ's spent regions — no matrix-sized copy leaves kernel memory but the
  // written Q's bytes (issue 28: a calibrated 7B job held 36 bytes a weight, now 20).
  const computed = await withWorkspace(async (ws) => {
    const W = ws.f32(rows * cols);
    const read = await readChecked(tensor, job.onNonFinite, buffers, W);
    phases.read = (performance.now() - t0) / 1000;
    if ('skipped' in read) return { skipped: read.skipped };
    const tMetric = performance.now();
    const metric = job.calibration && metricFor(job.calibration, tensor.name);
    // Held once: the LoftQ iterations and the written matrix's output error both use it.
    const heldMetric = metric ? await holdMetric(metric, backend) : undefined;
    if (metric) phases.calib = (performance.now() - tMetric) / 1000;
    try {
      const opts = { phases, dtype };
      const run = heldMetric
        ? calibratedInWorkspace(ws, W, rows, cols, settings, backend, heldMetric, {
            ...opts,
            knownOutput: knownOutput(job.calibration, metric, tensor.name),
          })
        : loftqInWorkspace(ws, W, rows, cols, settings, backend, opts);
      const res: LoftqRegions & Partial<CalibratedRegions> = await run;
      const tAfter = performance.now();
      // HQQ's loader keeps the written grid: no bitsandbytes NF4 reload to measure.
      const reloadsAtNf4 = quantizerSpec(settings.quantizer).storage !== 'hqq';
      const written = await measureWritten(ws, W, rows, cols, dtype, res, heldMetric, buffers, reloadsAtNf4);
      const { quantized, spare: _spare, spareCodes: _codes, ...figures } = res;
      checkFinite(job, figures, quantized.values.view(), written);
      // Copies (packed codes, scales): nothing written after the workspace is released may
      // point into it — another job on this thread may take it while this one writes its entry.
      const stored = job.packed
        ? storedCodes(settings, dtype, {
            codes: quantized.codes.view(),
            scales: quantized.scales.view().slice(),
            zero: quantized.zero?.view().slice(),
          })
        : [];
      return { res: figures, written, stored, tAfter };
    } finally {
      heldMetric?.dispose();
    }
  }).catch((e) => {
    throw e instanceof KernelMemoryError ? new InputError(tensor.file, e.message, tensor.name) : e;
  });
  if ('skipped' in computed) {
    const report = {
      ...base,
      relError: NaN,
      relErrorPerIter: [],
      qloraRelError: NaN,
      frobeniusNorm: NaN,
      seconds: 0,
      skipped: computed.skipped,
    };
    return { report, committed: Promise.resolve() };
  }
  const { res, written, stored, tAfter } = computed;
  const { loraA, loraB, qBytes, err, errNf4, output } = written;
  const r = res.rank;
  const norm = res.frobeniusNorm;

  // PEFT shapes: lora_A (r × in), lora_B (out × r). For [in, out]-stored Conv1D weights the
  // stored matrix M ≈ Q + L·R means ΔW = (B·A)ᵀ with A = Lᵀ, B = Rᵀ.
  const outA = job.fanInFanOut ? transpose(loraB, rows, r) : loraA;
  const outB = job.fanInFanOut ? transpose(loraA, r, cols) : loraB;
  const [aShape, bShape] = job.fanInFanOut
    ? [
        [r, rows],
        [cols, r],
      ]
    : [
        [r, cols],
        [rows, r],
      ];
  const specs: TensorSpec[] = [
    { name: ENTRY.q, dtype, shape: [rows, cols] },
    { name: ENTRY.loraA, dtype, shape: aShape },
    { name: ENTRY.loraB, dtype, shape: bShape },
  ];
  for (const t of stored) specs.push({ name: t.name, dtype: t.dtype, shape: t.shape });
  const report: MatrixReport = {
    ...base,
    rank: r,
    relError: norm > 0 ? Math.sqrt(err) / norm : 0,
    relErrorPerIter: res.relErrorPerIter,
    qloraRelError: res.qloraRelError,
    frobeniusNorm: norm,
    ...(errNf4 === undefined ? {} : { nf4ReloadRelError: norm > 0 ? Math.sqrt(errNf4) / norm : 0 }),
    ...output,
    seconds: 0,
    phases,
  };
  phases.lowRank += (performance.now() - tAfter) / 1000;
  const tWrite = performance.now();
  report.seconds = (tWrite - t0) / 1000;
  const writer = await SafetensorsWriter.create(job.journalFile, specs, { report: JSON.stringify(report) });
  try {
    await writer.write(ENTRY.q, qBytes);
    await writer.write(ENTRY.loraA, fromFloat32(dtype, outA));
    await writer.write(ENTRY.loraB, fromFloat32(dtype, outB));
    for (const t of stored) await writer.write(t.name, t.bytes);
  } catch (e) {
    await writer.abort();
    throw e;
  }
  // The bytes are in the file: no buffer of this job is read again; the flush and rename go on.
  const committed = writer.commit().then(
    () => {
      phases.write = (performance.now() - tWrite) / 1000;
      report.seconds = (performance.now() - t0) / 1000;
    },
    async (e) => {
      await writer.abort();
      throw e;
    },
  );
  // Settled by the caller; a failure here must not surface as unhandled before it is awaited.
  committed.catch(() => undefined);
  return { report, committed };
}

/** Kernel memory per weight of a matrix job, plain or calibrated (loftq.ts, calibrated.ts):
 *  W, the quantizer's target (Rᵀ in between), the residual and Q's values, 4 each; Q's codes 1;
 *  one more code byte — calibrated: the kept iterate's codes, plain: the NF4 reload's codes in
 *  the measure. The measure of the written files needs no more (measureWritten). */
export const KERNEL_BYTES_PER_WEIGHT = 18;

/** Before the read: this job's kernel memory and its read buffer at full size, their fresh
 *  pages (a thread's first job, or a larger matrix) faulted in the background while the read
 *  runs. */
function prepareMemory(n: number, readBytes: number, buffers: ScratchBuffers): void {
  reserveWorkspace(n * KERNEL_BYTES_PER_WEIGHT + (1 << 20));
  const bytes = buffers.u8('read.bytes', readBytes);
  prefault(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

/** What will be written, and its errors: Q encoded in the input's dtype and the adapters
 *  rounded to it, ‖W − Q − B·A‖², the same after bitsandbytes' NF4 reload (where the format's
 *  loader re-quantizes: not HQQ's), and — calibrated —
 *  the output error of exactly these values. */
interface Written {
  loraA: Float32Array;
  loraB: Float32Array;
  qBytes: Uint8Array;
  err: number;
  errNf4?: number;
  output: Pick<MatrixReport, 'outputRelError' | 'qloraOutputRelError' | 'bestIter'>;
}

/** Measures LoftQ's result `res`, still in `ws` with W, in its spent regions (res.spare: the
 *  NF4 reload's values and the error's transpose; res.spareCodes or one new byte a weight: the
 *  reload's codes). Q's values become what the written bytes read back as. */
async function measureWritten(
  ws: Workspace,
  W: F32Region,
  rows: number,
  cols: number,
  dtype: DType,
  res: LoftqRegions & Partial<CalibratedRegions>,
  heldMetric: HeldMetric | undefined,
  buffers: ScratchBuffers,
  reloadsAtNf4: boolean,
): Promise<Written> {
  const size = rows * cols;
  // What a reader of the written files sees: Q and the adapters in the input's dtype.
  const loraA = roundTrip(dtype, res.loraA);
  const loraB = roundTrip(dtype, res.loraB);
  const Q = res.quantized.values;
  const [spareT, spareE] = res.spare;
  // Every region is carved before any view is taken.
  const B = ws.f32(loraB.length, loraB);
  const A = ws.f32(loraA.length, loraA);
  const packed = ws.f32(A.length).ptr;
  const nf4Codes = reloadsAtNf4 ? (res.spareCodes ?? ws.u8(size)) : undefined;
  const nf4Scales = reloadsAtNf4 ? ws.f32(blockCount(size, 64)) : undefined;
  // Q is encoded once: these bytes are written, and their float32 reading measured. The read's
  // bytes are spent (W is in kernel memory): Q's bytes take their buffer.
  let qBytes: Uint8Array;
  if (dtype === 'BF16') {
    const bits = ws.reuseU16(spareT, size);
    ws.k.roundToBf16(Q.ptr, bits.ptr, size);
    qBytes = buffers.u8('read.bytes', 2 * size);
    qBytes.set(new Uint8Array(ws.memory.buffer, bits.ptr, 2 * size));
  } else if (dtype === 'F32') {
    qBytes = buffers.u8('read.bytes', 4 * size);
    qBytes.set(new Uint8Array(ws.memory.buffer, Q.ptr, 4 * size));
  } else {
    qBytes = fromFloat32(dtype, Q.view());
    Q.view().set(toFloat32(dtype, qBytes));
  }
  let errNf4: number | undefined;
  if (nf4Codes && nf4Scales) {
    // bitsandbytes re-quantizes the stored backbone to NF4 (block 64) at load time: its values
    // in spareE, its codes in nf4Codes, the fused pass's residual (unused) in spareT.
    const nf4 = { codes: nf4Codes, scales: nf4Scales, values: spareE };
    await quantizeResidual(ws, Q, codebook('nf', 4), 'nf', 64, nf4, Q, spareT);
    errNf4 = ws.k.lowRankStep(W.ptr, spareE.ptr, B.ptr, A.ptr, rows, cols, res.rank, 0, packed);
  }
  // ‖W − Q − B·A‖², and W − B·A into spareE when the output error is measured.
  const err = ws.k.lowRankStep(W.ptr, Q.ptr, B.ptr, A.ptr, rows, cols, res.rank, heldMetric ? spareE.ptr : 0, packed);
  let output: Pick<MatrixReport, 'outputRelError' | 'qloraOutputRelError' | 'bestIter'> = {};
  if (heldMetric) {
    // ‖(W − Q − B·A)·S‖² of the written values, from its transpose.
    ws.k.difference(spareE.ptr, Q.ptr, spareE.ptr, size);
    // transposeBand, not transpose: the band version has a native kernel.
    ws.k.transposeBand(spareE.ptr, rows, cols, spareT.ptr, 0, rows);
    const outSq = await heldMetric.quadratic(spareT.view(), rows);
    const normS = res.outputNorm ?? 0;
    output = {
      outputRelError: normS > 0 ? Math.sqrt(outSq) / normS : 0,
      qloraOutputRelError: res.qloraOutputRelError,
      bestIter: res.bestIter,
    };
  }
  return { loraA, loraB, qBytes, err, errNf4, output };
}

export interface AnalyzeJob {
  tensor: TensorInfo;
  bits: number[];
  rank: number;
  iters: number;
  quantizer: MatrixSettings['quantizer'];
  blockSize: number;
  spectrum?: number;
  onNonFinite: 'refuse' | 'skip';
  /** Calibrated analysis: as MatrixJob.calibration; each row then carries the output errors and
   *  the spectrum of (W − Q)·S (the planner's output-error shortcut). */
  calibration?: MatrixJob['calibration'];
}

export type AnalyzeRow = AnalysisEntry['matrices'][number] & { bits: number };

export function runAnalyzeJob(job: AnalyzeJob, backend: MatmulBackend): Promise<AnalyzeRow[]> {
  return withScratchBuffers((buffers) => analyzeJob(job, backend, buffers));
}

async function analyzeJob(job: AnalyzeJob, backend: MatmulBackend, buffers: ScratchBuffers): Promise<AnalyzeRow[]> {
  const [rows, cols] = job.tensor.shape as [number, number];
  const read = await readChecked(job.tensor, job.onNonFinite, buffers);
  if ('skipped' in read) return [];
  const out: AnalyzeRow[] = [];
  const metric = job.calibration && metricFor(job.calibration, job.tensor.name);
  const held = metric ? await holdMetric(metric, backend) : undefined;
  try {
    for (const bits of job.bits) {
      const settings = { bits, rank: job.rank, iters: job.iters, quantizer: job.quantizer, blockSize: job.blockSize };
      // Widths the grid cannot hold at this shape (HQQ's unpackable ones) are not choices: no row.
      if (gridShapeProblem(settings, rows, cols)) continue;
      const row = { bits, name: job.tensor.name, shape: [rows, cols] as [number, number], frobeniusNorm: frob(read.w) };
      if (!metric || !held) {
        const res = await loftqMatrix(read.w, rows, cols, settings, backend, {
          spectrum: job.spectrum,
          dtype: job.tensor.dtype,
        });
        out.push({
          ...row,
          relError: res.relErrorPerIter.at(-1) ?? 0,
          qloraRelError: res.qloraRelError,
          residualSpectrum: res.residualSpectrum,
        });
        continue;
      }
      // Calibrated: the errors of what a calibrated quantize at these settings writes (the same
      // run and measure as matrixJob), so an analysed (bits, rank) predicts that run exactly.
      const dtype = job.tensor.dtype as DType;
      const w = read.w;
      const { res, written } = await withWorkspace(async (ws) => {
        const W = ws.f32(w.length, w);
        const regions = await calibratedInWorkspace(ws, W, rows, cols, settings, backend, held, {
          dtype,
          spectrum: job.spectrum,
          knownOutput: knownOutput(job.calibration, metric, job.tensor.name),
        });
        const written = await measureWritten(ws, W, rows, cols, dtype, regions, held, buffers, false);
        const { quantized, spare: _spare, spareCodes: _codes, ...res } = regions;
        checkFinite({ tensor: job.tensor, calibration: job.calibration }, res, quantized.values.view(), written);
        return { res, written };
      });
      const norm = res.frobeniusNorm;
      out.push({
        ...row,
        relError: norm > 0 ? Math.sqrt(written.err) / norm : 0,
        qloraRelError: res.qloraRelError,
        outputRelError: written.output.outputRelError,
        qloraOutputRelError: res.qloraOutputRelError,
        outputNorm: res.outputNorm,
        bestIter: res.bestIter,
        // σ of (W − Q)·S for the kept iterate (calibrated.ts): the output-space spectrum.
        outputSpectrum: res.residualSpectrum,
      });
    }
  } finally {
    held?.dispose();
  }
  return out;
}
