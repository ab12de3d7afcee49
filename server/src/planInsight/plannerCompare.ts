// The current plan next to the planner's: both predicted with the planner's error table
// (plan/planner/table.ts) from the analysis next to the plan, the planner at exactly the
// current plan's size, so the two totals are comparable (same matrices, same cost model).
// The planner itself is the caller's to run (the language server runs it on a worker thread).

import { adapterBytesOf, DEFAULT_COST, storageOf } from '../plan/planner/cost';
import { tablesFromReport } from '../plan/planner/table';
import type { ErrorMeasure, PlanBudget, Report } from '../protocol/lsp_ext';
import { PlanAssignment, planTotals } from './planModel';

export interface PlannerComparison {
  /** Predicted total ‖W − Q − A·Bᵀ‖²_F of the current plan. */
  error: number;
  /** The planner's predicted total at this plan's size (avgBits or bytes, as the plan's budget). */
  planner: number;
  /** The current plan's codes + scales + adapters, and its backbone bits per weight (the planner
   *  matches the one the plan's budget counts). */
  bytes: number;
  avgBits: number;
  /** What both totals sum (the table's, as the planner's): weight error, or calibrated output error. */
  measure: ErrorMeasure;
}

/** The planner's predicted total error at `budget` over the matrices `names`, or null when no plan fits. */
export type PlannerError = (budget: PlanBudget, names: string[]) => Promise<number | null>;

/** Null when the analysis cannot predict this plan (no analyses, a matrix or width it lacks, other
 *  quantizer/block size) or no planner plan fits. `byBits`: the plan's budget is in average bits. */
export async function comparePlanner(
  report: Report | undefined,
  a: PlanAssignment | null,
  byBits: boolean,
  plannerError: PlannerError,
): Promise<PlannerComparison | null> {
  if (!report?.analyses?.length || !a) return null;
  const planned = a.matrices.filter((m) => !m.skipped);
  if (!planned.length) return null;
  const an = report.analyses[0];
  const quantizer = an.quantizer ?? 'nf',
    blockSize = an.blockSize ?? DEFAULT_COST.blockSize;
  if (planned.some((m) => m.settings.quantizer !== quantizer || m.settings.blockSize !== blockSize)) return null;
  const cost = {
    ...DEFAULT_COST,
    blockSize,
    scales: storageOf(quantizer),
    adapterBytes: adapterBytesOf(planned[0].tensor.dtype),
  };
  const { tables, measure } = tablesFromReport(report, {
    ranks: [...new Set(planned.map((m) => m.settings.rank))],
    cost,
  });
  const byName = new Map(tables.map((t) => [t.name, t]));
  let error = 0;
  for (const m of planned) {
    const c = byName.get(m.tensor.name)?.choices.find((x) => x.bits === m.settings.bits && x.rank === m.settings.rank);
    if (!c) return null;
    error += c.error;
  }
  const t = planTotals(a);
  // The planner at this plan's size, measured as the plan's budget measures it: an avgBits budget
  // counts the backbone only (adapters are free to it), a bytes budget counts the adapters too.
  // (1 + 1e-9: bits → bytes in floating point must not leave this plan's own choice a hair over budget.)
  const budget: PlanBudget = byBits ? { avgBits: t.backboneBits * (1 + 1e-9) } : { bytes: t.budgetBytes };
  const planner = await plannerError(
    budget,
    planned.map((m) => m.tensor.name),
  );
  return planner === null ? null : { error, planner, bytes: t.budgetBytes, avgBits: t.backboneBits, measure };
}
