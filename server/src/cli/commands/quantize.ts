import { nativeAddon } from '../../kernels/native';
import { quantizeCheckpoint } from '../../engine/run';
import { parseArgs, intOption } from '../args';
import { UsageError, InputError } from '../../base/errors';
import { parsePlan, resolveCheckpointPath } from '../../plan/planfile';
import { MAX_PLAN_BYTES } from '../../plan/planSize';
import { CheckpointError, readRegularFile } from '../../checkpoint';
import { progressReporter } from '../progress';
import { SETTINGS_OPTIONS, backendOption, choiceOption, interruptSignal, settingsFrom } from '../settingsOptions';
import { workersOption } from '../settingsOptions';
import { BACKEND_CHOICES, DEFAULT_SETTINGS, EXPORT_FORMATS, NONFINITE_POLICIES, oneOf } from '../../registry';
import { QUANTIZER_NAMES, RUN_SETTING_SPECS, SUPPORTED_BITS } from '../../registry';
import type { Command } from '../commands';
import type { MatrixReport, PlanFile, Report } from '../../protocol/lsp_ext';
import { reloadWarnings } from '../../plan/planner/reload';
import { CALIBRATION_HELP, CALIBRATION_OPTIONS, calibrationFrom } from '../calibrationOptions';
import { registerCalibrationCollector } from '../../model/calibrate';
import { parseShard } from '../shardOption';
import { resolveCalibration as resolvePlanCalibration } from '../../plan/calibration';

const HELP = `usage: loftq quantize CKPT --out DIR [options]
  CKPT                   a .safetensors file or a checkpoint folder (sharded with an index)
  --out DIR              output folder (backbone, loftq_init/ adapters, loftq-report.json)
  --bits N               ${oneOf(SUPPORTED_BITS)} (default ${DEFAULT_SETTINGS.bits})
  --rank R               LoRA rank (default ${DEFAULT_SETTINGS.rank})
  --iters T              LoftQ alternations (default ${DEFAULT_SETTINGS.iters})
  --quantizer ${QUANTIZER_NAMES.join('|')} (default ${DEFAULT_SETTINGS.quantizer})
  --block-size B         quantization block (default ${DEFAULT_SETTINGS.blockSize})
  --target GLOB…         module globs to quantize (default: Llama/GPT-2/BERT/T5 linear layers)
  --plan loftq.json      per-matrix settings from a plan file (its checkpoint is used if CKPT is omitted)
  --backend ${BACKEND_CHOICES.join('|')} (default ${RUN_SETTING_SPECS.backend.default})
  --format ${EXPORT_FORMATS.join('|')}   peft: dense Q (default for nf/uniform); packed adds model.packed.safetensors;
                         hqq: a pre-quantized HQQ checkpoint transformers loads at each module's bits
                         (default for --quantizer hqq; the folder carries loftq_hqq.py for transformers 5.x)
  --workers N            worker threads (default and 0: one per core)
  --shard i/n            process a deterministic 1/n of the matrices (then: loftq merge); auto: i and n
                         from a Slurm job array, auto/n: i from a Kubernetes Indexed Job (docs/cluster.md)
  --on-nonfinite refuse|skip   a matrix with NaN/Inf stops the run (default) or is copied unchanged
${CALIBRATION_HELP}
  --json                 print the report as JSON on stdout
  --quiet                no progress`;

/** The output-space errors of a calibrated run, and where its statistics came from. */
function gemmNote(gflop: number | undefined): string {
  return gflop ? `; GEMM ${gflop.toFixed(gflop < 10 ? 2 : 0)} GFLOP` : '';
}

function calibratedLine(report: Report): string {
  const ms = report.matrices.filter((m) => m.outputRelError !== undefined && m.qloraOutputRelError !== undefined);
  const mean = (f: (m: MatrixReport) => number) => ms.reduce((a, m) => a + f(m), 0) / Math.max(ms.length, 1);
  const c = report.calibration!;
  const from =
    c.source === 'imatrix'
      ? `imatrix ${c.file}`
      : `${c.sequences} sequences, ${c.tokens} tokens (${c.source}${c.file ? ` ${c.file}` : ''})`;
  return (
    `mean output error ‖(W−Q−AB)S‖/‖WS‖: LoftQ ${mean((m) => m.outputRelError!).toFixed(4)}  ` +
    `vs QLoRA ${mean((m) => m.qloraOutputRelError!).toFixed(4)}; calibration: ${from}, ridge ${c.ridge}` +
    (c.products === 'bf16' ? ', pass in bf16 products' : '')
  );
}

export const quantizeCommand: Command = {
  summary: 'run LoftQ on a checkpoint and write PEFT-loadable files and a report',
  async run(argv) {
    const { positional, options: o } = parseArgs(argv, {
      ...SETTINGS_OPTIONS,
      ...CALIBRATION_OPTIONS,
      out: { type: 'string' },
      bits: { type: 'number', default: DEFAULT_SETTINGS.bits },
      plan: { type: 'string' },
      format: { type: 'string' },
      shard: { type: 'string' },
      'on-nonfinite': { type: 'string', default: 'refuse' },
      json: { type: 'boolean' },
      quiet: { type: 'boolean', alias: 'q' },
    });
    if (o.help) {
      process.stdout.write(HELP + '\n');
      return 0;
    }
    let plan: PlanFile | undefined;
    let checkpoint = positional[0];
    if (o.plan) {
      const file = o.plan as string;
      let text: string;
      // Regular files of at most 1 MiB (plan/planSize.ts): a FIFO or a huge plan is one clear line.
      try {
        text = new TextDecoder().decode(await readRegularFile(file, MAX_PLAN_BYTES));
      } catch (e) {
        if (e instanceof CheckpointError) throw e;
        throw new InputError(file, `cannot be read (${(e as NodeJS.ErrnoException).code})`);
      }
      const parsed = parsePlan(text);
      const bad = parsed.problems.find((p) => p.severity === 'error');
      if (bad) throw new InputError(file, `${bad.path.length ? bad.path.join('.') + ': ' : ''}${bad.message}`);
      plan = parsed.plan;
      checkpoint ??= resolveCheckpointPath(file, plan);
    }
    if (!checkpoint || positional.length > 1)
      throw new UsageError('quantize takes one checkpoint (or --plan loftq.json); see loftq quantize --help');
    if (!o.out) throw new UsageError("option '--out DIR' is required");
    // --format, else the plan's, else the quantizer's own (engine/run.ts: hqq for hqq, else peft).
    const format = o.format !== undefined ? choiceOption(o, 'format', EXPORT_FORMATS) : plan?.format;
    const onNonFinite = choiceOption(o, 'on-nonfinite', NONFINITE_POLICIES);
    const shard = o.shard !== undefined ? parseShard(String(o.shard)) : undefined;
    // The plan's calibration block, its files relative to the plan (a CLI source replaces it).
    const planCalibration = plan?.calibration && resolvePlanCalibration(o.plan as string, plan.calibration);
    const calibration = calibrationFrom(o, planCalibration);
    if (calibration) registerCalibrationCollector();
    const backend = backendOption(o);
    // A token-calibrated run is a forward pass plus exact output norms: on wasm (asked for by
    // name) it is several times slower than where the native module is built (README, docs/bench.md).
    if (calibration && calibration.imatrix === undefined && backend === 'wasm' && !o.quiet && nativeAddon().module)
      process.stderr.write(
        'note: calibrated runs are arithmetic-heavy; --backend native (built on this machine) runs them ' +
          'about 6× faster than wasm\n',
      );
    const progress = progressReporter(process.stderr, !!o.quiet);
    const { report, reportPath } = await quantizeCheckpoint(checkpoint, {
      out: o.out as string,
      settings: settingsFrom(o, intOption(o, 'bits', [...SUPPORTED_BITS])),
      plan,
      targets: o.target as string[] | undefined,
      backend,
      format,
      workers: workersOption(o),
      shard,
      onNonFinite,
      calibration,
      signal: interruptSignal(),
      onProgress: progress.onProgress,
    });
    progress.done();
    const reload = reloadWarnings(report.matrices);
    if (reload.length) {
      process.stderr.write(
        `warning: ${reload.length} matrices lose accuracy when bitsandbytes re-quantizes the stored backbone ` +
          `to NF4 (block 64) at load; e.g. ${reload[0]}. NF2 and NF4 survive the reload exactly; ` +
          'NF3/NF8/uniform do not.\n',
      );
    }
    if (o.json) {
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return 0;
    }
    const ms = report.matrices.filter((m) => !m.skipped);
    const mean = (f: (m: (typeof ms)[number]) => number) => ms.reduce((a, m) => a + f(m), 0) / Math.max(ms.length, 1);
    process.stdout.write(
      [
        `${shard ? `shard ${shard.index}/${shard.count}: ` : ''}${ms.length} matrices quantized ` +
          `on ${report.backend}${backend === 'auto' ? ' (--backend auto)' : ''} ` +
          `in ${report.totals.seconds.toFixed(1)} s`,
        `mean relative error: LoftQ ${mean((m) => m.relError).toFixed(4)}  ` +
          `vs QLoRA ${mean((m) => m.qloraRelError).toFixed(4)}`,
        ...(report.calibration ? [calibratedLine(report)] : []),
        `time by phase (summed over workers): ${Object.entries(report.totals.phases ?? {})
          .map(([k, v]) => `${k} ${v.toFixed(1)} s`)
          .join(', ')}` + gemmNote(report.totals.gemmGflop),
        ...report.matrices.filter((m) => m.skipped).map((m) => `skipped ${m.name}: ${m.skipped}`),
        reportPath ? `report: ${reportPath}` : `journal entries in ${o.out}; assemble with: loftq merge`,
      ].join('\n') + '\n',
    );
    return 0;
  },
};
