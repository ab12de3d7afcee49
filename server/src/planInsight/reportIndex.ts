// The errors a report knows, per matrix and bit width: a `loftq quantize` report gives
// one width per matrix, a `loftq analyze` report one column per analysed width.

import type { Report } from '../protocol/lsp_ext';

export interface ErrorEntry {
  relError: number;
  qloraRelError: number;
  /** ‖(W − Q − B·A)·S‖/‖W·S‖ with calibration statistics, when the run had them. */
  outputRelError?: number;
  rank: number;
  iters: number;
}

export interface ReportIndex {
  /** tensor name → bits → errors. */
  byName: Map<string, Map<number, ErrorEntry>>;
  /** Every bit width present, ascending. */
  bits: number[];
  raw: Report;
}

export function indexReport(report: Report): ReportIndex {
  const byName = new Map<string, Map<number, ErrorEntry>>();
  const widths = new Set<number>();
  const put = (name: string, bits: number, e: ErrorEntry) => {
    if (!Number.isFinite(e.relError)) return;
    let m = byName.get(name);
    if (!m) byName.set(name, (m = new Map()));
    m.set(bits, e);
    widths.add(bits);
  };
  // A calibrated run or analysis measured output errors too: the worst are then ranked by them, as the planner plans.
  const entry = (
    m: { relError: number; qloraRelError: number; outputRelError?: number },
    rank: number,
    iters: number,
  ): ErrorEntry => ({
    relError: m.relError,
    qloraRelError: m.qloraRelError,
    rank,
    iters,
    ...(Number.isFinite(m.outputRelError) ? { outputRelError: m.outputRelError } : {}),
  });
  for (const a of report.analyses ?? []) for (const m of a.matrices) put(m.name, a.bits, entry(m, a.rank, a.iters));
  // A quantize run's own numbers describe the files as written: they win over an analysis.
  for (const m of report.matrices ?? []) if (!m.skipped) put(m.name, m.bits, entry(m, m.rank, m.iters));
  return { byName, bits: [...widths].sort((a, b) => a - b), raw: report };
}

export function errorAt(ix: ReportIndex, name: string, bits: number): ErrorEntry | undefined {
  return ix.byName.get(name)?.get(bits);
}

/** Loose structural check of a parsed `loftq-report.json`. */
export function isReport(x: unknown): x is Report {
  const r = x as Report;
  return !!r && typeof r === 'object' && r.version === 1 && Array.isArray(r.matrices);
}
