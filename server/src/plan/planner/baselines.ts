// The two plans the planner is compared against, at the same budget and default rank:
//   uniform  every matrix at the largest single bit width that fits;
//   firstK   the LoftQ paper's rule: the first k transformer layers at `hi` bits (4), the
//            rest — and matrices outside numbered layers — at `lo` bits (2); largest k that fits.

import type { MatrixTable } from './table';

export interface Baseline {
  /** Index into each table's choices. */
  pick: number[];
  bytes: number;
  error: number;
}

/** The transformer layer a tensor belongs to: the first all-digit segment of its name. */
export function layerIndex(name: string): number | null {
  const m = /(?:^|\.)(\d+)(?:\.|$)/.exec(name);
  return m ? Number(m[1]) : null;
}

function pickAt(tables: MatrixTable[], bitsOf: (t: MatrixTable) => number, rank: number): Baseline | null {
  const pick: number[] = [];
  let bytes = 0,
    error = 0;
  for (const t of tables) {
    const b = bitsOf(t);
    const j = t.choices.findIndex((c) => c.bits === b && c.rank === rank);
    if (j < 0) return null;
    pick.push(j);
    bytes += t.choices[j].bytes;
    error += t.choices[j].error;
  }
  return { pick, bytes, error };
}

export function uniformBaseline(
  tables: MatrixTable[],
  budget: number,
  rank: number,
): (Baseline & { bits: number }) | null {
  const widths = [...new Set(tables.flatMap((t) => t.choices.map((c) => c.bits)))].sort((a, b) => b - a);
  for (const bits of widths) {
    const p = pickAt(tables, () => bits, rank);
    if (p && p.bytes <= budget) return { ...p, bits };
  }
  return null;
}

export function firstKBaseline(
  tables: MatrixTable[],
  budget: number,
  rank: number,
  hi = 4,
  lo = 2,
): (Baseline & { k: number }) | null {
  const layers = [...new Set(tables.map((t) => layerIndex(t.name)).filter((l): l is number => l !== null))].sort(
    (a, b) => a - b,
  );
  for (let k = layers.length; k >= 0; k--) {
    const first = new Set(layers.slice(0, k));
    const p = pickAt(
      tables,
      (t) => {
        const l = layerIndex(t.name);
        return l !== null && first.has(l) ? hi : lo;
      },
      rank,
    );
    if (p && p.bytes <= budget) return { ...p, k };
  }
  return null;
}

/** The rank baselines use: `preferred` when every table offers it, else the largest offered rank below it, else
 *  the smallest. */
export function baselineRank(tables: MatrixTable[], preferred: number): number {
  const common = [...new Set(tables.flatMap((t) => t.choices.map((c) => c.rank)))]
    .filter((r) => tables.every((t) => t.choices.some((c) => c.rank === r)))
    .sort((a, b) => a - b);
  if (!common.length) return preferred;
  if (common.includes(preferred)) return preferred;
  const below = common.filter((r) => r < preferred);
  return below.length ? below[below.length - 1] : common[0];
}
