// Messages between the split backend (linalg/splitBackend.ts) and its GEMM worker threads.
import type { BackendChoice, BackendName } from '../protocol/lsp_ext';
import type { WasmMemory } from '../kernels/kernels';
import type { KernelName } from '../kernels/pool';

export type ToGemmWorker =
  | { type: 'init'; id: number; backend: BackendChoice }
  | { type: 'hold'; id: number; handle: number; a: Float32Array; rows: number; cols: number }
  | { type: 'times'; id: number; handle: number; b: Float32Array; n: number }
  | { type: 'drop'; id: number; handle: number }
  | { type: 'kernel'; id: number; memory: WasmMemory; name: KernelName; args: number[] };

/** The reply to request `id`: an error, or what the request produced. */
export interface FromGemmWorker {
  id: number;
  error?: string;
  backend?: BackendName;
  out?: Float32Array;
  /** A kernel's return value. */
  value?: number;
}
