// The cold single-matrix case (issue 28): a user trying one file — `loftq quantize W.safetensors`
// in a fresh process, one matrix of a bench case's shape (the same bytes as that case, float32,
// so the reference's figures apply) — timed from spawn to exit, each run a new process; and the
// first matrix of a run against the warm ones after it (several matrices of that shape, one
// worker), where fresh memory's first-touch costs show.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SafetensorsWriter } from '../server/src/checkpoint';
import type { BenchCase } from './cases';

export interface ColdRun {
  /** Spawn to exit of the whole CLI process. */
  wallSeconds: number;
  /** The matrix job alone (the report's seconds: read, LoftQ, measure, journal write). */
  matrixSeconds: number;
  relError: number;
  phases: Record<string, number>;
  backend: string;
}

export interface ColdStartResult {
  runs: ColdRun[];
  /** Per-matrix seconds of one run over `matrices` matrices of the shape (one worker), in order. */
  sequence: number[];
  backend: string;
}

const cli = () => path.join(__dirname, 'cli.js');

async function writeMatrices(file: string, w: Float32Array, c: BenchCase, count: number): Promise<void> {
  const names = Array.from({ length: count }, (_, i) => `model.layers.${i}.mlp.down_proj.weight`);
  const writer = await SafetensorsWriter.create(
    file,
    names.map((name) => ({ name, dtype: 'F32' as const, shape: [c.rows, c.cols] })),
  );
  const bytes = new Uint8Array(w.buffer, w.byteOffset, w.byteLength);
  for (const n of names) await writer.write(n, bytes);
  await writer.commit();
}

function quantizeOnce(file: string, c: BenchCase, backend: string, extra: string[] = []) {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'loftq-bench-cold-out-'));
  try {
    const args = [cli(), 'quantize', file, '--out', path.join(out, 'q'), '--quiet', '--json'];
    args.push('--bits', String(c.bits), '--rank', String(c.rank), '--iters', String(c.iters));
    args.push('--quantizer', c.quantizer, '--block-size', String(c.blockSize), '--backend', backend, ...extra);
    const t0 = performance.now();
    const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
    const wallSeconds = (performance.now() - t0) / 1000;
    if (r.status !== 0) throw new Error(`loftq quantize failed (exit ${r.status}): ${r.stderr.trim().split('\n')[0]}`);
    const report = JSON.parse(r.stdout);
    return { wallSeconds, report };
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

/** `repeat` cold runs of one matrix, then one run of `matrices` of them on one worker. */
export async function benchColdStart(
  c: BenchCase,
  w: Float32Array,
  backend: string,
  repeat: number,
  matrices = 4,
): Promise<ColdStartResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loftq-bench-cold-'));
  try {
    const one = path.join(dir, 'one.safetensors');
    await writeMatrices(one, w, c, 1);
    const runs: ColdRun[] = [];
    for (let i = 0; i < repeat; i++) {
      const { wallSeconds, report } = quantizeOnce(one, c, backend);
      const m = report.matrices[0];
      runs.push({
        wallSeconds,
        matrixSeconds: m.seconds,
        relError: m.relError,
        phases: m.phases,
        backend: report.backend,
      });
    }
    const many = path.join(dir, 'many.safetensors');
    await writeMatrices(many, w, c, matrices);
    const { report } = quantizeOnce(many, c, backend, ['--workers', '1']);
    // The report lists matrices in checkpoint order; one worker ran them in the same order.
    const sequence = (report.matrices as { seconds: number }[]).map((m) => m.seconds);
    return { runs, sequence, backend: report.backend };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
