// Exact errors for the ranks a plan picks. The rank shortcut (table.ts) keeps Q from the
// run at the largest rank R; a LoftQ run at a smaller rank r re-fits Q to that rank and ends
// lower, so predictions at r < R run high (docs/planner.md measures by how much). With
// the checkpoint at hand the planner therefore runs LoftQ at exactly the (bits, rank) it
// picked wherever that was predicted, adds those runs to the report, and plans again — until
// every picked choice is an exact run. Each round costs at most one run per matrix;
// predictions only run high, so exact values make picked choices cheaper in error and the
// plan settles in a round or two. A calibrated analysis gets calibrated exact runs, on the same
// statistics (the source is opened again each round: a sampled set is the same seeded sample).

import type { Report } from '../protocol/lsp_ext';
import { analyzeCheckpoint } from './run';
import { moduleName } from '../plan/glob';
import type { PlanAnalysisOptions } from './planAnalyze';
import { planReport, Plan, PlanOptions } from '../plan/planner/plan';

export interface Refined {
  plan: Plan;
  /** LoftQ runs added (one per matrix and picked (bits, rank)). */
  runs: number;
  rounds: number;
}

export async function refinePlan(
  checkpoint: string,
  report: Report,
  planOpts: PlanOptions,
  o: PlanAnalysisOptions,
  maxRounds = 4,
): Promise<Refined> {
  let plan = planReport(report, planOpts);
  let runs = 0,
    rounds = 0;
  for (; rounds < maxRounds; rounds++) {
    const todo = new Map<string, { bits: number; rank: number; names: string[] }>();
    for (const c of plan.choices) {
      if (c.exact) continue;
      const key = `${c.bits}/${c.rank}`;
      const g = todo.get(key) ?? { bits: c.bits, rank: c.rank, names: [] };
      g.names.push(c.name);
      todo.set(key, g);
    }
    if (!todo.size) break;
    // One analysis per round for every picked (bits, rank): one calibration pass when calibrated.
    const groups = [...todo.values()];
    const r = await analyzeCheckpoint(checkpoint, {
      bits: [...new Set(groups.map((g) => g.bits))],
      rank: Math.max(...groups.map((g) => g.rank)),
      runs: groups.map((g) => ({ bits: [g.bits], rank: g.rank, names: g.names })),
      iters: o.iters,
      quantizer: o.quantizer,
      blockSize: o.blockSize,
      targets: groups.flatMap((g) => g.names.map(moduleName)),
      backend: o.backend,
      workers: o.workers,
      calibration: o.calibration,
      sensitivity: false,
      signal: o.signal,
    });
    report.analyses!.push(...r.analyses!);
    runs += groups.reduce((s, g) => s + g.names.length, 0);
    plan = planReport(report, planOpts);
  }
  return { plan, runs, rounds };
}
