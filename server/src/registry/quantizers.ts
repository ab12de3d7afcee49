// The quantizers: the one list every side (CLI, server, client, schema, manifest) reads.
// Adding one: an entry here, its codebook builder in quant/codebook.ts (the compiler
// asks for it), a test, and a line in the docs.

/** How a block's scale is chosen before its values are mapped onto the codebook. */
export type ScaleRule =
  /** max |x| of the block (bitsandbytes NF4, LoftQ). */
  | 'absmax'
  /** mean + 2.5σ (sample σ) of the block: a uniform grid clips the tails instead of stretching to them. */
  | 'meanStd'
  /** min and max of the group: an affine grid (code − zero)·scale, HQQ's. */
  | 'minMax';

export interface QuantizerSpec {
  /** Bit widths it has a codebook for. */
  bits: readonly number[];
  scale: ScaleRule;
  /** One line for pickers and hovers. */
  detail: string;
  /** Block sizes must be a multiple of this (HQQ packs groups in whole bytes). */
  blockMultiple?: number;
  /** How the loader stores this grid, when it is fixed by the quantizer (bytes.ts). */
  storage?: 'hqq';
}

export const QUANTIZERS = {
  nf: { bits: [2, 3, 4, 8], scale: 'absmax', detail: 'NormalFloat (the NF4 table at 4 bits), block absmax scale' },
  uniform: { bits: [2, 3, 4, 8], scale: 'meanStd', detail: 'Uniform table on [-1, 1], block scale mean + 2.5σ' },
  hqq: {
    bits: [1, 2, 3, 4, 8],
    scale: 'minMax',
    detail: "HQQ's affine grid (scale and optimized zero per group): what transformers loads at each module's bits",
    blockMultiple: 8,
    storage: 'hqq',
  },
} as const satisfies Record<string, QuantizerSpec>;

export type Quantizer = keyof typeof QUANTIZERS;
/** Quantizers whose values are a table times a block scale (quant/codebook.ts builds the table). */
export type CodebookQuantizer = {
  [K in Quantizer]: (typeof QUANTIZERS)[K]['scale'] extends 'minMax' ? never : K;
}[Quantizer];

export function isCodebookQuantizer(q: Quantizer): q is CodebookQuantizer {
  return QUANTIZERS[q].scale !== 'minMax';
}
export const QUANTIZER_NAMES = Object.keys(QUANTIZERS) as Quantizer[];

/** Every bit width some quantizer supports, ascending. */
export const SUPPORTED_BITS = [1, 2, 3, 4, 8] as const;
export type Bits = (typeof SUPPORTED_BITS)[number];

/** A quantizer's entry with every optional field visible. */
export function quantizerSpec(q: Quantizer): QuantizerSpec {
  return QUANTIZERS[q];
}

export function isQuantizer(q: unknown): q is Quantizer {
  return typeof q === 'string' && Object.prototype.hasOwnProperty.call(QUANTIZERS, q);
}

export function quantizerSupports(q: Quantizer, bits: number): boolean {
  return (QUANTIZERS[q].bits as readonly number[]).includes(bits);
}
