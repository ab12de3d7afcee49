// What a .safetensors file or a sharded folder in the workspace is, for the checkpoint picker
// and the viewer: a model to quantize (one file, or a sharded checkpoint), the output of a
// LoftQ run (its folder holds loftq_init/adapter_config.json, which every format writes — the
// marker the Explorer menus, Evaluate and the heatmap use; a loftq-report.json beside a model
// is no marker: `loftq analyze --report` may put one anywhere), an adapter (adapter_model.safetensors,
// or anything in loftq_init/), or a file whose header does not parse. Pure: the caller gives
// the file tests and the server's header answers.
import * as path from 'node:path';
import { naturalCompare } from '../../server/src/base/naturalSort';
import type { InspectResult } from '../../server/src/protocol/lsp_ext';

export const INDEX = 'model.safetensors.index.json';
const ADAPTER_DIR = 'loftq_init';
/** What marks a LoftQ run's output folder (every format writes it): Explorer menus, Evaluate, the heatmap. */
export const OUTPUT_MARKER = path.join(ADAPTER_DIR, 'adapter_config.json');

export type Marker = 'adapter' | 'output' | undefined;

/** What the path and its folder's files say; `isFolder`: a sharded checkpoint's folder. */
export function markerOf(p: string, isFolder: boolean, exists: (file: string) => boolean): Marker {
  const dir = isFolder ? p : path.dirname(p);
  if (!isFolder && (path.basename(p) === 'adapter_model.safetensors' || path.basename(dir) === ADAPTER_DIR))
    return 'adapter';
  if (!isFolder && path.basename(p) === 'model.packed.safetensors') return 'output';
  return exists(path.join(dir, OUTPUT_MARKER)) ? 'output' : undefined;
}

/** The run's output folder of a marked path: its own folder for an output, loftq_init/'s parent for an
 *  adapter in it; undefined for an adapter anywhere else (a PEFT adapter is no LoftQ run's). */
export function runFolderOf(p: string, isFolder: boolean, marker: Marker): string | undefined {
  const dir = isFolder ? p : path.dirname(p);
  if (marker === 'output') return dir;
  return marker === 'adapter' && path.basename(dir) === ADAPTER_DIR ? path.dirname(dir) : undefined;
}

export interface Candidate {
  /** A .safetensors file, or a folder holding INDEX. */
  path: string;
  isFolder: boolean;
  marker: Marker;
  /** The server's header summary, the reason it could not read one, or undefined when not asked. */
  header?: InspectResult | { problem: string };
  /** Outputs: the checkpoint their report names. */
  of?: string;
}

export interface PickEntry {
  path: string;
  label: string;
  description: string;
}

export interface PickList {
  /** Models to quantize, in natural order of their paths. */
  models: PickEntry[];
  /** Everything else, labelled, in natural order: shown apart and not quantized. */
  others: PickEntry[];
}

const count = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function compact(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}

/** `relative` turns a path into the label shown (the workspace-relative path). */
export function pickList(candidates: Candidate[], relative: (p: string) => string): PickList {
  const models: PickEntry[] = [],
    others: PickEntry[] = [];
  const sorted = [...candidates].sort((a, b) => naturalCompare(relative(a.path), relative(b.path)));
  for (const c of sorted) {
    const label = relative(c.path);
    const h = c.header;
    const of = c.of ? ` of ${relative(c.of)}` : '';
    if (c.marker === 'adapter') others.push({ path: c.path, label, description: `adapter${of}, not a model` });
    else if (c.marker === 'output') others.push({ path: c.path, label, description: `LoftQ output${of}` });
    else if (h && 'problem' in h) {
      const problem = h.problem.startsWith(`${c.path}: `) ? h.problem.slice(c.path.length + 2) : h.problem;
      others.push({ path: c.path, label, description: `unreadable: ${problem}` });
    } else {
      const size = h ? `${compact(h.totals.parameters)} parameters` : '';
      const what =
        c.isFolder || (h && h.files.length > 1)
          ? `sharded checkpoint${h ? `, ${count(h.files.length, 'shard')}` : ''}`
          : 'model';
      models.push({ path: c.path, label, description: [what, size].filter(Boolean).join(' · ') });
    }
  }
  return { models, others };
}
