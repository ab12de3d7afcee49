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
//   'hqq'  HQQ's own storage, whatever the figure (the loader keeps it as written): W_q packed
//          per group row (8/4/2/1 bits: N·g·b/8 bytes for N groups of g; 3 bits: int32 words of
//          ten codes, N padded to a multiple of 10), scale and zero per group in the compute
//          dtype (the checkpoint's float width), and the module's 19 meta tensors (68–69 bytes).

import { quantizerSpec, type Quantizer } from './quantizers';

export type ScaleStorage = 'dq' | 'fp32' | 'hqq';

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

export function scaleBytesOf(rows: number, cols: number, blockSize: number, scales: 'dq' | 'fp32'): number {
  const nb = blockCount(rows, cols, blockSize);
  return scales === 'fp32' ? 4 * nb : nb + 4 * Math.ceil(nb / 256) + 4;
}

/** Codes + scales of one quantized matrix. */
export function backboneBytesOf(rows: number, cols: number, bits: number, blockSize: number, scales: 'dq' | 'fp32') {
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

/** Bytes of HQQ's packed W_q for `groups` groups of `groupSize` codes. */
export function hqqCodeBytes(groups: number, groupSize: number, bits: number): number {
  if (bits === 3) return 4 * Math.ceil(groups / 10) * groupSize;
  return (groups * groupSize * bits) / 8;
}

/** The data bytes of one HQQ module's meta tensors (shape I64[2]; axis, group_size, nbits I32;
 *  compute_dtype, packing, unpack_view_dtype as ASCII; nine U8 flags). */
export function hqqMetaBytes(elementBytes: number): number {
  const computeDtype = elementBytes === 4 ? 'torch.float32'.length : 'torch.bfloat16'.length;
  return 16 + 12 + computeDtype + '8bit_u8'.length + 'torch.uint8'.length + 9;
}

/** Codes + scales of one quantized matrix as `storage` holds them; `elementBytes` is the
 *  checkpoint's float width (HQQ's scale and zero are stored in it). */
export function quantizedBytesOf(
  rows: number,
  cols: number,
  bits: number,
  blockSize: number,
  storage: ScaleStorage,
  elementBytes: number,
): number {
  if (storage !== 'hqq') return backboneBytesOf(rows, cols, bits, blockSize, storage);
  const groups = Math.ceil((rows * cols) / blockSize);
  return hqqCodeBytes(groups, blockSize, bits) + 2 * groups * elementBytes + hqqMetaBytes(elementBytes);
}

/** The storage a report counts a quantizer's matrices in: its own when the loader fixes it
 *  (HQQ), else REPORT_SCALES (what `--format packed` writes). */
export function reportStorageOf(quantizer: Quantizer): ScaleStorage {
  return quantizerSpec(quantizer).storage ?? REPORT_SCALES;
}

/** One quantized matrix's codes + scales as the report (and the heatmap's header) count them. */
export function reportedBytesOf(m: {
  shape: readonly number[];
  bits: number;
  blockSize: number;
  quantizer: Quantizer;
  dtype?: string;
}): number {
  const storage = reportStorageOf(m.quantizer);
  return quantizedBytesOf(m.shape[0], m.shape[1], m.bits, m.blockSize, storage, adapterBytesOf(m.dtype));
}
