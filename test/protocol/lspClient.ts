// A real JSON-RPC client for the protocol tier: spawns the bundled server (dist/server.js
// or `dist/cli.js lsp`) over stdio and speaks LSP to it through vscode-languageserver-protocol.

import { ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { InitializeResult } from 'vscode-languageserver-protocol';
import {
  createProtocolConnection,
  Diagnostic,
  DidChangeTextDocumentNotification,
  DidChangeWatchedFilesNotification,
  DidCloseTextDocumentNotification,
  DidOpenTextDocumentNotification,
  ExitNotification,
  FileChangeType,
  InitializedNotification,
  InitializeRequest,
  ProtocolConnection,
  PublishDiagnosticsNotification,
  PublishDiagnosticsParams,
  RegistrationRequest,
  ShutdownRequest,
  StreamMessageReader,
  StreamMessageWriter,
  ConfigurationRequest,
  WorkDoneProgressCreateRequest,
  ClientCapabilities,
} from 'vscode-languageserver-protocol/node';
import { repoRoot } from '../helpers';

export const uriOf = (file: string) => pathToFileURL(file).toString();

export interface StartOptions {
  root: string;
  /** `server` runs dist/server.js --stdio; `cli` runs `dist/cli.js lsp --stdio`. */
  entry?: 'server' | 'cli';
  /** What workspace/configuration answers for section `loftq`. */
  settings?: Record<string, unknown>;
  capabilities?: ClientCapabilities;
}

export class LspClient {
  readonly diagnostics = new Map<string, PublishDiagnosticsParams>();
  readonly registrations: { method: string; registerOptions?: unknown }[] = [];
  readonly progress: { token: string | number; value: any }[] = [];
  readonly notifications: { method: string; params: any }[] = [];
  private waiters: (() => void)[] = [];
  stderr = '';
  /** The server's answer to `initialize`. */
  initializeResult?: InitializeResult;

  private constructor(
    readonly child: ChildProcess,
    readonly conn: ProtocolConnection,
  ) {}

  static async start(o: StartOptions): Promise<LspClient> {
    const args =
      o.entry === 'cli'
        ? [path.join(repoRoot, 'dist', 'cli.js'), 'lsp', '--stdio']
        : [path.join(repoRoot, 'dist', 'server.js'), '--stdio'];
    const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const conn = createProtocolConnection(
      new StreamMessageReader(child.stdout!),
      new StreamMessageWriter(child.stdin!),
    );
    const c = new LspClient(child, conn);
    child.stderr!.on('data', (d) => {
      c.stderr += d;
    });
    conn.onNotification(PublishDiagnosticsNotification.type, (p) => {
      c.diagnostics.set(p.uri, p);
      c.wake();
    });
    conn.onRequest(RegistrationRequest.type, (p) => {
      c.registrations.push(...p.registrations);
      c.wake();
    });
    conn.onRequest(ConfigurationRequest.type, (p) =>
      p.items.map((i) => (i.section === 'loftq' ? (o.settings ?? {}) : null)),
    );
    conn.onRequest(WorkDoneProgressCreateRequest.type, () => null);
    conn.onNotification('$/progress', (p: any) => {
      c.progress.push(p);
      c.wake();
    });
    conn.onUnhandledNotification((m) => {
      c.notifications.push({ method: m.method, params: m.params });
      c.wake();
    });
    conn.listen();
    const root = uriOf(o.root);
    c.initializeResult = await conn.sendRequest(InitializeRequest.type, {
      processId: process.pid,
      rootUri: root,
      workspaceFolders: [{ uri: root, name: 'ws' }],
      capabilities: o.capabilities ?? {
        workspace: {
          configuration: true,
          didChangeWatchedFiles: { dynamicRegistration: true },
          workspaceFolders: true,
        },
        window: { workDoneProgress: true },
        textDocument: {
          publishDiagnostics: { relatedInformation: true },
          hover: { contentFormat: ['markdown'] },
          codeAction: { disabledSupport: true },
        },
      },
    });
    await conn.sendNotification(InitializedNotification.type, {});
    return c;
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves with the first value of `check` that is not undefined, re-checked on every message. */
  async until<T>(check: () => T | undefined, what: string, timeoutMs = 15000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = check();
      if (v !== undefined) return v;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; stderr: ${this.stderr}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }

  /** The next diagnostics for `uri` that satisfy `ok` (published after `since` messages). */
  diagnosticsFor(
    uri: string,
    ok: (d: Diagnostic[]) => boolean = () => true,
    what = `diagnostics of ${uri}`,
  ): Promise<Diagnostic[]> {
    return this.until(() => {
      const p = this.diagnostics.get(uri);
      return p && ok(p.diagnostics) ? p.diagnostics : undefined;
    }, what);
  }

  open(uri: string, text: string, version = 1) {
    return this.conn.sendNotification(DidOpenTextDocumentNotification.type, {
      textDocument: { uri, languageId: 'jsonc', version, text },
    });
  }

  change(uri: string, text: string, version: number) {
    return this.conn.sendNotification(DidChangeTextDocumentNotification.type, {
      textDocument: { uri, version },
      contentChanges: [{ text }],
    });
  }

  close(uri: string) {
    return this.conn.sendNotification(DidCloseTextDocumentNotification.type, { textDocument: { uri } });
  }

  filesChanged(changes: { uri: string; type?: FileChangeType }[]) {
    return this.conn.sendNotification(DidChangeWatchedFilesNotification.type, {
      changes: changes.map((c) => ({ uri: c.uri, type: c.type ?? FileChangeType.Changed })),
    });
  }

  async stop(): Promise<void> {
    const exited = new Promise<void>((res) => this.child.once('exit', () => res()));
    try {
      await this.conn.sendRequest(ShutdownRequest.type);
      await this.conn.sendNotification(ExitNotification.type);
    } catch {
      /* already gone */
    }
    const t = setTimeout(() => this.child.kill(), 3000);
    await exited;
    clearTimeout(t);
    this.conn.dispose();
  }
}
