// One run per output folder: a lock file created exclusively, holding the owner's pid.
// A lock whose process is gone (killed run) is stale and taken over.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { InputError } from './errors';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function lockOutput(out: string, name = '.loftq.lock'): Promise<() => Promise<void>> {
  const file = path.join(out, name);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await fsp.writeFile(file, JSON.stringify({ pid: process.pid, started: new Date().toISOString() }), { flag: 'wx' });
      return async () => { await fsp.rm(file, { force: true }); };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let owner: { pid?: number } = {};
      try { owner = JSON.parse(await fsp.readFile(file, 'utf8')); } catch { /* half-written: stale */ }
      if (owner.pid && owner.pid !== process.pid && alive(owner.pid)) {
        throw new InputError(out, `another loftq run (pid ${owner.pid}) is writing to this folder; wait for it or cancel it`);
      }
      if (owner.pid === process.pid) throw new InputError(out, 'a run in this process is already writing to this folder');
      await fsp.rm(file, { force: true });
    }
  }
  throw new InputError(out, 'could not lock the output folder');
}
