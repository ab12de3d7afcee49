// A small strict option parser: unknown options and bad values are UsageErrors naming
// the option, so every bad invocation gets one clear line and exit code 2.

import { UsageError } from '../base/errors';

export interface OptionSpec {
  type: 'string' | 'number' | 'boolean' | 'list';
  /** For 'list': values are comma-separated and/or the option repeats. */
  default?: unknown;
  alias?: string;
}

export interface Parsed {
  positional: string[];
  options: Record<string, unknown>;
}

export function parseArgs(argv: string[], spec: Record<string, OptionSpec>): Parsed {
  const options: Record<string, unknown> = {};
  const positional: string[] = [];
  const byAlias = new Map(
    Object.entries(spec)
      .filter(([, s]) => s.alias)
      .map(([k, s]) => [s.alias!, k]),
  );
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      positional.push(a);
      continue;
    }
    let key = a.replace(/^--?/, '');
    let value: string | undefined;
    const eq = key.indexOf('=');
    if (eq >= 0) {
      value = key.slice(eq + 1);
      key = key.slice(0, eq);
    }
    key = byAlias.get(key) ?? key;
    const s = spec[key];
    if (!s) throw new UsageError(`unknown option '${a}'`);
    if (s.type === 'boolean') {
      options[key] = value === undefined ? true : value !== 'false';
      continue;
    }
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new UsageError(`option '--${key}' needs a value`);
    }
    if (s.type === 'number') {
      const n = Number(value);
      if (value.trim() === '' || !Number.isFinite(n))
        throw new UsageError(`option '--${key}' needs a number, got '${value}'`);
      options[key] = n;
    } else if (s.type === 'list') {
      const prev = (options[key] as string[] | undefined) ?? [];
      options[key] = [
        ...prev,
        ...value
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean),
      ];
    } else options[key] = value;
  }
  for (const [k, s] of Object.entries(spec))
    if (options[k] === undefined && s.default !== undefined) options[k] = s.default;
  return { positional, options };
}

export function intOption(options: Record<string, unknown>, key: string, allowed?: number[], min = 1): number {
  const v = options[key] as number;
  if (!Number.isInteger(v) || v < min) throw new UsageError(`option '--${key}' must be an integer ≥ ${min}, got ${v}`);
  if (allowed && !allowed.includes(v))
    throw new UsageError(`option '--${key}' must be one of ${allowed.join(', ')}, got ${v}`);
  return v;
}
