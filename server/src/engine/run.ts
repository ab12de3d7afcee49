// quantizeCheckpoint: the whole job behind `loftq quantize` and `loftq/quantize`.
//   1. open the checkpoint (headers only) and resolve each target matrix's settings;
//   2. run LoftQ on every matrix without a journal entry, on the worker pool;
//   3. assemble the output files from the input and the journal; write the report last.
// The report's presence marks a complete result. Every output file is staged as a temp
// file first; then the old report and files are retired and the new ones renamed in, the
// report last (checkpoint/commit.ts), and only then is the journal removed. So a folder
// holds the old or the new complete result, a resumable journal (with no old file loadable
// beside a new one), or nothing. A cancel before the commit removes the journal and temp
// files and leaves the old result as it was; the commit itself (renames) is not cancelled.

import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { constants } from 'node:buffer';
import {
  Checkpoint,
  CheckpointError,
  makeFolders,
  openCheckpoint,
  OutputCommit,
  TensorInfo,
  writeError,
} from '../checkpoint';
import type { AnalysisEntry, MatrixReport, MatrixSettings, PlanFile, Report } from '../protocol/lsp_ext';
import { compilePlan, settingsFor } from '../plan/planfile';
import { selectTargets } from './targets';
import { AnalyzeOptions, RunOptions, RunResult } from './api';
import { createExecutor, Executor } from './pool';
import { streamLayers } from './phaseMemory';
import { CancelledError, InputError, throwIfAborted, UsageError } from '../base/errors';
import { entryReport, fileStamp, JOURNAL_DIR, journalKey, journalPath } from '../base/journal';
import { lockOutput, processAlive } from '../base/lock';
import { adapterConfig } from '../export/adapterConfig';
import {
  ADAPTER_DIR,
  checkModelFiles,
  copyModelFiles,
  retiredFiles,
  Finished,
  readConfig,
  writeAdapters,
} from '../export/assemble';
import { FORMAT_WRITERS } from '../export/formats';
import { gridShapeProblem } from '../quant/grid';
import { TOOL } from './version';
import { adapterBytesFor, adapterBytesOf, reportedBytesOf } from '../registry';
import { DEFAULT_FORMAT, defaultFormatFor, formatSpec, matrixSettingsProblem, settingLabel } from '../registry';
import { DEFAULT_CLI_BACKEND } from '../registry';
import { backendName } from '../linalg/backend';
import {
  adoptEntry,
  AssembleSource,
  checkpointIdentity,
  descriptorPath,
  writeShardDescriptor,
} from './shardDescriptor';
import { resolveCalibration, ResolvedCalibration, statFor } from './calibration';
import type { InputStats } from '../model/stats';

export const REPORT_FILE = 'loftq-report.json';

export interface PlannedMatrix {
  tensor: TensorInfo;
  settings: MatrixSettings;
}

export function checkSettings(s: MatrixSettings, tensor?: TensorInfo): void {
  const where = tensor ? ` for ${tensor.name} ${JSON.stringify(tensor.shape)}` : '';
  const bad = matrixSettingsProblem(s);
  if (bad) {
    const v = s[bad.key];
    const got = typeof v === 'string' ? `'${v}'` : v;
    throw new UsageError(`${settingLabel(bad.key)} must be ${bad.expected}, got ${got}${where}`);
  }
  const shapeProblem = tensor && gridShapeProblem(s, tensor.shape[0], tensor.shape[1]);
  if (shapeProblem) throw new UsageError(`${tensor!.name} ${JSON.stringify(tensor!.shape)}: ${shapeProblem}`);
  if (tensor && s.rank > Math.min(tensor.shape[0], tensor.shape[1])) {
    throw new UsageError(`rank ${s.rank} exceeds min(out, in) = ${Math.min(tensor.shape[0], tensor.shape[1])}${where}`);
  }
}

/** Target matrices and their settings under the options and plan. */
export function planMatrices(
  ck: Checkpoint,
  settings: MatrixSettings,
  plan?: PlanFile,
  targets?: string[],
): PlannedMatrix[] {
  checkSettings(settings);
  const compiled = compilePlan(plan ?? { checkpoint: '' }, settings);
  const out: PlannedMatrix[] = [];
  for (const tensor of selectTargets(ck.tensors, plan?.targets ?? targets)) {
    const s = settingsFor(compiled, tensor.name);
    if (!s) continue;
    checkSettings(s, tensor);
    out.push({ tensor, settings: s });
  }
  return out;
}

/** Deterministic 1/n split balanced by size: largest first, each to the lightest shard. */
export function shardOf(matrices: PlannedMatrix[], index: number, count: number): PlannedMatrix[] {
  const load = new Array<number>(count).fill(0);
  const owner = new Map<string, number>();
  const order = [...matrices].sort(
    (a, b) => b.tensor.parameters - a.tensor.parameters || (a.tensor.name < b.tensor.name ? -1 : 1),
  );
  for (const m of order) {
    let best = 0;
    for (let i = 1; i < count; i++) if (load[i] < load[best]) best = i;
    load[best] += m.tensor.parameters;
    owner.set(m.tensor.name, best);
  }
  return matrices.filter((m) => owner.get(m.tensor.name) === index);
}

function isFanInFanOut(config: { model_type?: string } | undefined, name: string): boolean {
  return config?.model_type === 'gpt2' && /\.(c_attn|c_proj|c_fc)\.weight$/.test(name);
}

async function exists(p: string): Promise<boolean> {
  return fsp.access(p).then(
    () => true,
    () => false,
  );
}

/** The reader's own refusals (checkpoint/reader.ts), made from the header alone: the tensor's
 *  bytes, or its values as float32, do not fit in one buffer. */
function refuseTooLarge(t: TensorInfo): void {
  const max = constants.MAX_LENGTH;
  if (t.byteLength > max)
    throw new CheckpointError('too-large', t.file, `${t.byteLength} bytes do not fit in one buffer in memory`, t.name);
  if (t.parameters * 4 > max)
    throw new CheckpointError(
      'too-large',
      t.file,
      `${t.parameters} values do not fit in one float32 buffer in memory`,
      t.name,
    );
}

/** Temp files (`.<name>.<pid>.<hex>.tmp`, as the writers name them) whose writer's pid
 *  satisfies `owned`. */
async function removeTempsOf(dir: string, owned: (pid: number) => boolean): Promise<void> {
  const entries = await fsp.readdir(dir).catch(() => [] as string[]);
  await Promise.all(
    entries.map(async (e) => {
      const m = /^\..+\.(\d+)\.[0-9a-f]+\.tmp$/.exec(e);
      if (m && owned(Number(m[1]))) await fsp.rm(path.join(dir, e), { force: true });
    }),
  );
}

/** This process's temp files in `dir` (another shard run may be writing its own there). */
const removeTemps = (dir: string) => removeTempsOf(dir, (pid) => pid === process.pid);

/** Runs a file-system step on the output folder; an errno failure becomes one clear line
 *  (`OUT: cannot be written: permission denied (EACCES)`) instead of a raw `EACCES: …, mkdir '…'`. */
async function onOutput<T>(target: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (e) {
    throw (e as NodeJS.ErrnoException)?.code ? writeError(target, e) : e;
  }
}

/** Temp files of writers whose process is gone — a run killed with SIGKILL cannot clean
 *  up after itself. Shard runs of live processes share the folder, so only dead writers'
 *  files are removed. */
const removeStaleTemps = (dir: string) => removeTempsOf(dir, (pid) => pid !== process.pid && !processAlive(pid));

const sameFile = (a?: { dev: number; ino: number }, b?: { dev: number; ino: number }) =>
  !!a && !!b && a.dev === b.dev && a.ino === b.ino;

/** The output must not be the input under another name: a symlinked or bind-mounted folder,
 *  or an output file that is an input file (hard or symbolic link). Path strings cannot tell. */
async function refuseInputAsOutput(ck: Checkpoint, out: string): Promise<void> {
  const stat = (p: string) => fsp.stat(p).catch(() => undefined);
  const outDir = await stat(out);
  const real = await fsp.realpath(out).catch(() => out);
  if (path.resolve(ck.folder) === out || sameFile(outDir, await stat(ck.folder))) {
    throw new UsageError(
      `the output folder ${out} is the checkpoint's own folder${real !== out ? ` (${real})` : ''}; choose another`,
    );
  }
  if (!outDir) return;
  const inputs = await Promise.all(ck.files.map(async (f) => ({ f, st: await stat(f) })));
  for (const name of await fsp.readdir(out).catch(() => [] as string[])) {
    const st = await stat(path.join(out, name));
    const hit = inputs.find((i) => sameFile(st, i.st));
    if (hit)
      throw new UsageError(
        `${path.join(out, name)} is the input file ${hit.f}; ` +
          'writing there would overwrite the checkpoint; choose another output folder',
      );
  }
}

const sameSettings = (r: MatrixReport, s: MatrixSettings) =>
  r.bits === s.bits && r.iters === s.iters && r.quantizer === s.quantizer && r.blockSize === s.blockSize;

/**
 * `assemble` (loftq merge): take every matrix from these finished shard results (linked
 * into this run's journal) and compute none; a matrix without one is an InputError.
 */
export async function quantizeCheckpoint(
  checkpointPath: string,
  opts: RunOptions & { assemble?: AssembleSource },
): Promise<RunResult> {
  const t0 = performance.now();
  const ck = await openCheckpoint(checkpointPath);
  const config = await readConfig(ck);
  await checkModelFiles(ck);
  const all = planMatrices(ck, opts.settings, opts.plan, opts.targets);
  if (all.length === 0) {
    const targetsNamed = opts.plan?.targets ?? opts.targets ?? ['default Llama/GPT-2/BERT/T5 names'];
    throw new UsageError(`${ck.path}: no tensor matches the targets (${targetsNamed.join(', ')})`);
  }
  // Unless told: the natural format of the plan's (or the options') quantizer — HQQ's own for hqq.
  const format =
    opts.format ?? defaultFormatFor(compilePlan(opts.plan ?? { checkpoint: '' }, opts.settings).defaults.quantizer);
  FORMAT_WRITERS[format].check(
    ck,
    config,
    all.map((m) => ({
      name: m.tensor.name,
      shape: m.tensor.shape,
      dtype: m.tensor.dtype,
      settings: m.settings,
      fanInFanOut: isFanInFanOut(config, m.tensor.name),
    })),
    format,
  );
  const mine = opts.shard ? shardOf(all, opts.shard.index, opts.shard.count) : all;
  // A matrix too large for one buffer is refused now, before the output folder is touched (it was
  // refused when its job read it, with the journal folder already made).
  for (const m of mine) refuseTooLarge(m.tensor);
  const out = path.resolve(opts.out);
  await refuseInputAsOutput(ck, out);
  // Calibration first: a bad token file or imatrix is refused before the output folder is touched.
  let calibration: ResolvedCalibration | undefined;
  if (opts.calibration) {
    opts.onProgress?.({ index: 0, total: mine.length, name: 'calibration statistics', phase: 'start' });
    calibration = await resolveCalibration(ck, opts.calibration, {
      backend: opts.backend ?? DEFAULT_CLI_BACKEND,
      signal: opts.signal,
    });
  }
  try {
    throwIfAborted(opts.signal);
    if (calibration)
      for (const m of mine) statFor(calibration, calibration.stats, m.tensor, isFanInFanOut(config, m.tensor.name));
    return await quantizeInto(ck, config, mine, out, calibration, { ...opts, format }, t0);
  } finally {
    calibration?.close();
  }
}

/** quantizeCheckpoint from the output folder on: compute (a calibrated run's matrices a layer
 *  at a time, as the forward pass hands on their statistics), then assemble. */
async function quantizeInto(
  ck: Checkpoint,
  config: Awaited<ReturnType<typeof readConfig>>,
  mine: PlannedMatrix[],
  out: string,
  calibration: ResolvedCalibration | undefined,
  opts: RunOptions & { assemble?: AssembleSource },
  t0: number,
): Promise<RunResult> {
  const format = opts.format ?? DEFAULT_FORMAT;
  const packed = formatSpec(format).keepsCodes;
  const createdOut = !(await fsp.stat(out).then(
    () => true,
    () => false,
  ));
  let cancelled = false;
  await onOutput(out, () => makeFolders(path.join(out, JOURNAL_DIR)));
  const unlock = await onOutput(out, () =>
    lockOutput(out, opts.shard ? `.loftq.lock.${opts.shard.index}-of-${opts.shard.count}` : undefined),
  ).catch(async (e) => {
    // No lock (a full disk, most likely: another run's lock is an InputError): a folder this run
    // created holds nothing of anyone's, and goes, empty journal and all.
    if (createdOut && !(e instanceof InputError))
      for (const d of [path.join(out, JOURNAL_DIR), out]) await fsp.rmdir(d).catch(() => undefined);
    throw e;
  });
  // A shard's descriptor marks it finished; a rerun is unfinished until it ends.
  if (opts.shard) await fsp.rm(descriptorPath(out, opts.shard), { force: true });
  let executor: Executor | undefined;
  let commit: OutputCommit | undefined;
  let committing = false;
  try {
    for (const d of [out, path.join(out, JOURNAL_DIR), path.join(out, ADAPTER_DIR)]) await removeStaleTemps(d);
    const stamps = new Map<string, string>();
    for (const f of ck.files) stamps.set(f, await fileStamp(f));
    const jobs = mine.map((m) => ({ ...m, fanInFanOut: isFanInFanOut(config, m.tensor.name) }));
    type Job = (typeof jobs)[number];
    /** A job with its statistic (if any) and so its journal entry. */
    const withEntry = (j: Job, stats: InputStats | undefined) => {
      const stat = calibration && stats && statFor(calibration, stats, j.tensor, j.fanInFanOut);
      const key = journalKey({
        tensor: j.tensor,
        settings: j.settings,
        fanInFanOut: j.fanInFanOut,
        packed,
        fileStamp: stamps.get(j.tensor.file)!,
        calibration: stat ? calibration!.keyOf(stat) : undefined,
      });
      return { ...j, stat, entry: journalPath(out, key) };
    };

    // --- compute (skipping journaled matrices) ---
    const finished = new Map<string, Finished>();
    const skipped: MatrixReport[] = [];
    const total = jobs.length;
    // Shrinks as journaled matrices turn up (a calibrated run finds them a layer at a time).
    let totalParams = jobs.reduce((a, j) => a + j.tensor.parameters, 0);
    let doneParams = 0;
    let done = 0;
    const tCompute = performance.now();
    const eta = () => {
      const elapsed = (performance.now() - tCompute) / 1000;
      return doneParams > 0 ? (elapsed * (totalParams - doneParams)) / doneParams : undefined;
    };
    const computeBatch = async (batch: ReturnType<typeof withEntry>[]) => {
      const todo: typeof batch = [];
      for (const j of batch) {
        const given = opts.assemble?.skipped.get(j.tensor.name);
        if (given) skipped.push(given);
        else {
          const source = opts.assemble?.entries.get(j.tensor.name);
          if (opts.assemble && !(await exists(j.entry))) {
            if (!source)
              throw new InputError(
                out,
                `no shard holds a result for ${j.tensor.name}; the shards do not cover this run`,
              );
            await adoptEntry(source, j.entry);
          }
          if (!(await exists(j.entry))) {
            todo.push(j);
            continue;
          }
          const report = entryReport((await openCheckpoint(j.entry)).metadata);
          if (opts.assemble && (report.name !== j.tensor.name || !sameSettings(report, j.settings))) {
            throw new InputError(
              source ?? j.entry,
              `holds ${report.name} ${report.quantizer}${report.bits} r${report.rank}, ` +
                `not ${j.tensor.name} as this run plans it`,
            );
          }
          finished.set(j.tensor.name, { report, entry: j.entry });
        }
        totalParams -= j.tensor.parameters;
        done++;
      }
      if (todo.length === 0) return;
      const largest = jobs.reduce((m, j) => Math.max(m, j.tensor.parameters), 0);
      const choice = opts.backend ?? DEFAULT_CLI_BACKEND;
      executor ??= await createExecutor(opts.workers, jobs.length, choice, opts.signal, largest);
      const order = [...todo].sort(
        (a, b) => b.tensor.parameters - a.tensor.parameters || (a.tensor.name < b.tensor.name ? -1 : 1),
      );
      const runJob = async (j: (typeof order)[number]) => {
        const report = await executor!.quantize({
          tensor: j.tensor,
          settings: j.settings,
          fanInFanOut: j.fanInFanOut,
          packed,
          onNonFinite: opts.onNonFinite ?? 'refuse',
          journalFile: j.entry,
          // G travels in shared memory (no copy); the job's thread factors it.
          calibration: j.stat && { stat: j.stat, ridge: calibration!.ridge, origin: calibration!.origin },
        });
        throwIfAborted(opts.signal);
        doneParams += j.tensor.parameters;
        opts.onProgress?.({ index: done, total, name: j.tensor.name, phase: 'done', etaSeconds: eta() });
        if (report.skipped) skipped.push(report);
        else finished.set(j.tensor.name, { report, entry: j.entry });
        opts.onMatrix?.(report, done, total);
        done++;
      };
      // Every job queued in the pool at once: it hands them out in this order, and a worker takes
      // the next as soon as its job is computed, its entry's commit (fsync, rename) still running.
      // Calibrated jobs too: each holds its metric only while it computes (G is shared, read in
      // place), so queueing costs no memory — one lane per worker kept every worker idle through
      // each commit (2026-12-08). In-thread, calibrated jobs run one at a time: nothing there
      // would stop them all holding their metrics at once.
      const lanes = calibration && executor.threads === 0 ? 1 : order.length;
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(lanes, order.length) }, async () => {
          while (next < order.length) await runJob(order[next++]);
        }),
      );
    };
    if (calibration?.stream) {
      // Each layer's matrices as soon as the pass has its statistics; the pass goes on when
      // they are done, reusing the statistics' memory — one layer's G alive, not all of them.
      const waiting = new Map(jobs.map((j) => [j.tensor.name, j]));
      const sizes = {
        workers: opts.workers,
        shapes: jobs.map((j) => j.tensor.shape),
        tokens: calibration.info.tokens,
        backend: opts.backend ?? DEFAULT_CLI_BACKEND,
      };
      await streamLayers(
        calibration.stream,
        sizes,
        () => executor,
        async (stats, layer, layers) => {
          const name = `calibration statistics (layer ${layer} of ${layers})`;
          opts.onProgress?.({ index: done, total, name, phase: 'start', etaSeconds: eta() });
          const batch = jobs.filter((j) => stats.has(j.tensor.name) && waiting.delete(j.tensor.name));
          await computeBatch(batch.map((j) => withEntry(j, stats)));
        },
        opts.signal,
      );
      await computeBatch([...waiting.values()].map((j) => withEntry(j, calibration.stats)));
    } else await computeBatch(jobs.map((j) => withEntry(j, calibration?.stats)));
    const matrices = jobs.map(
      (j) => finished.get(j.tensor.name)?.report ?? skipped.find((s) => s.name === j.tensor.name)!,
    );
    const backend = executor?.backend ?? (await backendName(opts.backend ?? DEFAULT_CLI_BACKEND));
    // A plan's defaults win over the options (planMatrices), so they are what the run used.
    const defaults = compilePlan(opts.plan ?? { checkpoint: '' }, opts.settings).defaults;
    const report = buildReport(ck, defaults, backend, matrices, (performance.now() - t0) / 1000);
    const calibrationInfo = calibration?.info ?? opts.assemble?.calibration;
    if (calibrationInfo) report.calibration = calibrationInfo;
    if (opts.shard) {
      await writeShardDescriptor(out, {
        checkpoint: ck.path,
        files: checkpointIdentity(ck),
        settings: opts.settings,
        plan: opts.plan,
        targets: opts.targets,
        format,
        onNonFinite: opts.onNonFinite ?? 'refuse',
        backend,
        shard: opts.shard,
        entries: Object.fromEntries(
          jobs.flatMap((j) => {
            const f = finished.get(j.tensor.name);
            return f ? [[j.tensor.name, path.basename(f.entry)]] : [];
          }),
        ),
        skipped,
        gemmFlops: executor ? executor.flops() : 0,
        ...(calibration ? { calibration: calibration.info } : {}),
      });
      return { report, reportPath: '' };
    }

    // --- assemble ---
    // The workers go first: their matrix buffers would otherwise stay beside the assembly's.
    const flops = executor ? executor.flops() : opts.assemble?.gemmFlops;
    await executor?.close();
    executor = undefined;
    throwIfAborted(opts.signal);
    const tAssemble = performance.now();
    opts.onProgress?.({ index: total, total, name: 'writing output', phase: 'write' });
    // Every file is staged first (a full disk or a cancel here leaves the old result as it
    // was); only then are the old files retired and the new ones renamed in (commit.ts).
    const staged = new OutputCommit();
    commit = staged;
    const writer = FORMAT_WRITERS[format];
    const fo = { ck, out, finished, matrices: report.matrices, config, commit: staged, signal: opts.signal };
    await writer.write(fo);
    const ordered = jobs.map((j) => finished.get(j.tensor.name)).filter((f): f is Finished => !!f);
    await writeAdapters(
      out,
      ordered,
      adapterConfig(report.matrices, {
        config,
        fanInFanOut: ordered.some((f) => isFanInFanOut(config, f.report.name)),
        defaultRank: defaults.rank,
        modules: ck.tensors.map((t) => t.name),
        out,
      }),
      staged,
      opts.signal,
    );
    await copyModelFiles(ck, out, staged, writer.writes);
    report.totals.seconds = (performance.now() - t0) / 1000;
    report.totals.phases!.assemble = (performance.now() - tAssemble) / 1000;
    if (flops !== undefined) report.totals.gemmGflop = flops / 1e9;
    const reportPath = path.join(out, REPORT_FILE);
    await staged.addFile(reportPath, JSON.stringify(report, null, 2) + '\n', 'marker');
    throwIfAborted(opts.signal); // the last moment a cancel applies: the commit only renames
    committing = true;
    await staged.commit(await retiredFiles(out, reportPath));
    // The journal goes only now: a crash during the commit leaves it, and a rerun redoes it.
    await fsp.rm(path.join(out, JOURNAL_DIR), { recursive: true, force: true });
    return { report, reportPath };
  } catch (e) {
    await commit?.abort();
    // The other workers stop first: one still writing its journal entry would otherwise
    // leave a temp file behind the sweep below (seen when two entries hit a file size limit).
    await executor?.close();
    executor = undefined;
    if (!committing && (e instanceof CancelledError || opts.signal?.aborted)) {
      // A shard keeps the finished entries: the folder may be shared with other shards.
      if (opts.shard) await removeTemps(path.join(out, JOURNAL_DIR));
      else await fsp.rm(path.join(out, JOURNAL_DIR), { recursive: true, force: true });
      await removeTemps(out);
      await removeTemps(path.join(out, ADAPTER_DIR));
      cancelled = true;
      throw new CancelledError();
    }
    await removeTemps(out);
    await removeTemps(path.join(out, JOURNAL_DIR));
    await removeTemps(path.join(out, ADAPTER_DIR));
    // The journal keeps finished matrices for a rerun; an empty one (a full disk at the first
    // entry, a matrix refused first) is no more than a trace. Shards share it: theirs stays.
    if (!opts.shard) await fsp.rmdir(path.join(out, JOURNAL_DIR)).catch(() => undefined);
    throw e;
  } finally {
    await executor?.close();
    await unlock();
    // A failed or cancelled run leaves no trace: not even the folder it created, once that is empty.
    if (createdOut && (cancelled || !opts.shard))
      for (const d of [path.join(out, ADAPTER_DIR), out]) await fsp.rmdir(d).catch(() => undefined);
  }
}

export function buildReport(
  ck: Checkpoint,
  settings: MatrixSettings,
  backend: Report['backend'],
  matrices: MatrixReport[],
  seconds: number,
): Report {
  let parameters = 0,
    adapterTotal = 0,
    quantBytes = 0;
  const phases: Record<string, number> = {};
  for (const m of matrices) for (const [k, v] of Object.entries(m.phases ?? {})) phases[k] = (phases[k] ?? 0) + v;
  for (const m of matrices) {
    if (m.skipped) continue;
    const [rows, cols] = m.shape;
    parameters += rows * cols;
    adapterTotal += adapterBytesFor(rows, cols, m.rank, adapterBytesOf(m.dtype));
    quantBytes += reportedBytesOf(m);
  }
  const quantized = new Set(matrices.filter((m) => !m.skipped).map((m) => m.name));
  const otherBytes = ck.tensors.filter((t) => !quantized.has(t.name)).reduce((a, t) => a + t.byteLength, 0);
  return {
    version: 1,
    tool: TOOL,
    checkpoint: ck.path,
    backend,
    settings,
    matrices,
    totals: {
      matrices: quantized.size,
      parameters,
      seconds,
      backboneBytes: quantBytes + otherBytes,
      adapterBytes: adapterTotal,
      phases,
    },
  };
}

/** Errors at several bit widths without writing weights (`loftq analyze`). With calibration, each
 *  row is a calibrated LoftQ run's: output errors and the spectrum of (W − Q)·S (AnalyzeJob). */
export async function analyzeCheckpoint(checkpointPath: string, opts: AnalyzeOptions): Promise<Report> {
  const t0 = performance.now();
  const ck = await openCheckpoint(checkpointPath);
  const base: MatrixSettings = {
    bits: opts.bits[0],
    rank: opts.rank,
    iters: opts.iters,
    quantizer: opts.quantizer,
    blockSize: opts.blockSize,
  };
  const runs = opts.runs ?? [{ bits: opts.bits, rank: opts.rank }];
  for (const b of new Set(runs.flatMap((r) => r.bits))) checkSettings({ ...base, bits: b });
  // rank is clamped per matrix below (min(out, in)), so check it against the settings only
  const matrices = selectTargets(ck.tensors, opts.targets).map((tensor) => ({ tensor, settings: base }));
  if (matrices.length === 0) throw new UsageError(`${ck.path}: no tensor matches the targets`);
  // One job per matrix and run that names it (a run without names covers every target).
  type Job = { tensor: TensorInfo; run: number; rank: number };
  const jobs: Job[] = runs.flatMap((r, run) => {
    const names = r.names && new Set(r.names);
    return matrices
      .filter((m) => !names || names.has(m.tensor.name))
      .map((m) => ({ tensor: m.tensor, run, rank: Math.min(r.rank, ...m.tensor.shape) }));
  });
  // Calibration first: a bad token file or imatrix is refused before any LoftQ work.
  let calibration: ResolvedCalibration | undefined;
  const config = opts.calibration ? await readConfig(ck) : undefined;
  if (opts.calibration) {
    opts.onProgress?.({ index: 0, total: jobs.length, name: 'calibration statistics', phase: 'start' });
    calibration = await resolveCalibration(ck, opts.calibration, {
      backend: opts.backend ?? DEFAULT_CLI_BACKEND,
      signal: opts.signal,
    });
  }
  let executor: Executor | undefined;
  try {
    executor = await createExecutor(opts.workers, matrices.length, opts.backend ?? DEFAULT_CLI_BACKEND, opts.signal);
    const rows = jobs.map(() => [] as Awaited<ReturnType<Executor['analyze']>>);
    let done = 0;
    const runJobs = (batch: number[], stats?: InputStats) =>
      Promise.all(
        batch.map(async (i) => {
          const j = jobs[i];
          const stat =
            calibration && stats && statFor(calibration, stats, j.tensor, isFanInFanOut(config, j.tensor.name));
          rows[i] = await executor!.analyze({
            tensor: j.tensor,
            bits: runs[j.run].bits,
            rank: j.rank,
            iters: opts.iters,
            quantizer: opts.quantizer,
            blockSize: opts.blockSize,
            spectrum: opts.spectrum,
            onNonFinite: 'skip',
            ...(stat ? { calibration: { stat, ridge: calibration!.ridge, origin: calibration!.origin } } : {}),
          });
          opts.onProgress?.({ index: done++, total: jobs.length, name: j.tensor.name, phase: 'done' });
        }),
      );
    const all = jobs.map((_, i) => i);
    if (calibration?.stream) {
      // As quantize: each layer's matrices while the pass holds that layer's statistics.
      const waiting = new Set(all);
      const sizes = {
        workers: executor.threads || ('in-thread' as const),
        shapes: jobs.map((j) => j.tensor.shape),
        tokens: calibration.info.tokens,
        backend: opts.backend ?? DEFAULT_CLI_BACKEND,
      };
      await streamLayers(
        calibration.stream,
        sizes,
        () => executor,
        async (stats, layer, layers) => {
          const name = `calibration statistics (layer ${layer} of ${layers})`;
          opts.onProgress?.({ index: done, total: jobs.length, name, phase: 'start' });
          await runJobs(
            all.filter((i) => stats.has(jobs[i].tensor.name) && waiting.delete(i)),
            stats,
          );
        },
        opts.signal,
      );
      await runJobs([...waiting], calibration.stats);
    } else await runJobs(all, calibration?.stats);
    const sensitivity =
      calibration?.probe && opts.sensitivity !== false
        ? await outputGains(calibration.probe, jobs, runs, rows, opts)
        : undefined;
    const analyses: AnalysisEntry[] = runs.flatMap((r, run) =>
      r.bits.map((bits) => ({
        bits,
        rank: r.rank,
        iters: opts.iters,
        quantizer: opts.quantizer,
        blockSize: opts.blockSize,
        matrices: jobs.flatMap((j, i) =>
          j.run !== run ? [] : rows[i].filter((x) => x.bits === bits).map(({ bits: _b, ...x }) => x),
        ),
      })),
    );
    // Each matrix's first analysed width (HQQ leaves out widths a shape cannot be packed at).
    const firstRows = new Map<string, AnalysisEntry['matrices'][number]>();
    for (const a of analyses) for (const r of a.matrices) if (!firstRows.has(r.name)) firstRows.set(r.name, r);
    const reportMatrices: MatrixReport[] = [...firstRows.values()].map((r) => ({
      name: r.name,
      shape: r.shape,
      dtype: ck.byName.get(r.name)!.dtype,
      ...base,
      rank: Math.min(opts.rank, ...r.shape),
      relError: r.relError,
      relErrorPerIter: [r.relError],
      qloraRelError: r.qloraRelError,
      frobeniusNorm: r.frobeniusNorm,
      ...(r.outputRelError === undefined
        ? {}
        : { outputRelError: r.outputRelError, qloraOutputRelError: r.qloraOutputRelError, bestIter: r.bestIter }),
      seconds: 0,
    }));
    const report = buildReport(ck, base, executor.backend, reportMatrices, (performance.now() - t0) / 1000);
    report.analyses = analyses;
    if (calibration) report.calibration = calibration.info;
    if (sensitivity) report.outputSensitivity = sensitivity;
    return report;
  } finally {
    await executor?.close();
    calibration?.close();
  }
}

/** The probe width: the widest analysed width up to 4 bits (small perturbations, where KL grows
 *  with the squared output error), else the narrowest. */
export function probeBits(widths: number[]): number {
  const sorted = [...new Set(widths)].sort((a, b) => a - b);
  return sorted.filter((b) => b <= 4).at(-1) ?? sorted[0];
}

/** Each calibrated matrix's output gain (model/sensitivity.ts): KL of the model with the matrix
 *  quantized alone at the probe width, over ‖(W − quantize(W))·S‖² at that width — set on every
 *  row of the matrix (`outputGain`). */
async function outputGains(
  probe: NonNullable<ResolvedCalibration['probe']>,
  jobs: { tensor: TensorInfo; run: number }[],
  runs: { bits: number[] }[],
  rows: (AnalysisEntry['matrices'][number] & { bits: number })[][],
  opts: AnalyzeOptions,
): Promise<Report['outputSensitivity']> {
  const bits = probeBits(runs.flatMap((r) => r.bits));
  const probed = new Map<string, { dtype: string; den: number }>();
  jobs.forEach((j, i) => {
    if (!runs[j.run].bits.includes(bits)) return;
    const row = rows[i].find((r) => r.bits === bits);
    if (row?.qloraOutputRelError === undefined || row.outputNorm === undefined) return;
    probed.set(j.tensor.name, { dtype: j.tensor.dtype, den: (row.qloraOutputRelError * row.outputNorm) ** 2 });
  });
  if (!probed.size) return undefined;
  const settings = { quantizer: opts.quantizer, bits, blockSize: opts.blockSize };
  const names = [...probed.keys()];
  opts.onProgress?.({ index: 0, total: names.length, name: 'output sensitivity', phase: 'start' });
  const r = await probe(
    names.map((name) => ({ name, settings, dtype: probed.get(name)!.dtype })),
    opts.signal,
  );
  for (const list of rows)
    for (const row of list) {
      const p = probed.get(row.name);
      const kl = r.kl.get(row.name);
      if (p && kl !== undefined) row.outputGain = p.den > 0 ? kl / p.den : 0;
    }
  return { bits, sequences: r.sequences, tokens: r.tokens };
}
