// Multiple-choice knapsack: pick one choice per group, minimise Σ error s.t. Σ cost ≤ budget.
//
// Bounds, both proven:
//   lower  max of (a) the LP relaxation — greedy over the groups' lower convex hulls, the
//          critical step taken fractionally (equal to the Lagrangian dual) — and (b) a DP
//          whose costs are rounded DOWN to units of u bytes: every truly feasible pick stays
//          feasible there (Σ⌊c/u⌋ ≤ ⌊Σc/u⌋ ≤ ⌊B/u⌋), so its optimum is ≤ the true optimum;
//   upper  the best truly feasible pick among the hull greedy, the seeds, and the rounded-down
//          DP's picks backtracked from capacity ⌊B/u⌋ downwards until one truly fits (the DP
//          table holds the optimum for every capacity at once).
// When the slack (budget − cheapest plan) is at most `units` bytes, u = 1 and the DP is
// exact. Costs are offset by each group's cheapest choice so the units cover the slack only.
// With many groups the DP's rounding (up to one unit per group) makes it weaker than the LP
// bound; the default resolution spends a fixed amount of work (~2·10⁷ cell updates).

export interface Group {
  /** Integer costs (bytes). */
  costs: number[];
  errors: number[];
}

export interface Solution {
  pick: number[];
  cost: number;
  error: number;
  lowerBound: number;
  /** (upper − lower) / lower, ≥ 0; 0 means proven optimal. */
  gap: number;
}

export interface SolveOptions {
  /** DP resolution: the slack is split into at most this many units (default: 2·10⁷ / total choices, 256…65536). */
  units?: number;
  /** Known feasible picks (e.g. baselines); the result is never worse than any of them. */
  seeds?: number[][];
}

function undominated(g: Group): number[] {
  const idx = g.costs.map((_, j) => j).sort((a, b) => g.costs[a] - g.costs[b] || g.errors[a] - g.errors[b]);
  const keep: number[] = [];
  let best = Infinity;
  for (const j of idx)
    if (g.errors[j] < best) {
      keep.push(j);
      best = g.errors[j];
    }
  return keep;
}

function lowerHull(g: Group, cand: number[]): number[] {
  const h: number[] = [];
  const eff = (a: number, b: number) => (g.errors[a] - g.errors[b]) / (g.costs[b] - g.costs[a]);
  for (const j of cand) {
    while (h.length >= 2 && eff(h[h.length - 2], h[h.length - 1]) <= eff(h[h.length - 1], j)) h.pop();
    h.push(j);
  }
  return h;
}

/** LP-relaxation bound and the integer pick the same greedy reaches. */
function hullGreedy(groups: Group[], cand: number[][], slack: number) {
  const steps: { g: number; to: number; dc: number; de: number; eff: number }[] = [];
  const pick = cand.map((c) => c[0]);
  for (let i = 0; i < groups.length; i++) {
    const h = lowerHull(groups[i], cand[i]);
    for (let s = 1; s < h.length; s++) {
      const dc = groups[i].costs[h[s]] - groups[i].costs[h[s - 1]];
      const de = groups[i].errors[h[s - 1]] - groups[i].errors[h[s]];
      steps.push({ g: i, to: h[s], dc, de, eff: de / dc });
    }
  }
  steps.sort((a, b) => b.eff - a.eff || a.g - b.g);
  let err = pick.reduce((s, j, i) => s + groups[i].errors[j], 0);
  let cap = slack;
  let lp: number | undefined;
  const blocked = new Uint8Array(groups.length);
  for (const st of steps) {
    if (blocked[st.g]) continue;
    if (st.dc <= cap) {
      pick[st.g] = st.to;
      cap -= st.dc;
      err -= st.de;
      continue;
    }
    if (lp === undefined) lp = err - (st.de * cap) / st.dc;
    blocked[st.g] = 1;
  }
  return { lp: lp ?? err, pick };
}

function dp(groups: Group[], cand: number[][], offset: number[], unit: number, cap: number) {
  const n = groups.length,
    W = cap + 1;
  let prev = new Float64Array(W);
  let cur = new Float64Array(W);
  const choice = new Uint16Array(n * W);
  const w = cand.map((c, i) => c.map((j) => Math.floor((groups[i].costs[j] - offset[i]) / unit)));
  for (let i = 0; i < n; i++) {
    cur.fill(Infinity);
    const g = groups[i],
      row = i * W;
    for (let k = 0; k < cand[i].length; k++) {
      const wk = w[i][k];
      if (wk > cap) continue;
      const e = g.errors[cand[i][k]];
      for (let u = wk; u < W; u++) {
        const v = prev[u - wk] + e;
        if (v < cur[u]) {
          cur[u] = v;
          choice[row + u] = k;
        }
      }
    }
    [prev, cur] = [cur, prev];
  }
  const backtrack = (from: number) => {
    const pick = new Array<number>(n);
    let u = from;
    for (let i = n - 1; i >= 0; i--) {
      const k = choice[i * W + u];
      pick[i] = cand[i][k];
      u -= w[i][k];
    }
    return pick;
  };
  return { value: prev[cap], backtrack };
}

export function totals(groups: Group[], pick: number[]) {
  let cost = 0,
    error = 0;
  for (let i = 0; i < groups.length; i++) {
    cost += groups[i].costs[pick[i]];
    error += groups[i].errors[pick[i]];
  }
  return { cost, error };
}

/** The optimal pick within the reported gap, or null when even the cheapest pick exceeds the budget. */
export function solveMckp(groups: Group[], budget: number, opts: SolveOptions = {}): Solution | null {
  if (groups.some((g) => g.costs.length === 0 || g.costs.length !== g.errors.length))
    throw new RangeError('every group needs at least one choice');
  const cand = groups.map(undominated);
  const offset = cand.map((c, i) => groups[i].costs[c[0]]);
  const base = offset.reduce((s, c) => s + c, 0);
  if (base > budget) return null;
  const slack = Math.floor(budget - base);
  const work = groups.reduce((x, g) => x + g.costs.length, 0);
  const units = opts.units ?? Math.min(65536, Math.max(256, Math.floor(2e7 / work)));
  const unit = Math.max(1, Math.ceil(slack / units));
  const cap = Math.floor(slack / unit);

  const greedy = hullGreedy(groups, cand, slack);
  const down = dp(groups, cand, offset, unit, cap);
  const candidates = [greedy.pick, ...(opts.seeds ?? [])];
  for (let u = cap; u >= 0; u--) {
    const p = down.backtrack(u);
    candidates.push(p);
    if (totals(groups, p).cost <= budget) break;
  }
  let best: { pick: number[]; cost: number; error: number } | null = null;
  for (const p of candidates) {
    const t = totals(groups, p);
    if (t.cost <= budget && (!best || t.error < best.error)) best = { pick: [...p], ...t };
  }
  const lowerBound = Math.min(best!.error, Math.max(greedy.lp, down.value));
  const gap = best!.error > lowerBound ? (lowerBound > 0 ? (best!.error - lowerBound) / lowerBound : Infinity) : 0;
  return { ...best!, lowerBound, gap };
}
