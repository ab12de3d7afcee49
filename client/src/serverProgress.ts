// A server request under a cancellable notification whose bar follows the server's work-done
// progress for the request's token: the one bridge quantize, analyze and evaluate share.
import * as vscode from 'vscode';
import {
  LanguageClient,
  WorkDoneProgress,
  WorkDoneProgressBegin,
  WorkDoneProgressEnd,
  WorkDoneProgressReport,
} from 'vscode-languageclient/node';

export interface ServerProgress {
  title: string;
  /** The workDoneToken the request carries. */
  token: string | number;
  /** Each progress message as it arrives (e.g. for the status bar). */
  onMessage?: (message: string) => void;
  /** The user pressed Cancel. */
  onCancel?: () => void;
}

export function withServerProgress<T>(
  client: LanguageClient,
  p: ServerProgress,
  send: (token: vscode.CancellationToken) => Promise<T>,
): Thenable<T> {
  return vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: p.title, cancellable: true },
    async (progress, token) => {
      let last = 0;
      const sub = client.onProgress(
        WorkDoneProgress.type,
        p.token,
        (v: WorkDoneProgressBegin | WorkDoneProgressReport | WorkDoneProgressEnd) => {
          if (v.kind === 'end') return;
          const pct = v.percentage ?? last;
          progress.report({ message: v.message, increment: Math.max(0, pct - last) });
          last = Math.max(last, pct);
          if (v.message) p.onMessage?.(v.message);
        },
      );
      token.onCancellationRequested(() => p.onCancel?.());
      try {
        return await send(token);
      } finally {
        sub.dispose();
      }
    },
  );
}
