// Compute backends and output formats.

/** The backends the engine can run on (tfjs's, and `native`: our C kernels where they were
 *  built); `auto` tries AUTO_ORDER. */
export const BACKEND_NAMES = ['wasm', 'native', 'webgpu', 'tensorflow', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export type BackendChoice = BackendName | 'auto';
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', ...BACKEND_NAMES];
/** `auto`: the first that starts, fastest first. */
export const AUTO_ORDER: readonly BackendName[] = ['tensorflow', 'webgpu', 'native', 'wasm', 'cpu'];
/** The CLI runs the embedded wasm backend unless told otherwise (reproducible, no native
 *  module); the editor's `loftq.backend` setting starts at `auto`. */
export const DEFAULT_CLI_BACKEND: BackendChoice = 'wasm';
export const DEFAULT_EDITOR_BACKEND: BackendChoice = 'auto';

export function isBackendChoice(b: unknown): b is BackendChoice {
  return typeof b === 'string' && (BACKEND_CHOICES as readonly string[]).includes(b);
}

export const NONFINITE_POLICIES = ['refuse', 'skip'] as const;
export type NonFinitePolicy = (typeof NONFINITE_POLICIES)[number];
