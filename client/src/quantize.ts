// "Quantize with LoftQ": pick the checkpoint, ask the server what a run of it would meet
// (`loftq/runContext`) and refuse known-bad input before any question, ask for the settings,
// run `loftq/quantize` with cancellable progress, then offer the heatmap, the output and the
// report. A run lost to a server crash is reported, never dropped silently.
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { withServerProgress } from './serverProgress';
import { ErrorCodes, LanguageClient, ResponseError, State } from 'vscode-languageclient/node';
import type {
  BackendChoice,
  MatrixSettings,
  QuantizeParams,
  QuantizeResult,
  Quantizer,
  RunContext,
} from '../../server/src/protocol/lsp_ext';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/lsp_ext';
import { describeCalibration } from '../../server/src/registry';
import { Requests } from '../../server/src/protocol/requests';
import { askRun } from './runWizard';
import { isWriteRefusal, refusalText, unwritable } from './writable';
import { inspectCheckpoint, readReport, REPORT_FILE, ReportIndex } from './reports';
import { Candidate, markerOf, pickList, runFolderOf } from './checkpointKinds';
import type { LoftqStatus } from './statusBar';
import { VIEWER_VIEW_TYPE } from './viewer/provider';

export interface QuantizeDeps {
  client: () => LanguageClient | undefined;
  status: LoftqStatus;
  log: vscode.LogOutputChannel;
  reports: ReportIndex;
  openHeatmap(reportPath: string): void;
}

const INDEX = 'model.safetensors.index.json';

function isCheckpoint(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory() ? fs.existsSync(path.join(p, INDEX)) : p.endsWith('.safetensors');
  } catch {
    return false;
  }
}

/** The explorer item, the viewer's document, the active safetensors tab, or a pick from the workspace. */
export async function resolveTarget(arg: unknown, title = 'Quantize with LoftQ'): Promise<vscode.Uri | undefined> {
  if (arg instanceof vscode.Uri) return arg;
  const tab = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
  if (tab instanceof vscode.TabInputCustom && tab.viewType === VIEWER_VIEW_TYPE) return tab.uri;
  const { models, others } = await workspaceCheckpoints();
  if (!models.length) {
    void vscode.window.showErrorMessage(
      'No safetensors checkpoint to quantize in this workspace. Open a folder holding a .safetensors file ' +
        '(or a sharded checkpoint with model.safetensors.index.json)' +
        (others.length ? `; ${others.length} other file(s) are LoftQ outputs, adapters or unreadable.` : '.'),
    );
    return undefined;
  }
  type Item = vscode.QuickPickItem & { uri?: vscode.Uri };
  const items: Item[] = models.map((m) => ({
    label: m.label,
    description: m.description,
    uri: vscode.Uri.file(m.path),
  }));
  // Outputs, adapters and unreadable files: listed apart, labelled, and not run (picking one says why).
  if (others.length) {
    items.push({
      label: 'Not quantized: LoftQ outputs, adapters, unreadable files',
      kind: vscode.QuickPickItemKind.Separator,
    });
    for (const o of others) items.push({ label: `$(circle-slash) ${o.label}`, description: o.description });
  }
  const picked = await vscode.window.showQuickPick(items, {
    title,
    placeHolder: 'Checkpoint',
    matchOnDescription: true,
  });
  if (picked && !picked.uri) {
    void vscode.window.showInformationMessage(
      `${picked.label.replace('$(circle-slash) ', '')} is ${picked.description}: pick a model to quantize.`,
    );
    return undefined;
  }
  return picked?.uri;
}

/** The workspace's .safetensors files and sharded folders, sorted and labelled (checkpointKinds.ts). */
async function workspaceCheckpoints() {
  const files = await vscode.workspace.findFiles(
    '**/{*.safetensors,model.safetensors.index.json}',
    '**/node_modules/**',
    200,
  );
  const shardDirs = new Set(files.filter((f) => f.path.endsWith(INDEX)).map((f) => path.dirname(f.fsPath)));
  const paths = [
    ...[...shardDirs].map((d) => ({ path: d, isFolder: true })),
    ...files
      .filter((f) => f.path.endsWith('.safetensors') && !shardDirs.has(path.dirname(f.fsPath)))
      .map((f) => ({ path: f.fsPath, isFolder: false })),
  ];
  const candidates: Candidate[] = await Promise.all(
    paths.map(async (p) => {
      const marker = markerOf(p.path, p.isFolder, fs.existsSync);
      const c: Candidate = { ...p, marker };
      const run = runFolderOf(p.path, p.isFolder, marker);
      if (run) c.of = await outputOf(run);
      else if (!marker) c.header = await headerOf(p.path);
      return c;
    }),
  );
  return pickList(candidates, (p) => vscode.workspace.asRelativePath(p));
}

/** The server's header summary, or the one-line reason it could not read one (undefined: no server). */
async function headerOf(p: string): Promise<Candidate['header']> {
  try {
    return await inspectCheckpoint(p);
  } catch (e) {
    // Only the server's answer says the file is bad; no server, no verdict.
    return e instanceof ResponseError ? { problem: e.message } : undefined;
  }
}

/** The checkpoint an output folder's report names, when it has one the server can read. */
async function outputOf(dir: string): Promise<string | undefined> {
  try {
    return (await readReport(path.join(dir, REPORT_FILE))).checkpoint;
  } catch {
    return undefined;
  }
}

/** Settings a run starts from: `loftq.defaults.*` for this resource (a plan's defaults come on top). */
export function startingSettings(checkpoint: vscode.Uri): MatrixSettings {
  const cfg = vscode.workspace.getConfiguration('loftq', checkpoint);
  return {
    bits: cfg.get<number>('defaults.bits', DEFAULT_SETTINGS.bits),
    rank: cfg.get<number>('defaults.rank', DEFAULT_SETTINGS.rank),
    iters: cfg.get<number>('defaults.iters', DEFAULT_SETTINGS.iters),
    quantizer: cfg.get<Quantizer>('defaults.quantizer', DEFAULT_SETTINGS.quantizer),
    blockSize: DEFAULT_SETTINGS.blockSize,
  };
}

/** Asks for a writable folder (the message says why); undefined when dismissed. */
export async function anotherFolder(message: string, defaultUri?: vscode.Uri): Promise<string | undefined> {
  for (;;) {
    const a = await vscode.window.showWarningMessage(message, 'Choose Folder…');
    if (!a) return undefined;
    const chosen = await vscode.window.showOpenDialog({
      canSelectFolders: true,
      canSelectFiles: false,
      canSelectMany: false,
      defaultUri,
      openLabel: 'Write here',
    });
    if (!chosen?.[0]) return undefined;
    const why = await unwritable(chosen[0].fsPath);
    if (!why) return chosen[0].fsPath;
    message = `${chosen[0].fsPath} ${refusalText(why)}. Choose another folder.`;
  }
}

export const serverDown = (deps: { log: vscode.LogOutputChannel }) =>
  void vscode.window
    .showErrorMessage(
      'The LoftQ language server is not running, so no run can start. ' +
        'See the LoftQ log or run "LoftQ: Restart Language Server".',
      'Show Log',
    )
    .then((a) => a && deps.log.show());

async function openPlanAt(file: string, line: number, character: number): Promise<void> {
  const doc = await vscode.workspace.openTextDocument(file);
  const at = new vscode.Position(line, character);
  await vscode.window.showTextDocument(doc, { selection: new vscode.Range(at, at), preview: false });
}

/**
 * The server's RunContext for `checkpoint`, known-bad input said first, before any question;
 * undefined: nothing to run (the request failed or the user was told why).
 */
export async function runContextFor(
  client: LanguageClient,
  checkpoint: string,
  verb: 'quantize' | 'analyze' | 'plan',
): Promise<RunContext | undefined> {
  let ctx: RunContext;
  try {
    ctx = await client.sendRequest(Requests.runContext, { checkpoint });
  } catch (e) {
    void vscode.window.showErrorMessage(`Cannot ${verb}: ${(e as Error).message}`);
    return undefined;
  }
  return refuseKnownBad(ctx, verb);
}

async function refuseKnownBad(ctx: RunContext, verb: 'quantize' | 'analyze' | 'plan'): Promise<RunContext | undefined> {
  if (ctx.problem) {
    const a = await vscode.window.showErrorMessage(`Cannot ${verb}: ${ctx.problem}`, 'Show Problem');
    if (a === 'Show Problem') {
      const file = vscode.Uri.file(ctx.checkpoint);
      if (ctx.checkpoint.endsWith('.safetensors'))
        await vscode.commands.executeCommand('vscode.openWith', file, VIEWER_VIEW_TYPE);
      else await vscode.window.showTextDocument(vscode.Uri.file(path.join(ctx.checkpoint, INDEX)));
    }
    return undefined;
  }
  const err = ctx.plan?.error;
  if (ctx.plan && err) {
    const rel = vscode.workspace.asRelativePath(ctx.plan.file);
    const a = await vscode.window.showErrorMessage(
      `${rel} (line ${err.line + 1}) has an error, so a run that applies it would be refused: ${err.message}`,
      'Open Plan',
      'Run Without Plan',
    );
    if (a === 'Open Plan') await openPlanAt(ctx.plan.file, err.line, err.character);
    return a === 'Run Without Plan' ? { ...ctx, plan: undefined } : undefined;
  }
  return ctx;
}

/** Said before any question: an adapter is no model, and an output's backbone is already quantized. */
export async function notAdapterOrOutput(p: string, verb: 'quantize' | 'analyze' = 'quantize'): Promise<boolean> {
  const isFolder = fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
  const marker = markerOf(p, isFolder, fs.existsSync);
  const rel = vscode.workspace.asRelativePath(p);
  if (marker === 'adapter') {
    void vscode.window.showErrorMessage(
      `${rel} is a LoRA adapter (LoftQ's loftq_init/ or a PEFT adapter), not a model: ${verb} the checkpoint it ` +
        'was made from.',
    );
    return false;
  }
  if (marker !== 'output') return true;
  const of = await outputOf(isFolder ? p : path.dirname(p));
  const Verb = verb === 'quantize' ? 'Quantize' : 'Analyze';
  const original = of ? `${Verb} ${path.basename(of)}` : undefined;
  const a = await vscode.window.showWarningMessage(
    `${rel} is the output of a LoftQ run${of ? ` of ${vscode.workspace.asRelativePath(of)}` : ''}: ` +
      `its backbone is already quantized, and ${verb === 'quantize' ? 'quantizing' : 'analysing'} it measures ` +
      'LoftQ on top of LoftQ.',
    ...(original ? [original] : []),
    `${Verb} It Anyway`,
  );
  if (a === original && of) void vscode.commands.executeCommand(`loftq.${verb}`, vscode.Uri.file(of));
  return a === `${Verb} It Anyway`;
}

export async function quantizeCommand(deps: QuantizeDeps, arg?: unknown): Promise<void> {
  if (!vscode.workspace.isTrusted) {
    const a = await vscode.window.showErrorMessage(
      'LoftQ runs are disabled in Restricted Mode: a run reads checkpoints and plan files from this workspace ' +
        'and writes files. Trust the workspace to quantize.',
      'Manage Workspace Trust',
    );
    if (a) void vscode.commands.executeCommand('workbench.trust.manage');
    return;
  }
  const target = await resolveTarget(arg);
  if (!target) return;
  const isPlan = target.scheme === 'file' && path.basename(target.fsPath) === 'loftq.json';
  if (target.scheme !== 'file' || !(isPlan || isCheckpoint(target.fsPath))) {
    void vscode.window.showErrorMessage(
      `${target.fsPath || target.toString()}: not a safetensors checkpoint ` +
        `(a .safetensors file, or a folder holding ${INDEX}).`,
    );
    return;
  }
  const client = deps.client();
  if (!client || client.state !== State.Running) return serverDown(deps);
  if (!isPlan && !(await notAdapterOrOutput(target.fsPath))) return;
  const ctx = await runContextFor(client, target.fsPath, 'quantize');
  if (!ctx) return;
  if (ctx.shardOf)
    deps.log.info(
      `${path.basename(target.fsPath)} is one shard of ${ctx.shardOf}; the run quantizes the whole checkpoint`,
    );
  // Where the output goes by default (next to the checkpoint) is checked before any question.
  let outParent: string | undefined;
  const home = path.dirname(ctx.checkpoint);
  const blocked = await unwritable(home);
  if (blocked) {
    outParent = await anotherFolder(
      `${vscode.workspace.asRelativePath(home)} ${refusalText(blocked)}, so the output cannot go next to the ` +
        'checkpoint. Choose where it goes.',
    );
    if (!outParent) return;
  }
  const choice = await askRun(ctx, startingSettings(target), { outParent });
  if (!choice) return;
  const cfg = vscode.workspace.getConfiguration('loftq', target);
  const params: QuantizeParams = {
    checkpoint: ctx.checkpoint,
    out: choice.out,
    settings: choice.settings,
    plan: choice.plan,
    format: choice.format,
    ...(choice.calibration ? { calibration: choice.calibration } : {}),
    backend: cfg.get<BackendChoice>('backend', 'auto'),
    workers: cfg.get<number>('workers') || undefined,
    workDoneToken: `loftq-${randomUUID()}`,
  };
  const c = deps.client();
  if (!c || c.state !== State.Running) return serverDown(deps);
  await run(deps, c, params, !ctx.forwardPassProblem);
}

function calibrationNote(p: QuantizeParams): string {
  return p.calibration ? describeCalibration(p.calibration) : p.plan ? "the plan's, if any" : 'none';
}

function describeSettings(s: MatrixSettings): string {
  const iterations = `${s.iters} iteration${s.iters === 1 ? '' : 's'}`;
  return `${s.quantizer}${s.bits} rank ${s.rank}, ${iterations}, block ${s.blockSize}`;
}

/** The server refuses paths outside the workspace folders unless the user confirmed them (issue 14.10). */
export function outsideWorkspace(e: unknown): string | undefined {
  const data = e instanceof ResponseError ? (e.data as { outsideWorkspace?: unknown } | undefined) : undefined;
  return e instanceof ResponseError && e.code === ErrorCodes.InvalidParams && typeof data?.outsideWorkspace === 'string'
    ? data.outsideWorkspace
    : undefined;
}

/** Modal: the server refused a path outside the workspace folders; true when the user confirms. */
export async function confirmOutside(where: string, reads: (string | undefined)[], writes: string): Promise<boolean> {
  const a = await vscode.window.showWarningMessage(
    `${where} is outside the workspace folders.`,
    { modal: true, detail: `This reads ${reads.filter(Boolean).join(' and ')} and writes ${writes}. Run it anyway?` },
    'Run Anyway',
  );
  return a === 'Run Anyway';
}

/** `evaluable`: the model runs a forward pass, so "Evaluate Outputs" is offered when the run ends. */
async function run(
  deps: QuantizeDeps,
  client: LanguageClient,
  params: QuantizeParams,
  evaluable = false,
): Promise<void> {
  const name = path.basename(params.checkpoint);
  const job = String(params.workDoneToken);
  // One line per run with everything that decides it; later lines name the run, not the paths again.
  const workers = params.workers ? String(params.workers) : 'auto';
  deps.log.info(
    `run ${job}: checkpoint ${params.checkpoint}; plan ${params.plan ?? 'none'}; ` +
      `settings ${describeSettings(params.settings)}; ` +
      `calibration ${calibrationNote(params)}; ` +
      `backend ${params.backend ?? 'auto'}; workers ${workers}; ` +
      `output ${params.out}${params.confirmedOutsideWorkspace ? ' (outside the workspace, confirmed)' : ''}`,
  );
  deps.status.setJob(job, 'starting');
  let result: QuantizeResult;
  let cancelled = false;
  try {
    result = await withServerProgress(
      client,
      {
        title: `LoftQ ${params.settings.bits}-bit: ${name}`,
        token: params.workDoneToken!,
        onMessage: (m) => deps.status.setJob(job, m),
        onCancel: () => (cancelled = true),
      },
      (token) => client.sendRequest(Requests.quantize, params, token),
    );
  } catch (e) {
    deps.status.setJob(job, undefined);
    if (cancelled || e instanceof vscode.CancellationError) {
      deps.log.info(`run ${job}: cancelled; no output was written`);
      void vscode.window.showInformationMessage(`LoftQ run on ${name} cancelled; no output was written.`);
      return;
    }
    const outside = outsideWorkspace(e);
    if (outside && !params.confirmedOutsideWorkspace) {
      deps.log.info(`run ${job}: ${outside} is outside the workspace folders; asking the user`);
      if (await confirmOutside(outside, [params.checkpoint, params.plan], params.out))
        await run(
          deps,
          client,
          { ...params, confirmedOutsideWorkspace: true, workDoneToken: `loftq-${randomUUID()}` },
          evaluable,
        );
      return;
    }
    const msg = (e as Error).message ?? String(e);
    deps.log.error(`run ${job}: failed: ${msg}`);
    const lost = client.state !== State.Running || /connection|disposed|closed/i.test(msg);
    // An output folder the run may not write fails the same way again: offer another folder.
    const refused = !lost && isWriteRefusal(msg);
    // Bad input fails the same way again: "Run Again" only where a rerun can succeed.
    const badInput = !lost && e instanceof ResponseError && e.code === ErrorCodes.InvalidParams;
    const text = lost
      ? `The LoftQ server stopped during the run on ${name}; the run was lost and left no output. (${msg})`
      : `LoftQ run on ${name} failed: ${msg}`;
    const actions = refused
      ? ['Choose Another Folder', 'Show Log']
      : [...(badInput ? [] : ['Run Again']), ...(badInput && params.plan ? ['Open Plan'] : []), 'Show Log'];
    const a = await vscode.window.showErrorMessage(text, ...actions);
    if (a === 'Show Log') deps.log.show();
    if (a === 'Choose Another Folder') {
      const parent = await anotherFolder(`Choose where the output of ${name} goes instead of ${params.out}.`);
      const c = deps.client();
      if (parent && c && c.state === State.Running) {
        const out = path.join(parent, path.basename(params.out));
        await run(deps, c, { ...params, out, workDoneToken: `loftq-${randomUUID()}` }, evaluable);
      }
      return;
    }
    if (a === 'Open Plan') await vscode.window.showTextDocument(vscode.Uri.file(params.plan!));
    if (a === 'Run Again') {
      const c = deps.client();
      if (c && c.state === State.Running)
        await run(deps, c, { ...params, workDoneToken: `loftq-${randomUUID()}` }, evaluable);
      else serverDown(deps);
    }
    return;
  }
  deps.status.setJob(job, undefined);
  deps.reports.remember(params.checkpoint, result.reportPath);
  const r = result.report;
  const mean = r.matrices.length ? r.matrices.reduce((s, m) => s + m.relError, 0) / r.matrices.length : 0;
  deps.log.info(
    `run ${job}: done on backend ${r.backend}: ${r.matrices.length} matrices, mean relError ${mean.toFixed(4)}, ` +
      `${r.totals.seconds.toFixed(1)} s; report ${result.reportPath}`,
  );
  const a = await vscode.window.showInformationMessage(
    `LoftQ done: ${r.matrices.length} matrices of ${name}, ` +
      `mean relative error ${mean.toFixed(4)} (${r.totals.seconds.toFixed(1)} s).`,
    'Open Heatmap',
    ...(evaluable ? ['Evaluate Outputs'] : []),
    'Reveal Output',
    'Open Report',
  );
  if (a === 'Open Heatmap') deps.openHeatmap(result.reportPath);
  else if (a === 'Evaluate Outputs') void vscode.commands.executeCommand('loftq.evaluate', vscode.Uri.file(result.out));
  else if (a === 'Reveal Output') void vscode.commands.executeCommand('revealInExplorer', vscode.Uri.file(result.out));
  else if (a === 'Open Report') void vscode.window.showTextDocument(vscode.Uri.file(result.reportPath));
}
