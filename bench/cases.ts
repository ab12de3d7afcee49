// The bench's cases: LLM-like matrices of the shapes that dominate Llama checkpoints, at
// the ranks and bit widths LoftQ is used with, on NF's grid and on HQQ's (each HQQ case right
// after its NF twin, so the pair runs back to back). One id per case for --cases filters and
// caches (e.g. 2048x2048-nf2-r64-t5, 2048x2048-hqq2-r64-t5).

import type { Quantizer } from '../server/src/protocol/lsp_ext';

export interface BenchCase {
  id: string;
  rows: number;
  cols: number;
  bits: number;
  rank: number;
  iters: number;
  quantizer: Quantizer;
  blockSize: number;
  /** Seed of the synthetic matrix (one matrix per shape, shared by its cases). */
  seed: number;
}

export const SHAPES: [number, number][] = [
  [1024, 1024],
  [2048, 2048],
  [4096, 4096],
  [4096, 11008],
];
export const QUICK_SHAPES: [number, number][] = [
  [1024, 1024],
  [2048, 2048],
];
export const RANKS = [16, 64];
export const BITS = [2, 4];
export const ITERS = 5;
/** NF (PEFT's codebook) and HQQ's affine grid with its zero optimizer, both at group 64. */
export const QUANTIZERS: Quantizer[] = ['nf', 'hqq'];

/** The cold single-matrix case (bench/coldStart.ts): the shape a user tries first. */
export const COLD_CASE = '2048x2048-nf2-r16-t5';

export function caseId(c: Omit<BenchCase, 'id'>): string {
  return `${c.rows}x${c.cols}-${c.quantizer}${c.bits}-r${c.rank}-t${c.iters}`;
}

export function allCases(shapes = SHAPES, seed = 1): BenchCase[] {
  const out: BenchCase[] = [];
  for (const [rows, cols] of shapes)
    for (const bits of BITS)
      for (const rank of RANKS)
        for (const quantizer of QUANTIZERS) {
          const c = { rows, cols, bits, rank, iters: ITERS, quantizer, blockSize: 64, seed };
          out.push({ id: caseId(c), ...c });
        }
  return out;
}

/** The NF case an HQQ case is measured against: same shape, bits, rank, iterations, group. */
export function sameSettings(a: BenchCase, b: BenchCase): boolean {
  return (
    a.rows === b.rows &&
    a.cols === b.cols &&
    a.bits === b.bits &&
    a.rank === b.rank &&
    a.iters === b.iters &&
    a.blockSize === b.blockSize &&
    a.seed === b.seed
  );
}

/** Keeps the cases whose id contains any of the comma-separated filters (e.g. "2048x2048,nf2-r64"). */
export function filterCases(cases: BenchCase[], filter?: string): BenchCase[] {
  if (!filter) return cases;
  const parts = filter
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return cases.filter((c) => parts.some((p) => c.id.includes(p)));
}
