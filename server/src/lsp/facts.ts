// What a plan refers to on disk — its checkpoint's header and the report next to it —
// cached by file stamp (mtime + size), so re-computing diagnostics on each keystroke or
// file event costs a few stat calls, and a changed file is re-read even without watchers.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, INDEX_FILE, openCheckpoint, readRegularFile } from '../checkpoint';
import type { PlanFile } from '../protocol/lsp_ext';
import { resolveCheckpointPath } from '../plan/planfile';
import type { CheckpointFacts } from './planDoc';
import { indexReport, isReport, ReportIndex } from './reportIndex';

export const REPORT_FILE = 'loftq-report.json';
/** Reports of the largest models are a few MB; this bounds what a hostile one costs. */
export const MAX_REPORT_BYTES = 100_000_000;

async function stamp(...files: string[]): Promise<string> {
  const parts = await Promise.all(files.map((f) => fsp.stat(f).then((s) => `${s.mtimeMs}:${s.size}:${s.isDirectory()}`, () => '-')));
  return parts.join('|');
}

export function checkpointMessage(given: string, resolved: string, e: unknown): string {
  if (e instanceof CheckpointError) return e.file === resolved ? `checkpoint '${given}' ${e.problem}` : `checkpoint '${given}': ${e.message}`;
  return `checkpoint '${given}' cannot be read: ${(e as Error).message ?? String(e)}`;
}

export interface ReportFacts {
  report?: ReportIndex;
  problem?: string;
}

export class FactsCache {
  private checkpoints = new Map<string, { stamp: string; facts: Promise<CheckpointFacts> }>();
  private reports = new Map<string, { stamp: string; facts: Promise<ReportFacts> }>();

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

  async report(planPath: string): Promise<ReportFacts> {
    const file = path.join(path.dirname(planPath), REPORT_FILE);
    const st = await stamp(file);
    const hit = this.reports.get(file);
    if (hit && hit.stamp === st) return hit.facts;
    const facts = readReportFacts(file);
    this.reports.set(file, { stamp: st, facts });
    return facts;
  }

  clear(): void {
    this.checkpoints.clear();
    this.reports.clear();
  }
}

async function readReportFacts(file: string): Promise<ReportFacts> {
  let text: string;
  try {
    // Regular files only, bounded: a FIFO report must not block diagnostics.
    text = new TextDecoder().decode(await readRegularFile(file, MAX_REPORT_BYTES));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    if (e instanceof CheckpointError) return { problem: `${REPORT_FILE} ${e.problem}` };
    return { problem: `${REPORT_FILE} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return { problem: `${REPORT_FILE} is not valid JSON (${(e as Error).message})` };
  }
  if (!isReport(json)) return { problem: `${REPORT_FILE} is not a loftq report (version 1 with a 'matrices' list)` };
  return { report: indexReport(json) };
}
