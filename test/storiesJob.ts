// One matrix job for the executor tests (worker plans, trims): stories260K's layer-1 down_proj,
// NF2 r8 T3, packed; and the tensor bytes of a journal entry, which must agree between runs
// whose headers differ (the report in the header carries seconds and phases).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../server/src/checkpoint';
import type { MatrixJob } from '../server/src/engine/matrixJob';
import { repoRoot } from './helpers';

export async function storiesJob(): Promise<Omit<MatrixJob, 'journalFile'>> {
  const ck = await openCheckpoint(path.join(repoRoot, 'examples', 'stories260k'));
  const tensor = ck.byName.get('model.layers.1.mlp.down_proj.weight')!;
  const settings = { bits: 2, rank: 8, iters: 3, quantizer: 'nf' as const, blockSize: 64 };
  return { tensor, settings, fanInFanOut: false, packed: true, onNonFinite: 'refuse' };
}

/** A journal entry's bytes after its safetensors header. */
export function entryTensorBytes(file: string): Buffer {
  const b = fs.readFileSync(file);
  return b.subarray(8 + Number(b.readBigUInt64LE(0)));
}
