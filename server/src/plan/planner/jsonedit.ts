// Minimal, layout-keeping edits to JSON-with-comments text. jsonc-parser's `modify` either
// reflows every line it touches (with formatting options) or glues new members onto the
// previous line without spacing (without); these helpers add one-line members on their
// own lines at the indentation of their siblings, keep a comment that ends the previous
// member's line with that member, and remove array items together with their line.

import { applyEdits, findNodeAtLocation, JSONPath, modify, Node, parseTree } from 'jsonc-parser';

/** `{ "a": 1, "b": [2, 3] }` — one line, spaced like hand-written JSON. */
export function compact(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(compact).join(', ')}]`;
  if (v && typeof v === 'object') {
    const body = Object.entries(v)
      .filter(([, x]) => x !== undefined)
      .map(([k, x]) => `${JSON.stringify(k)}: ${compact(x)}`)
      .join(', ');
    return body ? `{ ${body} }` : '{}';
  }
  return JSON.stringify(v);
}

export function eolOf(text: string): string {
  return text.includes('\r\n') ? '\r\n' : '\n';
}

function indentUnit(text: string): string {
  return /\n([ \t]+)\S/.exec(text)?.[1] ?? '  ';
}

const lineStart = (t: string, at: number) => t.lastIndexOf('\n', at - 1) + 1;
const indentAt = (t: string, at: number) => /^[ \t]*/.exec(t.slice(lineStart(t, at)))![0];

function lineEnd(t: string, at: number): number {
  let e = t.indexOf('\n', at);
  if (e < 0) e = t.length;
  return t[e - 1] === '\r' ? e - 1 : e;
}

const ONLY_COMMENT = /^\s*(\/\/.*|\/\*.*\*\/\s*)?$/;

export function nodeAt(text: string, path: JSONPath): Node | undefined {
  const root = parseTree(text);
  return root ? findNodeAtLocation(root, path) : undefined;
}

/** Inserts `pieces` (already rendered) as the last members of an object or array node. */
function appendMembers(text: string, container: Node, pieces: string[]): string {
  const eol = eolOf(text);
  const close = container.offset + container.length - 1;
  const kids = container.children ?? [];
  if (!kids.length) {
    const outer = indentAt(text, container.offset);
    const inner = outer + indentUnit(text);
    return (
      text.slice(0, container.offset + 1) +
      eol +
      pieces.map((p) => inner + p).join(',' + eol) +
      eol +
      outer +
      text.slice(close)
    );
  }
  const last = kids[kids.length - 1];
  const end = last.offset + last.length;
  if (!text.slice(container.offset, close).includes('\n'))
    return text.slice(0, end) + pieces.map((p) => ', ' + p).join('') + text.slice(end);
  const inner = indentAt(text, last.offset);
  const body = pieces.map((p) => eol + inner + p).join(',');
  const le = lineEnd(text, end);
  const rest = text.slice(end, le);
  if (ONLY_COMMENT.test(rest)) return text.slice(0, end) + ',' + rest + body + text.slice(le);
  return text.slice(0, end) + ',' + body + text.slice(end);
}

/** Sets `path` (an object member) to `value`: replaces an existing value, else adds the member. */
export function setMember(text: string, path: JSONPath, value: unknown): string {
  const existing = nodeAt(text, path);
  if (existing) return text.slice(0, existing.offset) + compact(value) + text.slice(existing.offset + existing.length);
  const parentPath = path.slice(0, -1);
  const parent = parentPath.length ? nodeAt(text, parentPath) : parseTree(text);
  if (!parent || parent.type !== 'object') {
    if (!parentPath.length) throw new Error('the document must hold a JSON object');
    return setMember(text, parentPath, { [String(path[path.length - 1])]: value });
  }
  return appendMembers(text, parent, [`${JSON.stringify(String(path[path.length - 1]))}: ${compact(value)}`]);
}

/** Appends items to the array at `path`, one compact item per line. */
export function appendItems(text: string, path: JSONPath, items: unknown[]): string {
  const arr = nodeAt(text, path);
  if (!arr || arr.type !== 'array') throw new Error(`no array at ${path.join('.')}`);
  return appendMembers(text, arr, items.map(compact));
}

/** Removes a member of an object (jsonc-parser's edit: the member and its separating comma). */
export function removeMember(text: string, path: JSONPath): string {
  return applyEdits(text, modify(text, path, undefined, {}));
}

/** Removes array item `index`, with its whole line (and a comment ending it) when it stands alone on it. */
export function removeItem(text: string, path: JSONPath, index: number): string {
  const arr = nodeAt(text, path);
  const kids = arr?.children ?? [];
  const item = kids[index];
  if (!item) return text;
  const ls = lineStart(text, item.offset);
  const end = item.offset + item.length;
  const le = lineEnd(text, end);
  const after = /^\s*,?/.exec(text.slice(end, le))![0];
  const alone = /^\s*$/.test(text.slice(ls, item.offset)) && ONLY_COMMENT.test(text.slice(end + after.length, le));
  if (!alone) return removeMember(text, [...path, index]);
  const next = text.indexOf('\n', le);
  let out = text.slice(0, ls) + text.slice(next < 0 ? text.length : next + 1);
  if (index === kids.length - 1 && index > 0) {
    // the new last item must not keep its separating comma
    const prev = kids[index - 1];
    const pe = prev.offset + prev.length;
    const m = /^\s*,/.exec(out.slice(pe));
    if (m) out = out.slice(0, pe) + m[0].slice(0, -1) + out.slice(pe + m[0].length);
  }
  return out;
}
