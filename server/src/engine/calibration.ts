// Calibration for a quantize run: input statistics per target matrix (from model/'s readers,
// from its forward pass a layer at a time, or handed in already collected), checked against
// the matrices, and a content key per statistic so the journal recomputes a matrix whose
// calibration changed.

import { createHash } from 'node:crypto';
import type { Checkpoint, TensorInfo } from '../checkpoint';
import type { InputStat, InputStats } from '../model/stats';
import type { CalibrationInfo, CalibrationParams } from '../protocol/lsp_ext';
import { DEFAULT_RIDGE } from '../loftq/calibrationMetric';
import { CALIBRATION_SPECS, TOKEN_LIMITS, valueProblem } from '../registry';
import { statsCollector } from '../model/collector';
import type { CollectOptions, OpenedCalibration, PreparedCalibration } from '../model/collector';
import { InputError, UsageError } from '../base/errors';

export interface ResolvedCalibration {
  info: CalibrationInfo;
  ridge: number;
  /** Statistics known at once (an imatrix, statistics handed in). */
  stats: InputStats;
  /** The rest, a decoder layer at a time (OpenedCalibration.stream). */
  stream?: OpenedCalibration['stream'];
  /** Output sensitivities on the source's tokens (OpenedCalibration.probe): token sources only. */
  probe?: OpenedCalibration['probe'];
  /** Releases the source (a calibration thread); call it once the run is over. */
  close(): void;
  /** Content hash of a statistic (with the ridge), for the journal key. */
  keyOf(stat: InputStat): string;
  /** Named in messages about the statistics. */
  origin: string;
}

const isPrepared = (c: CalibrationParams | PreparedCalibration): c is PreparedCalibration => 'stats' in c;

export function checkCalibrationParams(p: CalibrationParams): void {
  const sources = [p.file, p.generate, p.imatrix].filter((x) => x !== undefined).length;
  if (sources !== 1)
    throw new UsageError(
      `calibration takes exactly one source (--calib FILE, --calib-generate N,LEN or --imatrix FILE), got ${sources}`,
    );
  const c = CALIBRATION_SPECS;
  const ridgeProblem = p.ridge === undefined ? undefined : valueProblem(c.ridge, p.ridge);
  if (ridgeProblem) throw new UsageError(`the calibration ridge must be ${ridgeProblem}, got ${p.ridge}`);
  const productsProblem = p.products === undefined ? undefined : valueProblem(c.products, p.products);
  if (productsProblem)
    throw new UsageError(`the calibration products must be ${productsProblem}, got ${JSON.stringify(p.products)}`);
  if (p.products !== undefined && p.imatrix !== undefined)
    throw new UsageError('the calibration products choose how the pass runs; an imatrix has no pass');
  if (p.generate) {
    const { sequences, length } = p.generate;
    if (valueProblem(c.generateSequences, sequences) || valueProblem(c.generateLength, length)) {
      const n = c.generateSequences,
        len = c.generateLength;
      const want = `(N ≤ ${n.max}, LEN ≤ ${len.max}) with N ≥ ${n.min} sequences of LEN ≥ ${len.min} tokens`;
      throw new UsageError(`--calib-generate takes N,LEN ${want}, got ${sequences},${length}`);
    }
    const total = TOKEN_LIMITS.total.max;
    if (sequences * length > total)
      throw new UsageError(`--calib-generate N,LEN makes N × LEN tokens, at most ${total}; got ${sequences},${length}`);
    const seedProblem = p.generate.seed === undefined ? undefined : valueProblem(c.generateSeed, p.generate.seed);
    if (seedProblem) throw new UsageError(`the --calib-generate seed must be ${seedProblem}, got ${p.generate.seed}`);
  }
}

export function statKey(stat: InputStat, ridge: number): string {
  const h = createHash('sha256').update(JSON.stringify([stat.kind, stat.dim, stat.count, ridge]));
  const data = stat.kind === 'full' ? stat.g : stat.d;
  h.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return h.digest('hex').slice(0, 24);
}

/** Opens the calibration source (its input read and checked: nothing has been written yet);
 *  a token source's statistics then come from `stream`. */
export async function resolveCalibration(
  ck: Checkpoint,
  c: CalibrationParams | PreparedCalibration,
  opts: CollectOptions,
): Promise<ResolvedCalibration> {
  let opened: OpenedCalibration;
  let ridge: number;
  if (isPrepared(c)) {
    opened = { ...c, close() {} };
    ridge = c.info.ridge;
  } else {
    checkCalibrationParams(c);
    const collector = statsCollector();
    if (!collector)
      throw new UsageError('calibration needs the forward pass (model/), which this build does not include');
    opened = await collector(ck, c, opts);
    ridge = c.ridge ?? DEFAULT_RIDGE;
  }
  const keys = new WeakMap<InputStat, string>();
  const keyOf = (stat: InputStat) => {
    let k = keys.get(stat);
    if (k === undefined) keys.set(stat, (k = statKey(stat, ridge)));
    return k;
  };
  const origin =
    opened.info.file ?? (opened.info.source === 'generated' ? `${ck.path} (generated calibration)` : ck.path);
  return {
    info: { ...opened.info, ridge },
    ridge,
    stats: opened.stats ?? new Map(),
    ...(opened.stream ? { stream: opened.stream } : {}),
    ...(opened.probe ? { probe: opened.probe } : {}),
    close: () => opened.close(),
    keyOf,
    origin,
  };
}

/** The statistic for one target matrix among `stats`, checked against its input width;
 *  undefined when there is none for it. */
export function statFor(
  cal: ResolvedCalibration,
  stats: InputStats,
  tensor: TensorInfo,
  fanInFanOut: boolean,
): InputStat | undefined {
  const stat = stats.get(tensor.name);
  if (!stat) return undefined;
  if (fanInFanOut) {
    throw new UsageError(
      `${tensor.name} is stored [in, out] (GPT-2 Conv1D); calibrated LoftQ supports [out, in] linear weights only`,
    );
  }
  const cols = tensor.shape[1];
  if (stat.dim !== cols)
    throw new InputError(
      cal.origin,
      `its statistics for ${tensor.name} are ${stat.dim} wide, but the matrix has ${cols} inputs (another model?)`,
    );
  return stat;
}
