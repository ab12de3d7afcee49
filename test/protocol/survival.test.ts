// The language server survives what editors and users do to it: malformed plan files
// (syntax, types, absurd nesting, binary junk), a checkpoint deleted during a run, two
// runs into one output folder (from the server and from another process), and a run
// cancelled from the progress bar followed by a new one — which must then produce exactly
// the files the CLI produces. After each, the same server process answers the next request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Diagnostic, DiagnosticSeverity, WorkDoneProgressCancelNotification } from 'vscode-languageserver-protocol';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { InspectResult, QuantizeParams, QuantizeResult } from '../../server/src/protocol/lsp_ext';
import { repoRoot } from '../helpers';
import { judge, listTree, Reference } from '../unit/faults-oracle';
import { LspClient, uriOf } from './lspClient';
import { withServer, workspace } from './support';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const SETTINGS = { bits: 2, rank: 4, iters: 1, quantizer: 'nf' as const, blockSize: 64 };
const CLI_SETTINGS = ['--bits', '2', '--rank', '4', '--iters', '1', '--backend', 'cpu', '--workers', '1', '--quiet'];

async function alive(c: LspClient, checkpoint: string) {
  const r = (await c.conn.sendRequest(Methods.inspect, { checkpoint })) as InspectResult;
  assert.equal(r.totals.tensors, 47);
  assert.equal(c.child.exitCode, null);
}

const temps = (dir: string) => listTree(dir).filter((f) => path.basename(f).startsWith('.') && f.endsWith('.tmp'));

test('malformed plan files get diagnostics (or a clear refusal), and the server keeps answering', async () => {
  const { root, ckptDir } = workspace();
  const checkpoint = path.join(ckptDir, 'model.safetensors');
  await withServer(root, async (c) => {
    const uri = uriOf(path.join(root, 'loftq.json'));
    const cases: [string, (d: Diagnostic[]) => boolean][] = [
      [
        '{ "checkpoint": "ckpt/model.safetensors", "defaults": { "bits": ',
        (d) => d.some((x) => x.code === 'plan' && /JSON syntax/.test(x.message)),
      ],
      [
        '{ "checkpoint": 5, "defaults": [], "overrides": "all" }',
        (d) => d.filter((x) => x.code === 'plan' && x.severity === DiagnosticSeverity.Error).length >= 2,
      ],
      ['['.repeat(200_000), (d) => d.some((x) => x.code === 'plan')],
      ['\u0000\u0001\ufffd\u202e binary junk', (d) => d.some((x) => x.code === 'plan')],
      [
        '{ "checkpoint": "ckpt/model.safetensors", "overrides": [ { "match": "{a,{b", "bits": 4 }, ' +
          '{ "match": "x{0..99999999}", "bits": 3 } ] }',
        (d) => d.some((x) => x.code === 'plan'),
      ],
      [
        '{ "checkpoint": "ckpt/model.safetensors", "defaults": { "bits": 4, "rank": 1e400, "iters": -1 } }',
        (d) => d.some((x) => x.code === 'plan' && x.severity === DiagnosticSeverity.Error),
      ],
    ];
    let version = 0;
    for (const [text, ok] of cases) {
      version++;
      if (version === 1) await c.open(uri, text);
      else await c.change(uri, text, version);
      await c.diagnosticsFor(
        uri,
        (d) => c.diagnostics.get(uri)!.version === version && ok(d),
        `diagnostics of malformed plan #${version}`,
      );
      await alive(c, checkpoint);
    }
    // A run from a malformed plan on disk is refused with the plan's problem, not a crash.
    const planFile = path.join(root, 'bad', 'loftq.json');
    fs.mkdirSync(path.dirname(planFile));
    fs.writeFileSync(planFile, '{ "checkpoint": "../ckpt", "defaults": { "bits": 5 } }');
    const out = path.join(root, 'out');
    await assert.rejects(
      c.conn.sendRequest(Methods.quantize, {
        checkpoint,
        out,
        settings: SETTINGS,
        plan: planFile,
        backend: 'cpu',
        workers: 1,
      } satisfies QuantizeParams),
      (e: Error & { code: number }) =>
        e.code === -32602 && e.message.startsWith(`plan ${planFile}: 'bits' must be 1, 2, 3, 4 or 8`),
    );
    fs.writeFileSync(planFile, '['.repeat(200_000));
    await assert.rejects(
      c.conn.sendRequest(Methods.quantize, { checkpoint, out, settings: SETTINGS, plan: planFile }),
      (e: Error & { code: number }) =>
        e.code === -32602 &&
        e.message.startsWith(`plan ${planFile}: the plan nests 200000 levels deep`) &&
        !e.message.includes('\n'),
    );
    await assert.rejects(
      c.conn.sendRequest(Methods.quantize, {
        checkpoint,
        out,
        settings: SETTINGS,
        plan: path.join(root, 'nowhere', 'loftq.json'),
      }),
      /plan \S+nowhere\/loftq\.json cannot be read \(ENOENT\)/,
    );
    assert.deepEqual(listTree(out), []);
    await alive(c, checkpoint);
  });
});

test('a checkpoint deleted during a run: the run fails naming it, no output is left, the server goes on', async () => {
  const { root, ckptDir } = workspace();
  const checkpoint = path.join(ckptDir, 'model.safetensors');
  await withServer(root, async (c) => {
    const out = path.join(root, 'out');
    const params: QuantizeParams = {
      checkpoint,
      out,
      settings: { ...SETTINGS, iters: 20 },
      backend: 'cpu',
      workers: 1,
      workDoneToken: 'doomed',
    };
    const run = c.conn.sendRequest(Methods.quantize, params);
    await c.until(
      () => c.progress.find((p) => p.token === 'doomed' && /^matrix \d+ of 35/.test(p.value.message ?? '')),
      'the run under way',
    );
    fs.rmSync(checkpoint);
    await assert.rejects(run, (e: Error & { code: number }) => {
      assert.equal(e.code, -32602, e.message);
      assert.ok(e.message.startsWith(checkpoint), e.message);
      assert.match(e.message, /ENOENT|does not exist/);
      assert.ok(!e.message.includes('\n'));
      return true;
    });
    await c.until(
      () => c.notifications.find((n) => n.method === Methods.runState && n.params.state === 'failed'),
      'runState failed',
    );
    assert.deepEqual(temps(out), []);
    assert.ok(!fs.existsSync(path.join(out, 'loftq-report.json')));
    assert.deepEqual(
      listTree(out).filter((f) => !f.startsWith('.loftq-journal/')),
      [],
      'only the journal of finished matrices may remain',
    );
    // The plan diagnostics now say the checkpoint is gone; restoring it lets a run finish.
    const plan = uriOf(path.join(root, 'loftq.json'));
    await c.open(plan, '{ "checkpoint": "ckpt/model.safetensors" }');
    await c.diagnosticsFor(plan, (d) =>
      d.some((x) => x.code === 'checkpoint' && x.message === "checkpoint 'ckpt/model.safetensors' does not exist"),
    );
    fs.copyFileSync(path.join(repoRoot, 'examples', 'stories260k', 'model.safetensors'), checkpoint);
    const done = (await c.conn.sendRequest(Methods.quantize, {
      ...params,
      settings: SETTINGS,
      workDoneToken: 'again',
    })) as QuantizeResult;
    assert.equal(done.report.matrices.length, 35);
    assert.ok(fs.existsSync(done.reportPath));
  });
});

const TWO_RUNS_ONE_FOLDER =
  'two runs into one folder: the second is refused clearly (same server or another process); ' +
  'a cancelled run is followed by one that matches the CLI';

test(TWO_RUNS_ONE_FOLDER, async () => {
  const { root, ckptDir } = workspace();
  const checkpoint = path.join(ckptDir, 'model.safetensors');
  await withServer(root, async (c) => {
    const out = path.join(root, 'out');
    // Another process (the CLI) is writing to the folder: the server's run is refused.
    const cli = spawn(
      process.execPath,
      [CLI, 'quantize', checkpoint, '--out', out, ...CLI_SETTINGS.slice(0, -1), '--iters', '30'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let cliErr = '';
    cli.stderr!.on('data', (d) => {
      cliErr += d;
    });
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => {
        if (/\[\d+\/35\]/.test(cliErr)) {
          clearInterval(t);
          resolve();
        }
        if (cli.exitCode !== null) {
          clearInterval(t);
          reject(new Error(cliErr));
        }
      }, 20);
    });
    await assert.rejects(
      c.conn.sendRequest(Methods.quantize, {
        checkpoint,
        out,
        settings: SETTINGS,
        backend: 'cpu',
        workers: 1,
      } satisfies QuantizeParams),
      (e: Error) =>
        e.message === `${out}: another loftq run (pid ${cli.pid}) is writing to this folder; wait for it or cancel it`,
    );
    cli.kill('SIGINT');
    assert.equal(await new Promise((r) => cli.on('exit', r)), 130);

    // Two in the server: the second is refused while the first runs; the first is then
    // cancelled from the progress bar (window/workDoneProgress/cancel).
    const first = c.conn.sendRequest(Methods.quantize, {
      checkpoint,
      out,
      settings: { ...SETTINGS, iters: 30 },
      backend: 'cpu',
      workers: 1,
      workDoneToken: 'first',
    } satisfies QuantizeParams);
    await c.until(
      () => c.progress.find((p) => p.token === 'first' && /^matrix \d+ of 35/.test(p.value.message ?? '')),
      'the first run under way',
    );
    await assert.rejects(
      c.conn.sendRequest(Methods.quantize, { checkpoint, out: out + path.sep, settings: SETTINGS }),
      (e: Error) => e.message === `a LoftQ run is already writing to ${out}; wait for it or cancel it first`,
    );
    await c.conn.sendNotification(WorkDoneProgressCancelNotification.type, { token: 'first' });
    await assert.rejects(
      first,
      (e: { code: number; message: string }) => e.code === -32800 && /no output was written/.test(e.message),
    );
    assert.deepEqual(listTree(out), [], 'a cancelled run leaves nothing');

    // A new run succeeds and writes what the CLI writes, byte for byte.
    const done = (await c.conn.sendRequest(Methods.quantize, {
      checkpoint,
      out,
      settings: SETTINGS,
      backend: 'cpu',
      workers: 1,
    } satisfies QuantizeParams)) as QuantizeResult;
    const cliOut = path.join(root, 'cli-out');
    const r = spawnSync(process.execPath, [CLI, 'quantize', checkpoint, '--out', cliOut, ...CLI_SETTINGS], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    const ref = new Reference(cliOut, checkpoint);
    assert.equal(await judge(out, ref, [done.report.matrices[0].name]), 'complete');
    assert.deepEqual(listTree(out), [...ref.files.keys()].sort());
    await alive(c, checkpoint);
  });
});
