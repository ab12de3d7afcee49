// `loftq/quantize` reads and writes the paths a client sends. A plan or a code action in a
// hostile workspace could name /home/user/.ssh or another project's folder, so runs from the
// language server stay inside the workspace folders — checked on real paths, so a symlink out
// of the workspace counts as outside — unless the client says the user confirmed the paths
// (QuantizeParams.confirmedOutsideWorkspace).

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, ResponseError } from 'vscode-languageserver/node';

/** The real path of `p`, or of its nearest existing ancestor joined with the rest
 *  (an output folder may not exist yet). */
async function realish(p: string): Promise<string> {
  const rest: string[] = [];
  let at = path.resolve(p);
  for (;;) {
    try {
      return path.join(await fsp.realpath(at), ...rest.reverse());
    } catch {
      const parent = path.dirname(at);
      if (parent === at) return path.resolve(p);
      rest.push(path.basename(at));
      at = parent;
    }
  }
}

function inside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The first of `paths` outside every workspace folder in `roots` (all of them when none is open), or undefined. */
export async function firstOutsideWorkspace(paths: string[], roots: string[]): Promise<string | undefined> {
  const realRoots = await Promise.all(roots.map(realish));
  for (const p of paths) {
    const real = await realish(p);
    if (!realRoots.some((r) => inside(r, real))) return p;
  }
  return undefined;
}

/** Refuses a request (InvalidParams, `data.outsideWorkspace`) unless every path lies inside the workspace folders
 *  or the user confirmed; `what` names the work in the message ("a run", "an analysis", "an evaluation"). */
export async function requireInsideWorkspace(
  paths: (string | undefined)[],
  roots: string[],
  confirmed: boolean | undefined,
  what: string,
): Promise<void> {
  if (confirmed === true) return;
  const outside = await firstOutsideWorkspace(
    paths.filter((f): f is string => typeof f === 'string'),
    roots,
  );
  if (!outside) return;
  const why = `${outside} is outside the workspace folders; ${what} there needs the user's confirmation`;
  const data = { outsideWorkspace: outside };
  throw new ResponseError(ErrorCodes.InvalidParams, `${why} (confirmedOutsideWorkspace)`, data);
}
