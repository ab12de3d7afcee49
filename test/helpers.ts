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

/** Folders made by tempDir in this process, removed when it exits (issue 27.15: a run left ~300
 *  folders, 160 MB, in the system temp directory). */
const madeHere = new Set<string>();

/** Removes `dir` whatever its permissions (tests make folders read-only, and as a user that is
 *  not root a read-only folder's entries cannot be removed until it is writable again). */
export function removeTree(dir: string): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true });
    return;
  } catch {
    // Make every folder writable, then try again.
  }
  const walk = (d: string) => {
    try {
      fs.chmodSync(d, 0o700);
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
    } catch {
      // Gone already, or not ours to change: rmSync reports what remains.
    }
  };
  walk(dir);
  fs.rmSync(dir, { recursive: true, force: true });
}

function removeMadeHere(): void {
  for (const d of madeHere) {
    try {
      removeTree(d);
    } catch (e) {
      process.stderr.write(`tempDir: could not remove ${d}: ${(e as Error).message}\n`);
    }
  }
  madeHere.clear();
}

/** A fresh folder in the temp directory, removed when this process exits — after the test file's
 *  tests, whether they passed or failed. A test may remove it sooner. */
export function tempDir(prefix = 'loftq-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  if (madeHere.size === 0) process.once('exit', removeMadeHere);
  madeHere.add(dir);
  return dir;
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
