// Mutations of one safetensors file, grouped as the issue lists them: header length,
// header JSON, dtypes, shapes, offsets, truncated data, __metadata__, pickle bytes, and
// hostile float values. Each writes its case into `dir` and returns the path to open.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { dataOf, entriesOf, Entry, fileBytes, FuzzModel, Raw, serialize, serializeEntries } from './model';
import { Rng } from './rng';

export interface Ctx {
  rng: Rng;
  model: FuzzModel;
  dir: string;
}

export interface Mutator {
  name: string;
  make(c: Ctx): Promise<string>;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export async function writeCase(dir: string, bytes: Uint8Array, name = 'model.safetensors'): Promise<string> {
  const p = path.join(dir, name);
  await fsp.writeFile(p, bytes);
  return p;
}

const tensorEntries = (e: Entry[]) => e.filter(([k]) => k !== '__metadata__');
type TensorEntry = { dtype: unknown; shape: unknown; data_offsets: unknown };

/** Applies `f` to one random tensor entry's object, then writes the file. */
function withEntry(f: (rng: Rng, entry: TensorEntry, entries: Entry[]) => void): (c: Ctx) => Promise<string> {
  return async ({ rng, model, dir }) => {
    const entries = entriesOf(model);
    const ts = tensorEntries(entries);
    if (ts.length) f(rng, rng.pick(ts)[1] as TensorEntry, entries);
    return writeCase(dir, fileBytes(serializeEntries(entries), dataOf(model)));
  };
}

const JUNK_VALUES = [
  null,
  true,
  0,
  -1,
  1.5,
  'x',
  '',
  [],
  {},
  [1, 2, 3],
  { a: 1 },
  new Raw('1e400'),
  new Raw('-0'),
  new Raw('[[[[[[]]]]]]'),
  2 ** 53 + 2,
  -(2 ** 60),
];
const deepArray = (depth: number) => new Raw('['.repeat(depth) + ']'.repeat(depth));

const headerLength: Mutator[] = [
  {
    name: 'length-zero',
    make: async ({ model, dir }) => writeCase(dir, fileBytes(serializeEntries(entriesOf(model)), dataOf(model), 0n)),
  },
  {
    name: 'length-off-by-some',
    make: async ({ rng, model, dir }) => {
      const bytes = fileBytes(serializeEntries(entriesOf(model)), dataOf(model));
      const view = new DataView(bytes.buffer);
      const n = view.getBigUint64(0, true);
      view.setBigUint64(0, BigInt(Math.max(0, Number(n) + rng.pick([-7, -3, -1, 1, 3, 5, 7, 9]))), true);
      return writeCase(dir, bytes);
    },
  },
  {
    name: 'length-huge',
    make: async ({ rng, model, dir }) =>
      writeCase(
        dir,
        fileBytes(
          serializeEntries(entriesOf(model)),
          dataOf(model),
          rng.pick([2n ** 64n - 1n, 2n ** 63n, 2n ** 53n + 1n, 100_000_001n, 99_999_999n, 2n ** 32n]),
        ),
      ),
  },
  {
    name: 'length-past-eof',
    make: async ({ rng, model, dir }) => {
      const bytes = fileBytes(serializeEntries(entriesOf(model)), dataOf(model));
      new DataView(bytes.buffer).setBigUint64(0, BigInt(bytes.length - 8 + rng.int(1, 64)), true);
      return writeCase(dir, bytes);
    },
  },
  { name: 'file-tiny', make: async ({ rng, dir }) => writeCase(dir, rng.bytes(rng.int(0, 8))) },
];

const headerJson: Mutator[] = [
  {
    name: 'json-truncated',
    make: async ({ rng, model, dir }) => {
      const text = serializeEntries(entriesOf(model));
      return writeCase(dir, fileBytes(text.slice(0, rng.int(0, text.length - 1)), dataOf(model)));
    },
  },
  {
    name: 'json-not-object',
    make: async ({ rng, model, dir }) =>
      writeCase(
        dir,
        fileBytes(
          rng.pick(['[]', '[{}]', '42', '"x"', 'null', 'true', ' {}', '\n{}', '{}}', '{"a":}', '\u00ff{}']),
          dataOf(model),
        ),
      ),
  },
  {
    name: 'json-byte-flip',
    make: async ({ rng, model, dir }) => {
      const bytes = fileBytes(serializeEntries(entriesOf(model)), dataOf(model));
      const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
      for (let k = rng.int(1, 4); k > 0; k--)
        bytes[8 + rng.int(0, n - 1)] = rng.pick([
          0x22,
          0x7b,
          0x7d,
          0x5b,
          0x5d,
          0x2c,
          0x3a,
          0x5c,
          0x00,
          0xff,
          0x30,
          0x2d,
          rng.int(0, 255),
        ]);
      return writeCase(dir, bytes);
    },
  },
  {
    name: 'entry-wrong-type',
    make: async ({ rng, model, dir }) => {
      const entries = entriesOf(model);
      const ts = tensorEntries(entries);
      if (ts.length) rng.pick(ts)[1] = rng.pick(JUNK_VALUES);
      return writeCase(dir, fileBytes(serializeEntries(entries), dataOf(model)));
    },
  },
  {
    name: 'field-wrong-type',
    make: withEntry((rng, e) => {
      const field = rng.pick(['dtype', 'shape', 'data_offsets'] as const);
      if (rng.chance(0.1)) delete (e as Partial<TensorEntry>)[field];
      else e[field] = rng.pick(JUNK_VALUES);
    }),
  },
  {
    name: 'duplicate-key',
    make: async ({ rng, model, dir }) => {
      const entries = entriesOf(model);
      const ts = tensorEntries(entries);
      let text: string;
      const kind = ts.length ? rng.int(0, 3) : 2;
      if (kind === 0)
        text = serializeEntries([...entries, ts[0]]); // the same tensor twice
      else if (kind === 1) {
        // a field twice inside one entry
        const e = rng.pick(ts);
        e[1] = new Raw(serializeEntries([...Object.entries(e[1] as object), ['dtype', 'F32']]));
        text = serializeEntries(entries);
      } else if (kind === 2)
        text = serializeEntries([
          ['__metadata__', new Raw('{"a":"1","a":"2"}')],
          ...entries.filter(([k]) => k !== '__metadata__'),
        ]);
      else {
        // the same name spelled with a \u escape, which JSON.parse decodes to an equal key
        const [name, value] = ts[0];
        const first = name.length ? `\\u${name.charCodeAt(0).toString(16).padStart(4, '0')}` : '';
        const rest = JSON.stringify(name.slice(1)).slice(1, -1);
        text = `${serializeEntries(entries).slice(0, -1)},"${first}${rest}":${serialize(value)}}`;
      }
      return writeCase(dir, fileBytes(text, dataOf(model)));
    },
  },
];

const fields: Mutator[] = [
  {
    name: 'dtype-unknown',
    make: withEntry((rng, e) => {
      e.dtype = rng.pick(['F128', 'f32', 'FP32', 'Q4_0', 'F8_E4M3FN', 'c64', '', 'BOOL ', 'U128', 'I4']);
    }),
  },
  {
    name: 'shape-negative-or-float',
    make: withEntry((rng, e) => {
      (e.shape as unknown[])[0] = rng.pick([
        -1,
        -(2 ** 31),
        0.5,
        1.5,
        new Raw('1e400'),
        new Raw('-1e400'),
        new Raw('1.0'),
        '2',
        null,
      ]);
    }),
  },
  {
    name: 'shape-overflow',
    make: withEntry((rng, e) => {
      e.shape = rng.pick([
        [2 ** 27, 2 ** 27],
        [2 ** 53],
        [2 ** 53 - 1, 2],
        [2 ** 31, 2 ** 31, 2 ** 31],
        [2 ** 40, 2 ** 40, 0],
        [Number.MAX_SAFE_INTEGER],
        [2 ** 26, 2 ** 26, 1],
      ]);
    }),
  },
  {
    name: 'shape-deep-or-long',
    make: withEntry((rng, e) => {
      e.shape = rng.chance(0.5) ? [deepArray(rng.int(1, 200_000))] : new Array(rng.int(65, 5000)).fill(1);
    }),
  },
  {
    name: 'shape-resized',
    make: withEntry((rng, e) => {
      const s = e.shape as number[];
      if (s.length) s[rng.int(0, s.length - 1)] += rng.pick([-1, 1, 2]);
      else e.shape = [2];
    }),
  },
];

const offsets: Mutator[] = [
  {
    name: 'offsets-shifted',
    make: withEntry((rng, e) => {
      const [b, en] = e.data_offsets as number[];
      const d = rng.pick([-8, -4, -2, -1, 1, 2, 4, 8]);
      e.data_offsets = rng.pick([
        [b + d, en + d],
        [b + d, en],
        [b, en + d],
      ]);
    }),
  },
  {
    name: 'offsets-reversed',
    make: withEntry((_, e) => {
      const [b, en] = e.data_offsets as number[];
      e.data_offsets = [en, b];
    }),
  },
  {
    name: 'offsets-past-eof',
    make: withEntry((rng, e) => {
      const [b] = e.data_offsets as number[];
      e.data_offsets = [b, rng.pick([2 ** 40, 2 ** 53 - 1, 2 ** 53 + 2, 1e300, 1e6])];
    }),
  },
  {
    name: 'offsets-malformed',
    make: withEntry((rng, e) => {
      e.data_offsets = rng.pick([
        [0],
        [0, 1, 2],
        [-1, 3],
        ['0', '4'],
        [0.5, 4.5],
        [new Raw('1e400'), 0],
        {},
        null,
        [[0], [4]],
      ]);
    }),
  },
  {
    name: 'offsets-swapped',
    make: async ({ model, dir }) => {
      const entries = entriesOf(model);
      const ts = tensorEntries(entries);
      if (ts.length >= 2) {
        const a = ts[0][1] as TensorEntry,
          b = ts[ts.length - 1][1] as TensorEntry;
        [a.data_offsets, b.data_offsets] = [b.data_offsets, a.data_offsets];
      }
      return writeCase(dir, fileBytes(serializeEntries(entries), dataOf(model)));
    },
  },
  {
    name: 'offsets-overlap',
    make: async ({ model, dir }) => {
      const entries = entriesOf(model);
      const ts = tensorEntries(entries);
      if (ts.length >= 2) (ts[1][1] as TensorEntry).data_offsets = (ts[0][1] as TensorEntry).data_offsets;
      return writeCase(dir, fileBytes(serializeEntries(entries), dataOf(model)));
    },
  },
];

const data: Mutator[] = [
  {
    name: 'data-truncated',
    make: async ({ rng, model, dir }) => {
      const bytes = fileBytes(serializeEntries(entriesOf(model)), dataOf(model));
      return writeCase(dir, bytes.subarray(0, rng.int(Math.max(0, bytes.length - 64), bytes.length - 1)));
    },
  },
  {
    name: 'data-trailing',
    make: async ({ rng, model, dir }) =>
      writeCase(dir, concat(fileBytes(serializeEntries(entriesOf(model)), dataOf(model)), rng.bytes(rng.int(1, 32)))),
  },
  {
    name: 'metadata-wrong-type',
    make: async ({ rng, model, dir }) => {
      const entries = entriesOf(model).filter(([k]) => k !== '__metadata__');
      entries.unshift([
        '__metadata__',
        rng.pick([
          null,
          [],
          ['a'],
          'x',
          5,
          true,
          { a: 1 },
          { a: null },
          { a: { b: 'c' } },
          { a: ['x'] },
          { ok: 'y', bad: 2 },
        ]),
      ]);
      return writeCase(dir, fileBytes(serializeEntries(entries), dataOf(model)));
    },
  },
  {
    name: 'pickle-magic',
    make: async ({ rng, dir }) =>
      writeCase(
        dir,
        concat(
          new Uint8Array(
            rng.pick([
              [0x80, 2],
              [0x80, 4],
              [0x80, 5],
              [0x50, 0x4b, 3, 4],
            ]),
          ),
          rng.bytes(rng.int(0, 64)),
        ),
      ),
  },
  {
    name: 'pickle-name',
    make: async ({ rng, model, dir }) =>
      writeCase(
        dir,
        fileBytes(serializeEntries(entriesOf(model)), dataOf(model)),
        rng.pick(['pytorch_model.bin', 'model.pt', 'model.pth', 'x.ckpt']),
      ),
  },
];

export const SINGLE_FILE_MUTATORS: Mutator[] = [...headerLength, ...headerJson, ...fields, ...offsets, ...data];

/** Valid files (some with NaN/Inf/denormal weights): these must be accepted. */
export const VALID: Mutator[] = [
  {
    name: 'valid',
    make: async ({ model, dir }) => writeCase(dir, fileBytes(serializeEntries(entriesOf(model)), dataOf(model))),
  },
  // The runner fills float tensors with NaN, ±Inf, denormals and ±3.4e38 for this one.
  {
    name: 'hostile-values',
    make: async ({ model, dir }) => writeCase(dir, fileBytes(serializeEntries(entriesOf(model)), dataOf(model))),
  },
];
