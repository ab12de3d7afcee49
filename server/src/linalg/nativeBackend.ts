// The native backend: the held-matrix products of backend.ts in C with AVX-512 / AVX2+FMA
// (server/native/loftq_native.c, built into dist/loftq_native.node by esbuild.mjs where a
// C compiler exists). A product runs synchronously on the calling thread plus `threads − 1`
// helper threads — as tfjs-wasm's products run synchronously on the calling thread — and
// the engine already keeps products off the language server's connection thread.

import type { DeviceMatrix, MatmulBackend } from './device';
import { NativeAddon, NativeIsa, nativeAddon, useNativeKernels } from '../kernels/native';
import { UsageError } from '../base/errors';

export { NATIVE_ISAS, nativeAddon } from '../kernels/native';
export type { NativeAddon, NativeIsa } from '../kernels/native';

/** The attention layout of model/ops.ts (declared here: linalg/ does not import model/). */
export interface AttentionLayout {
  heads: number;
  kvHeads: number;
  headDim: number;
  stride: number;
  qOff: number;
  kOff: number;
  vOff: number;
  slidingWindow?: number;
}

/** A quadratic form held in the module (holdBf16Measure). */
export interface HeldMeasure {
  measure(b: Float32Array, n: number): number;
  dispose(): void;
}

export interface NativeOptions {
  /** Threads per product (the calling one included); default 1: the engine's pools already
   *  give each core its own matrix or row block. */
  threads?: number;
  /** Kernels to use (tests compare them); default the best this CPU runs. */
  isa?: NativeIsa;
}

export class NativeBackend implements MatmulBackend {
  /** Ends nothing: products run on the calling thread and its own short-lived helpers. */
  async close(): Promise<void> {}

  readonly name = 'native' as const;
  flops = 0;
  /** No binding limit (a tfjs-webgpu notion, see backend.ts). */
  readonly maxBindingBytes = Number.MAX_SAFE_INTEGER;
  /** Largest buffer a hold or product made, in bytes. */
  largestTensorBytes = 0;
  readonly isa: NativeIsa;
  readonly threads: number;
  /** bf16 products (holdStrictLowerBandBf16) run: AVX512-BF16 under the avx512 kernels. */
  readonly bf16: boolean;

  constructor(
    private readonly addon: NativeAddon,
    opts: NativeOptions = {},
  ) {
    this.isa = opts.isa ?? addon.isa();
    if (!addon.supports(this.isa)) throw new Error(`native backend: this CPU does not run the ${this.isa} kernels`);
    this.threads = Math.max(1, Math.floor(opts.threads ?? 1));
    this.bf16 = this.isa === 'avx512' && addon.bf16();
    // This thread's quantizer, low-rank step and Krylov algebra run natively from now on too.
    useNativeKernels(addon, this.threads);
  }

  /** g's upper triangle (j ≥ i) += X[t0:t1]ᵀ·X[t0:t1] for x (tokens × dim), g dim × dim
   *  float64: the calibration statistics' product, transposes, bands and float64 sums
   *  in the module. `bf16`: X rounded to bf16 in the products — only where `this.bf16`. */
  gramUpper(x: Float32Array, dim: number, t0: number, t1: number, g: Float64Array, bf16 = false): void {
    if (bf16 && !this.bf16) throw new Error('native backend: bf16 products need AVX512-BF16 (and the avx512 kernels)');
    this.flops += this.addon.gramUpper(x, dim, t0, t1, g, this.threads, this.isa, bf16 ? 1 : 0);
  }

  /** g ← g·scale on and above the diagonal, mirrored below (g dim × dim float64): the
   *  calibration statistics' G made exactly symmetric, on the threads. */
  symmetrizeScaled(g: Float64Array, dim: number, scale: number): void {
    this.addon.symmetrizeScaled(g, dim, scale, this.threads);
  }

  /** model/ops.ts's causal attention of every sequence (rows start … start + len of qkv into
   *  rows outRow … of out), split over heads. */
  attention(
    qkv: Float32Array,
    sequences: readonly { start: number; len: number; outRow: number }[],
    s: AttentionLayout,
    out: Float32Array,
  ): void {
    const seq = BigInt64Array.from(
      sequences.flatMap((q) => [q.start, q.len, q.outRow]),
      (v) => BigInt(v),
    );
    const { heads, kvHeads, headDim, stride, qOff, kOff, vOff, slidingWindow } = s;
    this.addon.attention(
      qkv,
      out,
      seq,
      heads,
      kvHeads,
      headDim,
      stride,
      qOff,
      kOff,
      vOff,
      slidingWindow ?? 0,
      this.threads,
    );
  }

  /** out = silu(gate) · up for rows of [gate | up] (model/ops.ts's siluGate), split over rows. */
  siluGate(gu: Float32Array, tokens: number, inter: number, out: Float32Array): void {
    this.addon.siluGate(gu, tokens, inter, out, this.threads);
  }

  /** a (rows × cols) · [W_1ᵀ | W_2ᵀ | …] for weights in the [out, in] layout (ws[k]: out_k × cols,
   *  Σ out_k = n): the module packs W's rows straight into its strips, so neither a transposed
   *  nor a stacked copy of the weights is made. `bf16`: a and W rounded to bf16, float32 sums,
   *  at twice the float32 rate — only where `this.bf16`; then W's blocks may be bf16 bit
   *  patterns (a BF16 checkpoint's weights as read: the same packed bits, no float32 copy). */
  timesTransposed(
    a: Float32Array,
    rows: number,
    cols: number,
    ws: readonly Float32Array[] | readonly Uint16Array[],
    n: number,
    into?: Float32Array,
    bf16 = false,
  ): Float32Array {
    const addon = this.addon;
    if (bf16 && !this.bf16) throw new Error('native backend: bf16 products need AVX512-BF16 (and the avx512 kernels)');
    if (!bf16 && ws.some((w) => w instanceof Uint16Array))
      throw new Error('native backend: bf16 weights need bf16 products');
    if (!bf16 && ws.some((w) => w instanceof Uint16Array))
      throw new Error('native backend: bf16 weights need bf16 products');
    // Read in place even when not shared: the product is synchronous, so nothing can detach
    // or write `a` before the release below.
    const handle = addon.holdView(a, rows, cols);
    try {
      const out = into ?? new Float32Array(rows * n);
      this.largestTensorBytes = Math.max(this.largestTensorBytes, out.length * 4);
      addon.timesTransposed(handle, ws, n, out, this.threads, this.isa, bf16 ? 1 : 0);
      this.flops += 2 * rows * cols * n;
      return out;
    } finally {
      addon.release(handle);
    }
  }

  async hold(a: Float32Array, rows: number, cols: number): Promise<DeviceMatrix> {
    const { addon } = this;
    // Shared memory (a kernel workspace) is read in place: DeviceMatrix's contract is that
    // the caller does not write what it holds until dispose.
    const handle = a.buffer instanceof SharedArrayBuffer ? addon.holdView(a, rows, cols) : addon.hold(a, rows, cols);
    return this.held(handle, rows, cols);
  }

  /** Row band [r0, r1) of g's lower triangle (columns [0, r1)) or, when `upper`, of its upper
   *  triangle (columns [r0, dim)), g dim × dim float64, held as float32 with zeros off the
   *  triangle — converted in the module straight into the held copy. */
  holdTriangleBand(g: Float64Array, dim: number, r0: number, r1: number, upper: boolean): DeviceMatrix {
    const handle = this.addon.holdTriangleBand(g, dim, r0, r1, upper ? 1 : 0, this.threads);
    return this.held(handle, r1 - r0, upper ? dim - r0 : r1);
  }

  /** tr(bᵀ·H·b) for b (dim × n) and H = T + Tᵀ + diag(w), T the strictly lower triangle of
   *  g (dim × dim, float64) held as bf16 in row bands [bounds[k], bounds[k + 1]) (bounds from 0
   *  to dim): b rounded to bf16 too, products summed in float32, the rest in float64 (only
   *  where `bf16`; the output-error measure of loftq/heldMetric.ts). */
  holdBf16Measure(g: Float64Array, dim: number, bounds: readonly number[], w: Float64Array): HeldMeasure {
    const { addon } = this;
    const bands: object[] = [];
    try {
      for (let k = 0; k + 1 < bounds.length; k++)
        bands.push(addon.holdStrictLowerBandBf16(g, dim, bounds[k], bounds[k + 1], this.threads));
    } catch (e) {
      for (const band of bands) addon.release(band);
      throw e;
    }
    let live = true;
    return {
      measure: (b, n) => {
        if (!live) throw new Error('native backend: measure with a disposed metric');
        return addon.measureBf16(bands, b, n, w, this.threads);
      },
      dispose: () => {
        if (live) for (const band of bands) addon.release(band);
        live = false;
      },
    };
  }

  /** The products of a module handle (rows × cols), released at dispose. */
  private held(handle: object, rows: number, cols: number): DeviceMatrix {
    const { addon } = this;
    let live: object | undefined = handle;
    this.largestTensorBytes = Math.max(this.largestTensorBytes, rows * cols * 4);
    return {
      rows,
      cols,
      times: async (b: Float32Array, n: number, into?: Float32Array): Promise<Float32Array> => {
        if (!live) throw new Error('native backend: product with a disposed matrix');
        if (b.length !== cols * n) throw new Error(`matmul shape mismatch: ${rows}x${cols} · ${b.length / n}x${n}`);
        const out = into ?? new Float32Array(rows * n);
        this.largestTensorBytes = Math.max(this.largestTensorBytes, out.length * 4);
        addon.times(live, b, n, out, this.threads, this.isa);
        this.flops += 2 * rows * cols * n;
        return out;
      },
      dispose() {
        if (live) addon.release(live);
        live = undefined;
      },
    };
  }
}

/** A native backend on `threads` threads (products and kernels), or the usage error saying
 *  why there is none. */
export function createNativeBackend(threads: number, isa?: NativeIsa): NativeBackend {
  const { module, problem } = nativeAddon();
  if (!module) throw new UsageError(`backend 'native' is not available: ${problem}`);
  return new NativeBackend(module, { threads, isa });
}
