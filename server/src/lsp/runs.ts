// `loftq/quantize` in the server: one engine run per output folder, work-done progress
// ("matrix i of N: name, ETA"), `loftq/matrixDone` as matrices finish, `loftq/runState`
// at start and end, and cancellation (request cancel or progress cancel → AbortSignal →
// the engine stops and removes its temp files, so nothing partial is left).

import { randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CancellationToken, Connection, ErrorCodes, ResponseError } from 'vscode-languageserver';
import { CheckpointError, readRegularFile, writeFileAtomic } from '../checkpoint';
import type { AnalyzeOptions, RunOptions, RunResult } from '../engine/api';
import { CancelledError } from '../base/errors';
import { checkCalibrationParams } from '../engine/calibration';
import { parsePlan } from '../plan/planfile';
import { resolveCalibration as resolvePlanCalibration } from '../plan/calibration';
import { MAX_PLAN_BYTES, planTooLarge } from '../plan/planSize';
import { Notifications } from '../protocol/requests';
import { matrixSettingsProblem, RUN_SETTING_SPECS, valueProblem } from '../registry';
import type {
  AnalyzeParams,
  AnalyzeResult,
  CalibrationParams,
  MatrixDoneParams,
  QuantizeParams,
  QuantizeResult,
  Report,
  RunStateParams,
} from '../protocol/lsp_ext';
import type { LoftqSettings } from './settings';
import { CancellableJobs } from './cancellableJobs';
import { requireInsideWorkspace } from './workspaceConfine';

export interface Engine {
  quantizeCheckpoint(checkpointPath: string, opts: RunOptions): Promise<RunResult>;
  analyzeCheckpoint?(checkpointPath: string, opts: AnalyzeOptions): Promise<Report>;
}

export function toPath(p: string): string {
  return p.startsWith('file:') ? fileURLToPath(p) : path.resolve(p);
}

/** QuantizeParams.calibration checked for shape (the engine checks the rest), paths as file paths. */
function calibrationOf(c: unknown): CalibrationParams | undefined {
  if (c === undefined || c === null) return undefined;
  const o = c as Record<string, unknown>;
  const str = (k: string) => {
    if (o[k] !== undefined && typeof o[k] !== 'string') throw invalid(`calibration.${k} must be a path`);
    return o[k] === undefined ? undefined : toPath(o[k] as string);
  };
  const g = o.generate as Record<string, unknown> | undefined;
  if (typeof c !== 'object' || (g !== undefined && (typeof g !== 'object' || g === null)))
    throw invalid('calibration must be { file | generate | imatrix, ridge? }');
  if (o.ridge !== undefined && typeof o.ridge !== 'number') throw invalid('calibration.ridge must be a number');
  if (o.products !== undefined && typeof o.products !== 'string')
    throw invalid('calibration.products must be "auto" or "float32"');
  const p: CalibrationParams = {
    file: str('file'),
    imatrix: str('imatrix'),
    ridge: o.ridge as number | undefined,
    products: o.products as CalibrationParams['products'],
  };
  if (g)
    p.generate = {
      sequences: Number(g.sequences),
      length: Number(g.length),
      seed: g.seed === undefined ? undefined : Number(g.seed),
    };
  for (const k of Object.keys(p) as (keyof CalibrationParams)[]) if (p[k] === undefined) delete p[k];
  try {
    checkCalibrationParams(p);
  } catch (e) {
    throw invalid((e as Error).message);
  }
  return p;
}

/** A request's worker count, checked: only a count passes (the engine's 'in-thread' would run
 *  LoftQ on the connection's thread). 0 or unset: the `loftq.workers` setting, then auto. */
function requestedWorkers(requested: unknown): number | undefined {
  if (requested === undefined) return undefined;
  const bad = valueProblem(RUN_SETTING_SPECS.workers, requested);
  if (bad) throw invalid(`'workers' must be ${bad}`);
  return requested as number;
}

function invalid(message: string): ResponseError<void> {
  return new ResponseError(ErrorCodes.InvalidParams, message);
}

function formatEta(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return '';
  if (s < 60) return `, ETA ${Math.ceil(s)} s`;
  return `, ETA ${Math.floor(s / 60)} min ${Math.ceil(s % 60)} s`;
}

export class Runs {
  private readonly jobs: CancellableJobs;

  constructor(
    private readonly connection: Connection,
    private readonly engine: () => Engine | undefined,
    private readonly settingsFor: (uri: string) => Promise<LoftqSettings>,
    private readonly textOf: (file: string) => Promise<string>,
    /** The workspace folders; runs stay inside them unless the user confirmed (workspaceConfine.ts). */
    private readonly workspaceRoots: () => string[] = () => [],
  ) {
    this.jobs = new CancellableJobs(connection);
  }

  set workDoneProgressSupported(v: boolean) {
    this.jobs.workDoneProgressSupported = v;
  }

  get workDoneProgressSupported(): boolean {
    return this.jobs.workDoneProgressSupported;
  }

  /** Handles window/workDoneProgress/cancel for client- and server-created tokens alike. */
  cancelProgress(token: string | number): void {
    this.jobs.cancelProgress(token);
  }

  abortAll(): void {
    this.jobs.abortAll();
  }

  async quantize(params: QuantizeParams, token: CancellationToken): Promise<QuantizeResult> {
    const engine = this.engine();
    if (!engine) throw new ResponseError(ErrorCodes.InternalError, 'this build of the server has no LoftQ engine');
    if (!params || typeof params.checkpoint !== 'string' || typeof params.out !== 'string' || !params.out)
      throw invalid("'checkpoint' and 'out' are required");
    const s = params.settings;
    const bad = matrixSettingsProblem(s);
    if (bad) throw invalid(`bad settings ${JSON.stringify(s)}: '${bad.key}' must be ${bad.expected}`);
    const badFormat = params.format === undefined ? undefined : valueProblem(RUN_SETTING_SPECS.format, params.format);
    if (badFormat) throw invalid(`'format' must be ${badFormat}, got ${JSON.stringify(params.format)}`);
    const workers = requestedWorkers(params.workers);
    const checkpoint = toPath(params.checkpoint);
    const out = toPath(params.out);
    const explicitCalibration = calibrationOf(params.calibration);
    const c = params.calibration;
    const files = [checkpoint, out, params.plan, c?.file, c?.imatrix].map((f) =>
      typeof f === 'string' ? toPath(f) : undefined,
    );
    await requireInsideWorkspace(files, this.workspaceRoots(), params.confirmedOutsideWorkspace, 'a run');
    const runId = randomUUID();
    const state = (p: Omit<RunStateParams, 'runId' | 'checkpoint' | 'out'>) =>
      void this.connection.sendNotification(Notifications.runState, {
        runId,
        checkpoint,
        out,
        ...p,
      } satisfies RunStateParams);
    const job = {
      token,
      workDoneToken: params.workDoneToken,
      busy: `a LoftQ run is already writing to ${out}; wait for it or cancel it first`,
      cancelled: 'LoftQ run cancelled; no output was written',
      onCancelled: () => state({ state: 'cancelled' }),
      onFailed: (message: string) => state({ state: 'failed', message }),
    };
    return this.jobs.run(out, job, async ({ signal, begin }) => {
      const plan = params.plan ? await this.readPlan(toPath(params.plan)) : undefined;
      // The plan's calibration block, its files relative to the plan, unless the request gives one.
      let calibration = explicitCalibration;
      if (!calibration && plan?.calibration) {
        calibration = resolvePlanCalibration(toPath(params.plan!), plan.calibration);
        const files = [calibration.file, calibration.imatrix];
        await requireInsideWorkspace(files, this.workspaceRoots(), params.confirmedOutsideWorkspace, 'a run');
      }
      const cfg = await this.settingsFor(params.plan ?? params.checkpoint);
      const progress = await begin('LoftQ', `opening ${path.basename(checkpoint)}`);
      state({ state: 'started' });
      const result = await engine.quantizeCheckpoint(checkpoint, {
        out,
        settings: s,
        plan,
        targets: plan?.targets,
        backend: params.backend ?? cfg.backend,
        format: params.format ?? plan?.format,
        workers: workers || cfg.workers || undefined,
        calibration,
        signal,
        onProgress: (e) => {
          const pct = Math.floor((100 * (e.phase === 'done' ? e.index + 1 : e.index)) / Math.max(1, e.total));
          const msg =
            e.phase === 'write'
              ? 'writing files'
              : `matrix ${e.index + 1} of ${e.total}: ${e.name}${formatEta(e.etaSeconds)}`;
          progress?.report(Math.min(100, pct), msg);
        },
        onMatrix: (matrix, index, total) =>
          void this.connection.sendNotification(Notifications.matrixDone, {
            runId,
            index,
            total,
            matrix,
          } satisfies MatrixDoneParams),
      });
      state({ state: 'finished', reportPath: result.reportPath });
      return { reportPath: result.reportPath, out, report: result.report };
    });
  }

  /** `loftq/analyze`: the engine's analysis (matrix work on its workers), the report written atomically. */
  async analyze(params: AnalyzeParams, token: CancellationToken): Promise<AnalyzeResult> {
    const engine = this.engine();
    if (!engine?.analyzeCheckpoint)
      throw new ResponseError(ErrorCodes.InternalError, 'this build of the server has no LoftQ engine');
    if (!params || typeof params.checkpoint !== 'string' || typeof params.report !== 'string' || !params.report)
      throw invalid("'checkpoint' and 'report' are required");
    if (!Array.isArray(params.bits) || !params.bits.length) throw invalid("'bits' must list at least one bit width");
    for (const bits of params.bits) {
      const bad = matrixSettingsProblem({
        bits,
        rank: params.rank,
        iters: params.iters,
        quantizer: params.quantizer,
        blockSize: params.blockSize,
      });
      if (bad) throw invalid(`bad settings: '${bad.key}' must be ${bad.expected}`);
    }
    const workers = requestedWorkers(params.workers);
    const checkpoint = toPath(params.checkpoint);
    const report = toPath(params.report);
    const explicitCalibration = calibrationOf(params.calibration);
    const c = params.calibration;
    const files = [checkpoint, report, params.plan, c?.file, c?.imatrix].map((f) =>
      typeof f === 'string' ? toPath(f) : undefined,
    );
    await requireInsideWorkspace(files, this.workspaceRoots(), params.confirmedOutsideWorkspace, 'an analysis');
    const job = {
      token,
      workDoneToken: params.workDoneToken,
      busy: `a LoftQ analysis is already writing ${report}; wait for it or cancel it first`,
      cancelled: 'LoftQ analysis cancelled; no report was written',
    };
    return this.jobs.run(report, job, async ({ signal, begin }) => {
      const plan = params.plan ? await this.readPlan(toPath(params.plan)) : undefined;
      // As for quantize: the plan's calibration block unless the request gives one; calibrated, the
      // report carries output errors and the planner plans in them.
      let calibration = explicitCalibration;
      if (!calibration && plan?.calibration) {
        calibration = resolvePlanCalibration(toPath(params.plan!), plan.calibration);
        const files = [calibration.file, calibration.imatrix];
        await requireInsideWorkspace(files, this.workspaceRoots(), params.confirmedOutsideWorkspace, 'an analysis');
      }
      const cfg = await this.settingsFor(params.plan ?? params.checkpoint);
      const progress = await begin('LoftQ analysis', `opening ${path.basename(checkpoint)}`);
      const result: Report = await engine.analyzeCheckpoint!(checkpoint, {
        bits: params.bits,
        rank: params.rank,
        iters: params.iters,
        quantizer: params.quantizer,
        blockSize: params.blockSize,
        spectrum: params.spectrum ?? 64,
        targets: plan?.targets,
        backend: params.backend ?? cfg.backend,
        workers: workers || cfg.workers || undefined,
        calibration,
        signal,
        onProgress: (e) =>
          progress?.report(
            Math.min(100, Math.floor((100 * (e.phase === 'done' ? e.index + 1 : e.index)) / Math.max(1, e.total))),
            e.phase === 'done' ? `matrix ${e.index + 1} of ${e.total}: ${e.name}` : e.name,
          ),
      });
      if (signal.aborted) throw new CancelledError();
      progress?.report(100, 'writing the report');
      await fsp.mkdir(path.dirname(report), { recursive: true });
      await writeFileAtomic(report, JSON.stringify(result, null, 2) + '\n');
      return { reportPath: report, report: result };
    });
  }

  private async readPlan(file: string) {
    let text: string;
    try {
      text = await this.textOf(file);
    } catch (e) {
      if (e instanceof CheckpointError) throw invalid(`plan ${e.message}`);
      throw invalid(`plan ${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    const tooLarge = planTooLarge(text);
    if (tooLarge) throw invalid(`plan ${file}: ${tooLarge}`);
    let parsed: ReturnType<typeof parsePlan>;
    try {
      parsed = parsePlan(text);
    } catch (e) {
      throw invalid(`plan ${file} cannot be parsed: ${(e as Error).message.split('\n')[0]}`);
    }
    const { plan, problems } = parsed;
    const err = problems.find((p) => p.severity === 'error');
    if (err) throw invalid(`plan ${file}: ${err.message}`);
    return plan;
  }
}

export async function readTextFile(file: string): Promise<string> {
  return new TextDecoder().decode(await readRegularFile(file, MAX_PLAN_BYTES));
}
