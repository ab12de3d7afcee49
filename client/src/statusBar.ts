// One status bar item: the server state, and while a run is going its progress.
import * as vscode from 'vscode';

export type ServerState = 'starting' | 'running' | 'stopped' | 'crashed';

export class LoftqStatus implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('loftq.status', vscode.StatusBarAlignment.Left, 10);
  private server: ServerState = 'starting';
  private readonly jobs = new Map<string, string>();

  constructor() {
    this.item.name = 'LoftQ';
    this.item.command = 'loftq.showOutput';
    this.render();
    this.item.show();
  }

  setServer(state: ServerState): void {
    this.server = state;
    this.render();
  }

  /** `text` such as "matrix 12 of 40: model.layers.3.mlp.up_proj"; undefined ends the job. */
  setJob(id: string, text: string | undefined): void {
    if (text === undefined) this.jobs.delete(id);
    else this.jobs.set(id, text);
    this.render();
  }

  private render(): void {
    const job = [...this.jobs.values()].pop();
    if (job !== undefined) {
      const m = /(\d+) of (\d+)/.exec(job);
      this.item.text = `$(sync~spin) LoftQ ${m ? `${m[1]}/${m[2]}` : '…'}`;
      this.item.tooltip = `LoftQ run: ${job}${this.jobs.size > 1 ? ` (+${this.jobs.size - 1} more)` : ''}`;
      this.item.backgroundColor = undefined;
      return;
    }
    const icon = { starting: '$(loading~spin)', running: '$(pulse)', stopped: '$(circle-slash)', crashed: '$(error)' }[
      this.server
    ];
    this.item.text = `${icon} LoftQ`;
    this.item.tooltip = `LoftQ language server: ${this.server}. Click for the log.`;
    this.item.backgroundColor =
      this.server === 'crashed' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
