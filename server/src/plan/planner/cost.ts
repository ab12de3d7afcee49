// Storage cost of one (bits, rank) choice for an out×in matrix, and budget parsing. The
// formulas (codes, 'dq' or 'fp32' scales, adapters) are the registry's byte accounting
// (registry/bytes.ts, docs/planner.md shows the arithmetic); the planner counts 'dq' scales.
// avgBits = 8 · Σ (codes + scales) / Σ out·in, both sums over the planned (quantized) matrices
// only: the backbone's bits per weight, the figure the LoftQ paper and LQ-LoRA quote as "2.5 bits".
// An avgBits budget therefore counts the backbone, and a byte budget also counts the adapters
// (`countAdapters`); the adapter bytes are reported beside avgBits either way.

import { UsageError } from '../../base/errors';
import type { PlanBudget } from '../../protocol/lsp_ext';
import {
  adapterBytesFor,
  DEFAULT_SETTINGS,
  DEFAULT_SCALES,
  blockCount,
  isQuantizer,
  quantizedBytesOf,
  quantizerSpec,
  scaleBytesOf,
} from '../../registry';
import type { Quantizer, ScaleStorage } from '../../registry';

export { adapterBytesOf, avgBitsOf, codeBytes } from '../../registry';
export type { ScaleStorage } from '../../registry';

export interface CostModel {
  blockSize: number;
  scales: ScaleStorage;
  adapterBytes: number;
  countAdapters: boolean;
  /** The checkpoint's float width, in which HQQ stores scale and zero (default: adapterBytes). */
  elementBytes?: number;
}

/** How a quantizer's scales are counted: its own storage when the loader fixes it (HQQ), else
 *  the planner's double-quantized 'dq'. */
export function storageOf(quantizer: Quantizer | undefined): ScaleStorage {
  return (isQuantizer(quantizer) && quantizerSpec(quantizer).storage) || DEFAULT_SCALES;
}

export const DEFAULT_COST: CostModel = {
  blockSize: DEFAULT_SETTINGS.blockSize,
  scales: DEFAULT_SCALES,
  adapterBytes: 2,
  countAdapters: true,
};

/** The scales alone (codebook storages; HQQ's scale and zero per group). */
export function scaleBytes(rows: number, cols: number, cm: CostModel): number {
  if (cm.scales === 'hqq') return 2 * blockCount(rows, cols, cm.blockSize) * (cm.elementBytes ?? cm.adapterBytes);
  return scaleBytesOf(rows, cols, cm.blockSize, cm.scales);
}

export function loraBytes(rows: number, cols: number, rank: number, cm: CostModel): number {
  return cm.countAdapters ? adapterBytesFor(rows, cols, rank, cm.adapterBytes) : 0;
}

export function choiceBytes(rows: number, cols: number, bits: number, rank: number, cm: CostModel): number {
  return backboneChoiceBytes(rows, cols, bits, cm) + loraBytes(rows, cols, rank, cm);
}

/** The cost model a budget plans with: adapters count in byte budgets, not in average-bit ones. */
export function countsAdapters(budget: PlanBudget): boolean {
  return budget.avgBits === undefined;
}

/** Codes + scales of the choice `bits` (no adapters): what average bits count. */
export function backboneChoiceBytes(rows: number, cols: number, bits: number, cm: CostModel): number {
  return quantizedBytesOf(rows, cols, bits, cm.blockSize, cm.scales, cm.elementBytes ?? cm.adapterBytes);
}

/** The byte budget a PlanBudget stands for over `parameters` planned parameters. */
export function budgetBytes(budget: PlanBudget, parameters: number): number {
  if (budget.bytes !== undefined) return Math.floor(budget.bytes);
  if (budget.avgBits !== undefined) return Math.floor((budget.avgBits * parameters) / 8);
  throw new UsageError("a budget needs 'avgBits' or 'bytes'");
}

const UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
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
  if (mult === undefined)
    throw new UsageError(`budget '${text}': unknown unit '${m[2]}' (use B, KB, MB, GB, KiB, MiB, GiB)`);
  const bytes = Math.floor(n * mult);
  if (!(bytes > 0)) throw new UsageError(`budget '${text}' must be positive`);
  return { bytes };
}
