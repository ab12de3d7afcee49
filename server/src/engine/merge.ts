// Many machines: `loftq quantize … --shard i/n` leaves its matrices in OUT/.loftq-journal/
// plus a descriptor `shard-i-of-n.json`, written last, so its presence marks a finished
// shard. `loftq merge` checks that the descriptors describe one run (same checkpoint,
// settings, plan, format, tool) split n ways with every index present, gathers their
// journal entries into the output's journal and runs the ordinary assembly on them
// (nothing is computed), so the files are those of one unsharded run.
//
// The checkpoint is identified by each file's size and a hash of its parsed header, not by
// path or mtime: machines may mount or copy it at different places.

import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { Checkpoint } from '../checkpoint';
import { openCheckpoint, readRegularFile, tempPathFor, writeFileAtomic } from '../checkpoint';
import type { BackendName, ExportFormat, MatrixReport, MatrixSettings, PlanFile, ProgressEvent } from '../protocol/lsp_ext';
import { InputError } from './errors';
import { JOURNAL_DIR } from './journal';
import type { RunResult } from './api';
import { TOOL } from './version';
import { quantizeCheckpoint } from './run';

export interface CheckpointFileId {
  name: string;
  bytes: number;
  header: string;
}

export interface ShardDescriptor {
  kind: 'loftq-shard';
  version: 1;
  tool: string;
  /** Absolute path on the machine that ran the shard. */
  checkpoint: string;
  files: CheckpointFileId[];
  settings: MatrixSettings;
  plan?: PlanFile;
  targets?: string[];
  format: ExportFormat;
  onNonFinite: 'refuse' | 'skip';
  backend: BackendName;
  shard: { index: number; count: number };
  /** Tensor name → journal entry file name (in the descriptor's folder). */
  entries: Record<string, string>;
  /** Matrices left unchanged (NaN/Inf with onNonFinite 'skip'); they have no entry. */
  skipped: MatrixReport[];
  /** GEMM flops this shard issued (the merged report's totals.gemmGflop is their sum). */
  gemmFlops: number;
}

/** What a merge hands to quantizeCheckpoint: the finished results, by tensor name. */
export interface AssembleSource {
  entries: Map<string, string>;
  skipped: Map<string, MatrixReport>;
  gemmFlops?: number;
}

const DESCRIPTOR_RE = /^shard-(\d+)-of-(\d+)\.json$/;

export function descriptorPath(out: string, shard: { index: number; count: number }): string {
  return path.join(out, JOURNAL_DIR, `shard-${shard.index}-of-${shard.count}.json`);
}

export function checkpointIdentity(ck: Checkpoint): CheckpointFileId[] {
  return ck.headers.map((h) => ({
    name: path.basename(h.file),
    bytes: h.fileSize,
    header: createHash('sha256')
      .update(JSON.stringify([h.metadata, h.tensors.map((t) => [t.name, t.dtype, t.shape, t.start, t.byteLength])]))
      .digest('hex'),
  }));
}

export async function writeShardDescriptor(out: string, d: Omit<ShardDescriptor, 'kind' | 'version' | 'tool'>): Promise<void> {
  const full: ShardDescriptor = { kind: 'loftq-shard', version: 1, tool: TOOL, ...d };
  await writeFileAtomic(descriptorPath(out, d.shard), JSON.stringify(full, null, 2) + '\n');
}

/** Puts a finished entry at `target` without copying when the filesystem allows (hard link). */
export async function adoptEntry(source: string, target: string): Promise<void> {
  if (path.resolve(source) === path.resolve(target)) return;
  const temp = tempPathFor(target);
  try {
    await fsp.link(source, temp);
  } catch {
    try {
      await fsp.copyFile(source, temp);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new InputError(source, "is missing: a shard's finished matrix is gone; run that shard again");
      throw e;
    }
  }
  try {
    await fsp.rename(temp, target);
  } catch (e) {
    await fsp.rm(temp, { force: true });
    throw e;
  }
}

interface Found {
  dir: string;
  file: string;
  d: ShardDescriptor;
}

async function readDescriptors(dir: string): Promise<Found[]> {
  const journal = path.join(dir, JOURNAL_DIR);
  let names: string[];
  try {
    names = await fsp.readdir(journal);
  } catch {
    throw new InputError(dir, `holds no shard results (no ${JOURNAL_DIR}/ folder); run loftq quantize … --shard i/n --out ${dir} first`);
  }
  const found: Found[] = [];
  for (const n of names.filter((x) => DESCRIPTOR_RE.test(x)).sort()) {
    const file = path.join(journal, n);
    let d: ShardDescriptor;
    try {
      // Regular files only, bounded: a FIFO named like a descriptor must not hang the merge.
      d = JSON.parse(new TextDecoder().decode(await readRegularFile(file, 100_000_000)));
    } catch (e) {
      throw new InputError(file, `is not a readable shard descriptor (${(e as Error).message})`);
    }
    if (d?.kind !== 'loftq-shard' || d.version !== 1 || !d.shard || typeof d.entries !== 'object') throw new InputError(file, 'is not a loftq shard descriptor (version 1)');
    const m = DESCRIPTOR_RE.exec(n)!;
    if (d.shard.index !== Number(m[1]) || d.shard.count !== Number(m[2])) throw new InputError(file, `describes shard ${d.shard.index}/${d.shard.count}, not the one its name says`);
    found.push({ dir, file, d });
  }
  if (found.length === 0) throw new InputError(dir, `holds no finished shard (no ${JOURNAL_DIR}/shard-I-of-N.json); did its loftq quantize … --shard i/n run finish?`);
  return found;
}

/** The fields every shard of one run must share, in the order they are reported. */
function agreement(d: ShardDescriptor): [string, unknown][] {
  return [
    ['shard count', d.shard.count],
    ['tool version', d.tool],
    ['checkpoint files', d.files],
    ['settings', d.settings],
    ['plan', d.plan ?? null],
    ['targets', d.targets ?? null],
    ['format', d.format],
    ['on-nonfinite', d.onNonFinite],
  ];
}

const short = (v: unknown) => {
  const s = JSON.stringify(v);
  return s.length > 120 ? s.slice(0, 117) + '…' : s;
};

export interface MergeOptions {
  out: string;
  /** Where the checkpoint is on this machine; default: the path the shards recorded. */
  checkpoint?: string;
  workers?: number;
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
}

/** Validates the shard descriptors found in `dirs` and returns what quantizeCheckpoint needs. */
export async function collectShards(dirs: string[], checkpointOverride?: string) {
  const found = (await Promise.all(dirs.map(readDescriptors))).flat();
  const first = found[0];
  const ref = agreement(first.d);
  for (const f of found.slice(1)) {
    const mine = agreement(f.d);
    for (let i = 0; i < ref.length; i++) {
      if (JSON.stringify(mine[i][1]) !== JSON.stringify(ref[i][1])) {
        throw new InputError(f.file, `shard ${f.d.shard.index}/${f.d.shard.count} differs from ${first.file} in ${ref[i][0]}: ${short(mine[i][1])} vs ${short(ref[i][1])}; all shards must come from one loftq quantize command`);
      }
    }
  }
  const count = first.d.shard.count;
  const byIndex = new Map<number, Found>();
  for (const f of found) {
    const other = byIndex.get(f.d.shard.index);
    if (other) throw new InputError(f.file, `shard ${f.d.shard.index}/${count} is also in ${other.file}; give each shard once`);
    byIndex.set(f.d.shard.index, f);
  }
  const missing = [...Array(count).keys()].filter((i) => !byIndex.has(i));
  if (missing.length) {
    throw new InputError(dirs.join(', '), `missing finished shard${missing.length > 1 ? 's' : ''} ${missing.map((i) => `${i}/${count}`).join(', ')} (of ${count}); run or finish them, then merge again`);
  }
  const ckPath = checkpointOverride ?? first.d.checkpoint;
  let ck: Checkpoint;
  try {
    ck = await openCheckpoint(ckPath);
  } catch (e) {
    if (checkpointOverride) throw e;
    throw new InputError(ckPath, `the checkpoint the shards recorded cannot be opened here (${(e as Error).message}); pass --checkpoint PATH`);
  }
  if (JSON.stringify(checkpointIdentity(ck)) !== JSON.stringify(first.d.files)) {
    throw new InputError(ck.path, 'is not the checkpoint the shards were computed from (file names, sizes or headers differ)');
  }
  const source: AssembleSource = { entries: new Map(), skipped: new Map(), gemmFlops: 0 };
  for (const f of found) {
    source.gemmFlops! += f.d.gemmFlops ?? 0;
    for (const [name, entry] of Object.entries(f.d.entries)) source.entries.set(name, path.join(path.dirname(f.file), entry));
    for (const s of f.d.skipped ?? []) source.skipped.set(s.name, s);
  }
  return { descriptor: byIndex.get(0)!.d, checkpoint: ck.path, source };
}

/** `loftq merge`: the files of one unsharded run, from n finished shards. */
export async function mergeShards(dirs: string[], opts: MergeOptions): Promise<RunResult> {
  const { descriptor: d, checkpoint, source } = await collectShards(dirs, opts.checkpoint);
  return quantizeCheckpoint(checkpoint, {
    out: opts.out,
    settings: d.settings,
    plan: d.plan,
    targets: d.targets,
    format: d.format,
    onNonFinite: d.onNonFinite,
    backend: d.backend,
    workers: opts.workers,
    signal: opts.signal,
    onProgress: opts.onProgress,
    assemble: source,
  });
}
