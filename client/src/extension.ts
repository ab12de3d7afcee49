// The extension: a thin client over the language server (dist/server.js) plus the UI the
// server cannot own — commands, the heatmap webviews and the safetensors viewer.
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { LanguageClient, State } from 'vscode-languageclient/node';
import type { MatrixDoneParams, RunStateParams } from '../../server/src/protocol/lsp_ext';
import { Notifications, Requests } from '../../server/src/protocol/requests';
import { trackCheckpointFolders } from './checkpointFolders';
import { Heatmaps } from './heatmap/heatmaps';
import { HEATMAP_VIEW_TYPE } from './heatmap/panel';
import { createLanguageClient } from './languageClient';
import { revealInPlan } from './planReveal';
import { quantizeCommand } from './quantize';
import { REPORT_FILE, ReportIndex } from './reports';
import { LoftqStatus } from './statusBar';
import { SafetensorsViewer, VIEWER_VIEW_TYPE } from './viewer/provider';
import { fileHolding } from './viewer/shard';

let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = vscode.window.createOutputChannel('LoftQ', { log: true });
  const status = new LoftqStatus();
  const reports = new ReportIndex(context.workspaceState);
  const viewer = new SafetensorsViewer(context.extensionUri, reports, log);

  const findPlan = async (checkpoint: string) => {
    if (!client || client.state !== State.Running) return undefined;
    return (await client.sendRequest(Requests.runContext, { checkpoint })).plan?.file;
  };
  const heatmaps = new Heatmaps(context.extensionUri, {
    reveal: (p, name, createOverride) => {
      if (!p.checkpoint) return;
      void revealInPlan(findPlan, p.checkpoint, name, createOverride, {}).catch((e) => log.error(`reveal: ${(e as Error).message}`));
    },
    openTensor: (p, name) => {
      // The quantized output when it is there, else the original; in a sharded one, the shard holding the tensor.
      const file = (p.out && fileHolding(p.out, name)) ?? (p.checkpoint && fileHolding(p.checkpoint, name));
      if (file) void viewer.reveal(vscode.Uri.file(file), name);
      else void vscode.window.showInformationMessage(`No .safetensors file holding ${name} was found next to this report.`);
    },
  }, log);
  const openHeatmap = (reportPath: string) => {
    try {
      heatmaps.openReport(reportPath);
    } catch (e) {
      void vscode.window.showErrorMessage((e as Error).message);
    }
  };

  context.subscriptions.push(
    log, status, heatmaps,
    vscode.window.registerWebviewPanelSerializer(HEATMAP_VIEW_TYPE, heatmaps),
    vscode.window.registerCustomEditorProvider(VIEWER_VIEW_TYPE, viewer, { supportsMultipleEditorsPerDocument: true, webviewOptions: { retainContextWhenHidden: false } }),
    trackCheckpointFolders(),
    vscode.commands.registerCommand('loftq.quantize', (arg?: unknown) => quantizeCommand({ client: () => client, status, log, reports, openHeatmap }, arg)),
    vscode.commands.registerCommand('loftq.openHeatmap', async (arg?: unknown) => {
      let uri = arg instanceof vscode.Uri ? arg : undefined;
      if (!uri) {
        const found = await vscode.workspace.findFiles(`**/${REPORT_FILE}`, '**/node_modules/**', 100);
        const pick = await vscode.window.showQuickPick(found.map((u) => ({ label: vscode.workspace.asRelativePath(u), uri: u })), { placeHolder: 'LoftQ report to show' });
        uri = pick?.uri;
        if (!uri && !found.length) void vscode.window.showInformationMessage(`No ${REPORT_FILE} in this workspace yet; run "Quantize with LoftQ" first.`);
      }
      if (uri) openHeatmap(uri.fsPath);
    }),
    vscode.commands.registerCommand('loftq.showOutput', () => log.show()),
    vscode.commands.registerCommand('loftq.restartServer', async () => {
      if (!client) return;
      await client.restart();
      log.info('language server restarted by the user');
    }),
  );

  if (!fs.existsSync(context.asAbsolutePath('dist/server.js'))) {
    log.error('dist/server.js is missing; the language server cannot start (plan diagnostics and runs are unavailable).');
    status.setServer('stopped');
    return;
  }
  client = createLanguageClient(context, log, status);
  client.onNotification(Notifications.runState, (s: RunStateParams) => {
    heatmaps.onRunState(s);
  });
  client.onNotification(Notifications.matrixDone, (m: MatrixDoneParams) => heatmaps.onMatrixDone(m));
  context.subscriptions.push(client);
  try {
    await client.start();
  } catch (e) {
    log.error(`language server failed to start: ${(e as Error).message}`);
    void vscode.window.showErrorMessage(`The LoftQ language server failed to start: ${(e as Error).message}`, 'Show Log').then((a) => a && log.show());
  }
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
