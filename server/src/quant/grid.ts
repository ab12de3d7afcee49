// The grid a matrix is quantized onto, whatever its kind: a codebook times a block scale
// (nf, uniform: quantize.ts) or an affine grid (code − zero)·scale (hqq: hqq.ts). LoftQ, the
// calibrated run and eval's QLoRA comparison call only this; which grid a quantizer uses is
// its registry scale rule, so a new codebook quantizer needs nothing here.

import { isCodebookQuantizer } from '../registry';
import type { MatrixSettings } from '../registry';
import type { F32Region, U8Region, Workspace } from '../kernels/kernels';
import { withWorkspace } from '../kernels/kernels';
import type { KernelPool } from '../kernels/pool';
import { codebook } from './codebook';
import { dequantizeInto, quantizedRegions, quantizeRegion, quantizeResidual } from './quantize';
import {
  hqqDequantizeRegion,
  hqqQuantizeRegion,
  hqqShapeProblem,
  hqqQuantizeResidual,
  hqqWorkRegions,
  type HqqComputeDtype,
  type HqqWork,
} from './hqq';
import { hqqPack } from './hqqPack';
import { packCodes } from './pack';
import { fromFloat32, type DType } from '../checkpoint';
import { ENTRY } from '../base/journal';

export interface GridRegions {
  codes: U8Region;
  /** One per block: the codebook's scale, or HQQ's stored multiplier (in the compute dtype). */
  scales: F32Region;
  /** Q, as float32 numbers (for HQQ: exactly what its dequantize gives in the compute dtype). */
  values: F32Region;
  /** HQQ's zero point per group; absent for codebook grids. */
  zero?: F32Region;
  /** HQQ's solver memory, carved once per matrix. */
  work?: HqqWork;
}

export interface MatrixGrid {
  /** Regions for a matrix of `size` values (carve them before taking any view). */
  regions(ws: Workspace, size: number): GridRegions;
  quantize(ws: Workspace, x: F32Region, out: GridRegions): void;
  /** quantize(x), residual = w − values; returns Σ residual². */
  quantizeResidual(
    ws: Workspace,
    x: F32Region,
    out: GridRegions,
    w: F32Region,
    residual: F32Region,
    pool?: KernelPool,
  ): Promise<number>;
  /** out.values from out's codes, scales (and zero): the values quantize gave them, bit for bit
   *  (calibrated LoftQ keeps only an earlier iterate's codes and scales, not its values). */
  dequantize(ws: Workspace, out: GridRegions): void;
}

type GridSettings = Pick<MatrixSettings, 'quantizer' | 'bits' | 'blockSize'>;

/** The dtype HQQLinear computes in for a checkpoint dtype (F32, BF16, F16). */
export function computeDtypeOf(dtype: string): HqqComputeDtype {
  return dtype === 'BF16' ? 'bfloat16' : dtype === 'F16' ? 'float16' : 'float32';
}

function codebookGrid(s: GridSettings): MatrixGrid {
  const table = codebook(s.quantizer, s.bits);
  return {
    regions: (ws, size) => quantizedRegions(ws, size, s.blockSize),
    quantize: (ws, x, out) => quantizeRegion(ws, x, table, s.quantizer, s.blockSize, out),
    quantizeResidual: (ws, x, out, w, residual, pool) =>
      quantizeResidual(ws, x, table, s.quantizer, s.blockSize, out, w, residual, pool),
    dequantize: (_ws, out) =>
      dequantizeInto(out.codes.view(), out.scales.view(), table, s.blockSize, out.values.view()),
  };
}

/** HQQ with its zero-point optimizer on (HqqConfig's default), in kernel memory: Q is
 *  HQQLinear's dequantize in the compute dtype (scale and zero cast to it, as it holds them;
 *  the journal stores them so: storedCodes). */
function hqqGrid(s: GridSettings, dtype: HqqComputeDtype): MatrixGrid {
  const params = { bits: s.bits, groupSize: s.blockSize, optimize: true };
  const hqqRegions = (out: GridRegions) => ({ codes: out.codes, scale: out.scales, zero: out.zero! });
  return {
    regions: (ws, size) => {
      const groups = Math.ceil(size / s.blockSize);
      return {
        codes: ws.u8(size),
        scales: ws.f32(groups),
        values: ws.f32(size),
        zero: ws.f32(groups),
        work: hqqWorkRegions(ws, size, s.blockSize),
      };
    },
    quantize: (ws, x, out) => {
      hqqQuantizeRegion(ws, x, params, hqqRegions(out), out.work!);
      hqqDequantizeRegion(ws, hqqRegions(out), s.blockSize, dtype, out.values);
    },
    quantizeResidual: (ws, x, out, w, residual, pool) =>
      hqqQuantizeResidual(ws, x, params, hqqRegions(out), out.work!, dtype, out.values, w, residual, pool),
    dequantize: (ws, out) => hqqDequantizeRegion(ws, hqqRegions(out), s.blockSize, dtype, out.values),
  };
}

/** Why a rows×cols matrix cannot be held on this grid, or undefined: a codebook grid holds any
 *  shape; HQQ's only what its loader can pack (a shape it cannot would load wrong). */
export function gridShapeProblem(s: GridSettings, rows: number, cols: number): string | undefined {
  return isCodebookQuantizer(s.quantizer) ? undefined : hqqShapeProblem(rows, cols, s.bits, s.blockSize);
}

/** The grid of a matrix's settings; `dtype` is the checkpoint's (HQQ computes in it). */
export function matrixGrid(s: GridSettings, dtype: string): MatrixGrid {
  return isCodebookQuantizer(s.quantizer) ? codebookGrid(s) : hqqGrid(s, computeDtypeOf(dtype));
}

/** quantize(W)'s values (the QLoRA init) on a matrix's grid. */
export function quantizeValues(w: Float32Array, s: GridSettings, dtype: string): Float32Array {
  const grid = matrixGrid(s, dtype);
  return withWorkspace((ws) => {
    const out = grid.regions(ws, w.length);
    const x = ws.f32(w.length, w);
    grid.quantize(ws, x, out);
    return out.values.view().slice();
  });
}

export interface StoredTensor {
  name: string;
  dtype: DType;
  shape: number[];
  bytes: Uint8Array;
}

const f32Bytes = (x: Float32Array) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);

/** The codes and scales a journal entry keeps for a format that writes them: codebook grids
 *  as `--format packed` stores them (codes LSB first, float32 scales), HQQ as HQQLinear holds
 *  them (W_q packed, scale and zero [groups, 1] in the checkpoint's dtype). */
export function storedCodes(
  s: GridSettings,
  dtype: string,
  res: { codes: Uint8Array; scales: Float32Array; zero?: Float32Array },
): StoredTensor[] {
  if (isCodebookQuantizer(s.quantizer)) {
    const packed = packCodes(res.codes, s.bits);
    return [
      { name: ENTRY.codes, dtype: 'U8', shape: [packed.length], bytes: packed },
      { name: ENTRY.scales, dtype: 'F32', shape: [res.scales.length], bytes: f32Bytes(res.scales) },
    ];
  }
  const groups = res.scales.length;
  const w = hqqPack(res.codes, groups, s.blockSize, s.bits);
  const stored = (dtype === 'BF16' || dtype === 'F16' ? dtype : 'F32') as DType;
  return [
    { name: ENTRY.codes, dtype: w.dtype, shape: w.shape, bytes: w.data },
    { name: ENTRY.scales, dtype: stored, shape: [groups, 1], bytes: fromFloat32(stored, res.scales) },
    { name: ENTRY.zero, dtype: stored, shape: [groups, 1], bytes: fromFloat32(stored, res.zero!) },
  ];
}
