// The parts of package.json (`contributes.configuration`) and schemas/loftq.schema.json
// that restate registry facts — enums, defaults, ranges — rewritten from the registry.
// Descriptions and everything else stay as written. `npm run sync-registry` applies it;
// test/unit/registrySync.test.ts fails while the files differ from what it would write.

import {
  CALIBRATION_SPECS,
  EXPORT_FORMATS,
  FORMATS,
  MATRIX_SETTING_SPECS,
  QUANTIZER_NAMES,
  QUANTIZERS,
  RUN_SETTING_SPECS,
} from '../registry';
import type { SettingSpec } from '../registry';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

/** Editor settings (package.json) and the registry spec each one restates. */
export const MANIFEST_SETTINGS: Record<string, SettingSpec> = {
  'loftq.backend': RUN_SETTING_SPECS.editorBackend,
  'loftq.workers': RUN_SETTING_SPECS.workers,
  'loftq.defaults.bits': MATRIX_SETTING_SPECS.bits,
  'loftq.defaults.rank': MATRIX_SETTING_SPECS.rank,
  'loftq.defaults.iters': MATRIX_SETTING_SPECS.iters,
  'loftq.defaults.quantizer': MATRIX_SETTING_SPECS.quantizer,
  'loftq.diagnostics.threshold': RUN_SETTING_SPECS.threshold,
};

const FIRST_KEYS = ['type', 'enum', 'enumDescriptions', 'default', 'minimum', 'maximum'];

/** `prop` with the spec's enum or range (and default) set, in a fixed key order. */
function withSpec(prop: JsonObject, spec: SettingSpec, withDefault: boolean): JsonObject {
  const facts: JsonObject = {};
  if (spec.kind === 'enum') facts.enum = [...spec.values];
  else {
    facts.minimum = spec.min;
    if (spec.max !== undefined) facts.maximum = spec.max;
  }
  if (spec.kind === 'enum' && spec.values === MATRIX_SETTING_SPECS.quantizer.values) {
    if (withDefault) facts.enumDescriptions = QUANTIZER_NAMES.map((q) => QUANTIZERS[q].detail);
    else facts.markdownDescription = QUANTIZER_NAMES.map((q) => `\`${q}\`: ${QUANTIZERS[q].detail}`).join('; ') + '.';
  }
  if (withDefault) facts.default = spec.default;
  const merged: JsonObject = { ...prop, ...facts };
  const out: JsonObject = {};
  for (const k of FIRST_KEYS) if (k in merged) out[k] = merged[k];
  for (const [k, v] of Object.entries(merged)) if (!(k in out)) out[k] = v;
  return out;
}

export function syncManifest(pkg: JsonObject): JsonObject {
  const copy = JSON.parse(JSON.stringify(pkg)) as JsonObject;
  const props = ((copy.contributes as JsonObject).configuration as JsonObject).properties as JsonObject;
  for (const [key, spec] of Object.entries(MANIFEST_SETTINGS)) {
    if (!(key in props)) throw new Error(`package.json has no configuration property '${key}'`);
    props[key] = withSpec(props[key] as JsonObject, spec, true);
  }
  return copy;
}

export function syncSchema(schema: JsonObject): JsonObject {
  const copy = JSON.parse(JSON.stringify(schema)) as JsonObject;
  const settings = (copy.definitions as JsonObject).settings as JsonObject;
  const props = settings.properties as JsonObject;
  const out: JsonObject = {};
  for (const [key, spec] of Object.entries(MATRIX_SETTING_SPECS)) {
    out[key] = withSpec((props[key] ?? { description: spec.description }) as JsonObject, spec, false);
  }
  settings.properties = out;
  const top = copy.properties as JsonObject;
  top.format = {
    ...withSpec((top.format ?? {}) as JsonObject, RUN_SETTING_SPECS.format, false),
    markdownDescription:
      'The output format a run of this plan writes (`loftq quantize --format` wins): ' +
      EXPORT_FORMATS.map((f) => `\`${f}\`: ${FORMATS[f].detail}`).join('; ') +
      '.',
  };
  syncCalibration(top);
  return copy;
}

/** The `calibration` block's ranges and choices (plan/calibration.ts parses it with the same specs). */
function syncCalibration(top: JsonObject): void {
  const c = CALIBRATION_SPECS;
  const block = (top.calibration ?? {}) as JsonObject;
  const props = (block.properties ?? {}) as JsonObject;
  const synced = (prop: Json | undefined, spec: SettingSpec, type?: string) =>
    withSpec(
      { ...(type ? { type } : {}), ...((prop ?? { description: spec.description }) as JsonObject) },
      spec,
      false,
    );
  const generate = (props.generate ?? {}) as JsonObject;
  const g = (generate.properties ?? {}) as JsonObject;
  const gen = { sequences: c.generateSequences, length: c.generateLength, seed: c.generateSeed };
  const gOut: JsonObject = {};
  for (const [k, spec] of Object.entries(gen)) gOut[k] = synced(g[k], spec, 'integer');
  props.generate = { ...generate, properties: gOut };
  props.ridge = synced(props.ridge, c.ridge, 'number');
  props.products = synced(props.products, c.products);
  top.calibration = { ...block, properties: props };
}

function compact(v: Json): string {
  if (Array.isArray(v)) return `[${v.map(compact).join(', ')}]`;
  if (v && typeof v === 'object') {
    const e = Object.entries(v);
    return e.length ? `{ ${e.map(([k, x]) => `${JSON.stringify(k)}: ${compact(x)}`).join(', ')} }` : '{}';
  }
  return JSON.stringify(v);
}

/** JSON with each value on one line where it fits in `width` columns (the schema's style). */
export function formatJson(v: Json, indent = 0, width = 120, lead = 0): string {
  const c = compact(v);
  if (v === null || typeof v !== 'object' || indent + lead + c.length <= width) return c;
  const pad = ' '.repeat(indent + 2),
    end = ' '.repeat(indent);
  if (Array.isArray(v)) return `[\n${v.map((x) => pad + formatJson(x, indent + 2, width)).join(',\n')}\n${end}]`;
  const lines = Object.entries(v).map(([k, x]) => {
    const key = `${JSON.stringify(k)}: `;
    return pad + key + formatJson(x, indent + 2, width, key.length);
  });
  return `{\n${lines.join(',\n')}\n${end}}`;
}

/** The text each file should hold, from its current text. */
export function syncedTexts(pkgText: string, schemaText: string): { pkg: string; schema: string } {
  return {
    pkg: JSON.stringify(syncManifest(JSON.parse(pkgText)), null, 2) + '\n',
    schema: formatJson(syncSchema(JSON.parse(schemaText))) + '\n',
  };
}
