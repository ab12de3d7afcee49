// Opens a checkpoint — one .safetensors file or a Hugging Face folder (sharded with
// model.safetensors.index.json, or a single file) — reading headers only. Tensor data is
// read later, one tensor at a time, with positioned reads.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from './errors';
import { parseHeader, parseHeaderLength, SafetensorsHeader, TensorInfo } from './header';
import { toFloat32, FLOAT_DTYPES } from './dtype';

export const INDEX_FILE = 'model.safetensors.index.json';
const PICKLE_EXTENSIONS = ['.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle'];

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

export function pickleMessage(file: string): CheckpointError {
  return new CheckpointError('pickle', file,
    'is a pickle checkpoint, which can run code when loaded and is never opened here; convert it to safetensors first, e.g. ' +
    `python -c "import transformers as t; t.AutoModelForCausalLM.from_pretrained('DIR').save_pretrained('OUT', safe_serialization=True)"`);
}

async function statOrThrow(p: string) {
  try {
    return await fsp.stat(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CheckpointError('not-found', p, 'does not exist');
    throw new CheckpointError('unreadable', p, `cannot be read (${code ?? (e as Error).message})`);
  }
}

/** Reads and validates one safetensors file's header. */
export async function readHeader(file: string): Promise<SafetensorsHeader> {
  if (PICKLE_EXTENSIONS.includes(path.extname(file).toLowerCase())) throw pickleMessage(file);
  const st = await statOrThrow(file);
  if (!st.isFile()) throw new CheckpointError('not-safetensors', file, 'is not a file');
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, 'r');
  } catch (e) {
    throw new CheckpointError('unreadable', file, `cannot be opened (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const first = new Uint8Array(9);
    await fh.read(first, 0, 9, 0);
    // A safetensors file has '{' right after its 8-byte length; only then is it not a
    // pickle (0x80 protocol byte) or a torch.save zip ('PK'), whose first bytes a length
    // can also take.
    if (first[8] !== 0x7b) {
      if (first[0] === 0x80 && first[1] >= 2 && first[1] <= 5) throw pickleMessage(file);
      if (first[0] === 0x50 && first[1] === 0x4b) throw pickleMessage(file);
    }
    const n = parseHeaderLength(file, first.subarray(0, 8), st.size);
    const json = new Uint8Array(n);
    const { bytesRead } = await fh.read(json, 0, n, 8);
    if (bytesRead !== n) throw new CheckpointError('io', file, `short read of the header (${bytesRead} of ${n} bytes)`);
    return parseHeader(file, json, n, st.size);
  } finally {
    await fh.close();
  }
}

function safeShardName(indexFile: string, name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new CheckpointError('index', indexFile, `weight_map holds a non-string file name ${JSON.stringify(name)}`);
  if (name !== path.basename(name) || name === '.' || name === '..' || name.includes('\\') || name.includes('\0')) {
    throw new CheckpointError('unsafe-path', indexFile, `shard file name '${name}' is not a plain file name inside the checkpoint folder`);
  }
  if (!name.endsWith('.safetensors')) {
    if (PICKLE_EXTENSIONS.includes(path.extname(name).toLowerCase())) throw pickleMessage(path.join(path.dirname(indexFile), name));
    throw new CheckpointError('index', indexFile, `shard file '${name}' is not a .safetensors file`);
  }
  return name;
}

async function openSharded(folder: string, indexFile: string): Promise<Checkpoint> {
  let index: unknown;
  try {
    index = JSON.parse(await fsp.readFile(indexFile, 'utf8'));
  } catch (e) {
    throw new CheckpointError('index', indexFile, `is not valid JSON (${(e as Error).message})`);
  }
  const weightMap = (index as { weight_map?: unknown })?.weight_map;
  if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
    throw new CheckpointError('index', indexFile, 'has no weight_map object');
  }
  const metaRaw = (index as { metadata?: unknown }).metadata;
  const metadata: Record<string, string> = {};
  if (metaRaw && typeof metaRaw === 'object') for (const [k, v] of Object.entries(metaRaw)) metadata[k] = String(v);
  const fileOf = new Map<string, string>();
  const shardNames: string[] = [];
  for (const [tensor, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    const name = safeShardName(indexFile, shard);
    if (!shardNames.includes(name)) shardNames.push(name);
    fileOf.set(tensor, name);
  }
  shardNames.sort();
  const headers = [];
  for (const s of shardNames) headers.push(await readHeader(path.join(folder, s)));
  const tensors: TensorInfo[] = [];
  for (const h of headers) {
    const shard = path.basename(h.file);
    for (const t of h.tensors) {
      if (fileOf.get(t.name) !== shard) {
        throw new CheckpointError('index', indexFile, `shard '${shard}' holds tensor '${t.name}', which the weight_map ${fileOf.has(t.name) ? `puts in '${fileOf.get(t.name)}'` : 'does not list'}`);
      }
      tensors.push(t);
    }
  }
  const byName = new Map(tensors.map((t) => [t.name, t]));
  for (const [tensor, shard] of fileOf) {
    if (!byName.has(tensor)) throw new CheckpointError('index', indexFile, `weight_map lists '${tensor}' in '${shard}', which does not hold it`);
  }
  return { path: folder, folder, kind: 'sharded', files: headers.map((h) => h.file), metadata, headers, tensors, byName };
}

function single(p: string, h: SafetensorsHeader): Checkpoint {
  return { path: p, folder: path.dirname(h.file), kind: 'file', files: [h.file], metadata: h.metadata, headers: [h], tensors: h.tensors, byName: new Map(h.tensors.map((t) => [t.name, t])) };
}

/** Opens a .safetensors file or a checkpoint folder. Throws CheckpointError. */
export async function openCheckpoint(p: string): Promise<Checkpoint> {
  const abs = path.resolve(p);
  const st = await statOrThrow(abs);
  if (st.isFile()) {
    if (path.basename(abs) === INDEX_FILE) return openSharded(path.dirname(abs), abs);
    return single(abs, await readHeader(abs));
  }
  const entries = await fsp.readdir(abs);
  if (entries.includes(INDEX_FILE)) return openSharded(abs, path.join(abs, INDEX_FILE));
  const st_files = entries.filter((e) => e.endsWith('.safetensors')).sort();
  if (st_files.length === 1) {
    const c = single(abs, await readHeader(path.join(abs, st_files[0])));
    return { ...c, path: abs, folder: abs };
  }
  if (st_files.length > 1) throw new CheckpointError('index', abs, `holds ${st_files.length} .safetensors files but no ${INDEX_FILE}`);
  const pickled = entries.find((e) => PICKLE_EXTENSIONS.includes(path.extname(e).toLowerCase()));
  if (pickled) throw pickleMessage(path.join(abs, pickled));
  throw new CheckpointError('not-safetensors', abs, 'holds no .safetensors file');
}

/** Reads one tensor's raw bytes with a positioned read. */
export async function readTensorBytes(t: TensorInfo): Promise<Uint8Array> {
  const out = new Uint8Array(t.byteLength);
  const fh = await fsp.open(t.file, 'r');
  try {
    let done = 0;
    while (done < t.byteLength) {
      const { bytesRead } = await fh.read(out, done, t.byteLength - done, t.start + done);
      if (bytesRead === 0) throw new CheckpointError('io', t.file, `file ended while reading (${done} of ${t.byteLength} bytes)`, t.name);
      done += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return out;
}

/** Reads a float tensor (F32/F16/BF16) as float32. */
export async function readTensorF32(t: TensorInfo): Promise<Float32Array> {
  if (!FLOAT_DTYPES.has(t.dtype)) throw new CheckpointError('dtype', t.file, `dtype ${t.dtype} is not a float type the engine computes on`, t.name);
  return toFloat32(t.dtype, await readTensorBytes(t));
}
