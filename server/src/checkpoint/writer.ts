// Streaming safetensors writer: header first (computed from the declared tensors), then
// each tensor in order, into a temp file in the target's folder that is renamed into
// place only on commit. Any I/O failure (disk full, permissions) or abort() removes the
// temp file before the error reaches the caller, so no partial output is ever left.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { DTYPE_SIZE, DType, isDType } from './dtype';
import { brief, CheckpointError, writeError } from './errors';

export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
}

export function specByteLength(s: TensorSpec): number {
  return s.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[s.dtype];
}

/** Refuses specs the reader would refuse, so we never write a file we cannot read back. */
export function checkSpecs(target: string, specs: TensorSpec[]): void {
  const seen = new Set<string>();
  for (const s of specs) {
    if (!Array.isArray(s.shape))
      throw new CheckpointError('shape', target, `shape ${brief(s.shape)} is not an array`, s.name);
    if (typeof s.name !== 'string' || s.name === '__metadata__')
      throw new CheckpointError('tensor-entry', target, `${brief(s.name)} cannot be a tensor name`);
    if (seen.has(s.name)) throw new CheckpointError('duplicate-key', target, 'is declared twice', s.name);
    seen.add(s.name);
    if (!isDType(s.dtype)) throw new CheckpointError('dtype', target, `unknown dtype ${brief(s.dtype)}`, s.name);
    let n = 1;
    for (const d of s.shape) {
      n *= d;
      if (!Number.isSafeInteger(d) || d < 0 || !Number.isSafeInteger(n * DTYPE_SIZE[s.dtype])) {
        throw new CheckpointError(
          'shape',
          target,
          `shape ${brief(s.shape)} is not a list of non-negative integers with a safe size`,
          s.name,
        );
      }
    }
  }
}

/** An object for JSON.stringify whose keys are exactly these, in this order: names such as
 *  `__proto__` or `toString` are ordinary keys here (plain assignment would drop or
 *  collide with them). */
export function jsonObject(entries: Iterable<[string, unknown]>): Record<string, unknown> {
  const o: Record<string, unknown> = Object.create(null);
  for (const [k, v] of entries) Object.defineProperty(o, k, { value: v, enumerable: true });
  return o;
}

export function encodeHeader(specs: TensorSpec[], metadata?: Record<string, string>): Uint8Array {
  checkSpecs('(header)', specs);
  const entries: [string, unknown][] = [];
  if (metadata && Object.keys(metadata).length) entries.push(['__metadata__', jsonObject(Object.entries(metadata))]);
  let offset = 0;
  for (const s of specs) {
    const bytes = specByteLength(s);
    entries.push([s.name, { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + bytes] }]);
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(jsonObject(entries)), 'utf8');
  // Pad with spaces so tensor data starts 8-byte aligned, as the reference writer does.
  const padded = json.length + ((8 - ((json.length + 8) % 8)) % 8);
  const out = new Uint8Array(8 + padded).fill(0x20);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

export function tempPathFor(target: string): string {
  return path.join(
    path.dirname(target),
    `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  );
}

/** fsync a folder so a rename inside it survives a crash; best effort (not every OS allows it). */
export async function syncFolder(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r').catch(() => undefined);
  if (!fh) return;
  await fh.sync().catch(() => undefined);
  await fh.close().catch(() => undefined);
}

/** `mkdir -p`, one level at a time. Node's recursive mkdir reports a read-only file system
 *  as ENOENT ("does not exist") and loops forever under /proc; here each level's own error
 *  (EROFS, EACCES, …) reaches the caller. */
export async function makeFolders(dir: string): Promise<void> {
  const missing: string[] = [];
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    const st = await fsp.stat(d).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
    if (st && !st.isDirectory()) throw Object.assign(new Error(`${d} is not a folder`), { code: 'ENOTDIR' });
    if (st || path.dirname(d) === d) break;
    missing.push(d);
  }
  for (const d of missing.reverse()) {
    await fsp.mkdir(d).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }
}

export class SafetensorsWriter {
  private next = 0;
  private position = 0;
  private state: 'open' | 'finished' | 'done' = 'open';

  private constructor(
    readonly target: string,
    readonly temp: string,
    private readonly fh: fsp.FileHandle,
    private readonly specs: TensorSpec[],
  ) {}

  static async create(
    target: string,
    specs: TensorSpec[],
    metadata?: Record<string, string>,
  ): Promise<SafetensorsWriter> {
    checkSpecs(target, specs);
    const header = encodeHeader(specs, metadata);
    const temp = tempPathFor(target);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(temp, 'wx', 0o644);
    } catch (e) {
      await fsp.rm(temp, { force: true }).catch(() => undefined);
      throw writeError(target, e);
    }
    const w = new SafetensorsWriter(target, temp, fh, specs);
    await w.put(header);
    return w;
  }

  /** Runs an I/O step; on failure removes the temp file and throws one clear line. */
  private async io<T>(step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (e) {
      await this.abort();
      throw writeError(this.target, e);
    }
  }

  private async put(bytes: Uint8Array): Promise<void> {
    await this.io(async () => {
      let done = 0;
      while (done < bytes.byteLength) {
        const { bytesWritten } = await this.fh.write(bytes, done, bytes.byteLength - done, this.position);
        done += bytesWritten;
        this.position += bytesWritten;
      }
    });
  }

  /** Writes the next tensor's bytes; tensors must come in the declared order. */
  async write(name: string, bytes: Uint8Array): Promise<void> {
    if (this.state !== 'open') throw new Error(`writer for ${this.target}: write after commit or abort`);
    const s = this.specs[this.next];
    if (!s || s.name !== name)
      throw new Error(`writer for ${this.target}: expected tensor '${s?.name}', got '${name}'`);
    if (bytes.byteLength !== specByteLength(s))
      throw new Error(
        `writer for ${this.target}: tensor '${name}' has ${bytes.byteLength} bytes, expected ${specByteLength(s)}`,
      );
    await this.put(bytes);
    this.next++;
  }

  /** Flushes and closes the temp file without renaming it (for writers that commit
   *  several files together). */
  async finish(): Promise<void> {
    if (this.state !== 'open') throw new Error(`writer for ${this.target}: finish after commit or abort`);
    if (this.next !== this.specs.length) {
      await this.abort();
      throw new Error(`writer for ${this.target}: ${this.specs.length - this.next} tensors not written`);
    }
    await this.io(async () => {
      await this.fh.sync();
      await this.fh.close();
    });
    this.state = 'finished';
  }

  /** Renames a finished temp file into place. */
  async rename(): Promise<void> {
    if (this.state !== 'finished') throw new Error(`writer for ${this.target}: rename before finish`);
    await this.io(() => fsp.rename(this.temp, this.target));
    this.state = 'done';
  }

  /** Flushes, closes and renames into place. */
  async commit(): Promise<void> {
    await this.finish();
    await this.rename();
    await syncFolder(path.dirname(this.target));
  }

  /** Removes the temp file; safe to call at any time and more than once. */
  async abort(): Promise<void> {
    if (this.state === 'done') return;
    if (this.state === 'open') await this.fh.close().catch(() => undefined);
    this.state = 'done';
    await fsp.rm(this.temp, { force: true }).catch(() => undefined);
  }
}

/** Writes a whole small file (JSON, text) atomically: temp file, fsync, rename. */
export async function writeFileAtomic(target: string, data: string | Uint8Array): Promise<void> {
  const temp = tempPathFor(target);
  try {
    const fh = await fsp.open(temp, 'wx', 0o644);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(temp, target);
  } catch (e) {
    await fsp.rm(temp, { force: true }).catch(() => undefined);
    throw writeError(target, e);
  }
  await syncFolder(path.dirname(target));
}
