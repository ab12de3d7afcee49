// `workers` in the engine API: 0 or absent means one thread per core (auto), as the settings
// and the CLI say; running on the calling thread has its own name, 'in-thread'.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as os from 'node:os';
import { createExecutor, threadCount } from '../../server/src/engine/pool';

const cores = os.availableParallelism();

test("workers 0 or absent: one thread per core (no more than jobs); 'in-thread': none", async () => {
  assert.equal(threadCount(0, 1000), cores);
  assert.equal(threadCount(undefined, 1000), cores);
  assert.equal(threadCount(0, 1), 1);
  assert.equal(threadCount(3, 2), 2);
  assert.equal(threadCount(5, 1000), 5);
  for (const [workers, threads] of [
    [0, Math.min(cores, 4)],
    [undefined, Math.min(cores, 4)],
    [1, 1],
    ['in-thread', 0],
  ] as const) {
    const ex = await createExecutor(workers, 4, 'cpu');
    try {
      assert.equal(ex.threads, threads, `workers ${workers}`);
    } finally {
      await ex.close();
    }
  }
});
