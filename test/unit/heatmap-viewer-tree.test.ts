// The viewer's natural order of names, its module tree and where long names may wrap.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { buildModuleTree, TreeNode } from '../../webviews/src/moduleTree';
import { namePieces } from '../../webviews/src/names';
import { naturalCompare } from '../../server/src/base/naturalSort';

test('natural order: layer 2 before layer 10, text by code unit, zero padding tie-broken', () => {
  const names = [
    'model.layers.10.mlp',
    'model.layers.2.mlp',
    'model.layers.1.mlp',
    'lm_head',
    'model.layers.2.attn',
    'model.norm',
  ];
  assert.deepEqual([...names].sort(naturalCompare), [
    'lm_head',
    'model.layers.1.mlp',
    'model.layers.2.attn',
    'model.layers.2.mlp',
    'model.layers.10.mlp',
    'model.norm',
  ]);
  assert.ok(naturalCompare('x9', 'x10') < 0);
  assert.ok(naturalCompare('x10', 'x9') > 0);
  assert.ok(naturalCompare('x123456789012345678901', 'x99') > 0, 'numbers longer than a double still compare');
  assert.ok(naturalCompare('a', 'a1') < 0);
  const padded = naturalCompare('a01', 'a1');
  assert.ok(padded !== 0 && Math.sign(padded) === -Math.sign(naturalCompare('a1', 'a01')));
  assert.equal(naturalCompare('same.1', 'same.1'), 0);
});

/** "label (tensors)" lines indented by depth, for readable assertions. */
function outline(n: TreeNode, depth = 0): string[] {
  const me = depth ? [`${'  '.repeat(depth - 1)}${n.label} (${n.tensors})`] : [];
  return [...me, ...n.children.flatMap((c) => outline(c, depth + 1))];
}

test('module tree: layers in natural order, modules under them, single-child chains folded', () => {
  const names = [];
  for (const l of [10, 2, 0, 1]) {
    for (const m of ['self_attn.q_proj', 'self_attn.k_proj', 'mlp.down_proj'])
      names.push(`model.layers.${l}.${m}.weight`);
  }
  names.push(
    'model.embed_tokens.weight',
    'model.norm.weight',
    'lm_head.weight',
    'model.layers.0.self_attn.q_proj.bias',
  );
  const items = names.map((name, i) => ({ name, parameters: i + 1, bytes: 2 * (i + 1) }));
  const tree = buildModuleTree(items);
  assert.deepEqual(outline(tree).slice(0, 12), [
    'lm_head.weight (1)',
    'model (15)',
    '  embed_tokens.weight (1)',
    '  layers (13)',
    '    0 (4)',
    '      mlp.down_proj.weight (1)',
    '      self_attn (3)',
    '        k_proj.weight (1)',
    '        q_proj (2)',
    '          bias (1)',
    '          weight (1)',
    '    1 (3)',
  ]);
  const layers = tree.children[1].children[1];
  assert.deepEqual(
    layers.children.map((c) => c.label),
    ['0', '1', '2', '10'],
  );
  // Totals add up, and a leaf points back at its input row.
  assert.equal(tree.tensors, names.length);
  assert.equal(
    tree.parameters,
    items.reduce((s, x) => s + x.parameters, 0),
  );
  assert.equal(tree.bytes, 2 * tree.parameters);
  const leaf = tree.children[0];
  assert.equal(leaf.path, 'lm_head.weight');
  assert.equal(names[leaf.tensor!], 'lm_head.weight');
  assert.equal(layers.path, 'model.layers');
});

test('a name that is also a prefix of another keeps both', () => {
  const tree = buildModuleTree([
    { name: 'a.b', parameters: 1, bytes: 1 },
    { name: 'a.b.c', parameters: 2, bytes: 2 },
  ]);
  assert.deepEqual(outline(tree), ['a.b (2)', '  c (1)']);
  assert.equal(tree.children[0].tensor, 0);
});

test('long names wrap only after separators, and the pieces rebuild the name', () => {
  const n = 'model.layers.17.self_attn.q_proj.weight';
  assert.deepEqual(namePieces(n), ['model.', 'layers.', '17.', 'self_', 'attn.', 'q_', 'proj.', 'weight']);
  assert.equal(namePieces(n).join(''), n);
  assert.deepEqual(namePieces('<script>'), ['<script>']);
});
