// Tiny DOM helpers for the webviews. Children that are strings become text nodes, so
// names from checkpoints can never inject markup.

import { namePieces } from './names';

type Child = Node | string | false | null | undefined;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) {
    if (c === false || c === null || c === undefined) continue;
    e.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return e;
}

/** A tensor name as text that may wrap only after a separator (a <wbr> between pieces). */
export function nameText(name: string): DocumentFragment {
  const f = document.createDocumentFragment();
  namePieces(name).forEach((p, i) => {
    if (i) f.append(document.createElement('wbr'));
    f.append(document.createTextNode(p));
  });
  return f;
}
