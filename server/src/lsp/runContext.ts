// `loftq/runContext`: what a run of a checkpoint would meet, so the client can refuse known-bad
// input before asking any question (issue 11.3) and say what is applied (11.4): a checkpoint
// that cannot be read, the plan that applies and its first error, the largest rank that fits.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { DiagnosticSeverity } from 'vscode-languageserver';
import { CheckpointError, INDEX_FILE, openCheckpoint, readRegularFile, TensorInfo } from '../checkpoint';
import { selectTargets } from '../engine/targets';
import { resolveCheckpointPath } from '../plan/planfile';
import type { MatrixSettings, PlanLocation, RunContext } from '../protocol/lsp_ext';
import { compileGlob, globMatches, moduleName } from '../plan/glob';
import { overridesWithIndex } from '../planInsight/planModel';
import { planDiagnostics } from './diagnostics';
import { forwardPassProblem } from './calibration';
import type { PlanDoc } from './planDoc';
import { PLAN_FILE } from './workspaceScan';

export interface RunContextDeps {
  /** URIs of the plan files the server knows (on disk and open). */
  plans(): string[];
  planDoc(uri: string): Promise<PlanDoc | undefined>;
  threshold(uri: string): Promise<number>;
}

const SETTING_KEYS = ['bits', 'rank', 'iters', 'quantizer', 'blockSize'] as const;
/** A model index is a few MB at most; the cap keeps a hostile one cheap. */
const MAX_INDEX_BYTES = 50_000_000;

const realpath = (p: string) => fsp.realpath(p).catch(() => path.resolve(p));

/** The sharded folder `file` is a shard of, when its index lists it. */
async function shardFolder(file: string): Promise<string | undefined> {
  if (!file.endsWith('.safetensors')) return undefined;
  const index = path.join(path.dirname(file), INDEX_FILE);
  try {
    const json = JSON.parse(new TextDecoder().decode(await readRegularFile(index, MAX_INDEX_BYTES)));
    const files = Object.values((json?.weight_map ?? {}) as Record<string, unknown>);
    return files.includes(path.basename(file)) ? path.dirname(file) : undefined;
  } catch {
    return undefined;
  }
}

function smallestRank(shapes: { name: string; shape: number[] }[]): RunContext['maxRank'] {
  let best: RunContext['maxRank'];
  for (const t of shapes) {
    const r = Math.min(t.shape[0], t.shape[1]);
    if (!best || r < best.rank) best = { rank: r, matrix: t.name };
  }
  return best;
}

/** Length of the common leading path of two folders: the nearer plan shares more of the checkpoint's path. */
function sharedDepth(a: string, b: string): number {
  const x = a.split(path.sep),
    y = b.split(path.sep);
  let i = 0;
  while (i < x.length && i < y.length && x[i] === y[i]) i++;
  return i;
}

export async function runContext(asked: string, deps: RunContextDeps): Promise<RunContext> {
  // A plan file stands for its checkpoint, with that plan.
  let only: string | undefined;
  let given = asked;
  if (path.basename(asked) === PLAN_FILE) {
    const p = await deps.planDoc(pathToFileURL(asked).toString());
    if (!p?.parsed.plan.checkpoint) {
      return { checkpoint: asked, matrices: 0, problem: `${asked} names no checkpoint ('checkpoint' is required)` };
    }
    only = p.uri;
    given = resolveCheckpointPath(p.path, p.parsed.plan);
  }
  const whole = (await fsp.stat(given).catch(() => undefined))?.isFile() ? await shardFolder(given) : undefined;
  const checkpoint = whole ?? given;
  const ctx: RunContext = { checkpoint, matrices: 0, ...(whole ? { shardOf: whole } : {}) };
  let tensors: TensorInfo[];
  try {
    tensors = (await openCheckpoint(checkpoint)).tensors;
  } catch (e) {
    // A CheckpointError names the file and the problem in one line already.
    ctx.problem = e instanceof CheckpointError ? e.message : `${checkpoint} cannot be read: ${(e as Error).message}`;
    return ctx;
  }
  const targets = selectTargets(tensors);
  ctx.matrices = targets.length;
  ctx.maxRank = smallestRank(targets);
  const forward = await forwardPassProblem(checkpoint);
  if (forward) ctx.forwardPassProblem = forward;

  const p = await planFor(checkpoint, deps, only);
  if (!p) return ctx;
  const defaults: Partial<MatrixSettings> = {};
  for (const k of SETTING_KEYS) {
    const v = p.parsed.plan.defaults?.[k];
    if (v !== undefined) (defaults as Record<string, unknown>)[k] = v;
  }
  const live = p.assignment?.matrices.filter((m) => !m.skipped) ?? [];
  const err = planDiagnostics(p, await deps.threshold(p.uri)).find((d) => d.severity === DiagnosticSeverity.Error);
  ctx.plan = {
    file: p.path,
    defaults,
    overrides: p.parsed.plan.overrides?.length ?? 0,
    ...(p.parsed.plan.budget && typeof p.parsed.plan.budget === 'object' ? { budget: p.parsed.plan.budget } : {}),
    ...(p.parsed.plan.format ? { format: p.parsed.plan.format } : {}),
    ...(p.parsed.plan.calibration ? { calibration: p.parsed.plan.calibration } : {}),
    matrices: live.length,
    maxRank: smallestRank(
      live.filter((m) => m.rankOwner.kind === 'defaults').map((m) => ({ name: m.tensor.name, shape: m.shape })),
    ),
    ...(err
      ? { error: { message: err.message, line: err.range.start.line, character: err.range.start.character } }
      : {}),
  };
  return ctx;
}

/** The plan whose checkpoint is `checkpoint` (same real path), nearest to it when several; `only` restricts the
 *  search. */
export async function planFor(checkpoint: string, deps: RunContextDeps, only?: string): Promise<PlanDoc | undefined> {
  const real = await realpath(checkpoint);
  let best: { p: PlanDoc; depth: number } | undefined;
  for (const uri of only ? [only] : deps.plans()) {
    const p = await deps.planDoc(uri);
    if (!p?.parsed.plan.checkpoint) continue;
    if ((await realpath(resolveCheckpointPath(p.path, p.parsed.plan))) !== real) continue;
    const depth = sharedDepth(path.dirname(p.path), path.dirname(checkpoint));
    if (!best || depth > best.depth || (depth === best.depth && p.path < best.p.path)) best = { p, depth };
  }
  return best?.p;
}

/** `loftq/planLocation`: the node of the checkpoint's plan that decides one tensor (heatmap click → plan). */
export async function planLocation(checkpoint: string, tensor: string, deps: RunContextDeps): Promise<PlanLocation> {
  const module = moduleName(tensor);
  const whole = (await fsp.stat(checkpoint).catch(() => undefined))?.isFile()
    ? await shardFolder(checkpoint)
    : undefined;
  const p = await planFor(whole ?? checkpoint, deps);
  if (!p) return { module };
  let hit: number | undefined;
  overridesWithIndex(p.parsed).forEach(({ override, jsonIndex }) => {
    if (globMatches(compileGlob(override.match), tensor)) hit = jsonIndex;
  });
  if (hit !== undefined) return { module, plan: p.path, override: { index: hit, range: p.range(['overrides', hit]) } };
  return { module, plan: p.path, defaults: p.range(p.has(['defaults']) ? ['defaults'] : ['checkpoint']) };
}
