// Formats the bench's per-case rows and the summary line.

import type { BenchCase } from './cases';
import type { EngineResult } from './engine';
import type { RefResult } from './reference';

export interface CaseRow {
  case: BenchCase;
  ours: EngineResult;
  ref?: RefResult;
  /** Why there is no reference figure. */
  refMissing?: string;
  speedRatio?: number;
  errorRatio?: number;
}

/** Goals of the engine issue: ≥ 20× faster than the reference, error ratio ≤ 1.005. */
export const SPEED_GOAL = 20;
export const ERROR_GOAL = 1.005;

export function makeRow(c: BenchCase, ours: EngineResult, ref?: RefResult, refMissing?: string): CaseRow {
  const row: CaseRow = { case: c, ours, ref, refMissing };
  if (ref) {
    row.speedRatio = ref.seconds / ours.seconds;
    row.errorRatio = ours.relErrorPerIter[ours.relErrorPerIter.length - 1] / ref.rel_err[ref.rel_err.length - 1];
  }
  return row;
}

const COLS = ['case', 'ours s', 'ref s', 'speed×', 'ours err', 'ref err', 'err ratio', 'GFLOP/s', 'ref from'];
const WIDTHS = [26, 8, 9, 8, 9, 9, 10, 8, 10];
const pad = (s: string, w: number, left = false) => (left ? s.padEnd(w) : s.padStart(w));

export function headerLine(): string {
  return COLS.map((c, i) => pad(c, WIDTHS[i], i === 0)).join(' ');
}

export function rowLine(r: CaseRow): string {
  const last = (a: number[]) => a[a.length - 1];
  const cells = [
    r.case.id,
    r.ours.seconds.toFixed(2),
    r.ref ? r.ref.seconds.toFixed(1) : '—',
    r.speedRatio !== undefined ? r.speedRatio.toFixed(1) : '—',
    last(r.ours.relErrorPerIter).toFixed(5),
    r.ref ? last(r.ref.rel_err).toFixed(5) : '—',
    r.errorRatio !== undefined ? r.errorRatio.toFixed(4) : '—',
    r.ours.gflops !== null ? r.ours.gflops.toFixed(1) : '—',
    refFrom(r),
  ];
  return cells.map((c, i) => pad(c, WIDTHS[i], i === 0 || i === 8)).join(' ');
}

function refFrom(r: CaseRow): string {
  if (!r.ref) return r.refMissing ?? '—';
  return r.ref.source === 'cache' ? `cache ${r.ref.measuredAt.slice(0, 10)}` : 'this run';
}

export function summaryLines(rows: CaseRow[]): string[] {
  const withRef = rows.filter((r) => r.speedRatio !== undefined);
  if (!withRef.length) return [`${rows.length} case(s); no reference figures, so no ratios.`];
  const speeds = withRef.map((r) => r.speedRatio!);
  const errs = withRef.map((r) => r.errorRatio!);
  const geo = Math.exp(speeds.reduce((a, s) => a + Math.log(s), 0) / speeds.length);
  const slow = withRef.filter((r) => r.speedRatio! < SPEED_GOAL).map((r) => r.case.id);
  const worse = withRef.filter((r) => r.errorRatio! > ERROR_GOAL).map((r) => r.case.id);
  return [
    `speed ratio: min ${Math.min(...speeds).toFixed(1)}×, geometric mean ${geo.toFixed(1)}×, ` +
      `max ${Math.max(...speeds).toFixed(1)}× (goal ≥ ${SPEED_GOAL}×)` +
      (slow.length ? `; below goal: ${slow.join(', ')}` : '; every case meets it'),
    `error ratio: max ${Math.max(...errs).toFixed(4)} (goal ≤ ${ERROR_GOAL})` +
      (worse.length ? `; above goal: ${worse.join(', ')}` : '; every case meets it'),
  ];
}

/** `--phases`: our wall seconds per phase of one case. */
export function phaseLine(phases: Record<string, number>): string {
  return Object.entries(phases)
    .map(([k, v]) => `${k} ${v.toFixed(3)} s`)
    .join(', ');
}
