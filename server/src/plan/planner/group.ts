// Plan choices → readable plan-file overrides: matrices that differ only in their layer
// number and share a choice become one `{a..b}` range, e.g. `model.layers.{0..3}.mlp.down_proj`;
// modules of the same layer range and choice are merged as `{self_attn.q_proj,mlp.up_proj}`.
// Every pattern matches exactly the matrices it names (globs are anchored), so applying the
// overrides in any order reproduces the plan.

import type { PlanOverride } from '../../protocol/lsp_ext';
import { moduleName } from '../glob';

export interface NamedChoice {
  name: string;
  bits: number;
  rank: number;
}

interface Split {
  prefix: string;
  index: number | null;
  suffix: string;
}

/** `model.layers.12.mlp.up_proj` → prefix `model.layers.`, index 12, suffix `mlp.up_proj`. */
function split(mod: string): Split {
  const m = /^(.*?(?:^|\.))(\d+)(?:\.(.*))?$/.exec(mod);
  if (!m) return { prefix: mod, index: null, suffix: '' };
  return { prefix: m[1], index: Number(m[2]), suffix: m[3] ?? '' };
}

const rangeText = (a: number, b: number) => (a === b ? String(a) : `{${a}..${b}}`);
const alternatives = (xs: string[]) => (xs.length === 1 ? xs[0] : `{${xs.join(',')}}`);

export function groupOverrides(choices: NamedChoice[], skip?: { bits: number; rank: number }): PlanOverride[] {
  const keep = choices.filter((c) => !skip || c.bits !== skip.bits || c.rank !== skip.rank);
  const plain: PlanOverride[] = [];
  // (prefix, suffix, choice) → layer indices
  const series = new Map<string, { prefix: string; suffix: string; bits: number; rank: number; idx: number[] }>();
  for (const c of keep) {
    const s = split(moduleName(c.name));
    if (s.index === null) {
      plain.push({ match: moduleName(c.name), bits: c.bits, rank: c.rank });
      continue;
    }
    const key = JSON.stringify([s.prefix, s.suffix, c.bits, c.rank]);
    let e = series.get(key);
    if (!e) series.set(key, (e = { prefix: s.prefix, suffix: s.suffix, bits: c.bits, rank: c.rank, idx: [] }));
    e.idx.push(s.index);
  }
  // runs of consecutive layer numbers
  const runs = new Map<
    string,
    { prefix: string; a: number; b: number; bits: number; rank: number; suffixes: string[] }
  >();
  for (const e of series.values()) {
    const idx = [...new Set(e.idx)].sort((x, y) => x - y);
    for (let i = 0; i < idx.length;) {
      let j = i;
      while (j + 1 < idx.length && idx[j + 1] === idx[j] + 1) j++;
      const key = JSON.stringify([e.prefix, idx[i], idx[j], e.bits, e.rank, e.suffix === '']);
      let r = runs.get(key);
      if (!r) runs.set(key, (r = { prefix: e.prefix, a: idx[i], b: idx[j], bits: e.bits, rank: e.rank, suffixes: [] }));
      r.suffixes.push(e.suffix);
      i = j + 1;
    }
  }
  const grouped = [...runs.values()]
    .sort((x, y) => x.prefix.localeCompare(y.prefix) || x.a - y.a || x.b - y.b || x.bits - y.bits || x.rank - y.rank)
    .map((r) => {
      const sfx = r.suffixes.sort();
      const tail = sfx[0] === '' ? '' : `.${alternatives(sfx)}`;
      return { match: `${r.prefix}${rangeText(r.a, r.b)}${tail}`, bits: r.bits, rank: r.rank };
    });
  return [...grouped, ...plain.sort((x, y) => x.match.localeCompare(y.match))];
}

/** The most common (bits, rank) pair — the plan file's defaults absorb it. */
export function mostCommon(choices: NamedChoice[]): { bits: number; rank: number } | undefined {
  const count = new Map<string, number>();
  let best: string | undefined,
    n = 0;
  for (const c of choices) {
    const k = `${c.bits}/${c.rank}`;
    const v = (count.get(k) ?? 0) + 1;
    count.set(k, v);
    if (v > n) {
      n = v;
      best = k;
    }
  }
  if (!best) return undefined;
  const [bits, rank] = best.split('/').map(Number);
  return { bits, rank };
}
