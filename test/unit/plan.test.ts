import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { compilePlan, parsePlan, resolveCheckpointPath, settingsFor } from '../../server/src/plan/planfile';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/lsp_ext';

const ISSUE_EXAMPLE = `{
  "checkpoint": "./model.safetensors",          // file or sharded folder, relative to this file
  "defaults": { "bits": 2, "rank": 16, "iters": 5, "quantizer": "nf", "blockSize": 64 },
  "overrides": [                                // later entries win
    { "match": "model.layers.*.mlp.down_proj", "bits": 4 },
    { "match": "model.layers.{0..3}.**", "rank": 32 },
  ],
  "budget": { "avgBits": 2.5 }                  // or { "bytes": 3200000000 }
}`;

test('the issue example parses (comments, trailing comma) without problems', () => {
  const { plan, problems, overrideIndex } = parsePlan(ISSUE_EXAMPLE);
  assert.deepEqual(problems, []);
  assert.equal(plan.checkpoint, './model.safetensors');
  assert.deepEqual(plan.defaults, { bits: 2, rank: 16, iters: 5, quantizer: 'nf', blockSize: 64 });
  assert.equal(plan.overrides!.length, 2);
  assert.deepEqual(overrideIndex, [0, 1]);
  assert.deepEqual(plan.budget, { avgBits: 2.5 });
});

test('settings resolve defaults then overrides in order, later entries winning', () => {
  const cp = compilePlan(parsePlan(ISSUE_EXAMPLE).plan);
  assert.deepEqual(settingsFor(cp, 'model.layers.2.mlp.down_proj.weight'), {
    bits: 4,
    rank: 32,
    iters: 5,
    quantizer: 'nf',
    blockSize: 64,
  });
  assert.deepEqual(settingsFor(cp, 'model.layers.9.mlp.down_proj.weight'), {
    bits: 4,
    rank: 16,
    iters: 5,
    quantizer: 'nf',
    blockSize: 64,
  });
  assert.deepEqual(settingsFor(cp, 'model.layers.1.self_attn.q_proj.weight'), {
    bits: 2,
    rank: 32,
    iters: 5,
    quantizer: 'nf',
    blockSize: 64,
  });
  assert.deepEqual(settingsFor(cp, 'model.layers.9.self_attn.q_proj.weight'), {
    bits: 2,
    rank: 16,
    iters: 5,
    quantizer: 'nf',
    blockSize: 64,
  });
  const later = compilePlan(
    parsePlan(
      '{"checkpoint":"x","overrides":[{"match":"**","bits":8},{"match":"q_proj","bits":3},' +
        '{"match":"**","skip":true},{"match":"k_proj","skip":false}]}',
    ).plan,
  );
  assert.equal(settingsFor(later, 'a.q_proj.weight'), null, 'a later skip wins');
  assert.deepEqual(settingsFor(later, 'a.k_proj.weight'), { ...DEFAULT_SETTINGS, bits: 8 });
});

test('missing fields take the base settings', () => {
  const cp = compilePlan(parsePlan('{"checkpoint":"m"}').plan, {
    bits: 3,
    rank: 8,
    iters: 2,
    quantizer: 'uniform',
    blockSize: 32,
  });
  assert.deepEqual(settingsFor(cp, 'x.weight'), { bits: 3, rank: 8, iters: 2, quantizer: 'uniform', blockSize: 32 });
});

test('problems carry the JSON path of the offending node', () => {
  const { problems, plan, overrideIndex } = parsePlan(`{
    "checkpoint": "m.safetensors",
    "defaults": { "bits": 5, "rank": 0, "quantizer": "int" },
    "overrides": [ { "bits": 4 }, { "match": "x.{0..3", "bits": 4 }, 7, { "match": "q_proj", "iters": 1.5 } ],
    "budget": { "avgBits": -1 },
    "targets": ["q_proj", 3, "{a"]
  }`);
  const got = problems.map((p) => [p.path.join('/'), p.message]);
  assert.deepEqual(got, [
    ['defaults/bits', "'bits' must be 1, 2, 3, 4 or 8 (got 5)"],
    ['defaults/rank', "'rank' must be an integer ≥ 1"],
    ['defaults/quantizer', `'quantizer' must be "nf", "uniform" or "hqq"`],
    ['overrides/0', "an override needs a 'match' glob"],
    ['overrides/1/match', "bad pattern: unclosed '{' in pattern 'x.{0..3'"],
    ['overrides/2', 'an override must be an object'],
    ['overrides/3/iters', "'iters' must be an integer ≥ 1"],
    ['budget/avgBits', "'avgBits' must be a positive number"],
    ['targets/1', 'a target must be a non-empty glob string'],
    ['targets/2', "bad pattern: unclosed '{' in pattern '{a'"],
  ]);
  // Valid overrides keep their index in the file, so diagnostics land on the right entry.
  assert.deepEqual(
    plan.overrides!.map((o) => o.match),
    ['q_proj'],
  );
  assert.deepEqual(overrideIndex, [3]);
  assert.deepEqual(plan.targets, ['q_proj']);
});

test('syntax errors have offsets; a non-object plan and a missing checkpoint are errors', () => {
  const bad = parsePlan('{ "checkpoint": "m" ');
  assert.equal(bad.problems[0].message, 'JSON syntax: CloseBraceExpected');
  assert.equal(bad.problems[0].offset, 20);
  assert.deepEqual(
    parsePlan('[1]').problems.map((p) => p.message),
    ['the plan must be a JSON object'],
  );
  assert.deepEqual(
    parsePlan('{}').problems.map((p) => [p.path, p.message]),
    [[[], "'checkpoint' (a path relative to this file) is required"]],
  );
  assert.deepEqual(
    parsePlan('{"checkpoint": 3}').problems.map((p) => p.path),
    [['checkpoint']],
  );
  assert.deepEqual(
    parsePlan('{"checkpoint":"m","budget":{}}').problems.map((p) => p.message),
    ["'budget' needs 'avgBits' or 'bytes'"],
  );
});

test('the checkpoint path is relative to the plan file', () => {
  const dir = path.resolve('/tmp/proj/sub');
  assert.equal(
    resolveCheckpointPath(path.join(dir, 'loftq.json'), { checkpoint: '../ckpt/model.safetensors' }),
    path.resolve('/tmp/proj/ckpt/model.safetensors'),
  );
  assert.equal(
    resolveCheckpointPath(path.join(dir, 'loftq.json'), { checkpoint: '/abs/m.safetensors' }),
    path.resolve('/abs/m.safetensors'),
  );
});
