// `--shard auto` (issue 28 §5): the shard index and count from a Slurm job array or a
// Kubernetes Indexed Job; a refusal in one line when neither is set or the values do not fit;
// shard counts bounded (issue 27 §6). Through the real CLI: the runs' descriptors and a merge.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot, tempDir } from '../helpers';
import { MAX_SHARDS, parseShard } from '../../server/src/cli/shardOption';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const CLUSTER_VARS = ['SLURM_ARRAY_TASK_ID', 'SLURM_ARRAY_TASK_MIN', 'SLURM_ARRAY_TASK_COUNT', 'JOB_COMPLETION_INDEX'];

function run(env: Record<string, string>, ...args: string[]) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !CLUSTER_VARS.includes(k)));
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...clean, ...env } });
}

function refused(r: ReturnType<typeof run>, pattern: RegExp) {
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, pattern);
}

test('the index and count come from Slurm (dense from the array minimum) or Kubernetes (count given)', () => {
  const slurm = { SLURM_ARRAY_TASK_ID: '7', SLURM_ARRAY_TASK_MIN: '5', SLURM_ARRAY_TASK_COUNT: '3' };
  assert.deepEqual(parseShard('auto', slurm), { index: 2, count: 3 });
  assert.deepEqual(parseShard('auto/3', slurm), { index: 2, count: 3 });
  assert.throws(() => parseShard('auto/4', slurm), /the Slurm array has 3 tasks/);
  assert.throws(() => parseShard('auto', { ...slurm, SLURM_ARRAY_TASK_ID: '8' }), /index 3 is not below the count 3/);
  assert.throws(() => parseShard('auto', { ...slurm, SLURM_ARRAY_TASK_MIN: 'x' }), /must all be whole numbers/);
  assert.deepEqual(parseShard('auto/8', { JOB_COMPLETION_INDEX: '5' }), { index: 5, count: 8 });
  assert.throws(
    () => parseShard('auto', { JOB_COMPLETION_INDEX: '5' }),
    /needs the Job's completions: --shard auto\/N/,
  );
  assert.throws(() => parseShard('auto', {}), /neither is set — give --shard i\/n/);
  assert.deepEqual(parseShard('1/4', {}), { index: 1, count: 4 });
  assert.throws(() => parseShard('1/1000000000', {}), new RegExp(`the shard count must be 1 to ${MAX_SHARDS}`));
  assert.throws(() => parseShard('0/0', {}), /the shard count must be 1/);
  assert.throws(() => parseShard('-1/3', {}), /must be i\/n/);
});

test('--shard auto through the CLI: Slurm tasks and Indexed Job pods merge into one run', async () => {
  const dir = tempDir('loftq-shard-auto-');
  try {
    const fast = ['--bits', '4', '--rank', '2', '--iters', '1', '--quiet'];
    const shared = path.join(dir, 'slurm');
    for (const id of ['10', '11'])
      assert.equal(
        run(
          { SLURM_ARRAY_TASK_ID: id, SLURM_ARRAY_TASK_MIN: '10', SLURM_ARRAY_TASK_COUNT: '2' },
          'quantize',
          STORIES,
          '--out',
          shared,
          '--shard',
          'auto',
          ...fast,
        ).status,
        0,
      );
    const journal = fs.readdirSync(path.join(shared, '.loftq-journal'));
    assert.ok(journal.includes('shard-0-of-2.json') && journal.includes('shard-1-of-2.json'), journal.join());
    assert.equal(run({}, 'merge', '--out', shared, '--quiet').status, 0);
    const pods = path.join(dir, 'k8s');
    for (const i of ['0', '1'])
      assert.equal(
        run({ JOB_COMPLETION_INDEX: i }, 'quantize', STORIES, '--out', pods, '--shard', 'auto/2', ...fast).status,
        0,
      );
    assert.equal(run({}, 'merge', '--out', pods, '--quiet').status, 0);
    const single = path.join(dir, 'single');
    assert.equal(run({}, 'quantize', STORIES, '--out', single, ...fast).status, 0);
    for (const f of ['model.safetensors', 'loftq_init/adapter_model.safetensors']) {
      const want = fs.readFileSync(path.join(single, f));
      assert.deepEqual(fs.readFileSync(path.join(shared, f)), want, `slurm ${f}`);
      assert.deepEqual(fs.readFileSync(path.join(pods, f)), want, `k8s ${f}`);
    }
    const none = path.join(dir, 'none');
    refused(
      run({}, 'quantize', STORIES, '--out', none, '--shard', 'auto'),
      /^loftq: option '--shard auto' needs a Slurm job array/,
    );
    refused(
      run({}, 'quantize', STORIES, '--out', none, '--shard', '1/1000000000'),
      /the shard count must be 1 to 65536/,
    );
    assert.equal(fs.existsSync(none), false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
