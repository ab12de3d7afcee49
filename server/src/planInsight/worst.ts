// From a report: per plan owner (each override, the defaults), the matrices it covers that
// are among the model's worst (the top TOP_SHARE by error, at the bits the plan gives them),
// their standing in the whole model, and what the next analysed width would buy. An owner
// none of whose matrices is among the worst gets no group: "worst" means the model's worst.
// Pure; feeds the diagnostics and the quick fixes. When the report has output errors
// ‖(W − Q − B·A)·S‖/‖W·S‖ (a calibrated run) for every matrix, "worst" is by output error —
// what the model's outputs feel — with the weight error beside it.

import { describeMatrices, formatBytes, formatErrorRange } from './describe';
import { MatrixPlan, Owner, ownerKey, PlanAssignment } from './planModel';
import { ErrorEntry, errorAt, ReportIndex } from './reportIndex';

/** Share of the model that counts as "the worst" (top 5% of matrices by error). */
export const TOP_SHARE = 0.05;

export interface WorstGroup {
  owner: Owner;
  bits: number;
  /** Tensor names of the worst matrices, worst first. */
  names: string[];
  errors: number[];
  /** Set when the ranking was by output error: the matrices' weight errors (errors are output errors then). */
  weightErrors?: number[];
  /** Smallest top-share percentage that contains all of them (1–100). */
  topPercent: number;
  /** The next analysed width with numbers for all of them. */
  better?: { bits: number; errors: number[]; extraBytes: number };
  message: string;
}

export function worstGroups(a: PlanAssignment, ix: ReportIndex): WorstGroup[] {
  const entries = a.matrices
    .filter((m) => !m.skipped)
    .map((m) => ({ m, entry: errorAt(ix, m.tensor.name, m.settings.bits) }))
    .filter((x): x is { m: MatrixPlan; entry: ErrorEntry } => x.entry !== undefined);
  const byOutput = entries.length > 0 && entries.every((x) => x.entry.outputRelError !== undefined);
  const scored = entries
    .map(({ m, entry }) => ({ m, e: byOutput ? entry.outputRelError! : entry.relError, w: entry.relError }))
    .sort((x, y) => y.e - x.e);
  if (!scored.length) return [];
  const rankOf = new Map(scored.map((x, i) => [x.m.tensor.name, i]));
  const topCount = Math.max(1, Math.ceil(TOP_SHARE * scored.length));
  const groups = new Map<string, { owner: Owner; members: typeof scored }>();
  for (const x of scored) {
    const k = ownerKey(x.m.bitsOwner);
    let g = groups.get(k);
    if (!g) groups.set(k, (g = { owner: x.m.bitsOwner, members: [] }));
    g.members.push(x);
  }
  const out: WorstGroup[] = [];
  for (const { owner, members } of groups.values()) {
    const worst = members.filter((x) => rankOf.get(x.m.tensor.name)! < topCount);
    if (!worst.length) continue;
    const bits = worst[0].m.settings.bits;
    const names = worst.map((x) => x.m.tensor.name);
    const errors = worst.map((x) => x.e);
    const lastRank = Math.max(...names.map((n) => rankOf.get(n)!));
    const topPercent = Math.min(100, Math.ceil((100 * (lastRank + 1)) / scored.length));
    const better = betterWidth(
      worst.map((x) => x.m),
      bits,
      ix,
    );
    const weightErrors = byOutput ? worst.map((x) => x.w) : undefined;
    const what = describeMatrices(names);
    let message = byOutput
      ? `${what}: ${bits}-bit output error ${formatErrorRange(errors)} ` +
        `(LoftQ weight error ${formatErrorRange(weightErrors!)}), ` +
        `top ${topPercent}% of the model by output error`
      : `${what}: ${bits}-bit LoftQ error ${formatErrorRange(errors)}, top ${topPercent}% of the model`;
    if (better) {
      const gives = `${byOutput ? 'weight error ' : ''}${formatErrorRange(better.errors)}`;
      message += `; ${better.bits}-bit gives ${gives} for +${formatBytes(better.extraBytes)}`;
    }
    out.push({ owner, bits, names, errors, ...(weightErrors ? { weightErrors } : {}), topPercent, better, message });
  }
  return out;
}

function betterWidth(ms: MatrixPlan[], bits: number, ix: ReportIndex): WorstGroup['better'] {
  for (const b of ix.bits) {
    if (b <= bits) continue;
    const errs = ms.map((m) => errorAt(ix, m.tensor.name, b)?.relError);
    if (errs.some((e) => e === undefined)) continue;
    const extraBytes = ms.reduce((s, m) => s + Math.ceil((m.tensor.parameters * (b - bits)) / 8), 0);
    return { bits: b, errors: errs as number[], extraBytes };
  }
  return undefined;
}

export interface ModelSummary {
  matrices: number;
  withErrors: number;
  meanError?: number;
}

export function meanError(a: PlanAssignment, ix: ReportIndex): ModelSummary {
  const live = a.matrices.filter((m) => !m.skipped);
  const errs = live
    .map((m) => errorAt(ix, m.tensor.name, m.settings.bits)?.relError)
    .filter((e): e is number => e !== undefined);
  return {
    matrices: live.length,
    withErrors: errs.length,
    meanError: errs.length ? errs.reduce((s, e) => s + e, 0) / errs.length : undefined,
  };
}
