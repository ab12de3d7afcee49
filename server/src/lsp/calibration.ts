// The plan file's `calibration` block in the editor: what a run of it would meet on disk (its
// file missing, a folder, an importance matrix given as tokens; a model the forward pass cannot
// run), as diagnostics at the key they are about, and hovers that say what each field does —
// with the `loftq quantize` option that means the same (plan/calibration.ts).

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Hover } from 'vscode-languageserver';
import { CheckpointError } from '../checkpoint';
import { readModelConfig } from '../model/config';
import { calibrationArgs, describeCalibration, resolveCalibration } from '../plan/calibration';
import type { JsonPath } from '../plan/planfile';
import type { CalibrationParams, PlanFile } from '../protocol/lsp_ext';
import { CALIBRATION_SPECS, heldOutSeed } from '../registry';
import type { PathAt } from './jsonRanges';
import type { CheckpointFacts, PlanDoc } from './planDoc';

export interface CalibrationFileProblem {
  severity: 'error' | 'warning';
  message: string;
  path: JsonPath;
  /** Set when the value belongs under the other key (a quick fix moves it). */
  moveTo?: 'file' | 'imatrix';
}

const IMATRIX_EXT = /\.(gguf|dat|imatrix)$/i;
const TOKEN_EXT = /\.(json|txt)$/i;

/** Why the model behind `checkpoint` cannot run a forward pass (config.json), or undefined. */
export async function forwardPassProblem(checkpoint: string): Promise<string | undefined> {
  const st = await fsp.stat(checkpoint).catch(() => undefined);
  const folder = st?.isDirectory() ? checkpoint : path.dirname(checkpoint);
  try {
    await readModelConfig(folder);
    return undefined;
  } catch (e) {
    return e instanceof CheckpointError ? e.message : (e as Error).message;
  }
}

async function fileProblem(file: string): Promise<string | undefined> {
  const st = await fsp.stat(file).catch((e: NodeJS.ErrnoException) => e);
  if (st instanceof Error) return st.code === 'ENOENT' ? 'does not exist' : `cannot be read (${st.code})`;
  if (st.isDirectory()) return 'is a folder, not a file';
  if (!st.isFile()) return 'is not a regular file';
  return undefined;
}

/** What a run of the plan's calibration would meet before any work: its file, and the model. */
export async function calibrationFileProblems(
  planPath: string,
  plan: PlanFile,
  checkpoint: CheckpointFacts | undefined,
): Promise<CalibrationFileProblem[]> {
  const c = plan.calibration;
  if (!c) return [];
  const out: CalibrationFileProblem[] = [];
  const resolved = resolveCalibration(planPath, c);
  for (const key of ['file', 'imatrix'] as const) {
    const given = c[key];
    if (given === undefined) continue;
    const why = await fileProblem(resolved[key]!);
    if (why) {
      const where = path.isAbsolute(given) ? '' : ` (${resolved[key]})`;
      out.push({
        severity: 'error',
        message: `calibration ${key} '${given}' ${why}${where}`,
        path: ['calibration', key],
      });
      continue;
    }
    if (key === 'file' && IMATRIX_EXT.test(given))
      out.push({
        severity: 'error',
        message:
          `'${path.basename(given)}' looks like an importance matrix; ` +
          'token files are .json ids or .txt text: use "imatrix"',
        path: ['calibration', 'file'],
        moveTo: 'imatrix',
      });
    if (key === 'imatrix' && TOKEN_EXT.test(given))
      out.push({
        severity: 'error',
        message: `'${path.basename(given)}' looks like tokens; an imatrix is llama.cpp's GGUF or .dat: use "file"`,
        path: ['calibration', 'imatrix'],
        moveTo: 'file',
      });
  }
  // Token sources run the original model; an imatrix is read against its config too.
  if (checkpoint?.ok) {
    const why = await forwardPassProblem(checkpoint.path);
    if (why) {
      const source = c.generate ? 'generate' : c.file !== undefined ? 'file' : 'imatrix';
      out.push({ severity: 'error', message: `calibration needs the model: ${why}`, path: ['calibration', source] });
    }
  }
  return out;
}

const GENERATE_HELP: Record<string, string> = {
  sequences: 'Sequences to sample from the original model',
  length: 'Tokens per sampled sequence, BOS included',
  seed: 'Seed of the sampler (mulberry32; from BOS, temperature 1)',
};

function range(spec: { min: number; max?: number; default: number | string }): string {
  return spec.max === undefined
    ? `≥ ${spec.min}, default ${spec.default}`
    : `${spec.min}–${spec.max}, default ${spec.default}`;
}

/** Hover anywhere in the `calibration` block: what it does, the hovered field, the CLI's words. */
export function calibrationHover(p: PlanDoc, at: PathAt, span: Hover['range']): Hover | null {
  if (at.path[0] !== 'calibration') return null;
  const c: CalibrationParams | undefined = p.parsed.plan.calibration;
  const key = String(at.path[at.path.length - 1] ?? '');
  const inGenerate = at.path[1] === 'generate' && at.path.length > 2;
  const lines: string[] = [];
  lines.push(
    c
      ? `**Calibrated LoftQ** — ${describeCalibration(c)}`
      : '**Calibrated LoftQ** — this block has problems (see the diagnostics); a run with it is refused',
  );
  lines.push('');
  const s = CALIBRATION_SPECS;
  if (inGenerate && GENERATE_HELP[key]) {
    const spec = key === 'sequences' ? s.generateSequences : key === 'length' ? s.generateLength : s.generateSeed;
    lines.push(`\`${key}\`: ${GENERATE_HELP[key]} (${range(spec)}).`);
  } else if (key === 'generate')
    lines.push('`generate`: sample `sequences` × `length` tokens from the original model (no data needed).');
  else if (key === 'file')
    lines.push(
      "`file`: token ids as JSON (`[[1, 403, …], …]`) or a `.txt` tokenized with the checkpoint's tokenizer.json, " +
        'relative to this plan.',
    );
  else if (key === 'imatrix')
    lines.push("`imatrix`: llama.cpp's importance matrix (GGUF or .dat): diagonal statistics, no forward pass.");
  else if (key === 'ridge')
    lines.push(`\`ridge\`: λ relative to mean(diag G) in G + λI (${range(s.ridge)}); larger is closer to plain LoftQ.`);
  else if (key === 'products')
    lines.push('`products`: `auto` (bf16 on the native backend with AVX512-BF16, else float32) or `float32`.');
  else
    lines.push(
      'Fits each adapter in the layer output metric ‖(W − Q − AB)·S‖ of real inputs instead of ‖W − Q − AB‖: ' +
        'the run reports output errors, and the heatmap can colour by them.',
    );
  if (c) {
    lines.push('', `Same as \`loftq quantize --plan … ${calibrationArgs(c).join(' ')}\`.`);
    if (c.generate) {
      const seed = heldOutSeed(c.generate.seed ?? s.generateSeed.default);
      lines.push('', `"Evaluate Model Outputs" samples its held-out tokens with seed ${seed}, not this one.`);
    }
  }
  return { range: span, contents: { kind: 'markdown', value: lines.join('\n') } };
}
