// Per-matrix choice tables (bits, rank) → (predicted error, bytes) from an analysis report.
//
// The report holds one LoftQ run per bit width b at the largest rank R, with the top singular
// values σ₁ ≥ σ₂ ≥ … of the final residual W − Q_b. With A·Bᵀ the best rank-R approximation
// of W − Q_b, ‖W − Q_b − A·Bᵀ‖² = ‖W − Q_b‖² − Σ_{i≤R} σ_i², so truncating the same
// factorisation at rank r < R gives
//     error(b, r) ≈ (relError·‖W‖)² + Σ_{r<i≤R} σ_i².
// It keeps Q_b from the rank-R run; a LoftQ run at rank r re-fits Q for that rank, so the
// prediction is an estimate (docs/planner.md measures it). Ranks above R are not offered;
// R is min(analysed rank, out, in) per matrix, as the engine clamps it.
//
// A calibrated analysis measures the same in the metric H = G + λI = S·Sᵀ: calibrated LoftQ's
// rank-r step is the best rank-r approximation of (W − Q)·S (calibrated.ts), so with σ now the
// singular values of (W − Q_b)·S of the kept iterate, ‖(W − Q − A·Bᵀ)·S‖²(b, r) ≈ (outputRelError·
// ‖W·S‖)² + Σ_{r<i≤R} σ_i² — the same identity in output terms. Output errors of different matrices
// live in different spaces (a q_proj's feeds a softmax, an o_proj's the residual stream), so each
// is converted to the model's output by the matrix's measured gain (outputGain: KL per unit
// output error, model/sensitivity.ts): the absolute objective is then Σ gain·‖(W − Q − A·Bᵀ)·S‖²,
// a predicted KL in nats per token. When every row carries output errors and every matrix a gain,
// the tables are in output terms; else in weight error (docs/planner.md measures why not raw
// output errors).

import type { AnalysisEntry, ErrorMeasure, Report } from '../../protocol/lsp_ext';
import { choiceBytes, CostModel } from './cost';

export type Objective = 'absolute' | 'relative';
export type { ErrorMeasure };
type AnalysisRow = AnalysisEntry['matrices'][number];

export interface Choice {
  bits: number;
  rank: number;
  /** Predicted ‖W − Q − A·Bᵀ‖²_F; in output terms gain·‖(W − Q − A·Bᵀ)·S‖²_F (nats per token).
   *  Relative objective: divided by ‖W‖²_F, or ‖(W − Q − A·Bᵀ)·S‖²_F / ‖W·S‖²_F. */
  error: number;
  bytes: number;
  /** True when a LoftQ run at exactly this (bits, rank) gave the error; false when predicted from a larger rank. */
  exact: boolean;
}

export interface MatrixTable {
  name: string;
  shape: [number, number];
  /** ‖W‖²_F, or ‖W·S‖²_F in output terms. */
  norm2: number;
  choices: Choice[];
}

export interface TableOptions {
  bits?: number[];
  ranks?: number[];
  objective?: Objective;
  /** Which error to predict; default 'output' when every analysed row carries output errors and
   *  every matrix an output gain. */
  measure?: ErrorMeasure;
  cost: CostModel;
}

export interface Tables {
  tables: MatrixTable[];
  warnings: string[];
  measure: ErrorMeasure;
}

// A report is input (a file in the workspace): a field that is not a number ≥ 0 is no figure.
const figure = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x >= 0;
const hasOutput = (row: AnalysisRow) => figure(row.outputRelError) && figure(row.outputNorm);
const hasGain = (row: AnalysisRow) => figure(row.outputGain);

/** ‖W‖ and the run's error and spectrum in the chosen measure. */
function inMeasure(row: AnalysisRow, measure: ErrorMeasure) {
  return measure === 'output'
    ? { norm: row.outputNorm ?? NaN, relError: row.outputRelError ?? NaN, spectrum: row.outputSpectrum }
    : { norm: row.frobeniusNorm, relError: row.relError, spectrum: row.residualSpectrum };
}

/** Predicted squared error at `rank` from one analysis row, or null when it cannot be predicted. */
export function predictError(
  row: AnalysisRow,
  analysedRank: number,
  rank: number,
  measure: ErrorMeasure = 'weight',
): number | null {
  const m = inMeasure(row, measure);
  const base = (m.relError * m.norm) ** 2;
  if (rank === analysedRank) return base;
  if (rank > analysedRank || rank < 0) return null;
  const s = m.spectrum;
  if (!s || s.length < analysedRank) return null;
  let tail = 0;
  for (let i = rank; i < analysedRank; i++) tail += s[i] * s[i];
  return base + tail;
}

export function tablesFromReport(report: Report, opts: TableOptions): Tables {
  const analyses = report.analyses ?? [];
  const warnings: string[] = [];
  const objective = opts.objective ?? 'absolute';
  const entries = analyses.filter((a) => !opts.bits || opts.bits.includes(a.bits));
  const widths = [...new Set(entries.map((a) => a.bits))].sort((a, b) => a - b);
  const rowsAll = entries.flatMap((a) => a.matrices);
  // A matrix's gain is the same at every width and rank: any of its rows may carry it.
  const gain = new Map<string, number>();
  for (const r of rowsAll) if (hasGain(r)) gain.set(r.name, r.outputGain!);
  const outputReady = rowsAll.length > 0 && rowsAll.every((r) => hasOutput(r) && gain.has(r.name));
  const measure: ErrorMeasure = opts.measure ?? (outputReady ? 'output' : 'weight');
  if (!opts.measure && rowsAll.some(hasOutput) && measure === 'weight') {
    const noOutput = rowsAll.filter((r) => !hasOutput(r)).length;
    warnings.push(
      noOutput
        ? `${noOutput} of ${rowsAll.length} analysed runs lack output errors (no calibration statistics ` +
            'for them): planned in weight error'
        : `${new Set(rowsAll.filter((r) => !gain.has(r.name)).map((r) => r.name)).size} matrices lack an ` +
            'output gain (an imatrix has no tokens to probe them on): planned in weight error',
    );
  }
  if (opts.measure === 'output' && objective === 'absolute' && rowsAll.some((r) => !gain.has(r.name)))
    warnings.push('matrices without an output gain count their output error unweighted (gain 1)');
  const weightOf = (name: string) => (measure === 'output' && objective === 'absolute' ? (gain.get(name) ?? 1) : 1);
  for (const b of opts.bits ?? [])
    if (!analyses.some((a) => a.bits === b)) warnings.push(`the report has no analysis at ${b} bits; skipped`);
  // per matrix and bit width, every analysed run (a report may hold several ranks per width:
  // refine.ts adds exact runs at the ranks a plan picks)
  type Run = { analysed: number; row: AnalysisRow };
  const runs = new Map<string, Map<number, Run[]>>();
  const order: string[] = [];
  for (const a of entries) {
    for (const row of a.matrices) {
      let byBits = runs.get(row.name);
      if (!byBits) {
        byBits = new Map();
        runs.set(row.name, byBits);
        order.push(row.name);
      }
      const list = byBits.get(a.bits) ?? [];
      // the engine clamps the rank to min(out, in); larger ranks do not exist for this matrix
      list.push({ analysed: Math.min(a.rank, row.shape[0], row.shape[1]), row });
      byBits.set(a.bits, list);
    }
  }
  const maxRank = Math.max(0, ...entries.map((a) => a.rank));
  const lacking = new Set<string>();
  const tables: MatrixTable[] = [];
  for (const name of order) {
    const byBits = runs.get(name)!;
    const first = [...byBits.values()][0][0].row;
    const t: MatrixTable = { name, shape: first.shape, norm2: inMeasure(first, measure).norm ** 2, choices: [] };
    for (const bits of widths) {
      const list = (byBits.get(bits) ?? []).sort((x, y) => x.analysed - y.analysed);
      if (!list.length) continue;
      for (const r of opts.ranks ?? [list[list.length - 1].analysed]) {
        if (r > list[list.length - 1].analysed) continue;
        // a run at this very rank is exact; else predict from the smallest larger run with a spectrum
        const exact = list.find((x) => x.analysed === r);
        let e: number | null = exact ? predictError(exact.row, r, r, measure) : null;
        if (e === null)
          for (const x of list) if (x.analysed > r && e === null) e = predictError(x.row, x.analysed, r, measure);
        if (e === null || !Number.isFinite(e)) {
          lacking.add(name);
          continue;
        }
        const error = objective === 'relative' ? (t.norm2 > 0 ? e / t.norm2 : 0) : weightOf(name) * e;
        t.choices.push({
          bits,
          rank: r,
          error,
          bytes: choiceBytes(t.shape[0], t.shape[1], bits, r, opts.cost),
          exact: !!exact,
        });
      }
    }
    if (t.choices.length) tables.push(t);
  }
  for (const r of [...new Set(opts.ranks ?? [])].filter((r) => r > maxRank).sort((x, y) => x - y))
    warnings.push(`rank ${r} is above the analysed rank; not offered (analyse at a larger --rank)`);
  if (lacking.size)
    warnings.push(
      `${lacking.size} matrices lack a ${measure === 'output' ? 'output-space' : 'residual'} spectrum ` +
        '(analyse with --spectrum); ' +
        'only the analysed rank is offered there',
    );
  return { tables, warnings, measure };
}
