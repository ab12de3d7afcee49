// Mutations of `--calib` token files (a JSON array of id sequences): ids outside the vocabulary,
// negative, not integers or not numbers; sequences too short, very long (cut to the registry's
// sequence bound) or more tokens than the total bound; deep nesting, wrong types, truncated or
// flipped text, files that are empty, not UTF-8 or not files. Each case also evaluates on the
// same file (eval reads tokens with the same rules).

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { TOKEN_LIMITS } from '../../registry';
import { InputCtx, InputCase, InputMutator, validSequences, writeInput } from './inputs';
import { serialize, Raw } from './model';

const FILE = 'calib.json';

/** Writes `text` as the case's token file, used by calibration and eval alike. */
async function tokens(c: InputCtx, text: string | Uint8Array, name = FILE): Promise<InputCase> {
  const file = await writeInput(c.dir, name, text);
  return { calibration: { file }, evalTokens: file };
}

/** Valid sequences with one id replaced by `bad` (JSON text, so 1e400 and -0 stay as written). */
function withId(c: InputCtx, bad: unknown): string {
  const seqs: unknown[][] = validSequences(c.rng, c.base.parsed.vocabSize);
  const s = c.rng.pick(seqs);
  s[c.rng.int(0, s.length - 1)] = bad;
  return serialize(seqs);
}

const mutator = (
  name: string,
  expect: InputMutator['expect'],
  make: (c: InputCtx) => Promise<InputCase>,
  weight = 1,
): InputMutator => ({ name, family: 'calib', expect, make, weight });

export const CALIB_MUTATORS: InputMutator[] = [
  mutator('tokens-valid', 'valid', (c) => {
    const seqs = validSequences(c.rng, c.base.parsed.vocabSize);
    const text = c.rng.chance(0.5) ? JSON.stringify(seqs) : JSON.stringify(seqs, null, c.rng.pick([1, 2, '\t']));
    // A UTF-8 byte-order mark is not part of the text (TextDecoder drops it).
    return tokens(c, c.rng.chance(0.2) ? `\uFEFF${text}` : text);
  }),
  // Integers spelled as JSON allows (2.0, 1e1, -0): the same numbers, so the same tokens.
  mutator('tokens-integer-spellings', 'valid', (c) => {
    const v = c.base.parsed.vocabSize;
    return tokens(c, withId(c, c.rng.pick([new Raw('2.0'), new Raw('1e1'), new Raw('-0'), new Raw(`${v - 1}.000`)])));
  }),
  mutator('tokens-out-of-vocab', 'invalid', (c) => {
    const v = c.base.parsed.vocabSize;
    return tokens(c, withId(c, c.rng.pick([v, v + 1, 2 * v, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 1e21])));
  }),
  mutator('tokens-negative', 'invalid', (c) =>
    tokens(c, withId(c, c.rng.pick([-1, -2, -(2 ** 31), -(2 ** 53), new Raw('-1e300')]))),
  ),
  mutator('tokens-not-integer', 'invalid', (c) =>
    tokens(
      c,
      withId(
        c,
        c.rng.pick([
          0.5,
          1.000001,
          1e-7,
          new Raw('1e400'),
          new Raw('-1e400'),
          '3',
          'NaN',
          null,
          true,
          [],
          [3],
          {},
          { id: 3 },
        ]),
      ),
    ),
  ),
  mutator('tokens-short', 'invalid', (c) => {
    const seqs: number[][] = validSequences(c.rng, c.base.parsed.vocabSize);
    seqs[c.rng.int(0, seqs.length - 1)] = c.rng.chance(0.5) ? [] : [1];
    return tokens(c, JSON.stringify(seqs));
  }),
  mutator('tokens-wrong-type', 'invalid', (c) =>
    tokens(
      c,
      c.rng.pick([
        '[]',
        '{}',
        'null',
        '42',
        '"[[1,2]]"',
        'true',
        '[1, 2, 3]',
        '[[1, 2], 3]',
        '[[1, 2], null]',
        '[[1, 2], {"0": 1, "1": 2, "length": 2}]',
        '{"sequences": [[1, 2, 3]]}',
      ]),
    ),
  ),
  mutator('tokens-deep', 'invalid', (c) => {
    const depth = c.rng.pick([3, 50, 1000, 10_000, 100_000, 1_000_000]);
    const inner = c.rng.chance(0.5) ? '1' : '';
    return tokens(c, '['.repeat(depth) + inner + ']'.repeat(c.rng.chance(0.8) ? depth : c.rng.int(0, depth - 1)));
  }),
  mutator('tokens-truncated', 'invalid', (c) => {
    const text = JSON.stringify(validSequences(c.rng, c.base.parsed.vocabSize));
    return tokens(c, text.slice(0, c.rng.int(0, text.length - 1)));
  }),
  mutator('tokens-byte-flip', 'either', (c) => {
    const bytes = Buffer.from(JSON.stringify(validSequences(c.rng, c.base.parsed.vocabSize)));
    for (let k = c.rng.int(1, 3); k > 0; k--)
      bytes[c.rng.int(0, bytes.length - 1)] = c.rng.pick([0x5b, 0x5d, 0x2c, 0x2d, 0x2e, 0x65, 0x30, 0x39, 0x22, 0x00]);
    return tokens(c, bytes);
  }),
  mutator('tokens-empty-or-binary', 'invalid', (c) =>
    tokens(
      c,
      c.rng.pick([
        new Uint8Array(0),
        new TextEncoder().encode(' \n\t '),
        new Uint8Array([0xff, 0xfe, 0x5b, 0x5d]),
        new Uint8Array([0x5b, 0x5b, 0x31, 0x2c, 0x32, 0xc3, 0x5d, 0x5d]),
        new TextEncoder().encode('\uFEFF\uFEFF[[1, 2, 3]]'),
        c.rng.bytes(c.rng.int(1, 64)),
      ]),
    ),
  ),
  // One sequence past the registry's sequence bound: cut into pieces (a last piece of one token
  // dropped), which the forward pass must run like any other.
  mutator(
    'tokens-long-sequence',
    'valid',
    (c) => {
      const max = TOKEN_LIMITS.sequence.max;
      const len = c.rng.pick([max, max + 1, max + 2, 2 * max + 1, c.rng.int(max, 3 * max)]);
      const seq = Array.from({ length: len }, () => c.rng.int(0, c.base.parsed.vocabSize - 1));
      return tokens(c, JSON.stringify([seq]));
    },
    0.3,
  ),
  // Many tokens, all within the bounds: the run either finishes or is cancelled at the case's
  // time bound — promptly (the forward pass checks its signal once per layer × chunk).
  mutator(
    'tokens-many',
    'valid',
    (c) => {
      const n = c.rng.int(20, 200);
      const seqs = Array.from({ length: n }, () =>
        Array.from({ length: TOKEN_LIMITS.sequence.max }, () => c.rng.int(0, c.base.parsed.vocabSize - 1)),
      );
      return tokens(c, JSON.stringify(seqs));
    },
    0.2,
  ),
  // More tokens than the total bound: refused before any forward pass, whatever the split.
  mutator('tokens-over-total', 'invalid', (c) => {
    const total = TOKEN_LIMITS.total.max + c.rng.int(1, 3000);
    const per = c.rng.pick([TOKEN_LIMITS.sequence.max, 100_000, total]);
    const seqs: string[] = [];
    for (let left = total; left > 0; left -= per) seqs.push(`[${new Array(Math.min(per, left)).fill('1').join(',')}]`);
    return tokens(c, `[${seqs.join(',')}]`);
  }),
  mutator('tokens-not-a-file', 'invalid', async (c) => {
    const p = path.join(c.dir, FILE);
    const kind = c.rng.int(0, 2);
    if (kind === 1) await fsp.mkdir(p);
    if (kind === 2) await fsp.symlink(path.join(c.dir, 'nowhere.json'), p);
    return { calibration: { file: p }, evalTokens: p };
  }),
];
