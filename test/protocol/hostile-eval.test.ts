// Issue 27 over the protocol: `loftq/eval` checks its typed parameters (a string updateReport once
// rewrote the report), answers a cancel while a tokenizer regex backtracks for ever (the worker is
// terminated: no core left busy), and refuses deeply nested token JSON as InvalidParams naming the
// file (it was -32803 "Maximum call stack size exceeded").

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CancellationTokenSource } from 'vscode-languageserver-protocol';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { EvalParams } from '../../server/src/protocol/lsp_ext';
import { writeTestTokenizer } from '../calib-files';
import { fixture, repoRoot } from '../helpers';
import { withServer, workspace } from './support';

const invalidParams = (pattern: RegExp) => (e: { code: number; message: string }) => {
  assert.equal(e.code, -32602, e.message);
  assert.match(e.message, pattern);
  assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
  return true;
};

/** Seconds of CPU the process has used (utime + stime of /proc/PID/stat). */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

test('loftq/eval: typed params checked, a backtracking tokenizer cancelled, deep JSON InvalidParams', async () => {
  const { root, ckptDir } = workspace();
  for (const f of ['config.json'])
    fs.copyFileSync(path.join(repoRoot, 'examples', 'stories260k', f), path.join(ckptDir, f));
  const out = path.join(root, 'out');
  const settings = { bits: 4, rank: 8, iters: 1, quantizer: 'nf' as const, blockSize: 64 };
  await quantizeCheckpoint(ckptDir, { out, workers: 'in-thread', settings });
  const tokens = path.join(root, 'tokens.json');
  fs.copyFileSync(fixture('stories260k-tokens.json'), tokens);
  const reportFile = path.join(out, 'loftq-report.json');
  const before = fs.readFileSync(reportFile);
  // A tokenizer whose pre-tokenizer backtracks for ever on "a"×40 + "b".
  writeTestTokenizer(ckptDir);
  const tokFile = path.join(ckptDir, 'tokenizer.json');
  const json = JSON.parse(fs.readFileSync(tokFile, 'utf8'));
  json.pre_tokenizer = { type: 'Split', pattern: { Regex: '(a|a)+$' }, behavior: 'Isolated', invert: false };
  fs.writeFileSync(tokFile, JSON.stringify(json));
  const txt = path.join(root, 'story.txt');
  fs.writeFileSync(txt, `${'a'.repeat(40)}b\n`);
  const deep = path.join(root, 'deep.json');
  fs.writeFileSync(deep, `[${'['.repeat(100_000)}${']'.repeat(100_000)}]`);
  await withServer(root, async (c) => {
    const base: EvalParams = { original: ckptDir, out, tokens, backend: 'wasm' };
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ updateReport: 'no' }, /'updateReport' must be true or false, got "no"/],
      [{ updateReport: 0 }, /'updateReport' must be true or false, got 0/],
      [{ confirmedOutsideWorkspace: 'yes' }, /'confirmedOutsideWorkspace' must be true or false/],
      [{ backend: 'gpu' }, /'backend' must be .*"wasm".*, got "gpu"/],
      [{ workDoneToken: { a: 1 } }, /'workDoneToken' must be a string or an integer/],
    ];
    for (const [extra, pattern] of bad)
      await assert.rejects(c.conn.sendRequest(Methods.eval, { ...base, ...extra }), invalidParams(pattern));
    assert.ok(fs.readFileSync(reportFile).equals(before), 'no refused request touched the report');

    await assert.rejects(
      c.conn.sendRequest(Methods.eval, { ...base, tokens: deep }),
      invalidParams(/deep\.json: sequence 0, position 0: \[\[\[…\]\]\] is not an integer token id/),
    );

    const cts = new CancellationTokenSource();
    const hung = c.conn.sendRequest(Methods.eval, { ...base, tokens: txt }, cts.token);
    let settled = false;
    hung.then(
      () => (settled = true),
      () => (settled = true),
    );
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(!settled, 'still tokenizing');
    const t0 = performance.now();
    cts.cancel();
    await assert.rejects(hung, (e: { code: number }) => e.code === -32800);
    assert.ok(performance.now() - t0 < 2000, `cancel answered in ${performance.now() - t0} ms`);
    // The tokenizer thread is gone: the server idles (it burnt a whole core while the regex ran).
    const cpu0 = cpuSeconds(c.child.pid!);
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok(cpuSeconds(c.child.pid!) - cpu0 < 0.3, 'no thread keeps a core busy after the cancel');
    assert.ok(fs.readFileSync(reportFile).equals(before));
    assert.ok(!fs.existsSync(path.join(out, '.loftq.lock')), 'the lock is released');
    const inspected = (await c.conn.sendRequest(Methods.inspect, { checkpoint: ckptDir })) as { tensors: unknown[] };
    assert.equal(inspected.tensors.length, 47);
  });
});
