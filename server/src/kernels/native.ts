// The native module (server/native/loftq_native.c → dist/loftq_native.node, built by
// esbuild.mjs where a C compiler exists): the native backend's products
// (linalg/nativeBackend.ts) and native versions of the hottest kernels (NATIVE_KERNELS). A
// thread that starts a native backend runs those kernels natively from then on
// (useNativeKernels): the quantizer's codes, values and residuals are bit-identical to the
// wasm kernel's; the low-rank step and the Krylov algebra differ in rounding only (fused
// multiply-adds, sums in another order).

import * as fs from 'node:fs';
import * as path from 'node:path';

export const NATIVE_ISAS = ['generic', 'avx2', 'avx512'] as const;
export type NativeIsa = (typeof NATIVE_ISAS)[number];

/** The kernels with a native version; same arguments as the wasm ones, after the memory. */
export const NATIVE_KERNELS = [
  'quantizeAbsMaxResidual',
  'lowRankStep',
  'transposeBand',
  'dotBlock',
  'axpyBlock',
  'orthonormalize',
  'gram',
  'symmetricEigen',
] as const;
type NativeKernel = (typeof NATIVE_KERNELS)[number];

export interface NativeAddon {
  isa(): NativeIsa;
  supports(isa: string): boolean;
  /** A copy of `a`, owned by the returned handle. */
  hold(a: Float32Array, rows: number, cols: number): object;
  /** `a` read in place (shared memory only: it cannot be detached or moved). */
  holdView(a: Float32Array, rows: number, cols: number): object;
  times(held: object, b: Float32Array, n: number, out: Float32Array, threads: number, isa: NativeIsa): void;
  /** out (rows × n) = A · Wᵀ, w being n × cols row-major, or blocks of such rows stacked
   *  (Σ rows = n): the [out, in] weights of a linear group, packed straight from their rows.
   *  bf16 = 1: A and W rounded to bf16, float32 sums (AVX512-BF16 only); W's blocks may then
   *  be bf16 bit patterns (Uint16Array: a BF16 checkpoint's weights as read), all or none. */
  timesTransposed(
    held: object,
    w: Float32Array | readonly Float32Array[] | readonly Uint16Array[],
    n: number,
    out: Float32Array,
    threads: number,
    isa: NativeIsa,
    bf16?: number,
  ): void;
  release(held: object): void;
  /** g's upper triangle += X[t0:t1]ᵀ·X[t0:t1] (x: tokens × dim float32, g: dim × dim float64);
   *  returns the flops of its products. bf16 = 1: X rounded to bf16 in the products. */
  gramUpper(
    x: Float32Array,
    dim: number,
    t0: number,
    t1: number,
    g: Float64Array,
    threads: number,
    isa: NativeIsa,
    bf16?: number,
  ): number;
  /** model/ops.ts's attention for every sequence ([start, len, outRow] triples), over heads. */
  attention(qkv: Float32Array, out: Float32Array, seq: BigInt64Array, ...shape: number[]): void;
  siluGate(gu: Float32Array, tokens: number, inter: number, out: Float32Array, threads: number): void;
  /** A wasm kernel's call on `memory` (a view of the whole WebAssembly memory). */
  quantizeAbsMaxResidual(memory: Uint8Array, ...args: number[]): number;
  lowRankStep(memory: Uint8Array, ...args: number[]): number;
  transposeBand(memory: Uint8Array, ...args: number[]): void;
  dotBlock(memory: Uint8Array, ...args: number[]): void;
  axpyBlock(memory: Uint8Array, ...args: number[]): void;
  orthonormalize(memory: Uint8Array, ...args: number[]): void;
  gram(memory: Uint8Array, ...args: number[]): void;
  symmetricEigen(memory: Uint8Array, ...args: number[]): void;
  /** g ← g·scale on and above the diagonal, mirrored below. */
  symmetrizeScaled(g: Float64Array, dim: number, scale: number, threads: number): void;
  /** Row band [r0, r1) of g's lower triangle (upper 0; columns [0, r1)) or upper triangle (1;
   *  columns [r0, dim)) as float32, zeros off the triangle, converted straight into a held copy
   *  (as hold's) that the returned handle owns. */
  holdTriangleBand(g: Float64Array, dim: number, r0: number, r1: number, upper: number, threads: number): object;
  /** Row band [r0, r1) of g's strictly lower triangle, columns [0, r1), as bf16 (AVX512-BF16
   *  only), for measureBf16. */
  holdStrictLowerBandBf16(g: Float64Array, dim: number, r0: number, r1: number, threads: number): object;
  /** tr(bᵀ·H·b) for H = T + Tᵀ + diag(w), T the strictly lower triangle in `bands` (in order,
   *  covering rows 0 … w.length − 1), b w.length × n rounded to bf16, float32 products. */
  measureBf16(bands: object[], b: Float32Array, n: number, w: Float64Array, threads: number): number;
  /** Whether this CPU runs the bf16 products. */
  bf16(): boolean;
  /** Asks for the pages of `bytes` on a libuv thread (MADV_POPULATE_WRITE; nothing where the
   *  kernel has none): the bytes never change, the view is kept alive until it is done. */
  populate(bytes: Uint8Array): void;
  /** Returns the whole pages inside a dead buffer's bytes to the system (MADV_DONTNEED: they
   *  read as zeros at their next touch); the bytes released. */
  discard?(bytes: Uint8Array): number;
  /** Frees the module's cache of reusable buffers and malloc's free pages; the bytes freed. */
  trimCache?(): number;
  /** dst[i] = src[i] widened from bf16 (src null: dst as it is); returns dst's NaN/Inf count. */
  widen(src: Uint16Array | null, dst: Float32Array, threads: number): number;
}

const MODULE_FILE = 'loftq_native.node';
let addon: { module?: NativeAddon; problem?: string } | undefined;

/** dist/loftq_native.node beside this bundle, or in the repo's dist/ (compiled tests in out/).
 *  The walk of base/bundleScript.ts, repeated: kernels/ is a leaf and imports nothing above it. */
function moduleFile(): string | undefined {
  let d = __dirname;
  for (let i = 0; i < 6; i++) {
    for (const c of [path.join(d, MODULE_FILE), path.join(d, 'dist', MODULE_FILE)]) if (fs.existsSync(c)) return c;
    d = path.dirname(d);
  }
  return undefined;
}

/** The loaded module, or why there is none (not built, built for another platform, or turned
 *  off: LOFTQ_NATIVE=0 at run time as at build time, so `auto` runs on wasm without a rebuild). */
export function nativeAddon(): { module?: NativeAddon; problem?: string } {
  if (addon) return addon;
  if (process.env.LOFTQ_NATIVE === '0') {
    addon = { problem: 'the native module is turned off (LOFTQ_NATIVE=0)' };
    return addon;
  }
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

let inUse: { addon: NativeAddon; threads: number } | undefined;

/** This thread's kernel calls of NATIVE_KERNELS go to `addon` from now on, each on `threads`
 *  threads (the quantizer by blocks, the low-rank step by rows). */
export function useNativeKernels(addon: NativeAddon, threads = 1): void {
  inUse = { addon, threads };
}

/** Replaces the native kernels of a wasm kernel set on `memory`, when this thread uses them. */
export function withNativeKernels<K extends Record<NativeKernel, (...args: number[]) => unknown>>(
  kernels: K,
  memory: { readonly buffer: ArrayBuffer },
): K {
  if (!inUse) return kernels;
  const { addon, threads } = inUse;
  // A fresh view per call: growing the memory replaces its buffer object (never its address).
  const view = () => new Uint8Array(memory.buffer);
  const native = Object.fromEntries(
    NATIVE_KERNELS.map((name) => [name, (...a: number[]) => addon[name](view(), ...a, threads)]),
  ) as Pick<K, NativeKernel>;
  return { ...kernels, ...native };
}

/** The module and thread count of this thread's native kernels, for calls on plain arrays
 *  rather than a workspace; undefined when this thread's kernels are not native. */
export function nativeKernelsOnArrays(): { addon: NativeAddon; threads: number } | undefined {
  return inUse;
}

/** Whether this thread's kernels are the native ones. */
export function nativeKernelsInUse(): boolean {
  return inUse !== undefined;
}

/** Fresh pages of `bytes` faulted in the background where the native module is loaded (see
 *  populate), so that the thread's first writes to them do not pay a fault a page. */
export function prefault(bytes: Uint8Array): void {
  nativeAddon().module?.populate?.(bytes);
}

/** The pages of a buffer whose contents are dead go back to the system, the buffer staying
 *  usable (it reads as zeros); false where the native module is not loaded (nothing happens). */
export function discardPages(bytes: Uint8Array): boolean {
  const m = nativeAddon().module;
  if (!m?.discard) return false;
  m.discard(bytes);
  return true;
}

/** Frees the native module's cache of reusable buffers (every thread's: the module is one per
 *  process) and malloc's free pages; the cache's bytes. */
export function trimNativeCache(): number {
  return nativeAddon().module?.trimCache?.() ?? 0;
}
