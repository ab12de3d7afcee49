// What a plan refers to on disk — its checkpoint's header and the reports about that
// checkpoint — cached by file stamp (mtime + size), so re-computing diagnostics on each
// keystroke or file event costs a few stat calls, and a changed file is re-read even without
// watchers. A run writes its report into its output folder, not next to the plan, so the
// cache also keeps the reports it has heard of (reportSources.ts picks among them).

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, INDEX_FILE, openCheckpoint, readRegularFile } from '../checkpoint';
import type { PlanFile } from '../protocol/lsp_ext';
import { resolveCheckpointPath } from '../plan/planfile';
import type { CheckpointFacts } from './planDoc';
import { isReport, ReportIndex } from '../planInsight/reportIndex';
import { chooseReports, KnownReports, ReportFile } from './reportSources';

export const REPORT_FILE = 'loftq-report.json';
/** Reports of the largest models are a few MB; this bounds what a hostile one costs. */
export const MAX_REPORT_BYTES = 100_000_000;

async function stamp(...files: string[]): Promise<string> {
  const parts = await Promise.all(
    files.map((f) =>
      fsp.stat(f).then(
        (s) => `${s.mtimeMs}:${s.size}:${s.isDirectory()}`,
        () => '-',
      ),
    ),
  );
  return parts.join('|');
}

export function checkpointMessage(given: string, resolved: string, e: unknown): string {
  if (e instanceof CheckpointError)
    return e.file === resolved ? `checkpoint '${given}' ${e.problem}` : `checkpoint '${given}': ${e.message}`;
  return `checkpoint '${given}' cannot be read: ${(e as Error).message ?? String(e)}`;
}

export interface ReportFacts {
  report?: ReportIndex;
  problem?: string;
  /** The report files the index was built from, newest first. */
  sources?: string[];
}

export class FactsCache {
  private checkpoints = new Map<string, { stamp: string; facts: Promise<CheckpointFacts> }>();
  private reports = new Map<string, { stamp: string; facts: Promise<ReportFile> }>();

  async checkpoint(planPath: string, plan: PlanFile): Promise<CheckpointFacts> {
    const resolved = resolveCheckpointPath(planPath, plan);
    const key = `${resolved}\0${plan.checkpoint}`;
    const st = await stamp(resolved, path.join(resolved, INDEX_FILE), path.join(resolved, 'model.safetensors'));
    const hit = this.checkpoints.get(key);
    if (hit && hit.stamp === st) return hit.facts;
    const facts: Promise<CheckpointFacts> = openCheckpoint(resolved).then(
      (ck) => ({ ok: true, path: resolved, tensors: ck.tensors }),
      (e) => ({ ok: false, path: resolved, message: checkpointMessage(plan.checkpoint, resolved, e) }),
    );
    this.checkpoints.set(key, { stamp: st, facts });
    return facts;
  }

  /** Reports learned of: runs this server finished, watched files, `loftq/readReport`, the startup scan. */
  readonly known = new KnownReports();

  /** The reports for a plan: its `analysis` file when it names one, else the newest reports of its
   *  checkpoint among the one next to the plan and the known ones. */
  async report(planPath: string, plan: PlanFile): Promise<ReportFacts> {
    const dir = path.dirname(planPath);
    if (plan.analysis) {
      const file = path.resolve(dir, plan.analysis);
      const rf = await this.reportFile(file);
      if (rf.missing) return { problem: `analysis '${plan.analysis}' does not exist` };
      if (rf.problem) return { problem: `analysis '${plan.analysis}': ${rf.problem}` };
      return chooseReports([rf]);
    }
    const beside = await this.reportFile(path.join(dir, REPORT_FILE));
    const checkpoint = await realpathOr(resolveCheckpointPath(planPath, plan));
    const known = this.known.files().filter((f) => f !== beside.file);
    const others = await Promise.all(known.map((f) => this.reportFile(f)));
    const mine = others.filter((rf) => rf.report && rf.checkpointReal === checkpoint);
    // The report next to the plan counts whatever checkpoint path it names (a moved folder).
    const facts = chooseReports(beside.report ? [beside, ...mine] : mine);
    if (beside.problem && !beside.missing) facts.problem = `${REPORT_FILE} ${beside.problem}`;
    return facts;
  }

  private async reportFile(file: string): Promise<ReportFile> {
    const st = await stamp(file);
    const hit = this.reports.get(file);
    if (hit && hit.stamp === st) return hit.facts;
    const facts = readReportFile(file);
    this.reports.set(file, { stamp: st, facts });
    return facts;
  }

  clear(): void {
    this.checkpoints.clear();
    this.reports.clear();
  }
}

async function realpathOr(file: string): Promise<string> {
  return fsp.realpath(file).catch(() => path.resolve(file));
}

async function readReportFile(file: string): Promise<ReportFile> {
  let text: string;
  let mtimeMs = 0;
  try {
    mtimeMs = (await fsp.stat(file)).mtimeMs;
    // Regular files only, bounded: a FIFO report must not block diagnostics.
    text = new TextDecoder().decode(await readRegularFile(file, MAX_REPORT_BYTES));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { file, mtimeMs, missing: true };
    if (e instanceof CheckpointError) return { file, mtimeMs, problem: e.problem };
    return { file, mtimeMs, problem: `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return { file, mtimeMs, problem: `is not valid JSON (${(e as Error).message})` };
  }
  if (!isReport(json)) return { file, mtimeMs, problem: "is not a loftq report (version 1 with a 'matrices' list)" };
  const checkpointReal = typeof json.checkpoint === 'string' ? await realpathOr(json.checkpoint) : undefined;
  return { file, mtimeMs, report: json, checkpointReal };
}
