// Feeds a model-input case through the real code paths, in this thread: calibrated quantize
// (quantizeCheckpoint with the case's CalibrationParams: token file, .txt through tokenizer.json,
// or an imatrix, the collector registered as the CLI registers it) and then `loftq eval`
// (runEval) on the case's tokens. Each stage ends in one of
//   accepted  — checked here, independently of the engine's bookkeeping: every tensor of the
//               backbone and the adapters finite, every error and metric in the report a finite
//               number, the output folder holding the result files and nothing else (no journal,
//               lock or temp file);
//   rejected  — a typed error; the refused quantize left no output folder behind (or an empty one);
//   cancelled — the case's signal fired; the cancelled quantize left nothing behind either.
// A broken invariant is a plain Error (the runner counts it as a crash); any other error is
// passed on as thrown for the runner to classify.

import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CheckpointError, FLOAT_DTYPES, openCheckpoint, readTensorF32 } from '../../checkpoint';
import { CancelledError, InputError, UsageError } from '../../base/errors';
import { quantizeCheckpoint, REPORT_FILE } from '../../engine/run';
import { ADAPTER_DIR } from '../../export/assemble';
import { createBackend, type MatmulBackend } from '../../linalg/backend';
import { registerCalibrationCollector } from '../../model/calibrate';
import { runEval } from '../../model/evalRun';
import type { MatrixSettings, ModelEval, Report } from '../../protocol/lsp_ext';
import type { InputCase } from './inputs';
import type { TinyModel } from './tiny-model';

const SETTINGS: MatrixSettings = { bits: 2, rank: 1, iters: 1, quantizer: 'nf', blockSize: 8 };
/** The quantize options of every stage: wasm, the same kernels whether or not the native module is built. */
const INPUT_RUN = { settings: SETTINGS, workers: 'in-thread' as const, backend: 'wasm' as const };

/** The error classes that are clean refusals of an input. */
const TYPED_ERRORS = [InputError, UsageError, CheckpointError];
const isTyped = (e: unknown): e is Error => TYPED_ERRORS.some((c) => e instanceof c);

export type StageResult =
  | { stage: string; kind: 'accepted'; notes: string[] }
  | { stage: string; kind: 'rejected'; error: Error }
  | { stage: string; kind: 'cancelled' };

function fail(msg: string): never {
  throw new Error(`invariant: ${msg}`);
}

/** Every path under DIR, relative to it ('/'-separated, folders as 'name/'). */
async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string) => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out.push(`${r}/`);
        await walk(path.join(d, e.name), r);
      } else out.push(r);
    }
  };
  await walk(dir, '');
  return out.sort();
}

/** Every path under DIR with its size and modification time: equal snapshots, untouched files. */
async function snapshot(dir: string): Promise<string> {
  const lines: string[] = [];
  for (const f of await listTree(dir)) {
    const st = await fsp.stat(path.join(dir, f));
    lines.push(`${f} ${st.size} ${st.mtimeMs}`);
  }
  return lines.join('\n');
}

async function checkNothingLeft(out: string, what: string): Promise<void> {
  if (!existsSync(out)) return;
  const left = await listTree(out);
  if (left.length) fail(`${what} left [${left.slice(0, 8).join(', ')}] in its output folder`);
}

const finiteAll = (x: Float32Array) => x.every((v) => Number.isFinite(v));

/** The files of an accepted quantize: result files only, every float tensor finite, every
 *  figure of the report a finite number. */
async function checkQuantized(out: string, report: Report): Promise<string[]> {
  const files = await listTree(out);
  for (const f of ['model.safetensors', `${ADAPTER_DIR}/adapter_model.safetensors`, REPORT_FILE])
    if (!files.includes(f)) fail(`the output folder has no ${f}`);
  const hidden = files.filter((f) => f.split('/').some((part) => part.startsWith('.')));
  if (hidden.length) fail(`a finished run left [${hidden.join(', ')}]`);
  for (const file of ['model.safetensors', `${ADAPTER_DIR}/adapter_model.safetensors`]) {
    const ck = await openCheckpoint(path.join(out, file));
    for (const t of ck.tensors)
      if (FLOAT_DTYPES.has(t.dtype) && !finiteAll(await readTensorF32(t))) fail(`${file}: '${t.name}' holds NaN/Inf`);
  }
  // The report on disk (JSON writes NaN as null): each matrix's figures numbers, finite.
  const json = JSON.parse(await fsp.readFile(path.join(out, REPORT_FILE), 'utf8')) as Report;
  if (json.matrices.length !== report.matrices.length) fail('the report on disk differs from the one returned');
  for (const m of json.matrices) {
    if (m.skipped) fail(`'${m.name}' of a finite base model was skipped (${m.skipped})`);
    const figures: [string, unknown][] = [
      ['relError', m.relError],
      ['qloraRelError', m.qloraRelError],
      ...(m.outputRelError !== undefined ? [['outputRelError', m.outputRelError] as [string, unknown]] : []),
      ...(m.qloraOutputRelError !== undefined
        ? [['qloraOutputRelError', m.qloraOutputRelError] as [string, unknown]]
        : []),
      ...m.relErrorPerIter.map((v, i) => [`relErrorPerIter[${i}]`, v] as [string, unknown]),
    ];
    for (const [k, v] of figures)
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) fail(`report: '${m.name}' ${k} is ${v}`);
  }
  const cal = json.calibration;
  if (!cal) fail('a calibrated run wrote no calibration block');
  if (!(Number.isFinite(cal.tokens) && cal.tokens >= 0)) fail(`report: calibration tokens ${cal.tokens}`);
  const calibrated = json.matrices.filter((m) => m.outputRelError !== undefined).length;
  return [`quantize: ${cal.source}, ${calibrated ? 'calibrated' : 'no matrix calibrated'}, files finite`];
}

function checkEvalFigures(r: ModelEval, where: string): void {
  const figures: [string, number][] = [
    ['original.ppl', r.original.ppl],
    ...(['loftq', 'qlora'] as const).flatMap((side) =>
      Object.entries(r[side]).map(([k, v]) => [`${side}.${k}`, v] as [string, number]),
    ),
  ];
  for (const [k, v] of figures) if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${where}: ${k} is ${v}`);
  if (!(r.tokens > 0 && r.sequences > 0)) fail(`${where}: ${r.sequences} sequences, ${r.tokens} tokens`);
}

/** A stage's error as a result; an untyped one is thrown on for the runner. */
function asResult(stage: string, e: unknown, signal: AbortSignal): StageResult {
  if (e instanceof CancelledError) {
    if (!signal.aborted) fail(`${stage} was cancelled, but nothing cancelled it`);
    return { stage, kind: 'cancelled' };
  }
  if (isTyped(e)) return { stage, kind: 'rejected', error: e };
  throw e;
}

/** The calibration pass splits each product over the cores (model/collect.ts), starting a GEMM
 *  thread per core for every pass: on these tiny models that start-up was most of a case's time
 *  (~0.5 s of ~0.6 s). The consumer runs the pass as on a one-core machine — the same code, on
 *  this thread — until close(). */
function pretendOneCore(): () => void {
  const o = os as { availableParallelism?: () => number };
  const had = Object.getOwnPropertyDescriptor(o, 'availableParallelism');
  try {
    Object.defineProperty(o, 'availableParallelism', { value: () => 1, configurable: true, writable: true });
  } catch {
    return () => undefined; // not patchable here: the pass keeps its threads, only slower
  }
  return () => {
    if (had) Object.defineProperty(o, 'availableParallelism', had);
  };
}

export class InputConsumer {
  private constructor(
    private readonly backend: MatmulBackend,
    private readonly restoreCores: () => void,
  ) {}

  static async create(): Promise<InputConsumer> {
    registerCalibrationCollector();
    return new InputConsumer(await createBackend(INPUT_RUN.backend), pretendOneCore());
  }

  close(): void {
    this.restoreCores();
  }

  /** The base's uncalibrated output (for eval when the case's quantize refused), made once:
   *  in a temp folder renamed into place. */
  private async baseOut(base: TinyModel): Promise<string> {
    if (existsSync(base.outDir)) return base.outDir;
    const tmp = `${base.outDir}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
    await quantizeCheckpoint(path.join(base.dir, 'model.safetensors'), { ...INPUT_RUN, out: tmp });
    await fsp.rename(tmp, base.outDir).catch(async (e) => {
      await fsp.rm(tmp, { recursive: true, force: true });
      if (!existsSync(base.outDir)) throw e;
    });
    return base.outDir;
  }

  async quantize(model: string, c: InputCase, out: string, signal: AbortSignal): Promise<StageResult> {
    let report: Report;
    try {
      ({ report } = await quantizeCheckpoint(path.join(model, 'model.safetensors'), {
        ...INPUT_RUN,
        out,
        calibration: c.calibration,
        signal,
      }));
    } catch (e) {
      const r = asResult('quantize', e, signal);
      const what =
        r.kind === 'cancelled' ? 'a cancelled quantize' : `a quantize refused with "${(e as Error).message}"`;
      await checkNothingLeft(out, what);
      return r;
    }
    return { stage: 'quantize', kind: 'accepted', notes: await checkQuantized(out, report) };
  }

  /** Eval of the case's tokens: on the case's own output (the report's model block rewritten)
   *  when its quantize finished, else on the base's output, which must be left as it was. */
  async eval(model: string, tokens: string, base: TinyModel, own: string | undefined, signal: AbortSignal) {
    const out = own ?? (await this.baseOut(base));
    const before = own ? undefined : await snapshot(out);
    let result: StageResult;
    try {
      const r = await runEval(path.join(model, 'model.safetensors'), out, {
        tokensFile: tokens,
        backend: this.backend,
        updateReport: own !== undefined,
        signal,
      });
      checkEvalFigures(r.result, 'eval result');
      if (own) {
        const json = JSON.parse(await fsp.readFile(path.join(out, REPORT_FILE), 'utf8')) as Report;
        if (!json.model) fail('eval did not write the model block into the report');
        checkEvalFigures(json.model, 'the report');
      }
      result = { stage: 'eval', kind: 'accepted', notes: [`eval: ${own ? 'report updated' : 'base output'}, finite`] };
    } catch (e) {
      result = asResult('eval', e, signal);
    }
    const after = await listTree(out);
    const hidden = after.filter((f) => f.split('/').some((part) => part.startsWith('.')));
    if (hidden.length) fail(`eval left [${hidden.join(', ')}] in ${out}`);
    if (before !== undefined && (await snapshot(out)) !== before) fail(`eval changed the files of ${out}`);
    return result;
  }
}
