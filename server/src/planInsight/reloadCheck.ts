// The NF4 reload at load time, per plan entry: a quantize report next to the plan gives
// each matrix's error after bitsandbytes re-quantizes the stored backbone to NF4
// (nf4ReloadRelError); reloadWarnings (plan/planner/reload.ts) decides which changed.
// An error that rises needs action (a width that survives the reload, or an HQQ export that
// loads at the planned bits); one that falls is only information.

import { reloadWarnings, survivesNf4Reload } from '../plan/planner/reload';
import type { MatrixReport } from '../protocol/lsp_ext';
import { describeMatrices } from './describe';
import { Owner, ownerKey, PlanAssignment } from './planModel';

/** NF widths that load unchanged after the NF4 reload (in blocks of RELOAD_BLOCK), widest first. */
export const RELOAD_SAFE_BITS = [4, 2].filter((b) => survivesNf4Reload(b, 'nf', 64));
export const RELOAD_BLOCK = 64;

export interface ReloadGroup {
  /** The entry that decides these matrices' bits. */
  owner: Owner;
  names: string[];
  /** The planned widths of these matrices (one per entry, as a rule). */
  bits: number[];
  /** Mean LoftQ error as written and after the reload. */
  before: number;
  after: number;
  /** The reload makes the error larger: worth acting on. Smaller: information only. */
  rises: boolean;
  message: string;
}

/** The plan's entries whose matrices change on reload, by the report's `matrices`. */
export function reloadGroups(a: PlanAssignment | null, matrices: MatrixReport[]): ReloadGroup[] {
  if (!a || !matrices.length) return [];
  const plan = new Map(a.matrices.map((m) => [m.tensor.name, m]));
  const groups = new Map<string, { owner: Owner; hit: typeof matrices }>();
  for (const r of matrices) {
    if (!reloadWarnings([r]).length) continue;
    const m = plan.get(r.name);
    // A report from other settings than the plan's now says nothing about this entry.
    if (
      !m ||
      m.skipped ||
      m.settings.bits !== r.bits ||
      m.settings.quantizer !== r.quantizer ||
      m.settings.blockSize !== r.blockSize
    )
      continue;
    const k = ownerKey(m.bitsOwner);
    const g = groups.get(k) ?? { owner: m.bitsOwner, hit: [] };
    g.hit.push(r);
    groups.set(k, g);
  }
  return [...groups.values()].map(({ owner, hit }) => {
    const uniq = <T>(xs: T[]) => [...new Set(xs)].join('/');
    const before = hit.reduce((s, r) => s + r.relError, 0) / hit.length;
    const after = hit.reduce((s, r) => s + r.nf4ReloadRelError!, 0) / hit.length;
    const [b, c] = distinct(before, after);
    const rises = after > before;
    const blocks = hit.some((r) => r.blockSize !== RELOAD_BLOCK)
      ? ` in blocks of ${uniq(hit.map((r) => r.blockSize))}`
      : '';
    const what = hit.length === 1 ? describeMatrices(hit.map((r) => r.name)) : `these ${hit.length} matrices`;
    const bits = [...new Set(hit.map((r) => r.bits))].sort((x, y) => x - y);
    const quantizers = uniq(hit.map((r) => (r.quantizer === 'nf' ? 'NF' : r.quantizer)));
    const change = `${rises ? '+' : '−'}${Math.abs((100 * (after - before)) / before).toFixed(0)}%`;
    const average = hit.length === 1 ? '' : ' on average';
    const why =
      `${bits.join('/')}-bit ${quantizers} values${blocks} are not on the NF4 grid (block 64) to which bitsandbytes ` +
      're-quantizes the stored backbone when the model is loaded in 4 bits';
    const message = rises
      ? `${why}: after loading, the error of ${what} rises from ${b} to ${c}${average} (${change}). ` +
        `NF${RELOAD_SAFE_BITS.join('/NF')} in blocks of 64 load unchanged; "format": "hqq" loads at the planned bits`
      : `${why}: after loading, the error of ${what} falls from ${b} to ${c}${average} (${change}) — ` +
        'nothing to do, the reloaded weights are closer to the original';
    return { owner, names: hit.map((r) => r.name), bits, before, after, rises, message };
  });
}

/** Both numbers with as few decimals (2…4) as tell them apart. */
export function distinct(x: number, y: number): [string, string] {
  for (let d = 2; d < 4; d++) if (x.toFixed(d) !== y.toFixed(d)) return [x.toFixed(d), y.toFixed(d)];
  return [x.toFixed(4), y.toFixed(4)];
}
