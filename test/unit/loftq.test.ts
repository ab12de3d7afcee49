import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { loftqMatrix } from '../../server/src/loftq/loftq';
import { createBackend } from '../../server/src/linalg/backend';
import { openCheckpoint, readTensorF32 } from '../../server/src/checkpoint';
import { codebook } from '../../server/src/quant/codebook';
import { quantize } from '../../server/src/quant/quantize';
import { referenceCases, loadReference, fixture } from '../helpers';

const quantizerOf = (m: string) => (m === 'normal' ? 'nf' : 'uniform') as 'nf' | 'uniform';
const BAR = 1.005;

const FIDELITY_ON_FIXTURES =
  'LoftQ fidelity: final relError ≤ 1.005 × reference and the QLoRA baseline equal, on every reference fixture';
test(FIDELITY_ON_FIXTURES, async () => {
  const backend = await createBackend('wasm');
  for (const c of referenceCases()) {
    const ref = await loadReference(c);
    const [rows, cols] = c.shape;
    const res = await loftqMatrix(
      ref.weight,
      rows,
      cols,
      { bits: c.bits, rank: c.rank, iters: c.iters, quantizer: quantizerOf(c.method), blockSize: c.block_size },
      backend,
    );
    const ours = res.relErrorPerIter.at(-1)!;
    const theirs = c.rel_err.at(-1)!;
    assert.equal(res.relErrorPerIter.length, c.iters);
    assert.ok(ours <= BAR * theirs, `${c.file}: ${ours} > ${BAR} × ${theirs}`);
    assert.ok(
      Math.abs(res.qloraRelError - c.qlora_rel_err) <= 1e-6 * c.qlora_rel_err,
      `${c.file} qlora ${res.qloraRelError} vs ${c.qlora_rel_err}`,
    );
    // Iteration 1 starts from A·Bᵀ = 0: its codes and scales are the quantizer's on W itself,
    // which the T = 1 fixtures hold verbatim.
    if (c.iters === 1) {
      assert.deepEqual(res.codes, ref.codes, `${c.file} codes`);
      assert.deepEqual(res.scales, ref.scale, `${c.file} scales`);
    }
    // The returned factors reproduce the reported error: ‖W − Q − B·A‖ / ‖W‖.
    let err = 0,
      norm = 0;
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < cols; j++) {
        let lr = 0;
        for (let p = 0; p < res.rank; p++) lr += res.loraB[i * res.rank + p] * res.loraA[p * cols + j];
        const w = ref.weight[i * cols + j];
        err += (w - res.q[i * cols + j] - lr) ** 2;
        norm += w * w;
      }
    assert.ok(
      Math.abs(Math.sqrt(err / norm) - ours) < 1e-5,
      `${c.file}: factors give ${Math.sqrt(err / norm)}, reported ${ours}`,
    );
  }
});

const FIDELITY_ON_REAL =
  'LoftQ fidelity on the real checkpoints (stories260K, Tiny-LLM): ' +
  '≤ 1.005 × the exact-SVD reference for nf2, nf4, uniform2';
test(FIDELITY_ON_REAL, async () => {
  const backend = await createBackend('wasm');
  const cases = JSON.parse(fs.readFileSync(fixture('real', 'reference-errors.json'), 'utf8')) as {
    checkpoint: string;
    tensor: string;
    shape: [number, number];
    method: string;
    bits: number;
    rank: number;
    iters: number;
    block_size: number;
    rel_err: number[];
    qlora_rel_err: number;
  }[];
  assert.ok(cases.length >= 100);
  const checkpoints = new Map<string, Awaited<ReturnType<typeof openCheckpoint>>>();
  let worst = 0;
  for (const c of cases) {
    if (!checkpoints.has(c.checkpoint))
      checkpoints.set(c.checkpoint, await openCheckpoint(fixture('real', c.checkpoint, 'model.safetensors')));
    const w = await readTensorF32(checkpoints.get(c.checkpoint)!.byName.get(c.tensor)!);
    const res = await loftqMatrix(
      w,
      c.shape[0],
      c.shape[1],
      { bits: c.bits, rank: c.rank, iters: c.iters, quantizer: quantizerOf(c.method), blockSize: c.block_size },
      backend,
    );
    const ratio = res.relErrorPerIter.at(-1)! / c.rel_err.at(-1)!;
    worst = Math.max(worst, ratio);
    assert.ok(ratio <= BAR, `${c.checkpoint} ${c.tensor} ${c.method}${c.bits} r${c.rank}: ratio ${ratio}`);
    assert.ok(Math.abs(res.qloraRelError - c.qlora_rel_err) <= 1e-6 * c.qlora_rel_err, `${c.tensor} qlora`);
  }
  console.log(`worst error ratio vs exact SVD over ${cases.length} real matrices: ${worst.toFixed(5)}`);
});

test('LoftQ never does worse than QLoRA and improves over iterations on LLM-like data', async () => {
  const backend = await createBackend('wasm');
  const c = referenceCases().find((x) => x.iters === 5)!;
  const ref = await loadReference(c);
  const res = await loftqMatrix(
    ref.weight,
    c.shape[0],
    c.shape[1],
    { bits: c.bits, rank: c.rank, iters: 5, quantizer: quantizerOf(c.method), blockSize: 64 },
    backend,
  );
  assert.ok(res.relErrorPerIter[0] < res.qloraRelError);
  assert.ok(res.relErrorPerIter[4] < res.relErrorPerIter[0]);
});

test('all-zero and constant matrices work (zeros in, exact zeros out; no NaN)', async () => {
  const backend = await createBackend('wasm');
  const zero = new Float32Array(32 * 48);
  const z = await loftqMatrix(zero, 32, 48, { bits: 2, rank: 4, iters: 2, quantizer: 'nf', blockSize: 64 }, backend);
  assert.ok(z.q.every((v) => v === 0) && z.loraA.every((v) => v === 0) && z.loraB.every((v) => v === 0));
  assert.deepEqual(z.relErrorPerIter, [0, 0]);
  const constant = new Float32Array(32 * 48).fill(0.25);
  for (const quantizer of ['nf', 'uniform'] as const) {
    const k = await loftqMatrix(constant, 32, 48, { bits: 2, rank: 4, iters: 2, quantizer, blockSize: 64 }, backend);
    assert.ok(k.relErrorPerIter.every(Number.isFinite) && k.q.every(Number.isFinite));
    assert.ok(k.relErrorPerIter.at(-1)! < 1e-5, `${quantizer}: ${k.relErrorPerIter}`);
  }
});

test('the cpu backend gives the same errors as wasm', async () => {
  const c = referenceCases()[0];
  const ref = await loadReference(c);
  const s = { bits: c.bits, rank: c.rank, iters: c.iters, quantizer: quantizerOf(c.method), blockSize: 64 };
  const a = await loftqMatrix(ref.weight, c.shape[0], c.shape[1], s, await createBackend('wasm'));
  const b = await loftqMatrix(ref.weight, c.shape[0], c.shape[1], s, await createBackend('cpu'));
  const last = (r: typeof a) => r.relErrorPerIter.at(-1)!;
  assert.ok(Math.abs(last(a) - last(b)) <= 0.005 * last(a));
  // the quantizer on W alone is the same whichever backend runs the products
  const q = quantize(ref.weight, codebook(s.quantizer, s.bits), s.quantizer, 64);
  assert.ok(Math.abs(a.qloraRelError - b.qloraRelError) < 1e-9 && q.codes.length === ref.weight.length);
});
