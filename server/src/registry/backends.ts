// Compute backends and output formats.

/** The backends the engine can run on (tfjs's, and `native`: our C kernels where they were
 *  built); `auto` tries AUTO_ORDER. */
export const BACKEND_NAMES = ['wasm', 'native', 'webgpu', 'tensorflow', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export type BackendChoice = BackendName | 'auto';
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', ...BACKEND_NAMES];
/** `auto`: the first that starts, fastest first. native before webgpu: where the module was
 *  built it is the fastest measured here (no GPU figure beats it), and probing Dawn costs every
 *  thread ~60 MB and prints its warnings; webgpu's software adapters are passed by anyway. */
export const AUTO_ORDER: readonly BackendName[] = ['tensorflow', 'native', 'webgpu', 'wasm', 'cpu'];
/** The CLI, the engine's API and the editor alike start at `auto`: native where
 *  dist/loftq_native.node was built (1.6–2.5× wasm on this project's machine), wasm otherwise;
 *  every report and summary line names the backend that ran. */
export const DEFAULT_CLI_BACKEND: BackendChoice = 'auto';
export const DEFAULT_EDITOR_BACKEND: BackendChoice = 'auto';

export function isBackendChoice(b: unknown): b is BackendChoice {
  return typeof b === 'string' && (BACKEND_CHOICES as readonly string[]).includes(b);
}

export const NONFINITE_POLICIES = ['refuse', 'skip'] as const;
export type NonFinitePolicy = (typeof NONFINITE_POLICIES)[number];
