// The extension: a thin client over the language server (dist/server.js) plus the UI the
// server cannot own — commands, the heatmap webviews and the safetensors viewer.
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { LanguageClient, State } from 'vscode-languageclient/node';
import type { MatrixDoneParams, PlanLocation, RunStateParams } from '../../server/src/protocol/lsp_ext';
import { Notifications, Requests } from '../../server/src/protocol/requests';
import { trackCheckpointFolders } from './checkpointFolders';
import { Heatmaps } from './heatmap/heatmaps';
import { HEATMAP_VIEW_TYPE } from './heatmap/panel';
import { createLanguageClient } from './languageClient';
import { revealInPlan } from './planReveal';
import { analyzeCommand } from './analyze';
import { evaluateCommand } from './evaluate';
import { planMixedCommand, PlanPreviews, PREVIEW_SCHEME } from './planMixed';
import { quantizeCommand } from './quantize';
import { fileHolding, REPORT_FILE, ReportIndex, setServerReads } from './reports';
import { LoftqStatus } from './statusBar';
import { SafetensorsViewer, VIEWER_VIEW_TYPE } from './viewer/provider';

let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = vscode.window.createOutputChannel('LoftQ', { log: true });
  // Reports and headers are read by the server; webviews restored early wait for it to start.
  let serverUp!: (c: LanguageClient) => void, serverDown!: (e: Error) => void;
  const started = new Promise<LanguageClient>((res, rej) => {
    serverUp = res;
    serverDown = rej;
  });
  started.catch(() => undefined);
  setServerReads(
    started.then((c) => ({
      readReport: (file: string) => c.sendRequest(Requests.readReport, { path: file }),
      inspect: (checkpoint: string) => c.sendRequest(Requests.inspect, { checkpoint }),
    })),
  );
  const status = new LoftqStatus();
  const reports = new ReportIndex(context.workspaceState);
  const viewer = new SafetensorsViewer(context.extensionUri, reports, log);

  const previews = new PlanPreviews();
  const locatePlan = async (checkpoint: string, tensor: string): Promise<PlanLocation> => {
    if (!client || client.state !== State.Running) throw new Error('the LoftQ language server is not running');
    return client.sendRequest(Requests.planLocation, { checkpoint, tensor });
  };
  const heatmaps = new Heatmaps(
    context.extensionUri,
    {
      reveal: (p, name, createOverride) => {
        if (!p.checkpoint) return;
        // A new override states the matrix's bits and rank as run; a new plan's defaults, the run's settings.
        const m = p.matrix(name);
        const own = m ? { bits: m.bits, rank: m.rank } : {};
        void revealInPlan(locatePlan, p.checkpoint, name, createOverride, own, p.summary?.settings).catch((e) =>
          log.error(`reveal: ${(e as Error).message}`),
        );
      },
      evaluate: (p) => {
        if (p.out) void vscode.commands.executeCommand('loftq.evaluate', vscode.Uri.file(p.out));
      },
      openTensor: async (p, name) => {
        // The quantized output when it is there, else the original; in a sharded one, the shard holding the tensor.
        const file =
          (p.out && (await fileHolding(p.out, name))) ?? (p.checkpoint && (await fileHolding(p.checkpoint, name)));
        if (file) void viewer.reveal(vscode.Uri.file(file), name);
        else
          void vscode.window.showInformationMessage(
            `No .safetensors file holding ${name} was found next to this report.`,
          );
      },
    },
    log,
  );
  const openHeatmap = (reportPath: string) => {
    heatmaps.openReport(reportPath).catch((e) => void vscode.window.showErrorMessage((e as Error).message));
  };

  context.subscriptions.push(
    log,
    status,
    heatmaps,
    vscode.window.registerWebviewPanelSerializer(HEATMAP_VIEW_TYPE, heatmaps),
    vscode.window.registerCustomEditorProvider(VIEWER_VIEW_TYPE, viewer, {
      supportsMultipleEditorsPerDocument: true,
      webviewOptions: { retainContextWhenHidden: false },
    }),
    trackCheckpointFolders(),
    vscode.commands.registerCommand('loftq.quantize', (arg?: unknown) =>
      quantizeCommand({ client: () => client, status, log, reports, openHeatmap }, arg),
    ),
    vscode.commands.registerCommand('loftq.evaluate', (arg?: unknown) =>
      evaluateCommand(
        {
          client: () => client,
          log,
          openHeatmap,
          reportChanged: (file) =>
            void heatmaps.reload(file).catch((e) => log.error(`heatmap: ${(e as Error).message}`)),
        },
        arg,
      ),
    ),
    vscode.commands.registerCommand('loftq.analyze', (arg?: unknown) =>
      analyzeCommand({ client: () => client, log, reports, openHeatmap }, arg),
    ),
    vscode.workspace.registerTextDocumentContentProvider(PREVIEW_SCHEME, previews),
    vscode.commands.registerCommand('loftq.planMixedPrecision', (arg?: unknown) =>
      planMixedCommand({ client: () => client, log }, previews, arg),
    ),
    vscode.commands.registerCommand('loftq.openHeatmap', async (arg?: unknown) => {
      let uri = arg instanceof vscode.Uri ? arg : undefined;
      if (!uri) {
        const found = await vscode.workspace.findFiles(`**/${REPORT_FILE}`, '**/node_modules/**', 100);
        const pick = await vscode.window.showQuickPick(
          found.map((u) => ({ label: vscode.workspace.asRelativePath(u), uri: u })),
          { placeHolder: 'LoftQ report to show' },
        );
        uri = pick?.uri;
        if (!uri && !found.length)
          void vscode.window.showInformationMessage(
            `No ${REPORT_FILE} in this workspace yet; run "Quantize with LoftQ" first.`,
          );
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
    log.error(
      'dist/server.js is missing; the language server cannot start (plan diagnostics and runs are unavailable).',
    );
    status.setServer('stopped');
    serverDown(new Error('the LoftQ language server is missing (dist/server.js)'));
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
    serverUp(client);
  } catch (e) {
    serverDown(new Error(`the LoftQ language server failed to start: ${(e as Error).message}`));
    log.error(`language server failed to start: ${(e as Error).message}`);
    void vscode.window
      .showErrorMessage(`The LoftQ language server failed to start: ${(e as Error).message}`, 'Show Log')
      .then((a) => a && log.show());
  }
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
