// One run per output folder: a lock file holding the owner's pid. The file appears whole
// or not at all: the pid is written to a temp file first, which is then hard-linked to the
// lock name (link(2) fails if the name exists). A lock that exists therefore always names
// its owner; there is no moment at which another run could see it empty and call it
// stale. A lock whose process is gone (killed run) is stale and taken over.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { tempPathFor, writeError } from '../checkpoint';
import { InputError } from './errors';

/** Whether a process exists (EPERM: it does, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Points between the steps of taking the lock, for tests that stall a writer there. */
export type LockStep = 'pid-written' | 'stale-seen';

interface Owner {
  pid?: number;
  ino?: number;
}

async function readOwner(file: string): Promise<Owner | undefined> {
  const fh = await fsp.open(file, 'r').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (!fh) return undefined;
  try {
    const { ino } = await fh.stat();
    const text = await fh.readFile('utf8');
    try {
      const pid = (JSON.parse(text) as { pid?: unknown }).pid;
      return { pid: Number.isSafeInteger(pid) ? (pid as number) : undefined, ino };
    } catch {
      return { ino }; // not written by this protocol (an older version's crash): stale
    }
  } finally {
    await fh.close();
  }
}

/** Removes a stale lock only if it is still the file judged stale: it is first moved
 *  aside (rename is atomic), and put back if a live run had replaced it meanwhile. */
async function retireStale(file: string, judged: Owner): Promise<void> {
  const aside = tempPathFor(file);
  try {
    await fsp.rename(file, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // someone else retired it
    throw e;
  }
  const moved = await fsp.stat(aside).catch(() => undefined);
  if (moved && moved.ino !== judged.ino) await fsp.link(aside, file).catch(() => undefined);
  await fsp.rm(aside, { force: true });
}

export async function lockOutput(
  out: string,
  name = '.loftq.lock',
  pause?: (step: LockStep) => Promise<void>,
): Promise<() => Promise<void>> {
  const file = path.join(out, name);
  const temp = tempPathFor(file);
  try {
    await fsp.writeFile(temp, JSON.stringify({ pid: process.pid, started: new Date().toISOString() }), { flag: 'wx' });
  } catch (e) {
    // A full disk creates the temp file and fails its write: nothing may stay behind, and the
    // message is one line naming the file (it was Node's raw "ENOSPC: …, write").
    await fsp.rm(temp, { force: true }).catch(() => undefined);
    throw writeError(file, e);
  }
  try {
    await pause?.('pid-written');
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await fsp.link(temp, file);
        return async () => {
          await fsp.rm(file, { force: true });
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const owner = await readOwner(file);
      if (!owner) continue; // released meanwhile: try again
      if (owner.pid === process.pid) {
        throw new InputError(out, 'a run in this process is already writing to this folder');
      }
      if (owner.pid && processAlive(owner.pid)) {
        const why = `another loftq run (pid ${owner.pid}) is writing to this folder; wait for it or cancel it`;
        throw new InputError(out, why);
      }
      await pause?.('stale-seen');
      await retireStale(file, owner);
    }
    throw new InputError(out, 'could not lock the output folder: other runs keep taking it');
  } finally {
    await fsp.rm(temp, { force: true }).catch(() => undefined);
  }
}

/** Removes the temp files (`.<name>.<pid>.<hex>.tmp`, as the writers name them) in `dir` whose
 *  writer is gone: a process killed with SIGKILL cannot remove its own. Live writers' stay. */
export async function removeDeadWritersTemps(dir: string): Promise<void> {
  const entries = await fsp.readdir(dir).catch(() => [] as string[]);
  await Promise.all(
    entries.map(async (e) => {
      const m = /^\..+\.(\d+)\.[0-9a-f]+\.tmp$/.exec(e);
      if (m && Number(m[1]) !== process.pid && !processAlive(Number(m[1])))
        await fsp.rm(path.join(dir, e), { force: true });
    }),
  );
}
