// Assembles the output folder from the input checkpoint and the journal:
//   model.safetensors (or the input's shards + index)  every input tensor; quantized
//                                                       matrices replaced by Q in the input dtype
//   loftq_init/adapter_model.safetensors                base_model.model.M.lora_{A,B}.weight
//   model.packed.safetensors (--format packed)          codes + scales + codebook per matrix
//   config.json, tokenizer files                        copied
// Every file is streamed into a temp file and renamed into place.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import {
  Checkpoint, checkSideFile, INDEX_FILE, makeFolders, openCheckpoint, readSideFile, readTensorBytes, SafetensorsWriter, TensorInfo, TensorSpec, writeError,
  writeFileAtomic,
} from '../checkpoint';
import type { MatrixReport } from '../protocol/lsp_ext';
import { moduleName } from '../plan/glob';
import { codebook } from '../quant/codebook';
import { ENTRY } from '../engine/journal';
import { throwIfAborted } from '../engine/errors';

export const ADAPTER_DIR = 'loftq_init';
export const PACKED_FILE = 'model.packed.safetensors';
const COPIED_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model', 'vocab.json', 'merges.txt', 'added_tokens.json'];

export interface Finished {
  report: MatrixReport;
  /** Journal entry file. */
  entry: string;
}

async function entryTensor(file: string, name: string): Promise<Uint8Array> {
  const ck = await openCheckpoint(file);
  return readTensorBytes(ck.byName.get(name)!);
}

/** Writes one output safetensors file with the same tensors (and order) as an input file. */
async function writeBackboneFile(target: string, inputTensors: TensorInfo[], metadata: Record<string, string>, finished: Map<string, Finished>, signal?: AbortSignal) {
  const specs: TensorSpec[] = inputTensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
  const w = await SafetensorsWriter.create(target, specs, metadata);
  const load = (t: TensorInfo) => {
    const f = finished.get(t.name);
    return f ? entryTensor(f.entry, ENTRY.q) : readTensorBytes(t);
  };
  // The next tensor is read while this one is written: the two copies overlap (2 GB of
  // backbone took 7.7 s to assemble one after the other).
  let next = inputTensors.length ? load(inputTensors[0]) : undefined;
  try {
    for (let i = 0; i < inputTensors.length; i++) {
      throwIfAborted(signal);
      const bytes = await next!;
      next = i + 1 < inputTensors.length ? load(inputTensors[i + 1]) : undefined;
      await w.write(inputTensors[i].name, bytes);
    }
    await w.commit();
  } catch (e) {
    next?.catch(() => undefined); // a read still in flight must not surface unhandled
    await w.abort();
    throw e;
  }
}

export async function writeBackbone(ck: Checkpoint, out: string, finished: Map<string, Finished>, signal?: AbortSignal): Promise<string[]> {
  const written: string[] = [];
  if (ck.kind === 'file') {
    const target = path.join(out, 'model.safetensors');
    await writeBackboneFile(target, ck.tensors, ck.metadata, finished, signal);
    return [target];
  }
  for (const h of ck.headers) {
    const target = path.join(out, path.basename(h.file));
    await writeBackboneFile(target, h.tensors, h.metadata, finished, signal);
    written.push(target);
  }
  // Tensor names are file data: a tensor called `__proto__` must become a key, not a prototype.
  const weightMap: Record<string, string> = Object.create(null);
  for (const t of ck.tensors) weightMap[t.name] = path.basename(t.file);
  const totalSize = ck.tensors.reduce((a, t) => a + t.byteLength, 0);
  const index = { metadata: { ...ck.metadata, total_size: totalSize }, weight_map: weightMap };
  await writeFileAtomic(path.join(out, INDEX_FILE), JSON.stringify(index, null, 2) + '\n');
  written.push(path.join(out, INDEX_FILE));
  return written;
}

export function adapterKey(tensorName: string, which: 'A' | 'B'): string {
  return `base_model.model.${moduleName(tensorName)}.lora_${which}.weight`;
}

export async function writeAdapters(out: string, ordered: Finished[], config: object, signal?: AbortSignal): Promise<void> {
  const dir = path.join(out, ADAPTER_DIR);
  await makeFolders(dir).catch((e) => { throw writeError(dir, e); });
  const specs: TensorSpec[] = [];
  // The entries' headers are read once; their tensors are then read by position.
  const sources: TensorInfo[] = [];
  for (const f of ordered) {
    const ck = await openCheckpoint(f.entry);
    for (const [which, name] of [['A', ENTRY.loraA], ['B', ENTRY.loraB]] as const) {
      const t = ck.byName.get(name)!;
      specs.push({ name: adapterKey(f.report.name, which), dtype: t.dtype, shape: t.shape });
      sources.push(t);
    }
  }
  const w = await SafetensorsWriter.create(path.join(dir, 'adapter_model.safetensors'), specs, { format: 'pt' });
  try {
    for (let i = 0; i < specs.length; i++) {
      throwIfAborted(signal);
      await w.write(specs[i].name, await readTensorBytes(sources[i]));
    }
    await w.commit();
  } catch (e) {
    await w.abort();
    throw e;
  }
  await writeFileAtomic(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n');
}

/** Packed naming: for a quantized `M.weight`, `M.weight.codes` (U8, b-bit codes packed LSB
 *  first), `M.weight.scales` (F32, one per block), `M.weight.codebook` (F32, 2^b values);
 *  `__metadata__["loftq.packed"]` maps each M.weight to {bits, blockSize, quantizer, shape,
 *  dtype}. Other tensors are stored unchanged under their own names. */
export async function writePacked(ck: Checkpoint, out: string, finished: Map<string, Finished>, signal?: AbortSignal): Promise<void> {
  const specs: TensorSpec[] = [];
  const packedInfo: Record<string, unknown> = Object.create(null);
  const sources: (() => Promise<Uint8Array>)[] = [];
  for (const t of ck.tensors) {
    const f = finished.get(t.name);
    if (!f) {
      specs.push({ name: t.name, dtype: t.dtype, shape: t.shape });
      sources.push(() => readTensorBytes(t));
      continue;
    }
    const e = await openCheckpoint(f.entry);
    const r = f.report;
    const table = codebook(r.quantizer, r.bits);
    packedInfo[t.name] = { bits: r.bits, blockSize: r.blockSize, quantizer: r.quantizer, shape: t.shape, dtype: t.dtype };
    specs.push({ name: `${t.name}.codes`, dtype: 'U8', shape: e.byName.get(ENTRY.codes)!.shape });
    const codes = e.byName.get(ENTRY.codes)!, scales = e.byName.get(ENTRY.scales)!;
    sources.push(() => readTensorBytes(codes));
    specs.push({ name: `${t.name}.scales`, dtype: 'F32', shape: e.byName.get(ENTRY.scales)!.shape });
    sources.push(() => readTensorBytes(scales));
    specs.push({ name: `${t.name}.codebook`, dtype: 'F32', shape: [table.length] });
    sources.push(async () => new Uint8Array(table.buffer.slice(table.byteOffset, table.byteOffset + table.byteLength)));
  }
  const w = await SafetensorsWriter.create(path.join(out, PACKED_FILE), specs, { 'loftq.packed': JSON.stringify(packedInfo) });
  try {
    for (let i = 0; i < specs.length; i++) {
      throwIfAborted(signal);
      await w.write(specs[i].name, await sources[i]());
    }
    await w.commit();
  } catch (e) {
    await w.abort();
    throw e;
  }
}

/** Refuses, before any work, side files that copyModelFiles would refuse after it (checkpoint/sidefile.ts). */
export async function checkModelFiles(ck: Checkpoint): Promise<void> {
  for (const f of COPIED_FILES) await checkSideFile(ck.folder, f);
}

export async function copyModelFiles(ck: Checkpoint, out: string): Promise<void> {
  for (const f of COPIED_FILES) {
    const data = await readSideFile(ck.folder, f);
    if (data) await writeFileAtomic(path.join(out, f), data);
  }
}

/** config.json parsed, or undefined when it is absent or not JSON; a hostile file is refused. */
export async function readConfig(ck: Checkpoint): Promise<{ model_type?: string; architectures?: string[] } | undefined> {
  const data = await readSideFile(ck.folder, 'config.json');
  if (!data) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(data));
  } catch {
    return undefined;
  }
}
