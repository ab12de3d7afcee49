// One heatmap webview panel: holds the matrices it shows (a finished report, or a live
// run's matrices so far) and sends them once the webview says it is ready.
import * as path from 'node:path';
import * as vscode from 'vscode';
import * as fs from 'node:fs';
import type {
  FromHeatmap,
  HeatmapMetric,
  HeatmapSummary,
  MatrixReport,
  Report,
  ToHeatmap,
} from '../../../server/src/protocol/lsp_ext';
import { webviewHtml, webviewOptions } from '../webviewHtml';
import { quantizedSize } from '../../../webviews/src/quantizedSize';
import { toBatch } from './batch';
import { analysedWidths, matricesAtWidth } from './analysisWidths';
import { OUTPUT_MARKER } from '../checkpointKinds';

export const HEATMAP_VIEW_TYPE = 'loftq.heatmap';

export interface HeatmapActions {
  reveal(panel: HeatmapPanel, name: string, createOverride: boolean): void;
  openTensor(panel: HeatmapPanel, name: string): void;
  /** "Evaluate Model Outputs" on the panel's output folder. */
  evaluate(panel: HeatmapPanel): void;
}

export class HeatmapPanel {
  private ready = false;
  private matrices: MatrixReport[] = [];
  metric: HeatmapMetric = 'loftq';
  reportPath: string | undefined;
  checkpoint: string | undefined;
  out: string | undefined;
  live = false;
  ended: 'cancelled' | 'failed' | undefined;
  summary: HeatmapSummary | undefined;
  /** An analysis report: its widths and the one shown (the webview switches among them). */
  private report: Report | undefined;
  widths: number[] = [];
  bits: number | undefined;
  private readonly subs: vscode.Disposable[] = [];
  private readonly disposeListeners: (() => void)[] = [];

  constructor(
    readonly panel: vscode.WebviewPanel,
    extensionUri: vscode.Uri,
    private readonly actions: HeatmapActions,
  ) {
    panel.webview.options = webviewOptions(extensionUri);
    panel.webview.html = webviewHtml(panel.webview, extensionUri, 'heatmap', panel.title);
    this.subs.push(
      panel.webview.onDidReceiveMessage((m: FromHeatmap) => this.onMessage(m)),
      vscode.window.onDidChangeActiveColorTheme(() => this.post({ type: 'theme' })),
      panel.onDidDispose(() => this.dispose()),
    );
  }

  /** The shown matrix of that name, when there is one. */
  matrix(name: string): MatrixReport | undefined {
    return this.matrices.find((m) => m.name === name);
  }

  onDispose(f: () => void): void {
    this.disposeListeners.push(f);
  }

  showReport(reportPath: string, report: Report, bits?: number): void {
    const out = path.dirname(reportPath);
    const widths = analysedWidths(report);
    // An analysis shows one width at a time: the one asked for, else the one already shown, else the first.
    const want = bits ?? (this.reportPath === reportPath ? this.bits : undefined);
    const shownBits = widths.length ? (widths.includes(want!) ? want! : widths[0]) : undefined;
    const matrices = shownBits === undefined ? report.matrices : matricesAtWidth(report, shownBits);
    let writtenAt: number | undefined;
    try {
      writtenAt = fs.statSync(reportPath).mtimeMs;
    } catch {
      // The header then leaves out when it was written.
    }
    const summary: HeatmapSummary = {
      checkpoint: report.checkpoint,
      out,
      reportPath,
      settings: shownBits === undefined ? report.settings : { ...report.settings, bits: shownBits },
      backend: report.backend,
      seconds: report.totals?.seconds,
      writtenAt,
      calibration: report.calibration,
      model: report.model,
      quantized: quantizedSize(matrices),
      // A quantize run's folder (an analysis writes no weights) can be evaluated.
      evaluable: !report.analyses?.length && fs.existsSync(path.join(out, OUTPUT_MARKER)),
    };
    Object.assign(this, {
      reportPath,
      checkpoint: report.checkpoint,
      matrices: [...matrices],
      report: widths.length ? report : undefined,
      widths,
      bits: shownBits,
      live: false,
      ended: undefined,
      out,
      summary,
    });
    this.panel.title = `LoftQ Heatmap — ${path.basename(out)}`;
    this.sendAll();
  }

  startLive(checkpoint: string, out: string): void {
    Object.assign(this, {
      checkpoint,
      out,
      reportPath: undefined,
      matrices: [],
      report: undefined,
      widths: [],
      bits: undefined,
      live: true,
      ended: undefined,
      summary: { checkpoint, out },
    });
    this.panel.title = `LoftQ Heatmap — ${path.basename(out)} (running)`;
    this.sendAll();
  }

  append(matrix: MatrixReport): void {
    this.matrices.push(matrix);
    if (this.ready) this.post({ type: 'append', ...toBatch([matrix]) });
  }

  endLive(how: 'cancelled' | 'failed'): void {
    this.live = false;
    this.ended = how;
    this.panel.title = `LoftQ Heatmap — ${path.basename(this.out ?? '')} (${how})`;
    this.sendAll();
  }

  private sendAll(): void {
    if (!this.ready) return;
    // The title names the output folder; the header lists the full paths.
    const title = path.basename(this.out ?? this.checkpoint ?? '');
    this.post({
      type: 'init',
      title,
      metric: this.metric,
      layers: [],
      modules: [],
      unplaced: [],
      ...toBatch(this.matrices),
      reportPath: this.reportPath,
      live: this.live,
      ended: this.ended,
      summary: this.summary,
      ...(this.widths.length > 1 && { widths: this.widths, bits: this.bits }),
    });
  }

  private post(m: ToHeatmap): void {
    if (this.ready) void this.panel.webview.postMessage(m);
  }

  private onMessage(m: FromHeatmap): void {
    switch (m.type) {
      case 'ready':
        this.ready = true;
        this.sendAll();
        break;
      case 'metric':
        this.metric = m.metric;
        break;
      case 'reveal':
        this.actions.reveal(this, m.name, m.createOverride);
        break;
      case 'openTensor':
        this.actions.openTensor(this, m.name);
        break;
      case 'evaluate':
        this.actions.evaluate(this);
        break;
      case 'bits':
        if (this.report && this.reportPath && this.widths.includes(m.bits))
          this.showReport(this.reportPath, this.report, m.bits);
        break;
    }
  }

  dispose(): void {
    for (const s of this.subs.splice(0)) s.dispose();
    for (const f of this.disposeListeners.splice(0)) f();
  }
}
