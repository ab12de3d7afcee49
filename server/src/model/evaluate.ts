// `loftq eval`'s engine: the original model, the LoftQ init (backbone + s·B·A from the files on
// disk) and the QLoRA init (quantize(W), no adapter) run over the same token sequences, and
// each init's logits are compared with the original's (evalMetrics.ts).
//
// The forward pass streams weights layer by layer but holds the whole batch's activations, and the
// comparison needs the original's logits while a variant runs. Sequences are therefore taken in
// chunks whose original logits (tokens × vocab floats) fit `maxHeldLogits`; each chunk runs the
// three models in turn. Small vocabularies fit in one chunk; 16 × 256 tokens of a 32k vocabulary
// (131M floats) take three, each re-reading the weights.

import type { Checkpoint } from '../checkpoint/checkpoint';
import { InputError, throwIfAborted } from '../base/errors';
import type { MatmulBackend } from '../linalg/backend';
import type { ModelEval } from '../protocol/lsp_ext';
import { loftqWeightHook, type LoftqOutput, qloraWeightHook } from './adapters';
import type { ModelConfig } from './config';
import { ComparisonMeter, PerplexityMeter } from './evalMetrics';
import { runForward } from './forward';
import type { WeightHook } from './weights';

export type EvalVariant = 'original' | 'loftq' | 'qlora';

export interface EvalProgress {
  variant: EvalVariant;
  /** 0-based chunk of sequences, of `chunks`. */
  chunk: number;
  chunks: number;
  layer: number;
  layers: number;
}

export interface EvaluateOptions {
  backend: MatmulBackend;
  signal?: AbortSignal;
  onProgress?(p: EvalProgress): void;
  /** Most original logits (floats) held at once; default 64M (256 MB). */
  maxHeldLogits?: number;
  /** Sees every variant's logits of sequence `seq` (len × vocab); tests compare them independently. */
  onLogits?(variant: EvalVariant, seq: number, logits: Float32Array): void;
  tokensFile?: string;
}

export interface EvaluateResult extends ModelEval {
  seconds: number;
  /** Largest resident set seen by any of the forward passes. */
  peakRssBytes: number;
}

export const DEFAULT_MAX_HELD_LOGITS = 64 * 1024 * 1024;

/** Consecutive runs of sequences whose logits fit `limit` floats (each run has at least one). */
export function chunkSequences(lengths: readonly number[], vocab: number, limit: number): [number, number][] {
  const chunks: [number, number][] = [];
  let start = 0,
    held = 0;
  lengths.forEach((len, k) => {
    if (k > start && held + len * vocab > limit) {
      chunks.push([start, k]);
      start = k;
      held = 0;
    }
    held += len * vocab;
  });
  if (lengths.length) chunks.push([start, lengths.length]);
  return chunks;
}

/** Logits that are not all finite make every figure meaningless: refused, naming `file`. */
function requireFinite(logits: Float32Array, seq: number, file: string, whose: string): void {
  for (let i = 0; i < logits.length; i++)
    if (!Number.isFinite(logits[i])) {
      const why = 'a config.json value (rope_theta, rms_norm_eps, …) or a weight is implausible';
      throw new InputError(file, `${whose} logits are ${logits[i]} in sequence ${seq}: ${why}`);
    }
}

export async function evaluateOutput(
  original: Checkpoint,
  c: ModelConfig,
  out: LoftqOutput,
  sequences: readonly (readonly number[])[],
  opts: EvaluateOptions,
): Promise<EvaluateResult> {
  const t0 = performance.now();
  const V = c.vocabSize;
  const originalPpl = new PerplexityMeter(V);
  const meters = { loftq: new ComparisonMeter(V), qlora: new ComparisonMeter(V) };
  const hooks: Record<'loftq' | 'qlora', WeightHook> = {
    loftq: loftqWeightHook(out, opts.backend),
    qlora: qloraWeightHook(out),
  };
  const chunks = chunkSequences(
    sequences.map((s) => s.length),
    V,
    opts.maxHeldLogits ?? DEFAULT_MAX_HELD_LOGITS,
  );
  let peakRss = 0;
  for (let ci = 0; ci < chunks.length; ci++) {
    const [s0, s1] = chunks[ci];
    const seqs = sequences.slice(s0, s1);
    const held: Float32Array[] = [];
    const progress = (variant: EvalVariant) => (layer: number, layers: number) =>
      opts.onProgress?.({ variant, chunk: ci, chunks: chunks.length, layer, layers });
    const base = await runForward(original, c, seqs, {
      backend: opts.backend,
      signal: opts.signal,
      onLayer: progress('original'),
      onLogits: (k, logits) => {
        requireFinite(logits, s0 + k, original.path, "the original model's");
        held[k] = logits;
        originalPpl.addSequence(seqs[k], logits);
        opts.onLogits?.('original', s0 + k, logits);
      },
    });
    peakRss = Math.max(peakRss, base.peakRssBytes);
    for (const variant of ['loftq', 'qlora'] as const) {
      throwIfAborted(opts.signal);
      const r = await runForward(variant === 'loftq' ? out.forward : original, c, seqs, {
        backend: opts.backend,
        signal: opts.signal,
        onLayer: progress(variant),
        hooks: { weight: hooks[variant] },
        onLogits: (k, logits) => {
          const whose = variant === 'loftq' ? 'the LoftQ init' : 'the QLoRA init (quantize(W))';
          requireFinite(logits, s0 + k, variant === 'loftq' ? out.dir : original.path, `${whose}'s`);
          meters[variant].addSequence(seqs[k], held[k], logits);
          opts.onLogits?.(variant, s0 + k, logits);
        },
      });
      peakRss = Math.max(peakRss, r.peakRssBytes);
    }
  }
  const ppl = originalPpl.ppl();
  const sides = { loftq: meters.loftq.summary(ppl), qlora: meters.qlora.summary(ppl) };
  // Never a number that is not one: NaN printed beside "KL 0.0000, top-1 100.00 %" read as perfect.
  for (const [name, figures] of [['original', { ppl }], ...Object.entries(sides)] as const)
    for (const [k, v] of Object.entries(figures))
      if (!Number.isFinite(v))
        throw new InputError(
          name === 'loftq' ? out.dir : c.file,
          `the ${name} model's ${k} is ${v} on these tokens (overflow: a config.json value or a weight is implausible)`,
        );
  return {
    ...(opts.tokensFile ? { tokensFile: opts.tokensFile } : {}),
    sequences: sequences.length,
    tokens: sequences.reduce((a, s) => a + s.length, 0),
    original: { ppl },
    ...sides,
    seconds: (performance.now() - t0) / 1000,
    peakRssBytes: peakRss,
  };
}
