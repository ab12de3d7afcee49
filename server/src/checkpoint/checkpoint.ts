// Opens a checkpoint — one .safetensors file or a Hugging Face folder (sharded with
// model.safetensors.index.json, or a single file) — reading headers only. Tensor data is
// read later, one tensor at a time, with positioned reads (reader.ts).

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from './errors';
import { SafetensorsHeader, TensorInfo } from './header';
import { isPickleName, pickleMessage } from './pickle';
import { readHeader, statOrThrow } from './reader';
import { INDEX_FILE, readSharded } from './sharded';

export interface Checkpoint {
  /** The path the user gave, absolute. */
  path: string;
  /** Folder holding config.json, tokenizer files, etc. */
  folder: string;
  kind: 'file' | 'sharded';
  /** Absolute paths of the safetensors files, in index order. */
  files: string[];
  /** Metadata of the first file (single) or of the index (sharded). */
  metadata: Record<string, string>;
  headers: SafetensorsHeader[];
  /** All tensors, file by file, in data order. */
  tensors: TensorInfo[];
  byName: Map<string, TensorInfo>;
}

async function openSharded(folder: string, indexFile: string): Promise<Checkpoint> {
  const s = await readSharded(folder, indexFile);
  return { path: folder, folder, kind: 'sharded', ...s, byName: new Map(s.tensors.map((t) => [t.name, t])) };
}

function single(p: string, folder: string, h: SafetensorsHeader): Checkpoint {
  return {
    path: p,
    folder,
    kind: 'file',
    files: [h.file],
    metadata: h.metadata,
    headers: [h],
    tensors: h.tensors,
    byName: new Map(h.tensors.map((t) => [t.name, t])),
  };
}

async function listFolder(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch (e) {
    throw new CheckpointError(
      'unreadable',
      dir,
      `cannot be listed (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
}

/** Opens a .safetensors file or a checkpoint folder. Throws CheckpointError. */
export async function openCheckpoint(p: string): Promise<Checkpoint> {
  const abs = path.resolve(p);
  const st = await statOrThrow(abs);
  if (st.isFile()) {
    if (path.basename(abs) === INDEX_FILE) return openSharded(path.dirname(abs), abs);
    if (abs.endsWith('.index.json') && isPickleName(abs.slice(0, -'.index.json'.length))) throw pickleMessage(abs);
    return single(abs, path.dirname(abs), await readHeader(abs));
  }
  if (!st.isDirectory()) throw new CheckpointError('not-safetensors', abs, 'is neither a file nor a folder');
  const entries = await listFolder(abs);
  if (entries.includes(INDEX_FILE)) return openSharded(abs, path.join(abs, INDEX_FILE));
  const stFiles = entries.filter((e) => e.endsWith('.safetensors')).sort();
  if (stFiles.length === 1) return single(abs, abs, await readHeader(path.join(abs, stFiles[0])));
  if (stFiles.length > 1)
    throw new CheckpointError('index', abs, `holds ${stFiles.length} .safetensors files but no ${INDEX_FILE}`);
  const pickled = entries.find(
    (e) => isPickleName(e) || (e.endsWith('.index.json') && isPickleName(e.slice(0, -'.index.json'.length))),
  );
  if (pickled) throw pickleMessage(path.join(abs, pickled));
  throw new CheckpointError('not-safetensors', abs, 'holds no .safetensors file');
}
