import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { RestartPolicy } from '../../client/src/restartPolicy';

test('restart policy: restarts up to N crashes inside the window, then stops; old crashes age out', () => {
  let now = 0;
  const p = new RestartPolicy(4, 180_000, () => now);
  for (let i = 1; i <= 4; i++) {
    now += 10_000;
    assert.deepEqual(p.crashed(), { restart: true, crashes: i });
  }
  now += 10_000;
  assert.deepEqual(p.crashed(), { restart: false, crashes: 5 }, 'the fifth crash in 3 minutes stops the restarts');
  // more than 3 minutes after the last crash, none of them counts
  now += 181_000;
  assert.deepEqual(p.crashed(), { restart: true, crashes: 1 });
});
