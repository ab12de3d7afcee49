// "Plan Mixed Precision…": the planner's bits and rank per matrix within a budget (`loftq/plan`,
// solved in the server's worker), offered as a diff of loftq.json before anything changes.
// Without an analysis of the checkpoint it says so and offers "Analyze with LoftQ".
import * as path from 'node:path';
import * as vscode from 'vscode';
import { LanguageClient, ResponseError, State } from 'vscode-languageclient/node';
import { ERROR_MEASURE_LABELS } from '../../server/src/protocol/lsp_ext';
import type { PlanBudget, PlanResult, RunContext } from '../../server/src/protocol/lsp_ext';
import { Requests } from '../../server/src/protocol/requests';
import { resolveTarget, runContextFor, serverDown, startingSettings } from './quantize';
import { createPlan, planDefaults } from './planReveal';

export interface PlanDeps {
  client: () => LanguageClient | undefined;
  log: vscode.LogOutputChannel;
}

const PLAN_FILE = 'loftq.json';
export const PREVIEW_SCHEME = 'loftq-plan-preview';

/** The proposed plan texts the diff's right side shows, by preview URI. */
export class PlanPreviews implements vscode.TextDocumentContentProvider {
  private readonly texts = new Map<string, string>();
  private readonly changed = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.changed.event;

  set(uri: vscode.Uri, text: string): void {
    this.texts.set(uri.toString(), text);
    this.changed.fire(uri);
  }

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.texts.get(uri.toString()) ?? '';
  }
}

/** "2.5" → average bits; "3.2GB", "800 MB", "1e9" (bytes) → bytes. */
export function parseBudget(s: string): PlanBudget | string {
  const t = s.trim();
  const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*(bits?|kb|mb|gb|b|bytes)?$/i.exec(t);
  if (!m) return 'Enter average bits per weight (e.g. 2.5) or a size (e.g. 3.2 GB)';
  const v = Number(m[1]);
  const unit = (m[2] ?? '').toLowerCase();
  if (!(v > 0)) return 'The budget must be positive';
  if (unit === '' || unit.startsWith('bit'))
    return v <= 32 ? { avgBits: v } : 'More than 32 bits per weight: give a size with a unit (e.g. 3.2 GB)';
  const scale = unit === 'kb' ? 1e3 : unit === 'mb' ? 1e6 : unit === 'gb' ? 1e9 : 1;
  return { bytes: Math.round(v * scale) };
}

async function planFile(deps: PlanDeps, arg: unknown): Promise<vscode.Uri | undefined> {
  if (typeof arg === 'string' && arg.startsWith('file:')) return vscode.Uri.parse(arg);
  if (arg instanceof vscode.Uri) return arg;
  const active = vscode.window.activeTextEditor?.document.uri;
  if (active?.scheme === 'file' && path.basename(active.fsPath) === PLAN_FILE) return active;
  const found = await vscode.workspace.findFiles(`**/${PLAN_FILE}`, '**/node_modules/**', 100);
  if (!found.length) {
    const a = await vscode.window.showInformationMessage(
      `No ${PLAN_FILE} in this workspace yet. Create one for a checkpoint (its settings as defaults)?`,
      'Create Plan…',
    );
    return a ? newPlan(deps) : undefined;
  }
  if (found.length === 1) return found[0];
  return (
    await vscode.window.showQuickPick(
      found.map((u) => ({ label: vscode.workspace.asRelativePath(u), uri: u })),
      { title: 'Plan Mixed Precision', placeHolder: 'Plan file' },
    )
  )?.uri;
}

/** A new loftq.json for a checkpoint the user picks: its path and the settings' defaults. */
async function newPlan(deps: PlanDeps): Promise<vscode.Uri | undefined> {
  const target = await resolveTarget(undefined, 'Create loftq.json');
  if (!target) return undefined;
  const client = deps.client();
  if (!client || client.state !== State.Running) return void serverDown(deps);
  const ctx = await runContextFor(client, target.fsPath, 'plan');
  if (!ctx) return undefined;
  if (ctx.plan) return vscode.Uri.file(ctx.plan.file);
  const file = await createPlan(ctx.checkpoint, planDefaults(startingSettings(target)));
  if (!file) return undefined;
  deps.log.info(`created ${file} for ${ctx.checkpoint}`);
  await vscode.window.showTextDocument(vscode.Uri.file(file), { preview: false });
  return vscode.Uri.file(file);
}

export async function planMixedCommand(deps: PlanDeps, previews: PlanPreviews, arg?: unknown): Promise<void> {
  const file = await planFile(deps, arg);
  if (!file) return;
  const client = deps.client();
  if (!client || client.state !== State.Running) return serverDown(deps);
  const rel = vscode.workspace.asRelativePath(file);
  let ctx: RunContext;
  try {
    ctx = await client.sendRequest(Requests.runContext, { checkpoint: file.fsPath });
  } catch (e) {
    void vscode.window.showErrorMessage(`Cannot plan: ${(e as Error).message}`);
    return;
  }
  if (ctx.problem) {
    void vscode.window.showErrorMessage(`Cannot plan ${rel}: ${ctx.problem}`);
    return;
  }
  const current = ctx.plan?.budget;
  const typed = await vscode.window.showInputBox({
    title: `Plan Mixed Precision: ${rel} (${vscode.workspace.asRelativePath(ctx.checkpoint)})`,
    prompt:
      'Budget: average bits per weight of the backbone (codes + scales, e.g. 2.5) ' +
      'or a size with adapters (e.g. 3.2 GB)',
    value:
      current?.avgBits !== undefined
        ? String(current.avgBits)
        : current?.bytes !== undefined
          ? `${current.bytes} B`
          : '2.5',
    validateInput: (s) => {
      const b = parseBudget(s);
      return typeof b === 'string' ? b : undefined;
    },
    ignoreFocusOut: true,
  });
  if (typed === undefined) return;
  const budget = parseBudget(typed) as PlanBudget;
  let result: PlanResult;
  try {
    result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Window, title: 'LoftQ planner' },
      () => client.sendRequest(Requests.plan, { plan: file.toString(), budget }),
    );
  } catch (e) {
    const msg = e instanceof ResponseError || e instanceof Error ? e.message : String(e);
    deps.log.info(`plan ${rel}: ${msg}`);
    if (/no analysis/.test(msg)) {
      const a = await vscode.window.showWarningMessage(
        `The planner needs an analysis of ${vscode.workspace.asRelativePath(ctx.checkpoint)} ` +
          'at several bit widths first.',
        'Analyze with LoftQ',
      );
      if (a) await vscode.commands.executeCommand('loftq.analyze', file);
    } else void vscode.window.showErrorMessage(`No plan for ${rel}: ${msg}`);
    return;
  }
  const k = result.baselines.firstK;
  // Which error the planner minimised (output error when the analysis was calibrated) and what first-k is.
  const measure = ERROR_MEASURE_LABELS[result.errorMeasure ?? 'weight'];
  const vs =
    Number.isFinite(k.error) && k.error > 0
      ? `, ${((1 - result.plan.error / k.error) * 100).toFixed(0)}% less predicted ${measure} than the LoftQ ` +
        "paper's rule (the first layers at 4 bits)"
      : `, planned by ${measure}`;
  const summary = `${result.plan.avgBits.toFixed(2)} bits per weight${vs}`;
  deps.log.info(`plan ${rel}: budget ${JSON.stringify(budget)} → ${summary}; ${result.choices.length} matrices`);
  const preview = vscode.Uri.from({ scheme: PREVIEW_SCHEME, path: `/${rel}`, query: String(Date.now()) });
  previews.set(preview, result.planText!);
  await vscode.commands.executeCommand('vscode.diff', file, preview, `${rel} ↔ planner's plan (${summary})`);
  // Entries of the user's the plan changes are named before anything is written; the rest stay.
  const replaces = result.replaces ?? [];
  const replaced = replaces.length
    ? ` It replaces ${replaces.length === 1 ? 'your override' : `${replaces.length} of your overrides`}: ` +
      `${replaces.slice(0, 3).join('; ')}${replaces.length > 3 ? `; and ${replaces.length - 3} more` : ''}.`
    : '';
  if (replaces.length) deps.log.info(`plan ${rel}: replaces ${replaces.join('; ')}`);
  const a = await vscode.window.showInformationMessage(
    `Apply the planner's plan to ${rel}? ${summary}.${replaced}`,
    'Apply',
    'Discard',
  );
  if (a !== 'Apply') return;
  const doc = await vscode.workspace.openTextDocument(file);
  const edit = new vscode.WorkspaceEdit();
  edit.replace(file, new vscode.Range(doc.positionAt(0), doc.positionAt(doc.getText().length)), result.planText!);
  if (!(await vscode.workspace.applyEdit(edit))) {
    void vscode.window.showErrorMessage(`${rel} could not be edited.`);
    return;
  }
  await doc.save();
  await vscode.window.showTextDocument(doc, { preview: false });
  deps.log.info(`plan ${rel}: the planner's plan applied`);
}
