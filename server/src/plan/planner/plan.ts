// The planner: choice tables + budget → the best (bits, rank) per matrix, the two
// baselines at the same budget, and the overrides that write the plan into loftq.json.

import type { ErrorMeasure, PlanBudget, PlanChoice, PlanResult, Report } from '../../protocol/lsp_ext';
import { UsageError } from '../../base/errors';
import { avgBitsOf, backboneChoiceBytes, budgetBytes, CostModel, loraBytes } from './cost';
import { baselineRank, Baseline, firstKBaseline, uniformBaseline } from './baselines';
import { groupOverrides } from './group';
import { planReloadWarning } from './reload';
import { solveMckp } from './solver';
import { MatrixTable, Objective, tablesFromReport } from './table';

export interface PlanOptions {
  budget: PlanBudget;
  bits?: number[];
  ranks?: number[];
  objective?: Objective;
  /** Which error to minimise; default 'output' when the analysis carries calibrated output errors. */
  measure?: ErrorMeasure;
  cost: CostModel;
  /** The rank the baselines use (default 16, or the nearest offered below it). */
  defaultRank?: number;
  /** Matrices to leave out of the plan (e.g. skipped by the plan file). */
  exclude?: (name: string) => boolean;
  /** DP resolution (see solver.ts). */
  units?: number;
}

export interface Plan extends PlanResult {
  errorMeasure: ErrorMeasure;
  /** Lower bound on the optimal total error. */
  lowerBound: number;
  parameters: number;
  budgetBytes: number;
  warnings: string[];
  /** Informational lines (how the figures were obtained). */
  notes: string[];
}

/** avgBits over the backbone (codes + scales) and the adapters beside it, whatever the budget counted. */
function split(tables: MatrixTable[], pick: number[], cost: CostModel) {
  let backbone = 0,
    adapters = 0;
  tables.forEach((t, i) => {
    const c = t.choices[pick[i]];
    backbone += backboneChoiceBytes(t.shape[0], t.shape[1], c.bits, cost);
    adapters += loraBytes(t.shape[0], t.shape[1], c.rank, { ...cost, countAdapters: true });
  });
  return { backbone, adapters };
}

function summary(tables: MatrixTable[], b: Baseline, parameters: number, cost: CostModel) {
  const s = split(tables, b.pick, cost);
  return { error: b.error, bytes: b.bytes, avgBits: avgBitsOf(s.backbone, parameters), adapterBytes: s.adapters };
}

export function planTables(
  tables: MatrixTable[],
  opts: PlanOptions,
  warnings: string[] = [],
  measure: ErrorMeasure = opts.measure ?? 'weight',
): Plan {
  if (!tables.length) throw new UsageError('nothing to plan: no matrix has a (bits, rank) choice');
  const parameters = tables.reduce((s, t) => s + t.shape[0] * t.shape[1], 0);
  const cap = budgetBytes(opts.budget, parameters);
  const rank = baselineRank(tables, opts.defaultRank ?? 16);
  const uniform = uniformBaseline(tables, cap, rank);
  const firstK = firstKBaseline(tables, cap, rank);
  const groups = tables.map((t) => ({ costs: t.choices.map((c) => c.bytes), errors: t.choices.map((c) => c.error) }));
  const sol = solveMckp(groups, cap, {
    units: opts.units,
    seeds: [uniform?.pick, firstK?.pick].filter((p): p is number[] => !!p),
  });
  if (!sol) {
    const min = groups.reduce((s, g) => s + g.costs.reduce((m, c) => Math.min(m, c), Infinity), 0);
    throw new UsageError(
      `budget ${opts.budget.avgBits !== undefined ? `${opts.budget.avgBits} bits` : `${cap} bytes`} ` +
        `is below the cheapest plan (${min} bytes, ${avgBitsOf(min, parameters).toFixed(3)} bits per parameter)`,
    );
  }
  const choices: PlanChoice[] = tables.map((t, i) => {
    const c = t.choices[sol.pick[i]];
    return { name: t.name, bits: c.bits, rank: c.rank, predictedError: c.error, bytes: c.bytes, exact: c.exact };
  });
  const none = { error: NaN, bytes: NaN, avgBits: NaN, adapterBytes: NaN };
  const picked = split(tables, sol.pick, opts.cost);
  if (!uniform) warnings.push(`no uniform bit width fits the budget at rank ${rank}`);
  if (!firstK)
    warnings.push(`the first-k rule (4/2 bits) does not fit the budget at rank ${rank} or lacks 2- or 4-bit analyses`);
  return {
    budget: opts.budget,
    plan: {
      error: sol.error,
      bytes: sol.cost,
      avgBits: avgBitsOf(picked.backbone, parameters),
      adapterBytes: picked.adapters,
    },
    baselines: {
      uniform: uniform
        ? { ...summary(tables, uniform, parameters, opts.cost), bits: uniform.bits }
        : { ...none, bits: NaN },
      firstK: firstK ? { ...summary(tables, firstK, parameters, opts.cost), k: firstK.k } : { ...none, k: NaN },
    },
    optimalityGap: sol.gap,
    errorMeasure: measure,
    choices,
    overrides: groupOverrides(choices),
    lowerBound: sol.lowerBound,
    parameters,
    budgetBytes: cap,
    warnings,
    notes: [],
  };
}

export function planReport(report: Report, opts: PlanOptions): Plan {
  if (!report.analyses?.length)
    throw new UsageError(
      `the report for ${report.checkpoint} has no analyses; ` +
        "run 'loftq analyze --bits 2,3,4,8 --rank 64 --spectrum 64' first",
    );
  const { tables, warnings, measure } = tablesFromReport(report, opts);
  const kept = opts.exclude ? tables.filter((t) => !opts.exclude!(t.name)) : tables;
  const plan = planTables(kept, opts, warnings, measure);
  const a = report.analyses[0];
  const reload = planReloadWarning(plan.choices, a.quantizer ?? 'nf', a.blockSize ?? 64);
  if (reload) plan.warnings.push(reload);
  return plan;
}
