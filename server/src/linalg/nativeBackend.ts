// The native backend: the held-matrix products of backend.ts in C with AVX-512 / AVX2+FMA
// (server/native/loftq_native.c, built into dist/loftq_native.node by esbuild.mjs where a
// C compiler exists). A product runs synchronously on the calling thread plus `threads − 1`
// helper threads — as tfjs-wasm's products run synchronously on the calling thread — and
// the engine already keeps products off the language server's connection thread.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DeviceMatrix, MatmulBackend } from './device';

export const NATIVE_ISAS = ['generic', 'avx2', 'avx512'] as const;
export type NativeIsa = (typeof NATIVE_ISAS)[number];

export interface NativeAddon {
  isa(): NativeIsa;
  supports(isa: string): boolean;
  hold(a: Float32Array, rows: number, cols: number): object;
  times(held: object, b: Float32Array, n: number, out: Float32Array, threads: number, isa: NativeIsa): void;
  release(held: object): void;
}

const MODULE_FILE = 'loftq_native.node';
let addon: { module?: NativeAddon; problem?: string } | undefined;

/** dist/loftq_native.node beside this bundle, or in the repo's dist/ (compiled tests in out/). */
function moduleFile(): string | undefined {
  let d = __dirname;
  for (let i = 0; i < 6; i++) {
    for (const c of [path.join(d, MODULE_FILE), path.join(d, 'dist', MODULE_FILE)]) if (fs.existsSync(c)) return c;
    d = path.dirname(d);
  }
  return undefined;
}

/** The loaded module, or why there is none (not built, or built for another platform). */
export function nativeAddon(): { module?: NativeAddon; problem?: string } {
  if (addon) return addon;
  const file = moduleFile();
  if (!file) {
    addon = { problem: 'dist/loftq_native.node was not built (it needs a C compiler when `node esbuild.mjs` runs)' };
    return addon;
  }
  try {
    // A run-time path: the bundler leaves this require alone.
    addon = { module: require(file) as NativeAddon };
  } catch (e) {
    addon = { problem: `${file} does not load here: ${(e as Error).message.split('\n')[0]}` };
  }
  return addon;
}

export interface NativeOptions {
  /** Threads per product (the calling one included); default 1: the engine's pools already
   *  give each core its own matrix or row block. */
  threads?: number;
  /** Kernels to use (tests compare them); default the best this CPU runs. */
  isa?: NativeIsa;
}

export class NativeBackend implements MatmulBackend {
  readonly name = 'native' as const;
  flops = 0;
  /** No binding limit (a tfjs-webgpu notion, see backend.ts). */
  readonly maxBindingBytes = Number.MAX_SAFE_INTEGER;
  /** Largest buffer a hold or product made, in bytes. */
  largestTensorBytes = 0;
  readonly isa: NativeIsa;
  readonly threads: number;

  constructor(
    private readonly addon: NativeAddon,
    opts: NativeOptions = {},
  ) {
    this.isa = opts.isa ?? addon.isa();
    if (!addon.supports(this.isa)) throw new Error(`native backend: this CPU does not run the ${this.isa} kernels`);
    this.threads = Math.max(1, Math.floor(opts.threads ?? 1));
  }

  async hold(a: Float32Array, rows: number, cols: number): Promise<DeviceMatrix> {
    const { addon } = this;
    let handle: object | undefined = addon.hold(a, rows, cols);
    this.largestTensorBytes = Math.max(this.largestTensorBytes, a.length * 4);
    return {
      rows,
      cols,
      times: async (b: Float32Array, n: number): Promise<Float32Array> => {
        if (!handle) throw new Error('native backend: product with a disposed matrix');
        if (b.length !== cols * n) throw new Error(`matmul shape mismatch: ${rows}x${cols} · ${b.length / n}x${n}`);
        const out = new Float32Array(rows * n);
        this.largestTensorBytes = Math.max(this.largestTensorBytes, out.length * 4);
        addon.times(handle, b, n, out, this.threads, this.isa);
        this.flops += 2 * rows * cols * n;
        return out;
      },
      dispose() {
        if (handle) addon.release(handle);
        handle = undefined;
      },
    };
  }
}
