import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pathAtOffset, planTree, spanOfPath } from '../../server/src/lsp/jsonRanges';

const TEXT = `// plan
{
  "checkpoint": "./m.safetensors", /* a comment */
  "defaults": { "bits": 2 },
  "overrides": [
    { "match": "q_proj", "bits": 4 },
    { "match": "model.layers.{0..3}.**" }
  ]
}`;
const root = planTree(TEXT);
const at = (s: string, nth = 0) => {
  let i = -1;
  for (let k = 0; k <= nth; k++) i = TEXT.indexOf(s, i + 1);
  assert.ok(i >= 0, s);
  return i;
};
const slice = (sp: { offset: number; length: number }) => TEXT.slice(sp.offset, sp.offset + sp.length);

test('a path maps to its value, its key or the whole property', () => {
  assert.equal(slice(spanOfPath(root, ['checkpoint'])), '"./m.safetensors"');
  assert.equal(slice(spanOfPath(root, ['checkpoint'], 'key')), '"checkpoint"');
  assert.equal(slice(spanOfPath(root, ['checkpoint'], 'property')), '"checkpoint": "./m.safetensors"');
  assert.equal(slice(spanOfPath(root, ['overrides', 1, 'match'])), '"model.layers.{0..3}.**"');
  assert.equal(slice(spanOfPath(root, ['overrides', 0])), '{ "match": "q_proj", "bits": 4 }');
  assert.equal(spanOfPath(root, ['defaults', 'bits']).offset, at('2 }'));
});

test('the root and missing paths map to the nearest existing node', () => {
  assert.deepEqual(spanOfPath(root, []), { offset: at('{'), length: 1 });
  // A missing 'rank' inside defaults is anchored on the 'defaults' key.
  assert.equal(slice(spanOfPath(root, ['defaults', 'rank'])), '"defaults"');
  assert.equal(slice(spanOfPath(root, ['overrides', 1, 'bits'])), '{');
  assert.deepEqual(spanOfPath(root, ['budget', 'avgBits']), { offset: at('{'), length: 1 });
  assert.deepEqual(spanOfPath(planTree(''), ['x']), { offset: 0, length: 0 });
});

test('an offset maps back to the JSON path and string value under it', () => {
  const inMatch = at('layers.{0..3}') + 3;
  const p = pathAtOffset(TEXT, root, inMatch);
  assert.deepEqual(p.path, ['overrides', 1, 'match']);
  assert.equal(p.atKey, false);
  assert.equal(p.stringValue, 'model.layers.{0..3}.**');
  assert.equal(slice(p.span!), '"model.layers.{0..3}.**"');
  const key = pathAtOffset(TEXT, root, at('"bits": 4') + 2);
  assert.deepEqual(key.path, ['overrides', 0, 'bits']);
  assert.equal(key.atKey, true);
  assert.equal(pathAtOffset(TEXT, root, at('4 }')).stringValue, undefined);
  // Round trip: the span of the path found at an offset contains that offset.
  for (const s of ['./m', 'q_proj', '{0..3}']) {
    const o = at(s) + 1;
    const sp = spanOfPath(root, pathAtOffset(TEXT, root, o).path);
    assert.ok(sp.offset <= o && o < sp.offset + sp.length, s);
  }
});
