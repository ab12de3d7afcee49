// Plan-file edits as LSP TextEdits through jsonc-parser's `modify`, which touches only the
// edited node and formats the inserted text like the rest of the file (indent, line ends).

import { Edit, findNodeAtLocation, FormattingOptions, modify, parseTree } from 'jsonc-parser';
import type { TextEdit } from 'vscode-languageserver';
import { TextDocument } from 'vscode-languageserver-textdocument';
import type { JsonPath } from '../plan/planfile';

/** The file's own indentation and line ending, so inserted entries look hand-written. */
export function formattingOf(text: string): FormattingOptions {
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  const m = /^([ \t]+)\S/m.exec(text);
  if (m && m[1].startsWith('\t')) return { insertSpaces: false, tabSize: 1, eol };
  return { insertSpaces: true, tabSize: m ? m[1].length : 2, eol };
}

export interface Change {
  path: JsonPath;
  /** undefined removes the node. */
  value: unknown;
  /** Insert into the array at path's last index (-1 appends) instead of replacing. */
  insert?: boolean;
}

/** Applies the changes one after another to the text and returns the resulting edits of each step. */
export function planEdits(doc: TextDocument, changes: Change[]): { text: string; edits: TextEdit[] } {
  let text = doc.getText();
  const formattingOptions = formattingOf(text);
  // Later changes are computed on the text produced by the earlier ones, so a multi-step
  // fix becomes one whole-document replacement when more than one step is involved.
  const steps: TextEdit[][] = [];
  for (const c of changes) {
    const ed = appendLikeSiblings(text, c, formattingOptions) ?? modify(text, c.path, c.value, { formattingOptions, isArrayInsertion: c.insert });
    const tmp = TextDocument.create(doc.uri, doc.languageId, doc.version, text);
    steps.push(ed.map((e) => ({ range: { start: tmp.positionAt(e.offset), end: tmp.positionAt(e.offset + e.length) }, newText: e.content })));
    for (const e of [...ed].sort((a, b) => b.offset - a.offset)) text = text.slice(0, e.offset) + e.content + text.slice(e.offset + e.length);
  }
  if (steps.length === 1) return { text, edits: steps[0] };
  const end = doc.positionAt(doc.getText().length);
  return { text, edits: [{ range: { start: { line: 0, character: 0 }, end }, newText: text }] };
}

/**
 * Appending to a non-empty array: `modify` re-formats the neighbouring element too, which
 * would rewrite a hand-written one-line entry. Instead the new entry copies the last
 * element's style — one line (`{ "match": "x", "bits": 4 }`) or indented lines — and its indentation.
 */
function appendLikeSiblings(text: string, c: Change, f: FormattingOptions): Edit[] | undefined {
  if (!c.insert || c.path[c.path.length - 1] !== -1 || c.value === undefined) return undefined;
  const root = parseTree(text, [], { allowTrailingComma: true });
  const arr = root && findNodeAtLocation(root, c.path.slice(0, -1));
  const last = arr?.type === 'array' ? arr.children?.[arr.children.length - 1] : undefined;
  if (!last) return undefined;
  const lineStart = text.lastIndexOf('\n', last.offset - 1) + 1;
  const indent = /^[ \t]*/.exec(text.slice(lineStart, last.offset))![0];
  const eol = f.eol ?? '\n';
  const oneLine = !text.slice(last.offset, last.offset + last.length).includes('\n');
  const unit = f.insertSpaces === false ? '\t' : ' '.repeat(f.tabSize ?? 2);
  const body = oneLine ? inlineJson(c.value) : JSON.stringify(c.value, null, unit).split('\n').join(eol + indent);
  return [{ offset: last.offset + last.length, length: 0, content: `,${eol}${indent}${body}` }];
}

/** `{ "a": 1, "b": [1, 2] }` — JSON on one line with the spacing people type. */
function inlineJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(inlineJson).join(', ')}]`;
  if (v && typeof v === 'object') {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined);
    return entries.length ? `{ ${entries.map(([k, x]) => `${JSON.stringify(k)}: ${inlineJson(x)}`).join(', ')} }` : '{}';
  }
  return JSON.stringify(v);
}
