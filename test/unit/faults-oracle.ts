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
    .map((e) =>
      path
        .relative(dir, path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name))
        .split(path.sep)
        .join('/'),
    )
    .sort();
}

const isTemp = (f: string) => path.basename(f).startsWith('.') && f.endsWith('.tmp');
const isLock = (f: string) => /^\.loftq\.lock/.test(f);
const visible = (f: string) => !isTemp(f) && !isLock(f) && !f.startsWith(`${JOURNAL}/`);

/** JSON with timings and the output folder (which differs per run) taken out. */
function normalizeJson(file: string, text: string): unknown {
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object')
      return Object.fromEntries(
        Object.entries(v)
          .filter(([k]) => k !== 'seconds' && k !== 'phases' && k !== 'gemmGflop' && k !== 'base_model_name_or_path')
          .map(([k, x]) => [k, strip(x)]),
      );
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
  constructor(
    readonly dir: string,
    readonly checkpoint: string,
  ) {
    for (const f of listTree(dir)) {
      assert.ok(visible(f), `the reference run left ${f}`);
      this.files.set(f, fs.readFileSync(path.join(dir, f)));
    }
    assert.ok(this.files.has(REPORT));
  }

  get report(): Report {
    return JSON.parse(this.files.get(REPORT)!.toString('utf8'));
  }

  /** Whether `file` (relative) in `out` is the reference's, parsed or byte for byte. */
  matches(out: string, file: string): boolean {
    const want = this.files.get(file);
    if (!want) return false;
    const got = fs.readFileSync(path.join(out, file));
    if (!file.endsWith('.json')) return got.equals(want);
    try {
      assert.deepEqual(normalizeJson(file, got.toString('utf8')), normalizeJson(file, want.toString('utf8')));
      return true;
    } catch {
      return false;
    }
  }

  /** Asserts that `file` (relative) in `out` is the reference's, parsed or byte for byte. */
  same(out: string, file: string): void {
    const want = this.files.get(file);
    assert.ok(want, `${file} is not an output of the reference run`);
    const got = fs.readFileSync(path.join(out, file));
    if (file.endsWith('.json'))
      assert.deepEqual(
        normalizeJson(file, got.toString('utf8')),
        normalizeJson(file, want.toString('utf8')),
        `${file} differs from the reference`,
      );
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
      const e = await openCheckpoint(path.join(out, f)).catch((err: Error) =>
        assert.fail(`journal entry ${f} does not open: ${err.message}`),
      );
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

/** The files a loader starts from, with the files it then reads: transformers (an index and
 *  every shard it lists, or model.safetensors), PEFT (adapter_config + adapter weights). */
function loadableUnits(out: string, files: string[]): string[][] {
  const units: string[][] = [];
  const INDEX = 'model.safetensors.index.json';
  if (files.includes('model.safetensors')) units.push(['model.safetensors']);
  if (files.includes(INDEX)) {
    const shards = [
      ...new Set(
        Object.values(JSON.parse(fs.readFileSync(path.join(out, INDEX), 'utf8')).weight_map as Record<string, string>),
      ),
    ];
    if (shards.every((f) => files.includes(f))) units.push([INDEX, ...shards]);
  }
  const adapter = ['loftq_init/adapter_config.json', 'loftq_init/adapter_model.safetensors'];
  if (adapter.every((f) => files.includes(f))) units.push(adapter);
  return units;
}

/** Judges `out` after a fault of a run over an older result made with other settings
 *  (`refs`: every run that may have written there). Each visible file must be some run's;
 *  with a report, the folder is exactly one run's files; without one, every loadable unit
 *  present comes from one and the same run (no old adapters or shards beside new ones), and
 *  a journal is there (else nothing visible may be). Returns the state and the run. */
export async function judgeAmong(out: string, refs: Reference[]): Promise<{ state: State; run?: number }> {
  const files = listTree(out);
  const vis = files.filter(visible);
  const runsOf = (f: string) => refs.map((r, i) => (r.matches(out, f) ? i : -1)).filter((i) => i >= 0);
  for (const f of vis) assert.ok(runsOf(f).length > 0, `${f} is no run's file`);
  for (const f of files.filter((x) => x.startsWith(`${JOURNAL}/`) && !isTemp(x) && x.endsWith('.safetensors'))) {
    await openCheckpoint(path.join(out, f)).catch((err: Error) =>
      assert.fail(`journal entry ${f} does not open: ${err.message}`),
    );
  }
  if (vis.includes(REPORT)) {
    const run = runsOf(REPORT)[0];
    assert.deepEqual(
      vis,
      [...refs[run].files.keys()].sort(),
      `a report of run ${run} is present, so the folder must hold exactly its files`,
    );
    for (const f of vis) assert.ok(refs[run].matches(out, f), `${f} is not run ${run}'s`);
    return { state: 'complete', run };
  }
  const units = loadableUnits(out, vis);
  const common = refs.map((_, i) => i).filter((i) => units.flat().every((f) => refs[i].matches(out, f)));
  assert.ok(
    units.length === 0 || common.length > 0,
    'loadable files of different runs side by side: ' +
      JSON.stringify(units.map((u) => u.map((f) => `${f}:${runsOf(f)}`))),
  );
  if (fs.existsSync(path.join(out, JOURNAL))) return { state: 'journal' };
  assert.deepEqual(vis, [], 'no report and no journal, so no output file may be there');
  return { state: 'nothing' };
}
