// Every family of the architecture table against transformers 4.49 on its tiny random fixture
// (test/fixtures/arch/<family>: BF16 weights, 4 sequences of 32 tokens, transformers' float32
// eager log-probabilities): our float32 log-probabilities within 1e-4 (max abs) of transformers'
// and the perplexity within 0.1 %, on the wasm backend and, where built, the native one.
// Covers Qwen2 (untied and tied), Llama 3.x RoPE scaling (rope_type llama3), Mistral, Gemma,
// Gemma 2 (soft-capping, query_pre_attn_scalar, sandwich norms), Phi-2 (phi) and Phi-3 (fused
// qkv_proj / gate_up_proj).

import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { openCheckpoint } from '../../server/src/checkpoint';
import { createBackend } from '../../server/src/linalg/backend';
import { nativeAddon } from '../../server/src/linalg/nativeBackend';
import { readModelConfig } from '../../server/src/model/config';
import { PerplexityMeter } from '../../server/src/model/evalMetrics';
import { runForward } from '../../server/src/model/forward';
import type { BackendChoice } from '../../server/src/registry';
import { fixture } from '../helpers';
import { requireNative } from './nativeRequired';

const FAMILIES = ['qwen2', 'qwen2-tied', 'llama3', 'mistral', 'gemma', 'gemma2', 'phi', 'phi3'];

/** A numpy .npy file of little-endian float32 (format 1.0/2.0 header, C order). */
function readNpyF32(file: string): { shape: number[]; data: Float32Array } {
  const b = fs.readFileSync(file);
  assert.equal(b.subarray(0, 6).toString('latin1'), '\x93NUMPY', `${file}: not .npy`);
  const major = b[6];
  const headerLen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = b.subarray(start, start + headerLen).toString('latin1');
  assert.match(header, /'descr': '<f4'/, `${file}: float32 little-endian expected`);
  assert.match(header, /'fortran_order': False/, `${file}: C order expected`);
  const shape = /'shape': \(([^)]*)\)/
    .exec(header)![1]
    .split(',')
    .filter((s) => s.trim())
    .map(Number);
  const off = start + headerLen,
    n = shape.reduce((a, x) => a * x, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = b.readFloatLE(off + 4 * i);
  return { shape, data };
}

/** log_softmax of one row in float64. */
function logSoftmax(row: ArrayLike<number>, out: Float64Array): void {
  let max = -Infinity;
  for (let i = 0; i < out.length; i++) max = Math.max(max, row[i]);
  let sum = 0;
  for (let i = 0; i < out.length; i++) sum += Math.exp(row[i] - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < out.length; i++) out[i] = row[i] - lse;
}

async function check(family: string, backend: BackendChoice): Promise<void> {
  const dir = fixture('arch', family);
  const ref = JSON.parse(fs.readFileSync(`${dir}/reference.json`, 'utf8')) as { tokens: number[][] };
  const lp = readNpyF32(`${dir}/reference_logprobs.npy`);
  const [S, T, V] = lp.shape;
  assert.deepEqual([S, T], [ref.tokens.length, ref.tokens[0].length]);
  const ck = await openCheckpoint(dir);
  const c = await readModelConfig(dir);
  assert.equal(c.vocabSize, V);
  const ours = new PerplexityMeter(V);
  let worst = 0;
  let refNll = 0,
    refCount = 0;
  const row = new Float64Array(V);
  await runForward(ck, c, ref.tokens, {
    backend: await createBackend(backend, { threads: 2 }),
    onLogits: (k, logits, len) => {
      ours.addSequence(ref.tokens[k], logits);
      for (let i = 0; i < len; i++) {
        logSoftmax(logits.subarray(i * V, (i + 1) * V), row);
        const base = (k * T + i) * V;
        for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(row[v] - lp.data[base + v]));
        if (i + 1 < len) {
          refNll -= lp.data[base + ref.tokens[k][i + 1]];
          refCount++;
        }
      }
    },
  });
  const refPpl = Math.exp(refNll / refCount);
  const rel = Math.abs(ours.ppl() / refPpl - 1);
  assert.ok(worst <= 1e-4, `${family} (${backend}): max |Δ log-prob| ${worst.toExponential(2)} > 1e-4`);
  assert.ok(rel <= 1e-3, `${family} (${backend}): perplexity ${ours.ppl()} vs transformers' ${refPpl}`);
}

for (const family of FAMILIES) {
  test(`${family}: log-probabilities within 1e-4 of transformers', perplexity within 0.1 %`, async () => {
    await check(family, 'wasm');
  });
}

test('the same on the native backend (its products; its attention where the family has the plain one)', async (t) => {
  const { module, problem } = nativeAddon();
  if (!module) return requireNative(t, problem);
  for (const family of FAMILIES) await check(family, 'native');
});
