// Reading loftq-report.json files, and remembering which report belongs to which checkpoint
// (a run writes its report into the output folder, not next to the input).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as vscode from 'vscode';
import type { Report } from '../../server/src/protocol/lsp_ext';

export const REPORT_FILE = 'loftq-report.json';

/** Reads and sanity-checks a report; throws one line naming the file and the problem. */
export function readReport(file: string): Report {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `is not valid JSON (${(e as Error).message})`}`);
  }
  const r = raw as Partial<Report>;
  if (!r || r.version !== 1 || !Array.isArray(r.matrices)) throw new Error(`${file}: is not a loftq report (version 1 with a 'matrices' list)`);
  return r as Report;
}

const KEY = 'loftq.reportsByCheckpoint';

export class ReportIndex {
  constructor(private readonly state: vscode.Memento) {}

  remember(checkpoint: string, reportPath: string): void {
    const map = this.state.get<Record<string, string>>(KEY, {});
    map[path.resolve(checkpoint)] = reportPath;
    void this.state.update(KEY, map);
  }

  /** A report next to the file (it is a run's output), else the last run's report for it. */
  find(checkpoint: string): string | undefined {
    const beside = path.join(fs.statSync(checkpoint, { throwIfNoEntry: false })?.isDirectory() ? checkpoint : path.dirname(checkpoint), REPORT_FILE);
    if (fs.existsSync(beside)) return beside;
    const remembered = this.state.get<Record<string, string>>(KEY, {})[path.resolve(checkpoint)];
    return remembered && fs.existsSync(remembered) ? remembered : undefined;
  }
}
