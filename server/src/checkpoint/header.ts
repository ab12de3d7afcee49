// Parses and validates a safetensors header the way the reference implementation does:
// u64 LE length ≤ 100 MB inside the file, a JSON object without duplicate keys,
// `__metadata__` string→string, known dtypes, byte length = product(shape) × size,
// offsets contiguous from 0 to the end of the file. Nothing is allocated from a header
// field before it has been checked against the file's real size.

import { brief, CheckpointError } from './errors';
import { DTYPE_SIZE, DType, isDType } from './dtype';
import { findDuplicateKey } from './jsonkeys';
import { findFloatInteger } from './jsonintegers';

export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  parameters: number;
  /** Absolute path of the file holding it. */
  file: string;
  /** Absolute byte position in the file. */
  start: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  headerLength: number;
  metadata: Record<string, string>;
  /** In data order (ascending offsets). */
  tensors: TensorInfo[];
}

export function parseHeaderLength(file: string, first8: Uint8Array, fileSize: number): number {
  if (fileSize < 8)
    throw new CheckpointError('header-length', file, `file is ${fileSize} bytes, too short for a safetensors header`);
  const view = new DataView(first8.buffer, first8.byteOffset, 8);
  const n = view.getBigUint64(0, true);
  if (n === 0n) throw new CheckpointError('header-length', file, 'header length is 0');
  if (n > BigInt(MAX_HEADER_BYTES))
    throw new CheckpointError('header-length', file, `header length ${n} exceeds the 100 MB limit`);
  if (n > BigInt(fileSize - 8))
    throw new CheckpointError(
      'header-length',
      file,
      `header length ${n} runs past the end of the file (${fileSize} bytes)`,
    );
  return Number(n);
}

/** Sets an own property even for keys like `__proto__` (plain assignment would drop it). */
export function setOwn<T>(o: Record<string, T>, k: string, v: T): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

function checkShape(file: string, name: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) throw new CheckpointError('shape', file, `shape ${brief(shape)} is not an array`, name);
  let product = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new CheckpointError(
        'shape',
        file,
        `shape ${brief(shape)} has a dimension that is not a non-negative integer`,
        name,
      );
    }
    product *= d;
    // Checked at every step, as the reference's checked multiplication does.
    if (!Number.isSafeInteger(product))
      throw new CheckpointError('shape', file, `shape ${brief(shape)} has more than 2^53 elements`, name);
  }
  return shape as number[];
}

function parseJson(file: string, json: Uint8Array): Record<string, unknown> {
  let text: string;
  let parsed: unknown;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(json);
  } catch {
    throw new CheckpointError('header-json', file, 'header is not valid UTF-8');
  }
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError('header-json', file, `header is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new CheckpointError(
      'header-type',
      file,
      `header is ${Array.isArray(parsed) ? 'a JSON array' : brief(parsed)}, not a JSON object`,
    );
  }
  // The reference requires the object to start at the first byte (no leading whitespace).
  if (json[0] !== 0x7b /* { */) throw new CheckpointError('header-json', file, "header does not start with '{'");
  const dup = findDuplicateKey(text);
  if (dup) {
    if (dup.path.length === 0) throw new CheckpointError('duplicate-key', file, 'appears twice in the header', dup.key);
    const where = dup.path[0] === '__metadata__' ? '__metadata__' : undefined;
    throw new CheckpointError(
      'duplicate-key',
      file,
      `key '${dup.key}' appears twice in ${where ?? 'its entry'}`,
      where ? undefined : dup.path[0],
    );
  }
  const float = findFloatInteger(text);
  if (float) {
    const written = `${brief(float.literal)} is written as a float, which the reference reader refuses`;
    if (float.field === 'shape') {
      throw new CheckpointError(
        'shape',
        file,
        `shape has a dimension that is not a non-negative integer (${written})`,
        float.tensor,
      );
    }
    throw new CheckpointError(
      'offsets',
      file,
      `data_offsets is not a pair of non-negative integers (${written})`,
      float.tensor,
    );
  }
  return parsed as Record<string, unknown>;
}

function parseMetadata(file: string, entry: unknown): Record<string, string> {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new CheckpointError('metadata', file, `__metadata__ is ${brief(entry)}, not a string→string map`);
  }
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
    if (typeof v !== 'string')
      throw new CheckpointError('metadata', file, `__metadata__[${brief(k)}] is ${brief(v)}, not a string`);
    setOwn(metadata, k, v);
  }
  return metadata;
}

export function parseHeader(file: string, json: Uint8Array, headerLength: number, fileSize: number): SafetensorsHeader {
  const parsed = parseJson(file, json);
  const dataSize = fileSize - 8 - headerLength;
  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const ranges: { begin: number; end: number; name: string }[] = [];
  for (const [name, entry] of Object.entries(parsed)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(file, entry);
      continue;
    }
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
      throw new CheckpointError(
        'tensor-entry',
        file,
        `entry is ${brief(entry)}, not an object with dtype, shape, data_offsets`,
        name,
      );
    }
    const { dtype, shape, data_offsets } = entry as Record<string, unknown>;
    if (!isDType(dtype)) throw new CheckpointError('dtype', file, `unknown dtype ${brief(dtype)}`, name);
    const dims = checkShape(file, name, shape);
    if (
      !Array.isArray(data_offsets) ||
      data_offsets.length !== 2 ||
      !data_offsets.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)
    ) {
      throw new CheckpointError(
        'offsets',
        file,
        `data_offsets ${brief(data_offsets)} is not a pair of non-negative integers`,
        name,
      );
    }
    const [begin, end] = data_offsets as [number, number];
    if (end < begin) throw new CheckpointError('offsets', file, `data_offsets [${begin}, ${end}] are reversed`, name);
    if (end > dataSize)
      throw new CheckpointError(
        'offsets',
        file,
        `data_offsets [${begin}, ${end}] run past the end of the data (${dataSize} bytes)`,
        name,
      );
    const parameters = dims.reduce((a, b) => a * b, 1);
    const expected = parameters * DTYPE_SIZE[dtype];
    if (end - begin !== expected) {
      throw new CheckpointError(
        'byte-length',
        file,
        `holds ${end - begin} bytes but ${dtype}${brief(dims)} needs ${expected}`,
        name,
      );
    }
    tensors.push({
      name,
      dtype,
      shape: dims,
      parameters,
      file,
      start: 8 + headerLength + begin,
      byteLength: end - begin,
    });
    ranges.push({ begin, end, name });
  }
  // Contiguity: sorted by begin, each starts where the previous ended, the last ends at
  // the end of the file. This rules out gaps, overlaps and trailing garbage.
  const order = ranges
    .map((_, i) => i)
    .sort((a, b) => ranges[a].begin - ranges[b].begin || ranges[a].end - ranges[b].end);
  let cursor = 0;
  for (const i of order) {
    const r = ranges[i];
    if (r.begin !== cursor) {
      const what =
        r.begin < cursor
          ? 'overlaps the previous tensor'
          : `leaves a gap of ${r.begin - cursor} bytes after the previous tensor`;
      throw new CheckpointError('offsets', file, `data_offsets [${r.begin}, ${r.end}] ${what}`, r.name);
    }
    cursor = r.end;
  }
  if (cursor !== dataSize) {
    throw new CheckpointError(
      'offsets',
      file,
      `tensors cover ${cursor} bytes but the file holds ${dataSize} data bytes after the header`,
    );
  }
  return { file, fileSize, headerLength, metadata, tensors: order.map((i) => tensors[i]) };
}
