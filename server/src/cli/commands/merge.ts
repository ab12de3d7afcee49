import { mergeShards } from '../../engine/merge';
import { parseArgs } from '../args';
import { UsageError } from '../../base/errors';
import { progressReporter } from '../progress';
import { interruptSignal, workersOption } from '../settingsOptions';
import type { Command } from '../commands';

const HELP = `usage: loftq merge [SHARD_DIR…] --out DIR [--checkpoint CKPT]
  SHARD_DIR…         the --out folders of the shard runs (loftq quantize … --shard i/n);
                     omit them when every shard wrote into DIR itself (a shared volume)
  --out DIR          output folder: the same files as one unsharded run
  --checkpoint CKPT  where the checkpoint is on this machine (default: the path the shards recorded)
  --json             print the report as JSON on stdout
  --quiet            no progress
Settings, plan, targets and format come from the shards; nothing is recomputed.`;

export const mergeCommand: Command = {
  summary: 'assemble the outputs of `quantize --shard i/n` runs into the files of one run',
  async run(argv) {
    const { positional, options: o } = parseArgs(argv, {
      out: { type: 'string' },
      checkpoint: { type: 'string' },
      workers: { type: 'number' },
      json: { type: 'boolean' },
      quiet: { type: 'boolean', alias: 'q' },
      help: { type: 'boolean', alias: 'h' },
    });
    if (o.help) {
      process.stdout.write(HELP + '\n');
      return 0;
    }
    if (!o.out) throw new UsageError("option '--out DIR' is required (see loftq merge --help)");
    const dirs = positional.length ? positional : [o.out as string];
    const progress = progressReporter(process.stderr, !!o.quiet);
    const { report, reportPath } = await mergeShards(dirs, {
      out: o.out as string,
      checkpoint: o.checkpoint as string | undefined,
      workers: workersOption(o),
      signal: interruptSignal(),
      onProgress: progress.onProgress,
    });
    progress.done();
    if (o.json) {
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return 0;
    }
    const n = report.matrices.filter((m) => !m.skipped).length;
    process.stdout.write(`merged ${n} matrices from ${dirs.length} folder(s)\nreport: ${reportPath}\n`);
    return 0;
  },
};
