// The JSON Schema shipped for loftq.json (completion and structure checks in editors)
// must describe what the plan parser and the engine accept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../helpers';
import { DEFAULT_SETTINGS, SUPPORTED_BITS } from '../../server/src/protocol/lsp_ext';
import { parsePlan } from '../../server/src/plan/planfile';

const schema = JSON.parse(fs.readFileSync(path.join(repoRoot, 'schemas', 'loftq.schema.json'), 'utf8'));

test('settings keys and allowed values agree with the contract', () => {
  const settings = schema.definitions.settings.properties;
  assert.deepEqual(Object.keys(settings).sort(), Object.keys(DEFAULT_SETTINGS).sort());
  assert.deepEqual(settings.bits.enum, [...SUPPORTED_BITS]);
  assert.deepEqual(settings.quantizer.enum, ['nf', 'uniform', 'hqq']);
  assert.deepEqual(
    Object.keys(schema.definitions.override.properties).sort(),
    [...Object.keys(DEFAULT_SETTINGS), 'match', 'skip'].sort(),
  );
  assert.deepEqual(schema.required, ['checkpoint']);
});

test('what the schema rejects as a value, the parser reports too', () => {
  for (const [key, bad] of [
    ['bits', 5],
    ['rank', 0],
    ['iters', 0],
    ['quantizer', 'int'],
    ['blockSize', 0],
  ] as const) {
    const { problems } = parsePlan(JSON.stringify({ checkpoint: 'm', defaults: { [key]: bad } }));
    assert.deepEqual(
      problems.map((p) => p.path),
      [['defaults', key]],
      key,
    );
  }
  const p = parsePlan(JSON.stringify({ checkpoint: 'm', overrides: [{ bits: 4 }] }));
  assert.deepEqual(
    p.problems.map((x) => x.path),
    [['overrides', 0]],
    'an override needs match',
  );
});

test('calibration: the schema and the parser take the same keys, and refuse the same values', () => {
  const c = schema.properties.calibration;
  assert.deepEqual(Object.keys(c.properties).sort(), ['file', 'generate', 'imatrix', 'products', 'ridge']);
  assert.deepEqual(Object.keys(c.properties.generate.properties).sort(), ['length', 'seed', 'sequences']);
  assert.deepEqual(c.properties.generate.required, ['sequences', 'length']);
  const g = c.properties.generate.properties;
  for (const [key, spec] of Object.entries(g) as [string, { minimum: number; maximum: number }][]) {
    for (const bad of [spec.minimum - 1, spec.maximum + 1]) {
      const generate = { sequences: 4, length: 16, [key]: bad };
      const { problems } = parsePlan(JSON.stringify({ checkpoint: 'm', calibration: { generate } }));
      assert.deepEqual(
        problems.map((p) => p.path),
        [['calibration', 'generate', key]],
        `${key} = ${bad}`,
      );
    }
  }
  for (const [key, bad] of [
    ['ridge', c.properties.ridge.minimum - 1],
    ['ridge', c.properties.ridge.maximum * 2],
    ['products', 'bf16'],
  ] as const) {
    const { problems } = parsePlan(JSON.stringify({ checkpoint: 'm', calibration: { file: 'a.json', [key]: bad } }));
    assert.deepEqual(
      problems.map((p) => p.path),
      [['calibration', key]],
      `${key} = ${bad}`,
    );
  }
});
