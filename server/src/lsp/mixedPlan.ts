// "Apply mixed-precision plan within budget". With an analysis report (per-width errors)
// the planner (plan/planner, also behind `loftq plan` and `loftq/plan`) chooses bits and
// rank per matrix; without one, the fixed rule of the LoftQ paper applies: the first k
// layers at 4 bits, the rest at the plan's default, with the largest k that fits.
// setMixedPlanner is the one place to plug in another strategy.

import { budgetBytes, countsAdapters } from '../plan/planner/cost';
import type { PlanBudget, PlanOverride } from '../protocol/lsp_ext';
import type { ParsedPlan } from '../plan/planfile';
import { nameParts } from '../planInsight/describe';
import { Change, planEdits } from './edits';
import type { PlanDoc } from './planDoc';
import { assignMatrices, planTotals, PlanTotals } from '../planInsight/planModel';

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

export const HIGH_BITS = 4;

/** Within budget by the planner's accounting: average bits count codes + scales of the quantized
 *  matrices, byte budgets also their adapters (plan/planner/cost.ts). */
export function fitsBudget(t: PlanTotals, b: PlanBudget): boolean {
  if (typeof b.bytes !== 'number' && typeof b.avgBits !== 'number') return true;
  return (countsAdapters(b) ? t.budgetBytes : t.quantizedBackboneBytes) <= budgetBytes(b, t.quantizedParameters);
}

function firstKMatch(prefix: string, k: number): string {
  return k === 1 ? `${prefix}.0.**` : `${prefix}.{0..${k - 1}}.**`;
}

/** An override this rule wrote earlier (only match + bits 4 over a first-k range), replaced on re-application. */
function isFirstKOverride(o: PlanOverride, prefix: string): boolean {
  const esc = prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return (
    o.bits === HIGH_BITS &&
    new RegExp(`^${esc}\\.(?:0|\\{0\\.\\.\\d+\\})\\.\\*\\*$`).test(o.match) &&
    Object.keys(o).every((k) => k === 'match' || k === 'bits')
  );
}

export async function firstKPlanner(p: PlanDoc, budget: PlanBudget): Promise<MixedPlan | null> {
  const a = p.assignment;
  if (!a || a.defaults.bits >= HIGH_BITS) return null;
  // The layer stack is the most common prefix before a layer index (model.layers, transformer.h, …).
  const stacks = new Map<string, Set<number>>();
  for (const m of a.matrices) {
    const np = nameParts(m.tensor.name);
    if (np.layer === undefined) continue;
    const s = stacks.get(np.prefix) ?? new Set<number>();
    s.add(np.layer);
    stacks.set(np.prefix, s);
  }
  const stack = [...stacks.entries()].sort((x, y) => y[1].size - x[1].size)[0];
  if (!stack) return null;
  const [prefix, layerSet] = stack;
  const layers = [...layerSet].sort((x, y) => x - y);
  if (!layers.every((l, i) => l === i)) return null;
  const kept = (p.parsed.plan.overrides ?? []).map((o, i) => ({ o, j: p.parsed.overrideIndex[i] }));
  const replace = kept.filter(({ o }) => isFirstKOverride(o, prefix)).map(({ j }) => j);
  const others = kept.filter(({ j }) => !replace.includes(j)).map(({ o }) => o);
  for (let k = layers.length; k >= 0; k--) {
    const extra: PlanOverride[] = k ? [{ match: firstKMatch(prefix, k), bits: HIGH_BITS }] : [];
    const overrides = [...others, ...extra];
    const parsed: ParsedPlan = {
      ...p.parsed,
      plan: { ...p.parsed.plan, overrides },
      overrideIndex: overrides.map((_, i) => i),
    };
    const totals = planTotals(assignMatrices(parsed, p.base, a.tensors));
    if (!fitsBudget(totals, budget)) continue;
    const changes = replaceOverrides(p, replace, extra);
    if (!changes.length) return null;
    const what = k
      ? `first ${k} layer${k === 1 ? '' : 's'} at ${HIGH_BITS} bits`
      : `all layers at ${a.defaults.bits} bits`;
    return {
      description: `${what} (${totals.backboneBits.toFixed(2)} bits per weight in the backbone)`,
      newText: planEdits(p.doc, changes).text,
    };
  }
  return null;
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
