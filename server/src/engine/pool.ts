// Runs matrix jobs on N worker threads (each with its own tfjs backend; N = 0 or unset: one
// per core), or on the calling thread when asked by name ('in-thread'). Jobs are handed out
// in submission order, one at a time per worker. An abort terminates the workers at once, so
// a cancelled run stops within a second even in the middle of a large matrix.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { BackendChoice, BackendName, MatrixReport } from '../protocol/lsp_ext';
import { backendName, createBackend } from '../linalg/backend';
import { AnalyzeJob, AnalyzeRow, MatrixJob, runAnalyzeJob, runMatrixJob } from './matrixJob';
import { CancelledError } from '../base/errors';
import { deserializeError } from '../base/serializeError';
import type { FromWorker, ToWorker } from './workerProtocol';
import { trimThreadMemory } from './trimMemory';
import { trimNativeCache } from '../kernels/native';

/** Where matrix work runs: N worker threads (0 or absent: one per core), or 'in-thread' on the
 *  calling thread — for tests and the fuzzer, which want one thread and no worker bundle; never
 *  the language server's, which must stay free to answer. */
export type Workers = number | 'in-thread';

/** The worker threads a run of `jobs` matrices starts: 0/absent means one per core; never more
 *  threads than jobs, at least one. */
export function threadCount(workers: number | undefined, jobs: number): number {
  const n = workers || cores();
  return Math.max(1, Math.min(n, jobs));
}

const cores = () => Math.max(1, os.availableParallelism?.() ?? os.cpus().length);

/** Bytes a native worker keeps per weight of the largest matrix it has run (docs/architecture.md,
 *  invariants): kernel memory 18 (matrixJob.ts KERNEL_BYTES_PER_WEIGHT: W, the quantizer's
 *  target, the residual, Q's values, 4 each; codes and a spare code byte) and the read's bytes
 *  (BF16 2, F32 4; the written Q's bytes reuse them). */
export const NATIVE_WORKER_BYTES_PER_WEIGHT = 22;
/** Matrix working sets of all native workers together, when the worker count is left to the
 *  engine: a 7B model's 11008×4096 matrices (1.26 GB a worker) then run one at a time with
 *  every core in the module's products and kernels, instead of one per core, and the run
 *  stays within 2 GB on a laptop. */
export const WORKERS_MEMORY_BUDGET = 1.5 * 2 ** 30;

/** Workers and threads per worker for `jobs` matrices of at most `largest` weights: as
 *  threadCount when the worker count is given or the backend is not native; left to the
 *  engine on native, as many workers as cores and WORKERS_MEMORY_BUDGET allow, each splitting
 *  its matrix over its share of the cores (native results do not depend on the thread count;
 *  tfjs's row-block split would change a product's rounding, so tfjs workers stay one a core). */
export function workerPlan(
  workers: number | undefined,
  jobs: number,
  largest: number,
  backend: BackendName,
): { workers: number; threads: number } {
  if (workers || backend !== 'native') return { workers: threadCount(workers, jobs), threads: 1 };
  const fit = Math.floor(WORKERS_MEMORY_BUDGET / Math.max(largest * NATIVE_WORKER_BYTES_PER_WEIGHT, 1));
  const n = Math.max(1, Math.min(cores(), jobs, fit));
  return { workers: n, threads: Math.max(1, Math.floor(cores() / n)) };
}

export interface Executor {
  readonly backend: BackendName;
  /** Worker threads started; 0 when the work runs on the calling thread. */
  readonly threads: number;
  quantize(job: MatrixJob): Promise<MatrixReport>;
  analyze(job: AnalyzeJob): Promise<AnalyzeRow[]>;
  /** GEMM flops issued so far. */
  flops(): number;
  /** Every worker's idle buffers' pages back to the system, and the native module's cache
   *  (engine/phaseMemory.ts): call it with no job running. Returns the bytes given back. */
  trim(): Promise<number>;
  close(): Promise<void>;
}

/** dist/worker.js: next to this bundle, or in the repo's dist/ when running from tests. */
export function workerScript(): string {
  let d = __dirname;
  for (let i = 0; i < 6; i++) {
    for (const c of [path.join(d, 'worker.js'), path.join(d, 'dist', 'worker.js')]) if (fs.existsSync(c)) return c;
    d = path.dirname(d);
  }
  throw new Error('dist/worker.js not found: run `node esbuild.mjs` first');
}

async function inProcess(choice: BackendChoice, signal?: AbortSignal): Promise<Executor> {
  const backend = await createBackend(choice);
  const guard = async <T>(p: () => Promise<T>) => {
    if (signal?.aborted) throw new CancelledError();
    return p();
  };
  return {
    backend: backend.name,
    threads: 0,
    quantize: (job) => guard(() => runMatrixJob(job, backend)),
    analyze: (job) => guard(() => runAnalyzeJob(job, backend)),
    flops: () => backend.flops,
    trim: async () => trimThreadMemory() + trimNativeCache(),
    close: async () => undefined,
  };
}

interface Pending {
  message: ToWorker;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

async function threaded(n: number, threads: number, choice: BackendChoice, signal?: AbortSignal): Promise<Executor> {
  const script = workerScript();
  const workers: Worker[] = [];
  const idle: Worker[] = [];
  const queue: Pending[] = [];
  // Jobs sent and not settled, by id; the job each worker is computing (a worker whose job is
  // 'computed' takes the next while that one's commit finishes).
  const running = new Map<number, Pending>();
  const computing = new Map<Worker, number>();
  const flops = new Map<Worker, number>();
  let nextId = 0;
  let closed = false;
  let failure: Error | undefined;

  const trims = new Map<number, (bytes: number) => void>();
  const failAll = (e: Error) => {
    failure ??= e;
    for (const p of [...queue, ...running.values()]) p.reject(failure);
    queue.length = 0;
    running.clear();
    for (const t of trims.values()) t(0);
    trims.clear();
  };
  const pump = () => {
    while (idle.length && queue.length) {
      const w = idle.pop()!;
      const p = queue.shift()!;
      const id = (p.message as { id: number }).id;
      running.set(id, p);
      computing.set(w, id);
      w.postMessage(p.message);
    }
  };
  /** w is done computing job `id` (idle again), if that is the job it was computing. */
  const freed = (w: Worker, id: number) => {
    if (computing.get(w) !== id) return;
    computing.delete(w);
    idle.push(w);
  };

  let backendName: BackendName = 'wasm';
  const ready: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const w = new Worker(script);
    workers.push(w);
    ready.push(
      new Promise<void>((resolve, reject) => {
        w.on('message', (m: FromWorker) => {
          if (m.type === 'ready') {
            backendName = m.backend;
            idle.push(w);
            resolve();
            pump();
            return;
          }
          if (m.type === 'failed' && m.id === -1) {
            reject(deserializeError(m.error));
            return;
          }
          if (m.type === 'trimmed') {
            trims.get(m.id)?.(m.bytes);
            trims.delete(m.id);
            return;
          }
          if (m.type === 'computed') {
            freed(w, m.id);
            pump();
            return;
          }
          const p = running.get(m.id);
          running.delete(m.id);
          if ('flops' in m) flops.set(w, m.flops);
          freed(w, m.id);
          if (p) {
            if (m.type === 'failed') p.reject(deserializeError(m.error));
            else p.resolve(m.type === 'quantized' ? m.report : m.rows);
          }
          pump();
        });
        w.on('error', (e) => {
          reject(e);
          failAll(e);
        });
        w.on('exit', (code) => {
          // A worker terminated by a cancel before it was ready must settle `ready` too, or the
          // run would wait forever (and the CLI exit 0 with its lock left behind).
          reject(failure ?? new Error(`a worker thread exited before it was ready (code ${code})`));
          if (!closed) failAll(new Error(`a worker thread exited unexpectedly (code ${code})`));
        });
      }),
    );
    w.postMessage({ type: 'init', backend: choice, threads } satisfies ToWorker);
  }
  const close = async () => {
    closed = true;
    await Promise.all(workers.map((w) => w.terminate()));
  };
  const onAbort = () => {
    failAll(new CancelledError());
    void close();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await Promise.all(ready);
  } catch (e) {
    await close();
    throw e;
  }
  const submit = <T>(make: (id: number) => ToWorker) =>
    new Promise<T>((resolve, reject) => {
      if (failure) return reject(failure);
      if (signal?.aborted) return reject(new CancelledError());
      queue.push({ message: make(nextId++), resolve: resolve as (v: unknown) => void, reject });
      pump();
    });
  return {
    get backend() {
      return backendName;
    },
    threads: n,
    quantize: (job) => submit<MatrixReport>((id) => ({ type: 'quantize', id, job })),
    analyze: (job) => submit<AnalyzeRow[]>((id) => ({ type: 'analyze', id, job })),
    flops: () => [...flops.values()].reduce((a, b) => a + b, 0),
    trim: async () => {
      const each = await Promise.all(
        workers.map(
          (w) =>
            new Promise<number>((resolve) => {
              const id = nextId++;
              trims.set(id, resolve);
              w.postMessage({ type: 'trim', id } satisfies ToWorker);
            }),
        ),
      );
      return each.reduce((a, b) => a + b, 0) + trimNativeCache();
    },
    close: async () => {
      signal?.removeEventListener('abort', onAbort);
      await close();
    },
  };
}

/** An executor for `jobs` matrices under the `workers` option (Workers); `largest`, the
 *  weights of the largest matrix, sizes the pool to the memory budget (workerPlan) when the
 *  worker count is left to it. */
export async function createExecutor(
  workers: Workers | undefined,
  jobs: number,
  backend: BackendChoice,
  signal?: AbortSignal,
  largest = 0,
): Promise<Executor> {
  if (signal?.aborted) throw new CancelledError(); // an aborted signal never fires 'abort' again
  if (workers === 'in-thread') return inProcess(backend, signal);
  const plan = workerPlan(workers, jobs, largest, await backendName(backend));
  return threaded(plan.workers, plan.threads, backend, signal);
}
