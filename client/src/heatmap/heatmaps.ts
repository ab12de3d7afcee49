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

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly actions: HeatmapActions,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  private track(p: HeatmapPanel): HeatmapPanel {
    this.panels.add(p);
    p.onDispose(() => {
      this.panels.delete(p);
      for (const [k, v] of this.live) if (v === p) this.live.delete(k);
    });
    return p;
  }

  private create(title: string, preserveFocus: boolean): HeatmapPanel {
    const column = { viewColumn: vscode.ViewColumn.Active, preserveFocus };
    const panel = vscode.window.createWebviewPanel(HEATMAP_VIEW_TYPE, title, column, {
      retainContextWhenHidden: false,
    });
    return this.track(new HeatmapPanel(panel, this.extensionUri, this.actions));
  }

  /** The panel showing this output folder (one tab per folder, reused). */
  private forOut(out: string): HeatmapPanel | undefined {
    const want = path.resolve(out);
    return [...this.panels].find((p) => p.out !== undefined && path.resolve(p.out) === want);
  }

  /** Shows a report, reusing the panel that shows its folder (or the live panel of the run that wrote it). */
  async openReport(reportPath: string): Promise<HeatmapPanel> {
    const report = await readReport(reportPath);
    const p = this.forOut(path.dirname(reportPath)) ?? this.create('LoftQ Heatmap', false);
    p.showReport(reportPath, report);
    p.panel.reveal(undefined, false);
    return p;
  }

  /** A report was rewritten (an evaluation's model block): the panel showing it reloads. */
  async reload(reportPath: string): Promise<void> {
    const p = this.forOut(path.dirname(reportPath));
    if (!p || p.live) return;
    p.showReport(reportPath, await readReport(reportPath));
  }

  /** Runs that started but have shown no matrix yet: their panel opens with the first one, so
   *  a run that fails before any matrix leaves no empty tab behind. */
  private readonly pending = new Map<string, { checkpoint: string; out: string }>();

  onRunState(s: RunStateParams): void {
    if (s.state === 'started') {
      const p = this.forOut(s.out);
      if (p) {
        p.startLive(s.checkpoint, s.out);
        this.live.set(s.runId, p);
      } else this.pending.set(s.runId, { checkpoint: s.checkpoint, out: s.out });
      return;
    }
    this.pending.delete(s.runId);
    const p = this.live.get(s.runId);
    this.live.delete(s.runId);
    if (!p) return;
    if (s.state === 'finished' && s.reportPath) {
      readReport(s.reportPath).then(
        (r) => p.showReport(s.reportPath!, r),
        (e) => this.log.error(`heatmap: ${(e as Error).message}`),
      );
    } else if (s.state === 'cancelled' || s.state === 'failed') p.endLive(s.state);
  }

  onMatrixDone(m: MatrixDoneParams): void {
    const waiting = this.pending.get(m.runId);
    if (waiting) {
      this.pending.delete(m.runId);
      const p = this.forOut(waiting.out) ?? this.create('LoftQ Heatmap', true);
      p.startLive(waiting.checkpoint, waiting.out);
      this.live.set(m.runId, p);
    }
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
      p.showReport(state.reportPath, await readReport(state.reportPath), state.bits);
    } catch (e) {
      panel.title = 'LoftQ Heatmap (report missing)';
      this.log.warn(`heatmap restore: ${(e as Error).message}`);
    }
  }

  dispose(): void {
    for (const p of this.panels) p.panel.dispose();
  }
}
