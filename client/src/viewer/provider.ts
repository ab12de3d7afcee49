// The safetensors viewer: a read-only custom editor that shows the header (metadata, every
// tensor, totals per dtype) without reading tensor data, plus error columns when a LoftQ
// report for the file exists (a shard's: its checkpoint's). A LoftQ output or adapter says
// whose it is and offers no Quantize.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { FromViewer, ToViewer, ViewerOrigin, ViewerShard } from '../../../server/src/protocol/lsp_ext';
import { inspectCheckpoint, readReport, REPORT_FILE, ReportIndex } from '../reports';
import { markerOf, runFolderOf } from '../checkpointKinds';
import { webviewHtml, webviewOptions } from '../webviewHtml';

export const VIEWER_VIEW_TYPE = 'loftq.safetensorsViewer';

interface Open {
  panel: vscode.WebviewPanel;
  ready: boolean;
  pendingSelect?: string;
  /** The sharded checkpoint this file belongs to, as the server's last loftq/inspect said. */
  shard?: ViewerShard;
  /** The file is a LoftQ output or adapter: nothing to quantize. */
  origin?: ViewerOrigin;
}

export class SafetensorsViewer implements vscode.CustomReadonlyEditorProvider {
  private readonly open = new Map<string, Set<Open>>();

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly reports: ReportIndex,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  openCustomDocument(uri: vscode.Uri): vscode.CustomDocument {
    return { uri, dispose: () => undefined };
  }

  resolveCustomEditor(doc: vscode.CustomDocument, panel: vscode.WebviewPanel): void {
    const entry: Open = { panel, ready: false };
    const key = doc.uri.toString();
    const set = this.open.get(key) ?? new Set();
    set.add(entry);
    this.open.set(key, set);
    panel.webview.options = webviewOptions(this.extensionUri);
    panel.webview.html = webviewHtml(panel.webview, this.extensionUri, 'viewer', path.basename(doc.uri.path));
    const watcher = vscode.workspace.createFileSystemWatcher(
      new vscode.RelativePattern(vscode.Uri.joinPath(doc.uri, '..'), `{${path.basename(doc.uri.path)},${REPORT_FILE}}`),
    );
    const reload = () => entry.ready && void this.load(doc.uri, entry);
    const subs = [
      watcher,
      watcher.onDidChange(reload),
      watcher.onDidCreate(reload),
      watcher.onDidDelete(reload),
      panel.webview.onDidReceiveMessage((m: FromViewer) => {
        if (m.type === 'ready') {
          entry.ready = true;
          void this.load(doc.uri, entry);
        } else if (m.type === 'quantize' && !entry.origin) {
          // A shard alone is not a model: quantize the checkpoint it belongs to.
          const target = entry.shard ? vscode.Uri.file(path.dirname(entry.shard.index)) : doc.uri;
          void vscode.commands.executeCommand('loftq.quantize', target);
        } else if (m.type === 'openIndex') {
          if (entry.shard) void vscode.window.showTextDocument(vscode.Uri.file(entry.shard.index));
        } else if (m.type === 'reopenAsText')
          void vscode.commands.executeCommand('vscode.openWith', doc.uri, 'default');
      }),
    ];
    panel.onDidDispose(() => {
      set.delete(entry);
      for (const s of subs) s.dispose();
    });
  }

  /** Opens the viewer on `uri` and scrolls to `tensor`. */
  async reveal(uri: vscode.Uri, tensor: string): Promise<void> {
    await vscode.commands.executeCommand('vscode.openWith', uri, VIEWER_VIEW_TYPE);
    for (const e of this.open.get(uri.toString()) ?? []) {
      if (e.ready) void e.panel.webview.postMessage({ type: 'select', name: tensor } satisfies ToViewer);
      else e.pendingSelect = tensor;
    }
  }

  private async load(uri: vscode.Uri, entry: Open): Promise<void> {
    const post = (m: ToViewer) => void entry.panel.webview.postMessage(m);
    if (uri.scheme !== 'file') {
      post({
        type: 'error',
        message: `${uri.toString()}: only files on disk can be inspected (the header is read with positioned reads).`,
      });
      return;
    }
    try {
      const inspect = await inspectCheckpoint(uri.fsPath);
      let errors: Extract<ToViewer, { type: 'header' }>['errors'];
      const origin = await originOf(uri.fsPath);
      // An adapter's tensors are LoRA factors: the report's matrices are not among them.
      const reportPath = origin?.kind === 'adapter' ? undefined : this.reports.find(uri.fsPath, inspect.shard?.index);
      if (reportPath) {
        try {
          errors = Object.fromEntries(
            (await readReport(reportPath)).matrices
              .filter((m) => !m.skipped)
              .map((m) => [m.name, { loftq: m.relError, qlora: m.qloraRelError, bits: m.bits }]),
          );
        } catch (e) {
          this.log.warn(`viewer: ${(e as Error).message}`);
        }
      }
      entry.shard = inspect.shard;
      entry.origin = origin;
      post({ type: 'header', inspect, errors, ...(origin && { origin }) });
      if (entry.pendingSelect) post({ type: 'select', name: entry.pendingSelect });
      entry.pendingSelect = undefined;
    } catch (e) {
      const message = (e as Error).message.includes(uri.fsPath)
        ? (e as Error).message
        : `${uri.fsPath}: ${(e as Error).message}`;
      this.log.error(`viewer: ${message}`);
      post({ type: 'error', message });
    }
  }
}

/** A LoftQ output's backbone or adapter, with the checkpoint its run's report names. */
async function originOf(file: string): Promise<ViewerOrigin | undefined> {
  const kind = markerOf(file, false, fs.existsSync);
  if (!kind) return undefined;
  const out = runFolderOf(file, false, kind) ?? path.dirname(file);
  try {
    return { kind, of: vscode.workspace.asRelativePath((await readReport(path.join(out, REPORT_FILE))).checkpoint) };
  } catch {
    return { kind };
  }
}
