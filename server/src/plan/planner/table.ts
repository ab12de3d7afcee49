// Per-matrix choice tables (bits, rank) → (predicted error, bytes) from an analysis report.
//
// The report holds one LoftQ run per bit width b at the largest rank R, with the top
// singular values σ₁ ≥ σ₂ ≥ … of the final residual W − Q_b. With A·Bᵀ the best rank-R
// approximation of W − Q_b, ‖W − Q_b − A·Bᵀ‖² = ‖W − Q_b‖² − Σ_{i≤R} σ_i², so truncating the
// same factorisation at rank r < R gives
//     error(b, r) ≈ (relError·‖W‖)² + Σ_{r<i≤R} σ_i².
// It keeps Q_b from the rank-R run; a LoftQ run at rank r re-fits Q for that rank, so the
// prediction is an estimate (docs/planner.md measures it). Ranks above R are not offered.

import type { AnalysisEntry, Report } from '../../protocol/lsp_ext';
import { choiceBytes, CostModel } from './cost';

export type Objective = 'absolute' | 'relative';

export interface Choice {
  bits: number;
  rank: number;
  /** Predicted ‖W − Q − A·Bᵀ‖²_F (divided by ‖W‖²_F for the relative objective). */
  error: number;
  bytes: number;
}

export interface MatrixTable {
  name: string;
  shape: [number, number];
  /** ‖W‖²_F. */
  norm2: number;
  choices: Choice[];
}

export interface TableOptions {
  bits?: number[];
  ranks?: number[];
  objective?: Objective;
  cost: CostModel;
}

export interface Tables {
  tables: MatrixTable[];
  warnings: string[];
}

/** Predicted squared error at `rank` from one analysis row, or null when it cannot be predicted. */
export function predictError(row: AnalysisEntry['matrices'][number], analysedRank: number, rank: number): number | null {
  const base = (row.relError * row.frobeniusNorm) ** 2;
  if (rank === analysedRank) return base;
  if (rank > analysedRank || rank < 0) return null;
  const s = row.residualSpectrum;
  if (!s || s.length < analysedRank) return null;
  let tail = 0;
  for (let i = rank; i < analysedRank; i++) tail += s[i] * s[i];
  return base + tail;
}

export function tablesFromReport(report: Report, opts: TableOptions): Tables {
  const analyses = report.analyses ?? [];
  const warnings: string[] = [];
  const objective = opts.objective ?? 'absolute';
  const entries = analyses.filter((a) => !opts.bits || opts.bits.includes(a.bits)).sort((a, b) => a.bits - b.bits);
  for (const b of opts.bits ?? []) if (!analyses.some((a) => a.bits === b)) warnings.push(`the report has no analysis at ${b} bits; skipped`);
  const byName = new Map<string, MatrixTable>();
  const order: string[] = [];
  const dropped = new Set<number>();
  const lacking = new Set<string>();
  for (const a of entries) {
    const ranks = opts.ranks ?? [a.rank];
    for (const r of ranks) if (r > a.rank) dropped.add(r);
    for (const row of a.matrices) {
      let t = byName.get(row.name);
      if (!t) {
        t = { name: row.name, shape: row.shape, norm2: row.frobeniusNorm ** 2, choices: [] };
        byName.set(row.name, t);
        order.push(row.name);
      }
      for (const r of ranks) {
        const e = predictError(row, a.rank, r);
        if (e === null || !Number.isFinite(e)) { if (r <= a.rank) lacking.add(row.name); continue; }
        const error = objective === 'relative' ? (t.norm2 > 0 ? e / t.norm2 : 0) : e;
        t.choices.push({ bits: a.bits, rank: r, error, bytes: choiceBytes(row.shape[0], row.shape[1], a.bits, r, opts.cost) });
      }
    }
  }
  for (const r of [...dropped].sort((x, y) => x - y)) warnings.push(`rank ${r} is above the analysed rank; not offered (analyse at a larger --rank)`);
  const tables = order.map((n) => byName.get(n)!);
  if (lacking.size) warnings.push(`${lacking.size} matrices lack a residual spectrum (analyse with --spectrum); only the analysed rank is offered there`);
  return { tables: tables.filter((t) => t.choices.length > 0), warnings };
}
