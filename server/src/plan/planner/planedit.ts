// Writes a plan into the plan-file text (`loftq.json`, JSON with comments) with small
// layout-keeping edits (jsonedit.ts), so comments, formatting and unrelated keys stay. Pure: text in,
// text (or one minimal edit) out — the CLI's --out and the language server's code action
// share it.
//
// The plan owns `bits` and `rank` of every planned matrix: earlier overrides that only set
// match/bits/rank are removed, `bits`/`rank` are dropped from other overrides (their other
// keys stay), `defaults` take the most common choice, and grouped overrides for the rest
// are appended; `budget` records the budget planned for.

import type { Node } from 'jsonc-parser';
import type { PlanBudget } from '../../protocol/lsp_ext';
import { groupOverrides, mostCommon, NamedChoice } from './group';
import { appendItems, nodeAt, removeItem, removeMember, setMember } from './jsonedit';

const PLAN_KEYS = new Set(['match', 'bits', 'rank']);

export function applyPlanToText(text: string, choices: NamedChoice[], budget?: PlanBudget): string {
  const root = nodeAt(text, []);
  if (!root || root.type !== 'object') throw new Error('the plan file must hold a JSON object');
  let out = text;
  const existing = nodeAt(out, ['overrides']);
  if (existing?.type === 'array') {
    const items = existing.children ?? [];
    for (let i = items.length - 1; i >= 0; i--) {
      const item: Node = items[i];
      if (item.type !== 'object') continue;
      const keys = (item.children ?? []).map((p) => p.children?.[0]?.value as string);
      if (!keys.includes('bits') && !keys.includes('rank')) continue;
      if (keys.every((k) => PLAN_KEYS.has(k))) out = removeItem(out, ['overrides'], i);
      else for (const k of ['rank', 'bits']) if (keys.includes(k)) out = removeMember(out, ['overrides', i, k]);
    }
  }
  const common = mostCommon(choices);
  if (common) {
    out = setMember(out, ['defaults', 'bits'], common.bits);
    out = setMember(out, ['defaults', 'rank'], common.rank);
  }
  if (existing?.type !== 'array') out = setMember(out, ['overrides'], []);
  const overrides = groupOverrides(choices, common);
  if (overrides.length) out = appendItems(out, ['overrides'], overrides);
  if (budget)
    out = setMember(
      out,
      ['budget'],
      budget.bytes !== undefined ? { bytes: budget.bytes } : { avgBits: budget.avgBits },
    );
  return out;
}
