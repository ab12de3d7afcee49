// Reading an analysis report for the planner, with one clear line per problem.

import * as fs from 'node:fs';
import type { Report } from '../../protocol/lsp_ext';
import { InputError } from '../../base/errors';

export function isReportFile(p: string): boolean {
  return p.endsWith('.json') && fs.existsSync(p) && fs.statSync(p).isFile();
}

export function readReport(file: string): Report {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new InputError(file, `not a readable JSON report (${(e as Error).message.split('\n')[0]})`);
  }
  const r = raw as Partial<Report>;
  if (!r || typeof r !== 'object' || r.version !== 1)
    throw new InputError(file, 'not a loftq report (expected "version": 1)');
  if (!Array.isArray(r.analyses) || !r.analyses.length)
    throw new InputError(
      file,
      "the report has no 'analyses'; " +
        "create one with 'loftq analyze CKPT --bits 2,3,4,8 --rank 64 --spectrum 64 --report FILE'",
    );
  r.analyses.forEach((a, i) => {
    if (typeof a?.bits !== 'number' || typeof a.rank !== 'number' || !Array.isArray(a.matrices))
      throw new InputError(file, `analyses[${i}] needs bits, rank and matrices`);
    a.matrices.forEach((m, j) => {
      const ok =
        typeof m?.name === 'string' &&
        Array.isArray(m.shape) &&
        m.shape.length === 2 &&
        Number.isFinite(m.relError) &&
        Number.isFinite(m.frobeniusNorm);
      if (!ok)
        throw new InputError(
          file,
          `analyses[${i}].matrices[${j}] needs name, shape [out, in], relError and frobeniusNorm`,
        );
      // A calibrated analysis' figures, when present, are numbers ≥ 0 (table.ts reads them).
      const bad = (['outputRelError', 'outputNorm', 'outputGain'] as const).find(
        (k) => m[k] !== undefined && !(typeof m[k] === 'number' && Number.isFinite(m[k]) && m[k] >= 0),
      );
      const spectrum = m.outputSpectrum;
      if (bad || (spectrum !== undefined && !(Array.isArray(spectrum) && spectrum.every(Number.isFinite))))
        throw new InputError(
          file,
          `analyses[${i}].matrices[${j}].${bad ?? 'outputSpectrum'} must be ` +
            (bad ? 'a number ≥ 0' : 'a list of numbers'),
        );
    });
  });
  return r as Report;
}
