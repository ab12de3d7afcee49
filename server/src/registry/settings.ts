// Every setting's name, range and default, and the one check of a value against them.
// The CLI (options), the plan file (diagnostics), `loftq/quantize`, the editor settings,
// the JSON schema and package.json's configuration all read these specs.
//
// Upper bounds: the kernels address memory with 32-bit offsets, so a block of 2^31 values
// or more fails deep inside ("memory access out of bounds"); 2^30 is the largest block
// size that runs. Ranks above 2^16 exceed min(out, in) of any matrix the kernels hold
// (≤ 2^28 weights), and 1000 alternations are far past LoftQ's convergence (T ≤ 5 in the
// paper); both bounds turn a typo into a clear message instead of an endless run.

import { QUANTIZER_NAMES, QUANTIZERS, SUPPORTED_BITS } from './quantizers';
import type { Quantizer, QuantizerSpec } from './quantizers';
import { BACKEND_CHOICES, DEFAULT_CLI_BACKEND, DEFAULT_EDITOR_BACKEND } from './backends';
import { DEFAULT_FORMAT, EXPORT_FORMATS } from './formats';

export interface IntSpec {
  kind: 'int';
  min: number;
  max: number;
  default: number;
  description: string;
}

export interface NumberSpec {
  kind: 'number';
  min: number;
  /** Absent: no upper bound but finiteness. */
  max?: number;
  default: number;
  description: string;
}

export interface EnumSpec<T extends string | number = string | number> {
  kind: 'enum';
  values: readonly T[];
  default: T;
  description: string;
}

export type SettingSpec = IntSpec | NumberSpec | EnumSpec;

export const MAX_RANK = 2 ** 16;
export const MAX_ITERS = 1000;
export const MAX_BLOCK_SIZE = 2 ** 30;
export const MAX_RIDGE = 1e4;

/** The settings of one matrix's LoftQ run (plan-file keys, `loftq.defaults.*`). */
export const MATRIX_SETTING_SPECS = {
  bits: { kind: 'enum', values: SUPPORTED_BITS, default: 4, description: 'Bits per weight of the quantized backbone.' },
  rank: { kind: 'int', min: 1, max: MAX_RANK, default: 16, description: 'Rank r of the LoRA adapter.' },
  iters: { kind: 'int', min: 1, max: MAX_ITERS, default: 5, description: 'LoftQ alternating iterations T.' },
  quantizer: { kind: 'enum', values: QUANTIZER_NAMES, default: 'nf', description: 'Quantization table.' },
  blockSize: { kind: 'int', min: 1, max: MAX_BLOCK_SIZE, default: 64, description: 'Values per quantization block.' },
} as const satisfies Record<string, SettingSpec>;

export type MatrixSettingKey = keyof typeof MATRIX_SETTING_SPECS;
export const MATRIX_SETTING_KEYS = Object.keys(MATRIX_SETTING_SPECS) as MatrixSettingKey[];

/** Settings of one matrix's LoftQ run. */
export interface MatrixSettings {
  bits: number;
  rank: number;
  iters: number;
  quantizer: Quantizer;
  blockSize: number;
}

export const DEFAULT_SETTINGS: MatrixSettings = {
  bits: MATRIX_SETTING_SPECS.bits.default,
  rank: MATRIX_SETTING_SPECS.rank.default,
  iters: MATRIX_SETTING_SPECS.iters.default,
  quantizer: MATRIX_SETTING_SPECS.quantizer.default,
  blockSize: MATRIX_SETTING_SPECS.blockSize.default,
};

/** How a run executes (CLI options, `loftq.*` editor settings). */
export const RUN_SETTING_SPECS = {
  /** 0 = auto (one worker per core) everywhere: CLI, editor settings, `loftq/quantize`. */
  workers: { kind: 'int', min: 0, max: 1024, default: 0, description: 'Worker threads (0: one per core).' },
  backend: { kind: 'enum', values: BACKEND_CHOICES, default: DEFAULT_CLI_BACKEND, description: 'Compute backend.' },
  editorBackend: {
    kind: 'enum',
    values: BACKEND_CHOICES,
    default: DEFAULT_EDITOR_BACKEND,
    description: 'Compute backend for runs started from the editor.',
  },
  format: { kind: 'enum', values: EXPORT_FORMATS, default: DEFAULT_FORMAT, description: 'Output format.' },
  threshold: {
    kind: 'number',
    min: 0,
    default: 0.3,
    description: 'LoftQ relative error above which a worst-matrices diagnostic is a warning.',
  },
} as const satisfies Record<string, SettingSpec>;

/** Token sets of calibration (`--calib`) and `loftq eval` (`--tokens`). The forward pass holds
 *  every token's activations of a layer at once and attention is quadratic in a sequence's length:
 *  a sequence longer than `sequence` tokens (a .txt paragraph, a JSON id list) is cut into pieces
 *  of at most that many, and a set of more than `total` tokens in all is refused. */
export const TOKEN_LIMITS = {
  sequence: { min: 2, max: 2048 },
  total: { max: 2 ** 20 },
} as const;

/** Calibrated LoftQ (`--calib`, `--calib-generate`, `CalibrationParams`). */
export const CALIBRATION_SPECS = {
  /** λ = ridge × mean(diag G), added to G's diagonal (loftq/calibrationMetric.ts says why). At
   *  10⁴ × mean(diag G), H = G + λI is λI to within 10⁻⁴ (plain LoftQ); far beyond, λ overflows
   *  the float32 the metric is held in (ridge 1e39 gave NaN adapters). */
  ridge: {
    kind: 'number',
    min: 0,
    max: MAX_RIDGE,
    default: 0.01,
    description: 'Ridge added to the input statistic, relative.',
  },
  /** Inputs wider than this keep a diagonal statistic (model/collect.ts says why). */
  fullStatMaxDim: { kind: 'int', min: 1, max: 65536, default: 8192, description: 'Widest input with a full G.' },
  generateSequences: { kind: 'int', min: 1, max: 4096, default: 16, description: 'Sequences of --calib-generate.' },
  /** A generated sequence is one sequence: TOKEN_LIMITS.sequence bounds it like any other. */
  generateLength: {
    kind: 'int',
    min: TOKEN_LIMITS.sequence.min,
    max: TOKEN_LIMITS.sequence.max,
    default: 128,
    description: 'Tokens per generated sequence.',
  },
  generateSeed: {
    kind: 'int',
    min: 0,
    max: 0xffffffff,
    default: 0,
    description: 'Seed of the --calib-generate sampler.',
  },
  /** The calibration pass's products (model/collect.ts's bf16Products says what bf16 changes). */
  products: {
    kind: 'enum',
    values: ['auto', 'float32'],
    default: 'auto',
    description: 'Calibration pass products: bf16 where the native backend has AVX512-BF16 (auto), or float32.',
  },
} as const satisfies Record<string, SettingSpec>;

/** Why a value does not fit its spec: the words after "must be", e.g. `an integer ≥ 1`,
 *  `2, 3, 4 or 8`, `"nf" or "uniform"` (quoted: JSON strings in a plan file). */
export function valueProblem(spec: SettingSpec, v: unknown, quote = false): string | undefined {
  switch (spec.kind) {
    case 'enum':
      return (spec.values as readonly unknown[]).includes(v) ? undefined : oneOf(spec.values, quote);
    case 'int':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < spec.min) return `an integer ≥ ${spec.min}`;
      return v > spec.max ? `an integer ≤ ${spec.max}` : undefined;
    case 'number':
      if (typeof v !== 'number' || !Number.isFinite(v) || v < spec.min) return `a number ≥ ${spec.min}`;
      return spec.max !== undefined && v > spec.max ? `a number ≤ ${spec.max}` : undefined;
  }
}

/** `v` when it fits the spec, else the spec's default (settings from an untrusted client). */
export function validOr<T>(spec: SettingSpec & { default: T }, v: unknown): T {
  return valueProblem(spec, v) === undefined ? (v as T) : spec.default;
}

/** `2, 3, 4 or 8`; `nf or uniform`; quoted: `"nf" or "uniform"`. */
export function oneOf(values: readonly (string | number)[], quote = false): string {
  const shown = values.map((v) => (quote && typeof v === 'string' ? JSON.stringify(v) : String(v)));
  return shown.length < 2 ? shown.join('') : `${shown.slice(0, -1).join(', ')} or ${shown[shown.length - 1]}`;
}

export interface SettingProblem {
  key: MatrixSettingKey;
  /** The words after "must be". */
  expected: string;
}

/** The first of a matrix's settings outside its spec, and what it must be. */
export function matrixSettingsProblem(s: unknown, quote = false): SettingProblem | undefined {
  const o = (s && typeof s === 'object' ? s : {}) as Record<string, unknown>;
  for (const key of MATRIX_SETTING_KEYS) {
    const expected = valueProblem(MATRIX_SETTING_SPECS[key], o[key], quote);
    if (expected) return { key, expected };
  }
  // Each quantizer has its own widths (the union is SUPPORTED_BITS) and block sizes.
  const q = o.quantizer as Quantizer;
  const spec: QuantizerSpec = QUANTIZERS[q];
  if (!spec.bits.includes(o.bits as number))
    return { key: 'bits', expected: `${oneOf(spec.bits)} with quantizer ${q}` };
  const multiple = spec.blockMultiple ?? 1;
  if ((o.blockSize as number) % multiple !== 0)
    return { key: 'blockSize', expected: `a multiple of ${multiple} with quantizer ${q}` };
  return undefined;
}

/** A setting's name as a person reads it in a message: blockSize → block size. */
export function settingLabel(key: string): string {
  return key.replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`);
}
