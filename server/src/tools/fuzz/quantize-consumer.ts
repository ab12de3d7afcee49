// Runs the real `quantizeCheckpoint` (in-process, cpu backend, tiny settings) on every
// accepted checkpoint that has a quantizable matrix, and checks the written files against
// the input — independently of the engine's own bookkeeping:
//   - a matrix with NaN/Inf is refused by name (InputError naming that tensor) under the
//     default policy, and nothing visible is written; with onNonFinite 'skip' it is marked
//     skipped in the report and copied byte for byte, and no adapter is written for it;
//   - every quantized matrix and adapter in the output files is finite, and the report's
//     relError equals ‖W − Q − B·A‖/‖W‖ recomputed from the files;
//   - every other tensor is copied byte for byte, and the output holds no file outside
//     the chosen folder (tensor names such as `../../escape.weight` are keys, not paths).
// Any broken invariant is a plain Error, which the runner counts as a crash.

import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Checkpoint, openCheckpoint, readTensorBytes, readTensorF32 } from '../../checkpoint';
import { InputError } from '../../base/errors';
import { REPORT_FILE, quantizeCheckpoint } from '../../engine/run';
import { isQuantizable } from '../../engine/targets';
import { ADAPTER_DIR, adapterKey } from '../../export/assemble';
import type { MatrixSettings, Report } from '../../protocol/lsp_ext';
import type { Consumer } from './runner';

const SETTINGS: MatrixSettings = { bits: 2, rank: 1, iters: 1, quantizer: 'nf', blockSize: 8 };

function fail(msg: string): never {
  throw new Error(`invariant: ${msg}`);
}

const finite = (x: Float32Array) => x.every((v) => Number.isFinite(v));
const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i]);

/** Every path under `dir`, relative to it. */
async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string) => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(path.join(d, e.name), r);
      else out.push(r);
    }
  };
  await walk(dir, '');
  return out.sort();
}

/** Relative error recomputed in float64 from what the files hold. */
export function relErrorOf(
  w: Float32Array,
  q: Float32Array,
  a: Float32Array,
  b: Float32Array,
  rows: number,
  cols: number,
  r: number,
): number {
  let err = 0,
    norm = 0;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let low = 0;
      for (let k = 0; k < r; k++) low += b[i * r + k] * a[k * cols + j];
      const x = w[i * cols + j];
      err += (x - q[i * cols + j] - low) ** 2;
      norm += x * x;
    }
  }
  return norm > 0 ? Math.sqrt(err / norm) : 0;
}

async function checkOutput(
  ck: Checkpoint,
  out: string,
  report: Report,
  nonFinite: Set<string>,
  targets: string[],
): Promise<void> {
  const names = report.matrices.map((m) => m.name);
  if (names.join('\0') !== targets.join('\0')) fail(`report lists [${names}], expected [${targets}]`);
  const skipped = report.matrices.filter((m) => m.skipped).map((m) => m.name);
  if (skipped.join('\0') !== targets.filter((t) => nonFinite.has(t)).join('\0'))
    fail(`skipped [${skipped}], but the matrices with NaN/Inf are [${[...nonFinite]}]`);

  const expectedFiles =
    ck.kind === 'file'
      ? ['model.safetensors']
      : [...ck.headers.map((h) => path.basename(h.file)), 'model.safetensors.index.json'];
  const files = await listTree(out);
  const want = [
    ...expectedFiles,
    `${ADAPTER_DIR}/adapter_config.json`,
    `${ADAPTER_DIR}/adapter_model.safetensors`,
    REPORT_FILE,
  ].sort();
  if (files.join('\n') !== want.join('\n')) fail(`output folder holds [${files}], expected [${want}]`);

  const written = await openCheckpoint(ck.kind === 'file' ? path.join(out, 'model.safetensors') : out);
  const adapters = await openCheckpoint(path.join(out, ADAPTER_DIR, 'adapter_model.safetensors'));
  const quantized = new Map(report.matrices.filter((m) => !m.skipped).map((m) => [m.name, m]));
  const adapterNames = adapters.tensors.map((t) => t.name).sort();
  const wantAdapters = [...quantized.keys()].flatMap((n) => [adapterKey(n, 'A'), adapterKey(n, 'B')]).sort();
  if (adapterNames.join('\0') !== wantAdapters.join('\0'))
    fail(`adapter keys [${adapterNames}], expected [${wantAdapters}]`);
  if (written.tensors.length !== ck.tensors.length)
    fail(`output has ${written.tensors.length} tensors, input ${ck.tensors.length}`);
  for (const t of ck.tensors) {
    const o = written.byName.get(t.name);
    if (!o || o.dtype !== t.dtype || o.shape.join() !== t.shape.join())
      fail(`output tensor '${t.name}' missing or reshaped`);
    const m = quantized.get(t.name);
    if (!m) {
      if (!sameBytes(await readTensorBytes(o), await readTensorBytes(t)))
        fail(`'${t.name}' is not quantized but was not copied unchanged`);
      continue;
    }
    const [rows, cols] = t.shape;
    const q = await readTensorF32(o);
    const a = await readTensorF32(adapters.byName.get(adapterKey(t.name, 'A'))!);
    const b = await readTensorF32(adapters.byName.get(adapterKey(t.name, 'B'))!);
    if (!finite(q) || !finite(a) || !finite(b))
      fail(`finite weights of '${t.name}' gave non-finite Q or adapters in the files`);
    const r = a.length / cols;
    if (r !== m.rank || b.length !== rows * r) fail(`adapter shapes of '${t.name}' do not match rank ${m.rank}`);
    const rel = relErrorOf(await readTensorF32(t), q, a, b, rows, cols, r);
    if (!Number.isFinite(m.relError) || Math.abs(rel - m.relError) > 1e-4 * Math.max(1, rel))
      fail(`report relError of '${t.name}' is ${m.relError}, the files give ${rel}`);
  }
}

/** Options the consumer passes; exported so a test can run the same configuration. */
export const FUZZ_RUN = { settings: SETTINGS, targets: ['**'], workers: 'in-thread' as const, backend: 'cpu' as const };

export function quantizeConsumer(): Consumer {
  return async (p, caseDir) => {
    const ck = await openCheckpoint(p);
    const targets = ck.tensors.filter(isQuantizable);
    if (!targets.length) return ['quantize: no 2-D .weight matrix'];
    const nonFinite = new Set<string>();
    for (const t of targets) if (!finite(await readTensorF32(t))) nonFinite.add(t.name);

    if (nonFinite.size) {
      const refused = path.join(caseDir, 'out-refuse');
      let error: unknown;
      try {
        await quantizeCheckpoint(p, { ...FUZZ_RUN, out: refused });
      } catch (e) {
        error = e;
      }
      if (!(error instanceof InputError))
        fail(
          `NaN/Inf in [${[...nonFinite]}] was not refused with an InputError ` +
            `(got ${error === undefined ? 'success' : String(error)})`,
        );
      if (!nonFinite.has(error.tensor ?? '')) fail(`the refusal names '${error.tensor}', not a matrix with NaN/Inf`);
      if (!/NaN\/Inf/.test(error.message) || /[\n\r]/.test(error.message))
        fail(`refusal message is not one line naming NaN/Inf: ${error.message}`);
      // A refused run removes the folder it made (or never makes it): that leaves nothing too.
      const left = existsSync(refused) ? await listTree(refused) : [];
      const visible = left.filter((f) => !f.startsWith('.'));
      if (visible.length) fail(`a refused run left [${visible}]`);
    }
    const out = path.join(caseDir, 'out');
    const { report } = await quantizeCheckpoint(p, { ...FUZZ_RUN, out, onNonFinite: 'skip' });
    await checkOutput(
      ck,
      out,
      report,
      nonFinite,
      targets.map((t) => t.name),
    );
    const outside = (await fsp.readdir(caseDir)).filter((f) => !['ck', 'out', 'out-refuse', 'loftq.json'].includes(f));
    const siblings = (await fsp.readdir(path.dirname(caseDir))).filter((f) => !/^case-\d+$/.test(f));
    if (outside.length || siblings.length)
      fail(`files appeared outside the output folder: [${[...outside, ...siblings]}]`);
    return [
      `quantize: ${nonFinite.size ? 'NaN/Inf refused by name, then skipped' : 'files checked'}`,
      ...(targets.some((t) => /\//.test(t.name)) ? ['quantize: tensor name with / kept inside'] : []),
    ];
  };
}
