// package.json's configuration and the loftq.json schema restate registry facts (enums,
// defaults, ranges); they must say what server/src/registry says. On a failure run
// `npm run sync-registry`, which rewrites exactly those facts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../helpers';
import { formatJson, syncedTexts, syncManifest, syncSchema } from '../../server/src/tools/registry-sync-lib';
import {
  BACKEND_CHOICES,
  CALIBRATION_SPECS,
  MATRIX_SETTING_SPECS,
  QUANTIZER_NAMES,
  SUPPORTED_BITS,
} from '../../server/src/registry';

const read = (f: string) => fs.readFileSync(path.join(repoRoot, f), 'utf8');

test('package.json and schemas/loftq.schema.json agree with the registry (npm run sync-registry)', () => {
  const pkg = read('package.json'),
    schema = read('schemas/loftq.schema.json');
  const want = syncedTexts(pkg, schema);
  assert.equal(pkg, want.pkg, 'package.json is out of date with server/src/registry: npm run sync-registry');
  assert.equal(schema, want.schema, 'schemas/loftq.schema.json is out of date: npm run sync-registry');
  // What the sync writes is the registry's, read here independently of the sync's own code.
  const props = JSON.parse(pkg).contributes.configuration.properties;
  assert.deepEqual(props['loftq.defaults.quantizer'].enum, QUANTIZER_NAMES);
  assert.deepEqual(props['loftq.defaults.bits'].enum, [...SUPPORTED_BITS]);
  assert.deepEqual(props['loftq.backend'].enum, BACKEND_CHOICES);
  assert.equal(props['loftq.defaults.iters'].maximum, MATRIX_SETTING_SPECS.iters.max);
  const s = JSON.parse(schema).definitions.settings.properties;
  assert.equal(s.blockSize.maximum, MATRIX_SETTING_SPECS.blockSize.max);
  assert.deepEqual(s.quantizer.enum, QUANTIZER_NAMES);
  const cal = JSON.parse(schema).properties.calibration.properties;
  assert.equal(cal.generate.properties.sequences.maximum, CALIBRATION_SPECS.generateSequences.max);
  assert.equal(cal.generate.properties.length.minimum, CALIBRATION_SPECS.generateLength.min);
  assert.equal(cal.ridge.maximum, CALIBRATION_SPECS.ridge.max);
  assert.deepEqual(cal.products.enum, CALIBRATION_SPECS.products.values);
});

test('the sync repairs a stale enum or range and keeps everything else', () => {
  const pkg = JSON.parse(read('package.json'));
  const props = pkg.contributes.configuration.properties;
  props['loftq.defaults.quantizer'].enum = ['nf'];
  props['loftq.defaults.rank'].maximum = 7;
  const fixed = syncManifest(pkg) as typeof pkg;
  assert.deepEqual(fixed.contributes.configuration.properties['loftq.defaults.quantizer'].enum, QUANTIZER_NAMES);
  assert.equal(fixed.contributes.configuration.properties['loftq.defaults.rank'].maximum, 65536);
  assert.deepEqual(
    { ...fixed, contributes: undefined },
    { ...JSON.parse(read('package.json')), contributes: undefined },
  );
  const schema = JSON.parse(read('schemas/loftq.schema.json'));
  delete schema.definitions.settings.properties.iters;
  const again = syncSchema(schema) as typeof schema;
  assert.deepEqual(Object.keys(again.definitions.settings.properties), Object.keys(MATRIX_SETTING_SPECS));
});

test('formatJson: the same value, lines within 120 columns where a value can be split', () => {
  const v = { a: [1, 2, { b: 'x'.repeat(150) }], c: { d: true, e: null }, f: 'short' };
  const text = formatJson(v);
  assert.deepEqual(JSON.parse(text), v);
  assert.ok(text.split('\n').every((l) => l.length <= 120 || l.includes('x'.repeat(150))));
  assert.equal(formatJson({ a: 1, b: [2, 3] }), '{ "a": 1, "b": [2, 3] }');
});
