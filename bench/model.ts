// Whole-checkpoint timing: generates a preset checkpoint once (cached under
// bench/results/models), then runs `loftq quantize` on it in a fresh process — so that the
// peak RSS is that of the quantize run alone — and reports wall seconds and peak RSS.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GENERATOR_VERSION } from '../server/src/tools/make-model-lib';

export interface ModelRunOptions {
  preset: string;
  layers?: number;
  seed: number;
  bits: number;
  rank: number;
  iters: number;
  backend: string;
  workers?: number;
  resultsDir: string;
  /** Where generated checkpoints are kept (default resultsDir/models; a 7B one is 13.5 GB). */
  modelsDir?: string;
  keepOutput: boolean;
  /** More quantize options (e.g. `--calib FILE`). */
  extraArgs?: string[];
}

export interface ModelRunResult {
  preset: string;
  rank: number;
  layers?: number;
  checkpoint: string;
  checkpointBytes: number;
  generatedSeconds?: number;
  wallSeconds: number;
  /** CPU seconds of the run's process, every thread (user + system): on a shared machine a
   *  steadier measure of the work than the wall. */
  cpuSeconds: number;
  maxRssMB: number;
  exitCode: number;
  matrices?: number;
  parameters?: number;
  reportSeconds?: number;
  /** GEMM flops of the whole run, from the report's totals.gemmGflop. */
  gemmFlops?: number;
  /** The report's calibration block (tokens the statistics came from), when the run was calibrated. */
  calibrationTokens?: number;
  /** The backend that ran (the report's). */
  backend?: string;
  /** The report's time by phase, summed over workers (assemble: wall). */
  phases?: Record<string, number>;
  /** Per shape: the first matrix's seconds (fresh memory) and the later ones' median. */
  shapes?: { shape: string; count: number; first: number; warm: number }[];

  stderrTail: string;
}

const dist = (f: string) => path.join(__dirname, f);

function folderBytes(dir: string): number {
  return fs.readdirSync(dir).reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0);
}

export function ensureModel(o: ModelRunOptions): { dir: string; seconds?: number } {
  const name = `${o.preset}-s${o.seed}${o.layers ? `-l${o.layers}` : ''}-g${GENERATOR_VERSION}`;
  const dir = path.join(o.modelsDir ?? path.join(o.resultsDir, 'models'), name);
  if (fs.existsSync(path.join(dir, 'model.safetensors.index.json'))) return { dir };
  const args = [dist('make-model.js'), '--preset', o.preset, '--out', dir, '--seed', String(o.seed)];
  if (o.layers) args.push('--layers', String(o.layers));
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`make-model failed for ${o.preset} (exit ${r.status})`);
  return { dir, seconds: (performance.now() - t0) / 1000 };
}

/** The CLI's one-line error (`loftq: …`), else the last line of stderr. */
function errorLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  return lines.find((l) => l.startsWith('loftq:')) ?? lines[lines.length - 1] ?? '';
}

export function runModel(o: ModelRunOptions): ModelRunResult {
  const model = ensureModel(o);
  // The output beside the checkpoint when it is kept elsewhere (a 7B output is 13.5 GB too).
  const out = fs.mkdtempSync(path.join(o.modelsDir ?? os.tmpdir(), 'loftq-bench-model-'));
  const stats = path.join(out, '..', `${path.basename(out)}.stats.json`);
  const args = [
    dist('bench.js'),
    '--measure-cli',
    'quantize',
    model.dir,
    '--out',
    path.join(out, 'q'),
    '--bits',
    String(o.bits),
    '--rank',
    String(o.rank),
    '--iters',
    String(o.iters),
    '--backend',
    o.backend,
  ];
  if (o.workers) args.push('--workers', String(o.workers));
  if (o.extraArgs) args.push(...o.extraArgs);
  try {
    const r = spawnSync(process.execPath, args, {
      env: { ...process.env, LOFTQ_BENCH_STATS: stats },
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
    const s = fs.existsSync(stats)
      ? JSON.parse(fs.readFileSync(stats, 'utf8'))
      : { wallSeconds: NaN, cpuSeconds: NaN, maxRssKB: NaN };
    const res: ModelRunResult = {
      preset: o.preset,
      rank: o.rank,
      layers: o.layers,
      checkpoint: model.dir,
      checkpointBytes: folderBytes(model.dir),
      generatedSeconds: model.seconds,
      wallSeconds: s.wallSeconds,
      cpuSeconds: s.cpuSeconds,
      maxRssMB: s.maxRssKB / 1024,
      exitCode: r.status ?? -1,
      stderrTail: errorLine(r.stderr ?? ''),
    };
    const reportFile = path.join(out, 'q', 'loftq-report.json');
    if (fs.existsSync(reportFile)) {
      const rep = JSON.parse(fs.readFileSync(reportFile, 'utf8'));
      res.matrices = rep.totals?.matrices;
      res.parameters = rep.totals?.parameters;
      res.reportSeconds = rep.totals?.seconds;
      res.gemmFlops = rep.totals?.gemmGflop !== undefined ? rep.totals.gemmGflop * 1e9 : undefined;
      res.calibrationTokens = rep.calibration?.tokens;
      res.backend = rep.backend;
      res.phases = rep.totals?.phases;
      res.shapes = coldAndWarm(rep.matrices ?? []);
    }
    return res;
  } finally {
    fs.rmSync(stats, { force: true });
    if (!o.keepOutput) fs.rmSync(out, { recursive: true, force: true });
  }
}

/** Per shape, in the order the run started its matrices (largest first, then by name: run.ts),
 *  the first matrix's seconds — its worker's fresh memory — against the median of the rest. */
function coldAndWarm(matrices: { name: string; shape: number[]; seconds: number; skipped?: string }[]) {
  const byShape = new Map<string, { name: string; seconds: number }[]>();
  for (const m of matrices.filter((x) => !x.skipped)) {
    const k = m.shape.join('×');
    byShape.set(k, [...(byShape.get(k) ?? []), m]);
  }
  return [...byShape].map(([shape, ms]) => {
    const ordered = [...ms].sort((a, b) => (a.name < b.name ? -1 : 1)).map((m) => m.seconds);
    const rest = ordered.slice(1).sort((a, b) => a - b);
    return { shape, count: ms.length, first: ordered[0], warm: rest[Math.floor((rest.length - 1) / 2)] ?? ordered[0] };
  });
}

/** User + system CPU seconds of this process so far (all its threads). */
export function cpuSecondsNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/**
 * `bench.js --measure-cli ARGS…` runs dist/cli.js with ARGS in this process and, on exit,
 * writes wall seconds and peak RSS to $LOFTQ_BENCH_STATS.
 */
export function measureCli(args: string[]): void {
  const t0 = performance.now();
  const stats = process.env.LOFTQ_BENCH_STATS;
  process.on('exit', () => {
    if (stats)
      fs.writeFileSync(
        stats,
        JSON.stringify({
          wallSeconds: (performance.now() - t0) / 1000,
          cpuSeconds: cpuSecondsNow(),
          maxRssKB: process.resourceUsage().maxRSS,
        }),
      );
  });
  const cli = dist('cli.js');
  process.argv = [process.argv[0], cli, ...args];
  // A run-time path: the CLI is its own bundle, loaded as the user would run it.
  require(cli);
}
