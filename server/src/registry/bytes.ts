// Byte accounting: what one quantized matrix and its adapters take. ONE set of formulas;
// two scale storages, always named where a figure is shown:
//   'dq'   double-quantized scales as bitsandbytes/QLoRA hold them after loading: one 8-bit
//          scale per block + one fp32 absmax per 256 blocks + one fp32 offset
//          = nb + 4·ceil(nb/256) + 4 bytes. The planner, the plan diagnostics and hovers
//          count this (what the budget buys at fine-tuning time).
//   'fp32' one fp32 scale per block = 4·nb bytes: what `--format packed` writes. The report's
//          totals (`backboneBytes`) count this (what the files on disk hold).
// codes    ceil(out·in·bits / 8) bytes — codes packed back to back over the row-major matrix.
// adapters r·(out+in) values (A: r×in, B: out×r) in the checkpoint's float width.
// Codebooks (≤ 256 floats per bit width) are shared and not counted.

export type ScaleStorage = 'dq' | 'fp32';

/** The planner's and editor's storage (see above); the report uses REPORT_SCALES. */
export const DEFAULT_SCALES: ScaleStorage = 'dq';
export const REPORT_SCALES: ScaleStorage = 'fp32';

/** Bytes per element of an adapter stored in `dtype` (the checkpoint's float dtype). */
export function adapterBytesOf(dtype: string | undefined): number {
  return dtype === 'F32' ? 4 : dtype === 'F64' ? 8 : 2;
}

export function codeBytes(rows: number, cols: number, bits: number): number {
  return Math.ceil((rows * cols * bits) / 8);
}

export function blockCount(rows: number, cols: number, blockSize: number): number {
  return Math.ceil((rows * cols) / blockSize);
}

export function scaleBytesOf(rows: number, cols: number, blockSize: number, scales: ScaleStorage): number {
  const nb = blockCount(rows, cols, blockSize);
  return scales === 'fp32' ? 4 * nb : nb + 4 * Math.ceil(nb / 256) + 4;
}

/** Codes + scales of one quantized matrix. */
export function backboneBytesOf(rows: number, cols: number, bits: number, blockSize: number, scales: ScaleStorage) {
  return codeBytes(rows, cols, bits) + scaleBytesOf(rows, cols, blockSize, scales);
}

/** Both LoRA factors of one matrix, each element `elementBytes` wide. */
export function adapterBytesFor(rows: number, cols: number, rank: number, elementBytes: number): number {
  return rank * (rows + cols) * elementBytes;
}

/** Backbone bits per weight: what "2.5 bits" means in the LoftQ paper and LQ-LoRA. */
export function avgBitsOf(bytes: number, parameters: number): number {
  return parameters > 0 ? (8 * bytes) / parameters : 0;
}
