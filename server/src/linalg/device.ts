// What the engine needs from a device (every backend, tfjs's or native): hold a matrix there
// (uploaded once per LoftQ iteration) and multiply it by thin blocks.
import type { BackendName } from '../registry';
import type { KernelPool } from '../kernels/pool';

export interface DeviceMatrix {
  readonly rows: number;
  readonly cols: number;
  /** this · b, with b row-major (cols × n); returns row-major rows × n — written into `out`
   *  (rows × n) when given, which is returned (callers reuse buffers: fresh pages cost). */
  times(b: Float32Array, n: number, out?: Float32Array): Promise<Float32Array>;
  dispose(): void;
}

export interface MatmulBackend {
  readonly name: BackendName;
  /** A matrix for products. The caller does not write `a` until the result is disposed:
   *  some backends (cpu, native on shared memory) read it in place. */
  hold(a: Float32Array, rows: number, cols: number): Promise<DeviceMatrix>;
  /** GEMM flops issued so far (for throughput figures). */
  flops: number;
  /** Helper threads that run kernels on parts of a workspace (the split backend's workers). */
  readonly kernels?: KernelPool;
}
