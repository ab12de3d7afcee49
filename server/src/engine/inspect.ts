import * as path from 'node:path';
import type { Checkpoint } from '../checkpoint';
import type { InspectResult } from '../protocol/lsp_ext';
import { shardOf } from './shardOf';

/** Header summary of a checkpoint (no tensor data is read). */
export function inspectCheckpoint(ck: Checkpoint): InspectResult {
  const byDtype: InspectResult['totals']['byDtype'] = {};
  let parameters = 0,
    bytes = 0;
  const tensors = ck.tensors.map((t) => {
    const d = (byDtype[t.dtype] ??= { tensors: 0, parameters: 0, bytes: 0 });
    d.tensors++;
    d.parameters += t.parameters;
    d.bytes += t.byteLength;
    parameters += t.parameters;
    bytes += t.byteLength;
    return {
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      parameters: t.parameters,
      bytes: t.byteLength,
      file: path.basename(t.file),
    };
  });
  return {
    checkpoint: ck.path,
    files: ck.files,
    metadata: ck.metadata,
    tensors,
    totals: { tensors: tensors.length, parameters, bytes, byDtype },
  };
}

/** The summary plus, for a single .safetensors file, the sharded checkpoint it belongs to
 *  (what loftq/inspect answers: the viewer's shard note and whole-checkpoint Quantize). */
export async function inspectWithShard(ck: Checkpoint): Promise<InspectResult> {
  const info = inspectCheckpoint(ck);
  const shard = ck.path.endsWith('.safetensors') ? await shardOf(ck.path) : undefined;
  return shard ? { ...info, shard } : info;
}
