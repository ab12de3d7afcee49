// The statistics' trip from the calibration thread (model/calibThread.ts): through a real
// MessageChannel with the transfer list packStats gives, the buffers move (the sender's copies
// are detached, not duplicated), the values arrive intact, and inputs that shared one statistic
// (q/k/v) share one object again — the engine keys the journal and the factors by object.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
import { packStats, unpackStats } from '../../server/src/model/calibThread';
import type { InputStat, InputStats } from '../../server/src/model/stats';

test('calibration statistics cross the thread boundary transferred, with their sharing kept', () => {
  const g = Float64Array.from({ length: 9 }, (_, i) => i + 0.5);
  const qkv: InputStat = { kind: 'full', dim: 3, count: 7, g };
  const down: InputStat = { kind: 'diag', dim: 4, count: 7, d: Float64Array.of(1, 2, 3, 4) };
  const stats: InputStats = new Map<string, InputStat>([
    ['l.q_proj.weight', qkv],
    ['l.k_proj.weight', qkv],
    ['l.v_proj.weight', qkv],
    ['l.down_proj.weight', down],
  ]);
  const { packed, transfer } = packStats(stats);
  assert.equal(packed.stats.length, 2);
  assert.equal(transfer.length, 2);

  const { port1, port2 } = new MessageChannel();
  port1.postMessage(packed, transfer);
  const got = unpackStats(receiveMessageOnPort(port2)!.message);
  port1.close();
  assert.equal(g.byteLength, 0, 'G was transferred, not copied');
  assert.deepEqual([...got.keys()], [...stats.keys()]);
  const q = got.get('l.q_proj.weight')!;
  assert.equal(q, got.get('l.k_proj.weight'));
  assert.equal(q, got.get('l.v_proj.weight'));
  assert.notEqual(q, got.get('l.down_proj.weight'));
  assert.ok(q.kind === 'full');
  assert.deepEqual(
    [...q.g],
    Array.from({ length: 9 }, (_, i) => i + 0.5),
  );
  assert.deepEqual(got.get('l.down_proj.weight'), { kind: 'diag', dim: 4, count: 7, d: Float64Array.of(1, 2, 3, 4) });
});
