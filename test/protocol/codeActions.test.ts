// Protocol tier: quick fixes that need no report — mixed precision within the budget
// (the LoftQ paper's first-k rule), lowering an impossible rank, dropping a dead override.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CodeAction, CodeActionRequest, Diagnostic } from 'vscode-languageserver-protocol';
import { LspClient, uriOf } from './lspClient';
import { applyTextEdits, rangeOf, withServer, workspace } from './support';

async function actionsAt(
  c: LspClient,
  uri: string,
  diags: Diagnostic[],
  range = diags[0].range,
): Promise<CodeAction[]> {
  return (await c.conn.sendRequest(CodeActionRequest.type, {
    textDocument: { uri },
    range,
    context: { diagnostics: diags },
  })) as CodeAction[];
}

test('"Apply mixed-precision plan within budget" puts the first k layers at 4 bits (no analysis yet)', async () => {
  const { root } = workspace();
  const file = path.join(root, 'loftq.json');
  // Average-bit budgets count codes + double-quantized scales of the quantized matrices, the
  // backbone (docs/planner.md); adapters are shown beside. A stories260K layer (45 312 weights)
  // at 2 bits: codes 11 328 + scales 764 = 12 092 B (its rank-1 F32 adapters: 4 624 B); each
  // layer at 4 bits adds 11 328 B. A 3.8-bit budget over 226 560 weights is 107 616 B:
  // 5·12 092 + k·11 328 fits for k ≤ 4 (105 772 B = 3.73 bits per weight); with no layer at
  // 4 bits: 60 460 B = 2.13 bits. Adapters: 5·4 624 = 23 120 B.
  const text = `{
  "checkpoint": "ckpt/model.safetensors",
  "defaults": { "bits": 2, "rank": 1 },
  /* later entries win */
  "overrides": [
    { "match": "model.layers.*.mlp.down_proj", "iters": 3 }
  ],
  "budget": { "avgBits": 3.8 }
}`;
  fs.writeFileSync(file, text);
  const uri = uriOf(file);
  await withServer(root, async (c) => {
    await c.open(uri, text);
    const ds = await c.diagnosticsFor(uri, (d) => d.some((x) => x.code === 'budget'));
    const budget = ds.find((d) => d.code === 'budget')!;
    assert.equal(
      budget.message,
      "this plan's backbone costs 2.13 bits per weight (codes and scales), " +
        `within the budget of 3.8; adapters 23.1 kB beside it`,
    );
    assert.equal(budget.severity, 4); // within the budget: a hint, no squiggle
    assert.deepEqual(budget.range, rangeOf(text, '3.8'));
    const actions = await actionsAt(c, uri, [budget]);
    const mixed = actions.find((a) => a.title.startsWith('Apply mixed-precision plan within budget'))!;
    assert.equal(
      mixed.title,
      'Apply mixed-precision plan within budget: first 4 layers at 4 bits (3.73 bits per weight in the backbone)',
    );
    assert.equal(mixed.kind, 'quickfix');
    const edited = applyTextEdits(text, mixed.edit!.changes![uri]);
    assert.equal(
      edited,
      text.replace('"iters": 3 }', '"iters": 3 },\n    { "match": "model.layers.{0..3}.**", "bits": 4 }'),
    );
    await c.change(uri, edited, 2);
    const after = await c.diagnosticsFor(
      uri,
      (d) => c.diagnostics.get(uri)!.version === 2 && d.some((x) => x.code === 'budget'),
    );
    assert.equal(
      after.find((d) => d.code === 'budget')!.message,
      "this plan's backbone costs 3.73 bits per weight (codes and scales), " +
        `within the budget of 3.8; adapters 23.1 kB beside it`,
    );

    // A tighter budget (2.7 bits = 76 464 B: k ≤ 1) replaces the rule's own override instead of adding one.
    const tighter = edited.replace('3.8', '2.7');
    await c.change(uri, tighter, 3);
    const over = await c.diagnosticsFor(
      uri,
      (d) => c.diagnostics.get(uri)!.version === 3 && d.some((x) => x.code === 'budget'),
    );
    const b2 = over.find((d) => d.code === 'budget')!;
    assert.equal(
      b2.message,
      "this plan's backbone costs 3.73 bits per weight (codes and scales), " +
        `over the budget of 2.7; adapters 23.1 kB beside it`,
    );
    assert.equal(b2.severity, 2);
    const again = (await actionsAt(c, uri, [b2])).find((a) => a.title.startsWith('Apply mixed-precision'))!;
    assert.equal(
      again.title,
      'Apply mixed-precision plan within budget: first 1 layer at 4 bits (2.53 bits per weight in the backbone)',
    );
    assert.equal(
      applyTextEdits(tighter, again.edit!.changes![uri]),
      tighter.replace('model.layers.{0..3}.**', 'model.layers.0.**'),
    );
  });
});

test('an impossible rank is lowered in place; a dead override is removed', async () => {
  const { root } = workspace();
  const file = path.join(root, 'loftq.json');
  const text = `{
  "checkpoint": "ckpt/model.safetensors",
  "overrides": [
    { "match": "model.layers.*.self_attn.k_proj", "rank": 64 },
    { "match": "model.layers.*.attn.c_attn", "bits": 8 }
  ]
}`;
  fs.writeFileSync(file, text);
  const uri = uriOf(file);
  await withServer(root, async (c) => {
    await c.open(uri, text);
    const ds = await c.diagnosticsFor(
      uri,
      (d) => d.some((x) => x.code === 'rank-too-large') && d.some((x) => x.code === 'no-match'),
    );
    const rank = ds.find((d) => d.code === 'rank-too-large')!;
    assert.equal(rank.message, 'rank 64 is larger than min(out, in) = 32 of k_proj of layers 0–4 (5 matrices)');
    assert.deepEqual(rank.range, rangeOf(text, '64'));
    const lower = (await actionsAt(c, uri, [rank])).find((a) => a.title === 'Lower rank to 32')!;
    assert.equal(applyTextEdits(text, lower.edit!.changes![uri]), text.replace('"rank": 64', '"rank": 32'));

    const dead = ds.find((d) => d.code === 'no-match')!;
    assert.equal(dead.message, "'model.layers.*.attn.c_attn' matches no tensor in model.safetensors");
    const remove = (await actionsAt(c, uri, [dead])).find((a) => a.title.startsWith('Remove override'))!;
    assert.equal(remove.title, "Remove override 'model.layers.*.attn.c_attn'");
    const removed = applyTextEdits(text, remove.edit!.changes![uri]);
    assert.equal(removed, text.replace(',\n    { "match": "model.layers.*.attn.c_attn", "bits": 8 }', ''));

    // With the cursor on an override and no diagnostic: its matrices at each other width.
    const onOverride = await actionsAt(c, uri, [], rangeOf(text, 'self_attn.k_proj'));
    assert.deepEqual(
      onOverride.map((a) => a.title).filter((t) => t.startsWith('Quantize these')),
      ['Quantize these matrices at 2 bits', 'Quantize these matrices at 3 bits', 'Quantize these matrices at 8 bits'],
    );
    const at8 = onOverride.find((a) => a.title.endsWith('8 bits'))!;
    assert.deepEqual(JSON.parse(applyTextEdits(text, at8.edit!.changes![uri])).overrides[0], {
      match: 'model.layers.*.self_attn.k_proj',
      rank: 64,
      bits: 8,
    });
  });
});
