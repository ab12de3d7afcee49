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

const HELP = `usage: loftq analyze CKPT --bits 2,3,4 --report FILE [--rank R] [--iters T]
                     [--quantizer ${QUANTIZER_NAMES.join('|')}] [--block-size B] [--target GLOB…] [--spectrum N]
                     [--backend …] [--workers N]
  LoftQ errors of every target matrix at several bit widths; no weights are written.
  --spectrum N keeps the top-N singular values of each residual (the planner predicts smaller ranks from them; \
default 64).`;

export const analyzeCommand: Command = {
  summary: 'LoftQ errors at several bit widths, without writing weights (input for the planner)',
  async run(argv) {
    const { positional, options: o } = parseArgs(argv, {
      ...SETTINGS_OPTIONS,
      bits: { type: 'list', default: ['2', '3', '4'] },
      report: { type: 'string' },
      spectrum: { type: 'number', default: 64 },
      quiet: { type: 'boolean', alias: 'q' },
    });
    if (o.help) {
      process.stdout.write(HELP + '\n');
      return 0;
    }
    if (positional.length !== 1) throw new UsageError('analyze takes one checkpoint; see loftq analyze --help');
    if (!o.report) throw new UsageError("option '--report FILE' is required");
    const bits = bitsListOption((o.bits as string[]).map(Number));
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
      signal: interruptSignal(),
      onProgress: progress.onProgress,
    });
    progress.done();
    const file = path.resolve(o.report as string);
    await writeFileAtomic(file, JSON.stringify(report, null, 2) + '\n');
    for (const a of report.analyses!) {
      const mean = a.matrices.reduce((s, m) => s + m.relError, 0) / Math.max(a.matrices.length, 1);
      process.stdout.write(
        `${a.bits}-bit: mean LoftQ relative error ${mean.toFixed(4)} over ${a.matrices.length} matrices\n`,
      );
    }
    process.stdout.write(`report: ${file}\n`);
    return 0;
  },
};
