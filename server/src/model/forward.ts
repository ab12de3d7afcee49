// The layer-streaming forward pass of a decoder (the families of arch/: Llama, Mistral, Qwen2,
// Gemma, Gemma 2, Phi-2, Phi-3). Only one linear group's weights are in memory at a time (q|k|v,
// o, gate|up, down: each read with positioned reads just before its product, into buffers the
// next group reuses); the hidden states of the whole batch of
// sequences are carried from layer to layer. The family's layout is interpreted with one branch
// per layer (which norm, how attention and MLP meet the residual stream, which activation).
// Hooks let a caller see each linear layer's input (calibration statistics) and substitute a
// layer's weight (evaluating Q + (α/r)·B·A, or quantize(W)).

import { NativeBackend } from '../linalg/nativeBackend';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { CheckpointError } from '../checkpoint/errors';
import { yieldAndCheck } from '../base/errors';
import { ScratchBuffers } from '../base/scratchBuffers';
import { discardPages, trimNativeCache } from '../kernels/native';
import type { MatmulBackend } from '../linalg/backend';
import type { ModelConfig } from './config';
import { linearGroup } from './linear';
import {
  applyRope,
  attention,
  type AttentionShape,
  geluGate,
  geluInto,
  geluTanhGate,
  geluTanhInto,
  layerNorm,
  rmsNorm,
  siluGate,
  siluInto,
  softcapInPlace,
} from './ops';
import { ropeForSequences } from './rope';
import type { LinearSpec } from './arch/types';
import {
  layerNames,
  readChecked,
  readCheckedRows,
  readGroup,
  readGroupBf16,
  readLayerNorms,
  readNorm,
  reserveGroupBuffers,
  type GroupWeights,
  type WeightHook,
} from './weights';

export interface ForwardHooks {
  /** Sees the input X (tokens × width, row-major) shared by the linear layers `names`
   *  (weight tensor names: q/k/v together — or Phi-3's one qkv_proj —, gate/up together — or
   *  one gate_up_proj —, o and down alone; Phi-2's q/k/v and fc1 read one input). X is only
   *  valid during the call. */
  onInput?(names: readonly string[], x: Float32Array, tokens: number, width: number): void | Promise<void>;
  /** Sees the linear layers `names`' outputs Y = X·Wᵀ side by side (tokens × Σ widths, each
   *  layer's `widths[k]` columns in turn), before any rotary embedding or norm; groups with a
   *  bias are not shown. Y is only valid during the call. */
  onOutput?(names: readonly string[], y: Float32Array, tokens: number, widths: readonly number[]): void;
  /** Returns a replacement for a linear weight ([out, in] row-major), or undefined to keep it. */
  weight?: WeightHook;
}

export interface ForwardOptions {
  backend: MatmulBackend;
  hooks?: ForwardHooks;
  signal?: AbortSignal;
  /** Receives each sequence's logits (len × vocab, row-major). Without it the pass stops
   *  after the last decoder layer (enough for statistics) and reads no head. */
  onLogits?(seq: number, logits: Float32Array, len: number, vocab: number): void | Promise<void>;
  /** Called after each decoder layer (progress; the calibration pass hands the layer's
   *  statistics on here and the pass waits for the promise before the next layer). */
  onLayer?(layer: number, layers: number): void | Promise<void>;
  /** The linear layers in bf16 products where the backend has them (native, AVX512-BF16):
   *  X and W rounded to bf16, float32 sums — a bf16 model as a GPU runs it, at twice the
   *  float32 rate. For the calibration pass only: logits (eval, generation) stay float32. */
  bf16Linear?: boolean;
  /** Just before each onLayer, the pages of the pass's transient buffers (weights, normed
   *  states, the groups' outputs, attention, activation: all but the hidden state carried to
   *  the next layer) and the native module's cache go back to the system (collector.ts's
   *  StreamOptions says when the engine asks for it). Each of those buffers is written whole
   *  before it is read, so the results are the same; the next layer faults the pages in again. */
  discardBetweenLayers?: boolean;
}

export interface ForwardResult {
  sequences: number;
  tokens: number;
  /** Largest (one linear group's weights + the batch's activations) held at once, in bytes. */
  peakBytes: number;
  /** Largest resident set size seen between layers (the whole process). */
  peakRssBytes: number;
  /** Bytes whose pages were given back at the hand-offs (discardBetweenLayers), all layers
   *  together: 0 without it or without the native module. */
  discardedBytes: number;
  seconds: number;
}

/** Multiply-adds of the JavaScript attention between two turns of the event loop (≈ 0.1 s). */
const ATTENTION_YIELD_WORK = 2 ** 27;

/** Tracks the bytes the pass holds, to report its peak honestly. */
class MemoryMeter {
  now = 0;
  peak = 0;
  rss = 0;
  hold(bytes: number): void {
    this.now += bytes;
    if (this.now > this.peak) this.peak = this.now;
  }
  free(bytes: number): void {
    this.now -= bytes;
  }
  sampleRss(): void {
    this.rss = Math.max(this.rss, process.memoryUsage().rss);
  }
}

/** Where each sequence starts among the batch's tokens, and the RoPE table row of each token
 *  (its position, offset by its sequence's block of rows: rope.ts ropeForSequences). */
function positionsOf(
  sequences: readonly (readonly number[])[],
  rowStart: readonly number[],
): {
  starts: number[];
  positions: Int32Array;
  tokens: number;
  maxLen: number;
} {
  const starts: number[] = [];
  let tokens = 0,
    maxLen = 0;
  for (const s of sequences) {
    starts.push(tokens);
    tokens += s.length;
    maxLen = Math.max(maxLen, s.length);
  }
  const positions = new Int32Array(tokens);
  sequences.forEach((s, k) => {
    for (let i = 0; i < s.length; i++) positions[starts[k] + i] = rowStart[k] + i;
  });
  return { starts, positions, tokens, maxLen };
}

async function embed(
  ck: Checkpoint,
  c: ModelConfig,
  sequences: readonly (readonly number[])[],
  tokens: number,
): Promise<Float32Array> {
  for (const s of sequences)
    for (const id of s)
      if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize)
        throw new RangeError(`token id ${id} is outside the vocabulary (0..${c.vocabSize - 1})`);
  // Only the rows the tokens use are read.
  const shape: [number, number] = [c.vocabSize, c.hiddenSize];
  const rows = await readCheckedRows(ck, c, `${c.tensors.embed}.weight`, shape, sequences.flat());
  const h = new Float32Array(tokens * c.hiddenSize);
  let t = 0;
  for (const s of sequences) for (const id of s) h.set(rows.get(id)!, t++ * c.hiddenSize);
  if (c.embedScale !== undefined) scaleInPlace(h, c.embedScale);
  return h;
}

/** x ← x·s in float32 (Gemma's embedding normalizer, a float32 tensor in transformers). */
export function scaleInPlace(x: Float32Array, s: number): void {
  for (let i = 0; i < x.length; i++) x[i] *= s;
}

/** Which tensor is the output head: lm_head.weight, or the embedding when tied. */
export function headTensorName(ck: Checkpoint, c: ModelConfig): string {
  const head = `${c.tensors.head}.weight`,
    embed = `${c.tensors.embed}.weight`;
  if (c.tieWordEmbeddings === true) return embed;
  if (ck.byName.has(head)) return head;
  if (c.tieWordEmbeddings === false) {
    throw new CheckpointError(
      'tensor-entry',
      ck.path,
      `has no tensor '${head}' and config.json ${c.file} says tie_word_embeddings is false`,
    );
  }
  return embed;
}

/** The head's bias where the family has one (Phi-2's lm_head), else undefined. */
export async function readHeadBias(ck: Checkpoint, c: ModelConfig): Promise<Float32Array | undefined> {
  return c.tensors.headBias ? readChecked(ck, c, `${c.tensors.head}.bias`, [c.vocabSize]) : undefined;
}

/** Logits rows (rows × vocab) + the head's bias, soft-capped where the family caps them. */
export function finishLogits(c: ModelConfig, logits: Float32Array, rows: number, bias?: Float32Array): void {
  const V = c.vocabSize;
  if (bias) for (let i = 0; i < rows; i++) for (let v = 0; v < V; v++) logits[i * V + v] += bias[v];
  if (c.finalSoftcap !== undefined) softcapInPlace(logits, c.finalSoftcap);
}

/** out ← the layer's norm of x (tokens × hidden rows); out may be x. */
export function normInto(
  c: ModelConfig,
  x: Float32Array,
  tokens: number,
  w: Float32Array,
  b: Float32Array | undefined,
  out: Float32Array,
): void {
  if (c.layout.norm === 'layer') layerNorm(x, tokens, c.hiddenSize, w, b!, c.rmsNormEps, out);
  else rmsNorm(x, tokens, c.hiddenSize, w, c.rmsNormEps, out);
}

/** act ← the MLP's activation of the up-projection's output gu (tokens × (2·I gated, I plain)). */
export function activate(c: ModelConfig, gu: Float32Array, tokens: number, act: Float32Array): void {
  const I = c.intermediateSize,
    kind = c.layout.activation;
  if (c.layout.gated) {
    if (kind === 'silu') siluGate(gu, tokens, I, act);
    else if (kind === 'gelu_tanh') geluTanhGate(gu, tokens, I, act);
    else geluGate(gu, tokens, I, act);
  } else if (kind === 'silu') siluInto(gu, tokens * I, act);
  else if (kind === 'gelu_tanh') geluTanhInto(gu, tokens * I, act);
  else geluInto(gu, tokens * I, act);
}

/** Each layer's attention: its window, the family's scale and soft-cap. */
export function attentionShapes(c: ModelConfig): AttentionShape[] {
  const qDim = c.numHeads * c.headDim,
    kvDim = c.numKvHeads * c.headDim;
  return c.windows.map((slidingWindow) => ({
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    stride: qDim + 2 * kvDim,
    qOff: 0,
    kOff: qDim,
    vOff: qDim + kvDim,
    slidingWindow,
    scale: c.attnScale,
    softcap: c.attnSoftcap,
  }));
}

/** The native module's attention is the plain scaled one (1/√d, no soft-cap). */
const nativeAttends = (s: AttentionShape) => s.softcap === undefined && s.scale === 1 / Math.sqrt(s.headDim);

function addInto(h: Float32Array, y: Float32Array): void {
  for (let i = 0; i < h.length; i++) h[i] += y[i];
}

/** h ← h + (a + b): Phi-2's attention and MLP outputs summed, then added to the residual. */
function addBothInto(h: Float32Array, a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < h.length; i++) h[i] += Math.fround(a[i] + b[i]);
}

/** Every sequence's attention into `att`. It is quadratic in a sequence's length and
 *  synchronous, so the event loop (signals, cancels) gets a turn after about
 *  ATTENTION_YIELD_WORK multiply-adds: between runs of short sequences (natively: one call per
 *  run), between heads of a long one. */
async function attendAll(
  c: ModelConfig,
  shape: AttentionShape,
  sequences: readonly (readonly number[])[],
  starts: readonly number[],
  qkv: Float32Array,
  att: Float32Array,
  native: NativeBackend | undefined,
  signal: AbortSignal | undefined,
): Promise<void> {
  const perHead = (len: number) => len * len * c.headDim;
  if (native && nativeAttends(shape)) {
    // Natively threads share the work: a run of sequences per call, sized from the last call's
    // rate to take about as long as the JavaScript's unit (≈ 0.1 s) — a fixed 16× it took seconds
    // a call at head size 8 on a busy machine, and a signal waited that long.
    let run: { start: number; len: number; outRow: number }[] = [],
      work = 0,
      unit = ATTENTION_YIELD_WORK;
    for (let k = 0; k <= sequences.length; k++) {
      if (k === sequences.length || (run.length && work >= unit)) {
        if (run.length) {
          const t0 = performance.now();
          native.attention(qkv, run, shape, att);
          const ms = Math.max(performance.now() - t0, 1);
          unit = Math.min(16 * ATTENTION_YIELD_WORK, (work * 100) / ms);
        }
        run = [];
        work = 0;
        if (k === sequences.length) break;
        await yieldAndCheck(signal);
      }
      run.push({ start: starts[k], len: sequences[k].length, outRow: starts[k] });
      work += perHead(sequences[k].length) * c.numHeads;
    }
    return;
  }
  let work = 0;
  for (let k = 0; k < sequences.length; k++) {
    const len = sequences[k].length;
    const headsPerCall = Math.max(1, Math.floor(ATTENTION_YIELD_WORK / perHead(len)));
    for (let h = 0; h < c.numHeads; h += headsPerCall) {
      const h1 = Math.min(c.numHeads, h + headsPerCall);
      attention(qkv, starts[k], len, shape, att, starts[k], h, h1);
      work += perHead(len) * (h1 - h);
      if (work >= ATTENTION_YIELD_WORK) {
        work = 0;
        await yieldAndCheck(signal);
      }
    }
  }
}

/** The pages of every buffer in `scratch` and of the native module's cache back to the system
 *  (their contents dead: they read as zeros); the bytes handed back. */
function giveBackPages(scratch: ScratchBuffers): number {
  const bytes = scratch.discardAll(discardPages);
  trimNativeCache();
  return bytes;
}

/** Runs the decoder over `sequences` (token ids, each at least one token). */
export async function runForward(
  ck: Checkpoint,
  c: ModelConfig,
  sequences: readonly (readonly number[])[],
  opts: ForwardOptions,
): Promise<ForwardResult> {
  const t0 = performance.now();
  const { backend, hooks, signal } = opts;
  // The native backend also runs the attention and the SiLU gate (threads, no JS loops).
  const native = backend instanceof NativeBackend ? backend : undefined;
  const bf16 = opts.bf16Linear === true;
  // In bf16 products a BF16 checkpoint's weights go in as stored (weights.ts readGroupBf16):
  // the same products, half the bytes held. A weight hook sees float32.
  const bf16Bits = bf16 && native?.bf16 === true && hooks?.weight === undefined;
  const mem = new MemoryMeter();
  const rope = ropeForSequences(
    c.rope,
    sequences.map((q) => q.length),
  );
  const { starts, positions, tokens } = positionsOf(sequences, rope.rowStart);
  const H = c.hiddenSize,
    qDim = c.numHeads * c.headDim,
    I = c.intermediateSize,
    L = c.layout;
  const upWidth = L.gated ? 2 * I : I;
  const h = await embed(ck, c, sequences, tokens);
  // Buffers reused from layer to layer: each group's weights (weights.ts readGroup), the normed
  // states and the linear groups' outputs. Everything the pass holds between layers but h.
  const scratch = new ScratchBuffers();
  // One linear group's output is alive at a time (each is spent before the next group runs):
  // one buffer serves them all, instead of fresh pages — ~0.4 s of faults for the 184 MB of
  // gate|up at 4096 tokens of a 1.1B model, where its product takes ~0.7 s.
  const linearOut = (width: number) => scratch.f32('linearOut', tokens * width);
  mem.hold(h.byteLength);
  const normed = scratch.f32('normed', tokens * H);
  mem.hold(normed.byteLength);
  const shapes = attentionShapes(c);
  // The growing buffers sized at their largest use first: grown at the layer's later groups,
  // q|k|v's weights and output were garbage beside gate|up's (0.4 GB at 7B) until collected.
  reserveGroupBuffers(ck, c, 0, scratch, bf16Bits);
  linearOut(Math.max(H, upWidth, ...shapes.map((s) => s.stride)));
  const qkvOuts = L.qkv.map((s) => s.rows),
    upOuts = L.up.map((s) => s.rows);
  // A group's outputs go to onOutput as X·Wᵀ: a group with a bias (Qwen2's q/k/v) has it
  // added already and is not shown.
  const observe = (groupNames: readonly string[], g: GroupWeights, y: Float32Array, widths: readonly number[]) => {
    if (hooks?.onOutput && !g.biases?.some((b) => b)) hooks.onOutput(groupNames, y, tokens, widths);
  };
  let discardedBytes = 0;
  for (let layer = 0; layer < c.numLayers; layer++) {
    await yieldAndCheck(signal);
    // A group's weights are read just before its product (the float32 held at once: the
    // largest group's, gate|up — 360 MB at 7B, where a whole layer's were 808 MB).
    const group = async (specs: readonly LinearSpec[]): Promise<GroupWeights> => {
      const g =
        (bf16Bits ? await readGroupBf16(ck, c, layer, specs, scratch) : undefined) ??
        (await readGroup(ck, c, layer, specs, hooks?.weight, scratch));
      mem.hold(g.bytes);
      return g;
    };
    const norms = await readLayerNorms(ck, c, layer);
    mem.hold(norms.bytes);
    const names = layerNames(c, layer);
    const attnShape = shapes[layer];

    normInto(c, h, tokens, norms.inputNorm, norms.inputNormBias, normed);
    // Phi-2's attention and MLP read the same normed states: one input for q/k/v and fc1.
    const attnInputs = L.block === 'parallel' ? [...names.qkv, ...names.up] : names.qkv;
    await hooks?.onInput?.(attnInputs, normed, tokens, H);
    const wQkv = await group(L.qkv);
    const qkvOut = linearOut(attnShape.stride);
    const qkv = await linearGroup(backend, normed, tokens, H, wQkv.ws, qkvOuts, wQkv.biases, qkvOut, bf16);
    observe(names.qkv, wQkv, qkv, qkvOuts);
    mem.hold(qkv.byteLength);
    mem.free(wQkv.bytes);
    applyRope(qkv, attnShape.stride, 0, c.numHeads, c.headDim, positions, rope.tables);
    applyRope(qkv, attnShape.stride, qDim, c.numKvHeads, c.headDim, positions, rope.tables);
    // Reused like linearOut: fresh, these two were 125 MB of page faults per layer at 4096
    // tokens of a 1.1B model. Both are written whole before they are read.
    const att = scratch.f32('attention', tokens * qDim);
    mem.hold(att.byteLength);
    await attendAll(c, attnShape, sequences, starts, qkv, att, native, signal);
    mem.free(qkv.byteLength);
    await yieldAndCheck(signal);
    await hooks?.onInput?.(names.o, att, tokens, qDim);
    // Phi-2 keeps the attention's output while its MLP runs: a buffer of its own.
    const oOut = L.block === 'parallel' ? scratch.f32('parallelAttention', tokens * H) : linearOut(H);
    const wO = await group([L.o]);
    const o = await linearGroup(backend, att, tokens, qDim, wO.ws, [H], wO.biases, oOut, bf16);
    observe(names.o, wO, o, [H]);
    mem.hold(o.byteLength);
    mem.free(att.byteLength + wO.bytes);
    if (L.block !== 'parallel') {
      if (L.block === 'sandwich') normInto(c, o, tokens, norms.postAttentionNorm!, undefined, o);
      addInto(h, o);
      mem.free(o.byteLength);
      const mlpNorm = L.block === 'sandwich' ? norms.preFeedforwardNorm! : norms.postAttentionNorm!;
      normInto(c, h, tokens, mlpNorm, undefined, normed);
      await hooks?.onInput?.(names.up, normed, tokens, H);
    }
    const wUp = await group(L.up);
    const gu = await linearGroup(backend, normed, tokens, H, wUp.ws, upOuts, wUp.biases, linearOut(upWidth), bf16);
    observe(names.up, wUp, gu, upOuts);
    mem.hold(gu.byteLength);
    mem.free(wUp.bytes);
    const act = scratch.f32('activation', tokens * I);
    mem.hold(act.byteLength);
    if (native && L.gated && L.activation === 'silu') native.siluGate(gu, tokens, I, act);
    else activate(c, gu, tokens, act);
    mem.free(gu.byteLength);
    await yieldAndCheck(signal);
    await hooks?.onInput?.(names.down, act, tokens, I);
    const wDown = await group([L.down]);
    const down = await linearGroup(backend, act, tokens, I, wDown.ws, [H], wDown.biases, linearOut(H), bf16);
    observe(names.down, wDown, down, [H]);
    mem.hold(down.byteLength);
    mem.free(wDown.bytes);
    if (L.block === 'sandwich') normInto(c, down, tokens, norms.postFeedforwardNorm!, undefined, down);
    if (L.block === 'parallel') {
      addBothInto(h, o, down);
      mem.free(o.byteLength);
    } else addInto(h, down);
    mem.free(down.byteLength + act.byteLength + norms.bytes);
    mem.sampleRss();
    // h alone is carried over: every buffer of `scratch` is written whole before it is read.
    if (opts.discardBetweenLayers) discardedBytes += giveBackPages(scratch);
    await opts.onLayer?.(layer + 1, c.numLayers);
  }
  if (opts.onLogits) {
    await yieldAndCheck(signal);
    const final = await readNorm(ck, c, c.tensors.finalNorm);
    normInto(c, h, tokens, final.w, final.b, normed);
    const head = await readChecked(ck, c, headTensorName(ck, c), [c.vocabSize, H]);
    const headBias = await readHeadBias(ck, c);
    mem.hold(head.byteLength);
    // The head is held on the device once; each sequence's normed states are multiplied by it.
    const held = await backend.hold(head, c.vocabSize, H);
    try {
      for (let k = 0; k < sequences.length; k++) {
        await yieldAndCheck(signal);
        const len = sequences[k].length;
        const xt = new Float32Array(H * len);
        for (let i = 0; i < len; i++) for (let e = 0; e < H; e++) xt[e * len + i] = normed[(starts[k] + i) * H + e];
        const vt = await held.times(xt, len); // vocab × len
        const logits = new Float32Array(len * c.vocabSize);
        mem.hold(logits.byteLength + vt.byteLength);
        for (let v = 0; v < c.vocabSize; v++)
          for (let i = 0; i < len; i++) logits[i * c.vocabSize + v] = vt[v * len + i];
        finishLogits(c, logits, len, headBias);
        await opts.onLogits(k, logits, len, c.vocabSize);
        mem.free(logits.byteLength + vt.byteLength);
      }
    } finally {
      held.dispose();
    }
  }
  mem.sampleRss();
  return {
    sequences: sequences.length,
    tokens,
    peakBytes: mem.peak,
    peakRssBytes: mem.rss,
    discardedBytes,
    seconds: (performance.now() - t0) / 1000,
  };
}
