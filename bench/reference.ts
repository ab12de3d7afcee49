// Runs the numpy reference (bench/ref_loftq.py: PEFT's LoftQ with an exact LAPACK SVD) as a
// subprocess, and caches its results in bench/results/ref-cache keyed by the matrix bytes,
// the settings and the script itself: the exact SVD of a 4096×11008 matrix takes minutes
// on 2 cores, and the answer cannot change while those three stay the same.

import { spawnSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BenchCase } from './cases';

export interface RefResult {
  seconds: number;
  svd_seconds: number;
  quant_seconds: number;
  rel_err: number[];
  qlora_rel_err: number;
  numpy: string;
  blasThreads: number | 'default';
  /** Where the figures came from: this run, or the cache (with the date it was measured). */
  source: 'run' | 'cache';
  measuredAt: string;
}

export type RefAvailability = { ok: true; python: string; numpy: string } | { ok: false; why: string };

export function checkPython(python = 'python3'): RefAvailability {
  const r = spawnSync(python, ['-c', 'import sys, numpy; print(sys.version.split()[0], numpy.__version__)'], {
    encoding: 'utf8',
  });
  if (r.error) return { ok: false, why: `${python} not found (${(r.error as NodeJS.ErrnoException).code})` };
  if (r.status !== 0) return { ok: false, why: `${python} has no numpy (${r.stderr.trim().split('\n').pop()})` };
  const [py, np] = r.stdout.trim().split(' ');
  return { ok: true, python: py, numpy: np };
}

export class Reference {
  readonly cacheDir: string;
  private readonly scriptHash: string;

  /** threads: BLAS threads for the script (default: numpy's own choice, all cores). */
  constructor(
    readonly script: string,
    resultsDir: string,
    readonly python = 'python3',
    readonly useCache = true,
    readonly threads?: number,
  ) {
    this.cacheDir = path.join(resultsDir, 'ref-cache');
    this.scriptHash = createHash('sha256')
      .update(new Uint8Array(fs.readFileSync(script)))
      .digest('hex');
  }

  key(c: BenchCase, matrix: Float32Array): string {
    const h = createHash('sha256');
    h.update(new Uint8Array(matrix.buffer, matrix.byteOffset, matrix.byteLength));
    h.update(JSON.stringify([c.rows, c.cols, c.bits, c.rank, c.iters, c.quantizer, c.blockSize, this.scriptHash]));
    return `${c.id}-s${c.seed}-${h.digest('hex').slice(0, 16)}`;
  }

  cached(c: BenchCase, matrix: Float32Array): RefResult | undefined {
    if (!this.useCache) return undefined;
    const f = path.join(this.cacheDir, `${this.key(c, matrix)}.json`);
    if (!fs.existsSync(f)) return undefined;
    return { ...JSON.parse(fs.readFileSync(f, 'utf8')), source: 'cache' };
  }

  /** Runs the script on the matrix (written to a temp raw float32 file) and caches the result. */
  async run(c: BenchCase, matrix: Float32Array, timeoutSeconds: number): Promise<RefResult> {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'loftq-bench-'));
    const input = path.join(tmp, 'w.f32');
    try {
      fs.writeFileSync(input, new Uint8Array(matrix.buffer, matrix.byteOffset, matrix.byteLength));
      const args = [
        this.script,
        '--input',
        input,
        '--shape',
        `${c.rows},${c.cols}`,
        '--bits',
        String(c.bits),
        '--rank',
        String(c.rank),
        '--iters',
        String(c.iters),
        '--method',
        c.quantizer,
        '--block-size',
        String(c.blockSize),
      ];
      const env = { ...process.env };
      if (this.threads)
        for (const v of ['OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS']) env[v] = String(this.threads);
      const out = await runProcess(this.python, args, timeoutSeconds, env);
      const last = out.trim().split('\n').pop() ?? '';
      const r = { ...JSON.parse(last), blasThreads: this.threads ?? 'default', measuredAt: new Date().toISOString() };
      // On a shared machine a run can only be slowed down, never sped up: the cache keeps
      // the fastest measurement (the errors are the same every time).
      const file = path.join(this.cacheDir, `${this.key(c, matrix)}.json`);
      const before = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : undefined;
      const best = before && before.seconds < r.seconds ? before : r;
      fs.mkdirSync(this.cacheDir, { recursive: true });
      fs.writeFileSync(file, JSON.stringify({ ...best, runs: (before?.runs ?? 1) + (before ? 1 : 0) }, null, 1));
      return { ...r, source: 'run' };
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
}

function runProcess(cmd: string, args: string[], timeoutSeconds: number, env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '',
      err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutSeconds * 1000);
    p.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else
        reject(
          new Error(
            signal
              ? `reference killed (${signal}) after ${timeoutSeconds} s`
              : `reference failed: ${err.trim().split('\n').pop()}`,
          ),
        );
    });
  });
}
