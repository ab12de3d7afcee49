// Reading config.json's fields for the forward pass: each problem is one CheckpointError line
// naming the file and the field. Families read their own fields through this (arch/*.ts).

import { brief, CheckpointError } from '../../checkpoint/errors';

export type Json = Record<string, unknown>;

export class ConfigFields {
  constructor(
    readonly file: string,
    readonly json: Json,
  ) {}

  fail(problem: string): never {
    throw new CheckpointError('metadata', this.file, problem);
  }

  /** Present and not null. */
  has(key: string): boolean {
    return this.json[key] !== undefined && this.json[key] !== null;
  }

  positiveInt(key: string, fallback?: number): number {
    const v = this.json[key] ?? fallback;
    if (v === undefined) this.fail(`field '${key}' is missing`);
    // 1e300 is an integer to Number.isInteger, but no count or width: beyond 2^53 sizes overflow.
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0)
      this.fail(`field '${key}' must be a positive integer below 2^53 (found ${brief(v)})`);
    return v;
  }

  positiveNumber(key: string, fallback: number): number {
    const v = this.json[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      this.fail(`field '${key}' must be a positive number (found ${brief(v)})`);
    return v;
  }

  /** A positive number, or undefined when the field is absent or null. */
  optionalPositive(key: string): number | undefined {
    return this.has(key) ? this.positiveNumber(key, 1) : undefined;
  }

  optionalBool(key: string): boolean | undefined {
    const v = this.json[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') this.fail(`field '${key}' must be true or false (found ${brief(v)})`);
    return v;
  }

  /** A number in (0, 1] (partial_rotary_factor). */
  fraction(key: string, fallback: number): number {
    const v = this.json[key] ?? fallback;
    if (typeof v !== 'number' || !(v > 0 && v <= 1))
      this.fail(`field '${key}' must be a number in (0, 1] (found ${brief(v)})`);
    return v;
  }

  /** One of `allowed` (the first field of `keys` that is present decides); `fallback` when none is. */
  oneOf<T extends string>(keys: readonly string[], allowed: readonly T[], fallback: T): { key: string; value: T } {
    for (const key of keys) {
      const v = this.json[key];
      if (v === undefined || v === null) continue;
      if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
        const list = allowed.map((a) => `"${a}"`).join(', ');
        this.fail(`field '${key}' must be ${allowed.length > 1 ? 'one of ' : ''}${list} (found ${brief(v)})`);
      }
      return { key, value: v as T };
    }
    return { key: keys[0], value: fallback };
  }

  /** Refuses a field whose value is not one the forward pass implements (changes the model). */
  refuseUnless(key: string, ok: (v: unknown) => boolean, implemented: string): void {
    const v = this.json[key];
    if (!ok(v))
      this.fail(`field '${key}' is ${brief(v)}, which the forward pass does not implement (it runs ${implemented})`);
  }
}
