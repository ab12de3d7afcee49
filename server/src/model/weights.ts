// Reads one decoder layer's tensors (and the embedding / head) of a Llama-family checkpoint
// with positioned reads, checking each shape against config.json so that a mismatched
// checkpoint stops with one line naming the file and the tensor.

import type { Checkpoint } from '../checkpoint/checkpoint';
import { CheckpointError } from '../checkpoint/errors';
import { readTensorF32, readTensorRowsF32, type ReadBuffers } from '../checkpoint/reader';
import type { TensorInfo } from '../checkpoint/header';
import type { ScratchBuffers } from '../base/scratchBuffers';
import type { ModelConfig } from './config';

export const LINEAR_NAMES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LinearName = (typeof LINEAR_NAMES)[number];

export function linearTensorName(layer: number, lin: LinearName): string {
  const block = lin === 'gate_proj' || lin === 'up_proj' || lin === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${block}.${lin}.weight`;
}

/** [out, in] of each linear layer. */
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

export interface LayerWeights {
  inputNorm: Float32Array;
  postNorm: Float32Array;
  /** Row-major [out, in] as in the checkpoint (possibly substituted by a hook). */
  linear: Record<LinearName, Float32Array>;
  qBias?: Float32Array;
  kBias?: Float32Array;
  vBias?: Float32Array;
  bytes: number;
}

export type WeightHook = (
  name: string,
  w: Float32Array,
  rows: number,
  cols: number,
) => Float32Array | undefined | Promise<Float32Array | undefined>;

/** Each linear weight's float32 buffer, reused from layer to layer (the raw bytes share one):
 *  a 1.1B model's layer is 176 MB of float32, and fresh pages cost more than decoding them. */
function layerBuffers(buffers: ScratchBuffers, lin: LinearName): ReadBuffers {
  return {
    u8: (name, length) => buffers.u8(name, length),
    f32: (name, length) => buffers.f32(`${lin}.${name}`, length),
  };
}

/** One decoder layer's weights; with `buffers`, in buffers that the next layer's read reuses
 *  (valid until then). */
export async function readLayer(
  ck: Checkpoint,
  c: ModelConfig,
  layer: number,
  hook?: WeightHook,
  buffers?: ScratchBuffers,
): Promise<LayerWeights> {
  const p = `model.layers.${layer}`;
  const inputNorm = await readChecked(ck, c, `${p}.input_layernorm.weight`, [c.hiddenSize]);
  const postNorm = await readChecked(ck, c, `${p}.post_attention_layernorm.weight`, [c.hiddenSize]);
  const linear = {} as Record<LinearName, Float32Array>;
  let bytes = (inputNorm.length + postNorm.length) * 4;
  for (const lin of LINEAR_NAMES) {
    const name = linearTensorName(layer, lin);
    const shape = linearShape(c, lin);
    let w = await readChecked(ck, c, name, shape, buffers && layerBuffers(buffers, lin));
    const sub = hook ? await hook(name, w, shape[0], shape[1]) : undefined;
    if (sub) {
      if (sub.length !== w.length)
        throw new Error(`weight hook returned ${sub.length} values for ${name} (${w.length} expected)`);
      w = sub;
    }
    linear[lin] = w;
    bytes += w.length * 4;
  }
  const out: LayerWeights = { inputNorm, postNorm, linear, bytes };
  const biasNames = { qBias: 'q_proj', kBias: 'k_proj', vBias: 'v_proj' } as const;
  for (const [key, lin] of Object.entries(biasNames) as [keyof typeof biasNames, LinearName][]) {
    const name = `${p}.self_attn.${lin}.bias`;
    if (!c.qkvBias && !ck.byName.has(name)) continue;
    const b = await readChecked(ck, c, name, [linearShape(c, lin)[0]]);
    out[key] = b;
    out.bytes += b.length * 4;
  }
  return out;
}
