// The quantization options shared by `quantize`, `analyze` and `plan`: names, defaults and
// ranges from the registry (server/src/registry), one line naming the option on a bad value.
import type { OptionSpec } from './args';
import { intOption } from './args';
import { UsageError } from '../base/errors';
import {
  BACKEND_CHOICES,
  DEFAULT_SETTINGS,
  isBackendChoice,
  isQuantizer,
  MATRIX_SETTING_SPECS,
  oneOf,
  QUANTIZER_NAMES,
  RUN_SETTING_SPECS,
  SUPPORTED_BITS,
  valueProblem,
} from '../registry';
import type { BackendChoice, IntSpec, MatrixSettings, Quantizer } from '../registry';

export const SETTINGS_OPTIONS: Record<string, OptionSpec> = {
  rank: { type: 'number', default: DEFAULT_SETTINGS.rank },
  iters: { type: 'number', default: DEFAULT_SETTINGS.iters },
  quantizer: { type: 'string', default: DEFAULT_SETTINGS.quantizer },
  'block-size': { type: 'number', default: DEFAULT_SETTINGS.blockSize },
  target: { type: 'list' },
  backend: { type: 'string', default: RUN_SETTING_SPECS.backend.default },
  workers: { type: 'number' },
  help: { type: 'boolean', alias: 'h' },
};

/** An integer option checked against its registry range. */
export function rangeOption(o: Record<string, unknown>, key: string, spec: IntSpec): number {
  const v = intOption(o, key, undefined, spec.min);
  if (valueProblem(spec, v)) throw new UsageError(`option '--${key}' must be at most ${spec.max}, got ${v}`);
  return v;
}

export const rankOption = (o: Record<string, unknown>) => rangeOption(o, 'rank', MATRIX_SETTING_SPECS.rank);
export const itersOption = (o: Record<string, unknown>) => rangeOption(o, 'iters', MATRIX_SETTING_SPECS.iters);
export const blockSizeOption = (o: Record<string, unknown>) =>
  rangeOption(o, 'block-size', MATRIX_SETTING_SPECS.blockSize);

/** `--bits 2,3,4` lists (analyze, plan). */
export function bitsListOption(values: number[]): number[] {
  for (const b of values) {
    if ((SUPPORTED_BITS as readonly number[]).includes(b)) continue;
    throw new UsageError(`option '--bits' takes ${oneOf(SUPPORTED_BITS)}, got '${b}'`);
  }
  return values;
}

export function quantizerOption(o: Record<string, unknown>): Quantizer {
  const q = o.quantizer;
  if (!isQuantizer(q)) throw new UsageError(`option '--quantizer' must be ${oneOf(QUANTIZER_NAMES)}, got '${q}'`);
  return q;
}

export function backendOption(o: Record<string, unknown>): BackendChoice {
  const b = o.backend;
  if (!isBackendChoice(b)) throw new UsageError(`option '--backend' must be ${oneOf(BACKEND_CHOICES)}, got '${b}'`);
  return b;
}

/** undefined (auto: one worker per core) when absent or 0, as everywhere else. */
export function workersOption(o: Record<string, unknown>): number | undefined {
  if (o.workers === undefined) return undefined;
  return rangeOption(o, 'workers', RUN_SETTING_SPECS.workers) || undefined;
}

/** A string option that takes one of a registry list. */
export function choiceOption<T extends string>(o: Record<string, unknown>, key: string, values: readonly T[]): T {
  const v = o[key];
  if ((values as readonly unknown[]).includes(v)) return v as T;
  throw new UsageError(`option '--${key}' must be ${oneOf(values)}, got '${v}'`);
}

export function settingsFrom(o: Record<string, unknown>, bits: number): MatrixSettings {
  return {
    bits,
    rank: rankOption(o),
    iters: itersOption(o),
    quantizer: quantizerOption(o),
    blockSize: blockSizeOption(o),
  };
}

/** Ctrl-C and SIGTERM cancel the run cleanly (temp files removed); see interrupt.ts. */
export { interruptSignal } from './interrupt';
