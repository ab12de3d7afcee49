// `loftq.*` settings per resource through workspace/configuration, validated, with the
// built-in defaults when the client has no configuration support (e.g. a bare stdio client).

import type { Connection } from 'vscode-languageserver';
import { MATRIX_SETTING_SPECS, RUN_SETTING_SPECS, validOr } from '../registry';
import type { BackendChoice, MatrixSettings } from '../registry';

export interface LoftqSettings {
  backend: BackendChoice;
  /** 0: the engine decides (number of cores). */
  workers: number;
  defaults: MatrixSettings;
  /** LoftQ relative error above which a worst-matrices diagnostic is a warning. */
  threshold: number;
}

export const DEFAULT_THRESHOLD: number = RUN_SETTING_SPECS.threshold.default;

/** Each value checked against the registry; one out of range falls back to its default. */
export function normalizeSettings(raw: unknown): LoftqSettings {
  const r = (raw && typeof raw === 'object' ? raw : {}) as Record<string, any>;
  const d = (r.defaults && typeof r.defaults === 'object' ? r.defaults : {}) as Record<string, unknown>;
  const m = MATRIX_SETTING_SPECS;
  return {
    backend: validOr<BackendChoice>(RUN_SETTING_SPECS.editorBackend, r.backend),
    workers: validOr<number>(RUN_SETTING_SPECS.workers, r.workers),
    defaults: {
      bits: validOr<number>(m.bits, d.bits),
      rank: validOr<number>(m.rank, d.rank),
      iters: validOr<number>(m.iters, d.iters),
      quantizer: validOr<MatrixSettings['quantizer']>(m.quantizer, d.quantizer),
      blockSize: validOr<number>(m.blockSize, d.blockSize),
    },
    threshold: validOr<number>(RUN_SETTING_SPECS.threshold, r.diagnostics?.threshold),
  };
}

export class Settings {
  private cache = new Map<string, Promise<LoftqSettings>>();
  supported = false;

  constructor(private readonly connection: Connection) {}

  get(scopeUri: string): Promise<LoftqSettings> {
    if (!this.supported) return Promise.resolve(normalizeSettings(undefined));
    let s = this.cache.get(scopeUri);
    if (!s) {
      s = this.connection.workspace
        .getConfiguration({ scopeUri, section: 'loftq' })
        .then(normalizeSettings, () => normalizeSettings(undefined));
      this.cache.set(scopeUri, s);
    }
    return s;
  }

  clear(): void {
    this.cache.clear();
  }
}
