// The plan file's `calibration` block: calibrated LoftQ's source and options, with the same
// names and meanings as `QuantizeParams.calibration` (CalibrationParams) and, field by field,
// as `loftq quantize`'s options:
//
//   "file": "calib.json" | "calib.txt"          --calib FILE (relative to the plan)
//   "generate": { "sequences": N, "length": LEN, --calib-generate N,LEN
//                 "seed": S }                    --calib-seed S
//   "imatrix": "model.imatrix"                   --imatrix FILE (relative to the plan)
//   "ridge": λ                                   --calib-ridge λ
//   "products": "auto" | "float32"               --calib-products P
//
// Ranges are the registry's (CALIBRATION_SPECS); problems are located by JSON path, like the
// rest of parsePlan's. `calibrationArgs` writes the CLI options that mean the same block.

import * as path from 'node:path';
import type { CalibrationParams } from '../protocol/lsp_ext';
import { CALIBRATION_SPECS, valueProblem } from '../registry';

type JsonPath = (string | number)[];

export interface CalibrationProblem {
  message: string;
  path: JsonPath;
}

/** The sources; a block names exactly one. */
export const CALIBRATION_SOURCES = ['generate', 'file', 'imatrix'] as const;
const KEYS = new Set<string>([...CALIBRATION_SOURCES, 'ridge', 'products']);
const GENERATE_KEYS = ['sequences', 'length', 'seed'] as const;
const GENERATE_SPECS = {
  sequences: CALIBRATION_SPECS.generateSequences,
  length: CALIBRATION_SPECS.generateLength,
  seed: CALIBRATION_SPECS.generateSeed,
} as const;

/** Token files are JSON ids or `.txt`; anything else is read as JSON (model/calibTokens.ts). */
export const TOKEN_FILE_EXTENSIONS = ['.json', '.txt'];

/** The block checked; `params` is set when it has no problem (paths as written, relative to the plan). */
export function parseCalibration(raw: unknown): { params?: CalibrationParams; problems: CalibrationProblem[] } {
  const at = (...p: JsonPath): JsonPath => ['calibration', ...p];
  const problems: CalibrationProblem[] = [];
  const bad = (message: string, ...p: JsonPath) => problems.push({ message, path: at(...p) });
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    const shapes = '{ "generate": { "sequences": N, "length": LEN } }, { "file": … } or { "imatrix": … }';
    bad(`'calibration' must be an object: ${shapes}`);
    return { problems };
  }
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!KEYS.has(k)) bad(`unknown calibration key '${k}' (${[...KEYS].map((x) => `'${x}'`).join(', ')})`, k);
  const sources = CALIBRATION_SOURCES.filter((k) => o[k] !== undefined);
  if (sources.length === 0) bad("'calibration' needs one source: 'generate', 'file' or 'imatrix'");
  for (const k of sources.slice(1))
    bad(`'calibration' takes one source; '${sources[0]}' is already given, remove '${k}' or it`, k);
  const p: CalibrationParams = {};
  for (const k of ['file', 'imatrix'] as const) {
    if (o[k] === undefined) continue;
    if (typeof o[k] !== 'string' || !(o[k] as string).trim())
      bad(`'${k}' must be the path of a file, relative to this plan`, k);
    else p[k] = o[k] as string;
  }
  if (o.generate !== undefined) {
    const g = o.generate as Record<string, unknown>;
    if (g === null || typeof g !== 'object' || Array.isArray(g)) {
      bad('\'generate\' must be { "sequences": N, "length": LEN } (and an optional "seed")', 'generate');
    } else {
      for (const k of Object.keys(g))
        if (!(GENERATE_KEYS as readonly string[]).includes(k))
          bad(`unknown key '${k}' in 'generate' ('sequences', 'length', 'seed')`, 'generate', k);
      for (const k of GENERATE_KEYS) {
        if (g[k] === undefined) {
          if (k !== 'seed') bad(`'generate' needs '${k}' (${GENERATE_SPECS[k].description})`, 'generate');
          continue;
        }
        const expected = valueProblem(GENERATE_SPECS[k], g[k]);
        if (expected) bad(`'${k}' must be ${expected} (got ${JSON.stringify(g[k])})`, 'generate', k);
      }
      p.generate = { sequences: g.sequences as number, length: g.length as number };
      if (g.seed !== undefined) p.generate.seed = g.seed as number;
    }
  }
  if (o.ridge !== undefined) {
    const expected = valueProblem(CALIBRATION_SPECS.ridge, o.ridge);
    if (expected) bad(`'ridge' must be ${expected} (got ${JSON.stringify(o.ridge)})`, 'ridge');
    else p.ridge = o.ridge as number;
  }
  if (o.products !== undefined) {
    const expected = valueProblem(CALIBRATION_SPECS.products, o.products, true);
    if (expected) bad(`'products' must be ${expected}`, 'products');
    else if (o.imatrix !== undefined)
      bad("'products' choose how the calibration pass runs; an imatrix has no pass", 'products');
    else p.products = o.products as CalibrationParams['products'];
  }
  return problems.length ? { problems } : { params: p, problems };
}

/** The block with its files resolved against the plan's folder (what a run of the plan reads). */
export function resolveCalibration(planFile: string, c: CalibrationParams): CalibrationParams {
  const dir = path.dirname(planFile);
  return {
    ...c,
    ...(c.file !== undefined ? { file: path.resolve(dir, c.file) } : {}),
    ...(c.imatrix !== undefined ? { imatrix: path.resolve(dir, c.imatrix) } : {}),
    ...(c.generate ? { generate: { ...c.generate } } : {}),
  };
}

export { calibrationArgs, describeCalibration } from '../registry';
