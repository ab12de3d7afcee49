// `--shard i/n`, and `--shard auto` / `auto/n` on a cluster engine: the index and count from a
// Slurm job array (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT) or a
// Kubernetes Indexed Job (JOB_COMPLETION_INDEX; the count is the Job's `completions`, which
// the pod is not told, so it is given: auto/n). Counts are bounded: a shard is at least one
// matrix, and no checkpoint has more than MAX_SHARDS of them.

import { UsageError } from '../base/errors';

export const MAX_SHARDS = 65536;

export interface Shard {
  index: number;
  count: number;
}

const whole = (s: string | undefined) => (s !== undefined && /^\d{1,15}$/.test(s) ? Number(s) : undefined);

function checked(index: number, count: number, from: string): Shard {
  if (count < 1 || count > MAX_SHARDS)
    throw new UsageError(`option '--shard': ${from}: the shard count must be 1 to ${MAX_SHARDS}, got ${count}`);
  if (index >= count) throw new UsageError(`option '--shard': ${from}: index ${index} is not below the count ${count}`);
  return { index, count };
}

/** The shard an option value names; `env` is the process environment (tests pass their own). */
export function parseShard(value: string, env: NodeJS.ProcessEnv = process.env): Shard {
  const fixed = /^(\d{1,15})\/(\d{1,15})$/.exec(value);
  if (fixed) return checked(Number(fixed[1]), Number(fixed[2]), `'${value}'`);
  const auto = /^auto(?:\/(\d{1,15}))?$/.exec(value);
  if (!auto) throw new UsageError(`option '--shard' must be i/n (0 ≤ i < n), auto or auto/n, got '${value}'`);
  const given = auto[1] !== undefined ? Number(auto[1]) : undefined;
  const [id, min, count] = [env.SLURM_ARRAY_TASK_ID, env.SLURM_ARRAY_TASK_MIN, env.SLURM_ARRAY_TASK_COUNT].map(whole);
  if (env.SLURM_ARRAY_TASK_ID !== undefined) {
    if (id === undefined || min === undefined || count === undefined)
      throw new UsageError(
        "option '--shard auto': SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT " +
          'must all be whole numbers (is this a Slurm job array?)',
      );
    if (given !== undefined && given !== count)
      throw new UsageError(`option '--shard auto/${given}': the Slurm array has ${count} tasks`);
    // A stepped array (--array=0-15:4) has gaps between task ids; the shard index must be dense.
    if (id < min) throw new UsageError(`option '--shard auto': SLURM_ARRAY_TASK_ID ${id} is below its minimum ${min}`);
    return checked(id - min, count, 'Slurm job array');
  }
  if (env.JOB_COMPLETION_INDEX !== undefined) {
    const index = whole(env.JOB_COMPLETION_INDEX);
    if (index === undefined) throw new UsageError(`option '--shard auto': JOB_COMPLETION_INDEX must be a whole number`);
    if (given === undefined)
      throw new UsageError(
        "option '--shard auto' in a Kubernetes Indexed Job needs the Job's completions: --shard auto/N",
      );
    return checked(index, given, 'Kubernetes Indexed Job');
  }
  throw new UsageError(
    "option '--shard auto' needs a Slurm job array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job " +
      '(JOB_COMPLETION_INDEX); neither is set — give --shard i/n',
  );
}
