// Reads one decoder layer's tensors (and the embedding / head) with positioned reads, under the
// names and shapes the family's layout gives (arch/), checking each shape against config.json so
// that a mismatched checkpoint stops with one line naming the file and the tensor.

import type { Checkpoint } from '../checkpoint/checkpoint';
import { CheckpointError } from '../checkpoint/errors';
import { readTensorBytes, readTensorF32, readTensorRowsF32, type ReadBuffers } from '../checkpoint/reader';
import type { TensorInfo } from '../checkpoint/header';
import type { ScratchBuffers } from '../base/scratchBuffers';
import type { LinearSpec } from './arch/types';
import type { ModelConfig } from './config';

/** Llama's linear layers (the names llama, mistral, qwen2 and gemma share). */
export const LINEAR_NAMES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LinearName = (typeof LINEAR_NAMES)[number];

export function linearTensorName(layer: number, lin: LinearName): string {
  const block = lin === 'gate_proj' || lin === 'up_proj' || lin === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${block}.${lin}.weight`;
}

/** [out, in] of each of Llama's linear layers. */
export function linearShape(c: ModelConfig, lin: LinearName): [number, number] {
  const q = c.numHeads * c.headDim,
    kv = c.numKvHeads * c.headDim;
  switch (lin) {
    case 'q_proj':
      return [q, c.hiddenSize];
    case 'k_proj':
    case 'v_proj':
      return [kv, c.hiddenSize];
    case 'o_proj':
      return [c.hiddenSize, q];
    case 'gate_proj':
    case 'up_proj':
      return [c.intermediateSize, c.hiddenSize];
    case 'down_proj':
      return [c.hiddenSize, c.intermediateSize];
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Reads a tensor by name as float32 after checking it exists with the expected shape. */
export async function readChecked(
  ck: Checkpoint,
  c: ModelConfig,
  name: string,
  shape: number[],
  into?: ReadBuffers,
): Promise<Float32Array> {
  return readTensorF32(checkedTensor(ck, c, name, shape), into);
}

/** Rows of a [rows, width] tensor (checked as readChecked does) as float32, by row index. */
export async function readCheckedRows(
  ck: Checkpoint,
  c: ModelConfig,
  name: string,
  shape: [number, number],
  rows: readonly number[],
): Promise<Map<number, Float32Array>> {
  return readTensorRowsF32(checkedTensor(ck, c, name, shape), shape[1], rows);
}

function checkedTensor(ck: Checkpoint, c: ModelConfig, name: string, shape: number[]): TensorInfo {
  const t = ck.byName.get(name);
  if (!t)
    throw new CheckpointError(
      'tensor-entry',
      ck.path,
      `has no tensor '${name}' (config.json ${c.file} describes a ${c.modelType} model with ${c.numLayers} layers)`,
    );
  if (!sameShape(t.shape, shape)) {
    throw new CheckpointError(
      'shape',
      t.file,
      `shape [${t.shape.join(', ')}] does not match config.json (expected [${shape.join(', ')}])`,
      name,
    );
  }
  return t;
}

/** Checks config.json's numbers against the checkpoint's tensors before anything is sized by
 *  them: the decoder layers it holds (num_hidden_layers 10^7 once allocated gigabytes before the
 *  first missing tensor was noticed), the embedding, every layer's linear weights and norms, and the
 *  head. One line naming config.json and the field, or the tensor whose shape disagrees. */
export function checkConfigAgainstCheckpoint(ck: Checkpoint, c: ModelConfig): void {
  let layers = 0;
  for (const name of ck.byName.keys()) {
    const m = /^model\.layers\.(\d{1,9})\./.exec(name);
    if (m) layers = Math.max(layers, Number(m[1]) + 1);
  }
  if (layers !== c.numLayers) {
    const holds = layers ? `decoder layers 0–${layers - 1} (${layers})` : 'no decoder layers (model.layers.N.*)';
    throw new CheckpointError(
      'metadata',
      c.file,
      `field 'num_hidden_layers' is ${c.numLayers}, but ${ck.path} holds ${holds} (another model's config.json?)`,
    );
  }
  checkedTensor(ck, c, `${c.tensors.embed}.weight`, [c.vocabSize, c.hiddenSize]);
  const L = c.layout;
  const norms = [L.inputNorm, L.postAttentionNorm, L.preFeedforwardNorm, L.postFeedforwardNorm];
  for (let layer = 0; layer < c.numLayers; layer++) {
    for (const spec of layerLinears(c)) checkedTensor(ck, c, layerTensorName(layer, spec), [spec.rows, spec.cols]);
    for (const n of norms)
      if (n !== undefined) checkedTensor(ck, c, `model.layers.${layer}.${n}.weight`, [c.hiddenSize]);
  }
  const head = `${c.tensors.head}.weight`;
  if (ck.byName.has(head)) checkedTensor(ck, c, head, [c.vocabSize, c.hiddenSize]);
}

/** The weight tensor of a layer's linear layer: model.layers.N.<name>.weight. */
export const layerTensorName = (layer: number, spec: LinearSpec): string => `model.layers.${layer}.${spec.name}.weight`;

/** Every linear weight of a decoder layer, in the forward pass's order (q|k|v, o, up, down). */
export function layerLinears(c: ModelConfig): LinearSpec[] {
  const L = c.layout;
  return [...L.qkv, L.o, ...L.up, L.down];
}

/** The tensor names of layer `layer`'s linear weights by the input they read. */
export interface LayerNames {
  qkv: string[];
  o: string[];
  up: string[];
  down: string[];
}

export function layerNames(c: ModelConfig, layer: number): LayerNames {
  const L = c.layout;
  const n = (s: LinearSpec) => layerTensorName(layer, s);
  return { qkv: L.qkv.map(n), o: [n(L.o)], up: L.up.map(n), down: [n(L.down)] };
}

export interface LayerWeights {
  inputNorm: Float32Array;
  /** LayerNorm's bias (norm 'layer'). */
  inputNormBias?: Float32Array;
  postAttentionNorm?: Float32Array;
  preFeedforwardNorm?: Float32Array;
  postFeedforwardNorm?: Float32Array;
  /** Row-major [out, in] as in the checkpoint (possibly substituted by a hook), by group. */
  qkv: Float32Array[];
  qkvBias: (Float32Array | undefined)[];
  o: Float32Array;
  oBias?: Float32Array;
  up: Float32Array[];
  upBias: (Float32Array | undefined)[];
  down: Float32Array;
  downBias?: Float32Array;
  names: LayerNames;
  bytes: number;
}

export type WeightHook = (
  name: string,
  w: Float32Array,
  rows: number,
  cols: number,
) => Float32Array | undefined | Promise<Float32Array | undefined>;

/** The names of a group read's buffers in ScratchBuffers: each weight's raw bytes in turn, the
 *  group's float32 values side by side, or (readGroupBf16) its bf16 bits side by side. */
const RAW = 'weightBytes',
  GROUP = 'weights',
  BITS = 'weightBits';

const groupFloats = (specs: readonly LinearSpec[]) => specs.reduce((a, s) => a + s.rows * s.cols, 0);

/** A layer's groups of linear weights, each reading one input, in the forward pass's order. */
const layerGroups = (c: ModelConfig): (readonly LinearSpec[])[] => {
  const L = c.layout;
  return [L.qkv, [L.o], L.up, [L.down]];
};

/** A group's buffer from `buffers`; one that does not fit in memory is refused naming the tensor. */
function groupBuffer<T>(t: TensorInfo, bytes: number, get: () => T): T {
  try {
    return get();
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw new CheckpointError(
      'too-large',
      t.file,
      `its group's ${bytes} bytes do not fit in one buffer in memory`,
      t.name,
    );
  }
}

/** Sizes the buffers of readGroup (or, `bf16Bits`, readGroupBf16) for the largest group and
 *  tensor of layer `layer` before any read: grown group by group, a layer's first group's
 *  buffers were left as garbage beside the larger ones until V8 collected them (at 7B, q|k|v's
 *  0.2 GB beside gate|up's). Untouched, the pages cost nothing until a read writes them. An
 *  allocation that fails is left to the read that needs it, which names the tensor. */
export function reserveGroupBuffers(
  ck: Checkpoint,
  c: ModelConfig,
  layer: number,
  buffers: ScratchBuffers,
  bf16Bits: boolean,
): void {
  const bytes = (s: LinearSpec) => ck.byName.get(layerTensorName(layer, s))?.byteLength ?? 0;
  try {
    if (bf16Bits) buffers.u8(BITS, Math.max(...layerGroups(c).map((g) => g.reduce((a, s) => a + bytes(s), 0))));
    else {
      buffers.f32(GROUP, Math.max(...layerGroups(c).map(groupFloats)));
      buffers.u8(RAW, Math.max(...layerLinears(c).map(bytes)));
    }
  } catch {
    // See above.
  }
}

/** A norm's weight (read as 1 + w for Gemma's RMSNorm, as transformers multiplies) and, for
 *  LayerNorm, its bias. `prefix` is the tensor name without .weight. */
export async function readNorm(
  ck: Checkpoint,
  c: ModelConfig,
  prefix: string,
): Promise<{ w: Float32Array; b?: Float32Array }> {
  const w = await readChecked(ck, c, `${prefix}.weight`, [c.hiddenSize]);
  if (c.layout.norm === 'rms1p') for (let i = 0; i < w.length; i++) w[i] = 1 + w[i];
  if (c.layout.norm !== 'layer') return { w };
  return { w, b: await readChecked(ck, c, `${prefix}.bias`, [c.hiddenSize]) };
}

/** A decoder layer's norms (and LayerNorm's biases). */
export interface LayerNorms {
  inputNorm: Float32Array;
  /** LayerNorm's bias (norm 'layer'). */
  inputNormBias?: Float32Array;
  postAttentionNorm?: Float32Array;
  preFeedforwardNorm?: Float32Array;
  postFeedforwardNorm?: Float32Array;
  bytes: number;
}

export async function readLayerNorms(ck: Checkpoint, c: ModelConfig, layer: number): Promise<LayerNorms> {
  const L = c.layout;
  let bytes = 0;
  const norm = async (name: string | undefined) => {
    if (name === undefined) return undefined;
    const n = await readNorm(ck, c, `model.layers.${layer}.${name}`);
    bytes += (n.w.length + (n.b?.length ?? 0)) * 4;
    return n;
  };
  const input = (await norm(L.inputNorm))!;
  const postAttention = await norm(L.postAttentionNorm);
  const preFeedforward = await norm(L.preFeedforwardNorm);
  const postFeedforward = await norm(L.postFeedforwardNorm);
  return {
    inputNorm: input.w,
    inputNormBias: input.b,
    postAttentionNorm: postAttention?.w,
    preFeedforwardNorm: preFeedforward?.w,
    postFeedforwardNorm: postFeedforward?.w,
    bytes,
  };
}

/** The linear weights of a group that reads one input (layout's qkv, [o], up or [down]), in order. */
export interface GroupWeights {
  /** Row-major [out, in] as in the checkpoint, or the weight hook's substitute; bf16 bit
   *  patterns from readGroupBf16. */
  ws: Float32Array[] | Uint16Array[];
  biases: (Float32Array | undefined)[];
  /** Bytes held: the weights read (substituted or not: their buffer is alive), the
   *  substitutes and the biases. */
  bytes: number;
}

async function readBias(ck: Checkpoint, c: ModelConfig, layer: number, spec: LinearSpec) {
  const name = `model.layers.${layer}.${spec.name}.bias`;
  if (spec.bias !== 'required' && !ck.byName.has(name)) return undefined;
  return readChecked(ck, c, name, [spec.rows]);
}

/** One group's weights as float32 (each passed to `hook`, in order) and biases; with `buffers`,
 *  side by side in a buffer that the next group's read reuses (valid until then). */
export async function readGroup(
  ck: Checkpoint,
  c: ModelConfig,
  layer: number,
  specs: readonly LinearSpec[],
  hook?: WeightHook,
  buffers?: ScratchBuffers,
): Promise<GroupWeights & { ws: Float32Array[] }> {
  const first = checkedTensor(ck, c, layerTensorName(layer, specs[0]), [specs[0].rows, specs[0].cols]);
  const total = groupFloats(specs);
  const group = buffers && groupBuffer(first, 4 * total, () => buffers.f32(GROUP, total));
  const out: GroupWeights & { ws: Float32Array[] } = { ws: [], biases: [], bytes: 0 };
  let offset = 0;
  for (const spec of specs) {
    const name = layerTensorName(layer, spec);
    const at = offset;
    const into: ReadBuffers | undefined = buffers && {
      u8: (_name, length) => buffers.u8(RAW, length),
      f32: (_name, length) => group!.subarray(at, at + length),
    };
    let w = await readChecked(ck, c, name, [spec.rows, spec.cols], into);
    offset += w.length;
    out.bytes += w.byteLength;
    const sub = hook ? await hook(name, w, spec.rows, spec.cols) : undefined;
    if (sub) {
      if (sub.length !== w.length)
        throw new Error(`weight hook returned ${sub.length} values for ${name} (${w.length} expected)`);
      w = sub;
      out.bytes += w.byteLength;
    }
    out.ws.push(w);
    const b = await readBias(ck, c, layer, spec);
    out.bytes += b?.byteLength ?? 0;
    out.biases.push(b);
  }
  return out;
}

/** One group's weights as a BF16 checkpoint stores them — bf16 bit patterns, for products in
 *  bf16, where rounding their float32 widening gives the same bits back — side by side in a
 *  buffer of `buffers` that the next group's read reuses: half the bytes of float32 (gate|up at
 *  7B: 180 MB, not 360 MB and a 90 MB read buffer), and no widening. Undefined where a weight of
 *  the group is not stored as BF16. */
export async function readGroupBf16(
  ck: Checkpoint,
  c: ModelConfig,
  layer: number,
  specs: readonly LinearSpec[],
  buffers: ScratchBuffers,
): Promise<GroupWeights | undefined> {
  const ts = specs.map((s) => checkedTensor(ck, c, layerTensorName(layer, s), [s.rows, s.cols]));
  if (!ts.every((t) => t.dtype === 'BF16')) return undefined;
  const total = ts.reduce((a, t) => a + t.byteLength, 0);
  const group = groupBuffer(ts[0], total, () => buffers.u8(BITS, total));
  const out: GroupWeights & { ws: Uint16Array[] } = { ws: [], biases: [], bytes: total };
  let offset = 0;
  for (let k = 0; k < specs.length; k++) {
    const at = offset;
    const bytes = await readTensorBytes(ts[k], {
      u8: (_name, length) => group.subarray(at, at + length),
      f32: (_name, length) => new Float32Array(length),
    });
    offset += bytes.byteLength;
    out.ws.push(new Uint16Array(bytes.buffer, bytes.byteOffset, ts[k].parameters));
    const b = await readBias(ck, c, layer, specs[k]);
    out.bytes += b?.byteLength ?? 0;
    out.biases.push(b);
  }
  return out;
}

/** One decoder layer's weights, each in memory of its own (generation holds every layer's). */
export async function readLayer(
  ck: Checkpoint,
  c: ModelConfig,
  layer: number,
  hook?: WeightHook,
): Promise<LayerWeights> {
  const L = c.layout;
  const norms = await readLayerNorms(ck, c, layer);
  const qkv = await readGroup(ck, c, layer, L.qkv, hook);
  const o = await readGroup(ck, c, layer, [L.o], hook);
  const up = await readGroup(ck, c, layer, L.up, hook);
  const down = await readGroup(ck, c, layer, [L.down], hook);
  return {
    inputNorm: norms.inputNorm,
    inputNormBias: norms.inputNormBias,
    postAttentionNorm: norms.postAttentionNorm,
    preFeedforwardNorm: norms.preFeedforwardNorm,
    postFeedforwardNorm: norms.postFeedforwardNorm,
    qkv: qkv.ws,
    qkvBias: qkv.biases,
    o: o.ws[0],
    oBias: o.biases[0],
    up: up.ws,
    upBias: up.biases,
    down: down.ws[0],
    downBias: down.biases[0],
    names: layerNames(c, layer),
    bytes: norms.bytes + qkv.bytes + o.bytes + up.bytes + down.bytes,
  };
}
