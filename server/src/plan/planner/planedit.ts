// Writes a plan into the plan-file text (`loftq.json`, JSON with comments) with small
// layout-keeping edits (jsonedit.ts), so comments, formatting and unrelated keys stay. Pure: text in,
// text (or one minimal edit) out — the CLI's --out and the language server's code action
// share it.
//
// The plan owns `bits` and `rank` of every planned matrix. An earlier override whose bits and rank
// the plan gives every matrix it matches anyway stays as it is (a hand-made quick fix the planner
// agrees with), unless it is one of the planner's own grouped entries (re-appended below). Other
// overrides that only set match/bits/rank are removed, and `bits`/`rank` are dropped from the rest
// (their other keys stay); `replacedOverrides` names those for the user before anything changes.
// `defaults` take the most common choice, grouped overrides for the rest are appended; `budget`
// records the budget planned for.

import { getNodeValue, type Node } from 'jsonc-parser';
import type { PlanBudget, PlanOverride } from '../../protocol/lsp_ext';
import { compileGlob, globMatches } from '../glob';
import { groupOverrides, mostCommon, NamedChoice } from './group';
import { appendItems, nodeAt, removeItem, removeMember, setMember } from './jsonedit';

const PLAN_KEYS = new Set(['match', 'bits', 'rank']);

interface Existing {
  index: number;
  keys: string[];
  value: Partial<PlanOverride>;
}

/** The overrides that set bits or rank, with their index in the file's array. */
function plannedOverrides(text: string): Existing[] {
  const list = nodeAt(text, ['overrides']);
  if (list?.type !== 'array') return [];
  const out: Existing[] = [];
  (list.children ?? []).forEach((item: Node, index) => {
    if (item.type !== 'object') return;
    const keys = (item.children ?? []).map((p) => p.children?.[0]?.value as string);
    if (keys.includes('bits') || keys.includes('rank'))
      out.push({ index, keys, value: getNodeValue(item) as Partial<PlanOverride> });
  });
  return out;
}

/** The planned matrices an override matches, and whether the plan gives each of them its bits and rank. */
function agreement(o: Partial<PlanOverride>, choices: NamedChoice[]): { hit: NamedChoice[]; agrees: boolean } {
  let hit: NamedChoice[] = [];
  try {
    const g = compileGlob(String(o.match ?? ''));
    hit = choices.filter((c) => globMatches(g, c.name));
  } catch {
    return { hit, agrees: false };
  }
  const agrees = hit.every(
    (c) => (o.bits === undefined || c.bits === o.bits) && (o.rank === undefined || c.rank === o.rank),
  );
  return { hit, agrees };
}

const sameEntry = (a: Partial<PlanOverride>, b: PlanOverride) =>
  a.match === b.match && a.bits === b.bits && a.rank === b.rank;

export function applyPlanToText(text: string, choices: NamedChoice[], budget?: PlanBudget): string {
  const root = nodeAt(text, []);
  if (!root || root.type !== 'object') throw new Error('the plan file must hold a JSON object');
  let out = text;
  const existing = nodeAt(out, ['overrides']);
  const common = mostCommon(choices);
  const overrides = groupOverrides(choices, common);
  for (const e of plannedOverrides(text).reverse()) {
    const pure = e.keys.every((k) => PLAN_KEYS.has(k));
    const own = pure && overrides.some((o) => sameEntry(e.value, o));
    if (!own && agreement(e.value, choices).agrees) continue;
    if (pure) out = removeItem(out, ['overrides'], e.index);
    else for (const k of ['rank', 'bits']) if (e.keys.includes(k)) out = removeMember(out, ['overrides', e.index, k]);
  }
  if (common) {
    out = setMember(out, ['defaults', 'bits'], common.bits);
    out = setMember(out, ['defaults', 'rank'], common.rank);
  }
  if (existing?.type !== 'array') out = setMember(out, ['overrides'], []);
  if (overrides.length) out = appendItems(out, ['overrides'], overrides);
  if (budget)
    out = setMember(
      out,
      ['budget'],
      budget.bytes !== undefined ? { bytes: budget.bytes } : { avgBits: budget.avgBits },
    );
  return out;
}

const span = (xs: number[]) => {
  const u = [...new Set(xs)].sort((a, b) => a - b);
  return u.length === 1 ? String(u[0]) : `${u[0]}–${u[u.length - 1]}`;
};

/** The user's overrides whose bits or rank applyPlanToText replaces, each in one line:
 *  `'model.layers.3.mlp.down_proj' bits 4 → 2 (1 matrix)`. Empty when the plan keeps every entry. */
export function replacedOverrides(text: string, choices: NamedChoice[]): string[] {
  const common = mostCommon(choices);
  const overrides = groupOverrides(choices, common);
  const out: string[] = [];
  for (const e of plannedOverrides(text)) {
    const pure = e.keys.every((k) => PLAN_KEYS.has(k));
    if (pure && overrides.some((o) => sameEntry(e.value, o))) continue; // the planner's own entry
    const { hit, agrees } = agreement(e.value, choices);
    if (agrees) continue;
    const parts: string[] = [];
    for (const k of ['bits', 'rank'] as const) {
      const was = e.value[k];
      if (was === undefined) continue;
      const now = hit.map((c) => c[k]);
      if (now.some((v) => v !== was)) parts.push(`${k} ${was} → ${span(now)}`);
    }
    const n = `${hit.length} matri${hit.length === 1 ? 'x' : 'ces'}`;
    out.push(`'${e.value.match}' ${parts.join(', ')} (${n})`);
  }
  return out;
}
