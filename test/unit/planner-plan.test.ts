import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { planReport } from '../../server/src/plan/planner/plan';
import { DEFAULT_COST } from '../../server/src/plan/planner/cost';
import { syntheticReport } from '../synthetic';
import { layerIndex } from '../../server/src/plan/planner/baselines';
import { parsePlan, compilePlan, settingsFor } from '../../server/src/plan/planfile';
import { openCheckpoint } from '../../server/src/checkpoint';
import { repoRoot, tempDir } from '../helpers';

const cost = { ...DEFAULT_COST };

const PLANNER_VS_BASELINES =
  'generated model with layers of different sensitivity: ' + 'planner ≤ uniform and first-k at 2.25, 2.5, 3.0 bits';

test(PLANNER_VS_BASELINES, () => {
  const report = syntheticReport({ layers: 16 });
  for (const avgBits of [2.25, 2.5, 3.0]) {
    const p = planReport(report, { budget: { avgBits }, bits: [2, 3, 4, 8], ranks: [8, 16, 32, 64], cost });
    const { uniform, firstK } = p.baselines;
    assert.ok(p.plan.avgBits <= avgBits + 1e-12, `${avgBits}: plan ${p.plan.avgBits}`);
    for (const [name, b] of [
      ['uniform', uniform],
      ['firstK', firstK],
    ] as const) {
      assert.ok(Number.isFinite(b.error), `${avgBits}: ${name} fits`);
      assert.ok(b.avgBits <= avgBits + 1e-12);
      assert.ok(p.plan.error <= b.error, `${avgBits}: planner ${p.plan.error} > ${name} ${b.error}`);
    }
    assert.ok(p.optimalityGap >= 0 && p.optimalityGap < 1e-3, `gap ${p.optimalityGap}`);
    assert.ok(p.lowerBound <= p.plan.error);
    // the choices add up to the reported totals
    assert.equal(
      p.choices.reduce((s, c) => s + c.bytes, 0),
      p.plan.bytes,
    );
    assert.ok(Math.abs(p.choices.reduce((s, c) => s + c.predictedError, 0) - p.plan.error) <= 1e-9 * p.plan.error);
    // sensitive layers (first and last) get at least as many bits on average as the middle ones
    const bitsOf = (l: number) => {
      const cs = p.choices.filter((c) => layerIndex(c.name) === l);
      return cs.reduce((s, c) => s + c.bits, 0) / cs.length;
    };
    assert.ok(bitsOf(0) >= bitsOf(8), `${avgBits}: layer 0 ${bitsOf(0)} vs layer 8 ${bitsOf(8)}`);
    console.log(
      `# synthetic 16-layer, ${avgBits} bits: planner/uniform ${(p.plan.error / uniform.error).toFixed(3)} ` +
        `planner/firstK ${(p.plan.error / firstK.error).toFixed(3)} (k=${firstK.k}, uniform ${uniform.bits}-bit) ` +
        `gap ${p.optimalityGap.toExponential(2)}`,
    );
  }
});

test('relative objective and byte budgets; an impossible budget is a usage error naming the cheapest plan', () => {
  const report = syntheticReport({ layers: 4 });
  const abs = planReport(report, { budget: { avgBits: 3 }, cost });
  const bytes = planReport(report, { budget: { bytes: abs.plan.bytes }, cost });
  assert.ok(bytes.plan.error <= abs.plan.error * (1 + 1e-12));
  const rel = planReport(report, { budget: { avgBits: 3 }, objective: 'relative', cost });
  const norms = new Map(report.analyses![0].matrices.map((m) => [m.name, m.frobeniusNorm ** 2]));
  const relOfAbs = abs.choices.reduce((s, c) => s + c.predictedError / norms.get(c.name)!, 0);
  assert.ok(rel.plan.error <= relOfAbs * (1 + 1e-9), 'the relative plan is optimal for the relative objective');
  assert.throws(() => planReport(report, { budget: { avgBits: 1.5 }, cost }), /below the cheapest plan/);
});

test('ranks above the analysed rank and missing spectra are reported, not guessed', () => {
  const report = syntheticReport({ layers: 2, rank: 16 });
  const p = planReport(report, { budget: { avgBits: 4 }, ranks: [8, 16, 64], cost });
  assert.ok(p.warnings.some((w) => /rank 64 is above the analysed rank/.test(w)));
  assert.ok(p.choices.every((c) => c.rank <= 16));
  for (const a of report.analyses!) for (const m of a.matrices) delete m.residualSpectrum;
  const q = planReport(report, { budget: { avgBits: 4 }, ranks: [8, 16], cost });
  assert.ok(q.warnings.some((w) => /lack a residual spectrum/.test(w)));
  assert.ok(q.choices.every((c) => c.rank === 16));
});

test('loftq plan REPORT --json prints the documented shape; --out writes a plan that reproduces the choices', () => {
  const dir = tempDir();
  const reportPath = path.join(dir, 'report.json');
  fs.writeFileSync(reportPath, JSON.stringify(syntheticReport({ layers: 6 })));
  const cli = path.join(repoRoot, 'dist', 'cli.js');
  const out = path.join(dir, 'loftq.json');
  const r = spawnSync(process.execPath, [cli, 'plan', reportPath, '--budget', '2.5', '--json', '--out', out], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(j).sort(), ['baselines', 'budget', 'errorMeasure', 'optimalityGap', 'plan']);
  assert.equal(j.errorMeasure, 'weight', 'an uncalibrated analysis plans in weight error');
  assert.deepEqual(j.budget, { avgBits: 2.5 });
  assert.deepEqual(Object.keys(j.plan).sort(), ['adapterBytes', 'avgBits', 'bytes', 'error']);
  assert.deepEqual(Object.keys(j.baselines.uniform).sort(), ['adapterBytes', 'avgBits', 'bits', 'bytes', 'error']);
  assert.deepEqual(Object.keys(j.baselines.firstK).sort(), ['adapterBytes', 'avgBits', 'bytes', 'error', 'k']);
  assert.ok(j.plan.error <= j.baselines.uniform.error && j.plan.error <= j.baselines.firstK.error);
  // An average-bit budget counts the backbone (codes + scales), so the CLI plans without adapters.
  const direct = planReport(syntheticReport({ layers: 6 }), {
    budget: { avgBits: 2.5 },
    bits: [2, 3, 4, 8],
    ranks: [8, 16, 32, 64],
    cost: { ...cost, countAdapters: false },
  });
  assert.equal(j.plan.bytes, direct.plan.bytes);
  const { plan, problems } = parsePlan(fs.readFileSync(out, 'utf8'));
  assert.deepEqual(problems, []);
  assert.equal(plan.checkpoint, 'synthetic');
  const cp = compilePlan(plan);
  for (const c of direct.choices)
    assert.deepEqual(settingsFor(cp, c.name) && [settingsFor(cp, c.name)!.bits, settingsFor(cp, c.name)!.rank], [
      c.bits,
      c.rank,
    ]);
  // the human form prints the ratios
  const h = spawnSync(process.execPath, [cli, 'plan', reportPath, '--budget', '3.0'], { encoding: 'utf8' });
  assert.equal(h.status, 0, h.stderr);
  assert.match(h.stdout, /planner\/this = 0\.\d{3}/);
  // bad input: one line, exit 2
  for (const args of [
    ['--budget', 'lots'],
    ['--budget', '1'],
    ['--budget', '2.5', '--objective', 'x'],
    ['--bits', '2,x', '--budget', '3'],
  ]) {
    const e = spawnSync(process.execPath, [cli, 'plan', reportPath, ...args], { encoding: 'utf8' });
    assert.equal(e.status, 2, args.join(' '));
    assert.equal(e.stderr.trim().split('\n').length, 1, e.stderr);
  }
  // an existing plan file: its skipped matrices are not planned; defaults follow the analysed rank
  const rank16 = path.join(dir, 'rank16.json');
  fs.writeFileSync(rank16, JSON.stringify(syntheticReport({ layers: 3, rank: 16, bits: [2, 4] })));
  const planFile = path.join(dir, 'skip.json');
  fs.writeFileSync(
    planFile,
    '{ "checkpoint": "m", "overrides": [ { "match": "model.layers.0.mlp.*", "skip": true } ] }',
  );
  const sk = spawnSync(process.execPath, [cli, 'plan', rank16, '--budget', '3', '--out', planFile], {
    encoding: 'utf8',
  });
  assert.equal(sk.status, 0, sk.stderr);
  assert.doesNotMatch(sk.stdout, /warning/);
  assert.match(sk.stdout, /over 18 matrices/);
  const skPlan = parsePlan(fs.readFileSync(planFile, 'utf8')).plan;
  assert.deepEqual(skPlan.overrides![0], { match: 'model.layers.0.mlp.*', skip: true });
  assert.equal(settingsFor(compilePlan(skPlan), 'model.layers.0.mlp.up_proj.weight'), null);
  const nf = spawnSync(process.execPath, [cli, 'plan', path.join(dir, 'nope.json'), '--budget', '3'], {
    encoding: 'utf8',
  });
  assert.equal(nf.status, 2);
  assert.match(nf.stderr, /nope\.json: no such report file/);
  fs.writeFileSync(path.join(dir, 'bad.json'), '{"version":1}');
  const bad = spawnSync(process.execPath, [cli, 'plan', path.join(dir, 'bad.json'), '--budget', '3'], {
    encoding: 'utf8',
  });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /bad\.json: the report has no 'analyses'/);
});

const BUDGET_COUNTS_BACKBONE =
  'a 2.5-bit budget counts the backbone as the LoftQ paper does: ' +
  'feasible on a small F32 model, adapters shown beside (issue 13.8)';

test(BUDGET_COUNTS_BACKBONE, async () => {
  const dir = tempDir();
  const stories = path.join(repoRoot, 'examples', 'stories260k');
  const out = path.join(dir, 'loftq.json');
  const cli = path.join(repoRoot, 'dist', 'cli.js');
  const r = spawnSync(
    process.execPath,
    [
      cli,
      'plan',
      stories,
      '--budget',
      '2.5',
      '--bits',
      '2,3',
      '--ranks',
      '4,8',
      '--iters',
      '1',
      '--workers',
      '2',
      '--json',
      '--quiet',
      '--out',
      out,
      '--report',
      path.join(dir, 'analysis.json'),
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  // First principles (docs/planner.md): codes ⌈n·b/8⌉, dq scales nb + 4·⌈nb/256⌉ + 4, F32 adapters r·(out+in)·4.
  const ck = await openCheckpoint(stories);
  const cp = compilePlan(parsePlan(fs.readFileSync(out, 'utf8')).plan);
  let backbone = 0,
    adapters = 0,
    params = 0;
  for (const t of ck.tensors.filter((x) => /_proj\.weight$/.test(x.name))) {
    const { bits, rank } = settingsFor(cp, t.name)!;
    const n = t.shape[0] * t.shape[1],
      nb = Math.ceil(n / 64);
    backbone += Math.ceil((n * bits) / 8) + nb + 4 * Math.ceil(nb / 256) + 4;
    adapters += rank * (t.shape[0] + t.shape[1]) * 4;
    params += n;
  }
  assert.equal(j.plan.bytes, backbone, 'the budget counted codes and scales');
  assert.ok(Math.abs(j.plan.avgBits - (8 * backbone) / params) < 1e-12);
  assert.ok(j.plan.avgBits <= 2.5);
  assert.equal(j.plan.adapterBytes, adapters);
  // The adapters alone would be ~20 bits per weight here: a budget counting them was infeasible.
  assert.ok((8 * adapters) / params > 2.5);
  // A byte budget counts the adapters too.
  const bytes = backbone + adapters + 4096;
  const b = spawnSync(
    process.execPath,
    [
      cli,
      'plan',
      path.join(dir, 'analysis.json'),
      '--budget',
      `${bytes}B`,
      '--bits',
      '2,3',
      '--ranks',
      '4,8',
      '--json',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(b.status, 0, b.stderr);
  const k = JSON.parse(b.stdout);
  assert.ok(k.plan.bytes <= bytes);
  assert.ok(
    Math.abs(k.plan.bytes - k.plan.adapterBytes - (k.plan.avgBits * params) / 8) < 1e-6,
    'bytes = backbone + adapters',
  );
});
