// Finds plan files in the workspace folders at startup so their diagnostics show in the
// Problems panel before anyone opens them, and the reports of earlier runs and analyses so
// those diagnostics use them from the start. Bounded: skips dependency/VCS folders, stops at
// a depth and an entry count, never follows symlinks.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { REPORT_FILE } from './facts';

export const PLAN_FILE = 'loftq.json';
const SKIP = new Set(['node_modules', '.git', '.hg', '.svn', '.venv', 'venv', '__pycache__', '.vscode-test']);
const MAX_DEPTH = 8;
const MAX_ENTRIES = 50_000;

export interface WorkspaceFiles {
  plans: string[];
  reports: string[];
}

export async function scanWorkspace(roots: string[]): Promise<WorkspaceFiles> {
  const found: WorkspaceFiles = { plans: [], reports: [] };
  let seen = 0;
  const walk = async (dir: string, depth: number): Promise<void> => {
    if (depth > MAX_DEPTH || seen > MAX_ENTRIES) return;
    let entries;
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    seen += entries.length;
    for (const e of entries) {
      if (e.isFile() && e.name === PLAN_FILE) found.plans.push(path.join(dir, e.name));
      else if (e.isFile() && e.name === REPORT_FILE) found.reports.push(path.join(dir, e.name));
      else if (e.isDirectory() && !SKIP.has(e.name) && !e.name.startsWith('.'))
        await walk(path.join(dir, e.name), depth + 1);
    }
  };
  for (const r of roots) await walk(r, 0);
  found.plans.sort();
  found.reports.sort();
  return found;
}
