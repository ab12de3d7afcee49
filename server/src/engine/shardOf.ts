// Is this .safetensors file one shard of a sharded checkpoint? Yes when an index file in its
// folder (`*.safetensors.index.json`, Hugging Face's weight_map) names it among several
// shards. Tolerant: an unreadable or malformed index means "not known to be a shard" — a
// viewer shows the file itself either way. Answered by the server for loftq/inspect, so the
// client never reads a checkpoint's files itself.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ViewerShard } from '../protocol/lsp_ext';
import { naturalCompare } from '../base/naturalSort';

const MAX_INDEX_BYTES = 100_000_000;
const INDEX = 'model.safetensors.index.json';

async function weightMap(index: string): Promise<Record<string, unknown> | undefined> {
  try {
    if ((await fsp.stat(index)).size > MAX_INDEX_BYTES) return undefined;
    const map = (JSON.parse(await fsp.readFile(index, 'utf8')) as { weight_map?: unknown }).weight_map;
    return map && typeof map === 'object' && !Array.isArray(map) ? (map as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export async function shardOf(file: string): Promise<ViewerShard | undefined> {
  const dir = path.dirname(file);
  const me = path.basename(file);
  let names: string[];
  try {
    names = (await fsp.readdir(dir)).filter((n) => n.endsWith('.safetensors.index.json')).sort();
  } catch {
    return undefined;
  }
  // model.safetensors.index.json first: it is the one loaders read.
  names.sort((a, b) => Number(b === INDEX) - Number(a === INDEX));
  for (const n of names) {
    const index = path.join(dir, n);
    // An index we cannot use is skipped: keep looking.
    const map = await weightMap(index);
    if (!map) continue;
    const values = Object.values(map).filter((v): v is string => typeof v === 'string');
    const shards = [...new Set(values)].sort(naturalCompare);
    const at = shards.indexOf(me);
    if (at >= 0 && shards.length > 1) return { index, number: at + 1, of: shards.length, tensors: values.length };
  }
  return undefined;
}
