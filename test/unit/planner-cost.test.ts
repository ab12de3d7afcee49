import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  avgBitsOf,
  budgetBytes,
  choiceBytes,
  codeBytes,
  DEFAULT_COST,
  loraBytes,
  parseBudget,
  scaleBytes,
} from '../../server/src/plan/planner/cost';
import { predictError } from '../../server/src/plan/planner/table';

const dq = { ...DEFAULT_COST, scales: 'dq' as const, adapterBytes: 2 };
const fp32 = { ...dq, scales: 'fp32' as const };

test('cost of a 4096×4096 NF4 matrix at rank 16, BF16 adapters: hand-computed', () => {
  // codes 4096·4096·4/8; 262144 blocks of 64 → dq: 262144 one-byte scales + 1024 fp32 + 1 fp32 offset
  assert.equal(codeBytes(4096, 4096, 4), 8_388_608);
  assert.equal(scaleBytes(4096, 4096, dq), 262_144 + 4_096 + 4);
  assert.equal(scaleBytes(4096, 4096, fp32), 1_048_576);
  assert.equal(loraBytes(4096, 4096, 16, dq), 16 * 8192 * 2);
  assert.equal(choiceBytes(4096, 4096, 4, 16, dq), 8_388_608 + 266_244 + 262_144);
  // QLoRA's figure: NF4 + double quantization ≈ 4.127 bits per parameter
  assert.ok(Math.abs(avgBitsOf(codeBytes(4096, 4096, 4) + scaleBytes(4096, 4096, dq), 4096 * 4096) - 4.127) < 0.001);
  assert.equal(avgBitsOf(codeBytes(4096, 4096, 2) + scaleBytes(4096, 4096, fp32), 4096 * 4096), 2.5);
});

test('cost when sizes are not multiples of the block or the byte: rounding up', () => {
  // 10×10 at 3 bits: 300 bits → 38 bytes; 100 values → 2 blocks
  assert.equal(codeBytes(10, 10, 3), 38);
  assert.equal(scaleBytes(10, 10, fp32), 8);
  assert.equal(scaleBytes(10, 10, dq), 2 + 4 + 4);
  // 64×172 (stories260K down_proj) at 3 bits, rank 8, F32 adapters
  const f32 = { ...fp32, adapterBytes: 4 };
  assert.equal(choiceBytes(64, 172, 3, 8, f32), 4128 + 172 * 4 + 8 * 236 * 4);
  assert.equal(choiceBytes(64, 172, 3, 8, { ...f32, countAdapters: false }), 4128 + 688);
  assert.equal(scaleBytes(64, 172, { ...dq, blockSize: 128 }), 86 + 4 + 4);
});

test('budgets: average bits, decimal and binary sizes, bad input', () => {
  assert.deepEqual(parseBudget('2.5'), { avgBits: 2.5 });
  assert.deepEqual(parseBudget('3.2GB'), { bytes: 3_200_000_000 });
  assert.deepEqual(parseBudget('800MB'), { bytes: 800_000_000 });
  assert.deepEqual(parseBudget('1.5GiB'), { bytes: 1_610_612_736 });
  assert.deepEqual(parseBudget('123456B'), { bytes: 123456 });
  assert.deepEqual(parseBudget('123456'), { bytes: 123456 });
  assert.deepEqual(parseBudget('3bits'), { avgBits: 3 });
  for (const bad of ['', 'abc', '2.5XB', '-1', '0', '1e3']) assert.throws(() => parseBudget(bad), /budget/, bad);
  assert.equal(budgetBytes({ avgBits: 2.5 }, 1000), 312);
  assert.equal(budgetBytes({ bytes: 999.7 }, 1000), 999);
});

test('rank prediction: truncating the residual spectrum adds the dropped σ²', () => {
  const row = {
    name: 'w',
    shape: [8, 8] as [number, number],
    relError: 0.1,
    qloraRelError: 0.2,
    frobeniusNorm: 10,
    residualSpectrum: [3, 2, 1, 0.5],
  };
  assert.equal(predictError(row, 4, 4), 1);
  assert.equal(predictError(row, 4, 2), 1 + 1 + 0.25);
  assert.equal(predictError(row, 4, 0), 1 + 9 + 4 + 1 + 0.25);
  assert.equal(predictError(row, 4, 5), null);
  assert.equal(predictError({ ...row, residualSpectrum: [3, 2] }, 4, 2), null);
  assert.equal(predictError({ ...row, residualSpectrum: undefined }, 4, 4), 1);
});
