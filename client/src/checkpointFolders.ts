// Explorer menus cannot ask "does this folder hold model.safetensors.index.json?", so the
// folders that do are kept in a context key (`resourcePath in loftq.checkpointFolders`); the
// output folders of LoftQ runs (they hold loftq_init/adapter_config.json) likewise
// (`resourcePath in loftq.outputFolders`, for "Evaluate Model Outputs").
import * as path from 'node:path';
import * as vscode from 'vscode';

/** Keeps context key `key` set to the folders (`depth` levels above each file) that hold a file matching `glob`. */
function trackFolders(glob: string, key: string, depth: number): vscode.Disposable {
  const refresh = async () => {
    const found = await vscode.workspace.findFiles(glob, '**/node_modules/**', 1000);
    const folders = found.map((u) => {
      let d = u.fsPath;
      for (let i = 0; i < depth; i++) d = path.dirname(d);
      return d;
    });
    await vscode.commands.executeCommand('setContext', key, folders);
  };
  void refresh();
  const w = vscode.workspace.createFileSystemWatcher(glob, false, true, false);
  return vscode.Disposable.from(
    w,
    w.onDidCreate(refresh),
    w.onDidDelete(refresh),
    vscode.workspace.onDidChangeWorkspaceFolders(refresh),
  );
}

export function trackCheckpointFolders(): vscode.Disposable {
  return vscode.Disposable.from(
    trackFolders('**/model.safetensors.index.json', 'loftq.checkpointFolders', 1),
    trackFolders('**/loftq_init/adapter_config.json', 'loftq.outputFolders', 2),
  );
}
