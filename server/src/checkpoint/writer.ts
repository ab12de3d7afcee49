// Streaming safetensors writer: header first (computed from the declared tensors), then
// each tensor in order, into a temp file that is renamed into place only on commit.
// abort() (error, cancel) removes the temp file, so no partial output is ever left.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { DTYPE_SIZE, DType } from './dtype';

export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
}

export function encodeHeader(specs: TensorSpec[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const s of specs) {
    if (s.name === '__metadata__' || s.name in header) throw new Error(`duplicate or reserved tensor name '${s.name}'`);
    const bytes = s.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[s.dtype];
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // Pad to 8 bytes so tensor data is aligned, as the reference writer does.
  while ((Buffer.byteLength(json) + 8) % 8 !== 0) json += ' ';
  const body = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + body.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(body.length), true);
  out.set(body, 8);
  return out;
}

export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

export class SafetensorsWriter {
  private next = 0;
  private position = 0;
  private closed = false;

  private constructor(
    readonly target: string,
    readonly temp: string,
    private readonly fh: fsp.FileHandle,
    private readonly specs: TensorSpec[],
  ) {}

  static async create(target: string, specs: TensorSpec[], metadata?: Record<string, string>): Promise<SafetensorsWriter> {
    const temp = tempPathFor(target);
    const fh = await fsp.open(temp, 'wx');
    const w = new SafetensorsWriter(target, temp, fh, specs);
    try {
      await w.put(encodeHeader(specs, metadata));
    } catch (e) {
      await w.abort();
      throw e;
    }
    return w;
  }

  private async put(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.byteLength) {
      const { bytesWritten } = await this.fh.write(bytes, done, bytes.byteLength - done, this.position);
      done += bytesWritten;
      this.position += bytesWritten;
    }
  }

  /** Writes the next tensor's bytes; tensors must come in the declared order. */
  async write(name: string, bytes: Uint8Array): Promise<void> {
    const s = this.specs[this.next];
    if (!s || s.name !== name) throw new Error(`writer for ${this.target}: expected tensor '${s?.name}', got '${name}'`);
    const want = s.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[s.dtype];
    if (bytes.byteLength !== want) throw new Error(`writer for ${this.target}: tensor '${name}' has ${bytes.byteLength} bytes, expected ${want}`);
    await this.put(bytes);
    this.next++;
  }

  /** Flushes, closes and renames into place. */
  async commit(): Promise<void> {
    if (this.next !== this.specs.length) throw new Error(`writer for ${this.target}: ${this.specs.length - this.next} tensors not written`);
    await this.fh.sync();
    await this.fh.close();
    this.closed = true;
    await fsp.rename(this.temp, this.target);
  }

  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.fh.close().catch(() => undefined);
    }
    await fsp.rm(this.temp, { force: true });
  }
}

/** Writes a whole small file (JSON, text) atomically. */
export async function writeFileAtomic(target: string, data: string | Uint8Array): Promise<void> {
  const temp = tempPathFor(target);
  try {
    await fsp.writeFile(temp, data, { flag: 'wx' });
    await fsp.rename(temp, target);
  } catch (e) {
    await fsp.rm(temp, { force: true });
    throw e;
  }
}
