// Reads one HQQLinear module back from a checkpoint (ours or transformers' `save_pretrained`):
// its meta (hqq's safetensors encodings), W_q, scale and zero, and dequantizes it exactly as
// HQQLinear does in the module's compute dtype. Everything is checked against everything else
// before a value is decoded: a hostile file gets one line naming it, the module and the field.

import {
  brief,
  CheckpointError,
  readTensorBytes,
  readTensorF32,
  type Checkpoint,
  type TensorInfo,
} from '../checkpoint';
import { HQQ_BITS, hqqDequantize, type HqqComputeDtype } from './hqq';
import { hqqPackedShape, hqqPackingName, hqqUnpack } from './hqqPack';

export interface HqqModule {
  module: string;
  rows: number;
  cols: number;
  bits: number;
  groupSize: number;
  computeDtype: HqqComputeDtype;
  /** W as HQQLinear.dequantize() gives it, row-major [rows, cols]. */
  values: Float32Array;
}

/** Whether `module` is stored as an HQQLinear (it has a W_q). */
export function isHqqModule(ck: Checkpoint, module: string): boolean {
  return ck.byName.has(`${module}.W_q`);
}

const DTYPES: Record<string, HqqComputeDtype> = {
  'torch.float32': 'float32',
  'torch.bfloat16': 'bfloat16',
  'torch.float16': 'float16',
};

export async function readHqqModule(ck: Checkpoint, module: string): Promise<HqqModule> {
  const tensor = (key: string): TensorInfo => {
    const t = ck.byName.get(`${module}.${key}`);
    if (!t) throw new CheckpointError('tensor-entry', ck.path, `HQQ module '${module}' has no '${key}'`);
    return t;
  };
  const bad = (key: string, why: string) =>
    new CheckpointError('tensor-entry', tensor(key).file, `HQQ meta '${key}' ${why}`, `${module}.${key}`);
  const int = async (key: string, dtype: 'I32' | 'I64', count: number): Promise<number[]> => {
    const t = tensor(key);
    if (t.dtype !== dtype || t.shape.reduce((a, b) => a * b, 1) !== count)
      throw bad(key, `must be ${dtype} with ${count} value${count > 1 ? 's' : ''}`);
    const b = await readTensorBytes(t);
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    return Array.from({ length: count }, (_, i) =>
      dtype === 'I32' ? v.getInt32(4 * i, true) : Number(v.getBigInt64(8 * i, true)),
    );
  };
  const text = async (key: string): Promise<string> => {
    const t = tensor(key);
    if (t.dtype !== 'U8' || t.shape.length !== 1 || t.byteLength > 64) throw bad(key, 'must be a short U8 string');
    return String.fromCharCode(...(await readTensorBytes(t)));
  };

  const [rows, cols] = await int('shape', 'I64', 2);
  const [bits] = await int('nbits', 'I32', 1);
  const [groupSize] = await int('group_size', 'I32', 1);
  const [axis] = await int('axis', 'I32', 1);
  if (!(rows > 0 && cols > 0 && rows * cols <= 2 ** 31))
    throw bad('shape', `[${rows}, ${cols}] is not a matrix we read`);
  if (!HQQ_BITS.includes(bits)) throw bad('nbits', `is ${bits}, not ${HQQ_BITS.join(', ')}`);
  if (axis !== 1) throw bad('axis', `is ${axis}; only axis 1 (what transformers writes) is read`);
  if (!(groupSize > 0 && (rows * cols) % groupSize === 0))
    throw bad('group_size', `${groupSize} does not divide ${rows}×${cols}`);
  const packing = await text('packing');
  if (packing !== hqqPackingName(bits)) throw bad('packing', `is ${brief(packing)}, not ${hqqPackingName(bits)}`);
  const computeName = await text('compute_dtype');
  const computeDtype = DTYPES[computeName];
  if (!computeDtype) throw bad('compute_dtype', `is ${brief(computeName)}, not ${Object.keys(DTYPES).join(', ')}`);

  const groups = (rows * cols) / groupSize;
  let shape: [number, number];
  try {
    shape = hqqPackedShape(groups, groupSize, bits);
  } catch (e) {
    throw bad('nbits', (e as Error).message);
  }
  const wq = tensor('W_q');
  const wqDtype = bits === 3 ? 'I32' : 'U8';
  if (wq.dtype !== wqDtype || wq.shape.join() !== shape.join())
    throw new CheckpointError(
      'shape',
      wq.file,
      `HQQ W_q is ${wq.dtype} [${wq.shape}], expected ${wqDtype} [${shape}] for ${rows}×${cols} at ${bits} bits`,
      wq.name,
    );
  const perGroup = async (key: string) => {
    const t = tensor(key);
    if (t.shape.reduce((a, b) => a * b, 1) !== groups) throw bad(key, `has [${t.shape}], not ${groups} groups`);
    const v = await readTensorF32(t);
    for (let i = 0; i < v.length; i++)
      if (!Number.isFinite(v[i])) throw bad(key, `holds a non-finite value at group ${i}`);
    return v;
  };
  const scale = await perGroup('scale');
  const zero = await perGroup('zero');
  const codes = hqqUnpack({ data: await readTensorBytes(wq), dtype: wqDtype, shape }, groups, groupSize, bits);
  const values = hqqDequantize(codes, scale, zero, groupSize, computeDtype);
  return { module, rows, cols, bits, groupSize, computeDtype, values };
}
