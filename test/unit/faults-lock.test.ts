// Two processes race for one output folder's lock (`.loftq.lock`) while one of them is
// stalled between the steps of taking it: exactly one may hold it at any time, and the
// other is refused with a line naming the holder's pid. The children are this bundle run
// again with LOFTQ_LOCK_CHILD set; each holds the lock it got until the test tells it to
// let go, so "both hold it" is observed directly, not inferred.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tempDir } from '../helpers';
import * as path from 'node:path';
import { LockStep, lockOutput } from '../../server/src/base/lock';

const CHILD = 'LOFTQ_LOCK_CHILD';
interface ChildSpec {
  out: string;
  stallAt?: LockStep;
  go: string;
  release: string;
}

const until = async (cond: () => boolean, what: string, ms = 20_000) => {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

async function childMain(spec: ChildSpec): Promise<void> {
  const say = (s: string) => process.stdout.write(s + '\n');
  try {
    const unlock = await lockOutput(spec.out, undefined, async (step) => {
      if (step !== spec.stallAt) return;
      say(`stalled ${step}`);
      await until(() => fs.existsSync(spec.go), 'go', 60_000);
    });
    say(`holding ${process.pid}`);
    await until(() => fs.existsSync(spec.release), 'release', 60_000);
    await unlock();
    say('released');
  } catch (e) {
    say(`refused ${(e as Error).message}`);
  }
}

class Child {
  readonly proc: ChildProcess;
  text = '';
  constructor(spec: ChildSpec) {
    const env = { ...process.env, [CHILD]: JSON.stringify(spec) };
    this.proc = spawn(process.execPath, [__filename], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    this.proc.stdout!.on('data', (d) => {
      this.text += d;
    });
  }
  has = (s: string) => this.text.includes(s);
  get holding() {
    return this.has('holding');
  }
  get done() {
    return this.has('refused') || this.has('released');
  }
}

/** A pid that belonged to a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

async function race(setup: (out: string) => void, stallAt: LockStep) {
  const dir = tempDir('loftq-lock-');
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  setup(out);
  const go = path.join(dir, 'go'),
    release = path.join(dir, 'release');
  const a = new Child({ out, stallAt, go, release });
  await until(() => a.has(`stalled ${stallAt}`) || a.done, `A to stall at ${stallAt}`);
  assert.ok(a.has('stalled'), `A never reached '${stallAt}': ${a.text}`);
  const b = new Child({ out, go, release });
  await until(() => b.holding || b.done, 'B to lock or be refused');
  fs.writeFileSync(go, '');
  await until(() => a.holding || a.done, 'A to lock or be refused');
  // Both have decided and neither has let go: at most one may hold the lock.
  const holders = [a, b].filter((c) => c.holding);
  fs.writeFileSync(release, '');
  await until(() => a.done && b.done, 'both children to finish');
  assert.equal(holders.length, 1, `A: ${a.text.trim()} | B: ${b.text.trim()}`);
  const loser = holders[0] === a ? b : a;
  const pid = holders[0].proc.pid;
  assert.match(loser.text, new RegExp(`refused .*another loftq run \\(pid ${pid}\\) is writing to this folder`));
  assert.deepEqual(fs.readdirSync(out), [], 'the lock and its temp files are gone after the holder lets go');
}

if (process.env[CHILD]) {
  void childMain(JSON.parse(process.env[CHILD]!));
} else {
  test('lock race: a run stalled after writing its pid, before the lock exists — one run holds it', async () => {
    await race(() => undefined, 'pid-written');
  });

  test('lock race: two runs take over one stale lock while one is stalled — one run holds the folder', async () => {
    const stale = (out: string) => fs.writeFileSync(path.join(out, '.loftq.lock'), JSON.stringify({ pid: deadPid() }));
    await race(stale, 'stale-seen');
  });
}
