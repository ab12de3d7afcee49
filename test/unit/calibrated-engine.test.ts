import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { quantizeCheckpoint } from '../../server/src/engine/run';
import { InputError, UsageError } from '../../server/src/base/errors';
import { JOURNAL_DIR } from '../../server/src/base/journal';
import { gaussian } from '../../server/src/linalg/dense';
import type { InputStat, InputStats } from '../../server/src/model/stats';
import type { PreparedCalibration } from '../../server/src/engine/api';
import type { Report } from '../../server/src/protocol/lsp_ext';
import { repoRoot, tempDir } from '../helpers';
import { outputErrorOnDisk } from '../outputErrorOnDisk';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');
const settings = { bits: 2, rank: 4, iters: 3, quantizer: 'nf' as const, blockSize: 64 };
const RIDGE = 0.01;

/** G = XᵀX/N of anisotropic synthetic inputs (correlated features, scales over two decades). */
function syntheticStat(dim: number, tokens: number, seed: number, kind: 'full' | 'diag'): InputStat {
  const z = gaussian(tokens * dim, seed),
    c = gaussian(dim * dim, seed + 1);
  const x = new Float64Array(tokens * dim);
  for (let t = 0; t < tokens; t++)
    for (let j = 0; j < dim; j++) {
      let v = 0;
      for (let p = 0; p < dim; p++) v += z[t * dim + p] * c[p * dim + j];
      x[t * dim + j] = (v * 10 ** (-1 + (2 * j) / dim)) / Math.sqrt(dim);
    }
  const g = new Float64Array(dim * dim);
  for (let t = 0; t < tokens; t++)
    for (let i = 0; i < dim; i++)
      for (let j = 0; j < dim; j++) g[i * dim + j] += (x[t * dim + i] * x[t * dim + j]) / tokens;
  return kind === 'full'
    ? { kind, dim, count: tokens, g }
    : { kind, dim, count: tokens, d: Float64Array.from({ length: dim }, (_, i) => g[i * dim + i]) };
}

/** Statistics shaped as the forward pass makes them: q/k/v share one, gate/up share one. */
function stories260kStats(): InputStats {
  const stats: InputStats = new Map();
  for (let l = 0; l < 5; l++) {
    const p = `model.layers.${l}`;
    const attn = syntheticStat(64, 200, 100 + l, 'full');
    for (const m of ['q_proj', 'k_proj', 'v_proj']) stats.set(`${p}.self_attn.${m}.weight`, attn);
    stats.set(`${p}.self_attn.o_proj.weight`, syntheticStat(64, 200, 200 + l, 'full'));
    const mlp = syntheticStat(64, 200, 300 + l, 'full');
    for (const m of ['gate_proj', 'up_proj']) stats.set(`${p}.mlp.${m}.weight`, mlp);
    // down_proj: diagonal, as the forward pass keeps for inputs wider than its line.
    stats.set(`${p}.mlp.down_proj.weight`, syntheticStat(172, 300, 400 + l, 'diag'));
  }
  return stats;
}

const prepared = (stats: InputStats, ridge = RIDGE): PreparedCalibration => ({
  stats,
  info: { source: 'tokens', file: 'synthetic.json', sequences: 2, tokens: 200, fullStatMaxDim: 64, ridge },
});

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const f of fs.readdirSync(d)) {
      const p = path.join(d, f);
      if (fs.statSync(p).isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

const REPORT_MATCHES_FILES =
  'calibrated quantize: report output errors equal the files on disk; output beats QLoRA; ' +
  'bytes independent of the worker count';
test(REPORT_MATCHES_FILES, async () => {
  const stats = stories260kStats();
  const outs: string[] = [];
  let report: Report | undefined;
  for (const workers of [0, 1, 2]) {
    const out = path.join(tempDir(), 'out');
    // wasm: the disk check below is float32 products; native's bf16 measure differs by more than 1e-4.
    const res = await quantizeCheckpoint(STORIES, {
      out,
      settings,
      workers,
      backend: 'wasm',
      calibration: prepared(stats),
    });
    outs.push(out);
    report ??= res.report;
  }
  assert.deepEqual(report!.calibration, prepared(stats).info);
  assert.equal(report!.matrices.length, 35);
  for (const m of report!.matrices) {
    assert.ok(
      m.outputRelError !== undefined && m.qloraOutputRelError !== undefined && m.bestIter !== undefined,
      m.name,
    );
    assert.ok(
      m.outputRelError < m.qloraOutputRelError,
      `${m.name}: ${m.outputRelError} ≥ QLoRA ${m.qloraOutputRelError}`,
    );
    assert.ok(m.bestIter >= 1 && m.bestIter <= settings.iters);
  }
  for (const name of [
    'model.layers.0.self_attn.k_proj.weight',
    'model.layers.3.mlp.up_proj.weight',
    'model.layers.4.mlp.down_proj.weight',
  ]) {
    const m = report!.matrices.find((x) => x.name === name)!;
    const files = await outputErrorOnDisk(
      path.join(STORIES, 'model.safetensors'),
      outs[0],
      name,
      stats.get(name)!,
      RIDGE,
    );
    const disk = Math.sqrt(files.error / files.norm);
    assert.ok(Math.abs(disk - m.outputRelError!) <= 1e-4 * disk, `${name}: disk ${disk}, report ${m.outputRelError}`);
  }
  // adapter_config.json names its own folder (base_model_name_or_path): compared without it.
  const config = (out: string) =>
    fs.readFileSync(path.join(out, 'loftq_init/adapter_config.json'), 'utf8').replace(JSON.stringify(out), '"OUT"');
  const files = listFiles(outs[0]).filter((f) => f !== 'loftq-report.json' && !f.endsWith('adapter_config.json'));
  for (const other of outs.slice(1)) {
    assert.deepEqual(
      listFiles(other).filter((f) => f !== 'loftq-report.json' && !f.endsWith('adapter_config.json')),
      files,
    );
    for (const f of files)
      assert.ok(
        fs.readFileSync(path.join(outs[0], f)).equals(fs.readFileSync(path.join(other, f))),
        `${f} differs with another worker count`,
      );
    assert.equal(config(other), config(outs[0]));
  }
  // Calibration changes the files: the plain run writes other adapters.
  const plain = path.join(tempDir(), 'plain');
  await quantizeCheckpoint(STORIES, { out: plain, settings, workers: 'in-thread' });
  const adapters = 'loftq_init/adapter_model.safetensors';
  assert.ok(!fs.readFileSync(path.join(plain, adapters)).equals(fs.readFileSync(path.join(outs[0], adapters))));
  assert.equal(config(plain), config(outs[0]), 'adapter_config.json is unchanged in form');
});

test('calibrated quantize resumes from its journal only when the calibration is the same', async () => {
  const stats = stories260kStats();
  const out = path.join(tempDir(), 'out');
  // A shard run keeps its journal entries (as an interrupted run does).
  await quantizeCheckpoint(STORIES, {
    out,
    settings,
    workers: 'in-thread',
    calibration: prepared(stats),
    shard: { index: 0, count: 1 },
  });
  const entries = fs.readdirSync(path.join(out, JOURNAL_DIR)).filter((f) => f.endsWith('.safetensors'));
  assert.equal(entries.length, 35);
  let computed = 0;
  await quantizeCheckpoint(STORIES, {
    out,
    settings,
    workers: 'in-thread',
    calibration: prepared(stats),
    onMatrix: () => computed++,
  });
  assert.equal(computed, 0, 'same calibration: every matrix comes from the journal');
  const ref = path.join(tempDir(), 'ref');
  await quantizeCheckpoint(STORIES, { out: ref, settings, workers: 'in-thread', calibration: prepared(stats) });
  for (const f of listFiles(ref).filter((x) => x !== 'loftq-report.json' && !x.endsWith('adapter_config.json')))
    assert.ok(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(ref, f))), f);

  const again = path.join(tempDir(), 'again');
  await quantizeCheckpoint(STORIES, {
    out: again,
    settings,
    workers: 'in-thread',
    calibration: prepared(stats),
    shard: { index: 0, count: 1 },
  });
  await quantizeCheckpoint(STORIES, {
    out: again,
    settings,
    workers: 'in-thread',
    calibration: prepared(stats, 0.1),
    onMatrix: () => computed++,
  });
  assert.equal(computed, 35, 'another ridge: every matrix is recomputed');
  const plainResume = path.join(tempDir(), 'plain');
  await quantizeCheckpoint(STORIES, {
    out: plainResume,
    settings,
    workers: 'in-thread',
    calibration: prepared(stats),
    shard: { index: 0, count: 1 },
  });
  computed = 0;
  const res = await quantizeCheckpoint(STORIES, {
    out: plainResume,
    settings,
    workers: 'in-thread',
    onMatrix: () => computed++,
  });
  assert.equal(computed, 35, 'no calibration: calibrated entries are not reused');
  assert.equal(res.report.calibration, undefined);
  assert.ok(res.report.matrices.every((m) => m.outputRelError === undefined));
});

test('calibrated quantize refuses statistics of the wrong width and unusable ones, writing nothing', async () => {
  const stats = stories260kStats();
  stats.set('model.layers.2.mlp.down_proj.weight', syntheticStat(64, 100, 7, 'diag'));
  const out = path.join(tempDir(), 'out');
  await assert.rejects(
    quantizeCheckpoint(STORIES, { out, settings, workers: 'in-thread', calibration: prepared(stats) }),
    (e: Error) => {
      assert.ok(e instanceof InputError);
      assert.match(
        e.message,
        /^synthetic\.json: .*model\.layers\.2\.mlp\.down_proj\.weight are 64 wide, but the matrix has 172 inputs/,
      );
      return true;
    },
  );
  assert.ok(!fs.existsSync(path.join(out, 'loftq-report.json')) && !fs.existsSync(path.join(out, 'model.safetensors')));
  const bad = stories260kStats();
  const g = syntheticStat(64, 100, 9, 'full');
  // One negative variance (the mean stays positive): not a second moment.
  if (g.kind === 'full')
    g.g[5 * 64 + 5] = (-0.5 * Array.from({ length: 64 }, (_, i) => g.g[i * 65]).reduce((x, y) => x + y)) / 64;
  bad.set('model.layers.1.self_attn.o_proj.weight', g);
  const out2 = path.join(tempDir(), 'out2');
  await assert.rejects(
    quantizeCheckpoint(STORIES, { out: out2, settings, workers: 1, calibration: prepared(bad) }),
    /^InputError: synthetic\.json: statistics unusable: diagonal entry 5 of its second moment is -/,
  );
  assert.ok(!fs.existsSync(path.join(out2, 'loftq-report.json')));
  await assert.rejects(
    quantizeCheckpoint(STORIES, {
      out: out2,
      settings,
      workers: 'in-thread',
      calibration: { file: 'x.json', imatrix: 'y.dat' },
    }),
    UsageError,
  );
});
