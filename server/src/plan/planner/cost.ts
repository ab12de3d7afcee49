// Storage cost of one (bits, rank) choice for an out×in matrix, and budget parsing.
//
// What is counted (docs/planner.md shows the arithmetic):
//   codes    ceil(out·in·bits / 8) bytes — codes packed back to back over the row-major matrix;
//   scales   one absmax per block of `blockSize` values, nb = ceil(out·in / blockSize) blocks:
//            'dq'   (default) double-quantized as bitsandbytes/QLoRA store them: one 8-bit
//                   scale per block + one fp32 absmax per 256 blocks + one fp32 offset
//                   = nb + 4·ceil(nb/256) + 4 bytes;
//            'fp32' one fp32 per block = 4·nb bytes (what the engine's packed export writes);
//   adapters r·(out+in)·adapterBytes (A: r×in, B: out×r; 2 for BF16/F16, 4 for F32), unless
//            `countAdapters` is false ("backbone only" accounting).
// Codebooks (≤ 256 floats per bit width) are shared and not counted.
// avgBits = 8 · Σ (codes + scales) / Σ out·in, both sums over the planned (quantized) matrices
// only: the backbone's bits per weight, the figure the LoftQ paper and LQ-LoRA quote as "2.5 bits".
// An avgBits budget therefore counts the backbone, and a byte budget also counts the adapters
// (`countAdapters`); the adapter bytes are reported beside avgBits either way.

import { UsageError } from '../../engine/errors';
import type { PlanBudget } from '../../protocol/lsp_ext';

export type ScaleStorage = 'dq' | 'fp32';

export interface CostModel {
  blockSize: number;
  scales: ScaleStorage;
  adapterBytes: number;
  countAdapters: boolean;
}

export const DEFAULT_COST: CostModel = { blockSize: 64, scales: 'dq', adapterBytes: 2, countAdapters: true };

/** Bytes per element of an adapter stored in `dtype` (the checkpoint's float dtype). */
export function adapterBytesOf(dtype: string | undefined): number {
  return dtype === 'F32' ? 4 : dtype === 'F64' ? 8 : 2;
}

export function codeBytes(rows: number, cols: number, bits: number): number {
  return Math.ceil((rows * cols * bits) / 8);
}

export function scaleBytes(rows: number, cols: number, cm: CostModel): number {
  const nb = Math.ceil((rows * cols) / cm.blockSize);
  return cm.scales === 'fp32' ? 4 * nb : nb + 4 * Math.ceil(nb / 256) + 4;
}

export function loraBytes(rows: number, cols: number, rank: number, cm: CostModel): number {
  return cm.countAdapters ? rank * (rows + cols) * cm.adapterBytes : 0;
}

export function choiceBytes(rows: number, cols: number, bits: number, rank: number, cm: CostModel): number {
  return codeBytes(rows, cols, bits) + scaleBytes(rows, cols, cm) + loraBytes(rows, cols, rank, cm);
}

/** The cost model a budget plans with: adapters count in byte budgets, not in average-bit ones. */
export function countsAdapters(budget: PlanBudget): boolean {
  return budget.avgBits === undefined;
}

/** Codes + scales of the choice `bits` (no adapters): what average bits count. */
export function backboneChoiceBytes(rows: number, cols: number, bits: number, cm: CostModel): number {
  return codeBytes(rows, cols, bits) + scaleBytes(rows, cols, cm);
}

export function avgBitsOf(bytes: number, parameters: number): number {
  return parameters > 0 ? (8 * bytes) / parameters : 0;
}

/** The byte budget a PlanBudget stands for over `parameters` planned parameters. */
export function budgetBytes(budget: PlanBudget, parameters: number): number {
  if (budget.bytes !== undefined) return Math.floor(budget.bytes);
  if (budget.avgBits !== undefined) return Math.floor((budget.avgBits * parameters) / 8);
  throw new UsageError("a budget needs 'avgBits' or 'bytes'");
}

const UNITS: Record<string, number> = {
  b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/**
 * `2.5` → average bits; `3.2GB`, `800MB`, `1.5GiB`, `123456B` → bytes (KB/MB/GB decimal,
 * KiB/MiB/GiB binary). A bare number above 32 is read as bytes (no one means 100 bits/param).
 */
export function parseBudget(text: string): PlanBudget {
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) throw new UsageError(`budget '${text}' is neither average bits (e.g. 2.5) nor a size (e.g. 3.2GB, 800MB)`);
  const n = Number(m[1]);
  const unit = m[2].toLowerCase();
  if (!unit || unit === 'bits') {
    if (!(n > 0)) throw new UsageError(`budget '${text}' must be positive`);
    return !unit && n > 32 ? { bytes: Math.floor(n) } : { avgBits: n };
  }
  const mult = UNITS[unit];
  if (mult === undefined) throw new UsageError(`budget '${text}': unknown unit '${m[2]}' (use B, KB, MB, GB, KiB, MiB, GiB)`);
  const bytes = Math.floor(n * mult);
  if (!(bytes > 0)) throw new UsageError(`budget '${text}' must be positive`);
  return { bytes };
}
