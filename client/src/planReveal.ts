// Heatmap click → the plan file: select the override that decides this module's settings
// (the last matching one wins), or add an override for it, editing with jsonc-parser so
// comments and formatting survive.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { applyEdits, findNodeAtLocation, modify, Node, parseTree } from 'jsonc-parser';
import { compileGlob, globMatches, moduleName } from '../../server/src/plan/glob';

export const PLAN_FILE = 'loftq.json';

/** The plan file that plans a checkpoint (the server knows: loftq/runContext). */
export type FindPlan = (checkpoint: string) => Promise<string | undefined>;

const FORMAT = { formattingOptions: { insertSpaces: true, tabSize: 2, eol: '\n' } };

function overrideFor(root: Node | undefined, tensor: string): Node | undefined {
  const list = root && findNodeAtLocation(root, ['overrides']);
  let hit: Node | undefined;
  for (const item of list?.children ?? []) {
    const match = findNodeAtLocation(item, ['match']);
    if (typeof match?.value === 'string' && globMatches(compileGlob(match.value), tensor)) hit = item;
  }
  return hit;
}

async function select(file: string, node: Node | undefined): Promise<void> {
  const doc = await vscode.workspace.openTextDocument(file);
  const range = node ? new vscode.Range(doc.positionAt(node.offset), doc.positionAt(node.offset + node.length)) : new vscode.Range(0, 0, 0, 0);
  await vscode.window.showTextDocument(doc, { selection: range, preview: false, viewColumn: vscode.ViewColumn.One });
}

async function addOverride(file: string, tensor: string, settings: { bits?: number; rank?: number }): Promise<void> {
  const doc = await vscode.workspace.openTextDocument(file);
  const text = doc.getText();
  const root = parseTree(text);
  const hasList = root && findNodeAtLocation(root, ['overrides'])?.type === 'array';
  const entry = { match: moduleName(tensor), ...settings };
  const edits = hasList ? modify(text, ['overrides', -1], entry, FORMAT) : modify(text, ['overrides'], [entry], FORMAT);
  const next = applyEdits(text, edits);
  const we = new vscode.WorkspaceEdit();
  we.replace(doc.uri, new vscode.Range(doc.positionAt(0), doc.positionAt(text.length)), next);
  await vscode.workspace.applyEdit(we);
  const list = findNodeAtLocation(parseTree(next)!, ['overrides']);
  await select(file, list?.children?.[list.children.length - 1]);
}

/** Reveals (or, on request or when asked, creates) the plan entry for one tensor of `checkpoint`. */
export async function revealInPlan(findPlan: FindPlan, checkpoint: string, tensor: string, createOverride: boolean, settings: { bits?: number; rank?: number }): Promise<void> {
  const planFile = await findPlan(checkpoint);
  const found = planFile ? { file: planFile } : undefined;
  if (!found) {
    const a = await vscode.window.showInformationMessage(`No ${PLAN_FILE} plans ${path.basename(checkpoint)}. Create one with an override for ${moduleName(tensor)}?`, 'Create Plan');
    if (a !== 'Create Plan') return;
    const file = path.join(path.dirname(checkpoint), PLAN_FILE);
    if (fs.existsSync(file)) {
      void vscode.window.showErrorMessage(`${file} already exists and plans another checkpoint; not overwriting it.`);
      return;
    }
    let rel = path.relative(path.dirname(file), checkpoint).split(path.sep).join('/');
    if (!rel.startsWith('.')) rel = `./${rel}`;
    const plan = { checkpoint: rel, defaults: {}, overrides: [{ match: moduleName(tensor), ...settings }] };
    await vscode.workspace.fs.writeFile(vscode.Uri.file(file), new TextEncoder().encode(`${JSON.stringify(plan, null, 2)}\n`));
    const doc = await vscode.workspace.openTextDocument(file);
    const list = findNodeAtLocation(parseTree(doc.getText())!, ['overrides']);
    await select(file, list?.children?.[0]);
    return;
  }
  const root = parseTree(fs.readFileSync(found.file, 'utf8'));
  const hit = overrideFor(root, tensor);
  if (createOverride) return addOverride(found.file, tensor, settings);
  if (hit) return select(found.file, hit);
  const a = await vscode.window.showInformationMessage(`No override in ${PLAN_FILE} matches ${moduleName(tensor)}; the defaults apply.`, 'Add Override', 'Show Defaults');
  if (a === 'Add Override') return addOverride(found.file, tensor, settings);
  if (a === 'Show Defaults') return select(found.file, root && (findNodeAtLocation(root, ['defaults']) ?? findNodeAtLocation(root, ['checkpoint'])));
}
