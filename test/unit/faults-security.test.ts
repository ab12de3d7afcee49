// Security properties at the entry points (SECURITY.md): tensor names are keys inside
// files, never paths (`../` and `/` in names create nothing outside the output folder);
// plan paths resolve relative to the plan file, not the working directory; and pickle
// checkpoints (.bin, .pt) are refused by every entry point — CLI inspect, quantize and
// analyze; the server's loftq/inspect, loftq/quantize and plan diagnostics.
// (Shard names with `..` in an index are refused: test/unit/checkpoint-sharded.test.ts.)
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint, SafetensorsWriter } from '../../server/src/checkpoint';
import { Methods } from '../../server/src/protocol/lsp_ext';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { repoRoot, tempDir } from '../helpers';
import { LspClient, uriOf } from '../protocol/lspClient';
import { listTree } from './faults-oracle';

const CLI = path.join(repoRoot, 'dist', 'cli.js');
const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const cli = (args: string[], cwd?: string) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd });

const HOSTILE_NAMES = [
  '../../escape.weight',
  'a/b/../../../up.weight',
  '/abs/path.weight',
  '..\\..\\win.weight',
  'model.layers.0.q_proj.weight',
];

const TENSOR_NAMES_AS_KEYS =
  'tensor names with ../ and / are keys inside the output files; ' + 'nothing is created outside the folder';

test(TENSOR_NAMES_AS_KEYS, async () => {
  const root = tempDir('loftq-names-');
  const ckDir = path.join(root, 'ck');
  fs.mkdirSync(ckDir);
  const w = await SafetensorsWriter.create(path.join(ckDir, 'model.safetensors'), [
    ...HOSTILE_NAMES.map((name) => ({ name, dtype: 'F32' as const, shape: [8, 8] })),
    { name: '../norm', dtype: 'F32', shape: [8] },
  ]);
  for (let i = 0; i < HOSTILE_NAMES.length; i++)
    await w.write(HOSTILE_NAMES[i], new Uint8Array(new Float32Array(64).map((_, j) => Math.sin(j * (i + 1))).buffer));
  await w.write('../norm', new Uint8Array(32));
  await w.commit();
  const out = path.join(root, 'a', 'b', 'out');
  for (const format of ['peft', 'packed']) {
    const r = cli([
      'quantize',
      ckDir,
      '--out',
      out,
      '--target',
      '**',
      '--bits',
      '4',
      '--rank',
      '2',
      '--iters',
      '1',
      '--workers',
      '0',
      '--backend',
      'cpu',
      '--format',
      format,
      '--quiet',
    ]);
    assert.equal(r.status, 0, r.stderr);
    const expected = [
      'model.safetensors',
      'loftq_init/adapter_model.safetensors',
      'loftq_init/adapter_config.json',
      'loftq-report.json',
      ...(format === 'packed' ? ['model.packed.safetensors'] : []),
    ];
    assert.deepEqual(listTree(root), ['ck/model.safetensors', ...expected.map((f) => `a/b/out/${f}`)].sort());
    for (const n of HOSTILE_NAMES)
      assert.ok(!fs.existsSync(path.resolve(out, n)) && !fs.existsSync(path.resolve(out, 'loftq_init', n)), n);
    const backbone = await openCheckpoint(path.join(out, 'model.safetensors'));
    assert.deepEqual(backbone.tensors.map((t) => t.name).sort(), [...HOSTILE_NAMES, '../norm'].sort());
    const adapter = await openCheckpoint(path.join(out, 'loftq_init', 'adapter_model.safetensors'));
    assert.ok(adapter.byName.has('base_model.model.../../escape.lora_A.weight'));
    assert.ok(adapter.byName.has('base_model.model./abs/path.lora_B.weight'));
  }
});

test('plan paths are resolved relative to the plan file, whatever the working directory', () => {
  const root = tempDir('loftq-planrel-');
  fs.mkdirSync(path.join(root, 'plans', 'deep'), { recursive: true });
  fs.mkdirSync(path.join(root, 'models'));
  fs.copyFileSync(path.join(STORIES, 'model.safetensors'), path.join(root, 'models', 'model.safetensors'));
  const plan = path.join(root, 'plans', 'deep', 'loftq.json');
  fs.writeFileSync(
    plan,
    JSON.stringify({
      checkpoint: '../../models/model.safetensors',
      defaults: { bits: 2, rank: 2, iters: 1 },
      targets: ['q_proj'],
    }),
  );
  const out = path.join(root, 'out');
  const r = cli(
    ['quantize', '--plan', plan, '--out', out, '--workers', '0', '--backend', 'cpu', '--quiet', '--json'],
    '/',
  );
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.checkpoint, path.join(root, 'models', 'model.safetensors'));
  assert.equal(report.matrices.length, 5);
  // The same relative path from another working directory is looked up next to the plan, so
  // a plan whose checkpoint is missing there fails even if the path exists from the cwd.
  fs.writeFileSync(plan, JSON.stringify({ checkpoint: 'models/model.safetensors' }));
  const miss = cli(['quantize', '--plan', plan, '--out', path.join(root, 'out2'), '--quiet'], root);
  assert.equal(miss.status, 2);
  assert.match(
    miss.stderr,
    new RegExp(
      path.join(root, 'plans', 'deep', 'models', 'model.safetensors').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&') +
        ': does not exist',
    ),
  );
});

test('.bin and .pt checkpoints are refused by every entry point, and never opened', async () => {
  const root = tempDir('loftq-pickle-');
  // Pickle bytes that would run code if unpickled (`os.system` via GLOBAL + REDUCE).
  const payload = Buffer.from('\x80\x02cos\nsystem\nq\x00X\x0b\x00\x00\x00touch PWNEDq\x01\x85q\x02Rq\x03.', 'latin1');
  const bin = path.join(root, 'pytorch_model.bin');
  const pt = path.join(root, 'pt', 'model.pt');
  const binOnly = path.join(root, 'binonly');
  fs.mkdirSync(path.dirname(pt));
  fs.mkdirSync(binOnly);
  fs.writeFileSync(bin, payload);
  fs.writeFileSync(pt, payload);
  fs.writeFileSync(path.join(binOnly, 'pytorch_model.bin'), payload);
  const refused = /is a pickle checkpoint|pickle/;
  for (const target of [bin, pt, binOnly]) {
    for (const args of [
      ['inspect', target],
      ['quantize', target, '--out', path.join(root, 'out')],
      ['analyze', target, '--bits', '2', '--report', path.join(root, 'r.json')],
    ]) {
      const r = cli(args, root);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, refused, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1);
    }
  }
  assert.ok(!fs.existsSync(path.join(root, 'out')) || listTree(path.join(root, 'out')).length === 0);
  assert.ok(!fs.existsSync(path.join(root, 'r.json')));

  const c = await LspClient.start({ root });
  try {
    for (const target of [bin, pt, binOnly]) {
      await assert.rejects(c.conn.sendRequest(Methods.inspect, { checkpoint: target }), refused);
      await assert.rejects(
        c.conn.sendRequest(Methods.quantize, {
          checkpoint: target,
          out: path.join(root, 'srv-out'),
          settings: { bits: 2, rank: 2, iters: 1, quantizer: 'nf', blockSize: 64 },
        }),
        refused,
      );
    }
    const planUri = uriOf(path.join(root, 'loftq.json'));
    let version = 0;
    for (const ck of ['pytorch_model.bin', 'pt/model.pt', 'binonly']) {
      version++;
      const text = JSON.stringify({ checkpoint: ck });
      if (version === 1) await c.open(planUri, text);
      else await c.change(planUri, text, version);
      await c.diagnosticsFor(
        planUri,
        (d) =>
          c.diagnostics.get(planUri)!.version === version &&
          d.some((x) => x.code === 'checkpoint' && x.severity === 1 && refused.test(x.message)),
        `pickle diagnostic for ${ck}`,
      );
    }
  } finally {
    await c.stop();
  }
  assert.ok(!fs.existsSync(path.join(root, 'PWNED')) && !fs.existsSync('PWNED'), 'the payload never ran');
});

const OUT_THROUGH_SYMLINK =
  '--out through a symlink to the checkpoint folder, or holding a link to an input file, ' +
  'is refused and the input is untouched';

test(OUT_THROUGH_SYMLINK, async () => {
  const base = tempDir('loftq-selfout-');
  const sc = path.join(base, 'sc');
  fs.cpSync(path.join(repoRoot, 'examples', 'stories260k'), sc, { recursive: true });
  const before = new Map(fs.readdirSync(sc).map((f) => [f, fs.readFileSync(path.join(sc, f))]));
  fs.symlinkSync(sc, path.join(base, 'sclink'));
  const linked = path.join(base, 'other');
  fs.mkdirSync(linked);
  fs.linkSync(path.join(sc, 'model.safetensors'), path.join(linked, 'model.safetensors'));
  const cliArgs = ['--bits', '2', '--rank', '4', '--iters', '1', '--workers', '0', '--backend', 'cpu', '--quiet'];
  for (const [out, pattern] of [
    [
      path.join(base, 'sclink'),
      /^loftq: the output folder \S+sclink is the checkpoint's own folder \(\S+\/sc\); choose another$/,
    ],
    [
      linked,
      new RegExp(
        '^loftq: \\S+other/model\\.safetensors is the input file \\S+sc/model\\.safetensors; ' +
          'writing there would overwrite the checkpoint',
      ),
    ],
  ] as const) {
    const r = spawnSync(
      process.execPath,
      [path.join(repoRoot, 'dist', 'cli.js'), 'quantize', sc, '--out', out, ...cliArgs],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], pattern);
    // The language server's loftq/quantize runs this same engine call.
    await assert.rejects(
      quantizeCheckpoint(sc, {
        out,
        settings: { bits: 2, rank: 4, iters: 1, quantizer: 'nf', blockSize: 64 },
        workers: 'in-thread',
        backend: 'cpu',
      }),
      (e: Error) => pattern.test(`loftq: ${e.message}`),
    );
  }
  assert.deepEqual(fs.readdirSync(sc).sort(), [...before.keys()].sort());
  for (const [f, b] of before) assert.ok(fs.readFileSync(path.join(sc, f)).equals(b), `${f} changed`);
});
