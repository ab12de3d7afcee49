// The plan file `loftq.json` (JSON with comments): parsing with structural problems
// located by JSON path, and resolution of each matrix's settings (defaults, then
// overrides in order — later entries win).

import * as path from 'node:path';
import { parse as parseJsonc, ParseError, printParseErrorCode } from 'jsonc-parser';
import type { PlanFile, PlanOverride } from '../protocol/lsp_ext';
import {
  DEFAULT_SETTINGS,
  MATRIX_SETTING_KEYS,
  MATRIX_SETTING_SPECS,
  RUN_SETTING_SPECS,
  valueProblem,
} from '../registry';
import type { MatrixSettingKey, MatrixSettings } from '../registry';
import { compileGlob, globMatches, CompiledGlob } from './glob';
import { parseCalibration } from './calibration';

export type JsonPath = (string | number)[];

export interface PlanProblem {
  severity: 'error' | 'warning';
  message: string;
  path: JsonPath;
  /** Character offset, for syntax errors (no path yet). */
  offset?: number;
  length?: number;
}

export interface ParsedPlan {
  plan: PlanFile;
  problems: PlanProblem[];
  /** For each entry of plan.overrides, its index in the file's `overrides` array (invalid entries are dropped). */
  overrideIndex: number[];
}

function checkSettings(obj: Record<string, unknown>, at: JsonPath, problems: PlanProblem[]) {
  for (const k of MATRIX_SETTING_KEYS) {
    const v = obj[k];
    if (v === undefined) continue;
    const expected = valueProblem(MATRIX_SETTING_SPECS[k], v, true);
    if (!expected) continue;
    // The value is shown where it is not obvious from the rule (a number outside a list or range).
    const shown = typeof v === 'number' && (k === 'bits' || expected.includes('≤'));
    const got = shown ? ` (got ${JSON.stringify(v)})` : '';
    problems.push({ severity: 'error', message: `'${k}' must be ${expected}${got}`, path: [...at, k] });
  }
}

/** Deepest bracket nesting, skipping strings and comments; a plan never needs more than a
 *  handful, and a hostile one of 10⁵ would overflow the parser's stack. */
export function nestingDepth(text: string): number {
  let depth = 0,
    max = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
    } else if (c === '/' && text[i + 1] === '/') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === '/' && text[i + 1] === '*') {
      i = text.indexOf('*/', i + 2);
      if (i < 0) break;
      i++;
    } else if (c === '{' || c === '[') {
      if (++depth > max) max = depth;
    } else if (c === '}' || c === ']') depth--;
  }
  return max;
}

export const MAX_PLAN_DEPTH = 64;

export function parsePlan(text: string): ParsedPlan {
  const depth = nestingDepth(text);
  if (depth > MAX_PLAN_DEPTH) {
    return {
      plan: { checkpoint: '' },
      problems: [
        { severity: 'error', message: `the plan nests ${depth} levels deep (at most ${MAX_PLAN_DEPTH})`, path: [] },
      ],
      overrideIndex: [],
    };
  }
  const errors: ParseError[] = [];
  const raw = parseJsonc(text, errors, { allowTrailingComma: true, disallowComments: false });
  const problems: PlanProblem[] = errors.map((e) => ({
    severity: 'error',
    message: `JSON syntax: ${printParseErrorCode(e.error)}`,
    path: [],
    offset: e.offset,
    length: e.length,
  }));
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    if (!errors.length) problems.push({ severity: 'error', message: 'the plan must be a JSON object', path: [] });
    return { plan: { checkpoint: '' }, problems, overrideIndex: [] };
  }
  const obj = raw as Record<string, unknown>;
  if (typeof obj.checkpoint !== 'string' || !obj.checkpoint)
    problems.push({
      severity: 'error',
      message: "'checkpoint' (a path relative to this file) is required",
      path: obj.checkpoint === undefined ? [] : ['checkpoint'],
    });
  if (obj.defaults !== undefined) {
    if (typeof obj.defaults !== 'object' || obj.defaults === null || Array.isArray(obj.defaults))
      problems.push({ severity: 'error', message: "'defaults' must be an object", path: ['defaults'] });
    else checkSettings(obj.defaults as Record<string, unknown>, ['defaults'], problems);
  }
  const overrides: PlanOverride[] = [];
  const overrideIndex: number[] = [];
  if (obj.overrides !== undefined) {
    if (!Array.isArray(obj.overrides))
      problems.push({ severity: 'error', message: "'overrides' must be an array", path: ['overrides'] });
    else
      obj.overrides.forEach((o, i) => {
        if (o === null || typeof o !== 'object' || Array.isArray(o)) {
          problems.push({ severity: 'error', message: 'an override must be an object', path: ['overrides', i] });
          return;
        }
        const ov = o as Record<string, unknown>;
        if (typeof ov.match !== 'string' || !ov.match) {
          problems.push({ severity: 'error', message: "an override needs a 'match' glob", path: ['overrides', i] });
          return;
        }
        try {
          compileGlob(ov.match);
        } catch (e) {
          problems.push({
            severity: 'error',
            message: `bad pattern: ${(e as Error).message}`,
            path: ['overrides', i, 'match'],
          });
          return;
        }
        checkSettings(ov, ['overrides', i], problems);
        overrides.push(ov as unknown as PlanOverride);
        overrideIndex.push(i);
      });
  }
  if (obj.budget !== undefined) {
    const b = obj.budget as Record<string, unknown>;
    if (b === null || typeof b !== 'object' || (b.avgBits === undefined && b.bytes === undefined))
      problems.push({ severity: 'error', message: "'budget' needs 'avgBits' or 'bytes'", path: ['budget'] });
    else {
      if (b.avgBits !== undefined && (typeof b.avgBits !== 'number' || !(b.avgBits > 0)))
        problems.push({
          severity: 'error',
          message: "'avgBits' must be a positive number",
          path: ['budget', 'avgBits'],
        });
      if (b.bytes !== undefined && (typeof b.bytes !== 'number' || !(b.bytes > 0)))
        problems.push({ severity: 'error', message: "'bytes' must be a positive number", path: ['budget', 'bytes'] });
    }
  }
  let targets: string[] | undefined;
  if (obj.targets !== undefined) {
    if (!Array.isArray(obj.targets))
      problems.push({ severity: 'error', message: "'targets' must be an array of module globs", path: ['targets'] });
    else {
      targets = [];
      obj.targets.forEach((t, i) => {
        if (typeof t !== 'string' || !t) {
          problems.push({
            severity: 'error',
            message: 'a target must be a non-empty glob string',
            path: ['targets', i],
          });
          return;
        }
        try {
          compileGlob(t);
          targets!.push(t);
        } catch (e) {
          problems.push({ severity: 'error', message: `bad pattern: ${(e as Error).message}`, path: ['targets', i] });
        }
      });
    }
  }
  if (obj.analysis !== undefined && (typeof obj.analysis !== 'string' || !obj.analysis)) {
    const message = "'analysis' must be the path of a loftq-report.json, relative to this file";
    problems.push({ severity: 'error', message, path: ['analysis'] });
  }
  const formatProblem = obj.format === undefined ? undefined : valueProblem(RUN_SETTING_SPECS.format, obj.format, true);
  if (formatProblem)
    problems.push({ severity: 'error', message: `'format' must be ${formatProblem}`, path: ['format'] });
  let calibration: PlanFile['calibration'];
  if (obj.calibration !== undefined) {
    const c = parseCalibration(obj.calibration);
    for (const pr of c.problems) problems.push({ severity: 'error', ...pr });
    calibration = c.params;
  }
  const plan: PlanFile = {
    checkpoint: typeof obj.checkpoint === 'string' ? obj.checkpoint : '',
    defaults: (obj.defaults && typeof obj.defaults === 'object' ? obj.defaults : undefined) as PlanFile['defaults'],
    overrides,
    budget: obj.budget as PlanFile['budget'],
    targets,
    analysis: typeof obj.analysis === 'string' && obj.analysis ? obj.analysis : undefined,
    format: formatProblem || obj.format === undefined ? undefined : (obj.format as PlanFile['format']),
    ...(calibration ? { calibration } : {}),
  };
  return { plan, problems, overrideIndex };
}

/** The checkpoint path of a plan, resolved relative to the plan file's folder. */
export function resolveCheckpointPath(planFile: string, plan: PlanFile): string {
  return path.resolve(path.dirname(planFile), plan.checkpoint);
}

export interface CompiledPlan {
  defaults: MatrixSettings;
  overrides: { override: PlanOverride; glob: CompiledGlob; index: number }[];
}

export function compilePlan(plan: PlanFile, base: MatrixSettings = DEFAULT_SETTINGS): CompiledPlan {
  const defaults = { ...base };
  for (const k of MATRIX_SETTING_KEYS) {
    if (plan.defaults?.[k] !== undefined) (defaults as Record<string, unknown>)[k] = plan.defaults[k];
  }
  return {
    defaults,
    overrides: (plan.overrides ?? []).map((override, index) => ({
      override,
      glob: compileGlob(override.match),
      index,
    })),
  };
}

export interface ResolvedSettings {
  settings: MatrixSettings;
  skipped: boolean;
  /** For each setting an override set: the index (in CompiledPlan.overrides) of the last one. */
  owners: Partial<Record<MatrixSettingKey, number>>;
}

/** The one rule: the plan's defaults, then every matching override in order — later entries win. */
export function resolveSettings(cp: CompiledPlan, tensorName: string): ResolvedSettings {
  const settings = { ...cp.defaults };
  const owners: ResolvedSettings['owners'] = {};
  let skipped = false;
  for (const { override, glob, index } of cp.overrides) {
    if (!globMatches(glob, tensorName)) continue;
    for (const k of MATRIX_SETTING_KEYS) {
      if (override[k] === undefined) continue;
      (settings as Record<string, unknown>)[k] = override[k];
      owners[k] = index;
    }
    if (override.skip !== undefined) skipped = override.skip;
  }
  return { settings, skipped, owners };
}

/** Settings of one tensor under a plan, or null when an override skips it. */
export function settingsFor(cp: CompiledPlan, tensorName: string): MatrixSettings | null {
  const r = resolveSettings(cp, tensorName);
  return r.skipped ? null : r.settings;
}
