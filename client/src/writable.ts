// Whether a run could write where it is about to be asked to (issue 26 §3): checked before the
// questions, so an unwritable folder is said first and another one offered, instead of a raw
// "EPERM … mkdir" after the run started. A folder that does not exist yet counts by its nearest
// existing ancestor, which the run would create it in.
import { constants, promises as fsp } from 'node:fs';
import * as path from 'node:path';

export type Access = (p: string, mode: number) => Promise<void>;

/** Why `dir` cannot be written (an errno code such as EACCES, EROFS, ENOTDIR), or undefined when it can. */
export async function unwritable(dir: string, access: Access = fsp.access): Promise<string | undefined> {
  let at = path.resolve(dir);
  for (;;) {
    try {
      await access(at, constants.F_OK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') return code ?? 'EACCES';
      const parent = path.dirname(at);
      if (parent === at) return 'ENOENT';
      at = parent;
      continue;
    }
    try {
      await access(at, constants.W_OK | constants.X_OK);
      return undefined;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code ?? 'EACCES';
    }
  }
}

/** A failed run's message names a permission or read-only problem: another folder, not a rerun, helps. */
export function isWriteRefusal(message: string): boolean {
  return /\b(EACCES|EPERM|EROFS)\b|permission denied|read-only file system/i.test(message);
}

/** The words for a refusal code. */
export function refusalText(code: string): string {
  switch (code) {
    case 'EROFS':
      return 'is on a read-only file system';
    case 'ENOTDIR':
      return 'lies under a file, not a folder';
    case 'EACCES':
    case 'EPERM':
      return 'is not writable (permission denied)';
    default:
      return `cannot be written (${code})`;
  }
}
