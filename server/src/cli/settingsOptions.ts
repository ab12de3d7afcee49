// The quantization options shared by `quantize` and `analyze`.
import type { OptionSpec } from './args';
import { intOption } from './args';
import { UsageError } from '../engine/errors';
import type { BackendChoice, MatrixSettings, Quantizer } from '../protocol/lsp_ext';
import { DEFAULT_SETTINGS } from '../protocol/lsp_ext';

export const SETTINGS_OPTIONS: Record<string, OptionSpec> = {
  rank: { type: 'number', default: DEFAULT_SETTINGS.rank },
  iters: { type: 'number', default: DEFAULT_SETTINGS.iters },
  quantizer: { type: 'string', default: DEFAULT_SETTINGS.quantizer },
  'block-size': { type: 'number', default: DEFAULT_SETTINGS.blockSize },
  target: { type: 'list' },
  backend: { type: 'string', default: 'wasm' },
  workers: { type: 'number' },
  help: { type: 'boolean', alias: 'h' },
};

export function quantizerOption(o: Record<string, unknown>): Quantizer {
  const q = o.quantizer as string;
  if (q !== 'nf' && q !== 'uniform') throw new UsageError(`option '--quantizer' must be nf or uniform, got '${q}'`);
  return q;
}

export function backendOption(o: Record<string, unknown>): BackendChoice {
  const b = o.backend as string;
  if (!['auto', 'wasm', 'webgpu', 'tensorflow', 'cpu'].includes(b)) throw new UsageError(`option '--backend' must be auto, wasm, webgpu, tensorflow or cpu, got '${b}'`);
  return b as BackendChoice;
}

export function workersOption(o: Record<string, unknown>): number | undefined {
  return o.workers === undefined ? undefined : intOption(o, 'workers', undefined, 0);
}

export function settingsFrom(o: Record<string, unknown>, bits: number): MatrixSettings {
  return { bits, rank: intOption(o, 'rank'), iters: intOption(o, 'iters'), quantizer: quantizerOption(o), blockSize: intOption(o, 'block-size') };
}

/** Ctrl-C and SIGTERM cancel the run cleanly (temp files removed); see interrupt.ts. */
export { interruptSignal } from './interrupt';
