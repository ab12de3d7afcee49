// Disk full and permission errors while `loftq quantize` writes its output: one clear line
// naming the file and the reason (exit 1), no temp file left, no partial output — the
// folder is judged by faults-oracle.ts against an uninterrupted run — and a rerun without
// the fault completes with identical files. A size-limited target is simulated with
// `ulimit -f` (writes past it fail with EFBIG); a read-only folder with mode 0555 (as
// root, which ignores permissions, the CLI runs as `nobody`).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync, SpawnSyncOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot, tempDir } from '../helpers';
import { judge, listTree, Reference } from './faults-oracle';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const ARGS = ['--bits', '2', '--rank', '4', '--iters', '1', '--workers', '1', '--backend', 'cpu', '--quiet'];
const isRoot = process.getuid?.() === 0;

function cli(out: string, opts: { ulimitBlocks?: number; asNobody?: boolean } = {}) {
  const argv = [CLI, 'quantize', STORIES, '--out', out, ...ARGS];
  const spawnOpts: SpawnSyncOptions = {
    encoding: 'utf8',
    timeout: 60_000,
    ...(opts.asNobody ? { uid: 65534, gid: 65534 } : {}),
  };
  const r = opts.ulimitBlocks
    ? spawnSync(
        '/bin/sh',
        ['-c', `ulimit -f ${opts.ulimitBlocks} && exec "$@"`, 'sh', process.execPath, ...argv],
        spawnOpts,
      )
    : spawnSync(process.execPath, argv, spawnOpts);
  return { status: r.status, stderr: String(r.stderr ?? ''), error: r.error };
}

const temps = (dir: string) => listTree(dir).filter((f) => path.basename(f).startsWith('.') && f.endsWith('.tmp'));

function oneLine(stderr: string, pattern: RegExp) {
  const lines = stderr.split('\n').filter((l) => l.startsWith('loftq: '));
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
}

let reference: Reference | undefined;
function ref(): Reference {
  if (!reference) {
    const out = path.join(tempDir('loftq-export-ref-'), 'out');
    assert.equal(cli(out).status, 0);
    reference = new Reference(out, STORIES);
  }
  return reference;
}

const DISK_FULL =
  'disk full (ulimit -f): one line naming the file, temp files removed, no output; ' +
  'the rerun completes identically';

test(DISK_FULL, async () => {
  const r = ref();
  // 400 blocks (200–400 KiB): journal entries (≤ 48 KiB) fit, the 1 MiB backbone does not.
  for (const previous of [false, true]) {
    const out = path.join(tempDir('loftq-efbig-'), 'out');
    if (previous) fs.cpSync(r.dir, out, { recursive: true });
    const res = cli(out, { ulimitBlocks: 400 });
    assert.equal(res.status, 1, res.stderr);
    oneLine(
      res.stderr,
      new RegExp(
        `^loftq: ${out.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}/model\\.safetensors: ` +
          'cannot be written: file size limit reached \\(EFBIG\\)$',
      ),
    );
    assert.deepEqual(temps(out), []);
    // The journal of the computed matrices is kept (resumable); a previous result is whole,
    // report included, since nothing was retired before every new file was written.
    assert.equal(await judge(out, r), previous ? 'complete' : 'journal');
    assert.equal(fs.existsSync(path.join(out, 'model.safetensors')), previous);
    const again = cli(out);
    assert.equal(again.status, 0, again.stderr);
    assert.equal(await judge(out, r), 'complete');
    assert.deepEqual(listTree(out), [...r.files.keys()].sort());
  }
  // A limit so small that even a journal entry fails: the same, earlier.
  const out = path.join(tempDir('loftq-efbig-'), 'out');
  const res = cli(out, { ulimitBlocks: 8 });
  assert.equal(res.status, 1, res.stderr);
  oneLine(
    res.stderr,
    /^loftq: \S+\/\.loftq-journal\/[0-9a-f]+\.safetensors: cannot be written: file size limit reached \(EFBIG\)$/,
  );
  assert.deepEqual(temps(out), []);
  // No entry was written: the run leaves no empty journal, and the folder it created goes too (issue 27.10).
  assert.equal(await judge(out, r), 'nothing');
  assert.ok(!fs.existsSync(out), 'the folder the run created is gone');
});

test('read-only output folder: one line, nothing written, a previous complete result stays intact', async (t) => {
  const r = ref();
  const base = tempDir('loftq-readonly-');
  fs.chmodSync(base, 0o755);
  if (isRoot) {
    const probe = cli(path.join(base, 'probe'), { asNobody: true });
    if (probe.error || /EACCES.*cli\.js|Cannot find module/.test(probe.stderr)) {
      t.skip('cannot run the CLI as nobody here');
      return;
    }
    fs.rmSync(path.join(base, 'probe'), { recursive: true, force: true });
  }
  const asNobody = isRoot;

  // An empty read-only folder.
  const empty = path.join(base, 'empty');
  fs.mkdirSync(empty, { mode: 0o555 });
  fs.chmodSync(empty, 0o555);
  let res = cli(empty, { asNobody });
  assert.equal(res.status, 1, res.stderr);
  oneLine(
    res.stderr,
    new RegExp(
      `^loftq: ${empty.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: cannot be written: permission denied \\(EACCES\\)$`,
    ),
  );
  assert.deepEqual(fs.readdirSync(empty), []);

  // A previous complete result in a folder made read-only: untouched, byte for byte.
  const prev = path.join(base, 'prev');
  fs.cpSync(r.dir, prev, { recursive: true });
  for (const d of [prev, path.join(prev, 'loftq_init')]) fs.chmodSync(d, 0o555);
  res = cli(prev, { asNobody });
  assert.equal(res.status, 1, res.stderr);
  oneLine(res.stderr, /: cannot be written: permission denied \(EACCES\)$/);
  assert.equal(await judge(prev, r, ['model.layers.2.mlp.down_proj.weight']), 'complete');
  assert.deepEqual(listTree(prev), [...r.files.keys()].sort());

  // Only the adapter folder is read-only: the run fails at the adapters, after the backbone.
  const late = path.join(base, 'late');
  fs.mkdirSync(path.join(late, 'loftq_init'), { recursive: true });
  fs.chmodSync(late, 0o777);
  fs.chmodSync(path.join(late, 'loftq_init'), 0o555);
  res = cli(late, { asNobody });
  assert.equal(res.status, 1, res.stderr);
  oneLine(res.stderr, /loftq_init\/adapter_model\.safetensors: cannot be written: permission denied \(EACCES\)$/);
  assert.deepEqual(temps(late), []);
  assert.equal(await judge(late, r), 'journal');
  fs.chmodSync(path.join(late, 'loftq_init'), 0o777);
  res = cli(late, { asNobody });
  assert.equal(res.status, 0, res.stderr);
  assert.equal(await judge(late, r), 'complete');
});

const READ_ONLY_FS =
  'a read-only file system is reported as read-only (EROFS), not ENOENT; ' + 'an output under /proc fails at once';

test(READ_ONLY_FS, async (t) => {
  // A read-only tmpfs needs a mount: in a user namespace (unshare -rm) where the kernel allows one.
  const probe = spawnSync('unshare', ['-rm', 'sh', '-c', 'mount -t tmpfs -o ro tmpfs /mnt'], { encoding: 'utf8' });
  if (probe.status !== 0) {
    t.skip(`no user namespace to mount a read-only tmpfs in: ${probe.stderr.trim()}`);
    return;
  }
  const script = `mount -t tmpfs -o size=4m tmpfs /mnt && mkdir /mnt/out && mount -o remount,ro /mnt && \
for o in /mnt/out /mnt/new; do
    "$0" "$1" quantize "$2" --out "$o" ${ARGS.join(' ')}; echo "rc=$?"; done`;
  const r = spawnSync('unshare', ['-rm', 'sh', '-c', script, process.execPath, CLI, STORIES], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.deepEqual(r.stdout.trim().split('\n'), ['rc=1', 'rc=1'], r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('loftq: '));
  assert.deepEqual(
    lines,
    [
      'loftq: /mnt/out: cannot be written: the folder is read-only (read-only file system) (EROFS)',
      'loftq: /mnt/new: cannot be written: the folder is read-only (read-only file system) (EROFS)',
    ],
    r.stderr,
  );
  // Node's recursive mkdir loops forever there (ENOENT, retried); ours fails with one line.
  const p = cli('/proc/loftq-out/x');
  assert.equal(p.error, undefined, 'it must not hang');
  assert.equal(p.status, 1, p.stderr);
  oneLine(p.stderr, /^loftq: \/proc\/loftq-out\/x: cannot be written: /);
});
