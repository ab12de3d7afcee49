// One safetensors file: its validated header, and one tensor's bytes at a time with
// positioned reads. Never reads more of a file than the header or the tensor asked for.

import { promises as fsp } from 'node:fs';
import { CheckpointError } from './errors';
import { MAX_HEADER_BYTES, parseHeader, parseHeaderLength, SafetensorsHeader, TensorInfo } from './header';
import { toFloat32, FLOAT_DTYPES, DTYPE_SIZE } from './dtype';
import { hasPickleMagic, isPickleName, pickleMessage } from './pickle';

function ioError(file: string, e: unknown, what: string, tensor?: string): CheckpointError {
  if (e instanceof CheckpointError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return new CheckpointError('not-found', file, 'does not exist', tensor);
  return new CheckpointError(
    code === 'EACCES' || code === 'EPERM' ? 'unreadable' : 'io',
    file,
    `${what} failed (${code ?? (e instanceof Error ? e.message.split('\n')[0] : String(e))})`,
    tensor,
  );
}

export async function statOrThrow(p: string) {
  try {
    return await fsp.stat(p);
  } catch (e) {
    throw ioError(p, e, 'stat');
  }
}

async function openForRead(file: string, tensor?: string): Promise<fsp.FileHandle> {
  try {
    return await fsp.open(file, 'r');
  } catch (e) {
    throw ioError(file, e, 'opening', tensor);
  }
}

/** Reads exactly out.byteLength bytes at `position`, or throws naming the file. */
async function readExactly(
  fh: fsp.FileHandle,
  file: string,
  out: Uint8Array,
  position: number,
  tensor?: string,
): Promise<void> {
  let done = 0;
  while (done < out.byteLength) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await fh.read(out, done, out.byteLength - done, position + done));
    } catch (e) {
      throw ioError(file, e, 'reading', tensor);
    }
    if (bytesRead === 0)
      throw new CheckpointError(
        'io',
        file,
        `file ended while reading (${done} of ${out.byteLength} bytes at ${position})`,
        tensor,
      );
    done += bytesRead;
  }
}

function looksLikeSafetensors(first: Uint8Array, size: number): boolean {
  if (size < 9) return false;
  const n = new DataView(first.buffer, first.byteOffset, 8).getBigUint64(0, true);
  return n > 0n && n <= BigInt(Math.min(MAX_HEADER_BYTES, size - 8)) && first[8] === 0x7b;
}

/** Reads and validates one safetensors file's header. */
export async function readHeader(file: string): Promise<SafetensorsHeader> {
  if (isPickleName(file)) throw pickleMessage(file);
  const st = await statOrThrow(file);
  if (!st.isFile()) throw new CheckpointError('not-safetensors', file, 'is not a file');
  const fh = await openForRead(file);
  try {
    const first = new Uint8Array(9);
    await readExactly(fh, file, first.subarray(0, Math.min(9, st.size)), 0);
    // A safetensors header length can begin with the same two bytes as a pickle (e.g. a
    // 640-byte header is 80 02 00 …), so the magic only counts when the file does not
    // also look like safetensors: a sane length followed by '{'.
    if (hasPickleMagic(first) && !looksLikeSafetensors(first, st.size)) throw pickleMessage(file);
    // Bounded by both 100 MB and the file's real size before anything is allocated.
    const n = parseHeaderLength(file, first, st.size);
    const json = new Uint8Array(n);
    await readExactly(fh, file, json, 8);
    return parseHeader(file, json, n, st.size);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Reusable buffers to read into, by name (base/scratchBuffers.ts's ScratchBuffers is one):
 *  what they return stays valid until the next call with the same name. */
export interface ReadBuffers {
  u8(name: string, length: number): Uint8Array;
  f32(name: string, length: number): Float32Array;
}

/** Reads one tensor's raw bytes with a positioned read (into `into`'s 'read.bytes' when given). */
export async function readTensorBytes(t: TensorInfo, into?: ReadBuffers): Promise<Uint8Array> {
  let out: Uint8Array;
  try {
    out = into ? into.u8('read.bytes', t.byteLength) : new Uint8Array(t.byteLength);
  } catch {
    throw new CheckpointError('too-large', t.file, `${t.byteLength} bytes do not fit in one buffer in memory`, t.name);
  }
  const fh = await openForRead(t.file, t.name);
  try {
    await readExactly(fh, t.file, out, t.start, t.name);
  } finally {
    await fh.close().catch(() => undefined);
  }
  return out;
}

function checkFloatTensor(t: TensorInfo): void {
  if (!FLOAT_DTYPES.has(t.dtype))
    throw new CheckpointError('dtype', t.file, `dtype ${t.dtype} is not a float type the engine computes on`, t.name);
}

/** Reads a float tensor (F32/F16/BF16) as float32 (into `into`'s buffers 'read.bytes' and
 *  'read.f32' when given: the result is then valid until their next use). */
export async function readTensorF32(t: TensorInfo, into?: ReadBuffers): Promise<Float32Array> {
  checkFloatTensor(t);
  const bytes = await readTensorBytes(t, into);
  try {
    return toFloat32(t.dtype, bytes, into?.f32('read.f32', t.parameters));
  } catch (e) {
    if (e instanceof RangeError)
      throw new CheckpointError(
        'too-large',
        t.file,
        `${t.parameters} values do not fit in one float32 buffer in memory`,
        t.name,
      );
    throw e;
  }
}

/** Rows near each other are read together when fewer than this many lie between them. */
const ROW_GAP = 8;

/** Some rows of a 2-D float tensor (rows × width) as float32, keyed by row index: each run of
 *  nearby rows one positioned read — an embedding lookup reads the rows its tokens use, not
 *  the whole table (262 MB of float32 for a 32000 × 2048 one). */
export async function readTensorRowsF32(
  t: TensorInfo,
  width: number,
  rows: readonly number[],
): Promise<Map<number, Float32Array>> {
  checkFloatTensor(t);
  const rowBytes = width * DTYPE_SIZE[t.dtype];
  const wanted = [...new Set(rows)].sort((a, b) => a - b);
  const tensorRows = t.parameters / width;
  if (wanted.length && (!Number.isInteger(wanted[0]) || wanted[0] < 0 || wanted[wanted.length - 1] >= tensorRows))
    throw new RangeError(`${t.name}: rows ${wanted[0]}..${wanted[wanted.length - 1]} outside 0..${tensorRows - 1}`);
  const out = new Map<number, Float32Array>();
  if (!wanted.length) return out;
  const fh = await openForRead(t.file, t.name);
  try {
    for (let i = 0; i < wanted.length;) {
      let j = i;
      while (j + 1 < wanted.length && wanted[j + 1] - wanted[j] <= ROW_GAP) j++;
      const first = wanted[i],
        count = wanted[j] - first + 1;
      const bytes = new Uint8Array(count * rowBytes);
      await readExactly(fh, t.file, bytes, t.start + first * rowBytes, t.name);
      const values = toFloat32(t.dtype, bytes);
      for (; i <= j; i++)
        out.set(wanted[i], values.subarray((wanted[i] - first) * width, (wanted[i] - first + 1) * width));
    }
  } finally {
    await fh.close().catch(() => undefined);
  }
  return out;
}
