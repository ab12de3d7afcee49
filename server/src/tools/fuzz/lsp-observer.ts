// Feeds every fuzz case to one long-lived language server (dist/server.js --stdio): a
// `loftq.json` next to the case points at the mutated checkpoint by a relative path, is
// opened (and closed, so its diagnostics come at once instead of after the typing
// debounce), and a `loftq/inspect` request asks for the same checkpoint. The server must
// answer both, agree with the reader in this process — a checkpoint the reader refuses
// gets a `checkpoint` error diagnostic carrying the reader's problem text and an inspect
// error with its message; an accepted one gets neither — and stay alive throughout.

import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  createProtocolConnection,
  Diagnostic,
  DidCloseTextDocumentNotification,
  DidOpenTextDocumentNotification,
  ExitNotification,
  InitializedNotification,
  InitializeRequest,
  ProtocolConnection,
  PublishDiagnosticsNotification,
  ShutdownRequest,
  StreamMessageReader,
  StreamMessageWriter,
} from 'vscode-languageserver-protocol/node';
import { CheckpointError, openCheckpoint } from '../../checkpoint';
import { Methods } from '../../protocol/lsp_ext';
import type { InspectResult } from '../../protocol/lsp_ext';
import type { Observer } from './runner';

/** dist/server.js next to this bundle, or in the repo's dist/ when running from tests. */
function serverScript(): string {
  let d = __dirname;
  for (let i = 0; i < 6; i++) {
    for (const c of [path.join(d, 'server.js'), path.join(d, 'dist', 'server.js')]) if (fs.existsSync(c)) return c;
    d = path.dirname(d);
  }
  throw new Error('dist/server.js not found: run `node esbuild.mjs` first');
}

function fail(msg: string): never {
  throw new Error(`invariant (language server): ${msg}`);
}

export class LspObserver {
  private waiting = new Map<string, (d: Diagnostic[]) => void>();
  private exited: string | undefined;
  stderr = '';
  cases = 0;

  private constructor(
    private readonly child: ChildProcess,
    private readonly conn: ProtocolConnection,
  ) {}

  static async start(): Promise<LspObserver> {
    const child = spawn(process.execPath, [serverScript(), '--stdio'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const conn = createProtocolConnection(
      new StreamMessageReader(child.stdout!),
      new StreamMessageWriter(child.stdin!),
    );
    const o = new LspObserver(child, conn);
    child.stderr!.on('data', (d) => {
      o.stderr = (o.stderr + d).slice(-4000);
    });
    child.on('exit', (code, signal) => {
      o.exited = `exited (code ${code}, signal ${signal})`;
    });
    conn.onNotification(PublishDiagnosticsNotification.type, (p) => {
      const w = o.waiting.get(p.uri);
      if (w) {
        o.waiting.delete(p.uri);
        w(p.diagnostics);
      }
    });
    conn.listen();
    // No workspace folder: the server must not scan the temp folder for plans.
    await conn.sendRequest(InitializeRequest.type, {
      processId: process.pid,
      rootUri: null,
      workspaceFolders: null,
      capabilities: {},
    });
    await conn.sendNotification(InitializedNotification.type, {});
    return o;
  }

  private alive(): void {
    if (this.exited) fail(`the server ${this.exited}; stderr: ${this.stderr}`);
  }

  readonly observe: Observer = async (checkpointPath, caseDir) => {
    this.alive();
    this.cases++;
    let expected: CheckpointError | undefined;
    let tensors = 0;
    try {
      tensors = (await openCheckpoint(checkpointPath)).tensors.length;
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      expected = e;
    }
    const plan = path.join(caseDir, 'loftq.json');
    const text = JSON.stringify({ checkpoint: path.relative(caseDir, checkpointPath) }, null, 2);
    fs.writeFileSync(plan, text);
    const uri = pathToFileURL(plan).toString();
    const diags = new Promise<Diagnostic[]>((resolve) => this.waiting.set(uri, resolve));
    await this.conn.sendNotification(DidOpenTextDocumentNotification.type, {
      textDocument: { uri, languageId: 'jsonc', version: 1, text },
    });
    await this.conn.sendNotification(DidCloseTextDocumentNotification.type, { textDocument: { uri } });
    const inspect = this.conn.sendRequest(Methods.inspect, { checkpoint: checkpointPath }).then(
      (r) => ({ ok: true as const, r: r as InspectResult }),
      (e: Error) => ({ ok: false as const, message: e.message }),
    );
    const [d, i] = await Promise.all([diags, inspect]);
    this.alive();
    const ckDiags = d.filter((x) => x.code === 'checkpoint');
    if (expected) {
      // The diagnostic carries the problem as the reader wrote it, raw or with file-borne names escaped.
      const escaped = expected.message.slice(expected.message.indexOf(': ') + 2);
      if (
        !ckDiags.some((x) => x.severity === 1 && (x.message.includes(expected.problem) || x.message.includes(escaped)))
      ) {
        fail(
          `no checkpoint error diagnostic with '${expected.problem}' (got ${JSON.stringify(d.map((x) => x.message))})`,
        );
      }
      if (i.ok || i.message !== expected.message)
        fail(`loftq/inspect answered ${i.ok ? 'a result' : `'${i.message}'`}, expected '${expected.message}'`);
      return ['lsp: refused checkpoint diagnosed'];
    } else {
      if (ckDiags.length) fail(`an accepted checkpoint got a checkpoint diagnostic: ${ckDiags[0].message}`);
      if (!i.ok || i.r.totals.tensors !== tensors)
        fail(
          'loftq/inspect of an accepted checkpoint: ' +
            (i.ok ? `${i.r.totals.tensors} tensors, expected ${tensors}` : i.message),
        );
      return ['lsp: accepted checkpoint, no error'];
    }
  };

  async stop(): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((res) => this.child.once('exit', () => res()));
    try {
      await this.conn.sendRequest(ShutdownRequest.type);
      await this.conn.sendNotification(ExitNotification.type);
    } catch {
      /* gone already */
    }
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await done;
    clearTimeout(t);
    this.conn.dispose();
  }

  /** Whether the server is still running (it must be, after every case). */
  get running(): boolean {
    return !this.exited;
  }
}
