// The layers of the code base (docs/architecture.md): no import cycle between folders and
// none between files, the leaves import nothing above them, and the numerical core never
// imports an editor or LSP package. Imports are read from the sources (type imports count
// for folders: a type cycle is still a design cycle).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../helpers';

interface Import {
  from: string;
  to: string;
  spec: string;
  typeOnly: boolean;
}

const ROOTS = ['server/src', 'client/src', 'webviews/src'];

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(repoRoot, dir), { withFileTypes: true })) {
    const p = path.posix.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

function resolve(fromFile: string, spec: string): string | undefined {
  const base = path.posix.normalize(path.posix.join(path.posix.dirname(fromFile), spec));
  const candidates = [`${base}.ts`, `${base}/index.ts`, base].filter((c) => c.endsWith('.ts'));
  return candidates.find((c) => fs.existsSync(path.join(repoRoot, c)));
}

const IMPORT_RE = /^\s*(import|export)\s+(type\s+)?[^;'"]*?\bfrom\s+'([^']+)'|^\s*import\s+'([^']+)'/gm;

function imports(): Import[] {
  const out: Import[] = [];
  for (const root of ROOTS) {
    for (const file of sources(root)) {
      const text = fs.readFileSync(path.join(repoRoot, file), 'utf8');
      for (const m of text.matchAll(IMPORT_RE)) {
        const spec = m[3] ?? m[4];
        const typeOnly = !!m[2];
        const to = spec.startsWith('.') ? resolve(file, spec) : undefined;
        out.push({ from: file, to: to ?? spec, spec, typeOnly });
      }
    }
  }
  return out;
}

/** server/src/engine/run.ts → engine; client/src/x.ts → client. */
function folderOf(file: string): string {
  const parts = file.split('/');
  return parts[0] === 'server' && parts[1] === 'src' ? parts[2] : parts[0];
}

/** Strongly connected components with more than one node (Tarjan). */
function cycles(edges: Map<string, Set<string>>): string[][] {
  let next = 0;
  const index = new Map<string, number>(),
    low = new Map<string, number>();
  const stack: string[] = [],
    on = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    on.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) found.push(scc.sort());
    }
  };
  for (const v of edges.keys()) if (!index.has(v)) visit(v);
  return found;
}

const ALL = imports();
const LOCAL = ALL.filter((i) => i.spec.startsWith('.'));

function folderEdges(): Map<string, Set<string>> {
  const edges = new Map<string, Set<string>>();
  for (const i of LOCAL) {
    const a = folderOf(i.from),
      b = folderOf(i.to);
    if (a === b) continue;
    if (!edges.has(a)) edges.set(a, new Set());
    edges.get(a)!.add(b);
  }
  return edges;
}

const explain = (scc: string[], by: (i: Import) => [string, string]) =>
  LOCAL.filter((i) => {
    const [a, b] = by(i);
    return a !== b && scc.includes(a) && scc.includes(b);
  })
    .map((i) => `${i.from} → ${i.spec}`)
    .join('\n  ');

test('no import cycle between folders', () => {
  const found = cycles(folderEdges());
  const why = (s: string[]) => `cycle ${s.join(' ↔ ')}:\n  ${explain(s, (i) => [folderOf(i.from), folderOf(i.to)])}`;
  assert.deepEqual(found, [], found.map(why).join('\n'));
});

test('no import cycle between files (value imports)', () => {
  const edges = new Map<string, Set<string>>();
  for (const i of LOCAL) {
    if (i.typeOnly) continue;
    if (!edges.has(i.from)) edges.set(i.from, new Set());
    edges.get(i.from)!.add(i.to);
  }
  assert.deepEqual(cycles(edges), []);
});

test('the layers: leaves import nothing above them; the libraries never import the engine', () => {
  const edges = folderEdges();
  const allowed: Record<string, string[]> = {
    registry: [],
    protocol: ['registry'],
    kernels: [],
    checkpoint: [],
    base: ['checkpoint', 'protocol', 'registry'],
  };
  for (const [folder, ok] of Object.entries(allowed)) {
    const extra = [...(edges.get(folder) ?? [])].filter((f) => !ok.includes(f));
    assert.deepEqual(extra, [], `${folder}/ imports only ${ok.join(', ') || 'itself'}`);
  }
  for (const lib of ['export', 'linalg', 'loftq', 'plan', 'quant', 'model', 'base']) {
    const up = LOCAL.filter((i) => folderOf(i.from) === lib && folderOf(i.to) === 'engine');
    assert.deepEqual(
      up.map((i) => `${i.from} → ${i.spec}`),
      [],
      `${lib}/ imports engine/`,
    );
  }
});

test('the numerical core imports neither vscode nor an LSP package', () => {
  // protocol/requests.ts pairs the contract's types into LSP message types for the front ends.
  const REQUESTS = 'server/src/protocol/requests.ts';
  const core = [
    'planInsight',
    'registry',
    'protocol',
    'base',
    'checkpoint',
    'quant',
    'kernels',
    'linalg',
    'loftq',
    'model',
    'engine',
    'export',
    'plan',
  ];
  const inCore = (i: Import) => i.from.startsWith('server/src/') && core.includes(folderOf(i.from));
  const lsp = (i: Import) => /^vscode/.test(i.spec) || i.to === REQUESTS;
  const bad = ALL.filter((i) => inCore(i) && i.from !== REQUESTS && lsp(i));
  assert.deepEqual(
    bad.map((i) => `${i.from} → ${i.spec}`),
    [],
  );
});

test('the check sees a cycle when there is one', () => {
  const pairs: [string, string[]][] = [
    ['a', ['b']],
    ['b', ['c']],
    ['c', ['a']],
    ['d', ['a']],
  ];
  const edges = new Map(pairs.map(([k, v]) => [k, new Set(v)]));
  assert.deepEqual(cycles(edges), [['a', 'b', 'c']]);
  assert.ok(LOCAL.length > 300, `read ${LOCAL.length} local imports`);
  assert.ok(LOCAL.some((i) => i.typeOnly) && LOCAL.some((i) => !i.typeOnly));
});
