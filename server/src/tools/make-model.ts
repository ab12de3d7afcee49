// `npm run make-model -- --preset tiny|tinyllama-1.1b|llama-7b --out DIR [--layers N]
//  [--seed S] [--shard-size BYTES|2GB|500MB] [--workers N]`: writes a Llama-shaped sharded
// BF16 checkpoint with LLM-like weights (see make-model-lib.ts). The same bundle is the
// worker thread that generates tensors.

import * as os from 'node:os';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { parseArgs } from '../cli/args';
import { UsageError } from '../base/errors';
import { PRESETS, TensorJob } from './make-model-presets';
import { generateTensor, makeModel } from './make-model-lib';

const USAGE = 'usage: make-model --preset NAME --out DIR [--layers N] [--seed S] [--shard-size SIZE] [--workers N]';

export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB)?$/i.exec(s.trim());
  if (!m) throw new UsageError(`option '--shard-size' needs a size like 2GB, 500MB or 1000000, got '${s}'`);
  const unit = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9 }[(m[2] ?? 'B').toUpperCase() as 'B'];
  return Math.floor(Number(m[1]) * unit);
}

function positiveInt(v: unknown, key: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || (v as number) < min)
    throw new UsageError(`option '--${key}' must be an integer ≥ ${min}, got ${v}`);
  return v as number;
}

async function main(argv: string[]): Promise<void> {
  const { options, positional } = parseArgs(argv, {
    preset: { type: 'string' },
    out: { type: 'string' },
    layers: { type: 'number' },
    seed: { type: 'number' },
    'shard-size': { type: 'string' },
    workers: { type: 'number' },
    quiet: { type: 'boolean' },
    help: { type: 'boolean' },
  });
  if (options.help) {
    console.log(USAGE);
    return;
  }
  if (positional.length) throw new UsageError(`unexpected argument '${positional[0]}'\n${USAGE}`);
  const preset = options.preset as string | undefined;
  if (!preset || !PRESETS[preset])
    throw new UsageError(`option '--preset' must be one of ${Object.keys(PRESETS).join(', ')}`);
  if (!options.out) throw new UsageError(`option '--out DIR' is required`);
  const t0 = performance.now();
  const r = await makeModel({
    preset,
    out: options.out as string,
    layers: positiveInt(options.layers, 'layers', 1),
    seed: positiveInt(options.seed, 'seed', 0),
    shardSize: options['shard-size'] ? parseSize(options['shard-size'] as string) : undefined,
    workers: positiveInt(options.workers, 'workers', 1) ?? os.availableParallelism(),
    workerScript: __filename,
    onTensor:
      options.quiet || !process.stderr.isTTY
        ? undefined
        : (name, i, n) => process.stderr.write(`\r\x1b[K[${i + 1}/${n}] ${name}`),
  });
  if (!options.quiet && process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  console.log(
    `${preset}: ${r.tensors} tensors, ${(r.parameters / 1e6).toFixed(1)}M parameters, ` +
      `${(r.totalSize / 1e6).toFixed(1)} MB in ${r.files.length} shard(s) → ${options.out} (${secs} s)`,
  );
}

function runWorker(): void {
  parentPort!.on('message', ({ job, seed }: { job: TensorJob; seed: number }) => {
    const bytes = generateTensor(job, seed);
    parentPort!.postMessage(bytes, [bytes.buffer as ArrayBuffer]);
  });
}

if (!isMainThread && workerData?.makeModelWorker) runWorker();
else if (require.main === module) {
  main(process.argv.slice(2)).catch((e) => {
    const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
    process.stderr.write(`make-model: ${msg}\n`);
    process.exit(e instanceof UsageError ? 2 : 1);
  });
}
