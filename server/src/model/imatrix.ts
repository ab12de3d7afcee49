// llama.cpp importance matrices as diagonal calibration statistics. An imatrix holds, per
// weight, the mean of x_i² over the tokens that weight saw — exactly diag(G) of our G = XᵀX/N.
// Two formats:
//  - GGUF (llama-imatrix's default since 2025): general.type = "imatrix"; per weight NAME the
//    F32 tensors NAME.in_sum2 (Σx², [width, experts]) and NAME.counts ([1, experts]).
//  - legacy .dat: int32 entry count, then per entry int32 name length, name bytes, int32 ncall,
//    int32 nval, nval float32 values stored as mean(x²)·ncall; a trailer (chunk count, dataset
//    name) follows and is ignored.
// Names are llama.cpp's (blk.N.attn_q.weight …), mapped to Hugging Face's by the family's
// layout (arch/: Phi-3's fused attn_qkv → qkv_proj, ffn_up → gate_up_proj). Every problem is
// one InputError line naming the file.

import * as path from 'node:path';
import { readRegularFile } from '../checkpoint/sidefile';
import { CheckpointError, quote } from '../checkpoint/errors';
import { InputError } from '../base/errors';
import { MAX_RIDGE } from '../registry';
import type { ModelConfig } from './config';
import type { InputStat, InputStats } from './stats';
import type { LinearSpec } from './arch/types';
import { layerLinears, layerTensorName, linearTensorName, LinearName } from './weights';

/** A 70B imatrix is a few MB; this only keeps a wrong file from being read whole. */
export const MAX_IMATRIX_BYTES = 1_000_000_000;

const LLAMA_CPP_NAMES: Record<string, LinearName> = {
  attn_q: 'q_proj',
  attn_k: 'k_proj',
  attn_v: 'v_proj',
  attn_output: 'o_proj',
  ffn_gate: 'gate_proj',
  ffn_up: 'up_proj',
  ffn_down: 'down_proj',
};

/** blk.N.attn_q.weight → model.layers.N.self_attn.q_proj.weight; undefined for others
 *  (output.weight, token_embd, expert tensors), which calibrated LoftQ does not use. */
export function hfNameOf(llamaCppName: string): string | undefined {
  const m = /^blk\.(\d+)\.([a-z_]+)\.weight$/.exec(llamaCppName);
  const lin = m && LLAMA_CPP_NAMES[m[2]];
  return lin ? linearTensorName(Number(m[1]), lin) : undefined;
}

/** One entry: the mean of x² per input column. */
interface Entry {
  name: string;
  mean: Float64Array;
  count: number;
}

class Reader {
  pos = 0;
  private readonly view: DataView;
  constructor(
    readonly bytes: Uint8Array,
    private readonly fail: (why: string) => never,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(n: number): void {
    if (n < 0 || this.pos + n > this.bytes.length) this.fail(`ends early at byte ${this.pos} (needs ${n} more)`);
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`holds a length of ${v} at byte ${this.pos - 8}`);
    return Number(v);
  }
  f32s(n: number, at = this.pos): Float32Array {
    if (at + 4 * n > this.bytes.length || n < 0) this.fail(`ends early: ${n} floats at byte ${at} do not fit`);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.view.getFloat32(at + 4 * i, true);
    if (at === this.pos) this.pos += 4 * n;
    return out;
  }
  str(len: number): string {
    this.need(len);
    const s = new TextDecoder().decode(this.bytes.subarray(this.pos, this.pos + len));
    this.pos += len;
    return s;
  }
}

function readLegacy(r: Reader, fail: (why: string) => never): Entry[] {
  const n = r.i32();
  if (n < 1) fail(`holds no entries (count ${n})`);
  const entries: Entry[] = [];
  for (let k = 0; k < n; k++) {
    const len = r.i32();
    if (len < 1 || len > 4096) fail(`entry ${k}: name length ${len} is not plausible`);
    const name = r.str(len);
    const ncall = r.i32();
    // A chunk count below 0 was never written by llama-imatrix (it became the report's token count).
    if (ncall < 0) fail(`entry ${quote(name)}: ncall (chunks) is ${ncall}`);
    const nval = r.i32();
    if (nval < 1) fail(`entry ${quote(name)}: ${nval} values`);
    const v = r.f32s(nval);
    // Stored as mean(x²)·ncall (llama.cpp scales by the chunk count); ncall 0 means unscaled.
    const scale = ncall > 0 ? 1 / ncall : 1;
    entries.push({ name, mean: Float64Array.from(v, (x) => x * scale), count: ncall });
  }
  return entries;
}

const GGUF_TYPE_SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const GGUF_STRING = 8,
  GGUF_ARRAY = 9,
  GGML_F32 = 0;

/** Arrays of arrays nest at most this deep (llama.cpp writes one level): deeper metadata is
 *  refused in one line instead of overflowing the stack. */
export const MAX_GGUF_ARRAY_DEPTH = 64;

function skipValue(r: Reader, type: number, fail: (why: string) => never, depth = 0): void {
  if (type === GGUF_STRING) {
    const n = r.u64();
    r.need(n);
    r.pos += n;
    return;
  }
  if (type === GGUF_ARRAY) {
    const et = r.u32(),
      n = r.u64();
    if (et === GGUF_ARRAY && depth + 1 >= MAX_GGUF_ARRAY_DEPTH)
      fail(`has metadata arrays nested deeper than ${MAX_GGUF_ARRAY_DEPTH} levels (at byte ${r.pos})`);
    if (et === GGUF_STRING || et === GGUF_ARRAY) {
      for (let i = 0; i < n; i++) skipValue(r, et, fail, depth + 1);
      return;
    }
    const size = GGUF_TYPE_SIZE[et];
    if (size === undefined) fail(`has an array of unknown type ${et}`);
    r.need(size * n);
    r.pos += size * n;
    return;
  }
  const size = GGUF_TYPE_SIZE[type];
  if (size === undefined) fail(`has a metadata value of unknown type ${type}`);
  r.need(size);
  r.pos += size;
}

function readGguf(r: Reader, fail: (why: string) => never): Entry[] {
  r.pos = 4;
  const version = r.u32();
  if (version !== 2 && version !== 3) fail(`is GGUF version ${version}; versions 2 and 3 are read`);
  const nTensors = r.u64(),
    nKv = r.u64();
  let type: string | undefined,
    alignment = 32;
  for (let i = 0; i < nKv; i++) {
    const key = r.str(r.u64());
    const vt = r.u32();
    if (key === 'general.type' && vt === GGUF_STRING) type = r.str(r.u64());
    else if (key === 'general.alignment' && vt === 4) alignment = r.u32();
    else skipValue(r, vt, fail);
  }
  if (type !== 'imatrix') fail(`is a GGUF file of type ${quote(type ?? '(none)')}, not an imatrix`);
  if (!(alignment >= 1)) fail(`has alignment ${alignment}`);
  const infos: { name: string; dims: number[]; offset: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = r.str(r.u64());
    const nd = r.u32();
    if (nd < 1 || nd > 4) fail(`tensor ${quote(name)} has ${nd} dimensions`);
    const dims = Array.from({ length: nd }, () => r.u64());
    const t = r.u32();
    if (t !== GGML_F32) fail(`tensor ${quote(name)} has ggml type ${t}; imatrix tensors are F32`);
    infos.push({ name, dims, offset: r.u64() });
  }
  const dataStart = Math.ceil(r.pos / alignment) * alignment;
  const byName = new Map(infos.map((t) => [t.name, t]));
  const entries: Entry[] = [];
  for (const t of infos) {
    if (!t.name.endsWith('.in_sum2')) continue;
    const name = t.name.slice(0, -'.in_sum2'.length);
    const c = byName.get(`${name}.counts`);
    if (!c) fail(`has ${quote(t.name)} but no ${quote(`${name}.counts`)}`);
    const width = t.dims[0],
      experts = t.dims.slice(1).reduce((a, b) => a * b, 1);
    const sums = r.f32s(width * experts, dataStart + t.offset);
    const counts = r.f32s(
      c.dims.reduce((a, b) => a * b, 1),
      dataStart + c.offset,
    );
    if (experts !== 1 || counts.length !== 1) continue; // expert (MoE) tensors: not a dense linear
    const count = counts[0];
    if (!(count > 0)) fail(`${quote(name)} was computed from ${count} tokens`);
    entries.push({ name, mean: Float64Array.from(sums, (x) => x / count), count });
  }
  return entries;
}

/** Why a mean x² cannot be a statistic. Values are checked in float32, the precision the metric
 *  uses them in (loftq/heldMetric.ts): a mean that is finite in float64 but overflows float32
 *  (GGUF in_sum2 3e38 over counts 1e-30) would give NaN adapters. */
function valueProblem(v: number): string {
  if (Number.isNaN(v)) return 'mean x² is NaN';
  if (v < 0) return `mean x² is negative (${v})`;
  if (!Number.isFinite(v)) return 'mean x² is infinite';
  return `mean x² ${v} overflows float32 (at most 3.4e38), the precision the statistics are used in`;
}

/** Reads FILE (GGUF imatrix or legacy .dat) into diagonal statistics for the model `c`. */
export async function readImatrix(file: string, c: ModelConfig): Promise<InputStats> {
  const fail = (why: string): never => {
    throw new InputError(file, why);
  };
  let bytes: Uint8Array;
  try {
    bytes = await readRegularFile(file, MAX_IMATRIX_BYTES);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    return fail(`cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (bytes.length === 0) fail('is empty');
  const r = new Reader(bytes, fail);
  const isGguf = bytes.length >= 4 && new TextDecoder().decode(bytes.subarray(0, 4)) === 'GGUF';
  const entries = isGguf ? readGguf(r, fail) : readLegacy(r, fail);
  const stats: InputStats = new Map();
  // One llama.cpp name may stand for several weights reading one input (Phi-2's fused attn_qkv).
  const byGguf = new Map<string, LinearSpec[]>();
  for (const spec of layerLinears(c)) for (const g of spec.gguf) byGguf.set(g, [...(byGguf.get(g) ?? []), spec]);
  for (const e of entries) {
    const m = /^blk\.(\d+)\.([a-z_]+)\.weight$/.exec(e.name);
    const specs = m && byGguf.get(m[2]);
    if (!specs) continue;
    const layer = Number(m[1]);
    if (layer >= c.numLayers) {
      fail(`has ${quote(e.name)}, but ${path.basename(c.file)} describes ${c.numLayers} layers (another model?)`);
    }
    const width = specs[0].cols;
    const hf = layerTensorName(layer, specs[0]);
    if (e.mean.length !== width) {
      fail(`${quote(e.name)} is ${e.mean.length} wide, but ${hf} has ${width} inputs (another model?)`);
    }
    const bad = e.mean.findIndex((v) => !(v >= 0) || !Number.isFinite(Math.fround(v)));
    if (bad >= 0) fail(`${quote(e.name)} (${hf}) column ${bad}: ${valueProblem(e.mean[bad])}`);
    // H = G + λI with λ up to MAX_RIDGE × the mean diagonal must fit float32 too: checked here, so
    // that no run refuses it only after other matrices were written to its journal.
    const lambda = MAX_RIDGE * (e.mean.reduce((a, v) => a + v, 0) / width);
    const over = e.mean.findIndex((v) => !Number.isFinite(Math.fround(v + lambda)));
    if (over >= 0)
      fail(
        `${quote(e.name)} (${hf}) column ${over}: mean x² ${e.mean[over]} plus the largest ridge, ${MAX_RIDGE} × ` +
          `the entry's mean = ${lambda}, overflows float32, the precision the statistics are used in`,
      );
    const stat: InputStat = { kind: 'diag', dim: width, count: e.count, d: e.mean };
    for (const spec of specs) stats.set(layerTensorName(layer, spec), stat);
  }
  if (stats.size === 0) {
    const expected = layerLinears(c).map((s) => s.gguf[0]);
    fail(`names none of the model's linear layers (blk.N.{${expected.join(',')}}.weight expected; another model?)`);
  }
  return stats;
}
