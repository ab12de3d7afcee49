// Reading never loads a whole file: a 4 GiB sparse checkpoint (a small tensor, a huge
// one, another small one) opens and its small tensors read with a few MB of memory, and
// the huge one is refused by name rather than allocated.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { constants } from 'node:buffer';
import { encodeHeader, openCheckpoint, readTensorBytes, readTensorF32 } from '../../server/src/checkpoint';
import { tempDir } from '../helpers';

test('small tensors of a 4 GiB sparse file read in place; the file is never loaded whole', async (t) => {
  const HUGE = 2 ** 32 + 8;
  const dir = tempDir();
  const file = path.join(dir, 'sparse.safetensors');
  const header = encodeHeader([
    { name: 'first', dtype: 'F32', shape: [4] },
    { name: 'huge', dtype: 'U8', shape: [HUGE] },
    { name: 'last', dtype: 'F32', shape: [4] },
  ]);
  const first = new Float32Array([1, 2, 3, 4]);
  const last = new Float32Array([-1, -2, -3, -4]);
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, header, 0, header.length, 0);
    fs.writeSync(fd, new Uint8Array(first.buffer), 0, 16, header.length);
    fs.writeSync(fd, new Uint8Array(last.buffer), 0, 16, header.length + 16 + HUGE);
  } catch (e) {
    t.skip(`this file system cannot hold a 4 GiB sparse file (${(e as Error).message})`);
    return;
  } finally {
    fs.closeSync(fd);
  }
  assert.equal(fs.statSync(file).size, header.length + 32 + HUGE);

  global.gc?.();
  const rss0 = process.memoryUsage().rss;
  const ck = await openCheckpoint(file);
  assert.deepEqual([...(await readTensorF32(ck.byName.get('first')!))], [...first]);
  assert.deepEqual([...(await readTensorF32(ck.byName.get('last')!))], [...last]);
  assert.equal(ck.byName.get('huge')!.byteLength, HUGE);
  const grown = process.memoryUsage().rss - rss0;
  assert.ok(grown < 64 * 2 ** 20, `RSS grew by ${(grown / 2 ** 20).toFixed(1)} MiB`);

  // Node 20 caps one buffer at 4 GiB: the 4 GiB + 8 tensor is refused by name, not read.
  if (HUGE > constants.MAX_LENGTH) {
    await assert.rejects(
      readTensorBytes(ck.byName.get('huge')!),
      (e: Error & { kind?: string }) => e.kind === 'too-large' && e.message.startsWith(`${file}: tensor 'huge': `),
    );
  }
  fs.rmSync(dir, { recursive: true, force: true });
});
