// Calibration as a person and the CLI say it, shared by the CLI, the plan file, the server and
// the editor (pure: the client imports it): the words for a calibration source, the
// `loftq quantize` options that mean it, `N,LEN` sizes, which key a chosen file belongs under —
// and `loftq eval`'s held-out tokens when none are given: sampled from the original model like
// `--calib-generate`, with a seed other than the calibration's, so an evaluation never measures
// on the tokens the calibration fitted to.

import type { IntSpec } from './settings';
import { CALIBRATION_SPECS } from './settings';

/** CalibrationParams (protocol/lsp_ext.ts) as far as these helpers read it. */
export interface CalibrationSource {
  file?: string;
  generate?: { sequences: number; length: number; seed?: number };
  imatrix?: string;
  ridge?: number;
  products?: 'auto' | 'float32';
}

export const EVAL_SPECS = {
  sequences: { ...CALIBRATION_SPECS.generateSequences, description: 'Held-out sequences to sample.' },
  length: { ...CALIBRATION_SPECS.generateLength, description: 'Tokens per held-out sequence.' },
  seed: { ...CALIBRATION_SPECS.generateSeed, description: 'Seed of the held-out sampler.' },
} as const satisfies Record<string, IntSpec>;

/** The held-out sampler's seed: the calibration sampler's plus one (mod 2³²), so the two
 *  never coincide; 1 when the run sampled nothing (the calibration default is 0). */
export function heldOutSeed(calibrationSeed: number | undefined): number {
  return ((calibrationSeed ?? CALIBRATION_SPECS.generateSeed.default) + 1) >>> 0;
}

const baseName = (p: string) => p.split(/[\\/]/).pop() ?? p;

/** `loftq quantize`'s options that mean the same calibration (paths as given). */
export function calibrationArgs(c: CalibrationSource): string[] {
  const args: string[] = [];
  if (c.file !== undefined) args.push('--calib', c.file);
  if (c.generate) {
    args.push('--calib-generate', `${c.generate.sequences},${c.generate.length}`);
    if (c.generate.seed !== undefined) args.push('--calib-seed', String(c.generate.seed));
  }
  if (c.imatrix !== undefined) args.push('--imatrix', c.imatrix);
  if (c.ridge !== undefined) args.push('--calib-ridge', String(c.ridge));
  if (c.products !== undefined) args.push('--calib-products', c.products);
  return args;
}

/** One line a person reads: "16 sequences × 128 tokens sampled from the model (seed 0)". */
export function describeCalibration(c: CalibrationSource): string {
  const source = c.generate
    ? `${c.generate.sequences} sequences × ${c.generate.length} tokens sampled from the model ` +
      `(seed ${c.generate.seed ?? CALIBRATION_SPECS.generateSeed.default})`
    : c.imatrix !== undefined
      ? `importance matrix ${baseName(c.imatrix)}`
      : `tokens of ${baseName(c.file ?? '')}`;
  const extra = [
    c.ridge !== undefined ? `ridge ${c.ridge}` : '',
    c.products !== undefined ? `${c.products} products` : '',
  ].filter(Boolean);
  return extra.length ? `${source}, ${extra.join(', ')}` : source;
}

/** `N,LEN` (also `N×LEN`) within the sampler's ranges, or the words after "must be". */
export function parseSampleSizes(text: string): { sequences: number; length: number } | string {
  const n = CALIBRATION_SPECS.generateSequences,
    len = CALIBRATION_SPECS.generateLength;
  const want = `N,LEN: ${n.min}–${n.max} sequences of ${len.min}–${len.max} tokens`;
  const m = /^\s*(\d+)\s*[,×xX*]\s*(\d+)\s*$/.exec(text);
  if (!m) return want;
  const [sequences, length] = [Number(m[1]), Number(m[2])];
  if (sequences < n.min || sequences > n.max || length < len.min || length > len.max) return want;
  return { sequences, length };
}

/** A chosen calibration file as a source: llama.cpp importance matrices by extension, else tokens. */
export function calibrationOfFile(file: string): CalibrationSource {
  return /\.(gguf|dat|imatrix)$/i.test(file) ? { imatrix: file } : { file };
}
