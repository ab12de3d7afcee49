// Runs inside the VS Code extension host (test-electron's extensionTestsPath): the
// extension activates, the viewer is the default editor for .safetensors, the plan file
// gets the server's diagnostics and its quick fix edits the document.
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import * as vscode from 'vscode';

async function until<T>(
  what: string,
  f: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 30_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function run(): Promise<void> {
  const ws = vscode.workspace.workspaceFolders![0].uri;
  const ext = vscode.extensions.getExtension('loftq-lens.loftq-lens');
  assert.ok(ext, 'extension present');
  await ext.activate();
  const commands = await vscode.commands.getCommands(true);
  for (const c of ['loftq.quantize', 'loftq.openHeatmap', 'loftq.showOutput', 'loftq.restartServer'])
    assert.ok(commands.includes(c), c);

  // The viewer is the default editor for .safetensors.
  await vscode.commands.executeCommand('vscode.open', vscode.Uri.joinPath(ws, 'markup.safetensors'));
  const input = await until('the viewer tab', () => {
    const i = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
    return i instanceof vscode.TabInputCustom ? i : undefined;
  });
  assert.equal(input.viewType, 'loftq.safetensorsViewer');

  // Plan diagnostics and a quick fix that edits the document.
  const plan = vscode.Uri.joinPath(ws, 'stories260k', 'loftq.json');
  await vscode.workspace.fs.writeFile(
    plan,
    new TextEncoder().encode(
      '{\n  // keep me\n  "checkpoint": "./model.safetensors",\n  ' +
        '"overrides": [ { "match": "model.layers.*.mlp.nonexistent", "bits": 8 } ]\n}\n',
    ),
  );
  const doc = await vscode.workspace.openTextDocument(plan);
  await vscode.window.showTextDocument(doc);
  assert.equal(doc.languageId, 'jsonc');
  const d = await until('the no-match warning', () =>
    vscode.languages.getDiagnostics(plan).find((x) => /matches no tensor/.test(x.message)),
  );
  const actions = await vscode.commands.executeCommand<vscode.CodeAction[]>(
    'vscode.executeCodeActionProvider',
    plan,
    d.range,
  );
  const remove = actions.find((a) => a.title.startsWith('Remove override'));
  assert.ok(remove?.edit, `quick fix offered: ${actions.map((a) => a.title).join(', ')}`);
  assert.ok(await vscode.workspace.applyEdit(remove.edit));
  assert.ok(!doc.getText().includes('nonexistent'));
  assert.ok(doc.getText().includes('// keep me'));
  console.log(`electron suite passed in ${path.basename(ws.fsPath)}`);
}
