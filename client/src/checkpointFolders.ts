// Explorer menus cannot ask "does this folder hold model.safetensors.index.json?", so the
// folders that do are kept in a context key (`resourcePath in loftq.checkpointFolders`).
import * as path from 'node:path';
import * as vscode from 'vscode';

const INDEX_GLOB = '**/model.safetensors.index.json';

export function trackCheckpointFolders(): vscode.Disposable {
  const refresh = async () => {
    const found = await vscode.workspace.findFiles(INDEX_GLOB, '**/node_modules/**', 1000);
    const folders = found.map((u) => path.dirname(u.fsPath));
    await vscode.commands.executeCommand('setContext', 'loftq.checkpointFolders', folders);
  };
  void refresh();
  const w = vscode.workspace.createFileSystemWatcher(INDEX_GLOB, false, true, false);
  return vscode.Disposable.from(
    w,
    w.onDidCreate(refresh),
    w.onDidDelete(refresh),
    vscode.workspace.onDidChangeWorkspaceFolders(refresh),
  );
}
