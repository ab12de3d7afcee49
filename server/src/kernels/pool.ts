// Kernels on several threads at once. A workspace's memory is shared, so one kernel call can
// be split into parts of a range: the first part runs on this thread, the others on helper
// threads running the same kernels on the same memory (the split backend's GEMM workers,
// idle while the LoftQ loop's element-wise passes run). Parts never overlap in what they
// write, and the caller waits for all of them before reading.

import type { KernelExports, WasmMemory, Workspace } from './kernels';

type Kernel = (...args: number[]) => number | void;
export type KernelName = {
  [K in keyof KernelExports]: KernelExports[K] extends Kernel ? K : never;
}[keyof KernelExports];

export interface KernelPool {
  /** Helper threads (the calling thread works too). */
  readonly helpers: number;
  /** Runs kernel `name` on helper `i` (0 ≤ i < helpers) over `memory`; its return value (0 for none). */
  call(i: number, memory: WasmMemory, name: KernelName, args: number[]): Promise<number>;
}

/** [0, total) in `parts` near-equal ranges whose inner bounds are multiples of `align`. */
export function ranges(total: number, parts: number, align: number): [number, number][] {
  const bounds = Array.from({ length: parts + 1 }, (_, i) =>
    i === parts ? total : Math.min(total, Math.round((total * i) / parts / align) * align),
  );
  return bounds.slice(0, parts).map((b, i) => [b, bounds[i + 1]] as [number, number]);
}

/** Runs a kernel over [0, total) in parts, part 0 on this thread and the others on the pool's
 *  helpers; the sum of the parts' return values. `argsFor(first, last, part)` gives a part's
 *  arguments. Without a pool (or for a range too short to share) it is one plain call. */
export async function inParts(
  ws: Workspace,
  pool: KernelPool | undefined,
  total: number,
  align: number,
  name: KernelName,
  argsFor: (first: number, last: number, part: number) => number[],
): Promise<number> {
  const parts = ranges(total, 1 + (pool?.helpers ?? 0), align).filter(([a, b]) => b > a);
  const run = ws.k[name] as Kernel;
  const remote = parts.slice(1).map(([a, b], i) =>
    pool!.call(i, ws.memory, name, argsFor(a, b, i + 1)).then(
      (v) => ({ v }),
      (e: Error) => ({ e }),
    ),
  );
  let local = 0;
  let failure: unknown;
  try {
    if (parts.length) local = (run(...argsFor(parts[0][0], parts[0][1], 0)) as number | undefined) ?? 0;
  } catch (e) {
    failure = e;
  }
  // Every part settles before anything is read or thrown: no helper still writes afterwards.
  let sum = local;
  for (const r of await Promise.all(remote)) {
    if ('e' in r) failure ??= r.e;
    else sum += r.v;
  }
  if (failure) throw failure;
  return sum;
}

/** dst ← srcᵀ for src rows × cols in `ws`, in bands of 32 rows over the pool's threads (one
 *  call without a pool: the band kernel, which has a native version, over every row). */
export function transposeInParts(
  ws: Workspace,
  pool: KernelPool | undefined,
  src: number,
  rows: number,
  cols: number,
  dst: number,
): Promise<number> {
  return inParts(ws, pool, rows, 32, 'transposeBand', (a, b) => [src, rows, cols, dst, a, b]);
}
