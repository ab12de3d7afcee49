// Issue 28: how many matrix workers a run starts. Left to the engine on native, the workers'
// matrix working sets stay within WORKERS_MEMORY_BUDGET (a 7B model's 11008×4096 matrices run
// one at a time, split over the cores inside the module); given, or on tfjs, one per core as
// before. A worker that splits its matrix over threads writes the bytes one thread writes.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  createExecutor,
  NATIVE_WORKER_BYTES_PER_WEIGHT,
  workerPlan,
  WORKERS_MEMORY_BUDGET,
} from '../../server/src/engine/pool';
import { nativeAddon } from '../../server/src/linalg/nativeBackend';
import { requireNative } from './nativeRequired';
import { tempDir } from '../helpers';
import { entryTensorBytes, storiesJob } from '../storiesJob';

const cores = Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
const LLAMA7B_MLP = 11008 * 4096;
const TINYLLAMA_MLP = 5632 * 2048;

test('native, left to the engine: workers × their largest matrix within the budget, threads fill the cores', () => {
  for (const largest of [LLAMA7B_MLP, TINYLLAMA_MLP, 8192 * 28672, 64 * 64])
    for (const jobs of [1, 3, 224]) {
      const p = workerPlan(undefined, jobs, largest, 'native');
      assert.ok(p.workers >= 1 && p.workers <= Math.min(cores, jobs), `${largest}, ${jobs} jobs: ${p.workers}`);
      if (p.workers > 1) assert.ok(p.workers * largest * NATIVE_WORKER_BYTES_PER_WEIGHT <= WORKERS_MEMORY_BUDGET);
      assert.ok(p.workers * p.threads <= cores && p.workers * p.threads > cores - p.workers, JSON.stringify(p));
    }
  // 1.26 GB a worker at 7B: one worker however many cores; the 1.1B model keeps one per core.
  assert.equal(workerPlan(undefined, 224, LLAMA7B_MLP, 'native').workers, 1);
  assert.equal(workerPlan(undefined, 224, LLAMA7B_MLP, 'native').threads, cores);
  assert.equal(workerPlan(undefined, 154, TINYLLAMA_MLP, 'native').workers, Math.min(cores, 4));
});

test('a given worker count, or a tfjs backend: one thread each, as many as asked or as cores', () => {
  assert.deepEqual(workerPlan(3, 224, LLAMA7B_MLP, 'native'), { workers: 3, threads: 1 });
  assert.deepEqual(workerPlan(3, 2, LLAMA7B_MLP, 'native'), { workers: 2, threads: 1 });
  assert.deepEqual(workerPlan(undefined, 224, LLAMA7B_MLP, 'wasm'), { workers: cores, threads: 1 });
});

test('a native worker splitting its matrix over threads writes the bytes of a one-thread worker', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  const job = await storiesJob();
  const dir = tempDir('loftq-worker-plan-');
  const entry = async (largest: number, name: string) => {
    // A `largest` past the budget: one worker, every core's thread in it.
    const ex = await createExecutor(undefined, 2, 'native', undefined, largest);
    try {
      const file = path.join(dir, name);
      await ex.quantize({ ...job, journalFile: file });
      return { workers: ex.threads, bytes: entryTensorBytes(file) };
    } finally {
      await ex.close();
    }
  };
  const split = await entry(WORKERS_MEMORY_BUDGET, 'split.safetensors');
  const single = await entry(0, 'single.safetensors');
  assert.equal(split.workers, 1);
  assert.equal(single.workers, Math.min(cores, 2));
  assert.ok(split.bytes.equals(single.bytes), 'tensor bytes differ');
});
