// The client's writability check before a run's questions (issue 26 §3): a folder that does not
// exist yet counts by its nearest existing ancestor; the refusal's code is kept for the message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { constants } from 'node:fs';
import { isWriteRefusal, refusalText, unwritable } from '../../client/src/writable';

const fsWith = (existing: Record<string, string | undefined>) => async (p: string, mode: number) => {
  if (!(p in existing)) throw Object.assign(new Error('absent'), { code: 'ENOENT' });
  const refusal = existing[p];
  if (mode !== constants.F_OK && refusal) throw Object.assign(new Error(refusal), { code: refusal });
};

test('unwritable: the nearest existing ancestor decides; its errno is the answer', async () => {
  const root = path.parse(process.cwd()).root;
  const ro = path.join(root, 'ro'),
    rw = path.join(root, 'rw');
  const access = fsWith({ [root]: 'EACCES', [ro]: 'EROFS', [rw]: undefined });
  assert.equal(await unwritable(path.join(ro, 'model-loftq-nf4-r16'), access), 'EROFS');
  assert.equal(await unwritable(path.join(rw, 'a', 'b', 'c'), access), undefined);
  assert.equal(await unwritable(rw, access), undefined);
  assert.equal(await unwritable(path.join(root, 'elsewhere'), access), 'EACCES');
  // The real file system: this test's own folder is writable.
  assert.equal(await unwritable(path.join(process.cwd(), 'out', 'not-yet')), undefined);
});

test('a failed run names a permission problem: another folder helps, a rerun does not', () => {
  assert.ok(isWriteRefusal("EPERM: operation not permitted, mkdir '/ro/model-loftq-nf4-r16'"));
  assert.ok(isWriteRefusal('EROFS: read-only file system, open …'));
  assert.ok(!isWriteRefusal('model.safetensors: is not a safetensors file'));
  assert.equal(refusalText('EROFS'), 'is on a read-only file system');
  assert.equal(refusalText('EACCES'), 'is not writable (permission denied)');
});
