import { createConnection, ProposedFeatures } from 'vscode-languageserver/node';
import { UsageError } from '../../base/errors';
import { engineForServer } from '../../lsp/engineBinding';
import { startServer } from '../../lsp/server';
import { exitOnBrokenFraming } from '../../lsp/framing';
import type { Command } from '../commands';

const USAGE = `usage: loftq lsp --stdio | --node-ipc | --socket=PORT | --pipe=NAME

Runs the LoftQ language server (plan-file diagnostics, hovers, code actions, runs) over
the given transport, for editors such as Neovim, Helix or Emacs (see docs/lsp.md).`;

export const lspCommand: Command = {
  summary: 'run the language server (--stdio) for loftq.json plan files in any LSP editor',
  run(argv) {
    if (argv.includes('--help') || argv.includes('-h')) {
      process.stdout.write(USAGE + '\n');
      return Promise.resolve(0);
    }
    const transport = argv.filter(
      (a) =>
        a === '--stdio' || a === '--node-ipc' || /^--(socket|pipe)=.+/.test(a) || a.startsWith('--clientProcessId'),
    );
    const unknown = argv.filter((a) => !transport.includes(a));
    if (unknown.length) throw new UsageError(`lsp: unknown argument '${unknown[0]}'`);
    if (!transport.some((a) => !a.startsWith('--clientProcessId')))
      throw new UsageError('lsp needs a transport: --stdio (or --node-ipc, --socket=PORT, --pipe=NAME)');
    // createConnection reads the transport from process.argv, as it does in dist/server.js;
    // with --stdio it also sends console output to the client's log instead of stdout.
    startServer(createConnection(ProposedFeatures.all), engineForServer);
    exitOnBrokenFraming();
    // The connection ends the process itself on `exit` or when the client goes away.
    return new Promise<number>(() => {});
  },
};
