// Shared test helpers: fixture paths (inside this repo — tests never need ../shared),
// temp folders, and loading the reference fixtures.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openCheckpoint, readTensorBytes, readTensorF32 } from '../server/src/checkpoint';

function findRoot(): string {
  let d = __dirname;
  while (!fs.existsSync(path.join(d, 'package.json'))) {
    const up = path.dirname(d);
    if (up === d) throw new Error('repo root not found');
    d = up;
  }
  return d;
}

export const repoRoot = findRoot();
export const fixture = (...p: string[]) => path.join(repoRoot, 'test', 'fixtures', ...p);

export function tempDir(prefix = 'loftq-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface ReferenceCase {
  file: string;
  shape: [number, number];
  bits: number;
  rank: number;
  iters: number;
  method: 'normal' | 'uniform';
  block_size: number;
  rel_err: number[];
  qlora_rel_err: number;
}

export function referenceCases(): ReferenceCase[] {
  return JSON.parse(fs.readFileSync(fixture('loftq-reference', 'index.json'), 'utf8'));
}

export async function loadReference(c: ReferenceCase) {
  const ck = await openCheckpoint(fixture('loftq-reference', c.file));
  const f32 = (n: string) => readTensorF32(ck.byName.get(n)!);
  return {
    weight: await f32('weight'),
    codebook: await f32('codebook'),
    codes: await readTensorBytes(ck.byName.get('codes')!),
    scale: await f32('scale'),
    dequantized: await f32('dequantized'),
    loraA: await f32('lora_A'),
    loraB: await f32('lora_B'),
  };
}

/** len uniform values in [-0.5, 0.5) from a seeded linear congruential generator: the same
 *  values in every test that asks for the same seed. */
export function seededUniform(len: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: len }, () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32 - 0.5);
}
