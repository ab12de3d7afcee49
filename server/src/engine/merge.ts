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
import { promises as fsp } from 'node:fs';
import type { Checkpoint } from '../checkpoint';
import { openCheckpoint, readRegularFile } from '../checkpoint';
import type { ProgressEvent } from '../protocol/lsp_ext';
import { InputError } from '../base/errors';
import { JOURNAL_DIR } from '../base/journal';
import type { RunResult } from './api';
import { quantizeCheckpoint } from './run';
import { checkpointIdentity, DESCRIPTOR_RE } from './shardDescriptor';
import type { AssembleSource, ShardDescriptor } from './shardDescriptor';

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
    throw new InputError(
      dir,
      `holds no shard results (no ${JOURNAL_DIR}/ folder); run loftq quantize … --shard i/n --out ${dir} first`,
    );
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
    if (d?.kind !== 'loftq-shard' || d.version !== 1 || !d.shard || typeof d.entries !== 'object')
      throw new InputError(file, 'is not a loftq shard descriptor (version 1)');
    const m = DESCRIPTOR_RE.exec(n)!;
    if (d.shard.index !== Number(m[1]) || d.shard.count !== Number(m[2]))
      throw new InputError(file, `describes shard ${d.shard.index}/${d.shard.count}, not the one its name says`);
    found.push({ dir, file, d });
  }
  if (found.length === 0)
    throw new InputError(
      dir,
      `holds no finished shard (no ${JOURNAL_DIR}/shard-I-of-N.json); did its loftq quantize … --shard i/n run finish?`,
    );
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
    // Where the token file lay may differ from machine to machine; what it held may not.
    ['calibration', d.calibration ? { ...d.calibration, file: undefined } : null],
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
        throw new InputError(
          f.file,
          `shard ${f.d.shard.index}/${f.d.shard.count} differs from ${first.file} in ${ref[i][0]}: ` +
            `${short(mine[i][1])} vs ${short(ref[i][1])}; all shards must come from one loftq quantize command`,
        );
      }
    }
  }
  const count = first.d.shard.count;
  const byIndex = new Map<number, Found>();
  for (const f of found) {
    const other = byIndex.get(f.d.shard.index);
    if (other)
      throw new InputError(f.file, `shard ${f.d.shard.index}/${count} is also in ${other.file}; give each shard once`);
    byIndex.set(f.d.shard.index, f);
  }
  const missing = [...Array(count).keys()].filter((i) => !byIndex.has(i));
  if (missing.length) {
    throw new InputError(
      dirs.join(', '),
      `missing finished shard${missing.length > 1 ? 's' : ''} ${missing.map((i) => `${i}/${count}`).join(', ')} ` +
        `(of ${count}); run or finish them, then merge again`,
    );
  }
  const ckPath = checkpointOverride ?? first.d.checkpoint;
  let ck: Checkpoint;
  try {
    ck = await openCheckpoint(ckPath);
  } catch (e) {
    if (checkpointOverride) throw e;
    throw new InputError(
      ckPath,
      `the checkpoint the shards recorded cannot be opened here (${(e as Error).message}); pass --checkpoint PATH`,
    );
  }
  if (JSON.stringify(checkpointIdentity(ck)) !== JSON.stringify(first.d.files)) {
    throw new InputError(
      ck.path,
      'is not the checkpoint the shards were computed from (file names, sizes or headers differ)',
    );
  }
  const source: AssembleSource = {
    entries: new Map(),
    skipped: new Map(),
    gemmFlops: 0,
    ...(first.d.calibration ? { calibration: first.d.calibration } : {}),
  };
  for (const f of found) {
    source.gemmFlops! += f.d.gemmFlops ?? 0;
    for (const [name, entry] of Object.entries(f.d.entries))
      source.entries.set(name, path.join(path.dirname(f.file), entry));
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
