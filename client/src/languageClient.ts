// Starts dist/server.js as a Node module over IPC, in vscode-eslint's manner, with a
// restart policy that tells the user when (and why) the server was restarted.
import * as vscode from 'vscode';
import {
  CloseAction,
  ErrorAction,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
  TransportKind,
} from 'vscode-languageclient/node';
import { RestartPolicy } from './restartPolicy';
import type { LoftqStatus } from './statusBar';

export function createLanguageClient(
  context: vscode.ExtensionContext,
  log: vscode.LogOutputChannel,
  status: LoftqStatus,
): LanguageClient {
  const module = context.asAbsolutePath('dist/server.js');
  const serverOptions: ServerOptions = {
    run: { module, transport: TransportKind.ipc },
    debug: { module, transport: TransportKind.ipc, options: { execArgv: ['--nolazy', '--inspect=6019'] } },
  };
  const policy = new RestartPolicy();
  let gaveUp = false;
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: 'file', pattern: '**/loftq.json' }],
    outputChannel: log,
    synchronize: {
      configurationSection: 'loftq',
      fileEvents: [
        vscode.workspace.createFileSystemWatcher('**/loftq.json'),
        vscode.workspace.createFileSystemWatcher('**/loftq-report.json'),
        vscode.workspace.createFileSystemWatcher('**/*.safetensors'),
        vscode.workspace.createFileSystemWatcher('**/model.safetensors.index.json'),
      ],
    },
    initializationOptions: () => ({ settings: vscode.workspace.getConfiguration('loftq') }),
    errorHandler: {
      // A single bad message is not worth a restart; the connection decides when it is dead.
      error: (_error, _message, count) => ({ action: (count ?? 0) <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown }),
      closed: () => {
        const d = policy.crashed();
        status.setServer('crashed');
        if (d.restart) {
          const msg =
            'The LoftQ language server stopped unexpectedly and was restarted ' +
            `(${d.crashes} of ${policy.maxRestarts} restarts allowed in ${policy.windowMs / 60_000} minutes).`;
          log.warn(msg);
          void vscode.window.showWarningMessage(msg, 'Show Log').then((a) => a && log.show());
          return { action: CloseAction.Restart, handled: true };
        }
        const msg =
          `The LoftQ language server crashed ${d.crashes} times in ${policy.windowMs / 60_000} minutes ` +
          'and will not be restarted. See the LoftQ log, then run "LoftQ: Restart Language Server".';
        log.error(msg);
        gaveUp = true;
        void vscode.window.showErrorMessage(msg, 'Show Log').then((a) => a && log.show());
        return { action: CloseAction.DoNotRestart, handled: true };
      },
    },
  };
  const client = new LanguageClient('loftq', 'LoftQ Language Server', serverOptions, clientOptions);
  client.onDidChangeState((e) => {
    if (e.newState === State.Running) {
      gaveUp = false;
      status.setServer('running');
    } else if (e.newState === State.Starting) status.setServer('starting');
    else if (e.newState === State.Stopped) status.setServer(gaveUp ? 'crashed' : 'stopped');
  });
  return client;
}
