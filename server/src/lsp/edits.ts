// Plan-file edits as LSP TextEdits through jsonc-parser's `modify`, which touches only the
// edited node and formats the inserted text like the rest of the file (indent, line ends).

import { FormattingOptions, modify } from 'jsonc-parser';
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
    const ed = modify(text, c.path, c.value, { formattingOptions, isArrayInsertion: c.insert });
    const tmp = TextDocument.create(doc.uri, doc.languageId, doc.version, text);
    steps.push(ed.map((e) => ({ range: { start: tmp.positionAt(e.offset), end: tmp.positionAt(e.offset + e.length) }, newText: e.content })));
    for (const e of [...ed].sort((a, b) => b.offset - a.offset)) text = text.slice(0, e.offset) + e.content + text.slice(e.offset + e.length);
  }
  if (steps.length === 1) return { text, edits: steps[0] };
  const end = doc.positionAt(doc.getText().length);
  return { text, edits: [{ range: { start: { line: 0, character: 0 }, end }, newText: text }] };
}
