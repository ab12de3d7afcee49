// Makes a group of output files visible together, as far as a crash allows. Every new file
// is first written whole to a temp file beside its target (fsynced); nothing visible changes
// while they are written, so an error, a full disk or a cancel leaves the previous output as
// it was. Then, in `commit`, with no more data to write:
//   1. retire the old files, the completion marker (report) first, then the files a loader
//      starts from (index, model.safetensors, adapter_config.json), then the rest: from here
//      on no old file can be loaded beside a new one;
//   2. rename the new data files (shards, adapter weights, copied config) into place;
//   3. rename the new entry files, the backbone's (what transformers loads) last;
//   4. rename the marker.
// A crash between 1 and 4 leaves files a loader cannot take for a checkpoint (data without
// its entry file) or one consistent new set without its marker; the caller keeps its
// journal until `commit` returns, so a rerun redoes the whole commit.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { writeError } from './errors';
import { SafetensorsWriter, syncFolder, tempPathFor } from './writer';

/** data: shards, adapter weights, copied files; entry: adapter_config.json, the packed file;
 *  main: the backbone's entry (index or model.safetensors); marker: the report. */
export type CommitPhase = 'data' | 'entry' | 'main' | 'marker';
const PHASES: CommitPhase[] = ['data', 'entry', 'main', 'marker'];

interface Staged {
  temp: string;
  target: string;
  phase: CommitPhase;
}

export class OutputCommit {
  private readonly staged: Staged[] = [];
  private readonly writers: SafetensorsWriter[] = [];
  private started = false;

  /** Takes a writer whose tensors are all written: its temp file is flushed, not renamed. */
  async addWriter(w: SafetensorsWriter, phase: CommitPhase): Promise<void> {
    this.writers.push(w);
    await w.finish();
    this.staged.push({ temp: w.temp, target: w.target, phase });
  }

  /** Takes a writer that another writer has already finished (sharded-writer.ts). */
  async adoptFinished(w: SafetensorsWriter, phase: CommitPhase): Promise<void> {
    this.writers.push(w);
    this.staged.push({ temp: w.temp, target: w.target, phase });
  }

  /** Writes a whole small file to a temp file beside `target`. */
  async addFile(target: string, data: string | Uint8Array, phase: CommitPhase): Promise<void> {
    const temp = tempPathFor(target);
    try {
      const fh = await fsp.open(temp, 'wx', 0o644);
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (e) {
      await fsp.rm(temp, { force: true }).catch(() => undefined);
      throw writeError(target, e);
    }
    this.staged.push({ temp, target, phase });
  }

  get targets(): string[] {
    return this.staged.map((s) => s.target);
  }

  /** Retires `retire` (in order; missing files are fine), then renames the staged files
   *  phase by phase. Not cancellable: it only removes and renames. */
  async commit(retire: string[]): Promise<void> {
    this.started = true;
    const folders = new Set([...retire, ...this.targets].map((f) => path.dirname(f)));
    for (const f of retire)
      await fsp.rm(f, { force: true }).catch((e) => {
        throw writeError(f, e);
      });
    for (const d of folders) await syncFolder(d);
    for (const phase of PHASES) {
      for (const s of this.staged.filter((x) => x.phase === phase)) {
        await fsp.rename(s.temp, s.target).catch((e) => {
          throw writeError(s.target, e);
        });
      }
      for (const d of folders) await syncFolder(d);
    }
  }

  /** Removes every temp file; after `commit` has started, nothing (the caller's journal
   *  lets a rerun finish the commit). */
  async abort(): Promise<void> {
    if (this.started) return;
    for (const w of this.writers) await w.abort();
    for (const s of this.staged) await fsp.rm(s.temp, { force: true }).catch(() => undefined);
  }
}
