// Writes that fail — abort, cancel, a throwing producer, a read-only folder, a
// size-limited target — leave no temp file and no partial output, keep a previous complete
// result intact, and report one clear line naming the file.
//
// The read-only and size-limited cases run this same bundle as a child process (root
// ignores folder permissions, so as root the child runs as `nobody`; `ulimit -f` makes
// writes past the limit fail with EFBIG). This file therefore imports nothing that
// needs the repository layout (no test/helpers), so the bundle runs from a temp folder.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  INDEX_FILE,
  SafetensorsWriter,
  ShardSpec,
  WriteError,
  openCheckpoint,
  readTensorBytes,
  writeFileAtomic,
  writeShardedCheckpoint,
} from '../../server/src/checkpoint';

const CHILD = 'LOFTQ_FAULT_CHILD';
// Not test/helpers.ts's tempDir: this file also runs as a copy outside the repository (the
// child below), where helpers cannot find the repo root. Its folders are removed at exit the same way.
const made: string[] = [];
const tmp = (p = 'loftq-faults-') => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), p));
  if (made.length === 0)
    process.once('exit', () => {
      for (const m of made) {
        spawnSync('chmod', ['-R', 'u+w', m]);
        fs.rmSync(m, { recursive: true, force: true });
      }
    });
  made.push(d);
  return d;
};

interface ChildSpec {
  mode: 'single' | 'sharded';
  dir: string;
  bytes: number;
}

async function writeSingle(dir: string, bytes: number, fill = 1): Promise<void> {
  const w = await SafetensorsWriter.create(path.join(dir, 'model.safetensors'), [
    { name: 'w', dtype: 'U8', shape: [bytes] },
  ]);
  await w.write('w', new Uint8Array(bytes).fill(fill));
  await w.commit();
}

const twoShards = (big: number): ShardSpec[] => [
  { file: 'model-00001-of-00002.safetensors', tensors: [{ name: 'a', dtype: 'U8', shape: [1024] }] },
  { file: 'model-00002-of-00002.safetensors', tensors: [{ name: 'b', dtype: 'U8', shape: [big] }] },
];

async function childMain(spec: ChildSpec): Promise<void> {
  try {
    if (spec.mode === 'single') await writeSingle(spec.dir, spec.bytes, 2);
    else await writeShardedCheckpoint(spec.dir, twoShards(spec.bytes), (t) => new Uint8Array(t.shape[0]).fill(3));
    process.stdout.write(JSON.stringify({ ok: true }));
  } catch (e) {
    const err = e as WriteError;
    process.stdout.write(
      JSON.stringify({ ok: false, name: err.name, message: err.message, file: err.file, code: err.code }),
    );
  }
}

/** Runs the child from a copy of this bundle that `nobody` can read. */
function runChild(spec: ChildSpec, opts: { ulimitBlocks?: number; asNobody?: boolean }) {
  const home = tmp('loftq-child-');
  fs.chmodSync(home, 0o755);
  const script = path.join(home, 'child.js');
  fs.copyFileSync(__filename, script);
  fs.chmodSync(script, 0o644);
  const args = opts.ulimitBlocks
    ? (['/bin/sh', ['-c', `ulimit -f ${opts.ulimitBlocks} && exec "$0" "$1"`, process.execPath, script]] as const)
    : ([process.execPath, [script]] as const);
  const r = spawnSync(args[0], [...args[1]], {
    env: { ...process.env, [CHILD]: JSON.stringify(spec) },
    encoding: 'utf8',
    timeout: 30_000,
    ...(opts.asNobody ? { uid: 65534, gid: 65534 } : {}),
  });
  fs.rmSync(home, { recursive: true, force: true });
  if (r.error && opts.asNobody) return undefined; // this container may not switch users
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as
    { ok: boolean; name?: string; message?: string; file?: string; code?: string } | undefined;
}

const isRoot = process.getuid?.() === 0;

if (process.env[CHILD]) {
  void childMain(JSON.parse(process.env[CHILD]!));
} else {
  test('abort() and a missing tensor leave no file; an earlier complete file stays intact', async () => {
    const dir = tmp();
    const w = await SafetensorsWriter.create(path.join(dir, 'model.safetensors'), [
      { name: 'a', dtype: 'F32', shape: [4] },
      { name: 'b', dtype: 'U8', shape: [2] },
    ]);
    await w.write('a', new Uint8Array(16));
    assert.equal(fs.readdirSync(dir).length, 1); // the temp file, hidden
    await w.abort();
    await w.abort();
    assert.deepEqual(fs.readdirSync(dir), []);

    await writeSingle(dir, 100, 7);
    const before = fs.readFileSync(path.join(dir, 'model.safetensors'));
    const w2 = await SafetensorsWriter.create(path.join(dir, 'model.safetensors'), [
      { name: 'w', dtype: 'U8', shape: [5] },
      { name: 'x', dtype: 'U8', shape: [1] },
    ]);
    await w2.write('w', new Uint8Array(5));
    await assert.rejects(w2.commit(), /1 tensors not written/);
    assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
    assert.deepEqual(fs.readFileSync(path.join(dir, 'model.safetensors')), before);
    await assert.rejects(w2.write('x', new Uint8Array(1)), /after commit or abort/);
  });

  test('a sharded write that fails or is cancelled part-way leaves the previous checkpoint as it was', async () => {
    const dir = tmp();
    await writeShardedCheckpoint(dir, twoShards(10), (t) => new Uint8Array(t.shape[0]).fill(1));
    const snapshot = () =>
      Object.fromEntries(
        fs
          .readdirSync(dir)
          .sort()
          .map((f) => [f, fs.readFileSync(path.join(dir, f)).toString('hex')]),
      );
    const before = snapshot();
    await assert.rejects(
      writeShardedCheckpoint(dir, twoShards(20), (t) => {
        if (t.name === 'b') throw new Error('producer failed');
        return new Uint8Array(t.shape[0]);
      }),
      /producer failed/,
    );
    assert.deepEqual(snapshot(), before);

    const ac = new AbortController();
    await assert.rejects(
      writeShardedCheckpoint(
        dir,
        twoShards(20),
        (t) => {
          ac.abort(new Error('cancelled by test'));
          return new Uint8Array(t.shape[0]);
        },
        { signal: ac.signal },
      ),
      /cancelled by test/,
    );
    assert.deepEqual(snapshot(), before);

    // A complete second write replaces it and reads back.
    await writeShardedCheckpoint(dir, twoShards(20), (t) => new Uint8Array(t.shape[0]).fill(9));
    const ck = await openCheckpoint(dir);
    assert.deepEqual([...(await readTensorBytes(ck.byName.get('b')!))], new Array(20).fill(9));
    assert.deepEqual(fs.readdirSync(dir).sort(), [INDEX_FILE, ...twoShards(0).map((s) => s.file)].sort());
  });

  test('unsafe output shard names are refused before anything is written', async () => {
    const dir = tmp();
    for (const file of [
      '../x.safetensors',
      'sub/x.safetensors',
      '/tmp/x.safetensors',
      INDEX_FILE,
      '.hidden.safetensors',
      'x.bin',
    ]) {
      await assert.rejects(
        writeShardedCheckpoint(dir, [{ file, tensors: [] }], () => new Uint8Array()),
        (e: Error & { kind?: string }) => e.kind === 'unsafe-path',
      );
    }
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  test('writing into a missing folder gives one clear line', async () => {
    const target = path.join(tmp(), 'no', 'such', 'model.safetensors');
    await assert.rejects(
      writeSingle(path.dirname(target), 4),
      (e: Error) =>
        e instanceof WriteError && e.message === `${target}: cannot be written: the folder does not exist (ENOENT)`,
    );
    await assert.rejects(
      writeFileAtomic(path.join(path.dirname(target), 'a.json'), '{}'),
      (e: Error) => e instanceof WriteError && /does not exist \(ENOENT\)/.test(e.message),
    );
  });

  test('a read-only target folder: clear permission error, no temp file', async (t) => {
    const dir = tmp();
    fs.chmodSync(dir, 0o555);
    try {
      let r: { ok: boolean; name?: string; message?: string; file?: string };
      if (isRoot) {
        const c = runChild({ mode: 'single', dir, bytes: 64 }, { asNobody: true });
        if (!c) {
          t.skip('running as root and cannot switch to uid 65534');
          return;
        }
        r = c;
      } else {
        r = { ok: true };
        await writeSingle(dir, 64).catch((e: WriteError) => {
          r = { ok: false, name: e.name, message: e.message, file: e.file };
        });
      }
      assert.equal(r.ok, false);
      assert.equal(r.name, 'WriteError');
      assert.equal(r.message, `${path.join(dir, 'model.safetensors')}: cannot be written: permission denied (EACCES)`);
      assert.deepEqual(fs.readdirSync(dir), []);
    } finally {
      fs.chmodSync(dir, 0o755);
    }
  });

  test('a size-limited target (ulimit -f): clear error, temp files removed, earlier file intact', async () => {
    const dir = tmp();
    fs.chmodSync(dir, 0o755);
    await writeSingle(dir, 1000, 5);
    const before = fs.readFileSync(path.join(dir, 'model.safetensors'));
    const r = runChild({ mode: 'single', dir, bytes: 1 << 20 }, { ulimitBlocks: 64 })!;
    assert.equal(r.ok, false);
    assert.equal(
      r.message,
      `${path.join(dir, 'model.safetensors')}: cannot be written: file size limit reached (EFBIG)`,
    );
    assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
    assert.deepEqual(fs.readFileSync(path.join(dir, 'model.safetensors')), before);

    const sharded = tmp();
    fs.chmodSync(sharded, 0o755);
    const s = runChild({ mode: 'sharded', dir: sharded, bytes: 1 << 20 }, { ulimitBlocks: 64 })!;
    assert.equal(s.ok, false);
    assert.equal(s.file, path.join(sharded, 'model-00002-of-00002.safetensors'));
    assert.match(s.message!, /cannot be written: file size limit reached \(EFBIG\)$/);
    assert.deepEqual(fs.readdirSync(sharded), []); // the finished first shard's temp is gone too
  });
}
