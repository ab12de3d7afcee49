// JSON path ↔ text range mapping for the plan file (JSON with comments). Diagnostics,
// hovers and code actions all speak JSON paths; the editor speaks offsets/positions.

import { findNodeAtLocation, getLocation, Node, parseTree } from 'jsonc-parser';
import type { JsonPath } from '../plan/planfile';

export interface Span {
  offset: number;
  length: number;
}

export type SpanPart = 'value' | 'key' | 'property';

export function planTree(text: string): Node | undefined {
  return parseTree(text, [], { allowTrailingComma: true, disallowComments: false });
}

/**
 * The text span of the node at `path`: its value (default), the property key, or the
 * whole `"key": value` pair. The root path (and a path that does not exist) maps to the
 * first character of the document's root value so that a problem is never unplaced.
 */
export function spanOfPath(root: Node | undefined, path: JsonPath, part: SpanPart = 'value'): Span {
  if (!root) return { offset: 0, length: 0 };
  if (path.length === 0) return { offset: root.offset, length: 1 };
  const node = findNodeAtLocation(root, path);
  if (!node) {
    // The deepest existing ancestor is the best anchor for "missing X" problems.
    for (let n = path.length - 1; n >= 0; n--) {
      const parent = n === 0 ? root : findNodeAtLocation(root, path.slice(0, n));
      if (parent) return keySpanOrFirstChar(parent);
    }
    return { offset: root.offset, length: 1 };
  }
  const prop = node.parent?.type === 'property' ? node.parent : undefined;
  if (part === 'key' && prop?.children?.[0])
    return { offset: prop.children[0].offset, length: prop.children[0].length };
  if (part === 'property' && prop) return { offset: prop.offset, length: prop.length };
  return { offset: node.offset, length: node.length };
}

function keySpanOrFirstChar(node: Node): Span {
  const prop = node.parent?.type === 'property' ? node.parent : undefined;
  if (prop?.children?.[0]) return { offset: prop.children[0].offset, length: prop.children[0].length };
  return { offset: node.offset, length: 1 };
}

export interface PathAt {
  /** JSON path of the innermost value or key at the offset. */
  path: JsonPath;
  /** True when the offset is on a property key rather than a value. */
  atKey: boolean;
  /** The string value under the offset, when it is a string value. */
  stringValue?: string;
  /** Span of that string value (quotes included). */
  span?: Span;
}

/** The JSON path at a text offset (the inverse of spanOfPath). */
export function pathAtOffset(text: string, root: Node | undefined, offset: number): PathAt {
  const loc = getLocation(text, offset);
  const path = [...loc.path];
  if (loc.isAtPropertyKey) return { path, atKey: true };
  const node = root && path.length ? findNodeAtLocation(root, path) : undefined;
  if (node && node.type === 'string' && offset >= node.offset && offset <= node.offset + node.length) {
    return {
      path,
      atKey: false,
      stringValue: node.value as string,
      span: { offset: node.offset, length: node.length },
    };
  }
  return { path, atKey: false };
}
