// Small valid checkpoints for the fuzzer to mutate, and a header serialiser that — unlike
// JSON.stringify — can write duplicate keys and raw JSON text (1e400, deep nesting).

import { DTYPE_SIZE, DType, FLOAT_DTYPES, fromFloat32 } from '../../checkpoint';
import { Rng } from './rng';

export interface FuzzTensor {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

export interface FuzzModel {
  metadata?: Record<string, string>;
  tensors: FuzzTensor[];
}

/** JSON text inserted verbatim by `serialize`. */
export class Raw {
  constructor(readonly text: string) {}
}

/** Header entries in order; the same key may appear twice. */
export type Entry = [string, unknown];

const NAMES = [
  'model.layers.0.self_attn.q_proj.weight',
  'model.layers.0.mlp.down_proj.weight',
  'lm_head.weight',
  'model.embed_tokens.weight',
  'transformer.h.0.attn.c_attn.weight',
  'bias',
  '__proto__',
  'constructor',
  'a/../../etc/passwd',
  '../../escape.weight',
  '/abs/x.weight',
  '<script>alert(1)</script>',
  'ünï.cödé',
  '',
  'x'.repeat(300),
  'tab\there',
];
const DTYPES = Object.keys(DTYPE_SIZE) as DType[];

/** float32 values a hostile or broken checkpoint may hold. */
export function hostileFloats(rng: Rng, n: number): Float32Array {
  const special = [
    NaN,
    Infinity,
    -Infinity,
    -0,
    1e-45,
    -1e-45,
    1.1754942e-38,
    3.4028235e38,
    -3.4028235e38,
    6e-8,
    65504,
    65520,
  ];
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.chance(0.5) ? rng.pick(special) : (rng.next() - 0.5) * 4;
  return out;
}

export function randomModel(rng: Rng, hostileValues = false): FuzzModel {
  const count = rng.int(1, 4);
  const used = new Set<string>();
  const tensors: FuzzTensor[] = [];
  for (let i = 0; i < count; i++) {
    let name = rng.chance(0.6) ? rng.pick(NAMES) : `t${i}.weight`;
    if (used.has(name)) name = `${name}.${i}`;
    used.add(name);
    const dtype = rng.chance(0.7) ? rng.pick(['F32', 'F16', 'BF16'] as DType[]) : rng.pick(DTYPES);
    const rank = rng.pick([2, 2, 2, 1, 0, 3]);
    const shape = Array.from({ length: rank }, () => (rng.chance(0.05) ? 0 : rng.int(1, 8)));
    const n = shape.reduce((a, b) => a * b, 1);
    const data = FLOAT_DTYPES.has(dtype)
      ? fromFloat32(
          dtype,
          hostileValues ? hostileFloats(rng, n) : new Float32Array(n).map(() => (rng.next() - 0.5) * 2),
        )
      : rng.bytes(n * DTYPE_SIZE[dtype]);
    tensors.push({ name, dtype, shape, data });
  }
  const metadata = rng.chance(0.5)
    ? { format: 'pt', ...(rng.chance(0.3) ? { ['__proto__']: 'x', note: 'ü' } : {}) }
    : undefined;
  return { metadata, tensors };
}

export function entriesOf(m: FuzzModel): Entry[] {
  const out: Entry[] = [];
  if (m.metadata) out.push(['__metadata__', m.metadata]);
  let offset = 0;
  for (const t of m.tensors) {
    out.push([t.name, { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + t.data.length] }]);
    offset += t.data.length;
  }
  return out;
}

export function dataOf(m: FuzzModel): Uint8Array {
  const total = m.tensors.reduce((a, t) => a + t.data.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const t of m.tensors) {
    out.set(t.data, o);
    o += t.data.length;
  }
  return out;
}

export function serialize(v: unknown): string {
  if (v instanceof Raw) return v.text;
  if (Array.isArray(v)) return `[${v.map(serialize).join(',')}]`;
  if (v !== null && typeof v === 'object') return serializeEntries(Object.entries(v));
  return JSON.stringify(v) ?? 'null';
}

export function serializeEntries(entries: Entry[]): string {
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${serialize(v)}`).join(',')}}`;
}

/** u64 LE header length (or `length`), header text padded to 8 bytes, data. */
export function fileBytes(header: string, data: Uint8Array, length?: bigint): Uint8Array {
  const text = Buffer.from(header, 'utf8');
  const padded = text.length + ((8 - ((text.length + 8) % 8)) % 8);
  const out = new Uint8Array(8 + padded + data.length).fill(0x20, 8, 8 + padded);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(padded), true);
  out.set(text, 8);
  out.set(data, 8 + padded);
  return out;
}
