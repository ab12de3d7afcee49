// Times our engine (loftqMatrix on a tfjs backend) on one case, and the backend's GEMM peak
// on the thin products LoftQ issues, so throughput can be read against what the device does.

import { createBackend, MatmulBackend } from '../server/src/linalg/backend';
import { createSplitBackend } from '../server/src/linalg/splitBackend';
import { loftqMatrix } from '../server/src/loftq/loftq';
import type { BackendChoice } from '../server/src/protocol/lsp_ext';
import type { BenchCase } from './cases';

export interface EngineResult {
  seconds: number;
  relErrorPerIter: number[];
  qloraRelError: number;
  /** GEMM flops issued by the engine per second of its wall time (null: backend does not count). */
  gflops: number | null;
  /** Wall seconds per phase of loftqMatrix (quantize, svd — of which svd.gemm, svd.krylov,
   *  svd.ritz — lowRank). */
  phases: Record<string, number>;
}

/** `gemmThreads` > 1: each matrix's products split by rows over that many worker threads. */
export async function startBackend(choice: BackendChoice, gemmThreads = 1): Promise<MatmulBackend> {
  const b = gemmThreads > 1 ? await createSplitBackend(gemmThreads, choice) : await createBackend(choice);
  // The first products compile kernels / grow the wasm heap; keep that out of every timing
  // (on both grids the cases use).
  const w = new Float32Array(256 * 256).map((_, i) => Math.sin(i));
  for (const quantizer of ['nf', 'hqq'] as const)
    await loftqMatrix(w, 256, 256, { bits: 2, rank: 8, iters: 2, quantizer, blockSize: 64 }, b);
  return b;
}

export async function runEngine(c: BenchCase, w: Float32Array, backend: MatmulBackend): Promise<EngineResult> {
  const f0 = backend.flops;
  const phases: Record<string, number> = {};
  const t0 = performance.now();
  const r = await loftqMatrix(
    w,
    c.rows,
    c.cols,
    { bits: c.bits, rank: c.rank, iters: c.iters, quantizer: c.quantizer, blockSize: c.blockSize },
    backend,
    { phases },
  );
  const seconds = (performance.now() - t0) / 1000;
  const flops = backend.flops - f0;
  return {
    seconds,
    relErrorPerIter: r.relErrorPerIter,
    qloraRelError: r.qloraRelError,
    gflops: flops > 0 ? flops / seconds / 1e9 : null,
    phases,
  };
}

/** Best GFLOP/s of the backend on an (m×k)·(k×n) product, a few repetitions. */
export async function gemmPeak(backend: MatmulBackend, m = 4096, k = 4096, n = 128, reps = 3): Promise<number> {
  const a = new Float32Array(m * k).map((_, i) => ((i * 2654435761) % 1000) / 1000 - 0.5);
  const b = new Float32Array(k * n).map((_, i) => ((i * 40503) % 1000) / 1000 - 0.5);
  const held = await backend.hold(a, m, k);
  try {
    await held.times(b, n);
    let best = Infinity;
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      await held.times(b, n);
      best = Math.min(best, (performance.now() - t0) / 1000);
    }
    return (2 * m * k * n) / best / 1e9;
  } finally {
    held.dispose();
  }
}

/** The median of `repeat` runs (by wall time): one run is at the mercy of a busy neighbour
 *  on a shared machine; the first pays the page faults of this size's fresh memory, later
 *  ones reuse it (as a checkpoint run's matrices after its first do). `samples`: every
 *  run's seconds, in order. */
export async function runEngineMedian(
  c: BenchCase,
  w: Float32Array,
  backend: MatmulBackend,
  repeat: number,
): Promise<EngineResult & { samples: number[] }> {
  return (await runEngineInterleaved([c], w, backend, repeat))[0];
}

/** runEngineMedian of several cases on the same matrix, their runs interleaved (a b a b …):
 *  cases compared with each other (HQQ's grid against NF's) then see the same neighbours'
 *  load, rather than one of them a quiet minute and the other a busy one. */
export async function runEngineInterleaved(
  cases: BenchCase[],
  w: Float32Array,
  backend: MatmulBackend,
  repeat: number,
): Promise<(EngineResult & { samples: number[] })[]> {
  const runs: EngineResult[][] = cases.map(() => []);
  for (let i = 0; i < repeat; i++)
    for (let j = 0; j < cases.length; j++) runs[j].push(await runEngine(cases[j], w, backend));
  return runs.map((r) => {
    const sorted = [...r].sort((a, b) => a.seconds - b.seconds);
    return { ...sorted[(sorted.length - 1) >> 1], samples: r.map((x) => x.seconds) };
  });
}
