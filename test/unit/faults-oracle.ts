// The judge of an output folder after a fault (kill -9, disk full, permissions): it must
// hold the complete result, a resumable journal, or nothing — never a file that parses
// but is wrong. "Right" is an uninterrupted reference run with the same arguments: every
// visible file present must equal the reference's (safetensors byte for byte; the JSON
// files up to the output path and timings), and a present report means every file is there
// and its relError agrees with the files. Used by the CLI and language-server kill tests.
import { relErrorOf } from '../../server/src/tools/fuzz/quantize-consumer';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint, readTensorF32 } from '../../server/src/checkpoint';
import type { Report } from '../../server/src/protocol/lsp_ext';

export type State = 'complete' | 'journal' | 'nothing';

export const JOURNAL = '.loftq-journal';
export const REPORT = 'loftq-report.json';

/** Every file under `dir`, relative, with `/` separators. */
export function listTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true, withFileTypes: true }) as fs.Dirent[])
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name)).split(path.sep).join('/'))
    .sort();
}

const isTemp = (f: string) => path.basename(f).startsWith('.') && f.endsWith('.tmp');
const isLock = (f: string) => /^\.loftq\.lock/.test(f);
const visible = (f: string) => !isTemp(f) && !isLock(f) && !f.startsWith(`${JOURNAL}/`);

/** JSON with timings and the output folder (which differs per run) taken out. */
function normalizeJson(file: string, text: string): unknown {
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'seconds' && k !== 'phases' && k !== 'gemmGflop' && k !== 'base_model_name_or_path').map(([k, x]) => [k, strip(x)]));
    return v;
  };
  try {
    return strip(JSON.parse(text));
  } catch (e) {
    assert.fail(`${file} does not parse: ${(e as Error).message}`);
  }
}

export class Reference {
  readonly files = new Map<string, Buffer>();
  constructor(readonly dir: string, readonly checkpoint: string) {
    for (const f of listTree(dir)) {
      assert.ok(visible(f), `the reference run left ${f}`);
      this.files.set(f, fs.readFileSync(path.join(dir, f)));
    }
    assert.ok(this.files.has(REPORT));
  }

  get report(): Report {
    return JSON.parse(this.files.get(REPORT)!.toString('utf8'));
  }

  /** Asserts that `file` (relative) in `out` is the reference's, parsed or byte for byte. */
  same(out: string, file: string): void {
    const want = this.files.get(file);
    assert.ok(want, `${file} is not an output of the reference run`);
    const got = fs.readFileSync(path.join(out, file));
    if (file.endsWith('.json')) assert.deepEqual(normalizeJson(file, got.toString('utf8')), normalizeJson(file, want.toString('utf8')), `${file} differs from the reference`);
    else assert.ok(got.equals(want), `${file} differs from the reference (${got.length} vs ${want.length} bytes)`);
  }
}

/** ‖W − Q − B·A‖/‖W‖ from the files: W from the input, Q from the backbone, A and B from the adapter. */
export async function relErrorFromFiles(checkpoint: string, out: string, name: string): Promise<number> {
  const input = await openCheckpoint(checkpoint);
  const backbone = await openCheckpoint(path.join(out, 'model.safetensors'));
  const adapter = await openCheckpoint(path.join(out, 'loftq_init', 'adapter_model.safetensors'));
  const module = name.replace(/\.weight$/, '');
  const t = input.byName.get(name)!;
  const [rows, cols] = t.shape;
  const w = await readTensorF32(t);
  const q = await readTensorF32(backbone.byName.get(name)!);
  const a = await readTensorF32(adapter.byName.get(`base_model.model.${module}.lora_A.weight`)!);
  const b = await readTensorF32(adapter.byName.get(`base_model.model.${module}.lora_B.weight`)!);
  return relErrorOf(w, q, a, b, rows, cols, a.length / cols);
}

/** Classifies `out` and asserts that it is one of the three allowed states. */
export async function judge(out: string, ref: Reference, checkMatrices: string[] = []): Promise<State> {
  const files = listTree(out);
  for (const f of files) {
    if (f.startsWith(`${JOURNAL}/`) && !isTemp(f)) {
      // A journal entry exists whole or not at all, and carries its matrix's report.
      const e = await openCheckpoint(path.join(out, f)).catch((err: Error) => assert.fail(`journal entry ${f} does not open: ${err.message}`));
      assert.equal(typeof JSON.parse(e.metadata.report).relError, 'number');
    } else if (visible(f)) ref.same(out, f);
  }
  if (files.includes(REPORT)) {
    const missing = [...ref.files.keys()].filter((f) => !files.includes(f));
    assert.deepEqual(missing, [], 'a report is present, so every output file must be');
    const report: Report = JSON.parse(fs.readFileSync(path.join(out, REPORT), 'utf8'));
    for (const name of checkMatrices) {
      const m = report.matrices.find((x) => x.name === name)!;
      const rel = await relErrorFromFiles(ref.checkpoint, out, name);
      assert.ok(Math.abs(rel - m.relError) < 1e-5, `${name}: report says ${m.relError}, the files give ${rel}`);
    }
    return 'complete';
  }
  if (fs.existsSync(path.join(out, JOURNAL))) return 'journal';
  assert.deepEqual(files.filter(visible), [], 'no report and no journal, so no output file may be there');
  return 'nothing';
}
