// `--format hqq`: a pre-quantized HQQ checkpoint. Each quantized `M.weight` becomes HQQLinear's
// serialized state (hqq 0.2.8's `state_dict` with `encoded_state_dict`): W_q as HQQ packs it,
// scale and zero [groups, 1] in the compute dtype (the checkpoint's), and its meta as the
// safetensors encodings hqq's `encode_safetensor_type` writes (ints I32 scalars, shape I64[2],
// strings and dtypes ASCII U8, flags U8 scalars). A module's keys (and its bias) sit in the
// shard of its weight, so no module is split across shards. config.json gains transformers'
// `quantization_config`; `loftq_hqq.py` loads the folder where `from_pretrained` cannot (5.x).

import type { Checkpoint, DType, OutputCommit, TensorInfo } from '../checkpoint';
import { openCheckpoint, readTensorBytes } from '../checkpoint';
import { ENTRY } from '../base/journal';
import { moduleName } from '../plan/glob';
import { computeDtypeOf } from '../quant/grid';
import { hqqPackingName } from '../quant/hqqPack';
import type { MatrixReport } from '../protocol/lsp_ext';
import { inputLayout, unchanged, type Finished, type OutLayout, type OutTensor, writeLayout } from './assemble';
import LOFTQ_HQQ_PY from './loftq_hqq.py';
import { applyEdits, modify } from 'jsonc-parser';

export const HQQ_LOADER_FILE = 'loftq_hqq.py';

/** Meta tensors of one module, in the order hqq's state_dict lists them after the data. */
function metaTensors(r: MatrixReport): [string, DType, number[], Uint8Array][] {
  const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
  const i32 = (v: number) => new Uint8Array(Int32Array.of(v).buffer);
  const flag = (v: boolean) => Uint8Array.of(v ? 1 : 0);
  const shape = new Uint8Array(BigInt64Array.of(BigInt(r.shape[0]), BigInt(r.shape[1])).buffer);
  return [
    ['shape', 'I64', [2], shape],
    ['nbits', 'I32', [], i32(r.bits)],
    ['group_size', 'I32', [], i32(r.blockSize)],
    ['axis', 'I32', [], i32(1)],
    ['packing', 'U8', [hqqPackingName(r.bits).length], ascii(hqqPackingName(r.bits))],
    ['compute_dtype', 'U8', [`torch.${computeDtypeOf(r.dtype)}`.length], ascii(`torch.${computeDtypeOf(r.dtype)}`)],
    ['unpack_view_dtype', 'U8', [11], ascii(r.bits === 3 ? 'torch.int32' : 'torch.uint8')],
    ['channel_wise', 'U8', [], flag(true)],
    ['optimize', 'U8', [], flag(true)],
    ['round_zero', 'U8', [], flag(r.bits === 4)],
    ['view_as_float', 'U8', [], flag(false)],
    ['quant_scale', 'U8', [], flag(false)],
    ['quant_zero', 'U8', [], flag(false)],
    ['offload_meta', 'U8', [], flag(false)],
    ['encoded_state_dict', 'U8', [], flag(true)],
    ['stores_quant_config', 'U8', [], flag(true)],
  ];
}

/** One quantized module's tensors: W_q, scale, zero from the journal entry, the bias (if the
 *  checkpoint has one) and the meta. */
async function moduleTensors(f: Finished, bias: TensorInfo | undefined): Promise<OutTensor[]> {
  const entry = await openCheckpoint(f.entry);
  const m = moduleName(f.report.name);
  const data = (key: string, name: string): OutTensor => {
    const t = entry.byName.get(name);
    if (!t) throw new Error(`${f.entry}: journal entry has no '${name}' (made for another format)`);
    return { spec: { name: `${m}.${key}`, dtype: t.dtype, shape: t.shape }, load: (slot) => readTensorBytes(t, slot) };
  };
  const out = [data('W_q', ENTRY.codes), data('scale', ENTRY.scales), data('zero', ENTRY.zero)];
  if (bias) out.push(unchanged(bias));
  for (const [key, dtype, shape, bytes] of metaTensors(f.report))
    out.push({ spec: { name: `${m}.${key}`, dtype, shape }, load: async () => bytes });
  return out;
}

/** The backbone in the input's sharding, each quantized module as HQQLinear's state. */
export async function writeHqqBackbone(
  ck: Checkpoint,
  out: string,
  finished: Map<string, Finished>,
  commit: OutputCommit,
  signal?: AbortSignal,
): Promise<string[]> {
  const biasOf = new Map<string, TensorInfo>();
  for (const name of finished.keys()) {
    const bias = ck.byName.get(`${moduleName(name)}.bias`);
    if (bias) biasOf.set(name, bias);
  }
  const moved = new Set([...biasOf.values()].map((t) => t.name));
  const layout: OutLayout = [];
  for (const tensors of inputLayout(ck)) {
    const shard: OutTensor[] = [];
    for (const t of tensors) {
      const f = finished.get(t.name);
      if (f) shard.push(...(await moduleTensors(f, biasOf.get(t.name))));
      else if (!moved.has(t.name)) shard.push(unchanged(t));
    }
    layout.push(shard);
  }
  return writeLayout(ck, out, layout, commit, signal);
}

/** The tag transformers gives a linear module: its last two name components (`self_attn.q_proj`). */
export function hqqTag(tensorName: string): string {
  return moduleName(tensorName).split('.').slice(-2).join('.');
}

/** config.json's `quantization_config`: one `quant_config` per tag (the most common settings of
 *  its modules — each module's own bits are in its meta, which is what the loader reads).
 *  `skip_modules` names, besides `lm_head`, every module stored dense whose tag is quantized
 *  elsewhere (a plan's skipped o_proj of one layer): transformers 4.57 matches these entries as
 *  substrings of module names and otherwise expects HQQ keys for such a module, leaving its
 *  dense weight unloaded ("weight is on the meta device"). `tensors`: the checkpoint's 2-D names. */
export function hqqQuantizationConfig(matrices: MatrixReport[], tensors: string[] = []): object {
  const byTag = new Map<string, Map<string, { n: number; r: MatrixReport }>>();
  for (const r of matrices) {
    if (r.skipped) continue;
    const tag = hqqTag(r.name);
    const key = `${r.bits}/${r.blockSize}`;
    const counts = byTag.get(tag) ?? new Map();
    byTag.set(tag, counts);
    const c = counts.get(key) ?? { n: 0, r };
    c.n++;
    counts.set(key, c);
  }
  const quantConfig: Record<string, object> = {};
  for (const tag of [...byTag.keys()].sort()) {
    const r = [...byTag.get(tag)!.values()].sort((a, b) => b.n - a.n)[0].r;
    quantConfig[tag] = {
      offload_meta: false,
      scale_quant_params: null,
      weight_quant_params: {
        axis: 1,
        channel_wise: true,
        group_size: r.blockSize,
        nbits: r.bits,
        optimize: true,
        round_zero: r.bits === 4,
        view_as_float: false,
      },
      zero_quant_params: null,
    };
  }
  const quantized = new Set(matrices.filter((r) => !r.skipped).map((r) => r.name));
  const dense = tensors
    .filter((t) => t.endsWith('.weight') && !quantized.has(t) && byTag.has(hqqTag(t)))
    .map(moduleName);
  return { quant_config: quantConfig, quant_method: 'hqq', skip_modules: ['lm_head', ...dense] };
}

/** The input's config.json text with `quantization_config` set and every other byte kept: a
 *  JSON round trip would turn `0.0` into `0`, which transformers 5.x's typed configs refuse
 *  ("expected float, got int"). `tensors`: the checkpoint's 2-D tensor names. */
export function hqqConfigJson(configText: string, matrices: MatrixReport[], tensors: string[]): string {
  const value = hqqQuantizationConfig(matrices, tensors);
  const formattingOptions = { insertSpaces: true, tabSize: 2, eol: '\n' };
  return applyEdits(configText, modify(configText, ['quantization_config'], value, { formattingOptions }));
}

export const HQQ_LOADER_SOURCE: string = LOFTQ_HQQ_PY;
