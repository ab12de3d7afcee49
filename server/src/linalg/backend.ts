// Matrix products on a tfjs backend. The engine only needs two things from a device:
// hold a matrix there (uploaded once per LoftQ iteration) and multiply it by thin blocks.
// Backends: wasm (embedded default), tensorflow (tfjs-node[-gpu] when installed),
// webgpu (Dawn via the npm `webgpu` package), cpu (plain JS, slow; for checks).

import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as TF from '@tensorflow/tfjs-core';
import type { BackendChoice, BackendName } from '../protocol/lsp_ext';
import { UsageError } from '../engine/errors';

export interface DeviceMatrix {
  readonly rows: number;
  readonly cols: number;
  /** this · b, with b row-major (cols × n); returns row-major rows × n. */
  times(b: Float32Array, n: number): Promise<Float32Array>;
  dispose(): void;
}

export interface MatmulBackend {
  readonly name: BackendName;
  /** Row-major a (m×k) · b (k×n). */
  matmul(a: Float32Array, m: number, k: number, b: Float32Array, n: number): Promise<Float32Array>;
  hold(a: Float32Array, rows: number, cols: number): Promise<DeviceMatrix>;
  /** GEMM flops issued so far (for throughput figures). */
  flops: number;
}

// WebGPU storage bindings are limited to 128 MiB; a larger tensor silently computes
// garbage. Matrices are therefore held as row blocks below this size on every backend
// that has such a limit.
const WEBGPU_MAX_BINDING_BYTES = 128 * 1024 * 1024;

class TfBackend implements MatmulBackend {
  flops = 0;
  constructor(readonly name: BackendName, private readonly tf: typeof TF, private readonly maxBlockBytes: number) {}

  async matmul(a: Float32Array, m: number, k: number, b: Float32Array, n: number): Promise<Float32Array> {
    const held = await this.hold(a, m, k);
    try {
      return await held.times(b, n);
    } finally {
      held.dispose();
    }
  }

  /** tfjs has one global backend per thread; several instances (tests) take turns. */
  private async activate(): Promise<void> {
    if (this.tf.getBackend() !== this.name) await this.tf.setBackend(this.name);
  }

  async hold(a: Float32Array, rows: number, cols: number): Promise<DeviceMatrix> {
    await this.activate();
    const tf = this.tf;
    const rowsPerBlock = Math.max(1, Math.floor(this.maxBlockBytes / (cols * 4)));
    const blocks: TF.Tensor2D[] = [];
    for (let r = 0; r < rows; r += rowsPerBlock) {
      const r1 = Math.min(rows, r + rowsPerBlock);
      blocks.push(tf.tensor2d(a.subarray(r * cols, r1 * cols), [r1 - r, cols]));
    }
    const self = this;
    return {
      rows,
      cols,
      async times(b: Float32Array, n: number): Promise<Float32Array> {
        if (b.length !== cols * n) throw new Error(`matmul shape mismatch: ${rows}x${cols} · ${b.length / n}x${n}`);
        await self.activate();
        const bt = tf.tensor2d(b, [cols, n]);
        const out = new Float32Array(rows * n);
        try {
          let offset = 0;
          for (const blk of blocks) {
            const c = tf.matMul(blk, bt);
            const data = (await c.data()) as Float32Array;
            c.dispose();
            out.set(data, offset);
            offset += data.length;
          }
        } finally {
          bt.dispose();
        }
        self.flops += 2 * rows * cols * n;
        return out;
      },
      dispose() {
        for (const blk of blocks) blk.dispose();
      },
    };
  }
}

function wasmDirectory(): string {
  const candidates = [__dirname];
  try {
    candidates.push(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm')));
  } catch { /* bundled: the binaries sit next to the bundle */ }
  const dir = candidates.find((d) => fs.existsSync(path.join(d, 'tfjs-backend-wasm-simd.wasm')));
  if (!dir) throw new Error(`tfjs wasm binaries not found (looked in ${candidates.join(', ')})`);
  return dir + path.sep;
}

async function loadTf(): Promise<typeof TF> {
  return require('@tensorflow/tfjs-core') as typeof TF;
}

type Loader = (tf: typeof TF) => Promise<boolean>;

const LOADERS: Record<BackendName, Loader> = {
  async wasm(tf) {
    const wasm = require('@tensorflow/tfjs-backend-wasm');
    wasm.setWasmPaths(wasmDirectory());
    return tf.setBackend('wasm');
  },
  async cpu(tf) {
    require('@tensorflow/tfjs-backend-cpu');
    return tf.setBackend('cpu');
  },
  async tensorflow(tf) {
    for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
      try {
        require(pkg);
        return await tf.setBackend('tensorflow');
      } catch { /* not installed */ }
    }
    return false;
  },
  async webgpu(tf) {
    let dawn: { create(flags: string[]): unknown; globals: Record<string, unknown> };
    try {
      dawn = require('webgpu');
    } catch {
      return false;
    }
    const g = globalThis as Record<string, unknown>;
    Object.assign(g, dawn.globals);
    if (!g.navigator || !(g.navigator as { gpu?: unknown }).gpu) {
      Object.defineProperty(g, 'navigator', { value: { gpu: dawn.create([]) }, configurable: true });
    }
    const gpu = (g.navigator as { gpu: { requestAdapter(): Promise<unknown> } }).gpu;
    if (!(await gpu.requestAdapter())) return false;
    require('@tensorflow/tfjs-backend-webgpu');
    return tf.setBackend('webgpu');
  },
};

const AUTO_ORDER: BackendName[] = ['tensorflow', 'webgpu', 'wasm', 'cpu'];
const BACKEND_NAMES: readonly string[] = ['wasm', 'webgpu', 'tensorflow', 'cpu', 'auto'];

export async function createBackend(choice: BackendChoice = 'wasm'): Promise<MatmulBackend> {
  if (!BACKEND_NAMES.includes(choice)) throw new UsageError(`unknown backend '${choice}' (auto, wasm, webgpu, tensorflow or cpu)`);
  const tf = await loadTf();
  const names = choice === 'auto' ? AUTO_ORDER : [choice];
  for (const name of names) {
    let ok = false;
    try {
      ok = await LOADERS[name](tf);
    } catch (e) {
      if (choice !== 'auto') throw new UsageError(`backend '${name}' failed to start: ${(e as Error).message}`);
    }
    if (ok) {
      await tf.ready();
      const limit = name === 'webgpu' ? WEBGPU_MAX_BINDING_BYTES : Number.MAX_SAFE_INTEGER;
      return new TfBackend(name, tf, limit);
    }
    if (choice !== 'auto') {
      throw new UsageError(name === 'tensorflow'
        ? "backend 'tensorflow' needs @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node installed (npm i @tensorflow/tfjs-node-gpu)"
        : `backend '${name}' is not available on this machine`);
    }
  }
  throw new Error('no tfjs backend could start');
}
