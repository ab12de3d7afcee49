// The bench's cases: LLM-like matrices of the shapes that dominate Llama checkpoints, at
// the ranks and bit widths LoftQ is used with. One id per case for --cases filters and caches.

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

export function caseId(c: Omit<BenchCase, 'id'>): string {
  return `${c.rows}x${c.cols}-${c.quantizer}${c.bits}-r${c.rank}-t${c.iters}`;
}

export function allCases(shapes = SHAPES, seed = 1): BenchCase[] {
  const out: BenchCase[] = [];
  for (const [rows, cols] of shapes)
    for (const bits of BITS)
      for (const rank of RANKS) {
        const c = { rows, cols, bits, rank, iters: ITERS, quantizer: 'nf' as const, blockSize: 64, seed };
        out.push({ id: caseId(c), ...c });
      }
  return out;
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
