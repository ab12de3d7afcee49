// Buffers a thread's jobs reuse, by name. Fresh memory costs a page fault per 4 KiB — on
// this project's machine reading a BF16 matrix into new buffers and copying its results out
// into new arrays spent more time faulting pages than computing — so a job's buffers grow to
// the largest matrix and stay for the next job. What a getter returns is valid until the
// next call with the same name; one job uses a set at a time (withScratchBuffers).

export class ScratchBuffers {
  private readonly buffers = new Map<string, ArrayBuffer>();

  private raw(name: string, bytes: number): ArrayBuffer {
    let b = this.buffers.get(name);
    if (!b || b.byteLength < bytes) this.buffers.set(name, (b = new ArrayBuffer(bytes)));
    return b;
  }
  u8(name: string, length: number): Uint8Array {
    return new Uint8Array(this.raw(name, length), 0, length);
  }
  u16(name: string, length: number): Uint16Array {
    return new Uint16Array(this.raw(name, 2 * length), 0, length);
  }
  f32(name: string, length: number): Float32Array {
    return new Float32Array(this.raw(name, 4 * length), 0, length);
  }
  f64(name: string, length: number): Float64Array {
    return new Float64Array(this.raw(name, 8 * length), 0, length);
  }
  /** Gives the pages of every buffer back to the system, the buffers kept for reuse: their
   *  contents are dead (they read as zeros) and their next use faults them in again.
   *  `discard` is kernels/native.ts's discardPages (base/ imports no kernels); returns the
   *  bytes handed to it. */
  discardAll(discard: (bytes: Uint8Array) => boolean): number {
    let bytes = 0;
    for (const b of this.buffers.values()) if (discard(new Uint8Array(b))) bytes += b.byteLength;
    return bytes;
  }
}

/** Every idle set's pages back to the system (ScratchBuffers.discardAll): between the phases of
 *  a run whose working sets do not fit its memory budget together. */
export function discardIdleScratchBuffers(discard: (bytes: Uint8Array) => boolean): number {
  return idle.reduce((a, b) => a + b.discardAll(discard), 0);
}

const idle: ScratchBuffers[] = [];

/** Runs f with a set of buffers of its own, kept for this thread's later jobs (at most two
 *  sets idle: a job and the one waiting to start). */
export async function withScratchBuffers<T>(f: (buffers: ScratchBuffers) => Promise<T>): Promise<T> {
  const buffers = idle.pop() ?? new ScratchBuffers();
  try {
    return await f(buffers);
  } finally {
    if (idle.length < 2) idle.push(buffers);
  }
}
