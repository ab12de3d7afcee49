// One matrix's products on several cores: a MatmulBackend whose held matrices are split
// into row blocks, one per GEMM worker thread (each with its own tfjs backend), so that
// R·Ω and Rᵀ·Y of a single large matrix run on every core at once. The LoftQ loop's Krylov
// algebra stays on the calling thread, which waits while the workers multiply; its
// element-wise passes (quantizer, low-rank step) run on this thread and the workers at once,
// on the shared kernel memory (`kernels`, kernels/pool.ts). Used when one matrix at a time
// is all there is to do (the bench's matrix cases, in-process runs); a checkpoint run
// already keeps every core busy with one matrix each.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { BackendChoice, BackendName } from '../protocol/lsp_ext';
import type { DeviceMatrix, MatmulBackend } from './backend';
import type { FromGemmWorker, ToGemmWorker } from './gemmProtocol';
import type { KernelPool } from '../kernels/pool';
import { createNativeBackend } from './nativeBackend';
import { createBackend } from './backend';

type Request = ToGemmWorker extends infer T ? (T extends { id: number } ? Omit<T, 'id'> : never) : never;

/** dist/gemm-worker.js: next to this bundle, or in the repo's dist/ when running from tests. */
function gemmWorkerScript(): string {
  let d = __dirname;
  for (let i = 0; i < 6; i++) {
    for (const c of [path.join(d, 'gemm-worker.js'), path.join(d, 'dist', 'gemm-worker.js')])
      if (fs.existsSync(c)) return c;
    d = path.dirname(d);
  }
  throw new Error('dist/gemm-worker.js not found: run `node esbuild.mjs` first');
}

class GemmThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve(m: FromGemmWorker): void; reject(e: Error): void }>();
  private nextId = 0;
  private failure?: Error;

  constructor(script: string) {
    this.worker = new Worker(script);
    this.worker.unref(); // an idle GEMM thread never keeps the process alive
    this.worker.on('message', (m: FromGemmWorker) => {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.error !== undefined) p?.reject(new Error(m.error));
      else p?.resolve(m);
    });
    const fail = (e: Error) => {
      this.failure ??= e;
      for (const p of this.pending.values()) p.reject(this.failure);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`a GEMM worker thread exited (code ${code})`)));
  }

  request(r: Request, transfer: ArrayBuffer[] = []): Promise<FromGemmWorker> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...r, id } as ToGemmWorker, transfer);
    });
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}

export interface SplitBackend extends MatmulBackend {
  readonly threads: number;
  close(): Promise<void>;
}

/** Rows of each thread's block: near-equal contiguous parts. */
function rowParts(rows: number, parts: number): [number, number][] {
  const n = Math.max(1, Math.min(parts, rows));
  return Array.from(
    { length: n },
    (_, i) => [Math.floor((rows * i) / n), Math.floor((rows * (i + 1)) / n)] as [number, number],
  );
}

export async function createSplitBackend(threads: number, choice: BackendChoice): Promise<SplitBackend> {
  // The native backend splits its products and its element-wise kernels over threads itself,
  // on this thread's memory: no worker copies, no messages.
  const resolved = choice === 'auto' ? (await createBackend('auto')).name : choice;
  if (resolved === 'native') return createNativeBackend(threads);
  const script = gemmWorkerScript();
  const pool = Array.from({ length: Math.max(1, threads) }, () => new GemmThread(script));
  let name: BackendName;
  try {
    name = (await Promise.all(pool.map((t) => t.request({ type: 'init', backend: choice }))))[0].backend!;
  } catch (e) {
    await Promise.all(pool.map((t) => t.terminate()));
    throw e;
  }
  let nextHandle = 0;
  // This thread works on a kernel's first part, the workers after the first on the others:
  // as many threads as GEMM threads.
  const kernels: KernelPool = {
    helpers: pool.length - 1,
    async call(i, memory, kernel, args) {
      return (await pool[i + 1].request({ type: 'kernel', memory, name: kernel, args })).value ?? 0;
    },
  };
  const backend: SplitBackend = {
    name,
    threads: pool.length,
    flops: 0,
    kernels,
    async hold(a: Float32Array, rows: number, cols: number): Promise<DeviceMatrix> {
      const handle = nextHandle++;
      const parts = rowParts(rows, pool.length);
      // A view of shared memory (a kernel workspace) goes over as is: the worker copies it
      // onto its backend before replying, and nothing writes it until then.
      const shared = a.buffer instanceof SharedArrayBuffer;
      await Promise.all(
        parts.map(([r0, r1], i) => {
          const block = shared ? a.subarray(r0 * cols, r1 * cols) : a.slice(r0 * cols, r1 * cols);
          const transfer = shared ? [] : [block.buffer as ArrayBuffer];
          return pool[i].request({ type: 'hold', handle, a: block, rows: r1 - r0, cols }, transfer);
        }),
      );
      return {
        rows,
        cols,
        async times(b: Float32Array, n: number, into?: Float32Array): Promise<Float32Array> {
          if (b.length !== cols * n) throw new Error(`matmul shape mismatch: ${rows}x${cols} · ${b.length / n}x${n}`);
          // b in shared memory: every thread reads the one copy (posting a plain array clones it
          // once per thread, on this thread: ~15% of a calibration pass, whose b are weights).
          const shared = new Float32Array(new SharedArrayBuffer(b.byteLength));
          shared.set(b);
          const outs = await Promise.all(parts.map((_, i) => pool[i].request({ type: 'times', handle, b: shared, n })));
          const out = into ?? new Float32Array(rows * n);
          parts.forEach(([r0], i) => out.set(outs[i].out!, r0 * n));
          backend.flops += 2 * rows * cols * n;
          return out;
        },
        dispose() {
          for (let i = 0; i < parts.length; i++) pool[i].request({ type: 'drop', handle }).catch(() => undefined);
        },
      };
    },
    async close() {
      await Promise.all(pool.map((t) => t.terminate()));
    },
  };
  return backend;
}
