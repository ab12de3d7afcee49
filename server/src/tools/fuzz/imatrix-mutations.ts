// Mutations of llama.cpp importance matrices (model/imatrix.ts reads them): GGUF (general.type
// "imatrix", NAME.in_sum2 and NAME.counts F32 tensors) and the legacy .dat (count, then name,
// ncall, nval, values ×ncall). Written here from the format descriptions, each field open to
// mutation: bad counts, sums that overflow float32 once divided, NaN/Inf/negative values,
// truncated headers, lengths and counts near 2⁶⁴, wrong tensor names, widths, dims and types,
// huge or deeply nested metadata arrays, unknown value types.

import { InputCtx, InputCase, InputMutator, writeInput } from './inputs';
import { layerLinears } from '../../model/weights';
import type { Rng } from './rng';

interface Entry {
  name: string;
  /** Σx² per column (GGUF in_sum2), or mean·ncall (legacy). */
  sums: number[];
  count: number;
}

/** An encoder that can write any value where the format has one (lengths as bigint). */
class Bytes {
  private parts: Buffer[] = [];
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.parts.push(b);
    return this;
  }
  i32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v | 0);
    this.parts.push(b);
    return this;
  }
  u64(v: number | bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)));
    this.parts.push(b);
    return this;
  }
  f32(vs: readonly number[]): this {
    const b = Buffer.alloc(4 * vs.length);
    vs.forEach((x, i) => b.writeFloatLE(x, 4 * i));
    this.parts.push(b);
    return this;
  }
  raw(b: Uint8Array | string): this {
    this.parts.push(Buffer.from(b));
    return this;
  }
  str(s: string, len?: number | bigint): this {
    return this.u64(len ?? Buffer.byteLength(s)).raw(s);
  }
  get length(): number {
    return this.parts.reduce((a, p) => a + p.length, 0);
  }
  pad(align: number): this {
    return this.raw(new Uint8Array((align - (this.length % align)) % align));
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** Valid entries for every layer and llama.cpp name the model's family reads. */
function entriesFor(c: InputCtx): Entry[] {
  const cfg = c.base.parsed;
  const out: Entry[] = [];
  const seen = new Set<string>();
  for (let layer = 0; layer < cfg.numLayers; layer++)
    for (const spec of layerLinears(cfg)) {
      const name = `blk.${layer}.${c.rng.pick(spec.gguf)}.weight`;
      if (seen.has(name)) continue;
      seen.add(name);
      const count = c.rng.pick([1, 7, 512, 4096, 100_000]);
      out.push({ name, count, sums: Array.from({ length: spec.cols }, () => (0.01 + c.rng.next() * 3) * count) });
    }
  // Tensors calibrated LoftQ does not use: ignored.
  if (c.rng.chance(0.3)) out.push({ name: 'output.weight', count: 10, sums: [1, 2, 3] });
  if (c.rng.chance(0.2)) out.push({ name: 'blk.0.ffn_gate_exps.weight', count: 10, sums: [1, 2] });
  return out;
}

interface GgufTensor {
  name: string;
  dims: (number | bigint)[];
  type: number;
  data: number[];
}

interface GgufLayout {
  version: number;
  /** Overrides the tensor / key-value counts written in the header. */
  nTensors?: bigint;
  nKv?: bigint;
  kvs: Buffer[];
  tensors: GgufTensor[];
  alignment: number;
  /** Overrides a tensor's data offset (relative to the data section). */
  offsets?: Map<number, bigint>;
}

const kvString = (key: string, value: string) => new Bytes().str(key).u32(8).str(value).done();

function ggufLayout(entries: Entry[], type = 'imatrix'): GgufLayout {
  const tensors: GgufTensor[] = [];
  for (const e of entries) {
    tensors.push({ name: `${e.name}.in_sum2`, dims: [e.sums.length, 1], type: 0, data: e.sums });
    tensors.push({ name: `${e.name}.counts`, dims: [1, 1], type: 0, data: [e.count] });
  }
  const kvs = [
    kvString('general.type', type),
    new Bytes().str('imatrix.datasets').u32(9).u32(8).u64(1).str('calib.txt').done(),
    new Bytes().str('imatrix.chunk_count').u32(4).u32(7).done(),
  ];
  return { version: 3, kvs, tensors, alignment: 32 };
}

function encodeGguf(g: GgufLayout): Buffer {
  const head = new Bytes()
    .raw('GGUF')
    .u32(g.version)
    .u64(g.nTensors ?? BigInt(g.tensors.length))
    .u64(g.nKv ?? BigInt(g.kvs.length));
  for (const kv of g.kvs) head.raw(kv);
  const data = new Bytes();
  g.tensors.forEach((t, i) => {
    head.str(t.name).u32(t.dims.length);
    for (const d of t.dims) head.u64(d);
    head.u32(t.type).u64(g.offsets?.get(i) ?? BigInt(data.length));
    data.f32(t.data).pad(g.alignment);
  });
  return Buffer.concat([head.pad(g.alignment).done(), data.done()]);
}

function encodeLegacy(entries: Entry[], count = entries.length): Buffer {
  const b = new Bytes().i32(count);
  for (const e of entries) b.i32(Buffer.byteLength(e.name)).raw(e.name).i32(e.count).i32(e.sums.length).f32(e.sums);
  return b.i32(10).i32(9).raw('calib.txt').done();
}

async function imatrix(c: InputCtx, bytes: Uint8Array, gguf: boolean): Promise<InputCase> {
  const file = await writeInput(c.dir, gguf ? 'imatrix.gguf' : 'imatrix.dat', bytes);
  return { calibration: { imatrix: file } };
}

const mutator = (name: string, expect: InputMutator['expect'], make: (c: InputCtx) => Promise<InputCase>) =>
  ({ name, family: 'imatrix', expect, make }) satisfies InputMutator;

/** A GGUF mutated by `f`. */
const gguf = (name: string, expect: InputMutator['expect'], f: (g: GgufLayout, rng: Rng, e: Entry[]) => void) =>
  mutator(name, expect, (c) => {
    const entries = entriesFor(c);
    const g = ggufLayout(entries);
    f(g, c.rng, entries);
    return imatrix(c, encodeGguf(g), true);
  });

/** Tensors of the layout that are one entry's in_sum2 / counts. */
const ofModel = (t: GgufTensor) => t.name.startsWith('blk.') && !t.name.includes('_exps');
const sumsOf = (g: GgufLayout) => g.tensors.filter((t) => ofModel(t) && t.name.endsWith('.in_sum2'));
const countsOf = (g: GgufLayout) => g.tensors.filter((t) => ofModel(t) && t.name.endsWith('.counts'));

const NON_FINITE = [NaN, Infinity, -Infinity, -1, -1e-30, 3.4e38, -0];

export const IMATRIX_MUTATORS: InputMutator[] = [
  mutator('imatrix-valid', 'valid', (c) => {
    const e = entriesFor(c);
    return c.rng.chance(0.5) ? imatrix(c, encodeGguf(ggufLayout(e)), true) : imatrix(c, encodeLegacy(e), false);
  }),
  // counts 0, negative, NaN, or so small that Σx²/count overflows float32 (issue 27.1).
  gguf('imatrix-counts-bad', 'invalid', (g, rng) => {
    const t = rng.pick(countsOf(g));
    t.data = [rng.pick([0, -0, -1, NaN, -Infinity, 1e-30, 1e-45])];
    if (t.data[0] > 0) for (const s of sumsOf(g)) s.data = s.data.map(() => 3e38);
  }),
  gguf('imatrix-sums-bad', 'invalid', (g, rng) => {
    const t = rng.pick(sumsOf(g));
    t.data[rng.int(0, t.data.length - 1)] = rng.pick(NON_FINITE.filter((v) => !Object.is(v, -0) && v !== 3.4e38));
  }),
  // Large but finite: 3.4e38 / count stays in float32 for count ≥ 1.
  gguf('imatrix-sums-huge', 'either', (g, rng) => {
    const t = rng.pick(sumsOf(g));
    t.data = t.data.map(() => rng.pick([3.4e38, 1e38, 1e-45, 0]));
  }),
  gguf('imatrix-header-counts', 'invalid', (g, rng) => {
    const huge = rng.pick([2n ** 64n - 1n, 2n ** 63n, 2n ** 53n + 1n, 2n ** 32n, 1_000_000_000n]);
    if (rng.chance(0.5)) g.nTensors = huge;
    else g.nKv = huge;
  }),
  gguf('imatrix-version', 'invalid', (g, rng) => {
    g.version = rng.pick([0, 1, 4, 0xffffffff]);
  }),
  gguf('imatrix-not-imatrix', 'invalid', (g, rng) => {
    const k = rng.int(0, 2);
    if (k === 0) g.kvs[0] = kvString('general.type', rng.pick(['model', '', 'IMATRIX', 'imatrix\0']));
    else if (k === 1) g.kvs.shift();
    else g.kvs[0] = new Bytes().str('general.type').u32(4).u32(7).done(); // a u32, not a string
  }),
  gguf('imatrix-alignment', 'either', (g, rng) => {
    g.kvs.push(
      new Bytes()
        .str('general.alignment')
        .u32(4)
        .u32(rng.pick([0, 1, 3, 7, 64, 2 ** 31, 2 ** 32 - 1]))
        .done(),
    );
  }),
  gguf('imatrix-metadata-huge-array', 'invalid', (g, rng) => {
    const n = rng.pick([2n ** 40n, 2n ** 62n, 2n ** 64n - 1n, 100_000_000n]);
    const et = rng.pick([0, 4, 8, 9, 12]);
    g.kvs.push(new Bytes().str('imatrix.datasets2').u32(9).u32(et).u64(n).u32(0).done());
  }),
  gguf('imatrix-metadata-nested', 'invalid', (g, rng) => {
    const depth = rng.pick([65, 100, 1000, 100_000]);
    // key, value type array; then per level: element type array, one element; innermost: no u8s.
    const b = new Bytes().str('imatrix.nested').u32(9);
    for (let i = 0; i < depth; i++) b.u32(9).u64(1);
    g.kvs.push(b.u32(0).u64(0).done());
  }),
  gguf('imatrix-metadata-type', 'invalid', (g, rng) => {
    const t = rng.pick([13, 99, 2 ** 31, 0xffffffff]);
    g.kvs.push(rng.chance(0.5) ? new Bytes().str('x').u32(t).done() : new Bytes().str('x').u32(9).u32(t).u64(1).done());
  }),
  gguf('imatrix-string-length', 'invalid', (g, rng) => {
    const len = rng.pick([2n ** 64n - 1n, 2n ** 53n, 2n ** 32n, 1_000_000n]);
    g.kvs.push(new Bytes().str('imatrix.x', len).done());
  }),
  gguf('imatrix-tensor-dims', 'invalid', (g, rng) => {
    const t = rng.pick(sumsOf(g));
    t.dims = rng.pick<GgufTensor['dims']>([
      [],
      [1, 1, 1, 1, 1],
      [2n ** 40n, 1],
      [t.data.length, 2n ** 40n],
      [2n ** 64n - 1n],
    ]);
  }),
  gguf('imatrix-tensor-type', 'invalid', (g, rng) => {
    rng.pick(g.tensors).type = rng.pick([1, 2, 8, 30, 0xffffffff]);
  }),
  gguf('imatrix-tensor-offset', 'invalid', (g, rng) => {
    g.offsets = new Map([
      [rng.int(0, g.tensors.length - 1), rng.pick([2n ** 40n, 2n ** 63n, 2n ** 64n - 32n, 1_000_000n])],
    ]);
  }),
  gguf('imatrix-width', 'invalid', (g, rng) => {
    const t = rng.pick(sumsOf(g));
    const w = t.data.length + rng.pick([-1, 1, t.data.length]);
    t.data = Array.from({ length: Math.max(1, w) }, () => 1);
    t.dims = [t.data.length, 1];
  }),
  gguf('imatrix-missing-counts', 'invalid', (g, rng) => {
    const t = rng.pick(countsOf(g));
    g.tensors.splice(g.tensors.indexOf(t), 1);
  }),
  // Names: layers past the model's, names of no linear layer (only those: nothing to calibrate),
  // or one entry renamed (the rest still calibrate).
  mutator('imatrix-names', 'either', (c) => {
    const e = entriesFor(c);
    const k = c.rng.int(0, 3);
    if (k === 0) e[0].name = `blk.${c.rng.pick([c.base.parsed.numLayers, 99, 2 ** 31, 1e12])}.attn_output.weight`;
    else if (k === 1) for (const x of e) x.name = x.name.replace(/\.weight$/, '.bias');
    else if (k === 2) e[c.rng.int(0, e.length - 1)].name = c.rng.pick(['', 'blk..weight', 'blk.-1.attn_q.weight', 'é']);
    else e.push({ ...e[0] });
    return c.rng.chance(0.5) ? imatrix(c, encodeGguf(ggufLayout(e)), true) : imatrix(c, encodeLegacy(e), false);
  }),
  mutator('imatrix-truncated', 'either', (c) => {
    const e = entriesFor(c);
    const isGguf = c.rng.chance(0.5);
    const bytes = isGguf ? encodeGguf(ggufLayout(e)) : encodeLegacy(e);
    return imatrix(c, bytes.subarray(0, c.rng.int(0, bytes.length - 1)), isGguf);
  }),
  mutator('imatrix-byte-flip', 'either', (c) => {
    const e = entriesFor(c);
    const isGguf = c.rng.chance(0.5);
    const bytes = isGguf ? encodeGguf(ggufLayout(e)) : encodeLegacy(e);
    for (let k = c.rng.int(1, 4); k > 0; k--) bytes[c.rng.int(0, bytes.length - 1)] = c.rng.int(0, 255);
    return imatrix(c, bytes, isGguf);
  }),
  mutator('imatrix-legacy-fields', 'either', (c) => {
    const e = entriesFor(c);
    const k = c.rng.int(0, 4);
    let count = e.length;
    if (k === 0) count = c.rng.pick([0, -1, -(2 ** 31), 2 ** 31 - 1, e.length + 1]);
    else if (k === 1) {
      const ncall = c.rng.pick([0, -1, -(2 ** 31), 2 ** 31 - 1]);
      for (const x of c.rng.chance(0.5) ? e : [e[0]]) x.count = ncall;
    } else if (k === 2) e[0].sums[0] = c.rng.pick(NON_FINITE);
    else if (k === 3) e[0].sums = [];
    else e[0].name = 'x'.repeat(c.rng.pick([4097, 70_000]));
    return imatrix(c, encodeLegacy(e, count), false);
  }),
  mutator('imatrix-legacy-lengths', 'invalid', (c) => {
    const e = entriesFor(c);
    const b = new Bytes().i32(e.length).i32(c.rng.pick([0, -1, -(2 ** 31), 2 ** 31 - 1, 5000]));
    return imatrix(c, b.raw(c.rng.bytes(c.rng.int(0, 64))).done(), false);
  }),
  mutator('imatrix-empty-or-junk', 'invalid', (c) =>
    imatrix(
      c,
      c.rng.pick([new Uint8Array(0), Buffer.from('GGUF'), Buffer.from('GGUF\x03\0\0\0'), new Uint8Array([0, 0, 0, 0])]),
      c.rng.chance(0.5),
    ),
  ),
];
