// Writes a Llama-shaped sharded BF16 safetensors checkpoint with LLM-like weights, one
// tensor at a time (never the whole model in memory). Each tensor's values depend only on
// (seed, tensor name), so the bytes are the same whatever the worker count or --layers.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { DTYPE_SIZE, INDEX_FILE, SafetensorsWriter, TensorSpec, fromFloat32, writeFileAtomic } from '../checkpoint';
import { PRESETS, LlamaShape, TensorJob, llamaConfig, tensorJobs } from './make-model-presets';
import { Rng, llmLike, seedFrom } from './synth';

export interface MakeModelOptions {
  preset: string;
  out: string;
  /** Overrides the preset's layer count. */
  layers?: number;
  seed?: number;
  /** Largest shard in bytes (a bigger single tensor gets a shard of its own). */
  shardSize?: number;
  /** Generator threads; 1 generates in this thread. */
  workers?: number;
  /** The bundle that runs runMakeModelWorker() when started as a worker thread. */
  workerScript?: string;
  onTensor?: (name: string, index: number, total: number) => void;
}

export interface MakeModelResult {
  files: string[];
  tensors: number;
  parameters: number;
  totalSize: number;
}

export const DEFAULT_SHARD_SIZE = 2e9;
/** The tiny preset shards at 1 MB so that tests and the demo exercise a sharded checkpoint. */
export const TINY_SHARD_SIZE = 1e6;

export function shapeFor(preset: string, layers?: number): LlamaShape {
  const s = PRESETS[preset];
  if (!s) throw new Error(`unknown preset '${preset}' (known: ${Object.keys(PRESETS).join(', ')})`);
  return layers === undefined ? s : { ...s, layers };
}

/** BF16 bytes of one tensor. */
export function generateTensor(job: TensorJob, seed: number): Uint8Array {
  const rng = new Rng(seedFrom(seed, job.name));
  const n = job.shape.reduce((a, b) => a * b, 1);
  let x: Float32Array;
  if (job.kind === 'linear') x = llmLike(job.shape[0], job.shape[1], seedFrom(seed, job.name), job.traits);
  else if (job.kind === 'embedding') {
    x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = 0.02 * rng.normal();
  } else {
    // RMSNorm gains: near 1, with spread.
    x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = 1 + 0.1 * rng.normal();
  }
  return fromFloat32('BF16', x);
}

const bytesOf = (j: TensorJob) => j.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE.BF16;

/** Greedy split in order, as transformers' save_pretrained does. */
export function planShards(jobs: TensorJob[], maxBytes: number): TensorJob[][] {
  const shards: TensorJob[][] = [];
  let cur: TensorJob[] = [];
  let size = 0;
  for (const j of jobs) {
    const b = bytesOf(j);
    if (cur.length && size + b > maxBytes) { shards.push(cur); cur = []; size = 0; }
    cur.push(j);
    size += b;
  }
  if (cur.length) shards.push(cur);
  return shards;
}

export const shardName = (i: number, n: number) =>
  `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;

/** A fixed set of worker threads, each generating one tensor at a time. */
class GeneratorPool {
  private idle: Worker[] = [];
  private waiting: (() => void)[] = [];
  private all: Worker[] = [];

  constructor(script: string, n: number) {
    for (let i = 0; i < n; i++) {
      const w = new Worker(script, { workerData: { makeModelWorker: true } });
      this.all.push(w);
      this.idle.push(w);
    }
  }

  async generate(job: TensorJob, seed: number): Promise<Uint8Array> {
    while (!this.idle.length) await new Promise<void>((r) => this.waiting.push(r));
    const w = this.idle.pop()!;
    try {
      return await new Promise<Uint8Array>((resolve, reject) => {
        const onMessage = (m: Uint8Array) => { w.off('error', reject); resolve(m); };
        w.once('message', onMessage);
        w.once('error', reject);
        w.postMessage({ job, seed });
      });
    } finally {
      this.idle.push(w);
      this.waiting.shift()?.();
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.all.map((w) => w.terminate()));
  }
}

export async function makeModel(o: MakeModelOptions): Promise<MakeModelResult> {
  const shape = shapeFor(o.preset, o.layers);
  const seed = o.seed ?? 0;
  const maxBytes = o.shardSize ?? (o.preset === 'tiny' ? TINY_SHARD_SIZE : DEFAULT_SHARD_SIZE);
  const workers = Math.max(1, o.workers ?? 1);
  const jobs = tensorJobs(shape);
  const shards = planShards(jobs, maxBytes);
  await fsp.mkdir(o.out, { recursive: true });

  const pool = workers > 1 && o.workerScript ? new GeneratorPool(o.workerScript, workers) : undefined;
  const gen = (j: TensorJob) => (pool ? pool.generate(j, seed) : Promise.resolve().then(() => generateTensor(j, seed)));
  // Tensors are generated up to `workers` ahead of the one being written, so memory holds
  // at most that many tensors whatever the model size.
  const pending = new Map<number, Promise<Uint8Array>>();
  let launched = 0;
  const launch = (written: number) => {
    for (; launched < jobs.length && launched < written + workers; launched++) {
      const p = gen(jobs[launched]);
      p.catch(() => undefined);
      pending.set(launched, p);
    }
  };

  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  let index = 0;
  let writer: SafetensorsWriter | undefined;
  try {
    for (let s = 0; s < shards.length; s++) {
      const name = shardName(s, shards.length);
      const specs: TensorSpec[] = shards[s].map((j) => ({ name: j.name, dtype: 'BF16', shape: j.shape }));
      writer = await SafetensorsWriter.create(path.join(o.out, name), specs, { format: 'pt' });
      for (const j of shards[s]) {
        launch(index);
        const bytes = await pending.get(index)!;
        pending.delete(index);
        await writer.write(j.name, bytes);
        weightMap[j.name] = name;
        o.onTensor?.(j.name, index, jobs.length);
        index++;
      }
      await writer.commit();
      writer = undefined;
      files.push(path.join(o.out, name));
    }
    const totalSize = jobs.reduce((a, j) => a + bytesOf(j), 0);
    await writeFileAtomic(path.join(o.out, INDEX_FILE), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + '\n');
    await writeFileAtomic(path.join(o.out, 'config.json'), JSON.stringify(llamaConfig(shape), null, 2) + '\n');
    const parameters = jobs.reduce((a, j) => a + j.shape.reduce((x, y) => x * y, 1), 0);
    return { files, tensors: jobs.length, parameters, totalSize };
  } catch (e) {
    await writer?.abort();
    await Promise.all(files.map((f) => fsp.rm(f, { force: true })));
    throw e;
  } finally {
    await pool?.close();
  }
}
