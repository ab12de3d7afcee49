// Load-time check. The backbone is stored dequantized and bitsandbytes usually re-quantizes
// it to NF4 (block 64) when the model is loaded. A block of NF2 or NF4 values with block 64
// comes back unchanged: its largest |value| is the block's own absmax (the largest weight
// maps to ±1), and every NF2 level (−1, 0, 0.33791524, 1) is an NF4 level. NF3 levels,
// 8-bit and uniform levels, and other block sizes do not survive, so the error after loading
// differs from the LoftQ error there. HQQ's grid is loaded as written, so it has no such check.

import type { MatrixReport, Quantizer } from '../../protocol/lsp_ext';
import { quantizerSpec } from '../../registry';

export function survivesNf4Reload(bits: number, quantizer: Quantizer, blockSize: number): boolean {
  return quantizer === 'nf' && blockSize === 64 && (bits === 2 || bits === 4);
}

/** One warning for planned choices an NF4 reload changes (none when every choice survives). */
export function planReloadWarning(choices: { bits: number }[], quantizer: Quantizer, blockSize: number): string | null {
  // HQQ checkpoints load as written (--format hqq): there is no NF4 reload.
  if (quantizerSpec(quantizer).storage === 'hqq') return null;
  const hit = choices.filter((c) => !survivesNf4Reload(c.bits, quantizer, blockSize));
  if (!hit.length) return null;
  const widths = [...new Set(hit.map((c) => c.bits))].sort((a, b) => a - b).join('/');
  return (
    `${hit.length} of ${choices.length} matrices are planned at ${widths} bits (${quantizer}, block ${blockSize}): ` +
    'bitsandbytes re-quantizes the stored backbone to NF4 (block 64) at load, so their error after loading ' +
    "is not the predicted LoftQ error (after quantizing, the report's nf4ReloadRelError gives it per matrix)"
  );
}

/** Matrices of a quantize report whose error after an NF4 reload differs from the LoftQ error by more than
 *  `tolerance` (relative). */
export function reloadWarnings(matrices: MatrixReport[], tolerance = 0.01): string[] {
  const out: string[] = [];
  for (const m of matrices) {
    const after = m.nf4ReloadRelError;
    if (m.skipped || after === undefined || !Number.isFinite(after)) continue;
    if (Math.abs(after - m.relError) <= tolerance * Math.max(m.relError, 1e-12)) continue;
    out.push(
      `${m.name}: LoftQ relative error ${m.relError.toFixed(4)}, ` +
        `after the NF4 reload at load ${after.toFixed(4)} (${m.bits}-bit ${m.quantizer})`,
    );
  }
  return out;
}
