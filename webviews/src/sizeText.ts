// The header's line on what the quantized matrices take (pure: unit-tested in Node).
import type { HeatmapSummary } from '../../server/src/protocol/lsp_ext';

function bytesText(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}

/** `302.8 MB, 2.50 bits per weight (HQQ's stored bytes: what transformers loads)`. */
export function quantizedText(q: NonNullable<HeatmapSummary['quantized']>): string {
  const bits = q.parameters > 0 ? (8 * q.bytes) / q.parameters : 0;
  const what =
    q.storage === 'hqq'
      ? "HQQ's stored bytes: what transformers loads"
      : 'codes + float32 scales as --format packed stores them; a bitsandbytes reload holds NF4, 4.13 bits';
  return `${bytesText(q.bytes)}, ${bits.toFixed(2)} bits per weight (${what})`;
}

/** The quantizer and widths as a person reads them: NF2–4, uniform 3-bit, HQQ 1–4-bit. */
export function quantText(quantizer: string | undefined, bits: string): string {
  if (quantizer === 'uniform') return `uniform ${bits}-bit`;
  if (quantizer === 'hqq') return `HQQ ${bits}-bit`;
  return `NF${bits}`;
}
