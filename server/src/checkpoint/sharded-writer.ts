// Writes a sharded checkpoint: several safetensors files plus model.safetensors.index.json
// (`metadata.total_size`, `weight_map`). Each shard streams into its own temp file; only
// when every shard is complete are they renamed into place, the index last. The old index
// is removed before the first rename, so a crash mid-commit leaves shards without an
// index (which openCheckpoint refuses) rather than an index that mixes old and new shards.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, writeError } from './errors';
import type { OutputCommit } from './commit';
import { INDEX_FILE } from './sharded';
import { jsonObject, SafetensorsWriter, specByteLength, syncFolder, TensorSpec, writeFileAtomic } from './writer';

export interface ShardSpec {
  /** Plain file name inside the output folder, ending in .safetensors. */
  file: string;
  tensors: TensorSpec[];
  metadata?: Record<string, string>;
}

export interface ShardedWriteOptions {
  /** Extra entries for the index's `metadata` (total_size is always set). */
  indexMetadata?: Record<string, unknown>;
  signal?: AbortSignal;
}

export interface ShardedWriteResult {
  files: string[];
  index: string;
  totalSize: number;
}

function checkOutputShardNames(dir: string, shards: ShardSpec[]): void {
  const names = new Set<string>();
  const tensors = new Set<string>();
  for (const s of shards) {
    if (
      s.file !== path.basename(s.file) ||
      s.file !== path.posix.basename(s.file) ||
      s.file === INDEX_FILE ||
      !s.file.endsWith('.safetensors') ||
      s.file.startsWith('.') ||
      s.file.includes('\0')
    ) {
      throw new CheckpointError('unsafe-path', dir, `'${s.file}' is not a plain .safetensors file name for a shard`);
    }
    if (names.has(s.file)) throw new CheckpointError('index', dir, `shard '${s.file}' is listed twice`);
    names.add(s.file);
    for (const t of s.tensors) {
      if (tensors.has(t.name))
        throw new CheckpointError('duplicate-key', path.join(dir, s.file), 'is also in an earlier shard', t.name);
      tensors.add(t.name);
    }
  }
}

export class ShardedSafetensorsWriter {
  private shard = 0;
  private inShard = 0;
  private current: SafetensorsWriter | undefined;
  private readonly finished: SafetensorsWriter[] = [];
  private readonly renamed: string[] = [];
  private aborted = false;
  private committed = false;

  private constructor(
    readonly dir: string,
    private readonly shards: ShardSpec[],
    private readonly opts: ShardedWriteOptions,
  ) {}

  static async create(
    dir: string,
    shards: ShardSpec[],
    opts: ShardedWriteOptions = {},
  ): Promise<ShardedSafetensorsWriter> {
    checkOutputShardNames(dir, shards);
    const w = new ShardedSafetensorsWriter(path.resolve(dir), shards, opts);
    await w.openNext();
    return w;
  }

  /** Opens the writer of the next shard with tensors still to write, closing finished ones. */
  private async openNext(): Promise<void> {
    while (this.shard < this.shards.length) {
      const s = this.shards[this.shard];
      if (!this.current)
        this.current = await SafetensorsWriter.create(path.join(this.dir, s.file), s.tensors, s.metadata);
      if (this.inShard < s.tensors.length) return;
      await this.current.finish();
      this.finished.push(this.current);
      this.current = undefined;
      this.shard++;
      this.inShard = 0;
    }
  }

  private guard<T>(step: () => Promise<T>): Promise<T> {
    return step().catch(async (e) => {
      await this.abort();
      throw e;
    });
  }

  /** Writes the next tensor (in shard order, then tensor order). */
  async write(name: string, bytes: Uint8Array): Promise<void> {
    if (this.aborted) throw new Error(`sharded writer for ${this.dir}: write after abort`);
    await this.guard(async () => {
      if (this.opts.signal?.aborted) throw this.opts.signal.reason ?? new Error('aborted');
      if (!this.current) throw new Error(`sharded writer for ${this.dir}: all tensors already written, got '${name}'`);
      await this.current.write(name, bytes);
      this.inShard++;
      await this.openNext();
    });
  }

  /** Renames every shard into place, then writes the index; returns what was written. */
  async commit(): Promise<ShardedWriteResult> {
    return this.guard(async () => {
      if (this.current || this.finished.length !== this.shards.length)
        throw new Error(`sharded writer for ${this.dir}: not every tensor was written`);
      const index = path.join(this.dir, INDEX_FILE);
      try {
        await fsp.rm(index, { force: true });
      } catch (e) {
        throw writeError(index, e);
      }
      for (const w of this.finished) {
        await w.rename();
        this.renamed.push(w.target);
      }
      await syncFolder(this.dir);
      const { text, totalSize } = this.indexText();
      await writeFileAtomic(index, text);
      this.committed = true;
      return { files: this.finished.map((w) => w.target), index, totalSize };
    });
  }

  private indexText(): { text: string; totalSize: number } {
    let totalSize = 0;
    const weightMap: [string, unknown][] = [];
    for (const s of this.shards) {
      for (const t of s.tensors) {
        totalSize += specByteLength(t);
        weightMap.push([t.name, s.file]);
      }
    }
    // An input index's own total_size is replaced (ours counts what we wrote), keeping its place.
    const given = Object.entries(this.opts.indexMetadata ?? {});
    if (!given.some(([k]) => k === 'total_size')) given.push(['total_size', totalSize]);
    const metadata = jsonObject(given.map(([k, v]) => [k, k === 'total_size' ? totalSize : v]));
    return { text: JSON.stringify({ metadata, weight_map: jsonObject(weightMap) }, null, 2) + '\n', totalSize };
  }

  /** Hands the finished shards (data) and the index (the entry file) to a larger commit
   *  instead of committing them alone (export/assemble.ts: backbone, adapters and report
   *  become visible in one protocol). */
  async stage(into: OutputCommit): Promise<ShardedWriteResult> {
    return this.guard(async () => {
      if (this.current || this.finished.length !== this.shards.length)
        throw new Error(`sharded writer for ${this.dir}: not every tensor was written`);
      const writers = this.finished.splice(0);
      for (const w of writers) await into.adoptFinished(w, 'data');
      const index = path.join(this.dir, INDEX_FILE);
      const { text, totalSize } = this.indexText();
      await into.addFile(index, text, 'entry');
      this.committed = true;
      return { files: writers.map((w) => w.target), index, totalSize };
    });
  }

  /** Removes every temp file; shards already renamed by a failed commit are removed too,
   *  so a failure never leaves a half-new checkpoint that reads as whole. */
  async abort(): Promise<void> {
    if (this.aborted || this.committed) return;
    this.aborted = true;
    await this.current?.abort();
    for (const w of this.finished) await w.abort();
    for (const f of this.renamed) await fsp.rm(f, { force: true }).catch(() => undefined);
  }
}

/** Writes all shards and the index; `data` supplies each tensor's bytes in order. */
export async function writeShardedCheckpoint(
  dir: string,
  shards: ShardSpec[],
  data: (tensor: TensorSpec, shard: ShardSpec) => Promise<Uint8Array> | Uint8Array,
  opts: ShardedWriteOptions = {},
): Promise<ShardedWriteResult> {
  const w = await ShardedSafetensorsWriter.create(dir, shards, opts);
  try {
    for (const s of shards) for (const t of s.tensors) await w.write(t.name, await data(t, s));
    return await w.commit();
  } catch (e) {
    await w.abort();
    throw e;
  }
}
