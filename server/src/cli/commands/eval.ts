// `loftq eval ORIGINAL OUTDIR --tokens FILE`: how far the LoftQ init and the QLoRA init are from
// the original model on real tokens (KL per token, same top-1, perplexity), in the spirit of
// llama.cpp's `llama-perplexity --kl-divergence`.

import { UsageError } from '../../base/errors';
import { createBackend } from '../../linalg/backend';
import type { EvalProgress } from '../../model/evaluate';
import { runEval } from '../../model/evalRun';
import type { ModelEval, ModelSideEval } from '../../protocol/lsp_ext';
import { parseArgs } from '../args';
import type { Command } from '../commands';
import { backendOption, interruptSignal } from '../settingsOptions';
import { BACKEND_CHOICES, EVAL_SPECS, parseSampleSizes, RUN_SETTING_SPECS, valueProblem } from '../../registry';

const HELP = `usage: loftq eval ORIGINAL OUTDIR (--tokens FILE | --generate N,LEN) [options]
  ORIGINAL               the checkpoint that was quantized (folder with config.json)
  OUTDIR                 the --out folder of loftq quantize (backbone, loftq_init/, loftq-report.json)
  --tokens FILE          JSON array of token-id sequences ([[1, 403, …], …]; each ≥ 2 tokens),
                         or a .txt file tokenized with ORIGINAL's tokenizer.json
  --generate N,LEN       held-out tokens: N sequences of LEN sampled from ORIGINAL (as --calib-generate),
                         with --seed S, by default the seed after the calibration's (never the same tokens)
  --seed S               the --generate sampler's seed
  --json                 print the result as JSON on stdout
  --no-report-update     do not record the result in OUTDIR/loftq-report.json
  --backend ${BACKEND_CHOICES.join('|')} (default ${RUN_SETTING_SPECS.backend.default})
  --quiet                no progress
Compares the original model with the LoftQ init (backbone + (α/r)·B·A, rank_pattern honoured) and the
QLoRA init (quantize(W) with the report's settings, no adapter): KL(original ‖ init) in nats per token
(mean, median, 99th percentile) over every position, same-top-1 %, and perplexity on next tokens.`;

function progressLine(stream: NodeJS.WriteStream, quiet: boolean) {
  const tty = stream.isTTY === true;
  let drawn = false;
  return {
    on(p: EvalProgress) {
      if (quiet) return;
      const chunk = p.chunks > 1 ? ` (chunk ${p.chunk + 1}/${p.chunks})` : '';
      const line = `${p.variant.padEnd(8)} layer ${p.layer}/${p.layers}${chunk}`;
      if (tty) {
        stream.write(`\r\x1b[2K${line}`);
        drawn = true;
      } else if (p.layer === p.layers) {
        stream.write(`${line}\n`); // logs get one line per forward pass, not one per layer
      }
    },
    done() {
      if (tty && drawn) stream.write('\n');
    },
  };
}

const f = (x: number, d = 4) => (Number.isFinite(x) ? x.toFixed(d) : String(x));

function table(original: { ppl: number }, sides: [string, ModelSideEval][]): string {
  const head = ['', 'KL mean', 'KL median', 'KL p99', 'top-1 %', 'PPL', 'ln(PPL ratio)'];
  const rows = [
    head,
    ['original', '', '', '', '', f(original.ppl, 3), ''],
    ...sides.map(([n, s]) => [n, f(s.kl), f(s.klMedian), f(s.klP99), f(s.top1, 2), f(s.ppl, 3), f(s.lnPplRatio)]),
  ];
  const widths = head.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const cell = (c: string, i: number) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]));
  return rows.map((r) => r.map(cell).join('  ')).join('\n');
}

/** `--generate N,LEN [--seed S]`, checked against the registry; undefined without --generate. */
function generateOption(o: Record<string, unknown>): { sequences: number; length: number; seed?: number } | undefined {
  if (o.generate === undefined) {
    if (o.seed !== undefined) throw new UsageError("option '--seed' goes with --generate");
    return undefined;
  }
  const sizes = parseSampleSizes(String(o.generate));
  if (typeof sizes === 'string') throw new UsageError(`option '--generate' takes ${sizes}, got '${o.generate}'`);
  if (o.seed === undefined) return sizes;
  const bad = valueProblem(EVAL_SPECS.seed, o.seed);
  if (bad) throw new UsageError(`option '--seed' must be ${bad}, got ${o.seed}`);
  return { ...sizes, seed: o.seed as number };
}

function tokensFrom(r: ModelEval): string {
  if (!r.generated) return `from ${r.tokensFile}`;
  return `sampled from the original (held-out, seed ${r.generated.seed})`;
}

export const evalCommand: Command = {
  summary: 'KL, top-1 and perplexity of the LoftQ and QLoRA inits against the original model',
  async run(argv) {
    const { positional, options: o } = parseArgs(argv, {
      tokens: { type: 'string' },
      generate: { type: 'string' },
      seed: { type: 'number' },
      json: { type: 'boolean' },
      'no-report-update': { type: 'boolean' },
      backend: { type: 'string', default: RUN_SETTING_SPECS.backend.default as string },
      quiet: { type: 'boolean', alias: 'q' },
      help: { type: 'boolean', alias: 'h' },
    });
    if (o.help) {
      process.stdout.write(HELP + '\n');
      return 0;
    }
    if (positional.length !== 2) throw new UsageError('eval takes ORIGINAL and OUTDIR; see loftq eval --help');
    const generate = generateOption(o);
    if (!o.tokens && !generate)
      throw new UsageError(
        "option '--tokens FILE' is required (or '--generate N,LEN': held-out tokens sampled from ORIGINAL)",
      );
    if (o.tokens && generate) throw new UsageError("give '--tokens FILE' or '--generate N,LEN', not both");
    const backend = await createBackend(backendOption(o));
    const progress = progressLine(process.stderr, !!o.quiet);
    const { result: r, reportFile } = await runEval(positional[0], positional[1], {
      ...(o.tokens ? { tokensFile: o.tokens as string } : {}),
      ...(generate ? { generate } : {}),
      backend,
      updateReport: !o['no-report-update'],
      signal: interruptSignal(),
      onProgress: progress.on,
    });
    progress.done();
    if (o.json) {
      const { seconds: _s, peakRssBytes: _p, ...out } = r;
      process.stdout.write(JSON.stringify(out, null, 2) + '\n');
      return 0;
    }
    process.stdout.write(
      [
        `${r.sequences} sequences, ${r.tokens} tokens ${tokensFrom(r)}; ${backend.name}, ${r.seconds.toFixed(1)} s`,
        table(r.original, [
          ['loftq', r.loftq],
          ['qlora', r.qlora],
        ]),
        'KL(original ‖ init) in nats per token; lower is better, 0 is the original model.',
        reportFile ? `report: ${reportFile} (model block updated)` : 'report not updated (--no-report-update)',
      ].join('\n') + '\n',
    );
    return 0;
  },
};
