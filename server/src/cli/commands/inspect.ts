import { openCheckpoint } from '../../checkpoint';
import { inspectCheckpoint } from '../../engine/inspect';
import { parseArgs } from '../args';
import { UsageError } from '../../base/errors';
import type { Command } from '../commands';

export const inspectCommand: Command = {
  summary: 'summarise a checkpoint header: tensors, dtypes, shapes, parameter counts',
  async run(argv) {
    const { positional, options } = parseArgs(argv, {
      json: { type: 'boolean' },
      help: { type: 'boolean', alias: 'h' },
    });
    if (options.help) {
      process.stdout.write('usage: loftq inspect CKPT [--json]\n');
      return 0;
    }
    if (positional.length !== 1) throw new UsageError('inspect takes one checkpoint (a .safetensors file or a folder)');
    const info = inspectCheckpoint(await openCheckpoint(positional[0]));
    if (options.json) {
      process.stdout.write(JSON.stringify(info, null, 2) + '\n');
      return 0;
    }
    const lines = [
      `${info.checkpoint}: ${info.totals.tensors} tensors, ` +
        `${info.totals.parameters.toLocaleString('en-US')} parameters, ` +
        `${info.totals.bytes.toLocaleString('en-US')} bytes in ${info.files.length} file(s)`,
    ];
    for (const [dt, t] of Object.entries(info.totals.byDtype))
      lines.push(
        `  ${dt.padEnd(8)} ${String(t.tensors).padStart(6)} tensors ` +
          `${t.parameters.toLocaleString('en-US').padStart(16)} params`,
      );
    // A loop, not Math.max(...names): spreading 200k arguments overflows the stack.
    const w = info.tensors.reduce((m, t) => Math.max(m, t.name.length), 4);
    for (const t of info.tensors)
      lines.push(
        `  ${t.name.padEnd(w)}  ${t.dtype.padEnd(7)} ${JSON.stringify(t.shape).padEnd(14)} ` +
          t.parameters.toLocaleString('en-US').padStart(14),
      );
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  },
};
