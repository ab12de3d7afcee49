// kill -9 of the language server during `loftq/quantize` (seeded points: after a random
// number of finished matrices, or while writing files): the output folder is judged like
// the CLI's (faults-oracle.ts) — complete previous result, resumable journal or nothing —
// and `loftq quantize` with the same settings then completes it with the files an
// uninterrupted run writes. The worker threads die with the server, so nothing runs on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { QuantizeParams } from '../../server/src/protocol/lsp_ext';
import { Rng } from '../../server/src/tools/fuzz/rng';
import { repoRoot, tempDir } from '../helpers';
import { judge, listTree, Reference, State } from '../unit/faults-oracle';
import { LspClient } from './lspClient';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const cliArgs = (out: string) => [
  'quantize',
  STORIES,
  '--out',
  out,
  '--bits',
  '2',
  '--rank',
  '4',
  '--iters',
  '1',
  '--workers',
  '1',
  '--backend',
  'cpu',
  '--quiet',
];

const KILL_SERVER_MID_RUN =
  'kill -9 of the server mid-run (6 seeded trials): ' +
  'the folder is judged, and the CLI resumes it to identical files';

test(KILL_SERVER_MID_RUN, async () => {
  const refOut = path.join(tempDir('loftq-srvkill-ref-'), 'out');
  assert.equal(spawnSync(process.execPath, [CLI, ...cliArgs(refOut)]).status, 0);
  const ref = new Reference(refOut, STORIES);
  const rng = new Rng(42);
  const states: State[] = [];
  for (let trial = 0; trial < 6; trial++) {
    const root = tempDir('loftq-srvkill-');
    const out = path.join(root, 'out');
    if (trial % 3 === 2) fs.cpSync(refOut, out, { recursive: true });
    const c = await LspClient.start({ root });
    const after = rng.int(0, 35); // matrices finished before the kill; 35 = while writing files
    const params: QuantizeParams = {
      checkpoint: STORIES,
      out,
      settings: { bits: 2, rank: 4, iters: 1, quantizer: 'nf', blockSize: 64 },
      backend: 'cpu',
      workers: 1,
      workDoneToken: 't',
      // The checkpoint lies outside this temp workspace: as if the user confirmed it in the client.
      confirmedOutsideWorkspace: true,
    };
    const run = c.conn.sendRequest(Methods.quantize, params).catch(() => 'connection lost');
    await c.until(
      () =>
        after === 35
          ? c.progress.find((p) => p.value.message === 'writing files')
          : c.notifications.filter((n) => n.method === Methods.matrixDone).length >= after || undefined,
      `${after} matrices done`,
      60_000,
    );
    const exited = new Promise((r) => c.child.once('exit', r));
    c.child.kill('SIGKILL');
    await exited;
    c.conn.dispose();
    void run;
    states.push(await judge(out, ref, ['model.layers.0.self_attn.q_proj.weight']));
    const rerun = spawnSync(process.execPath, [CLI, ...cliArgs(out)], { encoding: 'utf8' });
    assert.equal(rerun.status, 0, rerun.stderr);
    assert.equal(await judge(out, ref, ['model.layers.4.mlp.down_proj.weight']), 'complete');
    assert.deepEqual(listTree(out), [...ref.files.keys()].sort(), 'the rerun leaves no temp file, lock or journal');
  }
  console.log(`server kill -9 trials: ${states.join(', ')}`);
  assert.ok(states.includes('journal'));
});
