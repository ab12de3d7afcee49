// HQQ (half-quadratic quantization) as hqq 0.2.8.post1 does it on CPU (float32), with
// axis 1 grouping: the row-major flattened matrix cut into consecutive groups of
// `groupSize` values, one (scale, zero) per group. Bit-exact with the library where it is
// deterministic float32 arithmetic:
//   s_inv = fl(fl(1 / (max − min)) · (2^b − 1))   (torch's int / tensor: reciprocal, then multiply)
//   s_inv = 1 where |max − min| ≤ 1e-4;  s_inv = min(s_inv, 2e4)
//   zero  = fl(−min · s_inv), rounded half-even when roundZero (hqq's default: 4 bits only)
//   code  = clamp(rne(fl(fl(w · s_inv) + zero)), 0, 2^b − 1)
//   scale = fl(1 / s_inv), the stored multiplier:  W_r = (code − zero) · scale
// With optimize, the zero comes from the release's proximal solver
// (optimize_weights_proximal_legacy: lp 0.7, β 10 never updated, 20 iterations, stopping
// when the whole matrix's mean |W − W_r| stops falling; the zero of the last step taken is
// kept). Its per-group mean is summed in torch's order (the AVX2 inner reduction of a
// float32 row), its shrink in float32 with a correctly rounded x^(p−1). Torch's vectorized
// pow need not be correctly rounded and its whole-matrix mean is a float32 sum (ours adds
// float32 group sums in float64), so a zero may differ from the library's in the last bits
// and, rarely, a code with it; on the fixtures every zero and code is hqq's.
//
// The passes run as WebAssembly kernels (server/wasm/kernels.ts, group sizes that are
// multiples of 8) on kernel memory — hqqQuantizeRegion, hqqQuantizeResidual (split over a
// kernel pool), hqqDequantizeRegion — or on plain arrays through hqqQuantize / hqqDequantize;
// hqqQuantizeReference / hqqDequantizeReference are the same in TypeScript, result for
// result. The solver runs group by group: a step is, per group, a pure function of that
// group's zero, so each group takes every step while it is in cache and stops at its fixed
// point; the early stop then picks the step for all (proximalGroupsReference).

import { hqqKernels, withWorkspace } from '../kernels/kernels';
import type { F32Region, F64Region, U8Region, Workspace } from '../kernels/kernels';
import { inParts, type KernelName, type KernelPool } from '../kernels/pool';

export type HqqComputeDtype = 'float32' | 'bfloat16' | 'float16';

/** The bit widths HQQLinear packs (hqq also accepts 5/6 bits stored as 8 and 1.58; not here). */
export const HQQ_BITS: readonly number[] = [1, 2, 3, 4, 8];

export interface HqqParams {
  bits: number;
  groupSize: number;
  optimize: boolean;
  /** default: bits === 4 (HQQ's BaseQuantizeConfig) */
  roundZero?: boolean;
}

export interface HqqQuantized {
  /** numel, row-major, one code per element */
  codes: Uint8Array;
  /** [groups], the stored multiplier = fl(1/s_inv) */
  scale: Float32Array;
  /** [groups] */
  zero: Float32Array;
}

/** The proximal solver's settings (hqq 0.2.8.post1's defaults). `updateBeta` is hqq master's
 *  solver (β ·= κ after each step, commit d88a488); the release never updates β. */
export interface HqqOptimizerOptions {
  lpNorm?: number;
  beta?: number;
  kappa?: number;
  iters?: number;
  updateBeta?: boolean;
}

/** What the last hqqQuantize with optimize did: steps taken (≤ iters) and the float32 mean
 *  |W − W_r| of each step (before its zero update), for tests and measurements. */
export interface HqqOptimizerTrace {
  steps: number;
  errors: number[];
}

const fr = Math.fround;
/** 2^52 + 2^51: adding and subtracting it rounds a double to an integer, ties to even. */
const RNE_MAGIC = 6755399441055744;
/** torch compares |max − min| with the float32 of 1e-4. */
const DENOM_MIN = fr(1e-4);
const S_INV_MAX = 2e4;

function checkParams(n: number, p: HqqParams): void {
  if (!HQQ_BITS.includes(p.bits)) throw new RangeError(`HQQ bits must be one of ${HQQ_BITS.join(', ')}: ${p.bits}`);
  if (!Number.isInteger(p.groupSize) || p.groupSize <= 0)
    throw new RangeError(`HQQ group size must be a positive integer: ${p.groupSize}`);
  if (n % p.groupSize !== 0) throw new RangeError(`${n} values are not a whole number of groups of ${p.groupSize}`);
}

function outputs(n: number, groups: number, out?: HqqQuantized): HqqQuantized {
  if (!out) return { codes: new Uint8Array(n), scale: new Float32Array(groups), zero: new Float32Array(groups) };
  if (out.codes.length !== n || out.scale.length !== groups || out.zero.length !== groups)
    throw new RangeError(
      `hqqQuantize: output buffers of ${out.codes.length}/${out.scale.length}/${out.zero.length} values ` +
        `for ${n} values in ${groups} groups`,
    );
  return out;
}

/** s_inv and the initial zero of every group (the min/max rule, guards, round_zero). */
function initialScales(
  x: Float32Array,
  g: number,
  maxV: number,
  roundZero: boolean,
  sInv: Float32Array,
  zero: Float32Array,
) {
  const groups = sInv.length;
  for (let b = 0, start = 0; b < groups; b++, start += g) {
    let lo = x[start],
      hi = lo;
    for (let i = start + 1, end = start + g; i < end; i++) {
      const v = x[i];
      if (v < lo) lo = v;
      else if (v > hi) hi = v;
    }
    const denom = fr(hi - lo);
    let s = fr(fr(1 / denom) * maxV);
    if (Math.abs(denom) <= DENOM_MIN) s = 1;
    if (s > S_INV_MAX) s = S_INV_MAX;
    sInv[b] = s;
    let z = fr(-lo * s);
    if (roundZero) {
      const r = z + RNE_MAGIC - RNE_MAGIC;
      z = r === 0 ? z * 0 : r; // torch.round keeps the sign of a zero
    }
    zero[b] = z;
  }
}

/** codes = clamp(rne(fl(fl(w · s_inv) + zero)), 0, maxV), group by group. */
function assignHqqCodes(
  x: Float32Array,
  g: number,
  maxV: number,
  sInv: Float32Array,
  zero: Float32Array,
  codes: Uint8Array,
): void {
  const groups = sInv.length;
  for (let b = 0, start = 0; b < groups; b++, start += g) {
    const s = sInv[b],
      z = zero[b];
    for (let i = start, end = start + g; i < end; i++) {
      const q = fr(fr(x[i] * s) + z) + RNE_MAGIC - RNE_MAGIC;
      codes[i] = q > 0 ? (q < maxV ? q : maxV) : 0;
    }
  }
}

/** Sum of buf[0..n) in the order torch 2.6's CPU sum reduces a contiguous row of float32
 *  (SumKernel.cpp vectorized_inner_sum with `lanes`-wide vectors: row_sum's 4 interleaved
 *  accumulators with multi_row_sum's cascade levels, then the scalar tail, then the lanes
 *  one by one). Every addition is a float32 addition. */
export function torchRowSumF32(buf: Float32Array, n: number, lanes = 8): number {
  const vecSize = Math.floor(n / lanes);
  const sizeIlp = vecSize >> 2;
  let total = 0;
  for (let k = vecSize * lanes; k < n; k++) total = fr(total + buf[k]);
  const acc = laneAcc;
  for (let l = 0; l < lanes; l++) {
    acc.fill(0);
    let i = 0;
    // multi_row_sum: rows of 4 vectors, levels of 16 rows (level_power 4 below 2^20 rows).
    while (i + 16 <= sizeIlp) {
      for (let j = 0; j < 16; j++, i++) for (let k = 0; k < 4; k++) acc[k] = fr(acc[k] + buf[(i * 4 + k) * lanes + l]);
      for (let j = 1; j < 4; j++) {
        for (let k = 0; k < 4; k++) {
          acc[j * 4 + k] = fr(acc[j * 4 + k] + acc[(j - 1) * 4 + k]);
          acc[(j - 1) * 4 + k] = 0;
        }
        if ((i & (15 << (j * 4))) !== 0) break;
      }
    }
    for (; i < sizeIlp; i++) for (let k = 0; k < 4; k++) acc[k] = fr(acc[k] + buf[(i * 4 + k) * lanes + l]);
    for (let j = 1; j < 4; j++) for (let k = 0; k < 4; k++) acc[k] = fr(acc[k] + acc[j * 4 + k]);
    for (let v = sizeIlp * 4; v < vecSize; v++) acc[0] = fr(acc[0] + buf[v * lanes + l]);
    const lane = fr(fr(fr(acc[0] + acc[1]) + acc[2]) + acc[3]);
    total = fr(total + lane);
  }
  return total;
}
const laneAcc = new Float64Array(16);

/** Sum of 64 values in torch's AVX2 order (torchRowSumF32(buf, 64, 8), unrolled). */
function torchSum64(buf: Float32Array): number {
  let total = 0;
  for (let l = 0; l < 8; l++) {
    const a0 = fr(buf[l] + buf[32 + l]),
      a1 = fr(buf[8 + l] + buf[40 + l]),
      a2 = fr(buf[16 + l] + buf[48 + l]),
      a3 = fr(buf[24 + l] + buf[56 + l]);
    total = fr(total + fr(fr(fr(a0 + a1) + a2) + a3));
  }
  return total;
}

/** The proximal solver's per-step constants: fl(1/β), the shrink floor (|d| below it shrinks
 *  to 0: |d| − (1/β)·|d|^(p−1) ≤ 0 ⇔ |d|^(2−p) ≤ 1/β, taken with a 1% margin — near and
 *  above it the exact float32 formula decides), fl(p − 1), and the smallest floor when β
 *  changes from step to step (+∞ when it does not). */
interface ProximalSchedule {
  iters: number;
  invBetas: Float32Array;
  floors: Float32Array;
  exponent: number;
  minFloor: number;
}

function proximalSchedule(o: Required<HqqOptimizerOptions>): ProximalSchedule {
  const iters = Math.max(0, Math.floor(o.iters));
  const invBetas = new Float32Array(iters),
    floors = new Float32Array(iters);
  let beta = o.beta;
  for (let k = 0; k < iters; k++) {
    invBetas[k] = 1 / beta;
    floors[k] = Math.pow(invBetas[k], 1 / (2 - o.lpNorm)) * 0.99;
    if (o.updateBeta) beta *= o.kappa;
  }
  const minFloor = o.updateBeta ? Math.min(...floors) : Infinity;
  return { iters, invBetas, floors, exponent: fr(o.lpNorm - 1), minFloor };
}

let stepBuf = new Float32Array(64);

/** The proximal solver group by group, in TypeScript (the reference of the hqqProximalSolve
 *  kernel). A step of optimize_weights_proximal_legacy is, per group, a pure function of its
 *  zero: with it, q = codes, W_r = fl(fl(q − z) / s), d = W − W_r, and the new zero is
 *  mean(q − fl(fl(W − shrink(d)) · s)) in torch's summation order. So each group takes every
 *  step speculatively while it is in cache, adding its Σ|d| (four float32 accumulators by
 *  index mod 4, ((a0 + a1) + (a2 + a3)) in float64: torch's own sum is float32) to
 *  errs[chunk · iters + step] (chunks of ERR_CHUNK groups; stepErrors adds them up) and
 *  writing its zero after
 *  each step to traj[group·(iters + 1) + step + 1]; a group whose zero comes back unchanged
 *  (bit for bit, and no |d| reached the smallest floor when β changes) repeats itself, so its
 *  later steps are copied. The caller then takes the steps the early stop allows. */
function proximalGroupsReference(
  x: Float32Array,
  g: number,
  maxV: number,
  sInv: Float32Array,
  zero0: Float32Array,
  sch: ProximalSchedule,
  traj: Float32Array,
  errs: Float64Array,
): void {
  const groups = sInv.length,
    iters = sch.iters,
    stride = iters + 1;
  if (stepBuf.length < g) stepBuf = new Float32Array(g);
  const buf = stepBuf;
  const sum = g === 64 ? torchSum64 : (v: Float32Array) => torchRowSumF32(v, g);
  const { exponent, minFloor } = sch;
  for (let b = 0, start = 0; b < groups; b++, start += g) {
    const s = sInv[b];
    let z = zero0[b];
    const t = b * stride,
      chunk = Math.floor(b / ERR_CHUNK) * iters;
    traj[t] = z;
    let k = 0,
      gErr = 0;
    for (; k < iters; k++) {
      const invBeta = sch.invBetas[k],
        floor = sch.floors[k];
      let e0 = 0,
        e1 = 0,
        e2 = 0,
        e3 = 0,
        above = false;
      for (let i = 0; i < g; i++) {
        const w = x[start + i];
        const ws = fr(w * s);
        let q = fr(ws + z) + RNE_MAGIC - RNE_MAGIC;
        q = q > 0 ? (q < maxV ? q : maxV) : 0;
        const d = fr(w - fr(fr(q - z) / s));
        const a = Math.abs(d);
        const lane = i & 3;
        if (lane === 0) e0 = fr(e0 + a);
        else if (lane === 1) e1 = fr(e1 + a);
        else if (lane === 2) e2 = fr(e2 + a);
        else e3 = fr(e3 + a);
        if (a >= minFloor) above = true;
        if (!(a >= floor)) buf[i] = fr(q - ws);
        else {
          let e = fr(a - fr(invBeta * fr(Math.pow(a, exponent))));
          if (e < 0) e = 0;
          if (d < 0) e = -e;
          buf[i] = fr(q - fr(fr(w - e) * s));
        }
      }
      gErr = e0 + e1 + (e2 + e3);
      errs[chunk + k] += gErr;
      const next = fr(sum(buf) / g);
      traj[t + k + 1] = next;
      const fixed = Object.is(next, z) && !above;
      z = next;
      if (fixed) break;
    }
    for (k++; k < iters; k++) {
      errs[chunk + k] += gErr;
      traj[t + k + 1] = z;
    }
  }
}

/** Groups per partial sum of the solver's error (the unit of its split over threads). */
const ERR_CHUNK = 256;

function errChunks(groups: number): number {
  return Math.ceil(groups / ERR_CHUNK);
}

/** Each step's Σ|d| over the matrix: the chunks' partial sums, in chunk order. */
function stepErrors(chunkErrs: Float64Array, chunks: number, iters: number): Float64Array {
  const errs = new Float64Array(iters);
  for (let c = 0; c < chunks; c++) for (let k = 0; k < iters; k++) errs[k] += chunkErrs[c * iters + k];
  return errs;
}

/** The early stop of optimize_weights_proximal_legacy over the steps' Σ|d|: steps are taken
 *  while the matrix's float32 mean |W − W_r| falls; the step that does not lower it is still
 *  taken (its zero stays). */
function earlyStop(errs: Float64Array, n: number): HqqOptimizerTrace {
  let best = Infinity;
  const errors: number[] = [];
  for (let k = 0; k < errs.length; k++) {
    const err = fr(errs[k] / n);
    errors.push(err);
    if (err < best) best = err;
    else break;
  }
  return { steps: errors.length, errors };
}

const RELEASE_OPTIMIZER: Required<HqqOptimizerOptions> = {
  lpNorm: 0.7,
  beta: 10,
  kappa: 1.01,
  iters: 20,
  updateBeta: false,
};

let lastTrace: HqqOptimizerTrace = { steps: 0, errors: [] };

/** The optimizer trace of the last hqqQuantize with optimize on this thread. */
export function hqqLastOptimizerTrace(): HqqOptimizerTrace {
  return lastTrace;
}

/** hqqQuantize in plain TypeScript: the reference the kernels are tested against (and the
 *  path for group sizes that are not a multiple of 8). */
export function hqqQuantizeReference(
  x: Float32Array,
  p: HqqParams,
  out?: HqqQuantized,
  optimizer?: HqqOptimizerOptions,
): HqqQuantized {
  const n = x.length;
  checkParams(n, p);
  const g = p.groupSize,
    groups = n / g;
  const maxV = 2 ** p.bits - 1;
  const r = outputs(n, groups, out);
  // s_inv is kept in the scale array until the end, when it becomes fl(1 / s_inv).
  const sInv = r.scale,
    zero = r.zero;
  initialScales(x, g, maxV, p.roundZero ?? p.bits === 4, sInv, zero);
  if (p.optimize) {
    const sch = proximalSchedule({ ...RELEASE_OPTIMIZER, ...optimizer });
    const traj = new Float32Array(groups * (sch.iters + 1)),
      chunkErrs = new Float64Array(errChunks(groups) * sch.iters);
    proximalGroupsReference(x, g, maxV, sInv, zero, sch, traj, chunkErrs);
    lastTrace = earlyStop(stepErrors(chunkErrs, errChunks(groups), sch.iters), n);
    for (let b = 0; b < groups; b++) zero[b] = traj[b * (sch.iters + 1) + lastTrace.steps];
  }
  assignHqqCodes(x, g, maxV, sInv, zero, r.codes);
  for (let b = 0; b < groups; b++) sInv[b] = fr(1 / sInv[b]);
  return r;
}

/** HQQ's results in kernel memory (quantize's output, dequantize's input). */
export interface HqqRegions {
  /** numel, one code per element */
  codes: U8Region;
  /** [groups], the stored multiplier fl(1/s_inv) */
  scale: F32Region;
  /** [groups] */
  zero: F32Region;
}

/** The solver's working memory in a workspace, carved once and reused by every
 *  hqqQuantizeRegion / hqqQuantizeResidual of a matrix (hqqWorkRegions). */
export interface HqqWork {
  readonly numel: number;
  readonly groupSize: number;
  readonly iters: number;
  /** The most threads a pass is split over (one scratch each). */
  readonly parts: number;
  readonly traj: F32Region;
  readonly errs: F64Region;
  readonly invBetas: F32Region;
  readonly floors: F32Region;
  readonly scratch: F32Region;
}

/** Threads a work area serves at most (a kernel pool with more helpers is used in part). */
const MAX_PARTS = 64;

/** Carves what hqqQuantizeRegion / hqqQuantizeResidual need beside their input and output,
 *  for a matrix of `numel` values and a solver of up to `iters` steps (20, hqq's, by
 *  default): about 1.3 bytes per value at group size 64. */
export function hqqWorkRegions(
  ws: Workspace,
  numel: number,
  groupSize: number,
  iters = RELEASE_OPTIMIZER.iters,
): HqqWork {
  const groups = Math.floor(numel / groupSize),
    m = Math.max(1, iters);
  return {
    numel,
    groupSize,
    iters,
    parts: MAX_PARTS,
    traj: ws.f32(groups * (iters + 1)),
    errs: ws.f64(Math.max(1, errChunks(groups)) * m),
    invBetas: ws.f32(m),
    floors: ws.f32(m),
    scratch: ws.f32(MAX_PARTS * (groupSize + 128)),
  };
}

/** One kernel pass over [0, total) elements, splittable on multiples of `align`. */
interface KernelCall {
  total: number;
  align: number;
  name: string;
  args: (first: number, last: number, part: number) => number[];
}

/** hqqQuantize's passes on kernel memory, as kernel calls (run by runCalls / runCallsInParts);
 *  each yield receives the pass's return value. */
function* quantizeCalls(
  x: F32Region,
  p: HqqParams,
  out: HqqRegions,
  work: HqqWork,
  optimizer?: HqqOptimizerOptions,
): Generator<KernelCall, void, number> {
  const n = x.length;
  checkParams(n, p);
  const g = p.groupSize,
    groups = n / g;
  if (g % 8 !== 0) throw new RangeError(`hqqQuantizeRegion: group size ${g} is not a multiple of 8`);
  if (out.codes.length !== n || out.scale.length !== groups || out.zero.length !== groups)
    throw new RangeError(`hqqQuantizeRegion: output regions do not hold ${n} values in ${groups} groups`);
  const maxV = 2 ** p.bits - 1;
  // s_inv lives in the scale region until the end, when it becomes fl(1 / s_inv).
  const sInv = out.scale.ptr,
    zero = out.zero.ptr;
  const roundZero = (p.roundZero ?? p.bits === 4) ? 1 : 0;
  yield {
    total: n,
    align: g,
    name: 'hqqScales',
    args: (a, b) => [x.ptr + 4 * a, b - a, g, maxV, roundZero, sInv + (4 * a) / g, zero + (4 * a) / g],
  };
  if (p.optimize) {
    const sch = proximalSchedule({ ...RELEASE_OPTIMIZER, ...optimizer });
    if (work.numel !== n || work.groupSize !== g || work.iters < sch.iters)
      throw new RangeError(
        `hqqQuantizeRegion: work regions for ${work.numel} values in groups of ${work.groupSize} ` +
          `and ${work.iters} steps, not ${n} in groups of ${g} and ${sch.iters} steps`,
      );
    const iters = sch.iters,
      stride = iters + 1,
      chunks = errChunks(groups),
      chunkValues = ERR_CHUNK * g;
    work.errs.view().fill(0, 0, chunks * iters);
    work.invBetas.view().set(sch.invBetas);
    work.floors.view().set(sch.floors);
    yield {
      total: n,
      align: chunkValues,
      name: 'hqqProximalSolve',
      args: (a, b, part) => [
        x.ptr + 4 * a,
        b - a,
        g,
        maxV,
        sInv + (4 * a) / g,
        zero + (4 * a) / g,
        iters,
        work.invBetas.ptr,
        work.floors.ptr,
        sch.exponent,
        sch.minFloor,
        work.traj.ptr + (4 * a * stride) / g,
        work.errs.ptr + (8 * a * iters) / chunkValues,
        ERR_CHUNK,
        work.scratch.ptr + 4 * part * (g + 128),
      ],
    };
    lastTrace = earlyStop(stepErrors(work.errs.view(), chunks, iters), n);
    const z = out.zero.view(),
      t = work.traj.view();
    for (let b = 0; b < groups; b++) z[b] = t[b * stride + lastTrace.steps];
  }
  yield {
    total: n,
    align: g,
    name: 'hqqCodes',
    args: (a, b) => [x.ptr + 4 * a, b - a, g, maxV, sInv + (4 * a) / g, zero + (4 * a) / g, out.codes.ptr + a],
  };
  const s = out.scale.view();
  for (let b = 0; b < groups; b++) s[b] = fr(1 / s[b]);
}

function runCalls(ws: Workspace, calls: Generator<KernelCall, void, number>): void {
  const k = ws.k as unknown as Record<string, (...args: number[]) => number | void>;
  for (let c = calls.next(0); !c.done;) {
    const { total, name, args } = c.value;
    c = calls.next(k[name](...args(0, total, 0)) ?? 0);
  }
}

async function runCallsInParts(
  ws: Workspace,
  pool: KernelPool | undefined,
  parts: number,
  calls: Generator<KernelCall, void, number>,
): Promise<void> {
  const p = pool && pool.helpers >= parts ? { helpers: parts - 1, call: pool.call.bind(pool) } : pool;
  for (let c = calls.next(0); !c.done;) {
    const { total, align, name, args } = c.value;
    c = calls.next(await inParts(ws, p, total, align, name as KernelName, args));
  }
}

/** hqqQuantize on kernel memory: x (numel values, a multiple of groupSize, itself a multiple
 *  of 8) → out's codes, scale (the stored multiplier) and zero, all in the workspace `ws`.
 *  The same results as hqqQuantize and hqqQuantizeReference. */
export function hqqQuantizeRegion(
  ws: Workspace,
  x: F32Region,
  p: HqqParams,
  out: HqqRegions,
  work: HqqWork,
  optimizer?: HqqOptimizerOptions,
): void {
  runCalls(ws, quantizeCalls(x, p, out, work, optimizer));
}

/** LoftQ's pass on HQQ's grid, in kernel memory: hqqQuantizeRegion(x) into `out`, `values` =
 *  its dequantization in `dtype`, `residual` = w − values; returns Σ residual². With a kernel
 *  pool every pass is split over this thread and the helpers (by whole groups; the solver's
 *  early stop sums its error by fixed chunks, so the results never depend on the split). */
export async function hqqQuantizeResidual(
  ws: Workspace,
  x: F32Region,
  p: HqqParams,
  out: HqqRegions,
  work: HqqWork,
  dtype: HqqComputeDtype,
  values: F32Region,
  w: F32Region,
  residual: F32Region,
  pool?: KernelPool,
  optimizer?: HqqOptimizerOptions,
): Promise<number> {
  const n = x.length,
    g = p.groupSize;
  if (values.length !== n || w.length !== n || residual.length !== n)
    throw new RangeError(`hqqQuantizeResidual: regions of ${values.length}, ${w.length}, ${residual.length} for ${n}`);
  await runCallsInParts(ws, pool, work.parts, quantizeCalls(x, p, out, work, optimizer));
  if (dtype === 'float16') hqqDequantizeRegion(ws, out, g, dtype, values);
  else {
    const bf16 = dtype === 'bfloat16' ? 1 : 0;
    await inParts(ws, pool, n, g, 'hqqDequantize' as KernelName, (a, b) => [
      out.codes.ptr + a,
      b - a,
      g,
      out.scale.ptr + (4 * a) / g,
      out.zero.ptr + (4 * a) / g,
      bf16,
      values.ptr + 4 * a,
    ]);
  }
  return inParts(ws, pool, n, 4, 'difference', (a, b) => [
    w.ptr + 4 * a,
    values.ptr + 4 * a,
    residual.ptr + 4 * a,
    b - a,
  ]);
}

/** groups = consecutive runs of groupSize values of the row-major flattened matrix (axis 1).
 *  x.length must be a multiple of groupSize. Writes into `out`'s arrays when given (reused
 *  buffers of sizes numel, groups, groups). `optimizer` changes the solver's settings (tests
 *  and hqq master's variant); the default is hqq 0.2.8.post1's. The WebAssembly kernels do
 *  the passes (group sizes that are multiples of 8), with hqqQuantizeReference's results. */
export function hqqQuantize(
  x: Float32Array,
  p: HqqParams,
  out?: HqqQuantized,
  optimizer?: HqqOptimizerOptions,
): HqqQuantized {
  const n = x.length;
  checkParams(n, p);
  const g = p.groupSize;
  if (g % 8 !== 0) return hqqQuantizeReference(x, p, out, optimizer);
  const groups = n / g;
  const r = outputs(n, groups, out);
  withWorkspace((ws) => {
    const xr = ws.f32(n, x);
    const regions = { codes: ws.u8(n), scale: ws.f32(groups), zero: ws.f32(groups) };
    const iters = p.optimize ? proximalSchedule({ ...RELEASE_OPTIMIZER, ...optimizer }).iters : 0;
    const work = hqqWorkRegions(ws, n, g, iters);
    hqqQuantizeRegion(ws, xr, p, regions, work, optimizer);
    r.codes.set(regions.codes.view());
    r.scale.set(regions.scale.view());
    r.zero.set(regions.zero.view());
  });
  return r;
}

// ---- rounding to bfloat16 / float16 -------------------------------------------------------

const one32 = new Float32Array(1);
const one32Bits = new Uint32Array(one32.buffer);

/** float32 value → nearest bfloat16 (ties to even) as a float32 value; NaN stays NaN. */
export function roundBf16(x: number): number {
  one32[0] = x;
  const b = one32Bits[0];
  if ((b & 0x7fffffff) > 0x7f800000) return NaN;
  one32Bits[0] = (b + 0x7fff + ((b >>> 16) & 1)) & 0xffff0000;
  return one32[0];
}

/** float32 value → nearest IEEE half (ties to even, subnormals, ±Inf past 65504) as a float32 value. */
export function roundF16(x: number): number {
  const a = Math.abs(x);
  if (!(a < 65520)) return a === a ? (x < 0 ? -Infinity : Infinity) : NaN;
  if (a < 6.103515625e-5) {
    // f16 subnormals: multiples of 2^-24 (x·2^24 is exact in a double).
    const m = x * 16777216 + RNE_MAGIC - RNE_MAGIC;
    return m / 16777216;
  }
  one32[0] = x;
  const b = one32Bits[0];
  one32Bits[0] = (b + 0xfff + ((b >>> 13) & 1)) & 0xffffe000;
  return one32[0];
}

function rounder(dtype: HqqComputeDtype): (x: number) => number {
  switch (dtype) {
    case 'float32':
      return fr;
    case 'bfloat16':
      return roundBf16;
    case 'float16':
      return roundF16;
    default:
      throw new RangeError(`unknown HQQ compute dtype ${String(dtype)}`);
  }
}

/** Rounds float32 values to dtype (RNE), as float32 numbers (for scale/zero as stored in that dtype). */
export function roundToDtype(x: Float32Array, dtype: HqqComputeDtype): Float32Array {
  const r = rounder(dtype);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = r(x[i]);
  return out;
}

/** HQQLinear.dequantize in `dtype`: scale and zero cast to dtype, ((codes − zero)·scale) with
 *  every operation rounded to dtype (round-to-nearest-even), values returned as float32
 *  numbers (exact: bf16/f16 values are float32 values). Into `out` when given. */
export function hqqDequantize(
  codes: Uint8Array,
  scale: Float32Array,
  zero: Float32Array,
  groupSize: number,
  dtype: HqqComputeDtype,
  out?: Float32Array,
): Float32Array {
  const n = codes.length,
    groups = scale.length;
  const r = out ?? new Float32Array(n);
  checkDequantize(n, groups, zero.length, groupSize, dtype, r.length);
  if (dequantizesOnKernel(dtype, groupSize)) {
    withWorkspace((ws) => {
      const c = ws.u8(n),
        regions = { codes: c, scale: ws.f32(groups, scale), zero: ws.f32(groups, zero) },
        values = ws.f32(n);
      c.view().set(codes);
      hqqDequantizeRegion(ws, regions, groupSize, dtype, values);
      r.set(values.view());
    });
    return r;
  }
  return hqqDequantizeReference(codes, scale, zero, groupSize, dtype, r);
}

function checkDequantize(
  n: number,
  groups: number,
  zeros: number,
  groupSize: number,
  dtype: HqqComputeDtype,
  outLength: number,
): void {
  if (zeros !== groups || groups * groupSize !== n)
    throw new RangeError(`hqqDequantize: ${n} codes, ${groups} scales, ${zeros} zeros, group size ${groupSize}`);
  if (outLength !== n) throw new RangeError(`hqqDequantize: output of ${outLength} values for ${n} codes`);
  rounder(dtype);
}

/** The dequantize kernel does float32 and bfloat16 over groups of whole SIMD lanes; float16 and
 *  odd group sizes take the TypeScript reference. */
function dequantizesOnKernel(dtype: HqqComputeDtype, groupSize: number): boolean {
  return dtype !== 'float16' && groupSize % 4 === 0;
}

/** hqqDequantize on kernel memory (float32 and bfloat16 in WebAssembly when groupSize is a
 *  multiple of 4; float16 in TypeScript on the regions' views). */
export function hqqDequantizeRegion(
  ws: Workspace,
  q: HqqRegions,
  groupSize: number,
  dtype: HqqComputeDtype,
  out: F32Region,
): void {
  const n = q.codes.length,
    groups = q.scale.length;
  checkDequantize(n, groups, q.zero.length, groupSize, dtype, out.length);
  if (dequantizesOnKernel(dtype, groupSize))
    hqqKernels(ws).hqqDequantize(
      q.codes.ptr,
      n,
      groupSize,
      q.scale.ptr,
      q.zero.ptr,
      dtype === 'bfloat16' ? 1 : 0,
      out.ptr,
    );
  else hqqDequantizeReference(q.codes.view(), q.scale.view(), q.zero.view(), groupSize, dtype, out.view());
}

/** hqqDequantize in plain TypeScript (the reference of the kernel). */
export function hqqDequantizeReference(
  codes: Uint8Array,
  scale: Float32Array,
  zero: Float32Array,
  groupSize: number,
  dtype: HqqComputeDtype,
  out?: Float32Array,
): Float32Array {
  const n = codes.length,
    groups = scale.length;
  const r = out ?? new Float32Array(n);
  checkDequantize(n, groups, zero.length, groupSize, dtype, r.length);
  if (dtype === 'float32') {
    for (let b = 0, start = 0; b < groups; b++, start += groupSize) {
      const s = scale[b],
        z = zero[b];
      for (let i = start, end = start + groupSize; i < end; i++) r[i] = fr(codes[i] - z) * s;
    }
  } else if (dtype === 'bfloat16') {
    // Rounded in place on the output's bits: (b + 0x7fff + odd) & 0xffff0000 is round to
    // nearest even (every value here is finite or ±∞; a NaN stays a NaN).
    const bits = new Uint32Array(r.buffer, r.byteOffset, n);
    for (let b = 0, start = 0; b < groups; b++, start += groupSize) {
      const s = roundBf16(scale[b]),
        z = roundBf16(zero[b]);
      for (let i = start, end = start + groupSize; i < end; i++) {
        r[i] = codes[i] - z;
        let u = bits[i];
        bits[i] = (u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000;
        r[i] *= s;
        u = bits[i];
        bits[i] = (u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000;
      }
    }
  } else {
    const round = rounder(dtype);
    for (let b = 0, start = 0; b < groups; b++, start += groupSize) {
      const s = round(scale[b]),
        z = round(zero[b]);
      for (let i = start, end = start + groupSize; i < end; i++) r[i] = round(round(codes[i] - z) * s);
    }
  }
  return r;
}

// ---- which shapes HQQ can hold ------------------------------------------------------------

/** Groups per packed row: hqq's packers split the [groups, groupSize] codes into this many
 *  row blocks and drop the remainder rows silently (3-bit pads to a multiple of 10 instead). */
function groupMultiple(bits: number): number {
  return bits === 1 ? 8 : bits === 2 ? 4 : bits === 4 ? 2 : 1;
}

function fits(numel: number, bits: number, g: number): boolean {
  return g > 0 && g % 8 === 0 && numel % g === 0 && (numel / g) % groupMultiple(bits) === 0;
}

/** Group sizes (multiples of 8, ≤ 1024) that hold numel values at `bits`: the six nearest to
 *  `near` (by ratio), largest first. */
export function hqqFittingGroupSizes(numel: number, bits: number, near = 64): number[] {
  const all: number[] = [];
  for (let g = 8; g <= 1024; g += 8) if (fits(numel, bits, g)) all.push(g);
  const dist = (g: number) => Math.abs(Math.log(g / near));
  return all
    .sort((a, b) => dist(a) - dist(b) || b - a)
    .slice(0, 6)
    .sort((a, b) => b - a);
}

/** Why HQQ cannot hold a rows×cols matrix at these bits/group size, or undefined: groupSize
 *  must be a positive multiple of 8; rows·cols a multiple of groupSize; groups
 *  (= rows·cols/groupSize) divisible by 8 / 4 / 2 for 1 / 2 / 4 bits (hqq silently drops rows
 *  otherwise). The message names the problem and what fits. */
export function hqqShapeProblem(rows: number, cols: number, bits: number, groupSize: number): string | undefined {
  const shape = `${rows}×${cols}`;
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows <= 0 || cols <= 0)
    return `HQQ needs a matrix with a positive whole number of rows and columns, not ${shape}`;
  if (!HQQ_BITS.includes(bits))
    return `HQQ quantizes to ${HQQ_BITS.slice(0, -1).join(', ')} or ${HQQ_BITS.at(-1)} bits, not ${bits}`;
  const numel = rows * cols;
  const sizes = (b: number) => {
    const s = hqqFittingGroupSizes(numel, b, groupSize > 0 ? groupSize : 64);
    return s.length ? `group sizes that fit: ${s.join(', ')}` : `no group size up to 1024 fits at ${b} bits`;
  };
  if (!Number.isInteger(groupSize) || groupSize <= 0 || groupSize % 8 !== 0)
    return (
      `HQQ group sizes are positive multiples of 8, not ${groupSize}; ` + `for ${shape} at ${bits} bits, ${sizes(bits)}`
    );
  if (numel % groupSize !== 0)
    return (
      `HQQ groups run over the row-major matrix: ${shape} has ${numel} values, not a multiple of ` +
      `the group size ${groupSize}; ${sizes(bits)}`
    );
  const groups = numel / groupSize,
    m = groupMultiple(bits);
  if (groups % m !== 0) {
    const widths = HQQ_BITS.filter((b) => fits(numel, b, groupSize));
    return (
      `${bits}-bit HQQ packs ${m} groups per byte row: ${shape} has ${groups} groups of ${groupSize} ` +
      `(not a multiple of ${m}); ${sizes(bits)}; bit widths that fit at group size ${groupSize}: ${widths.join(', ')}`
    );
  }
  return undefined;
}
