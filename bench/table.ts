// Formats the bench's per-case rows and the summary lines (speed and error against the
// reference; HQQ's grid against NF's in the same run).

import { sameSettings, type BenchCase } from './cases';
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

/** Issue 24's goals for LoftQ on HQQ's grid: within 1.1× the NF run's time on the same case in
 *  the same run; its error within ERROR_GOAL of the numpy HQQ reference's. */
export const HQQ_TIME_GOAL = 1.1;

export interface GridPair {
  /** e.g. "2048x2048 2-bit r64" */
  label: string;
  nf: CaseRow;
  hqq: CaseRow;
  /** HQQ's seconds / NF's (each the median of its runs). */
  timeRatio: number;
  /** HQQ's error / the numpy HQQ reference's (absent without a reference figure). */
  errorRatio?: number;
}

/** Each HQQ row with the NF row of the same shape, bits, rank and iterations in this run. */
export function gridPairs(rows: CaseRow[]): GridPair[] {
  const out: GridPair[] = [];
  for (const hqq of rows.filter((r) => r.case.quantizer === 'hqq')) {
    const nf = rows.find((r) => r.case.quantizer === 'nf' && sameSettings(r.case, hqq.case));
    if (!nf) continue;
    const c = hqq.case;
    out.push({
      label: `${c.rows}x${c.cols} ${c.bits}-bit r${c.rank}`,
      nf,
      hqq,
      timeRatio: hqq.ours.seconds / nf.ours.seconds,
      errorRatio: hqq.errorRatio,
    });
  }
  return out;
}

/** One line per pair and a verdict line: HQQ's time over NF's, its error over the reference's. */
export function gridPairLines(pairs: GridPair[]): string[] {
  if (!pairs.length) return [];
  const last = (a: number[]) => a[a.length - 1];
  const q = (r: CaseRow) => r.ours.phases.quantize;
  const lines = [
    `HQQ grid against NF, same run (goals: time ≤ ${HQQ_TIME_GOAL}× NF's; error ≤ ${ERROR_GOAL}× ` +
      `the numpy HQQ reference's):`,
  ];
  for (const p of pairs) {
    const quantize =
      q(p.hqq) !== undefined && q(p.nf) !== undefined
        ? ` (quantize phase ${q(p.hqq).toFixed(3)} s / ${q(p.nf).toFixed(3)} s)`
        : '';
    const err = p.hqq.ref
      ? `error ${last(p.hqq.ours.relErrorPerIter).toFixed(5)} / ref ${last(p.hqq.ref.rel_err).toFixed(5)} = ` +
        p.errorRatio!.toFixed(4)
      : `error ${last(p.hqq.ours.relErrorPerIter).toFixed(5)}, no reference (${p.hqq.refMissing ?? '—'})`;
    lines.push(
      `  ${p.label.padEnd(22)} HQQ ${p.hqq.ours.seconds.toFixed(2)} s / NF ${p.nf.ours.seconds.toFixed(2)} s = ` +
        `${p.timeRatio.toFixed(2)}×${quantize}; ${err}`,
    );
  }
  const times = pairs.map((p) => p.timeRatio);
  const slow = pairs.filter((p) => p.timeRatio > HQQ_TIME_GOAL).map((p) => p.label);
  const withRef = pairs.filter((p) => p.errorRatio !== undefined);
  const worse = withRef.filter((p) => p.errorRatio! > ERROR_GOAL).map((p) => p.label);
  const geo = Math.exp(times.reduce((a, t) => a + Math.log(t), 0) / times.length);
  lines.push(
    `HQQ/NF time: max ${Math.max(...times).toFixed(2)}×, geometric mean ${geo.toFixed(2)}× ` +
      `(goal ≤ ${HQQ_TIME_GOAL}×)` +
      (slow.length ? `; above goal: ${slow.join(', ')}` : '; every pair meets it') +
      (withRef.length
        ? `. HQQ error ratio: max ${Math.max(...withRef.map((p) => p.errorRatio!)).toFixed(4)} ` +
          `(goal ≤ ${ERROR_GOAL})` +
          (worse.length ? `; above goal: ${worse.join(', ')}` : '; every pair meets it')
        : '. HQQ error ratio: no reference figures'),
  );
  return lines;
}
