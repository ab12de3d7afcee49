// The CLI's default backend is `auto` (issue 28): native where dist/loftq_native.node was
// built, wasm where it was not — here "not" is the module turned off with LOFTQ_NATIVE=0, which
// the loader reads as it reads a missing file. The summary line and the report name the backend
// that ran, and the engine's name for `auto` without starting a backend (backendName) agrees.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { backendName, webgpuAdapterInfo } from '../../server/src/linalg/backend';
import { nativeAddon } from '../../server/src/linalg/nativeBackend';
import { RUN_SETTING_SPECS } from '../../server/src/registry';
import { requireNative } from './nativeRequired';
import { repoRoot, tempDir } from '../helpers';

const STORIES = path.join(repoRoot, 'examples', 'stories260k');

/** `loftq quantize` of one matrix with no --backend, in an environment of our choosing. */
function quantizeDefault(env: NodeJS.ProcessEnv, ...extra: string[]) {
  const out = tempDir('loftq-default-backend-');
  const r = spawnSync(
    process.execPath,
    [
      path.join(repoRoot, 'dist', 'cli.js'),
      'quantize',
      STORIES,
      '--out',
      out,
      '--iters',
      '1',
      '--workers',
      '1',
      '--target',
      '*.layers.0.self_attn.q_proj',
      ...extra,
    ],
    { encoding: 'utf8', env: { ...process.env, ...env } },
  );
  const reportFile = path.join(out, 'loftq-report.json');
  const report = fs.existsSync(reportFile) ? JSON.parse(fs.readFileSync(reportFile, 'utf8')) : undefined;
  return { ...r, report };
}

/** What `auto` must give where no tfjs-node and no hardware GPU adapter is installed (this
 *  project's machines); undefined elsewhere, where the test says so and checks the rest. */
async function plainMachine(): Promise<boolean> {
  const tfNode = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'].some((p) => {
    try {
      require.resolve(p);
      return true;
    } catch {
      return false;
    }
  });
  const adapter = await webgpuAdapterInfo();
  return !tfNode && !(adapter && !adapter.endsWith('(software)'));
}

test('the CLI defaults to auto', () => {
  assert.equal(RUN_SETTING_SPECS.backend.default, 'auto');
  const help = spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'cli.js'), 'quantize', '--help'], {
    encoding: 'utf8',
  });
  assert.match(help.stdout, /--backend [a-z|]+ \(default auto\)/);
});

test('default backend: native where the module is built, named in the summary line and the report', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  if (!(await plainMachine())) return t.skip('tfjs-node or a hardware GPU adapter is installed: auto may pick it');
  const r = quantizeDefault({});
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.report.backend, 'native');
  assert.match(r.stdout, /^1 matrices quantized on native \(--backend auto\) in [\d.]+ s$/m);
  assert.equal(await backendName('auto'), 'native');
});

test('default backend: wasm where the module is not there (LOFTQ_NATIVE=0); --backend native refused', async (t) => {
  if (!(await plainMachine())) return t.skip('tfjs-node or a hardware GPU adapter is installed: auto may pick it');
  const r = quantizeDefault({ LOFTQ_NATIVE: '0' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.report.backend, 'wasm');
  assert.match(r.stdout, /^1 matrices quantized on wasm \(--backend auto\) in [\d.]+ s$/m);
  // Named explicitly, the missing module is a usage error in one line, not a silent fallback.
  const named = quantizeDefault({ LOFTQ_NATIVE: '0' }, '--backend', 'native');
  assert.equal(named.status, 2);
  assert.equal(named.report, undefined);
  assert.deepEqual(named.stderr.trim().split('\n'), [
    "loftq: backend 'native' is not available: the native module is turned off (LOFTQ_NATIVE=0)",
  ]);
  // A backend asked for by name is said without the auto note.
  const wasm = quantizeDefault({}, '--backend', 'wasm');
  assert.equal(wasm.status, 0, wasm.stderr);
  assert.match(wasm.stdout, /^1 matrices quantized on wasm in [\d.]+ s$/m);
});
