// Is this .safetensors file one shard of a sharded checkpoint? Yes when an index file in its
// folder (`*.safetensors.index.json`, Hugging Face's weight_map) names it. Read-only and
// tolerant: an unreadable or malformed index just means "not known to be a shard" — the
// viewer shows the file itself either way.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ViewerShard } from '../../../server/src/protocol/lsp_ext';
import { naturalCompare } from '../../../webviews/src/naturalSort';

const MAX_INDEX_BYTES = 100_000_000;
const INDEX = 'model.safetensors.index.json';

function weightMap(index: string): Record<string, unknown> | undefined {
  try {
    if (fs.statSync(index).size > MAX_INDEX_BYTES) return undefined;
    const map = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: unknown }).weight_map;
    return map && typeof map === 'object' && !Array.isArray(map) ? (map as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The .safetensors file that holds `tensor` in a checkpoint (a file, or a folder with
 * model.safetensors or a sharded index), for "Show in viewer"; undefined when none does.
 */
export function fileHolding(checkpoint: string, tensor: string): string | undefined {
  if (checkpoint.endsWith('.safetensors')) return fs.existsSync(checkpoint) ? checkpoint : undefined;
  const single = path.join(checkpoint, 'model.safetensors');
  if (fs.existsSync(single)) return single;
  const shard = weightMap(path.join(checkpoint, INDEX))?.[tensor];
  // Only a plain file name inside the folder (the index is downloaded data).
  if (typeof shard !== 'string' || shard !== path.basename(shard) || !shard.endsWith('.safetensors')) return undefined;
  const file = path.join(checkpoint, shard);
  return fs.existsSync(file) ? file : undefined;
}

export function findShard(file: string): ViewerShard | undefined {
  const dir = path.dirname(file);
  const me = path.basename(file);
  let names: string[];
  try {
    names = fs
      .readdirSync(dir)
      .filter((n) => n.endsWith('.safetensors.index.json'))
      .sort();
  } catch {
    return undefined;
  }
  // model.safetensors.index.json first: it is the one loaders read.
  names.sort((a, b) => Number(b === INDEX) - Number(a === INDEX));
  for (const n of names) {
    const index = path.join(dir, n);
    // An index we cannot use is skipped: keep looking.
    const map = weightMap(index);
    if (!map) continue;
    const values = Object.values(map).filter((v): v is string => typeof v === 'string');
    const shards = [...new Set(values)].sort(naturalCompare);
    const at = shards.indexOf(me);
    if (at >= 0 && shards.length > 1) return { index, number: at + 1, of: shards.length, tensors: values.length };
  }
  return undefined;
}
