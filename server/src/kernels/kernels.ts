// The WebAssembly kernels (server/wasm/kernels.ts) and the memory they work in. Each
// Workspace is its own instance with its own memory, so concurrent jobs in one thread never
// share buffers. Regions are carved by a bump pointer; a view is made on demand because
// growing the memory detaches older views. Workspaces are reused (withWorkspace): touching
// fresh pages for every matrix cost more than some of the kernels.

import { discardPages, nativeKernelsInUse, prefault, withNativeKernels } from './native';

declare const __LOFTQ_KERNELS__: string | undefined;

// The engine's tsconfig has no DOM lib; these are the few WebAssembly types it needs.
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
type WasmModule = object;
const { WebAssembly: wasm } = globalThis as unknown as {
  WebAssembly: {
    Module: new (bytes: Uint8Array) => WasmModule;
    Instance: new (m: WasmModule, imports: object) => { exports: unknown };
    Memory: new (d: { initial: number; maximum: number; shared: boolean }) => WasmMemory;
  };
};
/** wasm32's limit, in 64 KiB pages (esbuild.mjs compiles the kernels with this maximum). */
const MAX_PAGES = 65536;

export interface KernelExports {
  memory: WasmMemory;
  absMaxScales(x: number, n: number, blockSize: number, scales: number): void;
  assignCodes(
    x: number,
    n: number,
    blockSize: number,
    scales: number,
    table: number,
    tableLen: number,
    cells: number,
    codes: number,
    values: number,
  ): void;
  quantizeAbsMaxResidual(
    x: number,
    n: number,
    blockSize: number,
    scales: number,
    table: number,
    tableLen: number,
    cells: number,
    codes: number,
    values: number,
    w: number,
    residual: number,
  ): number;
  difference(a: number, b: number, out: number, n: number): number;
  sumSquares(x: number, n: number): number;
  lowRankStep(
    w: number,
    q: number,
    b: number,
    a: number,
    rows: number,
    cols: number,
    r: number,
    target: number,
    packed: number,
  ): number;
  transpose(src: number, rows: number, cols: number, dst: number): void;
  transposeBand(src: number, rows: number, cols: number, dst: number, first: number, last: number): void;
  roundToBf16(x: number, bits: number, n: number): void;
  orthonormalize(block: number, first: number, count: number, len: number, scratch: number): void;
  gram(block: number, count: number, len: number, out: number): void;
  dotBlock(
    a: number,
    pFirst: number,
    pCount: number,
    b: number,
    jFirst: number,
    jCount: number,
    len: number,
    out: number,
    symmetric: number,
  ): void;
  axpyBlock(
    a: number,
    pFirst: number,
    pCount: number,
    c: number,
    ldc: number,
    x: number,
    jFirst: number,
    jCount: number,
    len: number,
    alpha: number,
  ): void;
  columnsFromRows(src: number, len: number, k: number, block: number, first: number): void;
  rowsFromColumns(block: number, first: number, k: number, len: number, dst: number, ld: number, scales: number): void;
  symmetricEigen(a: number, n: number, d: number, e: number): void;
}

let compiled: WasmModule | undefined;
function kernelModule(): WasmModule {
  if (!compiled) {
    if (typeof __LOFTQ_KERNELS__ !== 'string')
      throw new Error('WebAssembly kernels missing: build with `node esbuild.mjs`');
    compiled = new wasm.Module(Buffer.from(__LOFTQ_KERNELS__, 'base64'));
  }
  return compiled;
}

const PAGE = 65536;

/** A matrix whose working set does not fit in one wasm32 memory. */
export class KernelMemoryError extends RangeError {
  override name = 'KernelMemoryError';
}

type TypedView = Float32Array | Float64Array | Uint8Array | Uint16Array;
interface ViewType<V extends TypedView> {
  new (buffer: ArrayBuffer, byteOffset: number, length: number): V;
  readonly BYTES_PER_ELEMENT: number;
}

/** `length` values of one type at byte offset `ptr` of a workspace's memory. */
export class Region<V extends TypedView> {
  constructor(
    private readonly ws: Workspace,
    private readonly type: ViewType<V>,
    readonly ptr: number,
    readonly length: number,
  ) {}
  view(): V {
    return new this.type(this.ws.memory.buffer, this.ptr, this.length);
  }
  get bytesPerElement(): number {
    return this.type.BYTES_PER_ELEMENT;
  }
}

export type F32Region = Region<Float32Array>;
export type F64Region = Region<Float64Array>;
export type U8Region = Region<Uint8Array>;
export type U16Region = Region<Uint16Array>;

/** The kernels on a given (shared) memory: a helper thread's view of a workspace. */
export function kernelsOn(memory: WasmMemory): KernelExports {
  return withNativeKernels(wasmKernelsOn(memory), memory);
}

/** The WebAssembly kernels on `memory`, whatever this thread uses (tests compare the two). */
export function wasmKernelsOn(memory: WasmMemory): KernelExports {
  return new wasm.Instance(kernelModule(), { env: { memory } }).exports as unknown as KernelExports;
}

export class Workspace {
  private kernels: KernelExports;
  private kernelsNative = false;
  /** Shared: helper threads (kernels/pool.ts) may run kernels on disjoint parts of it. */
  readonly memory: WasmMemory;
  /** The first page holds nothing of ours (the module's own statics would live there). */
  private top = PAGE;

  constructor() {
    this.memory = new wasm.Memory({ initial: 1, maximum: MAX_PAGES, shared: true });
    this.kernels = kernelsOn(this.memory);
    this.kernelsNative = nativeKernelsInUse();
  }

  /** The kernels on this memory (the native ones where this thread has switched to them
   *  since the workspace was made). */
  get k(): KernelExports {
    if (this.kernelsNative !== nativeKernelsInUse()) {
      this.kernels = kernelsOn(this.memory);
      this.kernelsNative = nativeKernelsInUse();
    }
    return this.kernels;
  }

  reset(): void {
    this.top = PAGE;
  }

  /** Grows the memory to hold `bytes` of regions and faults the new pages in the background
   *  (kernels/native.ts prefault): they are written soon, by this thread, at a page fault each
   *  otherwise. A size past wasm32's bound is left to the carve that needs it to refuse. */
  reserve(bytes: number): void {
    const have = this.memory.buffer.byteLength;
    const want = Math.ceil((PAGE + bytes) / PAGE) * PAGE;
    if (want <= have || want > MAX_PAGES * PAGE) return;
    try {
      this.memory.grow((want - have) / PAGE);
    } catch {
      return;
    }
    prefault(new Uint8Array(this.memory.buffer, have, want - have));
  }

  private carve(bytes: number): number {
    const ptr = this.top;
    const top = Math.ceil((ptr + bytes) / 16) * 16; // 16-byte alignment for SIMD loads
    const have = this.memory.buffer.byteLength;
    if (top > have) {
      try {
        this.memory.grow(Math.ceil((top - have) / PAGE));
      } catch {
        throw new KernelMemoryError(
          `too large for the kernel memory (${(top / 2 ** 30).toFixed(2)} GiB needed, WebAssembly allows 4 GiB)`,
        );
      }
    }
    this.top = top;
    return ptr;
  }

  private region<V extends TypedView>(type: ViewType<V>, length: number, from?: ArrayLike<number>): Region<V> {
    const r = new Region(this, type, this.carve(length * type.BYTES_PER_ELEMENT), length);
    if (from) r.view().set(from);
    return r;
  }

  f32(length: number, from?: Float32Array): F32Region {
    return this.region(Float32Array, length, from);
  }
  f64(length: number, from?: Float64Array): F64Region {
    return this.region(Float64Array, length, from);
  }
  u8(length: number): U8Region {
    return this.region(Uint8Array, length);
  }
  u16(length: number, from?: Uint16Array): U16Region {
    return this.region(Uint16Array, length, from);
  }

  /** `length` bytes, or 16-bit values, over a carved region whose contents are dead: its memory
   *  reused instead of carving more (a 7B matrix job measures its written files in LoftQ's spent
   *  regions). */
  reuseU8(r: Region<TypedView>, length: number): U8Region {
    return this.reuse(r, Uint8Array, length);
  }
  reuseU16(r: Region<TypedView>, length: number): U16Region {
    return this.reuse(r, Uint16Array, length);
  }
  private reuse<V extends TypedView>(r: Region<TypedView>, type: ViewType<V>, length: number): Region<V> {
    const bytes = length * type.BYTES_PER_ELEMENT;
    if (bytes > r.length * r.bytesPerElement) throw new RangeError(`reuse: ${bytes} bytes in a smaller region`);
    return new Region(this, type, r.ptr, length);
  }
}

const idle: Workspace[] = [];
/** Idle workspaces above this size, or beyond this many, are dropped rather than kept for
 *  the next job (a matrix job holds two: the matrix's and its SVD's). 2 GiB: a calibrated job's
 *  21 bytes a weight of a 7B model's 11008×4096 matrix (0.95 GB) stays — at 1 GiB the 32-bit
 *  size of a 45 M-weight matrix was dropped and faulted in anew for every job. */
const KEEP_BYTES = 2 ** 31;
const KEEP_COUNT = 2;

/** Every idle workspace's pages back to the system (kernels/native.ts discardPages), the
 *  workspaces kept: between the phases of a run whose working sets do not fit its memory budget
 *  together (engine/phaseMemory.ts). Returns the bytes given back (0 without the native module). */
export function discardIdleWorkspaces(): number {
  let bytes = 0;
  for (const ws of idle) if (discardPages(new Uint8Array(ws.memory.buffer))) bytes += ws.memory.buffer.byteLength;
  return bytes;
}

/** The workspace the next withWorkspace call takes, grown to `bytes` of regions with its fresh
 *  pages faulted in the background (Workspace.reserve): a job calls it before reading its
 *  matrix, so its first matrix does not stop at every new page. */
export function reserveWorkspace(bytes: number): void {
  let ws = idle.at(-1);
  if (!ws) idle.push((ws = new Workspace()));
  ws.reserve(bytes);
}

/** Runs f with a workspace of its own, reused from an earlier job when one is idle. Nothing
 *  f carved may be used after it returns (or its promise settles): copy results out. */
export function withWorkspace<T>(f: (ws: Workspace) => T): T {
  const ws = idle.pop() ?? new Workspace();
  const release = () => {
    ws.reset();
    if (ws.memory.buffer.byteLength <= KEEP_BYTES && idle.length < KEEP_COUNT) idle.push(ws);
  };
  let result: T;
  try {
    result = f(ws);
  } catch (e) {
    release();
    throw e;
  }
  if (result instanceof Promise) return result.finally(release) as T;
  release();
  return result;
}

/** The HQQ kernels (the end of server/wasm/kernels.ts), used by quant/hqq.ts. */
export interface HqqKernelExports {
  hqqScales(x: number, n: number, g: number, maxV: number, roundZero: number, sInv: number, zero: number): void;
  hqqCodes(x: number, n: number, g: number, maxV: number, sInv: number, zero: number, codes: number): void;
  hqqProximalSolve(
    x: number,
    n: number,
    g: number,
    maxV: number,
    sInv: number,
    zero: number,
    iters: number,
    invBetas: number,
    floors: number,
    exponent: number,
    minFloor: number,
    traj: number,
    errs: number,
    chunkGroups: number,
    scratch: number,
  ): void;
  hqqDequantize(codes: number, n: number, g: number, scale: number, zero: number, bf16: number, out: number): void;
}

/** A workspace's HQQ kernels (WebAssembly: the native module has none of its own). */
export function hqqKernels(ws: Workspace): HqqKernelExports {
  return ws.k as unknown as HqqKernelExports;
}
