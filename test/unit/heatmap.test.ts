// Heatmap layout: which tensor lands in which (layer, module kind) cell, for the naming
// schemes of the main model families.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { layoutTensors, parseLayerName } from '../../webviews/src/layout';

/** `{ name: [rowLabel, columnLabel] | null }` for an input list, for readable assertions. */
function placements(names: string[]) {
  const l = layoutTensors(names);
  return Object.fromEntries(
    names.map((n, i) => {
      const c = l.cells[i];
      return [n, c ? [l.rows[c[0]].label, l.columns[c[1]].label] : null];
    }),
  );
}

test('parseLayerName finds the first layer index and drops .weight', () => {
  assert.deepEqual(parseLayerName('model.layers.17.self_attn.q_proj.weight'), {
    prefix: 'model.layers',
    index: 17,
    rest: ['self_attn', 'q_proj'],
  });
  assert.deepEqual(parseLayerName('transformer.h.3.mlp.c_fc.weight'), {
    prefix: 'transformer.h',
    index: 3,
    rest: ['mlp', 'c_fc'],
  });
  assert.deepEqual(parseLayerName('encoder.block.2.layer.1.DenseReluDense.wi.weight'), {
    prefix: 'encoder.block',
    index: 2,
    rest: ['layer', '1', 'DenseReluDense', 'wi'],
  });
  assert.equal(parseLayerName('model.embed_tokens.weight'), null);
  assert.equal(parseLayerName('lm_head.weight'), null);
});

test('Llama: rows are layers, columns q k v o gate up down in block order', () => {
  const names: string[] = [];
  for (const layer of [0, 1, 10, 2]) {
    // Checkpoint order is alphabetical, as safetensors files usually are.
    for (const m of [
      'mlp.down_proj',
      'mlp.gate_proj',
      'mlp.up_proj',
      'self_attn.k_proj',
      'self_attn.o_proj',
      'self_attn.q_proj',
      'self_attn.v_proj',
    ]) {
      names.push(`model.layers.${layer}.${m}.weight`);
    }
  }
  names.push('model.embed_tokens.weight', 'lm_head.weight');
  const l = layoutTensors(names);
  assert.deepEqual(
    l.rows.map((r) => r.label),
    ['0', '1', '2', '10'],
  );
  assert.deepEqual(
    l.columns.map((c) => c.label),
    ['q', 'k', 'v', 'o', 'gate', 'up', 'down'],
  );
  const p = placements(names);
  assert.deepEqual(p['model.layers.10.mlp.down_proj.weight'], ['10', 'down']);
  assert.deepEqual(p['model.layers.2.self_attn.o_proj.weight'], ['2', 'o']);
  assert.deepEqual(
    l.unplaced.map((i) => names[i]),
    ['model.embed_tokens.weight', 'lm_head.weight'],
  );
  // Every placed tensor has its own cell.
  const keys = l.cells.filter((c) => c).map((c) => c!.join(','));
  assert.equal(new Set(keys).size, 28);
});

test('GPT-2: c_proj of attention and of the MLP are different columns', () => {
  const names = [0, 1].flatMap((h) =>
    ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'].map((m) => `transformer.h.${h}.${m}.weight`),
  );
  const l = layoutTensors(names);
  assert.deepEqual(
    l.columns.map((c) => c.label),
    ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'],
  );
  assert.deepEqual(placements(names)['transformer.h.1.mlp.c_proj.weight'], ['1', 'mlp.c_proj']);
  assert.deepEqual(placements(names)['transformer.h.0.attn.c_attn.weight'], ['0', 'c_attn']);
  assert.equal(l.unplaced.length, 0);
});

test('BERT: three dense layers stay apart; self-attention comes before its output', () => {
  const mods = [
    'attention.output.dense',
    'attention.self.key',
    'attention.self.query',
    'attention.self.value',
    'intermediate.dense',
    'output.dense',
  ];
  const names = [0, 1, 2].flatMap((i) => mods.map((m) => `bert.encoder.layer.${i}.${m}.weight`));
  names.push('bert.pooler.dense.weight');
  const l = layoutTensors(names);
  assert.deepEqual(
    l.columns.map((c) => c.key),
    [
      'attention.self.query',
      'attention.self.key',
      'attention.self.value',
      'attention.output.dense',
      'intermediate.dense',
      'output.dense',
    ],
  );
  assert.deepEqual(
    l.columns.map((c) => c.label),
    ['query', 'key', 'value', 'attention.output.dense', 'intermediate.dense', 'output.dense'],
  );
  assert.deepEqual(placements(names)['bert.encoder.layer.2.attention.self.query.weight'], ['2', 'query']);
  assert.deepEqual(
    l.unplaced.map((i) => names[i]),
    ['bert.pooler.dense.weight'],
  );
});

test('T5: encoder and decoder blocks are separate rows; sub-layer numbers do not split columns', () => {
  const names: string[] = [];
  for (const b of [0, 1]) {
    for (const m of ['q', 'k', 'v', 'o']) names.push(`encoder.block.${b}.layer.0.SelfAttention.${m}.weight`);
    for (const m of ['wi', 'wo']) names.push(`encoder.block.${b}.layer.1.DenseReluDense.${m}.weight`);
  }
  for (const b of [0]) {
    for (const m of ['q', 'k', 'v', 'o']) names.push(`decoder.block.${b}.layer.0.SelfAttention.${m}.weight`);
    for (const m of ['q', 'k', 'v', 'o']) names.push(`decoder.block.${b}.layer.1.EncDecAttention.${m}.weight`);
    for (const m of ['wi', 'wo']) names.push(`decoder.block.${b}.layer.2.DenseReluDense.${m}.weight`);
  }
  names.push('shared.weight');
  const l = layoutTensors(names);
  assert.deepEqual(
    l.rows.map((r) => r.label),
    ['encoder.block 0', 'encoder.block 1', 'decoder.block 0'],
  );
  assert.deepEqual(
    l.columns.map((c) => c.label),
    [
      'SelfAttention.q',
      'SelfAttention.k',
      'SelfAttention.v',
      'SelfAttention.o',
      'EncDecAttention.q',
      'EncDecAttention.k',
      'EncDecAttention.v',
      'EncDecAttention.o',
      'wi',
      'wo',
    ],
  );
  const p = placements(names);
  // Encoder's FFN is sub-layer 1, decoder's is sub-layer 2: same column.
  assert.deepEqual(p['encoder.block.1.layer.1.DenseReluDense.wi.weight'], ['encoder.block 1', 'wi']);
  assert.deepEqual(p['decoder.block.0.layer.2.DenseReluDense.wi.weight'], ['decoder.block 0', 'wi']);
  assert.deepEqual(p['decoder.block.0.layer.1.EncDecAttention.q.weight'], ['decoder.block 0', 'EncDecAttention.q']);
  assert.equal(p['shared.weight'], null);
});

test('numbered experts keep their number when dropping it would merge cells', () => {
  const names = [0, 1].flatMap((e) => [
    `model.layers.0.mlp.experts.${e}.w1.weight`,
    `model.layers.0.mlp.experts.${e}.w2.weight`,
  ]);
  const l = layoutTensors(names);
  assert.equal(l.columns.length, 4);
  const keys = l.cells.map((c) => c!.join(','));
  assert.equal(new Set(keys).size, 4);
});

test('a name with markup is laid out like any other (rendering escapes it)', () => {
  const names = ['model.layers.0.<script>alert(1)</script>.weight', 'model.layers.0.self_attn.q_proj.weight'];
  const l = layoutTensors(names);
  assert.deepEqual(l.columns.map((c) => c.label).sort(), ['<script>alert(1)</script>', 'q'].sort());
});
