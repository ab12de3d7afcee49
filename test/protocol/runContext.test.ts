// Protocol tier: `loftq/runContext` tells the client what a run would meet before it asks any
// question (issue 11.3/11.4): a corrupt checkpoint, the plan that applies and its first error,
// the largest rank every matrix allows, the whole checkpoint behind one of its shards.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { PlanLocation, RunContext } from '../../server/src/protocol/lsp_ext';
import { FileChangeType } from 'vscode-languageserver-protocol';
import { uriOf } from './lspClient';
import { rangeOf, withServer, workspace } from './support';

/** The safetensors header, read here (8-byte little-endian length, then JSON), not by the engine. */
function header(file: string): Record<string, { shape: number[] }> {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.toString('utf8', 8, 8 + n));
  delete h.__metadata__;
  return h;
}

test('loftq/runContext: no plan, a plan with an error, a corrupt file, a shard of a sharded checkpoint', async () => {
  const { root, ckptDir } = workspace();
  const ckpt = path.join(ckptDir, 'model.safetensors');
  // The default targets of a Llama checkpoint: the seven projections of each layer.
  const projections = Object.entries(header(ckpt)).filter(([n]) => /\.(q|k|v|o|gate|up|down)_proj\.weight$/.test(n));
  const smallest = Math.min(...projections.map(([, t]) => Math.min(t.shape[0], t.shape[1])));
  const broken = path.join(root, 'broken.safetensors');
  fs.writeFileSync(broken, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x7b]));
  const shards = path.join(root, 'sharded');
  fs.mkdirSync(shards);
  fs.copyFileSync(ckpt, path.join(shards, 'model-00001-of-00001.safetensors'));
  const weightMap = Object.fromEntries(Object.keys(header(ckpt)).map((n) => [n, 'model-00001-of-00001.safetensors']));
  fs.writeFileSync(
    path.join(shards, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );

  await withServer(root, async (c) => {
    const ask = (checkpoint: string) => c.conn.sendRequest(Methods.runContext, { checkpoint }) as Promise<RunContext>;

    const plain = await ask(ckpt);
    assert.equal(plain.checkpoint, ckpt);
    assert.equal(plain.problem, undefined);
    assert.equal(plain.plan, undefined);
    assert.equal(plain.matrices, projections.length);
    assert.equal(plain.maxRank!.rank, smallest);
    const named = header(ckpt)[plain.maxRank!.matrix];
    assert.equal(Math.min(named.shape[0], named.shape[1]), smallest);

    const bad = await ask(broken);
    assert.match(bad.problem!, new RegExp(`^${broken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), 'names the file first');
    assert.equal(bad.matrices, 0);

    const shard = await ask(path.join(shards, 'model-00001-of-00001.safetensors'));
    assert.equal(shard.checkpoint, shards);
    assert.equal(shard.shardOf, shards);
    assert.equal(shard.matrices, projections.length);

    // A plan for the checkpoint, in the workspace root; a rank no matrix allows is its first error.
    const text = `{
  "checkpoint": "ckpt/model.safetensors",
  "defaults": { "bits": 2, "rank": ${smallest + 1} },
  "overrides": [{ "match": "model.layers.0.**", "bits": 4 }]
}
`;
    const planFile = path.join(root, 'loftq.json');
    fs.writeFileSync(planFile, text);
    await c.filesChanged([{ uri: uriOf(planFile), type: FileChangeType.Created }]);
    const withPlan = await ask(ckpt);
    assert.equal(withPlan.plan!.file, planFile);
    assert.deepEqual(withPlan.plan!.defaults, { bits: 2, rank: smallest + 1 });
    assert.equal(withPlan.plan!.overrides, 1);
    assert.equal(withPlan.plan!.matrices, projections.length);
    const at = rangeOf(text, String(smallest + 1));
    assert.deepEqual(
      [withPlan.plan!.error!.line, withPlan.plan!.error!.character],
      [at.start.line, at.start.character],
    );
    assert.match(
      withPlan.plan!.error!.message,
      new RegExp(`^rank ${smallest + 1} is larger than min\\(out, in\\) = ${smallest}`),
    );

    // Fixed: no error, and the largest rank is that of the matrices the defaults decide.
    const fixed = text.replace(`"rank": ${smallest + 1}`, '"rank": 8');
    fs.writeFileSync(planFile, fixed);
    const ok = await ask(ckpt);
    assert.equal(ok.plan!.error, undefined);
    assert.deepEqual(ok.plan!.defaults, { bits: 2, rank: 8 });
    assert.equal(ok.plan!.maxRank!.rank, smallest);

    // loftq/planLocation: the override that decides a tensor, else the defaults (heatmap click → plan).
    const locate = (tensor: string) =>
      c.conn.sendRequest(Methods.planLocation, { checkpoint: ckpt, tensor }) as Promise<PlanLocation>;
    const q0 = await locate('model.layers.0.self_attn.q_proj.weight');
    assert.deepEqual(q0, {
      module: 'model.layers.0.self_attn.q_proj',
      plan: planFile,
      override: { index: 0, range: rangeOf(fixed, '{ "match": "model.layers.0.**", "bits": 4 }') },
    });
    const q1 = await locate('model.layers.1.self_attn.q_proj.weight');
    assert.deepEqual(q1, {
      module: 'model.layers.1.self_attn.q_proj',
      plan: planFile,
      defaults: rangeOf(fixed, '{ "bits": 2, "rank": 8 }'),
    });
    fs.rmSync(planFile);
    await c.filesChanged([{ uri: uriOf(planFile), type: FileChangeType.Deleted }]);
    assert.deepEqual(await locate('model.layers.1.self_attn.q_proj.weight'), {
      module: 'model.layers.1.self_attn.q_proj',
    });
  });
});
