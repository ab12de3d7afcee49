import * as path from 'node:path';
import { analyzeCheckpoint } from '../../engine/run';
import { parseArgs } from '../args';
import { UsageError } from '../../base/errors';
import { writeFileAtomic } from '../../checkpoint';
import { progressReporter } from '../progress';
import {
  SETTINGS_OPTIONS,
  backendOption,
  bitsListOption,
  blockSizeOption,
  interruptSignal,
  itersOption,
  quantizerOption,
  rankOption,
  workersOption,
} from '../settingsOptions';
import { intOption } from '../args';
import type { Command } from '../commands';
import { QUANTIZER_NAMES } from '../../registry';
import { CALIBRATION_HELP, CALIBRATION_OPTIONS, calibrationFrom } from '../calibrationOptions';
import { registerCalibrationCollector } from '../../model/calibrate';

// quantize's calibration options, less --no-calib (an analysis has no plan whose block it would turn off)
const { 'no-calib': _noCalib, ...ANALYSIS_CALIBRATION } = CALIBRATION_OPTIONS;

const HELP = `usage: loftq analyze CKPT --bits 2,3,4 --report FILE [--rank R] [--iters T]
                     [--quantizer ${QUANTIZER_NAMES.join('|')}] [--block-size B] [--target GLOB…] [--spectrum N]
                     [--backend …] [--workers N] [--calib FILE | --calib-generate N,LEN | --imatrix FILE …]
  LoftQ errors of every target matrix at several bit widths; no weights are written.
  --spectrum N keeps the top-N singular values of each residual (the planner predicts smaller ranks from them; \
default 64).
  With calibration (the options of loftq quantize), every run is calibrated LoftQ's: the report carries output
  errors ‖(W − Q − B·A)·S‖, the spectrum of (W − Q)·S and, for token sources, each matrix's output gain (KL of
  the model with it quantized alone, on 512 of the tokens), and loftq plan then minimises predicted output error.
${CALIBRATION_HELP.split('\n')
  .filter((l) => !/--no-calib|With --plan|--imatrix\) is given|--calib-products and --calib-seed/.test(l))
  .join('\n')}`;

export const analyzeCommand: Command = {
  summary: 'LoftQ errors at several bit widths, without writing weights (input for the planner)',
  async run(argv) {
    const { positional, options: o } = parseArgs(argv, {
      ...SETTINGS_OPTIONS,
      bits: { type: 'list', default: ['2', '3', '4'] },
      report: { type: 'string' },
      spectrum: { type: 'number', default: 64 },
      quiet: { type: 'boolean', alias: 'q' },
      ...ANALYSIS_CALIBRATION,
    });
    if (o.help) {
      process.stdout.write(HELP + '\n');
      return 0;
    }
    if (positional.length !== 1) throw new UsageError('analyze takes one checkpoint; see loftq analyze --help');
    if (!o.report) throw new UsageError("option '--report FILE' is required");
    const bits = bitsListOption((o.bits as string[]).map(Number));
    const calibration = calibrationFrom(o);
    if (calibration) registerCalibrationCollector();
    const progress = progressReporter(process.stderr, !!o.quiet);
    const report = await analyzeCheckpoint(positional[0], {
      bits,
      rank: rankOption(o),
      iters: itersOption(o),
      quantizer: quantizerOption(o),
      blockSize: blockSizeOption(o),
      targets: o.target as string[] | undefined,
      backend: backendOption(o),
      workers: workersOption(o),
      spectrum: intOption(o, 'spectrum', undefined, 0) || undefined,
      calibration,
      signal: interruptSignal(),
      onProgress: progress.onProgress,
    });
    progress.done();
    const file = path.resolve(o.report as string);
    await writeFileAtomic(file, JSON.stringify(report, null, 2) + '\n');
    for (const a of report.analyses!) {
      const n = Math.max(a.matrices.length, 1);
      const mean = (f: (m: (typeof a.matrices)[number]) => number | undefined) =>
        a.matrices.reduce((s, m) => s + (f(m) ?? NaN), 0) / n;
      const output = report.calibration
        ? `, output error ${mean((m) => m.outputRelError).toFixed(4)} ` +
          `(QLoRA ${mean((m) => m.qloraOutputRelError).toFixed(4)})`
        : '';
      process.stdout.write(
        `${a.bits}-bit: mean LoftQ relative error ${mean((m) => m.relError).toFixed(4)}${output} ` +
          `over ${a.matrices.length} matrices\n`,
      );
    }
    if (report.calibration) {
      const s = report.outputSensitivity;
      process.stdout.write(
        s
          ? `output gains: each matrix quantized alone at ${s.bits} bits on ${s.tokens} calibration tokens; ` +
              'loftq plan minimises predicted output error\n'
          : 'no output gains (an imatrix has no tokens to probe them on): loftq plan plans in weight error\n',
      );
    }
    process.stdout.write(`report: ${file}\n`);
    return 0;
  },
};
