// The layer-streaming forward pass of a Llama-family decoder. Only one decoder layer's
// weights are in memory at a time (read with positioned reads, dropped after the layer);
// the hidden states of the whole batch of sequences are carried from layer to layer.
// Hooks let a caller see each linear layer's input (calibration statistics) and substitute
// a layer's weight (evaluating Q + (α/r)·B·A, or quantize(W)).

import { NativeBackend } from '../linalg/nativeBackend';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { CheckpointError } from '../checkpoint/errors';
import { throwIfAborted } from '../base/errors';
import { ScratchBuffers } from '../base/scratchBuffers';
import type { MatmulBackend } from '../linalg/backend';
import type { ModelConfig } from './config';
import { linearGroup } from './linear';
import { applyRope, attention, rmsNorm, ropeTables, siluGate } from './ops';
import { linearTensorName, readChecked, readCheckedRows, readLayer, WeightHook } from './weights';

export interface ForwardHooks {
  /** Sees the input X (tokens × width, row-major) shared by the linear layers `names`
   *  (weight tensor names: q/k/v together, gate/up together, o and down alone). X is only
   *  valid during the call. */
  onInput?(names: readonly string[], x: Float32Array, tokens: number, width: number): void | Promise<void>;
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
}

export interface ForwardResult {
  sequences: number;
  tokens: number;
  /** Largest (one layer's weights + the batch's activations) held at once, in bytes. */
  peakBytes: number;
  /** Largest resident set size seen between layers (the whole process). */
  peakRssBytes: number;
  seconds: number;
}

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

function positionsOf(sequences: readonly (readonly number[])[]): {
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
    for (let i = 0; i < s.length; i++) positions[starts[k] + i] = i;
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
  const rows = await readCheckedRows(ck, c, 'model.embed_tokens.weight', shape, sequences.flat());
  const h = new Float32Array(tokens * c.hiddenSize);
  let t = 0;
  for (const s of sequences) for (const id of s) h.set(rows.get(id)!, t++ * c.hiddenSize);
  return h;
}

/** Which tensor is the output head: lm_head.weight, or the embedding when tied. */
export function headTensorName(ck: Checkpoint, c: ModelConfig): string {
  if (c.tieWordEmbeddings === true) return 'model.embed_tokens.weight';
  if (ck.byName.has('lm_head.weight')) return 'lm_head.weight';
  if (c.tieWordEmbeddings === false) {
    throw new CheckpointError(
      'tensor-entry',
      ck.path,
      `has no tensor 'lm_head.weight' and config.json ${c.file} says tie_word_embeddings is false`,
    );
  }
  return 'model.embed_tokens.weight';
}

function addInto(h: Float32Array, y: Float32Array): void {
  for (let i = 0; i < h.length; i++) h[i] += y[i];
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
  const mem = new MemoryMeter();
  const { starts, positions, tokens, maxLen } = positionsOf(sequences);
  const H = c.hiddenSize,
    qDim = c.numHeads * c.headDim,
    kvDim = c.numKvHeads * c.headDim,
    I = c.intermediateSize;
  const h = await embed(ck, c, sequences, tokens);
  // Buffers reused from layer to layer: the weights (weights.ts) and the linear groups' outputs.
  const layerBuffers = new ScratchBuffers();
  // One linear group's output is alive at a time (each is spent before the next group runs):
  // one buffer serves them all, instead of fresh pages — ~0.4 s of faults for the 184 MB of
  // gate|up at 4096 tokens of a 1.1B model, where its product takes ~0.7 s.
  const linearOut = (width: number) => layerBuffers.f32('linearOut', tokens * width);
  mem.hold(h.byteLength);
  const rope = ropeTables(maxLen, c.headDim, c.ropeTheta);
  const normed = new Float32Array(tokens * H);
  mem.hold(normed.byteLength);
  const attnShape = {
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    stride: qDim + 2 * kvDim,
    qOff: 0,
    kOff: qDim,
    vOff: qDim + kvDim,
    slidingWindow: c.slidingWindow,
  };
  for (let layer = 0; layer < c.numLayers; layer++) {
    throwIfAborted(signal);
    const w = await readLayer(ck, c, layer, hooks?.weight, layerBuffers);
    mem.hold(w.bytes);
    const name = (lin: Parameters<typeof linearTensorName>[1]) => linearTensorName(layer, lin);

    rmsNorm(h, tokens, H, w.inputNorm, c.rmsNormEps, normed);
    await hooks?.onInput?.([name('q_proj'), name('k_proj'), name('v_proj')], normed, tokens, H);
    const qkv = await linearGroup(
      backend,
      normed,
      tokens,
      H,
      [w.linear.q_proj, w.linear.k_proj, w.linear.v_proj],
      [qDim, kvDim, kvDim],
      [w.qBias, w.kBias, w.vBias],
      linearOut(attnShape.stride),
      bf16,
    );
    mem.hold(qkv.byteLength);
    applyRope(qkv, attnShape.stride, 0, c.numHeads, c.headDim, positions, rope);
    applyRope(qkv, attnShape.stride, qDim, c.numKvHeads, c.headDim, positions, rope);
    // Reused like linearOut: fresh, these two were 125 MB of page faults per layer at 4096
    // tokens of a 1.1B model. Both are written whole before they are read.
    const att = layerBuffers.f32('attention', tokens * qDim);
    mem.hold(att.byteLength);
    if (native)
      native.attention(
        qkv,
        sequences.map((s, k) => ({ start: starts[k], len: s.length, outRow: starts[k] })),
        attnShape,
        att,
      );
    else sequences.forEach((s, k) => attention(qkv, starts[k], s.length, attnShape, att, starts[k]));
    mem.free(qkv.byteLength);
    throwIfAborted(signal);
    await hooks?.onInput?.([name('o_proj')], att, tokens, qDim);
    const o = await linearGroup(backend, att, tokens, qDim, [w.linear.o_proj], [H], undefined, linearOut(H), bf16);
    mem.hold(o.byteLength);
    addInto(h, o);
    mem.free(o.byteLength + att.byteLength);

    rmsNorm(h, tokens, H, w.postNorm, c.rmsNormEps, normed);
    await hooks?.onInput?.([name('gate_proj'), name('up_proj')], normed, tokens, H);
    const gu = await linearGroup(
      backend,
      normed,
      tokens,
      H,
      [w.linear.gate_proj, w.linear.up_proj],
      [I, I],
      undefined,
      linearOut(2 * I),
      bf16,
    );
    mem.hold(gu.byteLength);
    const act = layerBuffers.f32('activation', tokens * I);
    mem.hold(act.byteLength);
    if (native) native.siluGate(gu, tokens, I, act);
    else siluGate(gu, tokens, I, act);
    mem.free(gu.byteLength);
    throwIfAborted(signal);
    await hooks?.onInput?.([name('down_proj')], act, tokens, I);
    const down = await linearGroup(backend, act, tokens, I, [w.linear.down_proj], [H], undefined, linearOut(H), bf16);
    mem.hold(down.byteLength);
    addInto(h, down);
    mem.free(down.byteLength + act.byteLength + w.bytes);
    mem.sampleRss();
    await opts.onLayer?.(layer + 1, c.numLayers);
  }
  if (opts.onLogits) {
    throwIfAborted(signal);
    const normW = await readChecked(ck, c, 'model.norm.weight', [H]);
    rmsNorm(h, tokens, H, normW, c.rmsNormEps, normed);
    const head = await readChecked(ck, c, headTensorName(ck, c), [c.vocabSize, H]);
    mem.hold(head.byteLength);
    // The head is held on the device once; each sequence's normed states are multiplied by it.
    const held = await backend.hold(head, c.vocabSize, H);
    try {
      for (let k = 0; k < sequences.length; k++) {
        throwIfAborted(signal);
        const len = sequences[k].length;
        const xt = new Float32Array(H * len);
        for (let i = 0; i < len; i++) for (let e = 0; e < H; e++) xt[e * len + i] = normed[(starts[k] + i) * H + e];
        const vt = await held.times(xt, len); // vocab × len
        const logits = new Float32Array(len * c.vocabSize);
        mem.hold(logits.byteLength + vt.byteLength);
        for (let v = 0; v < c.vocabSize; v++)
          for (let i = 0; i < len; i++) logits[i * c.vocabSize + v] = vt[v * len + i];
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
    seconds: (performance.now() - t0) / 1000,
  };
}
