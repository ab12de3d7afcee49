// A Hugging Face sharded checkpoint: a folder with model.safetensors.index.json whose
// weight_map names, for every tensor, the shard holding it. Shard names come from a
// downloaded file, so each must be a plain file name that resolves (symlinks followed)
// inside the folder; every shard must hold exactly the tensors the map gives it.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { brief, CheckpointError } from './errors';
import { SafetensorsHeader, setOwn, TensorInfo } from './header';
import { findDuplicateKey } from './jsonkeys';
import { isPickleName, pickleMessage } from './pickle';
import { readHeader, statOrThrow } from './reader';

export const INDEX_FILE = 'model.safetensors.index.json';
const MAX_INDEX_BYTES = 100_000_000;

export interface ShardedParts {
  files: string[];
  metadata: Record<string, string>;
  headers: SafetensorsHeader[];
  tensors: TensorInfo[];
}

/** Rejects anything but a plain `*.safetensors` file name (no folders, no `..`). */
export function checkShardName(indexFile: string, name: unknown): string {
  if (typeof name !== 'string' || name.length === 0)
    throw new CheckpointError('index', indexFile, `weight_map holds ${brief(name)} where a shard file name belongs`);
  if (
    name !== path.posix.basename(name) ||
    name !== path.basename(name) ||
    name === '.' ||
    name === '..' ||
    name.includes('\\') ||
    name.includes('\0') ||
    path.isAbsolute(name)
  ) {
    throw new CheckpointError(
      'unsafe-path',
      indexFile,
      `shard file name '${name}' is not a plain file name inside the checkpoint folder`,
    );
  }
  if (!name.endsWith('.safetensors')) {
    if (isPickleName(name)) throw pickleMessage(path.join(path.dirname(indexFile), name));
    throw new CheckpointError('index', indexFile, `shard file '${name}' is not a .safetensors file`);
  }
  return name;
}

/** The shard's path, after checking that it exists and (symlinks resolved) stays inside the folder. */
async function resolveShard(folderReal: string, folder: string, indexFile: string, name: string): Promise<string> {
  const p = path.join(folder, name);
  let real: string;
  try {
    real = await fsp.realpath(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new CheckpointError('not-found', p, `is listed in ${INDEX_FILE} but does not exist`);
    throw new CheckpointError(
      'unreadable',
      p,
      `cannot be resolved (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  const rel = path.relative(folderReal, real);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new CheckpointError(
      'unsafe-path',
      indexFile,
      `shard '${name}' resolves to ${real}, outside the checkpoint folder`,
    );
  }
  return p;
}

async function readIndex(indexFile: string): Promise<Record<string, unknown>> {
  const st = await statOrThrow(indexFile);
  if (!st.isFile()) throw new CheckpointError('index', indexFile, 'is not a file');
  if (st.size > MAX_INDEX_BYTES)
    throw new CheckpointError('index', indexFile, `is ${st.size} bytes, over the 100 MB limit for an index`);
  let text: string;
  let index: unknown;
  try {
    text = await fsp.readFile(indexFile, 'utf8');
  } catch (e) {
    throw new CheckpointError(
      'unreadable',
      indexFile,
      `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  try {
    index = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError('index', indexFile, `is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  if (index === null || typeof index !== 'object' || Array.isArray(index))
    throw new CheckpointError('index', indexFile, 'is not a JSON object');
  const dup = findDuplicateKey(text);
  if (dup)
    throw new CheckpointError(
      'duplicate-key',
      indexFile,
      `key '${dup.key}' appears twice${dup.path.length ? ` in ${dup.path.join('.')}` : ''}`,
    );
  return index as Record<string, unknown>;
}

export async function readSharded(folder: string, indexFile: string): Promise<ShardedParts> {
  const index = await readIndex(indexFile);
  const weightMap = index.weight_map;
  if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
    throw new CheckpointError(
      'index',
      indexFile,
      `weight_map is ${brief(weightMap)}, not an object mapping tensor names to shard files`,
    );
  }
  const metadata: Record<string, string> = {};
  const metaRaw = index.metadata;
  if (metaRaw !== undefined && (metaRaw === null || typeof metaRaw !== 'object' || Array.isArray(metaRaw))) {
    throw new CheckpointError('index', indexFile, `metadata is ${brief(metaRaw)}, not an object`);
  }
  for (const [k, v] of Object.entries((metaRaw ?? {}) as Record<string, unknown>)) {
    setOwn(metadata, k, typeof v === 'string' ? v : brief(v));
  }
  const shardOf = new Map<string, string>();
  const shardNames = new Set<string>();
  for (const [tensor, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    const name = checkShardName(indexFile, shard);
    shardNames.add(name);
    shardOf.set(tensor, name);
  }
  const folderReal = await fsp.realpath(folder).catch((e: NodeJS.ErrnoException) => {
    throw new CheckpointError('unreadable', folder, `cannot be resolved (${e.code ?? e.message})`);
  });
  const headers: SafetensorsHeader[] = [];
  for (const s of [...shardNames].sort())
    headers.push(await readHeader(await resolveShard(folderReal, folder, indexFile, s)));
  const tensors: TensorInfo[] = [];
  for (const h of headers) {
    const shard = path.basename(h.file);
    for (const t of h.tensors) {
      const listed = shardOf.get(t.name);
      if (listed !== shard) {
        throw new CheckpointError(
          'index',
          indexFile,
          `shard '${shard}' holds tensor '${t.name}', which the weight_map ` +
            (listed !== undefined ? `puts in '${listed}'` : 'does not list'),
        );
      }
      tensors.push(t);
    }
  }
  const present = new Set(tensors.map((t) => t.name));
  for (const [tensor, shard] of shardOf) {
    if (!present.has(tensor))
      throw new CheckpointError(
        'index',
        indexFile,
        `weight_map puts tensor '${tensor}' in '${shard}', which does not hold it`,
      );
  }
  return { files: headers.map((h) => h.file), metadata, headers, tensors };
}
