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
