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
    const ed =
      arrayEditLikeSiblings(text, c, formattingOptions) ??
      modify(text, c.path, c.value, { formattingOptions, isArrayInsertion: c.insert });
    const tmp = TextDocument.create(doc.uri, doc.languageId, doc.version, text);
    steps.push(
      ed.map((e) => ({
        range: { start: tmp.positionAt(e.offset), end: tmp.positionAt(e.offset + e.length) },
        newText: e.content,
      })),
    );
    for (const e of [...ed].sort((a, b) => b.offset - a.offset))
      text = text.slice(0, e.offset) + e.content + text.slice(e.offset + e.length);
  }
  if (steps.length === 1) return { text, edits: steps[0] };
  const end = doc.positionAt(doc.getText().length);
  return { text, edits: [{ range: { start: { line: 0, character: 0 }, end }, newText: text }] };
}

/**
 * Array entries (overrides) edited the way a person would: `modify` re-formats the
 * neighbouring element too, which would rewrite a hand-written one-line entry. Here a new
 * or replaced entry copies its neighbour's style — one line (`{ "match": "x", "bits": 4 }`)
 * or indented lines — and indentation, and a removal takes exactly its entry and comma.
 */
function arrayEditLikeSiblings(text: string, c: Change, f: FormattingOptions): Edit[] | undefined {
  const index = c.path[c.path.length - 1];
  if (typeof index !== 'number') return undefined;
  const root = parseTree(text, [], { allowTrailingComma: true });
  const arr = root && findNodeAtLocation(root, c.path.slice(0, -1));
  const items = arr?.type === 'array' ? (arr.children ?? []) : [];
  if (!arr || !items.length) return undefined;
  const style = (like: { offset: number; length: number }) => {
    const lineStart = text.lastIndexOf('\n', like.offset - 1) + 1;
    const indent = /^[ \t]*/.exec(text.slice(lineStart, like.offset))![0];
    const oneLine = !text.slice(like.offset, like.offset + like.length).includes('\n');
    const unit = f.insertSpaces === false ? '\t' : ' '.repeat(f.tabSize ?? 2);
    const body = oneLine
      ? inlineJson(c.value)
      : JSON.stringify(c.value, null, unit)
          .split('\n')
          .join((f.eol ?? '\n') + indent);
    return { indent, body };
  };
  if (c.insert && index === -1 && c.value !== undefined) {
    const last = items[items.length - 1];
    const { indent, body } = style(last);
    return [{ offset: last.offset + last.length, length: 0, content: `,${f.eol ?? '\n'}${indent}${body}` }];
  }
  if (c.insert || index < 0 || index >= items.length) return undefined;
  const node = items[index];
  if (c.value !== undefined) return [{ offset: node.offset, length: node.length, content: style(node).body }];
  if (items.length === 1) return [{ offset: arr.offset + 1, length: arr.length - 2, content: '' }];
  if (index < items.length - 1)
    return [{ offset: node.offset, length: items[index + 1].offset - node.offset, content: '' }];
  const prev = items[index - 1];
  return [
    { offset: prev.offset + prev.length, length: node.offset + node.length - (prev.offset + prev.length), content: '' },
  ];
}

/** `{ "a": 1, "b": [1, 2] }` — JSON on one line with the spacing people type. */
function inlineJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(inlineJson).join(', ')}]`;
  if (v && typeof v === 'object') {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined);
    return entries.length
      ? `{ ${entries.map(([k, x]) => `${JSON.stringify(k)}: ${inlineJson(x)}`).join(', ')} }`
      : '{}';
  }
  return JSON.stringify(v);
}
