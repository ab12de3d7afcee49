import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from '../args';
import { InputError, UsageError } from '../../base/errors';
import { readRegularFile, writeFileAtomic } from '../../checkpoint';
import { MAX_PLAN_BYTES } from '../../plan/planSize';
import type { Command } from '../commands';
import type { CalibrationParams, PlanBudget, Report } from '../../protocol/lsp_ext';
import { ERROR_MEASURE_LABELS } from '../../protocol/lsp_ext';
import {
  adapterBytesOf,
  CostModel,
  countsAdapters,
  DEFAULT_COST,
  parseBudget,
  storageOf,
} from '../../plan/planner/cost';
import { planReport, Plan, PlanOptions } from '../../plan/planner/plan';
import { refinePlan } from '../../engine/planRefine';
import { isReportFile, readReport } from '../../plan/planner/report';
import { applyPlanToText } from '../../plan/planner/planedit';
import { compilePlan, parsePlan, settingsFor } from '../../plan/planfile';
import { analyzeForPlan, PlanAnalysisOptions } from '../../engine/planAnalyze';
import { progressReporter } from '../progress';
import {
  SETTINGS_OPTIONS,
  backendOption,
  bitsListOption,
  blockSizeOption,
  interruptSignal,
  itersOption,
  quantizerOption,
  workersOption,
} from '../settingsOptions';
import { MATRIX_SETTING_SPECS, offeredRanks, QUANTIZER_NAMES, quantizerSpec, valueProblem } from '../../registry';
import { CALIBRATION_OPTIONS, calibrationFrom } from '../calibrationOptions';
import { registerCalibrationCollector } from '../../model/calibrate';
import { resolveCalibration as resolvePlanCalibration } from '../../plan/calibration';

// the analysis options of `loftq analyze`, less --rank: plan analyses at the largest of --ranks
const { rank: _rank, ...ANALYSIS_OPTIONS } = SETTINGS_OPTIONS;

const USAGE = `usage: loftq plan CKPT|REPORT --budget 2.5|3.2GB [--bits 2,3,4,8] [--ranks 8,16,32,64]
         [--objective absolute|relative] [--scales dq|fp32] [--adapter-dtype bf16|f16|f32]
         [--count all|backbone] [--out loftq.json] [--json]
         with a checkpoint: [--iters T] [--quantizer ${QUANTIZER_NAMES.join('|')}] [--block-size B] [--target GLOB…]
                            [--backend …] [--workers N] [--report FILE] [--quiet]
                            [--calib FILE | --calib-generate N,LEN | --imatrix FILE] [--calib-ridge λ]
                            [--calib-seed S] [--calib-products P] [--no-calib]
  A checkpoint is analysed first (one LoftQ run per bit width at the largest rank, keeping
  the residual spectrum), and picked ranks below the largest get exact LoftQ runs before the
  final plan; --report saves that analysis so later plans can start from it.
  Calibrated (the options of loftq quantize; else the calibration block of the --out plan, unless
  --no-calib), the analysis is calibrated LoftQ's and the plan minimises predicted output error:
  Σ gain·‖(W − Q − A·Bᵀ)·S‖² over the matrices, each matrix's gain measured on the calibration tokens
  (docs/planner.md). Otherwise, and from a report without output errors, it minimises weight error.`;

const numbers = (v: unknown, key: string) =>
  ((v as string[] | undefined) ?? []).map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`option '--${key}' needs positive integers, got '${s}'`);
    if (key === 'ranks' && valueProblem(MATRIX_SETTING_SPECS.rank, n)) {
      throw new UsageError(`option '--ranks' takes ranks up to ${MATRIX_SETTING_SPECS.rank.max}, got '${s}'`);
    }
    return n;
  });

function oneOf<T extends string>(v: unknown, key: string, allowed: readonly T[]): T {
  if (!allowed.includes(v as T))
    throw new UsageError(`option '--${key}' must be one of ${allowed.join(', ')}, got '${v}'`);
  return v as T;
}

function costModel(report: Report, o: Record<string, unknown>, budget: PlanBudget): CostModel {
  const dtype =
    o['adapter-dtype'] !== undefined
      ? { bf16: 'BF16', f16: 'F16', f32: 'F32' }[
          oneOf(o['adapter-dtype'], 'adapter-dtype', ['bf16', 'f16', 'f32'] as const)
        ]
      : report.matrices?.[0]?.dtype;
  // HQQ stores its own scale and zero: --scales applies to codebook quantizers only.
  const own = storageOf(report.analyses?.[0]?.quantizer);
  return {
    blockSize: report.analyses?.[0]?.blockSize ?? DEFAULT_COST.blockSize,
    scales: own === 'hqq' ? own : oneOf(o.scales ?? DEFAULT_COST.scales, 'scales', ['dq', 'fp32'] as const),
    adapterBytes: adapterBytesOf(dtype),
    elementBytes: adapterBytesOf(report.matrices?.[0]?.dtype),
    // Average bits count the backbone (as the LoftQ paper's "2.5 bits"); byte budgets add the adapters.
    countAdapters:
      o.count === undefined ? countsAdapters(budget) : oneOf(o.count, 'count', ['all', 'backbone'] as const) === 'all',
  };
}

/** What the figures sum, in words: the first line of the text output. */
function errorMeasureLine(p: Plan, objective: 'absolute' | 'relative'): string {
  const rel = objective === 'relative';
  const what =
    p.errorMeasure === 'output'
      ? rel
        ? 'Σ ‖(W − Q − A·Bᵀ)·S‖² / ‖W·S‖²'
        : 'Σ gain·‖(W − Q − A·Bᵀ)·S‖², a predicted KL in nats per token'
      : rel
        ? 'Σ ‖W − Q − A·Bᵀ‖² / ‖W‖²'
        : 'Σ ‖W − Q − A·Bᵀ‖²';
  return `error: ${rel ? 'relative ' : ''}${ERROR_MEASURE_LABELS[p.errorMeasure]} — ${what}`;
}

/** The calibration block a new plan file records: the analysis' calibration, files relative to the plan. */
function calibrationBlock(c: CalibrationParams, planFile: string): CalibrationParams {
  const rel = (f: string) => path.relative(path.dirname(path.resolve(planFile)), path.resolve(f)) || '.';
  return {
    ...c,
    ...(c.file !== undefined ? { file: rel(c.file) } : {}),
    ...(c.imatrix !== undefined ? { imatrix: rel(c.imatrix) } : {}),
  };
}

function text(p: Plan, objective: 'absolute' | 'relative'): string {
  const f = (x: number) => (Number.isFinite(x) ? x.toPrecision(4) : '—');
  const ratio = (x: number) =>
    Number.isFinite(x) && x > 0 ? ` (planner/this = ${(p.plan.error / x).toFixed(3)})` : '';
  const u = p.baselines.uniform,
    k = p.baselines.firstK;
  const lines = [
    errorMeasureLine(p, objective),
    `budget ${p.budget.avgBits !== undefined ? `${p.budget.avgBits} bits/param` : `${p.budget.bytes} bytes`} ` +
      `over ${p.choices.length} matrices (${p.parameters} parameters): ${p.budgetBytes} bytes`,
    `planner   error ${f(p.plan.error)}  ${p.plan.bytes} bytes  ${p.plan.avgBits.toFixed(3)} bits (backbone) + ` +
      `${p.plan.adapterBytes} adapter bytes  gap ${(p.optimalityGap * 100).toFixed(3)}%`,
    `uniform   error ${f(u.error)}  ${Number.isFinite(u.bytes) ? u.bytes : '—'} bytes  ${f(u.avgBits)} bits  ` +
      `(${Number.isFinite(u.bits) ? `${u.bits}-bit` : 'does not fit'})${ratio(u.error)}`,
    `first-k   error ${f(k.error)}  ${Number.isFinite(k.bytes) ? k.bytes : '—'} bytes  ${f(k.avgBits)} bits  ` +
      `(${Number.isFinite(k.k) ? `k=${k.k}` : 'does not fit'})${ratio(k.error)}`,
    ...p.notes.map((n) => `note: ${n}`),
    ...p.warnings.map((w) => `warning: ${w}`),
    'overrides:',
    ...p.overrides.map((o) => `  ${o.match}  bits ${o.bits} rank ${o.rank}`),
  ];
  return lines.join('\n') + '\n';
}

export const planCommand: Command = {
  summary: 'mixed-precision plan: the best bits and rank per matrix under a memory budget',
  async run(argv) {
    const { positional, options: o } = parseArgs(argv, {
      budget: { type: 'string' },
      bits: { type: 'list' },
      ranks: { type: 'list' },
      objective: { type: 'string', default: 'absolute' },
      scales: { type: 'string' },
      'adapter-dtype': { type: 'string' },
      count: { type: 'string' },
      out: { type: 'string' },
      json: { type: 'boolean' },
      ...ANALYSIS_OPTIONS,
      report: { type: 'string' },
      quiet: { type: 'boolean', alias: 'q' },
      ...CALIBRATION_OPTIONS,
    });
    if (o.help) {
      process.stdout.write(USAGE + '\n');
      return 0;
    }
    if (positional.length !== 1) throw new UsageError('plan takes one checkpoint or analysis report');
    const src = positional[0];
    if (src.endsWith('.json') && !isReportFile(src)) throw new InputError(src, 'no such report file');
    // An existing plan at --out: a regular file of at most 1 MiB (a FIFO or a folder is one clear line).
    const outText =
      typeof o.out === 'string' && fs.existsSync(o.out)
        ? new TextDecoder().decode(await readRegularFile(o.out, MAX_PLAN_BYTES))
        : undefined;
    const planFile = outText ? parsePlan(outText).plan : undefined;
    let budget: PlanBudget | undefined = typeof o.budget === 'string' ? parseBudget(o.budget) : undefined;
    if (!budget) budget = planFile?.budget;
    if (!budget) throw new UsageError("plan needs '--budget' (e.g. 2.5 or 3.2GB)");
    const bits = bitsListOption(numbers(o.bits, 'bits'));
    const ranks = numbers(o.ranks, 'ranks');
    let report: Report;
    let ranksOffered: number[];
    let analysis: PlanAnalysisOptions | undefined;
    let calibration: CalibrationParams | undefined;
    if (isReportFile(src)) {
      const analysisOnly = ['iters', 'quantizer', 'block-size', 'target', 'backend', 'workers', 'report'];
      for (const k of [...analysisOnly, ...Object.keys(CALIBRATION_OPTIONS)]) {
        if (argv.some((a) => a === `--${k}` || a.startsWith(`--${k}=`)))
          throw new UsageError(
            `option '--${k}' applies to a checkpoint, not to a report (its analysis is already done)`,
          );
      }
      report = readReport(src);
      // defaults: every analysed bit width; the registry's ranks up to the analysed rank
      ranksOffered = ranks.length ? ranks : offeredRanks(Math.max(...report.analyses!.map((a) => a.rank)));
    } else {
      ranksOffered = ranks.length ? ranks : offeredRanks();
      // The --out plan's calibration block, its files relative to the plan (a CLI source replaces it).
      const planCalibration = planFile?.calibration && resolvePlanCalibration(o.out as string, planFile.calibration);
      calibration = calibrationFrom(o, planCalibration);
      if (calibration) registerCalibrationCollector();
      const progress = progressReporter(process.stderr, !!o.quiet);
      analysis = {
        bits: bits.length ? bits : [...quantizerSpec(quantizerOption(o)).bits],
        ranks: ranksOffered,
        iters: itersOption(o),
        quantizer: quantizerOption(o),
        blockSize: blockSizeOption(o),
        targets: (o.target as string[] | undefined) ?? planFile?.targets,
        backend: backendOption(o),
        workers: workersOption(o),
        calibration,
        signal: interruptSignal(),
        onProgress: progress.onProgress,
      };
      report = await analyzeForPlan(src, analysis);
      progress.done();
    }
    // matrices the plan file skips are not planned
    const skipped = planFile ? compilePlan(planFile) : undefined;
    const planOpts: PlanOptions = {
      budget,
      bits: bits.length ? bits : undefined,
      ranks: ranksOffered,
      exclude: skipped && ((name: string) => settingsFor(skipped, name) === null),
      objective: oneOf(o.objective, 'objective', ['absolute', 'relative'] as const),
      cost: costModel(report, o, budget),
    };
    let plan: Plan;
    if (analysis) {
      // with the checkpoint at hand, picked choices predicted from a larger rank get exact runs
      const refined = await refinePlan(src, report, planOpts, { ...analysis, onProgress: undefined });
      plan = refined.plan;
      if (refined.runs)
        plan.notes.push(
          `${refined.runs} LoftQ runs at the picked smaller ranks replaced rank predictions ` +
            `(${refined.rounds} round${refined.rounds === 1 ? '' : 's'})`,
        );
      if (typeof o.report === 'string')
        await writeFileAtomic(path.resolve(o.report), JSON.stringify(report, null, 2) + '\n');
    } else {
      plan = planReport(report, planOpts);
      const predicted = plan.choices.filter((c) => c.exact === false).length;
      if (predicted)
        plan.notes.push(
          `${predicted} choices are predicted from a larger analysed rank; such predictions run high ` +
            '(docs/planner.md); plan from the checkpoint to replace them with exact runs',
        );
    }
    if (typeof o.out === 'string') {
      // a new plan file also records the analysis settings, so quantizing with it matches the prediction
      const a = report.analyses![0];
      const ckRel =
        path.relative(
          path.dirname(path.resolve(o.out)),
          path.resolve(isReportFile(src) ? path.dirname(src) : '.', report.checkpoint),
        ) || '.';
      // An HQQ analysis plans for HQQ's loader: the plan writes that format.
      const hqqFormat = storageOf(a.quantizer) === 'hqq' ? ',\n  "format": "hqq"' : '';
      // A calibrated analysis predicts a calibrated run: the plan records the same calibration.
      const calib = calibration ? `,\n  "calibration": ${JSON.stringify(calibrationBlock(calibration, o.out))}` : '';
      const start =
        outText ??
        `{\n  "checkpoint": ${JSON.stringify(ckRel)},\n  ` +
          `"defaults": { "iters": ${a.iters}, "quantizer": ${JSON.stringify(a.quantizer)}, ` +
          `"blockSize": ${a.blockSize} }${hqqFormat}${calib}\n}\n`;
      await writeFileAtomic(o.out, applyPlanToText(start, plan.choices, budget));
    }
    if (o.json) {
      // stdout keeps the documented shape; warnings and notes go to stderr
      const { budget: b, plan: s, baselines, optimalityGap, errorMeasure } = plan;
      for (const n of plan.notes) process.stderr.write(`note: ${n}\n`);
      for (const w of plan.warnings) process.stderr.write(`warning: ${w}\n`);
      const json = { budget: b, plan: s, baselines, optimalityGap, errorMeasure };
      process.stdout.write(JSON.stringify(json, null, 2) + '\n');
    } else process.stdout.write(text(plan, planOpts.objective ?? 'absolute'));
    return 0;
  },
};
