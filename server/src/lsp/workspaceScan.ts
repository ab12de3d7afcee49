// Finds plan files in the workspace folders at startup so their diagnostics show in the
// Problems panel before anyone opens them. Bounded: skips dependency/VCS/output folders,
// stops at a depth and an entry count, never follows symlinks.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

export const PLAN_FILE = 'loftq.json';
const SKIP = new Set(['node_modules', '.git', '.hg', '.svn', '.venv', 'venv', '__pycache__', '.vscode-test']);
const MAX_DEPTH = 8;
const MAX_ENTRIES = 50_000;

export async function findPlanFiles(roots: string[]): Promise<string[]> {
  const found: string[] = [];
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
      if (e.isFile() && e.name === PLAN_FILE) found.push(path.join(dir, e.name));
      else if (e.isDirectory() && !SKIP.has(e.name) && !e.name.startsWith('.')) await walk(path.join(dir, e.name), depth + 1);
    }
  };
  for (const r of roots) await walk(r, 0);
  return found.sort();
}
