// Shared setup of the protocol tests: a temp workspace holding a copy of the stories260K
// checkpoint, and exact ranges computed from the text written (not from the server's parser).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot, tempDir } from '../helpers';
import type { Range } from 'vscode-languageserver-protocol';
import { LspClient, StartOptions } from './lspClient';

export const STORIES = path.join(repoRoot, 'examples', 'stories260k', 'model.safetensors');

export function workspace(): { root: string; ckptDir: string } {
  const root = tempDir('loftq-lsp-');
  const ckptDir = path.join(root, 'ckpt');
  fs.mkdirSync(ckptDir);
  fs.copyFileSync(STORIES, path.join(ckptDir, 'model.safetensors'));
  return { root, ckptDir };
}

/** Range of the `nth` occurrence of `needle` in `text`. */
export function rangeOf(text: string, needle: string, nth = 0): Range {
  let i = -1;
  for (let k = 0; k <= nth; k++) {
    i = text.indexOf(needle, i + 1);
    if (i < 0) throw new Error(`'${needle}' not in text`);
  }
  const pos = (o: number) => {
    const before = text.slice(0, o).split('\n');
    return { line: before.length - 1, character: before[before.length - 1].length };
  };
  return { start: pos(i), end: pos(i + needle.length) };
}

/** Applies LSP TextEdits (non-overlapping) to a text. */
export function applyTextEdits(text: string, edits: { range: Range; newText: string }[]): string {
  const lines = text.split('\n');
  const offset = (p: { line: number; character: number }) =>
    lines.slice(0, p.line).reduce((s, l) => s + l.length + 1, 0) + p.character;
  const sorted = [...edits].sort((a, b) => offset(b.range.start) - offset(a.range.start));
  let out = text;
  for (const e of sorted) out = out.slice(0, offset(e.range.start)) + e.newText + out.slice(offset(e.range.end));
  return out;
}

export function rmrf(dir: string) {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Starts the server on a workspace, runs f with a client of it, then stops the server and
 *  removes the workspace, whatever f did. */
export async function withServer<T>(
  root: string,
  f: (c: LspClient) => Promise<T>,
  opts: Omit<StartOptions, 'root'> = {},
): Promise<T> {
  const c = await LspClient.start({ root, ...opts });
  try {
    return await f(c);
  } finally {
    await c.stop();
    rmrf(root);
  }
}
