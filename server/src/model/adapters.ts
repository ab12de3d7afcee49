// Reads a LoftQ output folder for evaluation: the backbone (model.safetensors or the sharded
// index), loftq_init/adapter_model.safetensors with its adapter_config.json, and loftq-report.json.
// It yields two weight hooks for the layer-streaming forward pass:
//   LoftQ init:  W_eff = Q + s·B·A, s = lora_alpha / r (α/√r with use_rslora), as PEFT's LoRA
//                layer computes it, with r and α looked up per module in rank_pattern/alpha_pattern;
//   QLoRA init:  quantize(W) of the original with the bits, quantizer and block size the report
//                records for that matrix, and no adapter.
// Everything is checked before a forward pass starts, so a folder that does not fit (another
// model, a rank that disagrees with the written lora_A, a missing report) is one line naming
// the file, not a failure after minutes of compute.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { brief, Checkpoint, INDEX_FILE, openCheckpoint, readRegularFile, readTensorF32 } from '../checkpoint';
import { InputError } from '../base/errors';
import type { MatmulBackend } from '../linalg/backend';
import { moduleName } from '../plan/glob';
import type { MatrixReport, Report } from '../protocol/lsp_ext';
import { quantizeValues } from '../quant/grid';
import { isHqqModule, readHqqModule } from '../quant/hqqModule';
import { isQuantizer } from '../registry';
import type { ModelConfig } from './config';
import { LINEAR_NAMES, layerLinears, layerTensorName, linearTensorName, type WeightHook } from './weights';

export const ADAPTER_FOLDER = 'loftq_init';
export const REPORT_NAME = 'loftq-report.json';
const MAX_JSON_BYTES = 100_000_000;

/** The fields of adapter_config.json that decide W_eff. */
export interface PeftLoraConfig {
  file: string;
  r: number;
  loraAlpha: number;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  useRslora: boolean;
}

async function readJson(file: string, what: string): Promise<unknown> {
  let bytes: Uint8Array;
  try {
    bytes = await readRegularFile(file, MAX_JSON_BYTES);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new InputError(file, `does not exist (${what})`);
    throw e;
  }
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new InputError(file, `is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
}

function positive(file: string, j: Record<string, unknown>, key: string, integer: boolean): number {
  const v = j[key];
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    const kind = integer ? 'integer' : 'number';
    throw new InputError(file, `field '${key}' must be a positive ${kind} (found ${brief(v)})`);
  }
  return v;
}

function pattern(file: string, j: Record<string, unknown>, key: string, integer: boolean): Record<string, number> {
  const v = j[key] ?? {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new InputError(file, `field '${key}' must be an object`);
  }
  const out: Record<string, number> = Object.create(null);
  for (const [k, x] of Object.entries(v)) {
    try {
      new RegExp(k);
    } catch {
      throw new InputError(file, `${key} key '${k.slice(0, 80)}' is not a regular expression`);
    }
    out[k] = positive(file, { [k]: x }, k, integer);
  }
  return out;
}

export function parsePeftLoraConfig(file: string, json: unknown): PeftLoraConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new InputError(file, 'is not a JSON object');
  }
  const j = json as Record<string, unknown>;
  if (j.peft_type !== undefined && j.peft_type !== 'LORA') {
    throw new InputError(file, `peft_type is ${brief(j.peft_type)}; only LORA adapters are evaluated`);
  }
  // A Conv1D-style [in, out] layout never occurs in the families the forward pass runs.
  if (j.fan_in_fan_out === true) {
    throw new InputError(file, 'has fan_in_fan_out true, which the linear layers the forward pass runs never use');
  }
  return {
    file,
    r: positive(file, j, 'r', true),
    loraAlpha: positive(file, j, 'lora_alpha', false),
    rankPattern: pattern(file, j, 'rank_pattern', true),
    alphaPattern: pattern(file, j, 'alpha_pattern', false),
    useRslora: j.use_rslora === true,
  };
}

/** PEFT's per-module lookup (peft/utils/other.py get_pattern_key, PEFT ≥ 0.15): the first key,
 *  in file order, with re.match(rf"(.*\.)?({key})$", module). The files loftq writes give the
 *  same answer under the older rule too (plan/planner/peft.ts). */
export function peftLookup(patterns: Record<string, number>, fallback: number, module: string): number {
  for (const [key, v] of Object.entries(patterns)) if (new RegExp(`^(?:.*\\.)?(?:${key})$`).test(module)) return v;
  return fallback;
}

/** r, α and the scale s of W_eff = Q + s·B·A for one module. */
export function loraScaling(c: PeftLoraConfig, module: string): { rank: number; alpha: number; scale: number } {
  const rank = peftLookup(c.rankPattern, c.r, module);
  const alpha = peftLookup(c.alphaPattern, c.loraAlpha, module);
  return { rank, alpha, scale: c.useRslora ? alpha / Math.sqrt(rank) : alpha / rank };
}

export const adapterTensorName = (tensor: string, which: 'A' | 'B') =>
  `base_model.model.${moduleName(tensor)}.lora_${which}.weight`;

export interface LoftqOutput {
  dir: string;
  backbone: Checkpoint;
  /** The checkpoint the LoftQ variant's forward pass reads (the hook supplies quantized matrices). */
  forward: Checkpoint;
  /** Quantized matrices stored as HQQ modules (tensor names). */
  hqq: Set<string>;
  adapters: Checkpoint;
  config: PeftLoraConfig;
  report: Report;
  reportFile: string;
  /** Quantized matrices (tensor name) with their report entry and LoRA scaling. */
  matrices: Map<string, { report: MatrixReport; rank: number; scale: number }>;
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** The backbone of an output folder: the index when sharded, else model.safetensors (a packed run
 *  also holds model.packed.safetensors, which is not a loadable backbone). */
async function openBackbone(dir: string): Promise<Checkpoint> {
  const index = path.join(dir, INDEX_FILE),
    single = path.join(dir, 'model.safetensors');
  if (isFile(index)) return openCheckpoint(index);
  if (isFile(single)) return openCheckpoint(single);
  throw new InputError(
    dir,
    `holds no backbone (model.safetensors or ${INDEX_FILE}); is it the --out folder of loftq quantize?`,
  );
}

async function readReport(file: string): Promise<Report> {
  const why = 'the QLoRA comparison needs the bits, quantizer and block size of each matrix';
  const j = (await readJson(file, why)) as Report;
  if (typeof j !== 'object' || j === null || j.version !== 1 || !Array.isArray(j.matrices)) {
    throw new InputError(file, "is not a loftq report (version 1 with a 'matrices' list)");
  }
  return j;
}

/** The decoder linear weights the forward pass can substitute: the family's (a config), or
 *  Llama's for `layers` layers. */
function hookableNames(model: number | ModelConfig): Set<string> {
  const s = new Set<string>();
  if (typeof model === 'number') {
    for (let l = 0; l < model; l++) for (const lin of LINEAR_NAMES) s.add(linearTensorName(l, lin));
  } else {
    const specs = layerLinears(model);
    for (let l = 0; l < model.numLayers; l++) for (const spec of specs) s.add(layerTensorName(l, spec));
  }
  return s;
}

/** The linear layers' short names for messages (q_proj/k_proj/…/down_proj). */
function hookableKinds(model: number | ModelConfig): string {
  if (typeof model === 'number') return 'q/k/v/o/gate/up/down';
  return layerLinears(model)
    .map((s) => s.name.split('.').pop())
    .join('/');
}

/** Opens DIR and checks that its files agree with each other and with the original checkpoint
 *  (same tensor names and shapes). `model`: the original's config (or, for a Llama, its decoder
 *  layer count). */
export async function openLoftqOutput(
  dir: string,
  original: Checkpoint,
  model: number | ModelConfig,
): Promise<LoftqOutput> {
  const backbone = await openBackbone(dir);
  const notFrom = `it was not produced from ${original.path}`;
  // `--format hqq`: a quantized M.weight is stored as HQQLinear's state (M.W_q, M.scale, …).
  const hqq = new Set<string>();
  for (const t of original.tensors) {
    const b = backbone.byName.get(t.name);
    if (!b && t.name.endsWith('.weight') && isHqqModule(backbone, moduleName(t.name))) {
      hqq.add(t.name);
      continue;
    }
    if (!b) throw new InputError(backbone.path, `has no tensor '${t.name}': ${notFrom}`);
    if (b.shape.join() !== t.shape.join()) {
      throw new InputError(b.file, `shape [${b.shape}] differs from the original's [${t.shape}]: ${notFrom}`, t.name);
    }
  }
  const hqqModules = new Set([...hqq].map(moduleName));
  const ofHqqModule = (name: string) => hqqModules.has(name.slice(0, name.lastIndexOf('.')));
  const extra = backbone.tensors.find((t) => !original.byName.has(t.name) && !ofHqqModule(t.name));
  if (extra) throw new InputError(backbone.path, `has tensor '${extra.name}', which the original lacks: ${notFrom}`);

  const adir = path.join(dir, ADAPTER_FOLDER);
  const configFile = path.join(adir, 'adapter_config.json');
  const config = parsePeftLoraConfig(configFile, await readJson(configFile, 'the LoRA scaling lora_alpha / r'));
  const adapterFile = path.join(adir, 'adapter_model.safetensors');
  if (!isFile(adapterFile)) throw new InputError(adapterFile, 'does not exist (the LoftQ adapters)');
  const adapters = await openCheckpoint(adapterFile);
  const reportFile = path.join(dir, REPORT_NAME);
  const report = await readReport(reportFile);

  const hookable = hookableNames(model);
  const matrices: LoftqOutput['matrices'] = new Map();
  for (const m of report.matrices) {
    if (m.skipped) continue;
    const t = hqq.has(m.name) ? original.byName.get(m.name) : backbone.byName.get(m.name);
    if (!t || t.shape.length !== 2) {
      throw new InputError(reportFile, `lists matrix '${m.name}', which ${backbone.path} does not hold as a matrix`);
    }
    if (!hookable.has(m.name)) {
      throw new InputError(
        reportFile,
        `matrix '${m.name}' was quantized; evaluation substitutes only the decoder's ${hookableKinds(model)} layers`,
      );
    }
    const [rows, cols] = t.shape;
    const mod = moduleName(m.name);
    const a = adapters.byName.get(adapterTensorName(m.name, 'A'));
    const b = adapters.byName.get(adapterTensorName(m.name, 'B'));
    if (!a || !b) {
      throw new InputError(adapterFile, `has no lora_A/lora_B for '${mod}', which ${REPORT_NAME} lists as quantized`);
    }
    const { rank, scale } = loraScaling(config, moduleName(m.name));
    if (a.shape.join() !== [rank, cols].join() || b.shape.join() !== [rows, rank].join()) {
      throw new InputError(
        adapterFile,
        `lora_A [${a.shape}] / lora_B [${b.shape}] of '${mod}' do not fit rank ${rank} ` +
          `from ${path.basename(configFile)} and the matrix [${rows}, ${cols}] (PEFT would fail with a size mismatch)`,
      );
    }
    for (const k of ['bits', 'blockSize'] as const) {
      if (!Number.isInteger(m[k]) || m[k] <= 0) {
        throw new InputError(reportFile, `matrix '${m.name}': ${k} is ${brief(m[k])}`);
      }
    }
    if (!isQuantizer(m.quantizer)) {
      throw new InputError(reportFile, `matrix '${m.name}': quantizer is ${brief(m.quantizer)}`);
    }
    matrices.set(m.name, { report: m, rank, scale });
  }
  const tensorOf = (adapter: string) =>
    adapter.replace(/^base_model\.model\./, '').replace(/\.lora_[AB]\.weight$/, '.weight');
  const stray = adapters.tensors.find((t) => !matrices.has(tensorOf(t.name)));
  if (stray) {
    throw new InputError(adapterFile, `holds '${stray.name}', for a matrix ${REPORT_NAME} does not list as quantized`);
  }
  const unreplaced = [...hqq].find((name) => !matrices.has(name));
  if (unreplaced)
    throw new InputError(reportFile, `does not list '${unreplaced}', which ${backbone.path} stores as an HQQ module`);
  // An HQQ backbone has no dense weight to run: the original's tensors run, every quantized
  // matrix replaced by its HQQ dequantization (+ s·B·A) through the weight hook.
  const forward = hqq.size ? original : backbone;
  return { dir, backbone, forward, hqq, adapters, config, report, reportFile, matrices };
}

/** W_eff = Q + s·B·A for the quantized matrices, read from the adapter file as each layer streams by.
 *  B·A (out × r times r × in) runs on the backend; it is the one O(out·in·r) step here. */
export function loftqWeightHook(out: LoftqOutput, backend: MatmulBackend): WeightHook {
  return async (name, q, rows, cols) => {
    const m = out.matrices.get(name);
    if (!m) return undefined;
    if (out.hqq.has(name)) {
      const mod = await readHqqModule(out.backbone, moduleName(name));
      if (mod.rows !== rows || mod.cols !== cols)
        throw new InputError(
          out.backbone.path,
          `HQQ module '${mod.module}' is ${mod.rows}×${mod.cols}, not ${rows}×${cols}`,
        );
      q = mod.values;
    }
    const a = await readTensorF32(out.adapters.byName.get(adapterTensorName(name, 'A'))!);
    const b = await readTensorF32(out.adapters.byName.get(adapterTensorName(name, 'B'))!);
    const held = await backend.hold(b, rows, m.rank);
    let ba: Float32Array;
    try {
      ba = await held.times(a, cols);
    } finally {
      held.dispose();
    }
    const w = new Float32Array(q.length);
    for (let i = 0; i < w.length; i++) w[i] = q[i] + m.scale * ba[i];
    return w;
  };
}

/** quantize(W) of the original with the matrix's recorded settings (the QLoRA init: no adapter). */
export function qloraWeightHook(out: LoftqOutput): WeightHook {
  return (name, w) => {
    const m = out.matrices.get(name);
    if (!m) return undefined;
    const s = m.report;
    return quantizeValues(w, s, s.dtype);
  };
}
