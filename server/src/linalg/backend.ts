// Choosing and starting a backend (the device interface is device.ts). Backends: wasm
// (embedded default), native (our C kernels, linalg/nativeBackend.ts, when built),
// tensorflow (tfjs-node[-gpu] when installed), webgpu (Dawn via the npm `webgpu` package),
// cpu (plain JS, slow; for checks).

import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as TF from '@tensorflow/tfjs-core';
import type { BackendChoice, BackendName } from '../registry';
import { AUTO_ORDER, BACKEND_CHOICES, isBackendChoice, oneOf } from '../registry';
import { UsageError } from '../base/errors';
import type { DeviceMatrix, MatmulBackend } from './device';
import { NativeBackend, NativeOptions, createNativeBackend, nativeAddon } from './nativeBackend';

export type { DeviceMatrix, MatmulBackend } from './device';

// WebGPU storage bindings are limited to 128 MiB; a larger tensor silently computes
// garbage. On a backend with such a limit every tensor a product touches stays below it:
// the held matrix as row blocks, the thin factor as column chunks, and each product's
// output as row slices (a product can be thin in and far larger out).
const WEBGPU_MAX_BINDING_BYTES = 128 * 1024 * 1024;

export interface BackendOptions extends NativeOptions {
  /** Largest tensor (bytes) a product may bind; default 128 MiB on webgpu, unlimited elsewhere. */
  maxBindingBytes?: number;
}

class TfBackend implements MatmulBackend {
  flops = 0;
  /** Largest tensor this backend created, in bytes (checks the binding limit). */
  largestTensorBytes = 0;
  constructor(
    readonly name: BackendName,
    private readonly tf: typeof TF,
    readonly maxBindingBytes: number,
  ) {}

  /** tfjs has one global backend per thread; several instances (tests) take turns. */
  private async activate(): Promise<void> {
    if (this.tf.getBackend() !== this.name) await this.tf.setBackend(this.name);
  }

  private track<T extends TF.Tensor>(t: T): T {
    this.largestTensorBytes = Math.max(this.largestTensorBytes, t.size * 4);
    return t;
  }

  /** How many rows of width `width` fit in one binding. */
  private rowsFitting(width: number): number {
    return Math.max(1, Math.floor(this.maxBindingBytes / (width * 4)));
  }

  async hold(a: Float32Array, rows: number, cols: number): Promise<DeviceMatrix> {
    await this.activate();
    const tf = this.tf;
    const rowsPerBlock = this.rowsFitting(cols);
    const blocks: { row: number; t: TF.Tensor2D }[] = [];
    // Kernel workspaces are shared memory; native and GPU bindings may not take views of it.
    const copyShared = a.buffer instanceof SharedArrayBuffer && this.name !== 'wasm' && this.name !== 'cpu';
    for (let r = 0; r < rows; r += rowsPerBlock) {
      const r1 = Math.min(rows, r + rowsPerBlock);
      const part = copyShared ? a.slice(r * cols, r1 * cols) : a.subarray(r * cols, r1 * cols);
      blocks.push({ row: r, t: this.track(tf.tensor2d(part, [r1 - r, cols])) });
    }
    return this.wrap(blocks, rows, cols);
  }

  private wrap(
    blocks: { row: number; t: TF.Tensor2D }[],
    rows: number,
    cols: number,
  ): DeviceMatrix & { tensors: TF.Tensor2D[] } {
    const tf = this.tf;
    const self = this;
    return {
      rows,
      cols,
      tensors: blocks.map((b) => b.t),
      async times(b: Float32Array, n: number, into?: Float32Array): Promise<Float32Array> {
        if (b.length !== cols * n) throw new Error(`matmul shape mismatch: ${rows}x${cols} · ${b.length / n}x${n}`);
        await self.activate();
        const out = into ?? new Float32Array(rows * n);
        if (out.length !== rows * n) throw new Error(`matmul output of ${out.length} for ${rows}x${n}`);
        const chunk = self.rowsFitting(cols); // columns of b per upload (b is cols × n)
        for (let c0 = 0; c0 < n; c0 += chunk) {
          const nc = Math.min(n, c0 + chunk) - c0;
          let part = b;
          if (nc !== n) {
            part = new Float32Array(cols * nc);
            for (let i = 0; i < cols; i++) part.set(b.subarray(i * n + c0, i * n + c0 + nc), i * nc);
          }
          const bt = self.track(tf.tensor2d(part, [cols, nc]));
          const outRows = self.rowsFitting(nc);
          try {
            for (const blk of blocks) {
              const blkRows = blk.t.shape[0];
              for (let r0 = 0; r0 < blkRows; r0 += outRows) {
                const len = Math.min(blkRows, r0 + outRows) - r0;
                const a = len === blkRows ? blk.t : self.track(tf.slice(blk.t, [r0, 0], [len, cols]));
                const c = self.track(tf.matMul(a, bt));
                if (a !== blk.t) a.dispose();
                const data = (await c.data()) as Float32Array;
                c.dispose();
                const base = blk.row + r0;
                if (nc === n) out.set(data, base * n);
                else for (let i = 0; i < len; i++) out.set(data.subarray(i * nc, (i + 1) * nc), (base + i) * n + c0);
              }
            }
          } finally {
            bt.dispose();
          }
        }
        self.flops += 2 * rows * cols * n;
        return out;
      },
      dispose() {
        for (const blk of blocks) blk.t.dispose();
      },
    };
  }
}

function wasmDirectory(): string {
  const candidates = [__dirname];
  try {
    candidates.push(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm')));
  } catch {
    /* bundled: the binaries sit next to the bundle */
  }
  const dir = candidates.find((d) => fs.existsSync(path.join(d, 'tfjs-backend-wasm-simd.wasm')));
  if (!dir) throw new Error(`tfjs wasm binaries not found (looked in ${candidates.join(', ')})`);
  return dir + path.sep;
}

async function loadTf(): Promise<typeof TF> {
  return require('@tensorflow/tfjs-core') as typeof TF;
}

type Loader = (tf: typeof TF, auto: boolean) => Promise<boolean>;

const TF_NODE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'];
const SOFTWARE_NOTE = ' (software)';

const LOADERS: Record<Exclude<BackendName, 'native'>, Loader> = {
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
    for (const pkg of TF_NODE_PACKAGES) {
      try {
        require(pkg);
        return await tf.setBackend('tensorflow');
      } catch {
        /* not installed */
      }
    }
    return false;
  },
  async webgpu(tf, auto) {
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
    const gpu = (g.navigator as { gpu: { requestAdapter(): Promise<GpuAdapterLike | null> } }).gpu;
    const adapter = await gpu.requestAdapter();
    if (!adapter) return false;
    // A software rasterizer (lavapipe, SwiftShader) is slower than wasm: auto passes it by.
    if (auto && isSoftwareAdapter(adapter)) return false;
    require('@tensorflow/tfjs-backend-webgpu');
    return tf.setBackend('webgpu');
  },
};

interface GpuAdapterLike {
  isFallbackAdapter?: boolean;
  info?: { vendor?: string; architecture?: string; description?: string; isFallbackAdapter?: boolean };
}

function isSoftwareAdapter(a: GpuAdapterLike): boolean {
  const i = a.info ?? {};
  return !!(
    a.isFallbackAdapter ||
    i.isFallbackAdapter ||
    i.architecture === 'software' ||
    /llvmpipe|lavapipe|swiftshader/i.test(`${i.description} ${i.vendor}`)
  );
}

/** The GPU adapter's description, for reports and test messages (undefined: none). */
export async function webgpuAdapterInfo(): Promise<string | undefined> {
  let dawn: { create(flags: string[]): { requestAdapter(): Promise<GpuAdapterLike | null> } };
  try {
    dawn = require('webgpu');
  } catch {
    return undefined;
  }
  const a = await dawn.create([]).requestAdapter();
  if (!a) return undefined;
  return `${a.info?.description || a.info?.vendor || 'unknown adapter'}${isSoftwareAdapter(a) ? SOFTWARE_NOTE : ''}`;
}

/** The backend `choice` names or, for `auto`, the one createBackend would start — found
 *  without starting it (no tfjs backend set, no native kernels switched on in this thread). */
export async function backendName(choice: BackendChoice): Promise<BackendName> {
  if (choice !== 'auto') return choice;
  for (const name of AUTO_ORDER) {
    if (name === 'tensorflow' && TF_NODE_PACKAGES.some(resolvable)) return name;
    if (name === 'native' && nativeAddon().module) return name;
    if (name === 'webgpu') {
      const adapter = await webgpuAdapterInfo();
      if (adapter && !adapter.endsWith(SOFTWARE_NOTE)) return name;
    }
    if (name === 'wasm' || name === 'cpu') return name;
  }
  return 'wasm';
}

function resolvable(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

export async function createBackend(
  choice: BackendChoice = 'wasm',
  opts: BackendOptions = {},
): Promise<MatmulBackend & { readonly maxBindingBytes: number; readonly largestTensorBytes: number }> {
  if (!isBackendChoice(choice)) throw new UsageError(`unknown backend '${choice}' (${oneOf(BACKEND_CHOICES)})`);
  const tf = await loadTf();
  const names = choice === 'auto' ? AUTO_ORDER : [choice];
  for (const name of names) {
    if (name === 'native') {
      if (choice !== 'auto') return createNativeBackend(opts.threads ?? 1, opts.isa);
      const { module } = nativeAddon();
      if (module) return new NativeBackend(module, opts);
      continue;
    }
    let ok = false;
    try {
      ok = await LOADERS[name](tf, choice === 'auto');
    } catch (e) {
      if (choice !== 'auto') throw new UsageError(`backend '${name}' failed to start: ${(e as Error).message}`);
    }
    if (ok) {
      await tf.ready();
      const limit = opts.maxBindingBytes ?? (name === 'webgpu' ? WEBGPU_MAX_BINDING_BYTES : Number.MAX_SAFE_INTEGER);
      return new TfBackend(name, tf, limit);
    }
    if (choice !== 'auto') {
      throw new UsageError(
        name === 'tensorflow'
          ? "backend 'tensorflow' needs @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node installed " +
              '(npm i @tensorflow/tfjs-node-gpu)'
          : `backend '${name}' is not available on this machine`,
      );
    }
  }
  throw new Error('no tfjs backend could start');
}
