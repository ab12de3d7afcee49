// The quantizers: the one list every side (CLI, server, client, schema, manifest) reads.
// Adding one: an entry here, its codebook builder in quant/codebook.ts (the compiler
// asks for it), a test, and a line in the docs.

/** How a block's scale is chosen before its values are mapped onto the codebook. */
export type ScaleRule =
  /** max |x| of the block (bitsandbytes NF4, LoftQ). */
  | 'absmax'
  /** mean + 2.5σ (sample σ) of the block: a uniform grid clips the tails instead of stretching to them. */
  | 'meanStd';

export interface QuantizerSpec {
  /** Bit widths it has a codebook for. */
  bits: readonly number[];
  scale: ScaleRule;
  /** One line for pickers and hovers. */
  detail: string;
}

export const QUANTIZERS = {
  nf: { bits: [2, 3, 4, 8], scale: 'absmax', detail: 'NormalFloat (the NF4 table at 4 bits), block absmax scale' },
  uniform: { bits: [2, 3, 4, 8], scale: 'meanStd', detail: 'Uniform table on [-1, 1], block scale mean + 2.5σ' },
} as const satisfies Record<string, QuantizerSpec>;

export type Quantizer = keyof typeof QUANTIZERS;
export const QUANTIZER_NAMES = Object.keys(QUANTIZERS) as Quantizer[];

/** Every bit width some quantizer supports, ascending. */
export const SUPPORTED_BITS = [2, 3, 4, 8] as const;
export type Bits = (typeof SUPPORTED_BITS)[number];

export function isQuantizer(q: unknown): q is Quantizer {
  return typeof q === 'string' && Object.prototype.hasOwnProperty.call(QUANTIZERS, q);
}

export function quantizerSupports(q: Quantizer, bits: number): boolean {
  return (QUANTIZERS[q].bits as readonly number[]).includes(bits);
}
