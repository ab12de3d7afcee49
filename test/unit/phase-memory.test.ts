// Issue 28: a calibrated run gives its idle buffers' pages back between the calibration pass
// and the matrix jobs where the two working sets would not fit the budget together (a 7B
// model), and not where they fit (1.1B); a trimmed worker's next job writes the same bytes.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { createExecutor, NATIVE_WORKER_BYTES_PER_WEIGHT, type Workers } from '../../server/src/engine/pool';
import {
  discardBetweenPhases,
  discardsBetweenPhases,
  jobsBytes,
  passBytes,
  PHASES_MEMORY_BUDGET,
} from '../../server/src/engine/phaseMemory';
import { nativeAddon } from '../../server/src/linalg/nativeBackend';
import { requireNative } from './nativeRequired';
import { removeTree, tempDir } from '../helpers';
import { entryTensorBytes, storiesJob } from '../storiesJob';

const LLAMA7B = { largest: 11008 * 4096, widest: 11008 };
const TINYLLAMA = { largest: 5632 * 2048, widest: 5632 };

test('the phases give pages back at 7B shapes and 16×256 tokens, not at 1.1B', () => {
  const at7b = { ...LLAMA7B, workers: 1, tokens: 4096 };
  const at1b = { ...TINYLLAMA, workers: 2, tokens: 4096 };
  // The sums the rule compares, from the shapes themselves.
  assert.equal(jobsBytes(at7b), NATIVE_WORKER_BYTES_PER_WEIGHT * 11008 * 4096);
  assert.equal(passBytes(at7b), 8 * 11008 * 4096 + 14 * 4096 * 11008 + 12 * 4096 * 4096);
  assert.ok(jobsBytes(at7b) + passBytes(at7b) > PHASES_MEMORY_BUDGET);
  assert.equal(discardBetweenPhases(at7b), true);
  assert.equal(discardBetweenPhases(at1b), false);
  // More tokens make even a 1.1B pass large enough.
  assert.equal(discardBetweenPhases({ ...at1b, tokens: 16 * 2048 }), true);
});

test('only the native backend gives pages back; the worker count is the engine plan', async (t) => {
  const shapes = [
    [11008, 4096],
    [4096, 11008],
    [4096, 4096],
  ];
  assert.equal(await discardsBetweenPhases({ workers: undefined, shapes, tokens: 4096, backend: 'wasm' }), false);
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  assert.equal(await discardsBetweenPhases({ workers: undefined, shapes, tokens: 4096, backend: 'native' }), true);
  const small = [[64, 64]];
  assert.equal(await discardsBetweenPhases({ workers: 1, shapes: small, tokens: 64, backend: 'native' }), false);
});

test('a trimmed executor gives pages back and its next job writes the same bytes', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const job = await storiesJob();
  const dir = tempDir('loftq-phase-memory-');
  try {
    for (const workers of [1, 'in-thread'] as Workers[]) {
      const ex = await createExecutor(workers, 2, 'native');
      try {
        const before = path.join(dir, `${workers}-before.safetensors`);
        const after = path.join(dir, `${workers}-after.safetensors`);
        await ex.quantize({ ...job, journalFile: before });
        const given = await ex.trim();
        // At least the job's kernel memory: 18 bytes a weight.
        assert.ok(given >= 18 * job.tensor.parameters, `workers ${workers}: ${given} bytes given back`);
        await ex.quantize({ ...job, journalFile: after });
        assert.ok(
          entryTensorBytes(before).equals(entryTensorBytes(after)),
          `workers ${workers}: the job after a trim wrote other bytes`,
        );
      } finally {
        await ex.close();
      }
    }
  } finally {
    removeTree(dir);
  }
});
