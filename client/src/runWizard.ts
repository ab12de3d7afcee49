// The questions "Quantize with LoftQ" asks, as one multi-step input with a Back button. Every
// title names the checkpoint; the first step says whether loftq.json applies (and offers to run
// without it); questions the applied plan answers are not asked. The rank step offers only ranks
// every matrix allows. Each step is pre-filled: the current value is the first item, so Enter
// accepts it. The calibration step (none / sample from the model / a file) puts into the run
// only what the user picked: no ridge, seed or products the user did not choose.
import * as path from 'node:path';
import * as vscode from 'vscode';
import type {
  CalibrationParams,
  ExportFormat,
  MatrixSettings,
  Quantizer,
  RunContext,
} from '../../server/src/protocol/lsp_ext';
import {
  defaultFormatFor,
  EXPORT_FORMATS,
  formatProblem,
  FORMATS,
  MATRIX_SETTING_SPECS,
  QUANTIZER_NAMES,
  QUANTIZERS,
  quantizerSpec,
  CALIBRATION_SPECS,
  calibrationOfFile,
  describeCalibration,
  parseSampleSizes,
} from '../../server/src/registry';
import { refusalText, unwritable } from './writable';

const RANKS = [4, 8, 16, 32, 64, 128, 256];
const ITERS = [1, 2, 3, 5, 10];
const { rank: RANK_SPEC, iters: ITERS_SPEC } = MATRIX_SETTING_SPECS;

export interface RunChoice {
  settings: MatrixSettings;
  /** The output format; undefined: the plan's (or peft). */
  format?: ExportFormat;
  /** The plan file applied, or undefined to run without one. */
  plan?: string;
  /** Calibrated LoftQ as the user chose it; undefined: none (or the applied plan's). */
  calibration?: CalibrationParams;
  out: string;
}

const BACK = Symbol('back');
type Answer<T> = T | typeof BACK | undefined;

interface Item<T> extends vscode.QuickPickItem {
  value?: T;
}

/** One quick pick step; resolves with the value, BACK, or undefined when dismissed. */
function pick<T>(
  title: string,
  placeholder: string,
  items: Item<T>[],
  back: boolean,
  typed?: (s: string) => T | string,
): Promise<Answer<T>> {
  return new Promise((resolve) => {
    const qp = vscode.window.createQuickPick<Item<T>>();
    qp.title = title;
    qp.placeholder = placeholder;
    qp.items = items;
    qp.ignoreFocusOut = true;
    qp.buttons = back ? [vscode.QuickInputButtons.Back] : [];
    let done = false;
    const finish = (v: Answer<T>) => {
      if (done) return;
      done = true;
      resolve(v);
      qp.dispose();
    };
    qp.onDidTriggerButton((b) => b === vscode.QuickInputButtons.Back && finish(BACK));
    // A typed value that no item shows: an item of its own says whether it is accepted, and why not
    // (not while the text only filters the items, e.g. "sample").
    const filters = (t: string) => items.some((it) => it.label.toLowerCase().includes(t.toLowerCase()));
    qp.onDidChangeValue((text) => {
      if (!typed) return;
      const t = text.trim();
      let v = t && !items.some((it) => it.label === t) ? typed(t) : undefined;
      if (typeof v === 'string' && filters(t)) v = undefined;
      qp.items =
        v === undefined
          ? items
          : [
              {
                label: t,
                alwaysShow: true,
                description: typeof v === 'string' ? `$(error) ${v}` : 'press Enter to use it',
              },
              ...items,
            ];
    });
    qp.onDidAccept(() => {
      const text = qp.value.trim();
      if (typed && text && !items.some((it) => it.label === text)) {
        const v = typed(text);
        if (typeof v !== 'string') return finish(v);
        if (!filters(text)) return;
      }
      const sel = qp.selectedItems[0] ?? qp.activeItems[0];
      if (sel?.value !== undefined) finish(sel.value);
    });
    qp.onDidHide(() => finish(undefined));
    qp.show();
  });
}

function wholeNumber(what: string, min: number, max: number, extra = ''): (s: string) => number | string {
  return (s) =>
    /^\d+$/.test(s) && +s >= min && +s <= max
      ? Number(s)
      : `Enter a whole number of ${what} from ${min} to ${max}${extra}`;
}

/** Next to the input: `dir/model-loftq-nf2-r16` for `dir/model.safetensors`, `parent/ckpt-loftq-…` for a folder;
 *  `…-cal` for a calibrated run. */
export function defaultOutFolder(checkpoint: string, s: MatrixSettings, calibrated = false): string {
  const stem = path.basename(checkpoint).replace(/\.safetensors$/, '');
  const tail = calibrated ? '-cal' : '';
  return path.join(path.dirname(checkpoint), `${stem}-loftq-${s.quantizer}${s.bits}-r${s.rank}${tail}`);
}

/** What the "sample from the model" item offers: the registry's default sizes. */
const SAMPLE_SIZES = {
  sequences: CALIBRATION_SPECS.generateSequences.default,
  length: CALIBRATION_SPECS.generateLength.default,
};

function describeSet(d: Partial<MatrixSettings>): string {
  const parts = [
    d.bits && `${d.bits}-bit`,
    d.rank && `rank ${d.rank}`,
    d.iters && `${d.iters} iterations`,
    d.quantizer,
    d.blockSize && `block ${d.blockSize}`,
  ];
  return parts.filter(Boolean).join(', ');
}

/** Runs the steps; undefined when the user dismissed one. */
export async function askRun(
  ctx: RunContext,
  start: MatrixSettings,
  opts: { outParent?: string } = {},
): Promise<RunChoice | undefined> {
  const name = vscode.workspace.asRelativePath(ctx.checkpoint);
  const plan = ctx.plan && !ctx.plan.error ? ctx.plan : undefined;
  let usePlan = !!plan;
  const s: MatrixSettings = { ...start, ...(plan?.defaults ?? {}) };
  let out: string | undefined;

  let format: ExportFormat | undefined;
  let calibration: CalibrationParams | undefined;
  type Step = 'plan' | 'quantizer' | 'bits' | 'rank' | 'iters' | 'format' | 'calibration' | 'out';
  const steps = (): Step[] => {
    const asks = (k: keyof MatrixSettings) => !(usePlan && plan!.defaults[k] !== undefined);
    const all: Step[] = [];
    if (plan) all.push('plan');
    // The quantizer first: it decides the widths (HQQ has 1 bit) and the formats offered.
    if (asks('quantizer')) all.push('quantizer');
    if (asks('bits')) all.push('bits');
    if (asks('rank')) all.push('rank');
    if (asks('iters')) all.push('iters');
    if (!(usePlan && plan!.format)) all.push('format');
    // The plan's calibration block answers it; a model without a forward pass cannot calibrate.
    if (!(usePlan && plan!.calibration) && !ctx.forwardPassProblem) all.push('calibration');
    all.push('out');
    return all;
  };
  let i = 0;
  while (i < steps().length) {
    const list = steps();
    const step = list[i];
    const title = `Quantize ${name} with LoftQ (${i + 1}/${list.length})${usePlan ? ' — loftq.json applied' : ''}`;
    const back = i > 0;
    let a: Answer<unknown>;
    if (step === 'plan') {
      const rel = vscode.workspace.asRelativePath(plan!.file);
      const set = describeSet(plan!.defaults);
      a = await pick<boolean>(
        title,
        `${rel} plans this checkpoint`,
        [
          {
            label: `$(check) Apply ${rel}`,
            value: true,
            description: usePlan ? 'current' : undefined,
            detail:
              `${plan!.overrides} override${plan!.overrides === 1 ? '' : 's'}, ${plan!.matrices} matrices` +
              (set ? `; its defaults set ${set}` : '') +
              (plan!.calibration ? `; calibrated on ${describeCalibration(plan!.calibration)}` : ''),
          },
          {
            label: '$(circle-slash) Run without the plan',
            value: false,
            description: usePlan ? undefined : 'current',
            detail: 'the settings you choose next apply to every matrix of the default targets',
          },
        ].sort((x, y) => Number(y.value === usePlan) - Number(x.value === usePlan)),
        back,
      );
      if (typeof a === 'boolean') {
        usePlan = a;
        Object.assign(s, start, usePlan ? plan!.defaults : {});
      }
    } else if (step === 'bits') {
      const own = quantizerSpec(s.quantizer).bits;
      const widths = [s.bits, ...own.filter((b) => b !== s.bits)];
      a = await pick<number>(
        title,
        'Bits per weight of the quantized backbone',
        widths.map((b) => ({ label: `${b}-bit`, value: b, description: b === s.bits ? 'current' : undefined })),
        back,
      );
      if (typeof a === 'number') s.bits = a;
    } else if (step === 'rank') {
      const cap = usePlan ? plan!.maxRank : ctx.maxRank;
      const max = Math.min(cap?.rank ?? RANK_SPEC.max, RANK_SPEC.max);
      const fits = [...new Set([s.rank, ...RANKS])]
        .filter((r) => r <= max)
        .sort((x, y) => (x === s.rank ? -1 : y === s.rank ? 1 : x - y));
      const note = cap ? ` (at most ${cap.rank} = min(out, in) of ${cap.matrix})` : '';
      a = await pick<number>(
        title,
        `Rank of the LoRA adapter (A·Bᵀ)${note}; or type a number`,
        fits.map((r) => ({ label: String(r), value: r, description: r === s.rank ? 'current' : undefined })),
        back,
        wholeNumber('rank', RANK_SPEC.min, max, note),
      );
      if (typeof a === 'number') s.rank = a;
    } else if (step === 'iters') {
      const values = [s.iters, ...ITERS.filter((x) => x !== s.iters)];
      a = await pick<number>(
        title,
        'LoftQ alternating iterations; or type a number',
        values.map((x) => ({ label: String(x), value: x, description: x === s.iters ? 'current' : undefined })),
        back,
        wholeNumber('iterations', ITERS_SPEC.min, ITERS_SPEC.max),
      );
      if (typeof a === 'number') s.iters = a;
    } else if (step === 'quantizer') {
      const qs = [s.quantizer, ...QUANTIZER_NAMES.filter((q) => q !== s.quantizer)];
      a = await pick<Quantizer>(
        title,
        'Quantizer',
        qs.map((q) => ({
          label: q,
          value: q,
          detail: QUANTIZERS[q].detail,
          description: q === s.quantizer ? 'current' : undefined,
        })),
        back,
      );
      if (typeof a === 'string') {
        s.quantizer = a as Quantizer;
        // A width the new quantizer lacks falls back to its default one.
        if (!quantizerSpec(s.quantizer).bits.includes(s.bits)) s.bits = MATRIX_SETTING_SPECS.bits.default;
      }
    } else if (step === 'format') {
      const fits = EXPORT_FORMATS.filter((f) => !formatProblem(f, s.quantizer));
      // HQQ results load at their own bits only as an HQQ checkpoint: offered first for them.
      const preferred = defaultFormatFor(s.quantizer);
      const current = format && fits.includes(format) ? format : preferred;
      a = await pick<ExportFormat>(
        title,
        'Output format',
        [current, ...fits.filter((f) => f !== current)].map((f) => ({
          label: f,
          value: f,
          detail: FORMATS[f].detail,
          description: f === current ? 'current' : undefined,
        })),
        back,
      );
      if (typeof a === 'string') format = a as ExportFormat;
    } else if (step === 'calibration') {
      a = await askCalibration(title, calibration, back);
      if (a && a !== BACK) calibration = a === NONE ? undefined : (a as CalibrationParams);
      else if (a === '') continue; // the file dialog was dismissed: the same step again
    } else {
      const calibrated = !!calibration || !!(usePlan && plan!.calibration);
      const named = defaultOutFolder(ctx.checkpoint, s, calibrated);
      const suggested = out ?? (opts.outParent ? path.join(opts.outParent, path.basename(named)) : named);
      a = await pick<string>(
        title,
        'Output folder (model, loftq_init/ adapter, loftq-report.json)',
        [
          { label: suggested, value: suggested, description: 'suggested' },
          { label: '$(folder-opened) Choose a folder…', value: '' },
        ],
        back,
      );
      if (a === '') {
        const chosen = await vscode.window.showOpenDialog({
          canSelectFolders: true,
          canSelectFiles: false,
          canSelectMany: false,
          defaultUri: vscode.Uri.file(path.dirname(suggested)),
          openLabel: 'Write LoftQ output here',
        });
        if (!chosen?.[0]) continue; // back to the same step
        a = chosen[0].fsPath;
      }
      if (typeof a === 'string') {
        // A folder the run could not write is said now, and asked again.
        const why = await unwritable(a);
        if (why) {
          void vscode.window.showErrorMessage(`${a} ${refusalText(why)}: choose another output folder.`);
          out = undefined;
          continue;
        }
        out = a;
      }
    }
    if (a === undefined) return undefined;
    if (a === BACK) i = Math.max(0, i - 1);
    else i++;
  }
  return {
    settings: s,
    plan: usePlan ? plan!.file : undefined,
    out: out!,
    format,
    ...(calibration ? { calibration } : {}),
  };
}

const NONE = Symbol('no calibration');

/**
 * The calibration question on its own (Analyze's last step): the choice, null for none, undefined
 * when dismissed. A dismissed file dialog asks again.
 */
export async function askCalibrationAlone(title: string): Promise<CalibrationParams | null | undefined> {
  for (;;) {
    const a = await askCalibration(title, undefined, false);
    if (a === '') continue;
    if (a === undefined || a === BACK) return undefined;
    return a === NONE ? null : a;
  }
}

/** The calibration step: none, sample from the model (the default sizes, or typed N,LEN), or a file.
 *  Resolves with the choice, NONE, BACK, '' (the file dialog was dismissed) or undefined. */
async function askCalibration(
  title: string,
  current: CalibrationParams | undefined,
  back: boolean,
): Promise<Answer<CalibrationParams | typeof NONE | ''>> {
  type V = CalibrationParams | typeof NONE | 'file';
  const sample = { generate: { ...SAMPLE_SIZES } };
  const sampled = current?.generate ? current : sample;
  const items: Item<V>[] = [
    {
      label: '$(circle-slash) None',
      value: NONE,
      detail: 'plain LoftQ: each adapter fits the weight error ‖W − Q − AB‖',
      description: current ? undefined : 'current',
    },
    {
      label: `$(sparkle) Sample from the model: ${sampled.generate!.sequences} × ${sampled.generate!.length} tokens`,
      value: sampled,
      detail:
        `${describeCalibration(sampled)}; each adapter fits the layer's outputs on them ` +
        '(type N,LEN for other sizes)',
      description: current?.generate ? 'current' : undefined,
    },
    {
      label: '$(file) Choose a file…',
      value: 'file',
      detail:
        'token ids (.json), text (.txt, tokenized with tokenizer.json) or a llama.cpp importance matrix (.gguf, .dat)',
      description: current && !current.generate ? `current: ${describeCalibration(current)}` : undefined,
    },
  ];
  const first = current ? (current.generate ? 1 : 2) : 0;
  const ordered = [items[first], ...items.filter((_, i) => i !== first)];
  const a = await pick<V>(
    title,
    'Calibration: fit the adapters to real inputs (lower output error), or not',
    ordered,
    back,
    (text) => {
      const sizes = parseSampleSizes(text);
      return typeof sizes === 'string' ? `Type ${sizes} sampled from the model` : { generate: sizes };
    },
  );
  if (a !== 'file') return a as Answer<CalibrationParams | typeof NONE>;
  const chosen = await vscode.window.showOpenDialog({
    canSelectFiles: true,
    canSelectFolders: false,
    canSelectMany: false,
    filters: { 'Calibration data': ['json', 'txt', 'gguf', 'dat', 'imatrix'], 'All files': ['*'] },
    openLabel: 'Calibrate with this file',
  });
  return chosen?.[0] ? (calibrationOfFile(chosen[0].fsPath) as CalibrationParams) : '';
}
