// Files beside a checkpoint (config.json, tokenizer files) follow the shard rules (issue 14.4):
// regular files only, inside the checkpoint folder after resolving links, size-capped, and one
// line naming the file on refusal — before any computation, with nothing written.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readSideFile, CheckpointError } from '../../server/src/checkpoint';
import { readModelConfig } from '../../server/src/model/config';
import { syntheticReport } from '../synthetic';
import { repoRoot, tempDir } from '../helpers';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');

function checkpointCopy(): string {
  const dir = path.join(tempDir('loftq-side-'), 'ck');
  fs.mkdirSync(dir);
  for (const f of fs.readdirSync(STORIES)) fs.copyFileSync(path.join(STORIES, f), path.join(dir, f));
  return dir;
}

/** Quantize with a hard timeout (a FIFO used to hang forever), then the one-line refusal. */
function refused(ck: string, file: string, problem: RegExp) {
  const out = path.join(path.dirname(ck), 'out');
  const r = spawnSync(
    process.execPath,
    [CLI, 'quantize', ck, '--out', out, '--bits', '2', '--rank', '4', '--iters', '1', '--quiet'],
    { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' },
  );
  assert.notEqual(r.signal, 'SIGKILL', `quantize hung on ${file}`);
  assert.equal(r.status, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.ok(lines[0].includes(path.join(ck, file)), `names ${file}: ${lines[0]}`);
  assert.match(lines[0], problem);
  assert.ok(!fs.existsSync(out), 'nothing written');
}

test('a symlink to a file outside the checkpoint folder is refused, never copied', () => {
  const ck = checkpointCopy();
  fs.symlinkSync('/etc/passwd', path.join(ck, 'tokenizer.json'));
  refused(ck, 'tokenizer.json', /resolves to \/etc\/passwd, outside the checkpoint folder/);
  const ck2 = checkpointCopy();
  fs.writeFileSync(path.join(path.dirname(ck2), 'secret.json'), '{"token":"s3cret"}');
  fs.symlinkSync('../secret.json', path.join(ck2, 'tokenizer_config.json'));
  refused(ck2, 'tokenizer_config.json', /outside the checkpoint folder/);
});

test('a FIFO config.json does not hang, and a directory named config.json gets a clear line', () => {
  const ck = checkpointCopy();
  fs.rmSync(path.join(ck, 'config.json'));
  execFileSync('mkfifo', [path.join(ck, 'config.json')]);
  refused(ck, 'config.json', /is a named pipe \(FIFO\), not a file/);
  const ck2 = checkpointCopy();
  fs.mkdirSync(path.join(ck2, 'tokenizer.json'));
  refused(ck2, 'tokenizer.json', /is a directory, not a file/);
});

test('links inside the folder are followed and copied; sizes are capped', async () => {
  const ck = checkpointCopy();
  fs.mkdirSync(path.join(ck, 'tok'));
  fs.writeFileSync(path.join(ck, 'tok', 'real.json'), '{"model":{}}');
  fs.symlinkSync('tok/real.json', path.join(ck, 'tokenizer.json'));
  const out = path.join(path.dirname(ck), 'out');
  const r = spawnSync(
    process.execPath,
    [CLI, 'quantize', ck, '--out', out, '--bits', '2', '--rank', '4', '--iters', '1', '--quiet'],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.equal(fs.readFileSync(path.join(out, 'tokenizer.json'), 'utf8'), '{"model":{}}');
  assert.ok(!fs.lstatSync(path.join(out, 'tokenizer.json')).isSymbolicLink());
  assert.deepEqual(fs.readFileSync(path.join(out, 'config.json')), fs.readFileSync(path.join(STORIES, 'config.json')));
  // The cap, at a size a test can afford.
  await assert.rejects(
    readSideFile(ck, 'config.json', 100),
    (e: unknown) =>
      e instanceof CheckpointError &&
      e.kind === 'too-large' &&
      e.message.startsWith(
        `${path.join(ck, 'config.json')}: is ${fs.statSync(path.join(ck, 'config.json')).size} bytes, ` +
          'over the 100-byte limit',
      ),
  );
  assert.equal(await readSideFile(ck, 'vocab.json'), undefined, 'absent files are simply absent');
});

test('the forward pass reads config.json by the same rules (a FIFO is refused, not waited on)', async () => {
  const ck = checkpointCopy();
  fs.rmSync(path.join(ck, 'config.json'));
  execFileSync('mkfifo', [path.join(ck, 'config.json')]);
  await assert.rejects(
    readModelConfig(ck),
    (e: unknown) =>
      e instanceof CheckpointError &&
      e.message === `${path.join(ck, 'config.json')}: is a named pipe (FIFO), not a file`,
  );
  fs.rmSync(path.join(ck, 'config.json'));
  await assert.rejects(readModelConfig(ck), /config\.json: does not exist/);
});

test('loftq plan: an existing --out that is a FIFO or a folder is one line, not a hang', () => {
  const dir = tempDir('loftq-side-plan-');
  const report = path.join(dir, 'report.json');
  fs.writeFileSync(report, JSON.stringify(syntheticReport({ layers: 2 })));
  const fifo = path.join(dir, 'fifo.json');
  execFileSync('mkfifo', [fifo]);
  fs.mkdirSync(path.join(dir, 'folder.json'));
  for (const [out, why] of [
    [fifo, /is a named pipe \(FIFO\), not a file/],
    [path.join(dir, 'folder.json'), /is a directory, not a file/],
  ] as const) {
    const r = spawnSync(process.execPath, [CLI, 'plan', report, '--budget', '3', '--out', out], {
      encoding: 'utf8',
      timeout: 30_000,
      killSignal: 'SIGKILL',
    });
    assert.notEqual(r.signal, 'SIGKILL', `plan hung on ${out}`);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(r.stderr.includes(out), r.stderr);
    assert.match(r.stderr, why);
  }
});
