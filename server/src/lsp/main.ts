// Entry of the bundled language server (dist/server.js). The transport comes from the
// command line as vscode-languageclient passes it: `--node-ipc` (the VS Code client),
// `--stdio` (other editors; also `loftq lsp --stdio`), or `--socket=N` / `--pipe=NAME`.

import { createConnection, ProposedFeatures } from 'vscode-languageserver/node';
import { engineForServer } from './engineBinding';
import { startServer } from './server';
import { exitOnBrokenFraming } from './framing';

startServer(createConnection(ProposedFeatures.all), engineForServer);
exitOnBrokenFraming();
