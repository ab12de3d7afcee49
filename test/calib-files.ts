// Test-only writers of calibration inputs, independent of the readers under test: llama.cpp
// importance matrices (legacy .dat and GGUF, from the format descriptions) and a small
// Llama-style BPE tokenizer.json.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { tokenizerJson } from '../server/src/tools/fuzz/tiny-model';

export interface ImatrixEntry {
  /** llama.cpp name, e.g. blk.0.attn_q.weight. */
  name: string;
  /** mean of x² per input column. */
  mean: number[];
  /** tokens (GGUF counts) / chunks (legacy ncall). */
  count: number;
}

const i32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return b;
};
const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};
const u64 = (v: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
};
const f32s = (v: number[]) => {
  const b = Buffer.alloc(4 * v.length);
  v.forEach((x, i) => b.writeFloatLE(x, 4 * i));
  return b;
};

/** Legacy .dat: values stored as mean·ncall, then the chunk-count and dataset trailer. */
export function writeLegacyImatrix(file: string, entries: ImatrixEntry[]): void {
  const parts: Buffer[] = [i32(entries.length)];
  for (const e of entries) {
    parts.push(
      i32(Buffer.byteLength(e.name)),
      Buffer.from(e.name),
      i32(e.count),
      i32(e.mean.length),
      f32s(e.mean.map((m) => m * e.count)),
    );
  }
  parts.push(i32(10), i32(9), Buffer.from('calib.txt'));
  fs.writeFileSync(file, Buffer.concat(parts));
}

const gstr = (s: string) => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)]);

/** GGUF v3 imatrix: NAME.in_sum2 [width, 1] = mean·count and NAME.counts [1, 1] = count. */
export function writeGgufImatrix(file: string, entries: ImatrixEntry[], type = 'imatrix'): void {
  const kvs = [
    Buffer.concat([gstr('general.type'), u32(8), gstr(type)]),
    Buffer.concat([gstr('imatrix.datasets'), u32(9), u32(8), u64(2), gstr('a.txt'), gstr('b.txt')]),
    Buffer.concat([gstr('imatrix.chunk_count'), u32(4), u32(7)]),
  ];
  const tensors: { name: string; dims: number[]; data: Buffer }[] = [];
  for (const e of entries) {
    tensors.push({ name: `${e.name}.counts`, dims: [1, 1], data: f32s([e.count]) });
    tensors.push({ name: `${e.name}.in_sum2`, dims: [e.mean.length, 1], data: f32s(e.mean.map((m) => m * e.count)) });
  }
  const infos: Buffer[] = [];
  const datas: Buffer[] = [];
  let offset = 0;
  for (const t of tensors) {
    infos.push(Buffer.concat([gstr(t.name), u32(t.dims.length), ...t.dims.map(u64), u32(0), u64(offset)]));
    const padded = Buffer.alloc(Math.ceil(t.data.length / 32) * 32);
    t.data.copy(padded);
    datas.push(padded);
    offset += padded.length;
  }
  const head = Buffer.concat([Buffer.from('GGUF'), u32(3), u64(tensors.length), u64(kvs.length), ...kvs, ...infos]);
  const pad = Buffer.alloc(Math.ceil(head.length / 32) * 32 - head.length);
  fs.writeFileSync(file, Buffer.concat([head, pad, ...datas]));
}

/** Characters of the test tokenizer, ids 4.. in this order; '▁t' (one BPE merge) follows them. */
export const TOKENIZER_CHARS = 'abcdefghijklmnopqrstuvwxyz.,!'.split('');

/** Ids the test tokenizer gives `text`, computed directly: <s>, then '▁' + text with spaces as '▁',
 *  each character its own id except '▁' followed by 't', merged into '▁t'. */
export function expectedIds(text: string): number[] {
  const vocab = testVocab();
  const s = ('▁' + text).replace(/ /g, '▁');
  const ids = [1];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '▁' && s[i + 1] === 't') {
      ids.push(vocab['▁t']);
      i++;
      continue;
    }
    ids.push(vocab[s[i]] ?? 0);
  }
  return ids;
}

function testVocab(extra = 0): Record<string, number> {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2, '▁': 3 };
  let id = 4;
  for (const c of TOKENIZER_CHARS) vocab[c] = id++;
  vocab['▁t'] = id++;
  for (let k = 0; k < extra; k++) vocab[`<extra_${k}>`] = id++;
  return vocab;
}

/** A Llama-style tokenizer.json (Prepend/Replace ▁ normalizer, BPE, <s> template) in DIR.
 *  `extra` adds tokens to make a tokenizer larger than a model's vocabulary. */
export function writeTestTokenizer(dir: string, extra = 0): void {
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson(testVocab(extra), ['▁ t'])));
}
