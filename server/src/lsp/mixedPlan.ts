// "Apply mixed-precision plan within budget". With an analysis report (per-width errors)
// the planner (plan/planner, also behind `loftq plan` and `loftq/plan`) chooses bits and
// rank per matrix; without one, the fixed first-k rule of the LoftQ paper applies
// (planInsight/firstK.ts), written into the plan file here. setMixedPlanner is the one place
// to plug in another strategy.

import type { PlanBudget, PlanOverride } from '../protocol/lsp_ext';
import { firstKChoice } from '../planInsight/firstK';
import { Change, planEdits } from './edits';
import type { PlanDoc } from './planDoc';

export interface MixedPlan {
  /** Shown in the code action's title, e.g. "first 3 layers at 4 bits (3.75 bits per weight)". */
  description: string;
  /** The whole plan file after the change. */
  newText: string;
}

export type MixedPlanner = (p: PlanDoc, budget: PlanBudget) => Promise<MixedPlan | null>;

let planner: MixedPlanner = firstKPlanner;

export function setMixedPlanner(p: MixedPlanner): void {
  planner = p;
}

export function mixedPlan(p: PlanDoc, budget: PlanBudget): Promise<MixedPlan | null> {
  return planner(p, budget);
}

export async function firstKPlanner(p: PlanDoc, budget: PlanBudget): Promise<MixedPlan | null> {
  const a = p.assignment;
  const choice = a && firstKChoice(p.parsed, p.base, a, budget);
  if (!choice) return null;
  const changes = replaceOverrides(p, choice.replace, choice.overrides);
  if (!changes.length) return null;
  return { description: choice.description, newText: planEdits(p.doc, changes).text };
}

/** The first superseded entry is replaced in place, the others removed, further ones appended. */
function replaceOverrides(p: PlanDoc, replace: number[], overrides: PlanOverride[]): Change[] {
  const [first, ...rest] = [...replace].sort((a, b) => a - b);
  const changes: Change[] = rest.sort((a, b) => b - a).map((j) => ({ path: ['overrides', j], value: undefined }));
  let todo = overrides;
  if (first !== undefined) {
    changes.push({ path: ['overrides', first], value: todo[0] });
    todo = todo.slice(1);
  }
  if (!p.has(['overrides']) && todo.length) changes.push({ path: ['overrides'], value: todo });
  else for (const o of todo) changes.push({ path: ['overrides', -1], value: o, insert: true });
  return changes;
}
