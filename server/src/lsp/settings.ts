// `loftq.*` settings per resource through workspace/configuration, validated, with the
// built-in defaults when the client has no configuration support (e.g. a bare stdio client).

import type { Connection } from 'vscode-languageserver';
import { DEFAULT_SETTINGS, SUPPORTED_BITS } from '../protocol/lsp_ext';
import type { BackendChoice, MatrixSettings } from '../protocol/lsp_ext';

export interface LoftqSettings {
  backend: BackendChoice;
  /** 0: the engine decides (number of cores). */
  workers: number;
  defaults: MatrixSettings;
  /** LoftQ relative error above which a worst-matrices diagnostic is a warning. */
  threshold: number;
}

export const DEFAULT_THRESHOLD = 0.3;

const BACKENDS = ['auto', 'wasm', 'webgpu', 'tensorflow', 'cpu'];

export function normalizeSettings(raw: unknown): LoftqSettings {
  const r = (raw && typeof raw === 'object' ? raw : {}) as Record<string, any>;
  const d = (r.defaults && typeof r.defaults === 'object' ? r.defaults : {}) as Record<string, unknown>;
  const int = (v: unknown, min: number, dflt: number) => (typeof v === 'number' && Number.isInteger(v) && v >= min ? v : dflt);
  const threshold = r.diagnostics?.threshold;
  return {
    backend: BACKENDS.includes(r.backend) ? r.backend : 'auto',
    workers: int(r.workers, 0, 0),
    defaults: {
      bits: (SUPPORTED_BITS as readonly unknown[]).includes(d.bits) ? (d.bits as number) : DEFAULT_SETTINGS.bits,
      rank: int(d.rank, 1, DEFAULT_SETTINGS.rank),
      iters: int(d.iters, 1, DEFAULT_SETTINGS.iters),
      quantizer: d.quantizer === 'uniform' || d.quantizer === 'nf' ? d.quantizer : DEFAULT_SETTINGS.quantizer,
      blockSize: int(d.blockSize, 1, DEFAULT_SETTINGS.blockSize),
    },
    threshold: typeof threshold === 'number' && threshold >= 0 ? threshold : DEFAULT_THRESHOLD,
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
      s = this.connection.workspace.getConfiguration({ scopeUri, section: 'loftq' }).then(normalizeSettings, () => normalizeSettings(undefined));
      this.cache.set(scopeUri, s);
    }
    return s;
  }

  clear(): void {
    this.cache.clear();
  }
}
