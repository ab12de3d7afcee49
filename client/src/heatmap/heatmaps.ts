// All heatmap panels: opened from a report, live during a run (keyed by run id), and
// restored after a window reload (WebviewPanelSerializer + the state the webview saves).
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { HeatmapState, MatrixDoneParams, RunStateParams } from '../../../server/src/protocol/lsp_ext';
import { readReport } from '../reports';
import { HEATMAP_VIEW_TYPE, HeatmapActions, HeatmapPanel } from './panel';

export class Heatmaps implements vscode.WebviewPanelSerializer<HeatmapState>, vscode.Disposable {
  private readonly panels = new Set<HeatmapPanel>();
  private readonly live = new Map<string, HeatmapPanel>();

  constructor(private readonly extensionUri: vscode.Uri, private readonly actions: HeatmapActions, private readonly log: vscode.LogOutputChannel) {}

  private track(p: HeatmapPanel): HeatmapPanel {
    this.panels.add(p);
    p.onDispose(() => {
      this.panels.delete(p);
      for (const [k, v] of this.live) if (v === p) this.live.delete(k);
    });
    return p;
  }

  private create(title: string, preserveFocus: boolean): HeatmapPanel {
    const panel = vscode.window.createWebviewPanel(HEATMAP_VIEW_TYPE, title, { viewColumn: vscode.ViewColumn.Active, preserveFocus }, { retainContextWhenHidden: false });
    return this.track(new HeatmapPanel(panel, this.extensionUri, this.actions));
  }

  /** Shows a report, reusing the panel that shows it (or the live panel of the run that wrote it). */
  openReport(reportPath: string): HeatmapPanel {
    const report = readReport(reportPath);
    const out = path.dirname(reportPath);
    const existing = [...this.panels].find((p) => p.reportPath === reportPath || (p.out && path.resolve(p.out) === path.resolve(out)));
    const p = existing ?? this.create('LoftQ Heatmap', false);
    p.showReport(reportPath, report.checkpoint, report.matrices);
    p.panel.reveal(undefined, false);
    return p;
  }

  onRunState(s: RunStateParams): void {
    if (s.state === 'started') {
      const p = this.create('LoftQ Heatmap', true);
      p.startLive(s.checkpoint, s.out);
      this.live.set(s.runId, p);
      return;
    }
    const p = this.live.get(s.runId);
    this.live.delete(s.runId);
    if (!p) return;
    if (s.state === 'finished' && s.reportPath) {
      try {
        const r = readReport(s.reportPath);
        p.showReport(s.reportPath, r.checkpoint, r.matrices);
      } catch (e) {
        this.log.error(`heatmap: ${(e as Error).message}`);
      }
    } else if (s.state === 'cancelled' || s.state === 'failed') p.endLive(s.state);
  }

  onMatrixDone(m: MatrixDoneParams): void {
    this.live.get(m.runId)?.append(m.matrix);
  }

  async deserializeWebviewPanel(panel: vscode.WebviewPanel, state: HeatmapState | undefined): Promise<void> {
    const p = this.track(new HeatmapPanel(panel, this.extensionUri, this.actions));
    if (state?.metric) p.metric = state.metric;
    if (!state?.reportPath) {
      panel.title = 'LoftQ Heatmap (run ended before reload)';
      return;
    }
    try {
      const r = readReport(state.reportPath);
      p.showReport(state.reportPath, r.checkpoint, r.matrices);
    } catch (e) {
      panel.title = 'LoftQ Heatmap (report missing)';
      this.log.warn(`heatmap restore: ${(e as Error).message}`);
    }
  }

  dispose(): void {
    for (const p of this.panels) p.panel.dispose();
  }
}
