// Heatmap click → the plan file: select the override that decides this module's settings
// (the server knows which: `loftq/planLocation`), or add an override for it, editing with
// jsonc-parser so comments and formatting survive.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { applyEdits, findNodeAtLocation, modify, Node, parseTree } from 'jsonc-parser';
import type {
  CalibrationParams,
  MatrixSettings,
  PlanLocation,
  PlanOverride,
  PlanRange,
} from '../../server/src/protocol/lsp_ext';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/lsp_ext';

export const PLAN_FILE = 'loftq.json';

/** Asks the server where the checkpoint's plan decides this tensor. */
export type LocatePlan = (checkpoint: string, tensor: string) => Promise<PlanLocation>;

const FORMAT = { formattingOptions: { insertSpaces: true, tabSize: 2, eol: '\n' } };

async function select(file: string, range: vscode.Range): Promise<void> {
  const doc = await vscode.workspace.openTextDocument(file);
  await vscode.window.showTextDocument(doc, { selection: range, preview: false, viewColumn: vscode.ViewColumn.One });
}

const toRange = (r: PlanRange) => new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);

function nodeRange(doc: vscode.TextDocument, node: Node | undefined): vscode.Range {
  return node
    ? new vscode.Range(doc.positionAt(node.offset), doc.positionAt(node.offset + node.length))
    : new vscode.Range(0, 0, 0, 0);
}

async function addOverride(file: string, module: string, settings: { bits?: number; rank?: number }): Promise<void> {
  const doc = await vscode.workspace.openTextDocument(file);
  const text = doc.getText();
  const root = parseTree(text);
  const hasList = root && findNodeAtLocation(root, ['overrides'])?.type === 'array';
  const entry = { match: module, ...settings };
  const edits = hasList ? modify(text, ['overrides', -1], entry, FORMAT) : modify(text, ['overrides'], [entry], FORMAT);
  const next = applyEdits(text, edits);
  const we = new vscode.WorkspaceEdit();
  we.replace(doc.uri, new vscode.Range(doc.positionAt(0), doc.positionAt(text.length)), next);
  await vscode.workspace.applyEdit(we);
  const list = findNodeAtLocation(parseTree(next)!, ['overrides']);
  await select(file, nodeRange(doc, list?.children?.[list.children.length - 1]));
}

/** A new loftq.json next to `checkpoint` with its checkpoint and `defaults` (and `extra` keys);
 *  undefined when one is there already (it plans another checkpoint: not overwritten). */
export async function createPlan(
  checkpoint: string,
  defaults: Partial<MatrixSettings>,
  extra: { overrides?: PlanOverride[]; analysis?: string; calibration?: CalibrationParams } = {},
): Promise<string | undefined> {
  const file = path.join(path.dirname(checkpoint), PLAN_FILE);
  if (fs.existsSync(file)) {
    void vscode.window.showErrorMessage(`${file} already exists and plans another checkpoint; not overwriting it.`);
    return undefined;
  }
  const relative = (p: string) => {
    const r = path.relative(path.dirname(file), p).split(path.sep).join('/');
    return r.startsWith('.') ? r : `./${r}`;
  };
  const plan: Record<string, unknown> = { checkpoint: relative(checkpoint), defaults };
  if (extra.analysis) plan.analysis = relative(extra.analysis);
  if (extra.overrides?.length) plan.overrides = extra.overrides;
  // The calibration an analysis was made with: a run of the plan then fits the adapters as the plan was chosen.
  if (extra.calibration) {
    const { file: f, imatrix, ...rest } = extra.calibration;
    plan.calibration = {
      ...(f ? { file: relative(f) } : {}),
      ...(imatrix ? { imatrix: relative(imatrix) } : {}),
      ...rest,
    };
  }
  await vscode.workspace.fs.writeFile(
    vscode.Uri.file(file),
    new TextEncoder().encode(`${JSON.stringify(plan, null, 2)}\n`),
  );
  return file;
}

/** The settings a new plan's defaults state: every matrix setting, the block size only when not the default. */
export function planDefaults(s: MatrixSettings): Partial<MatrixSettings> {
  const { blockSize, ...rest } = s;
  return blockSize === DEFAULT_SETTINGS.blockSize ? rest : { ...rest, blockSize };
}

/** Reveals (or, on request or when asked, creates) the plan entry for one tensor of `checkpoint`.
 *  `settings`: the tensor's own bits and rank (a new override states them, never nothing);
 *  `defaults`: what a new plan's defaults say (the shown run's settings). */
export async function revealInPlan(
  locate: LocatePlan,
  checkpoint: string,
  tensor: string,
  createOverride: boolean,
  settings: { bits?: number; rank?: number },
  defaults?: MatrixSettings,
): Promise<void> {
  const at = await locate(checkpoint, tensor);
  if (!at.plan) {
    const a = await vscode.window.showInformationMessage(
      `No ${PLAN_FILE} plans ${path.basename(checkpoint)}. Create one with an override for ${at.module}?`,
      'Create Plan',
    );
    if (a !== 'Create Plan') return;
    const file = await createPlan(checkpoint, defaults ? planDefaults(defaults) : {}, {
      overrides: [{ match: at.module, ...settings }],
    });
    if (!file) return;
    const doc = await vscode.workspace.openTextDocument(file);
    const list = findNodeAtLocation(parseTree(doc.getText())!, ['overrides']);
    await select(file, nodeRange(doc, list?.children?.[0]));
    return;
  }
  if (createOverride) return addOverride(at.plan, at.module, settings);
  if (at.override) return select(at.plan, toRange(at.override.range));
  const a = await vscode.window.showInformationMessage(
    `No override in ${PLAN_FILE} matches ${at.module}; the defaults apply.`,
    'Add Override',
    'Show Defaults',
  );
  if (a === 'Add Override') return addOverride(at.plan, at.module, settings);
  if (a === 'Show Defaults' && at.defaults) return select(at.plan, toRange(at.defaults));
}
