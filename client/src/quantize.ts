// "Quantize with LoftQ": pick the checkpoint, ask for the settings, run `loftq/quantize` in
// the server with cancellable progress, then offer the heatmap, the output and the report.
// A run lost to a server crash is reported, never dropped silently.
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { LanguageClient, State, WorkDoneProgress, WorkDoneProgressBegin, WorkDoneProgressEnd, WorkDoneProgressReport } from 'vscode-languageclient/node';
import type { BackendChoice, QuantizeParams, QuantizeResult } from '../../server/src/protocol/lsp_ext';
import { Methods } from '../../server/src/protocol/lsp_ext';
import { findPlanFor, startingSettings } from './plans';
import { askOutFolder, askSettings, defaultOutFolder } from './quickPicks';
import type { ReportIndex } from './reports';
import type { LoftqStatus } from './statusBar';
import { VIEWER_VIEW_TYPE } from './viewer/provider';

export interface QuantizeDeps {
  client: () => LanguageClient | undefined;
  status: LoftqStatus;
  log: vscode.LogOutputChannel;
  reports: ReportIndex;
  openHeatmap(reportPath: string): void;
}

const INDEX = 'model.safetensors.index.json';

function isCheckpoint(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory() ? fs.existsSync(path.join(p, INDEX)) : p.endsWith('.safetensors');
  } catch {
    return false;
  }
}

/** The explorer item, the viewer's document, the active safetensors tab, or a pick from the workspace. */
async function resolveTarget(arg: unknown): Promise<vscode.Uri | undefined> {
  if (arg instanceof vscode.Uri) return arg;
  const tab = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
  if (tab instanceof vscode.TabInputCustom && tab.viewType === VIEWER_VIEW_TYPE) return tab.uri;
  const files = await vscode.workspace.findFiles('**/{*.safetensors,model.safetensors.index.json}', '**/node_modules/**', 200);
  const targets = [...new Set(files.map((f) => (f.path.endsWith(INDEX) ? vscode.Uri.joinPath(f, '..') : f).toString()))].map((s) => vscode.Uri.parse(s));
  const shards = new Set(files.filter((f) => f.path.endsWith(INDEX)).map((f) => path.dirname(f.fsPath)));
  const items = targets
    .filter((u) => !(u.path.endsWith('.safetensors') && shards.has(path.dirname(u.fsPath))))
    .map((uri) => ({ label: vscode.workspace.asRelativePath(uri), uri }));
  if (!items.length) {
    void vscode.window.showErrorMessage('No safetensors checkpoint in this workspace. Open a folder holding a .safetensors file (or a sharded checkpoint with model.safetensors.index.json).');
    return undefined;
  }
  return (await vscode.window.showQuickPick(items, { title: 'Quantize with LoftQ', placeHolder: 'Checkpoint to quantize' }))?.uri;
}

export async function quantizeCommand(deps: QuantizeDeps, arg?: unknown): Promise<void> {
  if (!vscode.workspace.isTrusted) {
    const a = await vscode.window.showErrorMessage('LoftQ runs are disabled in Restricted Mode: a run reads checkpoints and plan files from this workspace and writes files. Trust the workspace to quantize.', 'Manage Workspace Trust');
    if (a) void vscode.commands.executeCommand('workbench.trust.manage');
    return;
  }
  const target = await resolveTarget(arg);
  if (!target) return;
  if (target.scheme !== 'file' || !isCheckpoint(target.fsPath)) {
    void vscode.window.showErrorMessage(`${target.fsPath || target.toString()}: not a safetensors checkpoint (a .safetensors file, or a folder holding ${INDEX}).`);
    return;
  }
  const checkpoint = target.fsPath;
  const plan = findPlanFor(checkpoint);
  const settings = await askSettings(startingSettings(target, plan), plan ? vscode.workspace.asRelativePath(plan.file) : undefined);
  if (!settings) return;
  const out = await askOutFolder(defaultOutFolder(checkpoint, settings));
  if (!out) return;
  const client = deps.client();
  if (!client || client.state !== State.Running) {
    void vscode.window.showErrorMessage('The LoftQ language server is not running, so the run cannot start. See the LoftQ log or run "LoftQ: Restart Language Server".', 'Show Log').then((a) => a && deps.log.show());
    return;
  }
  const cfg = vscode.workspace.getConfiguration('loftq', target);
  const params: QuantizeParams = {
    checkpoint, out, settings, plan: plan?.file,
    backend: cfg.get<BackendChoice>('backend', 'auto'),
    workers: cfg.get<number>('workers') || undefined,
    workDoneToken: `loftq-${randomUUID()}`,
  };
  await run(deps, client, params);
}

async function run(deps: QuantizeDeps, client: LanguageClient, params: QuantizeParams): Promise<void> {
  const name = path.basename(params.checkpoint);
  const job = String(params.workDoneToken);
  deps.log.info(`quantize ${params.checkpoint} → ${params.out} ${JSON.stringify(params.settings)}`);
  deps.status.setJob(job, 'starting');
  let result: QuantizeResult;
  let cancelled = false;
  try {
    result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `LoftQ ${params.settings.bits}-bit: ${name}`, cancellable: true },
      async (progress, token) => {
        let last = 0;
        const sub = client.onProgress(WorkDoneProgress.type, params.workDoneToken!, (v: WorkDoneProgressBegin | WorkDoneProgressReport | WorkDoneProgressEnd) => {
          if (v.kind === 'end') return;
          const pct = v.percentage ?? last;
          progress.report({ message: v.message, increment: Math.max(0, pct - last) });
          last = Math.max(last, pct);
          if (v.message) deps.status.setJob(job, v.message);
        });
        token.onCancellationRequested(() => (cancelled = true));
        try {
          return await client.sendRequest<QuantizeResult>(Methods.quantize, params, token);
        } finally {
          sub.dispose();
        }
      },
    );
  } catch (e) {
    deps.status.setJob(job, undefined);
    if (cancelled || e instanceof vscode.CancellationError) {
      deps.log.info(`quantize cancelled: ${params.checkpoint}`);
      void vscode.window.showInformationMessage(`LoftQ run on ${name} cancelled; no output was written.`);
      return;
    }
    const msg = (e as Error).message ?? String(e);
    deps.log.error(`quantize failed: ${params.checkpoint}: ${msg}`);
    const lost = client.state !== State.Running || /connection|disposed|closed/i.test(msg);
    const text = lost
      ? `The LoftQ server stopped during the run on ${name}; the run was lost and left no output. (${msg})`
      : `LoftQ run on ${name} failed: ${msg}`;
    const a = await vscode.window.showErrorMessage(text, 'Run Again', 'Show Log');
    if (a === 'Show Log') deps.log.show();
    if (a === 'Run Again') {
      const c = deps.client();
      if (c) await run(deps, c, { ...params, workDoneToken: `loftq-${randomUUID()}` });
    }
    return;
  }
  deps.status.setJob(job, undefined);
  deps.reports.remember(params.checkpoint, result.reportPath);
  const r = result.report;
  const mean = r.matrices.length ? r.matrices.reduce((s, m) => s + m.relError, 0) / r.matrices.length : 0;
  deps.log.info(`quantize done: ${result.reportPath} (${r.matrices.length} matrices, mean relError ${mean.toFixed(4)})`);
  const a = await vscode.window.showInformationMessage(
    `LoftQ done: ${r.matrices.length} matrices of ${name}, mean relative error ${mean.toFixed(4)} (${r.totals.seconds.toFixed(1)} s).`,
    'Open Heatmap', 'Reveal Output', 'Open Report',
  );
  if (a === 'Open Heatmap') deps.openHeatmap(result.reportPath);
  else if (a === 'Reveal Output') void vscode.commands.executeCommand('revealInExplorer', vscode.Uri.file(result.out));
  else if (a === 'Open Report') void vscode.window.showTextDocument(vscode.Uri.file(result.reportPath));
}
