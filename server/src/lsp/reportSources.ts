// Which reports a plan's diagnostics and hovers use. A run started from the editor or the CLI
// writes `loftq-report.json` into its output folder, and an analysis may live anywhere; the
// server keeps the report files it has heard of and, per plan, takes the newest ones whose
// `checkpoint` is the plan's checkpoint: the analysed widths from the newest analysis, the
// per-matrix numbers of the files as written from the newest quantize run.

import type { Report } from '../protocol/lsp_ext';
import type { ReportFacts } from './facts';
import { indexReport } from '../planInsight/reportIndex';

export interface ReportFile {
  file: string;
  mtimeMs: number;
  report?: Report;
  /** Real path of the checkpoint the report names. */
  checkpointReal?: string;
  missing?: boolean;
  problem?: string;
}

/** Bounds what a long session remembers; the oldest entries go first. */
const MAX_KNOWN = 2000;

export class KnownReports {
  private set = new Set<string>();

  add(file: string): void {
    this.set.delete(file);
    this.set.add(file);
    if (this.set.size > MAX_KNOWN) this.set.delete(this.set.values().next().value!);
  }

  files(): string[] {
    return [...this.set];
  }
}

/** One index from several reports of the same checkpoint (readable ones only). */
export function chooseReports(files: ReportFile[]): ReportFacts {
  const usable = files.filter((f) => f.report).sort((a, b) => b.mtimeMs - a.mtimeMs);
  if (!usable.length) return {};
  const analysis = usable.find((f) => f.report!.analyses?.length);
  const run = usable.find((f) => !f.report!.analyses?.length && f.report!.matrices.length);
  const newest = usable[0];
  const base = analysis ?? newest;
  const merged: Report = {
    ...base.report!,
    analyses: analysis?.report!.analyses,
    matrices: (run ?? base).report!.matrices,
  };
  const sources = [run, analysis]
    .filter((f): f is ReportFile => !!f)
    .sort((a, b) => b.mtimeMs - a.mtimeMs)
    .map((f) => f.file);
  return { report: indexReport(merged), sources: sources.length ? [...new Set(sources)] : [newest.file] };
}
