// The client is thin (issue 12): client/ imports only the protocol (server/src/protocol), the
// pure registry (server/src/registry), the natural order of names (server/src/base/naturalSort.ts)
// and pure shared webview helpers (webviews/src) — which in turn import nothing else but the LSP
// protocol package — plus vscode, the language client and
// jsonc-parser. Checkpoints,
// reports and plans are read through `loftq/…` requests. This test fails on any other import.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../helpers';

// base/naturalSort.ts: the one natural order of names (imports nothing), shared with the webviews.
const SHARED = ['server/src/protocol/', 'server/src/registry/', 'webviews/src/', 'server/src/base/naturalSort.ts'];
const PACKAGES = new Set(['vscode', 'vscode-languageclient', 'vscode-languageclient/node', 'jsonc-parser']);

function imports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const found: string[] = [];
  for (const re of [
    /^\s*(?:import|export)\b[^'"]*?\bfrom\s+['"]([^'"]+)['"]/gm,
    /^\s*import\s+['"]([^'"]+)['"]/gm,
    /\b(?:import|require)\(\s*['"]([^'"]+)['"]\s*\)/g,
  ]) {
    for (const m of text.matchAll(re)) found.push(m[1]);
  }
  return found;
}

function resolve(from: string, spec: string): string {
  const base = path.resolve(path.dirname(from), spec);
  for (const c of [`${base}.ts`, path.join(base, 'index.ts'), base])
    if (fs.existsSync(c) && fs.statSync(c).isFile()) return c;
  return base;
}

const rel = (f: string) => path.relative(repoRoot, f).split(path.sep).join('/');

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Every import that breaks the rule, as "file → what". */
export function thinClientViolations(): string[] {
  const bad: string[] = [];
  const seen = new Set<string>();
  const check = (file: string, inClient: boolean) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const spec of imports(file)) {
      if (!spec.startsWith('.')) {
        // Shared modules are pure: no Node built-ins, no package but the LSP protocol's types (protocol/requests.ts).
        const ok = inClient
          ? PACKAGES.has(spec) || spec.startsWith('node:')
          : spec === 'vscode-languageserver-protocol';
        if (!ok) bad.push(`${rel(file)} → ${spec}`);
        continue;
      }
      const target = resolve(file, spec);
      const r = rel(target);
      if (r.startsWith('client/src/')) {
        if (!inClient) bad.push(`${rel(file)} → ${r} (a shared module imports the client)`);
        else check(target, true);
      } else if (SHARED.some((s) => r.startsWith(s))) check(target, false);
      else bad.push(`${rel(file)} → ${r}`);
    }
  };
  for (const f of walk(path.join(repoRoot, 'client', 'src'))) check(f, true);
  return bad;
}

test('client/ imports only the protocol, the registry and pure shared helpers', () => {
  assert.deepEqual(thinClientViolations(), []);
});

test('the import check sees a forbidden import (a scratch client file importing server code)', () => {
  const scratch = path.join(repoRoot, 'client', 'src', `__scratch_${process.pid}.ts`);
  fs.writeFileSync(
    scratch,
    "import { openCheckpoint } from '../../server/src/checkpoint';\nexport const x = openCheckpoint;\n",
  );
  try {
    assert.deepEqual(thinClientViolations(), [`client/src/${path.basename(scratch)} → server/src/checkpoint/index.ts`]);
  } finally {
    fs.rmSync(scratch);
  }
});
