// Builds the native backend (server/native/*.c) into dist/loftq_native.node with
// the system C compiler and Node's own headers — no node-gyp, no download. Optional: where
// there is no compiler or no headers (or on Windows), one line says so and the engine runs
// on wasm. Node-API is ABI-stable, so one build serves every Node and Electron of this
// platform; it is remade only when the source is newer.
import { spawnSync } from 'node:child_process';
import { existsSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

const SOURCES = ['server/native/loftq_native.c', 'server/native/statistics.c', 'server/native/bf16.c'];
const HEADERS = ['server/native/native.h'];

function nodeHeaders() {
  const candidates = [
    process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, 'include', 'node'),
    join(dirname(process.execPath), '..', 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ].filter(Boolean);
  return candidates.find((d) => existsSync(join(d, 'node_api.h')));
}

/** Returns a one-line note when the module was not built (undefined when it is in place). */
export function buildNative(out = 'dist/loftq_native.node') {
  if (process.env.LOFTQ_NATIVE === '0') {
    rmSync(out, { force: true });
    return 'native backend not built (LOFTQ_NATIVE=0)';
  }
  if (process.platform === 'win32') return 'native backend not built on Windows: the wasm backend runs instead';
  const newest = Math.max(...[...SOURCES, ...HEADERS].map((f) => statSync(f).mtimeMs));
  if (existsSync(out) && statSync(out).mtimeMs >= newest) return undefined;
  const headers = nodeHeaders();
  if (!headers) return "native backend not built: Node's headers (node_api.h) not found; the wasm backend runs instead";
  const cc = process.env.CC || 'cc';
  const tmp = `${out}.tmp-${process.pid}`;
  const flags = [
    '-O3',
    '-std=gnu11',
    '-shared',
    '-fPIC',
    '-pthread',
    '-Wall',
    '-Wextra',
    '-ffp-contract=off',
    `-I${headers}`,
  ];
  // macOS resolves the napi_* symbols from the host process at load time.
  if (process.platform === 'darwin') flags.push('-undefined', 'dynamic_lookup');
  const r = spawnSync(cc, [...flags, ...SOURCES, '-o', tmp], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    rmSync(tmp, { force: true });
    rmSync(out, { force: true });
    const why = r.error ? r.error.message : (r.stderr.trim().split('\n')[0] ?? `exit ${r.status}`);
    return `native backend not built (${cc}: ${why}); the wasm backend runs instead`;
  }
  renameSync(tmp, out);
  return undefined;
}
