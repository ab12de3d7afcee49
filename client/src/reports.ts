// Reports are read by the language server (`loftq/readReport`: regular files only, bounded,
// validated), never by the client itself; and which report belongs to which checkpoint is
// remembered here (a run writes its report into the output folder, not next to the input).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as vscode from 'vscode';
import type { InspectResult, Report } from '../../server/src/protocol/lsp_ext';

export const REPORT_FILE = 'loftq-report.json';
/** Where the editor's Analyze writes its report, in the plan's or the checkpoint's folder. */
export const ANALYSIS_FOLDER = 'loftq-analysis';

/** What the client asks the server for; set once the language client exists. */
export interface ServerReads {
  readReport(file: string): Promise<Report | null>;
  inspect(checkpoint: string): Promise<InspectResult>;
}

let server: Promise<ServerReads> | undefined;

export function setServerReads(s: Promise<ServerReads>): void {
  server = s;
}

async function reads(): Promise<ServerReads> {
  if (!server) throw new Error('the LoftQ language server is not running');
  return server;
}

/** A report through the server; throws one line naming the file and the problem. */
export async function readReport(file: string): Promise<Report> {
  const r = await (await reads()).readReport(file);
  if (!r) throw new Error(`${file}: does not exist`);
  return r;
}

/** A checkpoint's header summary through the server (`loftq/inspect`). */
export async function inspectCheckpoint(checkpoint: string): Promise<InspectResult> {
  return (await reads()).inspect(checkpoint);
}

/**
 * The .safetensors file of `checkpoint` (a file, or a folder with one file or shards) that holds
 * `tensor`, as the server's loftq/inspect lists it; undefined when the checkpoint cannot be opened
 * or has no such tensor.
 */
export async function fileHolding(checkpoint: string, tensor: string): Promise<string | undefined> {
  try {
    const info = await inspectCheckpoint(checkpoint);
    const file = info.tensors.find((t) => t.name === tensor)?.file;
    return file === undefined ? undefined : info.files.find((f) => path.basename(f) === file);
  } catch {
    return undefined;
  }
}

const KEY = 'loftq.reportsByCheckpoint';

export class ReportIndex {
  constructor(private readonly state: vscode.Memento) {}

  remember(checkpoint: string, reportPath: string): void {
    const map = this.state.get<Record<string, string>>(KEY, {});
    map[path.resolve(checkpoint)] = reportPath;
    void this.state.update(KEY, map);
  }

  /**
   * The report for a checkpoint, a file of one, or a shard (`shardIndex`: the index that lists it):
   * a report next to the file (it is a run's output), else the last run's or analysis's for it —
   * remembered under the checkpoint the run was given, for a shard the folder of its index — else
   * the editor's analysis in the checkpoint's folder (`loftq-analysis/`).
   */
  find(file: string, shardIndex?: string): string | undefined {
    const folder = fs.statSync(file, { throwIfNoEntry: false })?.isDirectory() ? file : path.dirname(file);
    const beside = path.join(folder, REPORT_FILE);
    if (fs.existsSync(beside)) return beside;
    const map = this.state.get<Record<string, string>>(KEY, {});
    for (const key of [file, ...(shardIndex ? [path.dirname(shardIndex)] : [])]) {
      const remembered = map[path.resolve(key)];
      if (remembered && fs.existsSync(remembered)) return remembered;
    }
    const analysis = path.join(folder, ANALYSIS_FOLDER, REPORT_FILE);
    return fs.existsSync(analysis) ? analysis : undefined;
  }
}
