// Quantization tables (codebooks), sorted ascending, as float32.
// - nf, 4 bits: the bitsandbytes NF4 table, verbatim.
// - nf, other widths: PEFT's create_normal_map(offset=0.9677083, symmetric=False):
//   quantiles of N(0,1) at float32 linspace points, sorted and divided by the max.
// - uniform: linspace(-1, 1, 2^bits).

import { normalQuantile } from './normal';
import { isCodebookQuantizer, isQuantizer, QUANTIZER_NAMES, QUANTIZERS, quantizerSupports } from '../registry';
import type { CodebookQuantizer, Quantizer } from '../registry';

export const NF4_BITSANDBYTES = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]);

export const NF_OFFSET = 0.9677083;

/** numpy.linspace(start, stop, num, dtype=float32): computed in float64, then cast. */
function linspaceF32(start: number, stop: number, num: number): number[] {
  const out: number[] = [];
  const step = (stop - start) / (num - 1);
  for (let i = 0; i < num; i++) out.push(Math.fround(i === num - 1 ? stop : i * step + start));
  return out;
}

export function normalFloatTable(bits: number, offset = NF_OFFSET): Float32Array {
  const n = 2 ** bits;
  const positive = linspaceF32(offset, 0.5, n / 2 + 1)
    .slice(0, -1)
    .map(normalQuantile);
  const negative = linspaceF32(offset, 0.5, n / 2)
    .slice(0, -1)
    .map((p) => -normalQuantile(p));
  const t = Float32Array.from([...positive, 0, ...negative]).sort();
  const max = t[t.length - 1];
  return t.map((v) => Math.fround(v / max));
}

export function uniformTable(bits: number): Float32Array {
  return Float32Array.from(linspaceF32(-1, 1, 2 ** bits));
}

/** One table builder per registered quantizer (the compiler asks for a new one's). */
const BUILDERS: Record<CodebookQuantizer, (bits: number) => Float32Array> = {
  nf: (bits) => (bits === 4 ? NF4_BITSANDBYTES : normalFloatTable(bits)),
  uniform: uniformTable,
};

const cache = new Map<string, Float32Array>();

export function codebook(quantizer: Quantizer, bits: number): Float32Array {
  if (!isQuantizer(quantizer)) throw new RangeError(`unknown quantizer '${quantizer}' (${QUANTIZER_NAMES.join(', ')})`);
  if (!isCodebookQuantizer(quantizer))
    throw new RangeError(`quantizer '${quantizer}' has no codebook (an affine grid)`);
  if (!quantizerSupports(quantizer, bits)) {
    throw new RangeError(`unsupported bit width ${bits} (supported: ${QUANTIZERS[quantizer].bits.join(', ')})`);
  }
  const key = `${quantizer}${bits}`;
  let t = cache.get(key);
  if (!t) {
    t = BUILDERS[quantizer](bits);
    cache.set(key, t);
  }
  return t;
}
