// --calib-generate's sampler: the incremental (key/value cached) decode gives the same logits as
// the float64 reference forward over the whole generated prefix, draws are reproducible from
// the seed, and the tokens follow the documented rule (BOS first, inverse-CDF of softmax).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { openCheckpoint } from '../../server/src/checkpoint';
import { createBackend } from '../../server/src/linalg/backend';
import { readModelConfig } from '../../server/src/model/config';
import { generateSequences, mulberry32, sampleSoftmax } from '../../server/src/model/generate';
import { loadAll, referenceLogits } from '../model-reference';
import { repoRoot } from '../helpers';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');

test('cached decode logits equal the reference forward on the generated prefix; seeded and reproducible', async () => {
  const ck = await openCheckpoint(STORIES);
  const c = await readModelConfig(STORIES);
  const backend = await createBackend('wasm');
  const steps: Float32Array[] = [];
  const opts = { sequences: 3, length: 24, seed: 7, backend };
  const seqs = await generateSequences(ck, c, { ...opts, onLogits: (_p, l) => steps.push(l.slice()) });
  assert.equal(seqs.length, 3);
  for (const s of seqs) {
    assert.equal(s.length, 24);
    assert.equal(s[0], 1, 'starts from BOS (bos_token_id default 1)');
    assert.ok(s.every((id) => Number.isInteger(id) && id >= 0 && id < c.vocabSize));
  }
  assert.deepEqual(await generateSequences(ck, c, opts), seqs, 'same seed, same tokens');
  assert.notDeepEqual(await generateSequences(ck, c, { ...opts, seed: 8 }), seqs, 'another seed, other tokens');

  const { cfg, t } = await loadAll(STORIES);
  const V = c.vocabSize;
  let worst = 0;
  seqs.forEach((s, k) => {
    const ref = referenceLogits(cfg, t, s.slice(0, -1)); // positions 0..len-2 predicted the draws
    for (let p = 0; p < s.length - 1; p++) {
      const got = steps[p].subarray(k * V, (k + 1) * V);
      let num = 0,
        den = 0;
      for (let v = 0; v < V; v++) {
        num += (got[v] - ref[p][v]) ** 2;
        den += ref[p][v] ** 2;
      }
      worst = Math.max(worst, Math.sqrt(num / den));
    }
  });
  assert.ok(worst <= 1e-4, `largest relative logit difference ${worst}`);

  // The draws are the documented rule applied to those logits.
  const rng = mulberry32(7);
  for (let p = 0; p < 23; p++) {
    for (let k = 0; k < 3; k++)
      assert.equal(
        seqs[k][p + 1],
        sampleSoftmax(steps[p].subarray(k * V, (k + 1) * V), rng()),
        `seq ${k} pos ${p + 1}`,
      );
  }
});

test('sampleSoftmax draws by inverse CDF of softmax; mulberry32 is uniform enough', () => {
  const row = Float32Array.from([Math.log(1), Math.log(2), Math.log(7)]); // p = 0.1, 0.2, 0.7
  assert.equal(sampleSoftmax(row, 0.05), 0);
  assert.equal(sampleSoftmax(row, 0.15), 1);
  assert.equal(sampleSoftmax(row, 0.31), 2);
  assert.equal(sampleSoftmax(row, 0.999999), 2);
  const rng = mulberry32(1);
  const counts = [0, 0, 0];
  for (let i = 0; i < 30000; i++) counts[sampleSoftmax(row, rng())]++;
  [0.1, 0.2, 0.7].forEach((p, i) =>
    assert.ok(Math.abs(counts[i] / 30000 - p) < 0.015, `frequency of ${i}: ${counts[i] / 30000}`),
  );
});
