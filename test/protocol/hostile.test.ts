// The language server against hostile workspaces and a broken transport (issue 14.5, 14.6,
// 14.9, 14.10), over stdio with the real JSON-RPC client: FIFO reports do not block anything,
// a bad Content-Length ends the server (so the client restarts it), pathological and huge
// plans are diagnosed promptly, and runs stay inside the workspace unless the user confirmed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HoverRequest } from 'vscode-languageserver-protocol';
import { Methods } from '../../server/src/protocol/lsp_ext';
import type { InspectResult, QuantizeParams, QuantizeResult } from '../../server/src/protocol/lsp_ext';
import { tempDir } from '../helpers';
import { LspClient, uriOf } from './lspClient';
import { STORIES, withServer, workspace } from './support';

const SETTINGS = { bits: 2, rank: 2, iters: 1, quantizer: 'nf' as const, blockSize: 64 };

async function inspects(c: LspClient, checkpoint: string) {
  const r = (await c.conn.sendRequest(Methods.inspect, { checkpoint })) as InspectResult;
  assert.equal(r.totals.tensors, 47);
}

/** Resolves with the exit code, or rejects after `ms`. */
function exitOf(c: LspClient, ms: number): Promise<number | null> {
  if (c.child.exitCode !== null) return Promise.resolve(c.child.exitCode);
  return new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`server still running after ${ms} ms; stderr: ${c.stderr}`)), ms);
    c.child.once('exit', (code) => {
      clearTimeout(t);
      res(code);
    });
  });
}

test('FIFO loftq-report.json files block neither diagnostics, hovers nor loftq/inspect', async () => {
  const { root, ckptDir } = workspace();
  const plans: string[] = [];
  // Four: libuv has four threads, and four blocked reads used to stall every file operation.
  for (let i = 0; i < 4; i++) {
    const dir = path.join(root, `p${i}`);
    fs.mkdirSync(dir);
    execFileSync('mkfifo', [path.join(dir, 'loftq-report.json')]);
    const plan = path.join(dir, 'loftq.json');
    fs.writeFileSync(
      plan,
      JSON.stringify({ checkpoint: '../ckpt/model.safetensors', overrides: [{ match: '**.q_proj', bits: 3 }] }),
    );
    plans.push(plan);
  }
  await withServer(root, async (c) => {
    for (const plan of plans) {
      const d = await c.diagnosticsFor(
        uriOf(plan),
        (ds) => ds.some((x) => x.code === 'report'),
        `diagnostics of ${plan}`,
      );
      assert.match(
        d.find((x) => x.code === 'report')!.message,
        /loftq-report\.json is a named pipe \(FIFO\), not a file/,
      );
    }
    await inspects(c, path.join(ckptDir, 'model.safetensors'));
    const text = fs.readFileSync(plans[0], 'utf8');
    await c.open(uriOf(plans[0]), text);
    const hover = await c.conn.sendRequest(HoverRequest.type, {
      textDocument: { uri: uriOf(plans[0]) },
      position: { line: 0, character: text.indexOf('q_proj') },
    });
    assert.match(JSON.stringify(hover), /5 matrices/, 'a hover for the pattern');
    const r = c.conn.sendRequest(Methods.readReport, { path: plans[1] });
    await assert.rejects(r, /named pipe/);
  });
});

test('after a bad Content-Length the server exits, and a fresh server answers', async () => {
  const { root, ckptDir } = workspace();
  const checkpoint = path.join(ckptDir, 'model.safetensors');
  for (const header of [
    'Content-Length: abc\r\n\r\n{}',
    'Content-Type: x\r\n\r\n{}',
    'Content-Length: 99999999999\r\n\r\n{}',
    'garbage without a colon\r\n\r\n',
  ]) {
    const c = await LspClient.start({ root });
    await inspects(c, checkpoint);
    c.child.stdin!.write(header);
    assert.equal(await exitOf(c, 10_000), 1, header);
    assert.match(c.stderr, /loftq language server: .*; exiting so that the client starts a fresh server/);
    c.conn.dispose();
  }
  // What the client does next: start a fresh server, which works.
  await withServer(root, async (c) => inspects(c, checkpoint));
});

test('pathological globs and oversized plans are diagnosed promptly; the server answers after them', async () => {
  const { root, ckptDir } = workspace();
  const checkpoint = path.join(ckptDir, 'model.safetensors');
  // A plan on disk over the cap, found by the workspace scan (never opened in the editor).
  const onDisk = path.join(root, 'big', 'loftq.json');
  fs.mkdirSync(path.dirname(onDisk));
  fs.writeFileSync(onDisk, JSON.stringify({ checkpoint: '../ckpt/model.safetensors', pad: 'x'.repeat(2_000_000) }));
  await withServer(root, async (c) => {
    const disk = await c.diagnosticsFor(uriOf(onDisk), (ds) => ds.length === 1, 'diagnostics of the plan on disk');
    assert.equal(
      disk[0].message,
      `the plan is ${fs.statSync(onDisk).size} bytes, over the 1048576-byte (1 MiB) limit for plan files; ` +
        'split it or use globs',
    );
    await assert.rejects(
      c.conn.sendRequest(Methods.plan, { plan: onDisk, budget: { avgBits: 3 } }),
      (e: Error & { code: number }) => e.code === -32602 && e.message === `${onDisk}: ${disk[0].message}`,
    );
    const uri = uriOf(path.join(root, 'loftq.json'));
    const overrides: { match: string; bits: number }[] = [
      { match: '********************X', bits: 2 },
      { match: `${'**.'.repeat(12)}X`, bits: 2 },
      { match: 'model.layers.{0..100000}.mlp.{0..100000}'.repeat(100), bits: 2 },
    ];
    // Fill to just under 1 MiB with more backtracking bait.
    while (JSON.stringify(overrides).length < 1_000_000)
      overrides.push({ match: `${'*'.repeat(40)}{a,b}${'*'.repeat(40)}Y${overrides.length}`, bits: 3 });
    const text = JSON.stringify({ checkpoint: 'ckpt/model.safetensors', overrides });
    assert.ok(text.length < 1024 * 1024);
    const t0 = Date.now();
    await c.open(uri, text);
    const d = await c.diagnosticsFor(
      uri,
      (ds) => ds.some((x) => /more than 200000 alternatives/.test(x.message)),
      'diagnostics of the pathological plan',
    );
    assert.ok(d.length > 0);
    await inspects(c, checkpoint);
    const hover = await c.conn.sendRequest(HoverRequest.type, {
      textDocument: { uri },
      position: { line: 0, character: 40 },
    });
    // Backtracking took minutes here; the bound leaves room for a slow shared machine.
    console.log(`# pathological 1 MB plan: diagnostics, inspect and a hover in ${Date.now() - t0} ms`);
    assert.ok(Date.now() - t0 < 20_000, `took ${Date.now() - t0} ms`);
    void hover;

    const huge = JSON.stringify({
      checkpoint: 'ckpt/model.safetensors',
      overrides: Array.from({ length: 200_000 }, (_, i) => ({ match: `model.layers.${i}.mlp.up_proj`, bits: 4 })),
    });
    assert.ok(huge.length > 8_000_000);
    const t1 = Date.now();
    await c.change(uri, huge, 2);
    const big = await c.diagnosticsFor(
      uri,
      (ds) => c.diagnostics.get(uri)!.version === 2 && ds.length === 1,
      'the size diagnostic',
    );
    assert.match(
      big[0].message,
      new RegExp(`the plan is ${Buffer.byteLength(huge)} bytes, over the 1048576-byte \\(1 MiB\\) limit`),
    );
    assert.equal(
      await c.conn.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 0, character: 5 } }),
      null,
    );
    await inspects(c, checkpoint);
    console.log(`# ${huge.length}-byte plan: size diagnostic, a hover and inspect in ${Date.now() - t1} ms`);
    assert.ok(Date.now() - t1 < 10_000, `took ${Date.now() - t1} ms`);
  });
});

test('loftq/quantize stays inside the workspace folders unless the user confirmed', async () => {
  const { root, ckptDir } = workspace();
  const elsewhere = tempDir('loftq-elsewhere-');
  fs.symlinkSync(elsewhere, path.join(root, 'link-out'));
  const inside = path.join(ckptDir, 'model.safetensors');
  await withServer(root, async (c) => {
    const run = (p: Partial<QuantizeParams>) =>
      c.conn.sendRequest(Methods.quantize, {
        checkpoint: inside,
        out: path.join(root, 'out'),
        settings: SETTINGS,
        backend: 'cpu',
        workers: 1,
        ...p,
      });
    const refused = (what: string) => (e: Error & { code: number; data?: { outsideWorkspace?: string } }) =>
      e.code === -32602 &&
      e.message.startsWith(`${what} is outside the workspace folders`) &&
      e.data?.outsideWorkspace === what;
    await assert.rejects(run({ checkpoint: STORIES }), refused(STORIES));
    await assert.rejects(run({ out: path.join(elsewhere, 'out') }), refused(path.join(elsewhere, 'out')));
    // A symlink inside the workspace that leads out of it is outside.
    await assert.rejects(run({ out: path.join(root, 'link-out', 'out') }), refused(path.join(root, 'link-out', 'out')));
    await assert.rejects(
      run({ plan: path.join(elsewhere, 'loftq.json') }),
      refused(path.join(elsewhere, 'loftq.json')),
    );
    assert.deepEqual(fs.readdirSync(elsewhere), [], 'nothing written outside');
    // Inside, and outside once confirmed, runs go ahead.
    const done = (await run({})) as QuantizeResult;
    assert.equal(done.report.matrices.length, 35);
    const confirmed = (await run({
      out: path.join(elsewhere, 'out'),
      confirmedOutsideWorkspace: true,
    })) as QuantizeResult;
    assert.ok(fs.existsSync(path.join(elsewhere, 'out', 'model.safetensors')));
    assert.equal(confirmed.out, path.join(elsewhere, 'out'));
  });
});
