// The questions "Quantize with LoftQ" asks, each pre-filled with the starting settings
// (the current value is the first, active item, so Enter accepts it).
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { MatrixSettings, Quantizer } from '../../server/src/registry';
import { MATRIX_SETTING_SPECS, QUANTIZER_NAMES, QUANTIZERS, SUPPORTED_BITS } from '../../server/src/registry';

const STEPS = 5;
const title = (step: number) => `Quantize with LoftQ (${step}/${STEPS})`;

interface ValueItem<T> extends vscode.QuickPickItem {
  value?: T;
}

async function pickNumber(step: number, placeHolder: string, current: number, choices: number[], what: string, min: number, max: number): Promise<number | undefined> {
  const values = [current, ...choices.filter((c) => c !== current)];
  const items: ValueItem<number>[] = values.map((v) => ({ label: String(v), value: v, description: v === current ? 'default' : undefined }));
  items.push({ label: 'Other…', description: `any ${what} from ${min} to ${max}` });
  const picked = await vscode.window.showQuickPick(items, { title: title(step), placeHolder, ignoreFocusOut: true });
  if (!picked) return undefined;
  if (picked.value !== undefined) return picked.value;
  const typed = await vscode.window.showInputBox({
    title: title(step),
    prompt: `${what} (${min}–${max})`,
    value: String(current),
    ignoreFocusOut: true,
    validateInput: (s) => (/^\d+$/.test(s.trim()) && +s >= min && +s <= max ? undefined : `Enter a whole number from ${min} to ${max}`),
  });
  return typed === undefined ? undefined : Number(typed.trim());
}

export async function askSettings(start: MatrixSettings, planNote?: string): Promise<MatrixSettings | undefined> {
  const bitsItems: ValueItem<number>[] = [start.bits, ...SUPPORTED_BITS.filter((b) => b !== start.bits)].map((b) => ({
    label: `${b}-bit`, value: b, description: b === start.bits ? `default${planNote ? ` (${planNote})` : ''}` : undefined,
  }));
  const bits = await vscode.window.showQuickPick(bitsItems, { title: title(1), placeHolder: 'Bits per weight of the quantized backbone', ignoreFocusOut: true });
  if (!bits) return undefined;
  const { rank: rankSpec, iters: itersSpec } = MATRIX_SETTING_SPECS;
  const rank = await pickNumber(2, 'Rank of the LoRA adapter (A·Bᵀ)', start.rank, [4, 8, 16, 32, 64, 128], 'rank',
    rankSpec.min, rankSpec.max);
  if (rank === undefined) return undefined;
  const iters = await pickNumber(3, 'LoftQ alternating iterations', start.iters, [1, 2, 3, 5, 10], 'iterations',
    itersSpec.min, itersSpec.max);
  if (iters === undefined) return undefined;
  const qItems: ValueItem<Quantizer>[] = [...QUANTIZER_NAMES]
    .sort((a) => (a === start.quantizer ? -1 : 1))
    .map((q) => ({
      label: q, value: q, description: q === start.quantizer ? 'default' : undefined, detail: QUANTIZERS[q].detail,
    }));
  const quantizer = await vscode.window.showQuickPick(qItems, { title: title(4), placeHolder: 'Quantizer', ignoreFocusOut: true });
  if (!quantizer) return undefined;
  return { ...start, bits: bits.value!, rank, iters, quantizer: quantizer.value! };
}

/** Next to the input: `dir/model-loftq-nf2-r16` for `dir/model.safetensors`, `parent/ckpt-loftq-…` for a folder. */
export function defaultOutFolder(checkpoint: string, s: MatrixSettings): string {
  const stem = path.basename(checkpoint).replace(/\.safetensors$/, '');
  return path.join(path.dirname(checkpoint), `${stem}-loftq-${s.quantizer}${s.bits}-r${s.rank}`);
}

export async function askOutFolder(suggested: string): Promise<string | undefined> {
  const items: ValueItem<string>[] = [
    { label: suggested, value: suggested, description: 'default' },
    { label: '$(folder-opened) Choose a folder…' },
  ];
  const picked = await vscode.window.showQuickPick(items, { title: title(5), placeHolder: 'Output folder (model, loftq_init/ adapter, loftq-report.json)', ignoreFocusOut: true });
  if (!picked) return undefined;
  if (picked.value) return picked.value;
  const chosen = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, canSelectMany: false, defaultUri: vscode.Uri.file(path.dirname(suggested)), openLabel: 'Write LoftQ output here' });
  return chosen?.[0]?.fsPath;
}
