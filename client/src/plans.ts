// Finding the loftq.json plan that belongs to a checkpoint, and the settings a run starts
// from: workspace/folder settings (read for the checkpoint's resource), then the plan's defaults.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { parsePlan, resolveCheckpointPath } from '../../server/src/plan/planfile';
import type { MatrixSettings, PlanFile, Quantizer } from '../../server/src/protocol/lsp_ext';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/lsp_ext';

export const PLAN_FILE = 'loftq.json';

export interface FoundPlan {
  file: string;
  plan: PlanFile;
}

function samePath(a: string, b: string): boolean {
  return path.resolve(a).replace(/[\\/]+$/, '') === path.resolve(b).replace(/[\\/]+$/, '');
}

/** Folders where a plan for `checkpoint` may live: its own folder upward, to the workspace folder (or 3 levels). */
function candidateFolders(checkpoint: string): string[] {
  const ws = vscode.workspace.getWorkspaceFolder(vscode.Uri.file(checkpoint))?.uri.fsPath;
  const out: string[] = [];
  let d = fs.existsSync(checkpoint) && fs.statSync(checkpoint).isDirectory() ? checkpoint : path.dirname(checkpoint);
  for (let i = 0; i < 8; i++) {
    out.push(d);
    if ((ws && samePath(d, ws)) || (!ws && i >= 3)) break;
    const up = path.dirname(d);
    if (up === d) break;
    d = up;
  }
  for (const f of vscode.workspace.workspaceFolders ?? []) if (!out.some((o) => samePath(o, f.uri.fsPath))) out.push(f.uri.fsPath);
  return out;
}

/** The nearest loftq.json whose `checkpoint` resolves to this checkpoint. */
export function findPlanFor(checkpoint: string): FoundPlan | undefined {
  for (const dir of candidateFolders(checkpoint)) {
    const file = path.join(dir, PLAN_FILE);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    const { plan } = parsePlan(text);
    if (plan.checkpoint && samePath(resolveCheckpointPath(file, plan), checkpoint)) return { file, plan };
  }
  return undefined;
}

/** Settings for a new run: the `loftq.defaults.*` settings for this resource, then the plan's defaults. */
export function startingSettings(checkpoint: vscode.Uri, plan?: FoundPlan): MatrixSettings {
  const cfg = vscode.workspace.getConfiguration('loftq', checkpoint);
  const s: MatrixSettings = {
    bits: cfg.get<number>('defaults.bits', DEFAULT_SETTINGS.bits),
    rank: cfg.get<number>('defaults.rank', DEFAULT_SETTINGS.rank),
    iters: cfg.get<number>('defaults.iters', DEFAULT_SETTINGS.iters),
    quantizer: cfg.get<Quantizer>('defaults.quantizer', DEFAULT_SETTINGS.quantizer),
    blockSize: DEFAULT_SETTINGS.blockSize,
  };
  return { ...s, ...(plan?.plan.defaults ?? {}) };
}
