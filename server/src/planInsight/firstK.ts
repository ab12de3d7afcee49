// The fixed rule of the LoftQ paper, for plans without an analysis to plan from: the first k
// layers at 4 bits, the rest at the plan's default, with the largest k that fits the budget.
// Decides the overrides only; turning them into edits of the plan file is the editor's.

import { budgetBytes, countsAdapters } from '../plan/planner/cost';
import type { ParsedPlan } from '../plan/planfile';
import type { MatrixSettings, PlanBudget, PlanOverride } from '../protocol/lsp_ext';
import { nameParts } from './describe';
import { assignMatrices, PlanAssignment, planTotals, PlanTotals } from './planModel';

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

export interface FirstKChoice {
  /** File indices of the overrides this rule wrote earlier, which the new ones replace. */
  replace: number[];
  /** The rule's new overrides (none when every layer stays at the default). */
  overrides: PlanOverride[];
  /** E.g. "first 3 layers at 4 bits (3.75 bits per weight in the backbone)". */
  description: string;
}

/** Null when the rule does not apply (default already ≥ 4 bits, no contiguous layer stack from
 *  layer 0) or even all layers at the default bits exceed the budget. */
export function firstKChoice(
  parsed: ParsedPlan,
  base: MatrixSettings,
  a: PlanAssignment,
  budget: PlanBudget,
): FirstKChoice | null {
  if (a.defaults.bits >= HIGH_BITS) return null;
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
  const kept = (parsed.plan.overrides ?? []).map((o, i) => ({ o, j: parsed.overrideIndex[i] }));
  const replace = kept.filter(({ o }) => isFirstKOverride(o, prefix)).map(({ j }) => j);
  const others = kept.filter(({ j }) => !replace.includes(j)).map(({ o }) => o);
  for (let k = layers.length; k >= 0; k--) {
    const extra: PlanOverride[] = k ? [{ match: firstKMatch(prefix, k), bits: HIGH_BITS }] : [];
    const overrides = [...others, ...extra];
    const trial: ParsedPlan = {
      ...parsed,
      plan: { ...parsed.plan, overrides },
      overrideIndex: overrides.map((_, i) => i),
    };
    const totals = planTotals(assignMatrices(trial, base, a.tensors));
    if (!fitsBudget(totals, budget)) continue;
    const what = k
      ? `first ${k} layer${k === 1 ? '' : 's'} at ${HIGH_BITS} bits`
      : `all layers at ${a.defaults.bits} bits`;
    const description = `${what} (${totals.backboneBits.toFixed(2)} bits per weight in the backbone)`;
    return { replace, overrides: extra, description };
  }
  return null;
}
