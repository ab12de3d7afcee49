// The NF4 reload at load time, per plan entry: a quantize report next to the plan gives
// each matrix's error after bitsandbytes re-quantizes the stored backbone to NF4
// (nf4ReloadRelError); reloadWarnings (plan/planner/reload.ts) decides which changed.

import { reloadWarnings } from '../plan/planner/reload';
import type { MatrixReport } from '../protocol/lsp_ext';
import { Owner, ownerKey, PlanAssignment } from './planModel';

export interface ReloadGroup {
  /** The entry that decides these matrices' bits. */
  owner: Owner;
  names: string[];
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
    const blocks = hit.some((r) => r.blockSize !== 64) ? ` in blocks of ${uniq(hit.map((r) => r.blockSize))}` : '';
    const what = hit.length === 1 ? 'this matrix' : `these ${hit.length} matrices`;
    const bits = uniq(hit.map((r) => r.bits));
    const quantizers = uniq(hit.map((r) => (r.quantizer === 'nf' ? 'NF' : r.quantizer)));
    const trend = after >= before ? 'rises' : 'falls';
    const average = hit.length === 1 ? '' : ' on average';
    const message =
      `${bits}-bit ${quantizers} values${blocks} do not lie on the NF4 grid (block 64): ` +
      `after bitsandbytes' NF4 reload at load time the error of ${what} ${trend} from ${b} to ${c}${average}`;
    return { owner, names: hit.map((r) => r.name), message };
  });
}

/** Both numbers with as few decimals (2…4) as tell them apart. */
export function distinct(x: number, y: number): [string, string] {
  for (let d = 2; d < 4; d++) if (x.toFixed(d) !== y.toFixed(d)) return [x.toFixed(d), y.toFixed(d)];
  return [x.toFixed(4), y.toFixed(4)];
}
