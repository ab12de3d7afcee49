// Every backend runs the same engine: cpu, wasm, native (each kernel set this CPU runs) and
// (when Dawn finds an adapter) webgpu give LoftQ errors within 0.5% of the reference on the
// fixtures. The WebGPU binding limit
// is exercised on the cpu backend with a small fake limit: products stay exact and no
// tensor ever exceeds it. `--backend auto` records in the report the backend that ran.

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createBackend, MatmulBackend, webgpuAdapterInfo } from '../../server/src/linalg/backend';
import { loftqMatrix } from '../../server/src/loftq/loftq';
import { NATIVE_ISAS, nativeAddon } from '../../server/src/linalg/nativeBackend';
import { requireNative } from './nativeRequired';
import { loadReference, referenceCases, repoRoot, tempDir, seededUniform as rand } from '../helpers';

const BAR = 1.005;
const quantizerOf = (m: string) => (m === 'normal' ? 'nf' : 'uniform') as 'nf' | 'uniform';

async function fidelity(backend: MatmulBackend) {
  for (const c of referenceCases()) {
    const ref = await loadReference(c);
    const res = await loftqMatrix(
      ref.weight,
      c.shape[0],
      c.shape[1],
      { bits: c.bits, rank: c.rank, iters: c.iters, quantizer: quantizerOf(c.method), blockSize: c.block_size },
      backend,
    );
    const ratio = res.relErrorPerIter.at(-1)! / c.rel_err.at(-1)!;
    assert.ok(ratio <= BAR, `${backend.name} ${c.file}: error ratio ${ratio} vs the reference`);
    assert.ok(
      Math.abs(res.qloraRelError - c.qlora_rel_err) <= 1e-6 * c.qlora_rel_err,
      `${backend.name} ${c.file}: qlora`,
    );
  }
}

test('cpu backend: LoftQ errors within 0.5% of the reference on every fixture', async () => {
  await fidelity(await createBackend('cpu'));
});

test('wasm backend: LoftQ errors within 0.5% of the reference on every fixture', async () => {
  await fidelity(await createBackend('wasm'));
});

test('native backend: LoftQ errors within 0.5% of the reference on every fixture, with every kernel set', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  for (const isa of NATIVE_ISAS.filter((i) => module.supports(i))) {
    const backend = await createBackend('native', { isa, threads: 2 });
    assert.equal(backend.name, 'native');
    await fidelity(backend);
  }
});

test('webgpu backend (Dawn): LoftQ errors within 0.5% of the reference, when an adapter exists', async (t) => {
  const adapter = await webgpuAdapterInfo();
  if (!adapter) {
    t.skip(
      'no WebGPU adapter here (no GPU; on Linux CPU-only: ' +
        'apt-get install -t bookworm-backports mesa-vulkan-drivers gives lavapipe)',
    );
    return;
  }
  const backend = await createBackend('webgpu');
  assert.equal(backend.name, 'webgpu');
  assert.equal(backend.maxBindingBytes, 128 * 1024 * 1024);
  console.log(`webgpu adapter: ${adapter}`);
  await fidelity(backend);
});

function naive(a: Float32Array, m: number, k: number, b: Float32Array, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      for (let j = 0; j < n; j++) out[i * n + j] += x * b[p * n + j];
    }
  return out;
}

const BINDING_LIMIT =
  'binding limit: held blocks, thin-factor chunks and product outputs all stay under it, ' + 'results exact';

test(BINDING_LIMIT, async () => {
  const limit = 4096; // bytes: 1024 floats
  const small = await createBackend('cpu', { maxBindingBytes: limit });
  // Shapes that need every kind of split: a held matrix taller than one block, a factor
  // wider than one upload, and a rank-4 update whose output is far larger than the limit.
  const cases: [number, number, number][] = [
    [37, 29, 50],
    [300, 4, 200],
    [5, 700, 3],
    [64, 16, 64],
    [1, 3000, 1],
  ];
  for (const [m, k, n] of cases) {
    const a = rand(m * k, m + k),
      b = rand(k * n, n);
    const held = await small.hold(a, m, k);
    const got = await held.times(b, n);
    const want = naive(a, m, k, b, n);
    for (let i = 0; i < got.length; i++)
      assert.ok(
        Math.abs(got[i] - want[i]) <= 1e-5 * (1 + Math.abs(want[i])),
        `${m}x${k}·${k}x${n} [${i}]: ${got[i]} vs ${want[i]}`,
      );
    const again = await held.times(b, n);
    held.dispose();
    assert.deepEqual(again, got);
  }
  // One row of 3000 floats cannot be split: the only tensor allowed past the limit.
  assert.ok(small.largestTensorBytes <= 3000 * 4, `largest tensor ${small.largestTensorBytes} B`);
  const tight = await createBackend('cpu', { maxBindingBytes: limit });
  for (const [m, k, n] of cases.slice(0, 4)) {
    const held = await tight.hold(rand(m * k, 1), m, k);
    await held.times(rand(k * n, 2), n);
    held.dispose();
  }
  assert.ok(tight.largestTensorBytes <= limit, `largest tensor ${tight.largestTensorBytes} B > ${limit}`);
});

test('binding limit: LoftQ under a 16 KiB limit gives the same result as without one', async () => {
  const c = referenceCases().find((x) => x.file.startsWith('nf2-r8-t5'))!;
  const ref = await loadReference(c);
  const settings = {
    bits: c.bits,
    rank: c.rank,
    iters: c.iters,
    quantizer: quantizerOf(c.method),
    blockSize: c.block_size,
  };
  const limited = await createBackend('cpu', { maxBindingBytes: 16384 });
  const a = await loftqMatrix(ref.weight, c.shape[0], c.shape[1], settings, limited);
  const b = await loftqMatrix(ref.weight, c.shape[0], c.shape[1], settings, await createBackend('cpu'));
  assert.ok(limited.largestTensorBytes <= 16384);
  assert.deepEqual(a.codes, b.codes);
  for (let i = 0; i < c.iters; i++)
    assert.ok(Math.abs(a.relErrorPerIter[i] - b.relErrorPerIter[i]) <= 1e-6, `iter ${i}`);
});

test('--backend auto picks the best available backend and the report records it', async () => {
  const hasTfNode = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'].some((p) => {
    try {
      require.resolve(p);
      return true;
    } catch {
      return false;
    }
  });
  const adapter = await webgpuAdapterInfo();
  // AUTO_ORDER: tensorflow, native, webgpu (a hardware adapter), wasm.
  const expected = hasTfNode
    ? 'tensorflow'
    : nativeAddon().module
      ? 'native'
      : adapter && !adapter.endsWith('(software)')
        ? 'webgpu'
        : 'wasm';
  const out = tempDir('loftq-auto-');
  const r = spawnSync(
    process.execPath,
    [
      path.join(repoRoot, 'dist', 'cli.js'),
      'quantize',
      path.join(repoRoot, 'examples', 'stories260k'),
      '--out',
      out,
      '--backend',
      'auto',
      '--iters',
      '1',
      '--workers',
      '1',
      '--quiet',
      '--target',
      '*.layers.0.self_attn.q_proj',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(fs.readFileSync(path.join(out, 'loftq-report.json'), 'utf8'));
  assert.equal(report.backend, expected, `adapter: ${adapter ?? 'none'}`);
  assert.match(r.stdout, new RegExp(`on ${expected} `));
});
