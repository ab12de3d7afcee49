// The descriptor a `quantize --shard i/n` run leaves beside its journal entries
// (`shard-i-of-n.json`, written last: its presence marks a finished shard), the checkpoint
// identity it records, and how a merge adopts a shard's entries. Shared by the run that
// writes descriptors (run.ts) and the merge that reads them (merge.ts).

import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { Checkpoint } from '../checkpoint';
import { tempPathFor, writeFileAtomic } from '../checkpoint';
import type {
  BackendName,
  CalibrationInfo,
  ExportFormat,
  MatrixReport,
  MatrixSettings,
  PlanFile,
} from '../protocol/lsp_ext';
import { InputError } from '../base/errors';
import { JOURNAL_DIR } from '../base/journal';
import { TOOL } from './version';

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
  /** The calibration its matrices were computed with (the merged report's calibration block). */
  calibration?: CalibrationInfo;
}

/** What a merge hands to quantizeCheckpoint: the finished results, by tensor name. */
export interface AssembleSource {
  entries: Map<string, string>;
  skipped: Map<string, MatrixReport>;
  gemmFlops?: number;
  calibration?: CalibrationInfo;
}

export const DESCRIPTOR_RE = /^shard-(\d+)-of-(\d+)\.json$/;

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

export async function writeShardDescriptor(
  out: string,
  d: Omit<ShardDescriptor, 'kind' | 'version' | 'tool'>,
): Promise<void> {
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
      if ((e as NodeJS.ErrnoException).code === 'ENOENT')
        throw new InputError(source, "is missing: a shard's finished matrix is gone; run that shard again");
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
