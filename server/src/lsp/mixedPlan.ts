// "Apply mixed-precision plan within budget". The planner (request `loftq/plan`) plugs in
// through setMixedPlanner; until then the fixed rule of the LoftQ paper applies: the first
// k layers at 4 bits, the rest at the plan's default, with the largest k that fits.

import type { PlanBudget, PlanOverride } from '../protocol/lsp_ext';
import type { ParsedPlan } from '../plan/planfile';
import { nameParts } from './describe';
import type { PlanDoc } from './planDoc';
import { assignMatrices, planTotals, PlanTotals } from './planModel';

export interface MixedPlan {
  /** Overrides to append (after removing `replace`). */
  overrides: PlanOverride[];
  /** Indices in the file's `overrides` array that the new plan supersedes. */
  replace: number[];
  /** Shown in the code action's title, e.g. "first 3 layers at 4 bits". */
  description: string;
  totals: PlanTotals;
}

export type MixedPlanner = (p: PlanDoc, budget: PlanBudget) => Promise<MixedPlan | null>;

let planner: MixedPlanner = firstKPlanner;

/** The one place where a real planner replaces the first-k rule. */
export function setMixedPlanner(p: MixedPlanner): void {
  planner = p;
}

export function mixedPlan(p: PlanDoc, budget: PlanBudget): Promise<MixedPlan | null> {
  return planner(p, budget);
}

export const HIGH_BITS = 4;

export function fitsBudget(t: PlanTotals, b: PlanBudget): boolean {
  if (typeof b.avgBits === 'number' && t.avgBits > b.avgBits + 1e-9) return false;
  if (typeof b.bytes === 'number' && t.backboneBytes + t.adapterBytes > b.bytes) return false;
  return true;
}

function firstKMatch(prefix: string, k: number): string {
  return k === 1 ? `${prefix}.0.**` : `${prefix}.{0..${k - 1}}.**`;
}

function isFirstKOverride(o: PlanOverride, prefix: string): boolean {
  const esc = prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return o.bits === HIGH_BITS && new RegExp(`^${esc}\\.(?:0|\\{0\\.\\.\\d+\\})\\.\\*\\*$`).test(o.match) && Object.keys(o).every((k) => k === 'match' || k === 'bits');
}

export async function firstKPlanner(p: PlanDoc, budget: PlanBudget): Promise<MixedPlan | null> {
  const a = p.assignment;
  if (!a || a.defaults.bits >= HIGH_BITS) return null;
  // The layer stack is the most common prefix before a layer index (model.layers, transformer.h, …).
  const counts = new Map<string, Set<number>>();
  for (const m of a.matrices) {
    const np = nameParts(m.tensor.name);
    if (np.layer === undefined) continue;
    const s = counts.get(np.prefix) ?? new Set<number>();
    s.add(np.layer);
    counts.set(np.prefix, s);
  }
  const stack = [...counts.entries()].sort((x, y) => y[1].size - x[1].size)[0];
  if (!stack) return null;
  const [prefix, layerSet] = stack;
  const layers = [...layerSet].sort((x, y) => x - y);
  const kept = (p.parsed.plan.overrides ?? []).map((o, i) => ({ o, j: p.parsed.overrideIndex[i] }));
  const replace = kept.filter(({ o }) => isFirstKOverride(o, prefix)).map(({ j }) => j);
  const others = kept.filter(({ j }) => !replace.includes(j)).map(({ o }) => o);
  const contiguous = layers.every((l, i) => l === i);
  if (!contiguous) return null;
  for (let k = layers.length; k >= 0; k--) {
    const extra: PlanOverride[] = k ? [{ match: firstKMatch(prefix, k), bits: HIGH_BITS }] : [];
    const overrides = [...others, ...extra];
    const parsed: ParsedPlan = { ...p.parsed, plan: { ...p.parsed.plan, overrides }, overrideIndex: overrides.map((_, i) => i) };
    const totals = planTotals(assignMatrices(parsed, p.base, a.tensors));
    if (fitsBudget(totals, budget)) {
      const description = k ? `first ${k} layer${k === 1 ? '' : 's'} at ${HIGH_BITS} bits` : `all layers at ${a.defaults.bits} bits`;
      return { overrides: extra, replace, description, totals };
    }
  }
  return null;
}
