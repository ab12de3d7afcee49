// The viewer's module tree: tensor names split at dots into a tree (model → layers → 0 →
// self_attn → q_proj.weight), children in natural order, and chains of single children
// folded into one node (`q_proj` + `weight` → `q_proj.weight`) so the tree stays shallow.
// DOM-free so it is unit-tested on its own.
import { naturalCompare } from '../../server/src/base/naturalSort';

export interface TreeItem {
  name: string;
  parameters: number;
  bytes: number;
}

export interface TreeNode {
  /** The dotted segment(s) this node adds to its parent's path. */
  label: string;
  /** Full dotted path from the root (the tensor name for a leaf). */
  path: string;
  children: TreeNode[];
  /** Index into the input of the tensor this node is, when it is one. */
  tensor?: number;
  /** Tensors, parameters and bytes in this subtree. */
  tensors: number;
  parameters: number;
  bytes: number;
}

function node(label: string, path: string): TreeNode {
  return { label, path, children: [], tensors: 0, parameters: 0, bytes: 0 };
}

export function buildModuleTree(items: readonly TreeItem[]): TreeNode {
  const root = node('', '');
  const index = new Map<string, TreeNode>();
  items.forEach((item, i) => {
    let at = root;
    const segs = item.name.split('.');
    segs.forEach((seg, k) => {
      const p = segs.slice(0, k + 1).join('.');
      let next = index.get(p);
      if (!next) {
        next = node(seg, p);
        index.set(p, next);
        at.children.push(next);
      }
      at = next;
    });
    // A name that is also a prefix of another (`a.b` and `a.b.c`) keeps both: the tensor
    // sits on the inner node.
    at.tensor = i;
  });
  const finish = (n: TreeNode): void => {
    for (const c of n.children) finish(c);
    n.children.sort((a, b) => naturalCompare(a.label, b.label));
    // Fold a single child into a node that is not itself a tensor.
    while (n !== root && n.tensor === undefined && n.children.length === 1) {
      const only = n.children[0];
      n.label = `${n.label}.${only.label}`;
      n.path = only.path;
      n.tensor = only.tensor;
      n.children = only.children;
    }
    n.tensors = (n.tensor !== undefined ? 1 : 0) + n.children.reduce((s, c) => s + c.tensors, 0);
    const own = n.tensor !== undefined ? items[n.tensor] : undefined;
    n.parameters = (own?.parameters ?? 0) + n.children.reduce((s, c) => s + c.parameters, 0);
    n.bytes = (own?.bytes ?? 0) + n.children.reduce((s, c) => s + c.bytes, 0);
  };
  finish(root);
  return root;
}
