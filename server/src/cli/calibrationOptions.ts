// `--calib FILE | --calib-generate N,LEN | --imatrix FILE [--calib-ridge λ] [--calib-seed S]
// [--calib-products auto|float32] | --no-calib`:
// the calibration options of `loftq quantize`, parsed into CalibrationParams — the type of a
// plan file's `calibration` block (plan/calibration.ts), which means the same field by field.
import type { OptionSpec } from './args';
import { UsageError } from '../base/errors';
import { checkCalibrationParams } from '../engine/calibration';
import type { CalibrationParams } from '../protocol/lsp_ext';

export const CALIBRATION_OPTIONS: Record<string, OptionSpec> = {
  calib: { type: 'string' },
  'calib-generate': { type: 'string' },
  'calib-seed': { type: 'number' },
  'calib-ridge': { type: 'number' },
  'calib-products': { type: 'string' },
  imatrix: { type: 'string' },
  'no-calib': { type: 'boolean' },
};

export const CALIBRATION_HELP = `\
  --calib FILE           calibrated LoftQ: token ids as JSON ([[1, 403, …], …]) or .txt
                         (tokenized with the checkpoint's tokenizer.json, one sequence per paragraph)
  --calib-generate N,LEN calibrated LoftQ on N sequences of LEN tokens sampled from the model
                         (from BOS, temperature 1, seeded by --calib-seed, default 0)
  --imatrix FILE         calibrated LoftQ from a llama.cpp importance matrix (GGUF or legacy .dat; diagonal)
  --calib-ridge λ        ridge in S·Sᵀ = G + λ·mean(diag G)·I (default 0.01)
  --calib-products P     the calibration pass's products: auto (bf16 on --backend native with
                         AVX512-BF16, else float32; the default) or float32
  --no-calib             plain LoftQ even when the plan has a "calibration" block
  With --plan, the plan's "calibration" block applies unless a source (--calib, --calib-generate,
  --imatrix) is given here; --calib-ridge, --calib-products and --calib-seed change its fields.`;

/** CalibrationParams from the options and the plan's `calibration` block (files resolved
 *  against the plan), or undefined when neither calibrates. A source given here replaces the
 *  plan's block; the ridge, products and seed options change the plan's fields. */
export function calibrationFrom(o: Record<string, unknown>, plan?: CalibrationParams): CalibrationParams | undefined {
  const file = o.calib as string | undefined,
    imatrix = o.imatrix as string | undefined;
  const gen = o['calib-generate'] as string | undefined;
  const fields = ['calib-ridge', 'calib-seed', 'calib-products'].filter((k) => o[k] !== undefined);
  if (o['no-calib']) {
    const given = [...(file ? ['calib'] : []), ...(imatrix ? ['imatrix'] : []), ...(gen ? ['calib-generate'] : [])];
    const clash = [...given, ...fields][0];
    if (clash) throw new UsageError(`option '--no-calib' cannot go with '--${clash}'`);
    return undefined;
  }
  if (file === undefined && imatrix === undefined && gen === undefined) {
    if (!plan) {
      if (fields.length) throw new UsageError(`option '--${fields[0]}' needs --calib, --calib-generate or --imatrix`);
      return undefined;
    }
    const p: CalibrationParams = { ...plan, ...(plan.generate ? { generate: { ...plan.generate } } : {}) };
    if (o['calib-seed'] !== undefined) {
      if (!p.generate) throw new UsageError("option '--calib-seed' goes with a sampled calibration (generate)");
      p.generate.seed = o['calib-seed'] as number;
    }
    if (o['calib-ridge'] !== undefined) p.ridge = o['calib-ridge'] as number;
    if (o['calib-products'] !== undefined) p.products = o['calib-products'] as CalibrationParams['products'];
    checkCalibrationParams(p);
    return p;
  }
  const p: CalibrationParams = {};
  if (file !== undefined) p.file = file;
  if (imatrix !== undefined) p.imatrix = imatrix;
  if (gen !== undefined) {
    const m = /^\s*(\d+)\s*,\s*(\d+)\s*$/.exec(gen);
    if (!m) throw new UsageError(`option '--calib-generate' must be N,LEN (sequences, tokens each), got '${gen}'`);
    p.generate = { sequences: Number(m[1]), length: Number(m[2]) };
    if (o['calib-seed'] !== undefined) p.generate.seed = o['calib-seed'] as number;
  } else if (o['calib-seed'] !== undefined) throw new UsageError("option '--calib-seed' goes with --calib-generate");
  if (o['calib-ridge'] !== undefined) p.ridge = o['calib-ridge'] as number;
  if (o['calib-products'] !== undefined) p.products = o['calib-products'] as CalibrationParams['products'];
  checkCalibrationParams(p);
  return p;
}
