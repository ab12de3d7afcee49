// Is this .safetensors file one shard of a sharded checkpoint? Yes when an index file in its
// folder (`*.safetensors.index.json`, Hugging Face's weight_map) names it. Read-only and
// tolerant: an unreadable or malformed index just means "not known to be a shard" — the
// viewer shows the file itself either way.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ViewerShard } from '../../../server/src/protocol/lsp_ext';
import { naturalCompare } from '../../../webviews/src/naturalSort';

const MAX_INDEX_BYTES = 100_000_000;

export function findShard(file: string): ViewerShard | undefined {
  const dir = path.dirname(file);
  const me = path.basename(file);
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.safetensors.index.json')).sort();
  } catch {
    return undefined;
  }
  // model.safetensors.index.json first: it is the one loaders read.
  names.sort((a, b) => Number(b === 'model.safetensors.index.json') - Number(a === 'model.safetensors.index.json'));
  for (const n of names) {
    const index = path.join(dir, n);
    try {
      if (fs.statSync(index).size > MAX_INDEX_BYTES) continue;
      const map = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: unknown }).weight_map;
      if (!map || typeof map !== 'object' || Array.isArray(map)) continue;
      const values = Object.values(map as Record<string, unknown>).filter((v): v is string => typeof v === 'string');
      const shards = [...new Set(values)].sort(naturalCompare);
      const at = shards.indexOf(me);
      if (at >= 0 && shards.length > 1) return { index, number: at + 1, of: shards.length, tensors: values.length };
    } catch {
      // Not an index we can use: keep looking.
    }
  }
  return undefined;
}
