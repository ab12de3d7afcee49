// Files beside a checkpoint (config.json, tokenizer files…) are as hostile as its shards: a
// symlink `tokenizer.json → /etc/passwd` would be copied into the output, a FIFO named
// config.json would block a read forever, and a directory would fail with a bare EISDIR. So
// the shard rules apply: a regular file, inside the checkpoint folder after resolving links,
// capped in size. The type is checked before the file is opened, opened non-blocking (a FIFO
// swapped in after the check cannot block), checked again on the open handle, and read with
// bounded positioned reads. Every refusal is one CheckpointError line naming the file.

import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { CheckpointError } from './errors';

/** Large tokenizer.json files are tens of MB; nothing legitimate beside a checkpoint is near this. */
export const MAX_SIDE_FILE_BYTES = 100_000_000;

function tooLarge(file: string, size: number, maxBytes: number): CheckpointError {
  return new CheckpointError('too-large', file, `is ${size} bytes, over the ${maxBytes}-byte limit`);
}

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/** The checked real path and size of `folder/name`, or undefined when there is no such file. */
export async function checkSideFile(
  folder: string,
  name: string,
  maxBytes = MAX_SIDE_FILE_BYTES,
): Promise<{ real: string; size: number } | undefined> {
  const p = path.join(folder, name);
  let real: string, folderReal: string;
  try {
    folderReal = await fsp.realpath(folder);
    real = await fsp.realpath(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new CheckpointError('unreadable', p, `cannot be resolved (${code ?? (e as Error).message})`);
  }
  const rel = path.relative(folderReal, real);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new CheckpointError('unsafe-path', p, `resolves to ${real}, outside the checkpoint folder`);
  }
  const st = await fsp.stat(real).catch((e: NodeJS.ErrnoException) => {
    throw new CheckpointError('unreadable', p, `cannot be read (${e.code ?? e.message})`);
  });
  if (!st.isFile()) throw new CheckpointError('unreadable', p, `is ${kindOf(st)}, not a file`);
  if (st.size > maxBytes) throw tooLarge(p, st.size, maxBytes);
  return { real, size: st.size };
}

/** The bytes of `folder/name` after checkSideFile's checks, or undefined when it does not exist. */
export async function readSideFile(
  folder: string,
  name: string,
  maxBytes = MAX_SIDE_FILE_BYTES,
): Promise<Uint8Array | undefined> {
  const checked = await checkSideFile(folder, name, maxBytes);
  return checked ? readRegularFile(checked.real, maxBytes, path.join(folder, name)) : undefined;
}

/**
 * The bytes of a regular file of at most `maxBytes`. Anything else is refused before it is opened
 * (a FIFO would hold a thread-pool thread forever: four of them stall every file operation of the
 * process); the open is non-blocking and re-checked on the handle, and reads are bounded.
 * A missing file rejects with the ENOENT error itself, so callers can treat "absent" apart.
 */
export async function readRegularFile(file: string, maxBytes: number, shown = file): Promise<Uint8Array> {
  const fail = (e: unknown): never => {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || e instanceof CheckpointError) throw e;
    const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new CheckpointError('unreadable', shown, `cannot be read (${why})`);
  };
  const check = (st: fs.Stats) => {
    if (!st.isFile()) throw new CheckpointError('unreadable', shown, `is ${kindOf(st)}, not a file`);
    if (st.size > maxBytes) throw tooLarge(shown, st.size, maxBytes);
  };
  check(await fsp.stat(file).catch(fail));
  const fh = await fsp.open(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK).catch(fail);
  try {
    const st = await fh.stat().catch(fail);
    check(st);
    const buf = new Uint8Array(st.size);
    let at = 0;
    while (at < st.size) {
      const { bytesRead } = await fh.read(buf, at, st.size - at, at).catch(fail);
      if (bytesRead === 0) break;
      at += bytesRead;
    }
    return at === st.size ? buf : buf.subarray(0, at);
  } finally {
    await fh.close().catch(() => undefined);
  }
}
