// The planner comparison of one plan document (planInsight/plannerCompare.ts), with the planner's
// answer memoised: it runs in a worker thread on every diagnostics pass, and only changes with the
// report (a new object when the file changes), the planned matrices and the size.

import type { PlanBudget, Report } from '../protocol/lsp_ext';
import { comparePlanner as compare, PlannerComparison } from '../planInsight/plannerCompare';
import type { PlanDoc } from './planDoc';
import { runPlanner } from './planner';

const memo = new WeakMap<Report, Map<string, Promise<number | null>>>();

export function comparePlanner(p: PlanDoc): Promise<PlannerComparison | null> {
  const report = p.facts.report?.raw;
  const byBits = p.parsed.plan.budget?.avgBits !== undefined;
  return compare(report, p.assignment, byBits, (budget, names) => plannerError(p, report!, budget, names));
}

function plannerError(p: PlanDoc, report: Report, budget: PlanBudget, names: string[]): Promise<number | null> {
  const key = `${budget.avgBits ?? ''}|${budget.bytes ?? ''}|${names.join(',')}`;
  let m = memo.get(report);
  if (!m) memo.set(report, (m = new Map()));
  const hit = m.get(key);
  if (hit) return hit;
  // No planner plan fits this size (its ranks start at 8): no comparison.
  const e = runPlanner(p, budget).then(
    (plan) => plan?.plan.error ?? null,
    () => null,
  );
  if (m.size > 64) m.clear();
  m.set(key, e);
  return e;
}
