// Every `loftq/…` message of the contract (lsp_ext.ts Methods) has a typed LSP message
// (protocol/requests.ts), is served or sent by the language server, is used by a client
// (the VS Code extension or the protocol tier's real JSON-RPC client), and is listed in
// docs/lsp.md's table — and the table lists nothing else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../helpers';
import { Methods } from '../../server/src/protocol/lsp_ext';
import { Notifications, Requests } from '../../server/src/protocol/requests';

function readAll(dir: string): string {
  let text = '';
  for (const e of fs.readdirSync(path.join(repoRoot, dir), { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) text += readAll(p);
    else if (p.endsWith('.ts')) text += fs.readFileSync(path.join(repoRoot, p), 'utf8') + '\n';
  }
  return text;
}

const methods = Object.entries(Methods) as [keyof typeof Methods, string][];

test('each method has exactly one typed message, with the same name', () => {
  const typed = [...Object.entries(Requests), ...Object.entries(Notifications)].map(([k, t]) => [k, t.method]);
  assert.deepEqual(typed.sort(), methods.map(([k, m]) => [k, m]).sort());
});

test('the server handles each request and sends each notification; a client uses each', () => {
  const server = readAll('server/src/lsp');
  const clients = readAll('client/src') + readAll('test/protocol');
  for (const [key] of Object.entries(Requests)) {
    assert.match(server, new RegExp(`onRequest\\(Requests\\.${key}\\b`), `the server handles ${key}`);
    assert.match(clients, new RegExp(`(Requests|Methods)\\.${key}\\b`), `a client sends ${key}`);
  }
  for (const [key] of Object.entries(Notifications)) {
    assert.match(server, new RegExp(`sendNotification\\(Notifications\\.${key}\\b`), `the server sends ${key}`);
    assert.match(clients, new RegExp(`(Notifications|Methods)\\.${key}\\b`), `a client listens to ${key}`);
  }
});

test('docs/lsp.md lists every method in its table and names no other', () => {
  const doc = fs.readFileSync(path.join(repoRoot, 'docs', 'lsp.md'), 'utf8');
  const rows = [...doc.matchAll(/^\| `(loftq\/\w+)` \|/gm)].map((m) => m[1]);
  assert.deepEqual([...rows].sort(), methods.map(([, m]) => m).sort(), 'one table row per method');
  const named = new Set([...doc.matchAll(/\bloftq\/(\w+)/g)].map((m) => `loftq/${m[1]}`));
  const known = new Set(methods.map(([, m]) => m));
  assert.deepEqual(
    [...named].filter((m) => !known.has(m)),
    [],
    'methods the docs name that do not exist',
  );
});
