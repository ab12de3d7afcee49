// Assembles the output folder from the input checkpoint and the journal:
//   model.safetensors (or the input's shards + index)  every input tensor; quantized
//                                                       matrices replaced by Q in the input dtype
//   loftq_init/adapter_model.safetensors                base_model.model.M.lora_{A,B}.weight
//   model.packed.safetensors (--format packed)          codes + scales + codebook per matrix
//   config.json, tokenizer files                        copied
// Every file is streamed into a temp file and handed to an OutputCommit (checkpoint/commit.ts):
// nothing visible changes until the caller commits them all together.

import { ScratchBuffers } from '../base/scratchBuffers';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import {
  Checkpoint,
  checkSideFile,
  INDEX_FILE,
  makeFolders,
  openCheckpoint,
  OutputCommit,
  readSideFile,
  readTensorBytes,
  SafetensorsWriter,
  ShardedSafetensorsWriter,
  TensorInfo,
  TensorSpec,
  writeError,
} from '../checkpoint';
import type { MatrixReport } from '../protocol/lsp_ext';
import { moduleName } from '../plan/glob';
import { codebook } from '../quant/codebook';
import { ENTRY } from '../base/journal';
import { throwIfAborted } from '../base/errors';

export const ADAPTER_DIR = 'loftq_init';
export const PACKED_FILE = 'model.packed.safetensors';
const COPIED_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'added_tokens.json',
];

export interface Finished {
  report: MatrixReport;
  /** Journal entry file. */
  entry: string;
}

async function entryTensor(file: string, name: string, into?: ScratchBuffers): Promise<Uint8Array> {
  const ck = await openCheckpoint(file);
  return readTensorBytes(ck.byName.get(name)!, into);
}

/** One tensor of an output file: its header entry and where its bytes come from (`slot` is a
 *  reused buffer the bytes may live in until the next load into the same slot). */
export interface OutTensor {
  spec: TensorSpec;
  load: (slot: ScratchBuffers) => Promise<Uint8Array>;
}

/** Streams tensors into `put` in order, reading the next one while this one is written (the
 *  two copies overlap: 2 GB of backbone took 7.7 s to assemble one after the other). The two
 *  in flight take turns with two reused buffers: fresh ones for every tensor cost a page
 *  fault per 4 KiB, most of the assembly's time on this project's machine. */
async function streamTensors(
  tensors: OutTensor[],
  put: (name: string, b: Uint8Array) => Promise<void>,
  signal?: AbortSignal,
) {
  const slots = [new ScratchBuffers(), new ScratchBuffers()];
  const load = (i: number) => tensors[i].load(slots[i % 2]);
  let next = tensors.length ? load(0) : undefined;
  try {
    for (let i = 0; i < tensors.length; i++) {
      throwIfAborted(signal);
      const bytes = await next!;
      next = i + 1 < tensors.length ? load(i + 1) : undefined;
      await put(tensors[i].spec.name, bytes);
    }
  } catch (e) {
    next?.catch(() => undefined); // a read still in flight must not surface unhandled
    throw e;
  }
}

/** Output tensors in the input's layout: one list per input file (shard), in its order. */
export type OutLayout = OutTensor[][];

/** Writes `layout` with the input's sharding, staged into `commit`: model.safetensors, or the
 *  input's shard names (data) and the index (the entry transformers loads). */
export async function writeLayout(
  ck: Checkpoint,
  out: string,
  layout: OutLayout,
  commit: OutputCommit,
  signal?: AbortSignal,
): Promise<string[]> {
  const specsOf = (ts: OutTensor[]): TensorSpec[] => ts.map((t) => t.spec);
  if (ck.kind === 'file') {
    const target = path.join(out, 'model.safetensors');
    const w = await SafetensorsWriter.create(target, specsOf(layout[0]), ck.metadata);
    try {
      await streamTensors(layout[0], (n, b) => w.write(n, b), signal);
      await commit.addWriter(w, 'main');
    } catch (e) {
      await w.abort();
      throw e;
    }
    return [target];
  }
  const w = await ShardedSafetensorsWriter.create(
    out,
    ck.headers.map((h, i) => ({ file: path.basename(h.file), tensors: specsOf(layout[i]), metadata: h.metadata })),
    { indexMetadata: ck.metadata },
  );
  try {
    await streamTensors(layout.flat(), (n, b) => w.write(n, b), signal);
    const res = await w.stage(commit);
    return [...res.files, res.index];
  } catch (e) {
    await w.abort();
    throw e;
  }
}

/** The input's tensors, one list per file. */
export function inputLayout(ck: Checkpoint): TensorInfo[][] {
  return ck.kind === 'file' ? [ck.tensors] : ck.headers.map((h) => h.tensors);
}

/** An input tensor as it is. */
export function unchanged(t: TensorInfo): OutTensor {
  return { spec: { name: t.name, dtype: t.dtype, shape: t.shape }, load: (slot) => readTensorBytes(t, slot) };
}

/** The dense backbone: every input tensor, quantized matrices replaced by Q in the input dtype. */
export async function writeBackbone(
  ck: Checkpoint,
  out: string,
  finished: Map<string, Finished>,
  commit: OutputCommit,
  signal?: AbortSignal,
): Promise<string[]> {
  const layout = inputLayout(ck).map((ts) =>
    ts.map((t): OutTensor => {
      const f = finished.get(t.name);
      return f ? { spec: unchanged(t).spec, load: (slot) => entryTensor(f.entry, ENTRY.q, slot) } : unchanged(t);
    }),
  );
  return writeLayout(ck, out, layout, commit, signal);
}

/** Old output files to remove before any new one appears, in this order: the report (the
 *  completion marker), the files loaders start from, then their data — including the shards
 *  an old index lists, so no old shard or adapter is left beside new ones. */
export async function retiredFiles(out: string, report: string): Promise<string[]> {
  const old: string[] = [];
  try {
    const index = JSON.parse(await fsp.readFile(path.join(out, INDEX_FILE), 'utf8')) as {
      weight_map?: Record<string, unknown>;
    };
    for (const f of new Set(Object.values(index.weight_map ?? {}))) {
      if (typeof f === 'string' && f === path.basename(f) && f.endsWith('.safetensors') && !f.startsWith('.'))
        old.push(path.join(out, f));
    }
  } catch {
    /* no old index, or not ours to read */
  }
  return [
    report,
    path.join(out, INDEX_FILE),
    path.join(out, 'model.safetensors'),
    path.join(out, PACKED_FILE),
    path.join(out, 'loftq_hqq.py'),
    path.join(out, ADAPTER_DIR, 'adapter_config.json'),
    path.join(out, ADAPTER_DIR, 'adapter_model.safetensors'),
    ...old,
  ];
}

export function adapterKey(tensorName: string, which: 'A' | 'B'): string {
  return `base_model.model.${moduleName(tensorName)}.lora_${which}.weight`;
}

export async function writeAdapters(
  out: string,
  ordered: Finished[],
  config: object,
  commit: OutputCommit,
  signal?: AbortSignal,
): Promise<void> {
  const dir = path.join(out, ADAPTER_DIR);
  await makeFolders(dir).catch((e) => {
    throw writeError(dir, e);
  });
  const specs: TensorSpec[] = [];
  // The entries' headers are read once; their tensors are then read by position.
  const sources: TensorInfo[] = [];
  for (const f of ordered) {
    const ck = await openCheckpoint(f.entry);
    for (const [which, name] of [
      ['A', ENTRY.loraA],
      ['B', ENTRY.loraB],
    ] as const) {
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
    await commit.addWriter(w, 'data');
  } catch (e) {
    await w.abort();
    throw e;
  }
  await commit.addFile(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n', 'entry');
}

/** Packed naming: for a quantized `M.weight`, `M.weight.codes` (U8, b-bit codes packed LSB
 *  first), `M.weight.scales` (F32, one per block), `M.weight.codebook` (F32, 2^b values);
 *  `__metadata__["loftq.packed"]` maps each M.weight to {bits, blockSize, quantizer, shape,
 *  dtype}. Other tensors are stored unchanged under their own names. */
export async function writePacked(
  ck: Checkpoint,
  out: string,
  finished: Map<string, Finished>,
  commit: OutputCommit,
  signal?: AbortSignal,
): Promise<void> {
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
    packedInfo[t.name] = {
      bits: r.bits,
      blockSize: r.blockSize,
      quantizer: r.quantizer,
      shape: t.shape,
      dtype: t.dtype,
    };
    specs.push({ name: `${t.name}.codes`, dtype: 'U8', shape: e.byName.get(ENTRY.codes)!.shape });
    const codes = e.byName.get(ENTRY.codes)!,
      scales = e.byName.get(ENTRY.scales)!;
    sources.push(() => readTensorBytes(codes));
    specs.push({ name: `${t.name}.scales`, dtype: 'F32', shape: e.byName.get(ENTRY.scales)!.shape });
    sources.push(() => readTensorBytes(scales));
    specs.push({ name: `${t.name}.codebook`, dtype: 'F32', shape: [table.length] });
    sources.push(async () => new Uint8Array(table.buffer.slice(table.byteOffset, table.byteOffset + table.byteLength)));
  }
  const w = await SafetensorsWriter.create(path.join(out, PACKED_FILE), specs, {
    'loftq.packed': JSON.stringify(packedInfo),
  });
  try {
    for (let i = 0; i < specs.length; i++) {
      throwIfAborted(signal);
      await w.write(specs[i].name, await sources[i]());
    }
    await commit.addWriter(w, 'entry');
  } catch (e) {
    await w.abort();
    throw e;
  }
}

/** Refuses, before any work, side files that copyModelFiles would refuse after it (checkpoint/sidefile.ts). */
export async function checkModelFiles(ck: Checkpoint): Promise<void> {
  for (const f of COPIED_FILES) await checkSideFile(ck.folder, f);
}

/** Copies the input's side files, except those the format writes itself (`except`). */
export async function copyModelFiles(
  ck: Checkpoint,
  out: string,
  commit: OutputCommit,
  except: readonly string[] = [],
): Promise<void> {
  for (const f of COPIED_FILES) {
    if (except.includes(f)) continue;
    const data = await readSideFile(ck.folder, f);
    if (data) await commit.addFile(path.join(out, f), data, 'data');
  }
}

/** config.json parsed, or undefined when it is absent or not JSON; a hostile file is refused. */
export async function readConfig(
  ck: Checkpoint,
): Promise<{ model_type?: string; architectures?: string[] } | undefined> {
  const data = await readSideFile(ck.folder, 'config.json');
  if (!data) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(data));
  } catch {
    return undefined;
  }
}
