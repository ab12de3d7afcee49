// `npm run bench [-- --quick] [--cases F] [--json FILE] [--backend auto] [--no-ref]
//  [--fresh-ref] [--ref-timeout S] [--gemm-threads N] [--phases] [--repeat N]
//  [--model tinyllama-1.1b [--model-layers N] [--model-rank R] [--workers N] [--model-calib N,LEN]
//  [--models-dir DIR]] [--no-cold] [--cold-repeat N]`
// Our engine and the numpy reference (PEFT's LoftQ with an exact SVD) on the same LLM-like
// matrices, in the same run: both times, the speed ratio, the error ratio, GEMM throughput;
// on NF's grid and on HQQ's, with HQQ's time over NF's for each pair.
// Not a test: numbers are printed (and saved with --json), never asserted.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from '../server/src/cli/args';
import type { BackendChoice } from '../server/src/protocol/lsp_ext';
import { llmLike, seedFrom } from '../server/src/tools/synth';
import { BenchCase, COLD_CASE, QUICK_SHAPES, SHAPES, allCases, filterCases, sameSettings } from './cases';
import { benchColdStart, ColdStartResult } from './coldStart';
import { gemmPeak, runEngineInterleaved, startBackend } from './engine';
import { benchForward, ForwardBenchResult, parseCalibShape, writeBenchTokens } from './forward';
import { ensureModel, measureCli, runModel, ModelRunOptions, ModelRunResult } from './model';
import { createCollectionBackend } from '../server/src/model/collect';
import { Reference, RefResult, checkPython } from './reference';
import { CaseRow, gridPairLines, gridPairs, headerLine, makeRow, phaseLine, rowLine, summaryLines } from './table';

const root = path.join(__dirname, '..');
const resultsDir = path.join(root, 'bench', 'results');

async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--measure-cli') {
    measureCli(argv.slice(1));
    return -1;
  }
  const { options: o } = parseArgs(argv, {
    quick: { type: 'boolean' },
    cases: { type: 'string' },
    json: { type: 'string' },
    backend: { type: 'string', default: 'auto' },
    'no-ref': { type: 'boolean' },
    'fresh-ref': { type: 'boolean' },
    'ref-timeout': { type: 'number', default: 3600 },
    python: { type: 'string', default: 'python3' },
    seed: { type: 'number', default: 1 },
    model: { type: 'string' },
    'model-layers': { type: 'number' },
    workers: { type: 'number' },
    'keep-output': { type: 'boolean' },
    'no-peak': { type: 'boolean' },
    'ref-only': { type: 'boolean' },
    'ref-threads': { type: 'number' },
    'gemm-threads': { type: 'number', default: os.cpus().length },
    'model-rank': { type: 'number', default: 16 },
    'model-calib': { type: 'string' },
    phases: { type: 'boolean' },
    repeat: { type: 'number', default: 3 },
    'models-dir': { type: 'string' },
    'no-cold': { type: 'boolean' },
    'cold-repeat': { type: 'number', default: 3 },
  });
  const backendChoice = o.backend as BackendChoice;
  const runMatrices = !o.model || o.quick || o.cases;
  const cases = runMatrices
    ? filterCases(allCases(o.quick ? QUICK_SHAPES : SHAPES, o.seed as number), o.cases as string | undefined)
    : [];

  console.log(
    `loftq-lens bench — ${new Date().toISOString().slice(0, 10)}, node ${process.version}, ` +
      `${os.cpus().length} cores (${os.cpus()[0]?.model.trim()}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`,
  );
  const py = o['no-ref'] ? { ok: false as const, why: 'skipped (--no-ref)' } : checkPython(o.python as string);
  const ref = new Reference(
    path.join(root, 'bench', 'ref_loftq.py'),
    resultsDir,
    o.python as string,
    !o['fresh-ref'],
    o['ref-threads'] as number | undefined,
  );
  console.log(
    py.ok
      ? `reference: bench/ref_loftq.py (numpy ${py.numpy}, exact LAPACK SVD); ` +
          'cached results in bench/results/ref-cache are reused' +
          (o['fresh-ref'] ? ' — not this time (--fresh-ref)' : ' (--fresh-ref to re-measure)')
      : `reference: unavailable — ${py.why}; timing our engine only` +
          (o['no-ref'] || o['fresh-ref'] ? '' : ' (cached reference results are still shown)'),
  );

  if (o['ref-only']) {
    if (!py.ok) throw new Error(`--ref-only needs the reference: ${py.why}`);
    await fillReferenceCache(cases, ref, o['ref-timeout'] as number);
    return 0;
  }

  const rows: CaseRow[] = [];
  const refsThisRun = new Map<string, RefResult>();
  let peak: number | undefined;
  if (cases.length) {
    const gemmThreads = Math.max(1, o['gemm-threads'] as number);
    const backend = await startBackend(backendChoice, gemmThreads);
    if (!o['no-peak']) peak = await gemmPeak(backend);
    const repeat = Math.max(1, Math.floor(o.repeat as number));
    const threads =
      backend.name === 'native'
        ? `${gemmThreads} thread${gemmThreads > 1 ? 's' : ''} in the native module`
        : `GEMMs on ${gemmThreads} thread${gemmThreads > 1 ? 's (row blocks)' : ''}`;
    console.log(
      `engine: loftqMatrix on ${backend.name === 'native' ? '' : 'tfjs '}${backend.name}, ${threads}` +
        `${peak ? `; GEMM peak ${peak.toFixed(1)} GFLOP/s on 4096×4096·4096×128` : ''}; ` +
        `ours: median of ${repeat} run${repeat > 1 ? 's' : ''} per case`,
    );
    console.log(headerLine());
    // An HQQ case and its NF twin run interleaved (see runEngineInterleaved), then each is
    // compared with its reference.
    const pending: [BenchCase, Float32Array][] = [];
    const twins = (a: BenchCase, b?: BenchCase) => !!b && a.quantizer !== b.quantizer && sameSettings(a, b);
    for (const [c, w] of withMatrices(cases)) {
      pending.push([c, w]);
      const next = cases[cases.indexOf(c) + 1];
      if (pending.length === 1 && twins(c, next)) continue;
      const group = pending.splice(0);
      const results = await runEngineInterleaved(
        group.map(([g]) => g),
        w,
        backend,
        repeat,
      );
      for (let j = 0; j < group.length; j++) rows.push(await compareWithReference(group[j][0], w, results[j]));
    }
    for (const l of summaryLines(rows)) console.log(l);
    for (const l of gridPairLines(gridPairs(rows))) console.log(l);
    await (backend as { close?: () => Promise<void> }).close?.();
  }

  // The cold single-matrix case: a fresh CLI process per run, against the same case's reference.
  let cold: (ColdStartResult & { case: string; refSeconds?: number; refRelError?: number }) | undefined;
  const coldCase = allCases(SHAPES, o.seed as number).find((c) => c.id === COLD_CASE);
  if (runMatrices && !o['no-cold'] && coldCase && filterCases([coldCase], o.cases as string | undefined).length) {
    const w = benchMatrix(coldCase);
    const r = await benchColdStart(coldCase, w, backendChoice, Math.max(1, o['cold-repeat'] as number));
    // The matrix case's reference when this run measured it (one exact-SVD run, not two).
    let refResult: RefResult | undefined = o['no-ref']
      ? undefined
      : (refsThisRun.get(coldCase.id) ?? ref.cached(coldCase, w));
    if (!refResult && py.ok) refResult = await ref.run(coldCase, w, o['ref-timeout'] as number);
    cold = { ...r, case: coldCase.id, refSeconds: refResult?.seconds, refRelError: refResult?.rel_err.at(-1) };
    for (const l of coldLines(cold, refResult)) console.log(l);
  }

  /** A case's reference figures (cached, or measured now) and its printed row. */
  async function compareWithReference(
    c: BenchCase,
    w: Float32Array,
    ours: Awaited<ReturnType<typeof runEngineInterleaved>>[number],
  ): Promise<CaseRow> {
    let r: RefResult | undefined;
    let missing: string | undefined;
    if (!o['no-ref']) {
      r = ref.cached(c, w);
      if (!r && py.ok) {
        try {
          r = await ref.run(c, w, o['ref-timeout'] as number);
        } catch (e) {
          missing = (e as Error).message.slice(0, 40);
        }
      }
      if (!r && !missing) missing = 'no python';
    }
    if (r) refsThisRun.set(c.id, r);
    const row = makeRow(c, ours, r, missing);
    console.log(rowLine(row));
    if (o.phases) {
      const runs = ours.samples.length > 1 ? `; runs ${ours.samples.map((x) => x.toFixed(2)).join(', ')} s` : '';
      console.log(`  ${phaseLine(ours.phases)}${runs}`);
    }
    return row;
  }

  let model: ModelRunResult | undefined;
  let forward: ForwardBenchResult | undefined;
  let calibrated: ModelRunResult | undefined;
  if (o.model) {
    const mo: ModelRunOptions = {
      preset: o.model as string,
      layers: o['model-layers'] as number | undefined,
      seed: 0,
      bits: 2,
      rank: o['model-rank'] as number,
      iters: 5,
      backend: backendChoice,
      workers: o.workers as number | undefined,
      resultsDir,
      modelsDir: o['models-dir'] as string | undefined,
      keepOutput: !!o['keep-output'],
    };
    const calib = o['model-calib'] ? parseCalibShape(o['model-calib'] as string) : undefined;
    // The whole-checkpoint runs, each in its own process.
    model = runModel(mo);
    printModel(model, backendChoice, peak, 'plain');
    if (calib) {
      const tokens = await writeBenchTokens(ensureModel(mo).dir, calib.sequences, calib.length);
      calibrated = runModel({ ...mo, extraArgs: ['--calib', tokens] });
      printModel(calibrated, backendChoice, peak, `calibrated (--calib ${calib.sequences}×${calib.length} tokens)`);
      const ratio = calibrated.wallSeconds / model.wallSeconds;
      console.log(
        `  calibrated / plain wall: ${ratio.toFixed(2)}× (goal ≤ 1.50×: the calibration adds ≤ 50 %) ` +
          `— ${ratio <= 1.5 ? 'met' : 'NOT met'} in this run; ` +
          `CPU seconds ${(calibrated.cpuSeconds / model.cpuSeconds).toFixed(2)}×`,
      );
      // The calibration pass alone, in this process, on the backend a calibrated quantize uses —
      // after the runs above: a child inherits its parent's peak RSS at fork (Linux keeps
      // ru_maxrss across exec).
      const dir = ensureModel(mo).dir;
      const backend = await createCollectionBackend(backendChoice);
      try {
        forward = await benchForward(dir, calib.sequences, calib.length, backend, (layer, layers) =>
          process.stderr.write(`  calibration pass: layer ${layer}/${layers}\n`),
        );
      } finally {
        await backend.close();
      }
      const f = forward;
      const held = (f.peakBytes / 2 ** 20).toFixed(0);
      const threads = 'threads' in backend ? ` × ${backend.threads} threads` : '';
      const rate =
        `${f.seconds.toFixed(1)} s (CPU ${f.cpuSeconds.toFixed(1)} s) = ` +
        `${f.tokensPerSecond.toFixed(1)} tokens/s on ${backend.name}${threads}`;
      console.log(
        `calibration pass (forward + XᵀX per linear input): ${mo.preset}, ` +
          `${f.sequences}×${f.length} = ${f.tokens} tokens, ${rate}; ` +
          `GEMM ${(f.gemmGflop / f.seconds).toFixed(1)} GFLOP/s; ` +
          `held ${held} MiB (one layer + activations), peak RSS ${f.peakRssMB.toFixed(0)} MB; ` +
          `${f.fullStats} full G, ${f.diagStats} diagonal`,
      );
    }
  }

  if (o.json) {
    const doc = {
      date: new Date().toISOString(),
      node: process.version,
      cores: os.cpus().length,
      cpu: os.cpus()[0]?.model,
      backend: backendChoice,
      gemmPeakGflops: peak,
      reference: py,
      cases: rows,
      hqqAgainstNf: gridPairs(rows).map((p) => ({
        case: p.label,
        hqqSeconds: p.hqq.ours.seconds,
        nfSeconds: p.nf.ours.seconds,
        timeRatio: p.timeRatio,
        errorRatio: p.errorRatio,
      })),
      model,
      forward,
      calibrated,
      cold,
    };
    fs.mkdirSync(path.dirname(path.resolve(o.json as string)), { recursive: true });
    fs.writeFileSync(o.json as string, JSON.stringify(doc, null, 1));
    console.log(`saved ${o.json}`);
  }
  return 0;
}

function printModel(m: ModelRunResult, backendChoice: string, peak: number | undefined, label: string): void {
  const gb = m.checkpointBytes >= 1e9;
  const size = gb ? `${(m.checkpointBytes / 1e9).toFixed(2)} GB` : `${(m.checkpointBytes / 1e6).toFixed(1)} MB`;
  const layers = m.layers ? ` (${m.layers} layers)` : '';
  console.log(
    `whole checkpoint, ${label}: ${m.preset}${layers}, ${size} BF16, NF2 r${m.rank} T5, ` +
      `backend ${m.backend ?? backendChoice}${m.backend && m.backend !== backendChoice ? ` (${backendChoice})` : ''}` +
      (m.generatedSeconds ? ` (generated in ${m.generatedSeconds.toFixed(0)} s)` : ''),
  );
  if (m.exitCode !== 0) console.log(`  loftq quantize failed (exit ${m.exitCode}): ${m.stderrTail}`);
  const peakNote = peak ? ` (one backend's peak: ${peak.toFixed(1)})` : '';
  console.log(
    `  wall ${m.wallSeconds.toFixed(1)} s, CPU ${m.cpuSeconds.toFixed(1)} s, peak RSS ${m.maxRssMB.toFixed(0)} MB` +
      (m.matrices ? `, ${m.matrices} matrices, ${((m.parameters ?? 0) / 1e6).toFixed(0)}M parameters quantized` : '') +
      (m.gemmFlops ? `, GEMM ${(m.gemmFlops / m.wallSeconds / 1e9).toFixed(1)} GFLOP/s over the wall${peakNote}` : '') +
      (m.calibrationTokens ? `; calibrated on ${m.calibrationTokens} tokens` : ''),
  );
  if (m.phases)
    console.log(
      `  phases (summed over workers): ${Object.entries(m.phases)
        .map(([k, v]) => `${k} ${v.toFixed(1)} s`)
        .join(', ')}`,
    );
  for (const s of m.shapes ?? [])
    console.log(
      `  ${s.shape}: ${s.count} matrices, the first started ${s.first.toFixed(2)} s, ` +
        `warm median ${s.warm.toFixed(2)} s (${(s.first / s.warm).toFixed(2)}×)`,
    );
}

/** The cold case's lines: wall and matrix seconds, speed and error against the reference, and
 *  the first matrix of a run against the warm ones. */
function coldLines(c: ColdStartResult & { case: string }, r?: RefResult): string[] {
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor((a.length - 1) / 2)];
  const wall = median(c.runs.map((x) => x.wallSeconds));
  const job = median(c.runs.map((x) => x.matrixSeconds));
  const err = c.runs[0].relError;
  const warm = median(c.sequence.slice(1));
  const lines = [
    `cold CLI, one matrix (${c.case}, F32, \`loftq quantize\` in a fresh process, backend ${c.backend}): ` +
      `wall median ${wall.toFixed(2)} s (runs ${c.runs.map((x) => x.wallSeconds.toFixed(2)).join(', ')}), ` +
      `matrix job ${job.toFixed(2)} s, err ${err.toFixed(5)}`,
  ];
  if (r) {
    const speed = r.seconds / wall;
    const ratio = err / r.rel_err[r.rel_err.length - 1];
    const from = r.source === 'run' ? 'this run' : `cache ${r.measuredAt.slice(0, 10)}`;
    lines.push(
      `  reference ${r.seconds.toFixed(1)} s (${from}): ` +
        `speed ${speed.toFixed(1)}× over the whole cold process (goal ≥ 30×: ${speed >= 30 ? 'met' : 'NOT met'}), ` +
        `err ratio ${ratio.toFixed(4)}`,
    );
  }
  const first = c.sequence[0];
  lines.push(
    `  first matrix of a run (${c.sequence.length} matrices, one worker): ${first.toFixed(2)} s against warm median ` +
      `${warm.toFixed(2)} s = ${(first / warm).toFixed(2)}× (goal ≤ 1.3×: ${first / warm <= 1.3 ? 'met' : 'NOT met'})`,
  );
  return lines;
}

/** Each case with its matrix, generated once per run of cases that share a shape. */
function* withMatrices(cases: BenchCase[]): Generator<[BenchCase, Float32Array]> {
  let shape = '';
  let w: Float32Array = new Float32Array(0);
  for (const c of cases) {
    if (shape !== `${c.rows}x${c.cols}`) {
      shape = `${c.rows}x${c.cols}`;
      w = benchMatrix(c);
    }
    yield [c, w];
  }
}

/** --ref-only: measures (or shows cached) reference results, e.g. overnight for the big shapes. */
async function fillReferenceCache(cases: BenchCase[], ref: Reference, timeout: number): Promise<void> {
  for (const [c, w] of withMatrices(cases)) {
    const r = ref.cached(c, w) ?? (await ref.run(c, w, timeout));
    console.log(
      `${c.id.padEnd(26)} ref ${r.seconds.toFixed(1)} s (svd ${r.svd_seconds.toFixed(1)} s)  ` +
        `rel_err ${r.rel_err[r.rel_err.length - 1].toFixed(5)}  ${r.source}`,
    );
  }
}

/** The one synthetic matrix of a case's shape and seed. */
function benchMatrix(c: BenchCase): Float32Array {
  return llmLike(c.rows, c.cols, seedFrom('bench', c.rows, c.cols, c.seed));
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`bench: ${(e as Error).message?.split('\n')[0] ?? e}\n`);
    process.exitCode = 1;
  },
);
