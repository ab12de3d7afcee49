// "Evaluate Model Outputs": how far the LoftQ init and the QLoRA init of an output folder are
// from the original model (KL per token, same top-1, perplexity) through `loftq/eval`, with
// progress and cancel. Held-out tokens by default — sampled from the original with a seed other
// than the calibration's, and the question says which — or a token file. The report's model
// block is written; the heatmap of that folder shows it at once.
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { withServerProgress } from './serverProgress';
import { LanguageClient, State } from 'vscode-languageclient/node';
import type { BackendChoice, EvalParams, EvalResult, ModelEval, Report } from '../../server/src/protocol/lsp_ext';
import { Requests } from '../../server/src/protocol/requests';
import { EVAL_SPECS, heldOutSeed, parseSampleSizes } from '../../server/src/registry';
import { confirmOutside, outsideWorkspace, serverDown } from './quantize';
import { readReport, REPORT_FILE } from './reports';
import { OUTPUT_MARKER } from './checkpointKinds';

export interface EvaluateDeps {
  client: () => LanguageClient | undefined;
  log: vscode.LogOutputChannel;
  openHeatmap(reportPath: string): void;
  /** The report changed: panels showing it reload. */
  reportChanged(reportPath: string): void;
}

/** Output folders of quantize runs in the workspace (they hold loftq_init/adapter_config.json). */
async function outputFolders(): Promise<string[]> {
  const found = await vscode.workspace.findFiles('**/loftq_init/adapter_config.json', '**/node_modules/**', 500);
  return found.map((u) => path.dirname(path.dirname(u.fsPath))).sort();
}

/** The output folder: the Explorer's folder (or its loftq-report.json), else a pick among the workspace's. */
async function outputFolder(arg: unknown): Promise<string | undefined> {
  const uri = typeof arg === 'string' ? vscode.Uri.file(arg) : arg instanceof vscode.Uri ? arg : undefined;
  if (uri) return path.basename(uri.fsPath) === REPORT_FILE ? path.dirname(uri.fsPath) : uri.fsPath;
  const outs = await outputFolders();
  if (!outs.length) {
    void vscode.window.showInformationMessage(
      'No LoftQ output folder in this workspace yet: run "Quantize with LoftQ" first.',
    );
    return undefined;
  }
  const picked = await vscode.window.showQuickPick(
    outs.map((o) => ({ label: vscode.workspace.asRelativePath(o), out: o })),
    { title: 'Evaluate Model Outputs', placeHolder: 'Output folder of a LoftQ run' },
  );
  return picked?.out;
}

type TokenChoice = { generate: NonNullable<EvalParams['generate']> } | { tokens: string };

/** Where the held-out seed comes from, in words. */
function seedReason(report: Report, seed: number): string {
  const c = report.calibration;
  if (c?.source === 'generated')
    return `seed ${seed}: the calibration sampled with seed ${c.seed ?? 0}, so none of its tokens are measured`;
  if (c)
    return `seed ${seed}; the calibration used ${c.source === 'imatrix' ? 'an importance matrix' : 'a token file'}`;
  return `seed ${seed}`;
}

async function askTokens(name: string, report: Report): Promise<TokenChoice | undefined> {
  const seed = heldOutSeed(report.calibration?.seed);
  const sizes = { sequences: EVAL_SPECS.sequences.default, length: EVAL_SPECS.length.default };
  type V = TokenChoice | 'file';
  return new Promise((resolve) => {
    const qp = vscode.window.createQuickPick<vscode.QuickPickItem & { value: V }>();
    const items = [
      {
        label: `$(sparkle) Held-out tokens sampled from the model: ${sizes.sequences} × ${sizes.length}`,
        value: { generate: sizes } as V,
        detail: `${seedReason(report, seed)} (type N,LEN for other sizes)`,
      },
      {
        label: '$(file) Choose a token file…',
        value: 'file' as V,
        detail: 'token ids (.json, [[1, 403, …], …]) or text (.txt, tokenized with the model’s tokenizer.json)',
      },
    ];
    qp.title = `Evaluate Model Outputs: ${name}`;
    qp.placeholder = 'Tokens to compare the LoftQ and QLoRA inits with the original model on';
    qp.items = items;
    qp.ignoreFocusOut = true;
    let done = false,
      choosingFile = false;
    const finish = (v: TokenChoice | undefined) => {
      if (done) return;
      done = true;
      resolve(v);
      qp.dispose();
    };
    qp.onDidChangeValue((text) => {
      const t = text.trim();
      if (!t || items.some((i) => i.label.toLowerCase().includes(t.toLowerCase()))) return void (qp.items = items);
      const s = parseSampleSizes(t);
      const typed = {
        label: t,
        alwaysShow: true,
        value: (typeof s === 'string' ? 'file' : { generate: s }) as V,
        description: typeof s === 'string' ? `$(error) Type ${s}` : `press Enter: ${seedReason(report, seed)}`,
      };
      qp.items = [typed, ...items];
    });
    qp.onDidAccept(async () => {
      const t = qp.value.trim();
      if (t && !items.some((i) => i.label.toLowerCase().includes(t.toLowerCase()))) {
        const s = parseSampleSizes(t);
        if (typeof s !== 'string') finish({ generate: s });
        return;
      }
      const sel = qp.selectedItems[0] ?? qp.activeItems[0];
      if (!sel) return;
      if (sel.value !== 'file') return finish(sel.value);
      choosingFile = true;
      qp.hide();
      const chosen = await vscode.window.showOpenDialog({
        canSelectFiles: true,
        canSelectMany: false,
        filters: { 'Token files': ['json', 'txt'], 'All files': ['*'] },
        openLabel: 'Evaluate on these tokens',
      });
      finish(chosen?.[0] ? { tokens: chosen[0].fsPath } : undefined);
    });
    // Hidden for the file dialog: onDidAccept settles it.
    qp.onDidHide(() => choosingFile || finish(undefined));
    qp.show();
  });
}

export async function evaluateCommand(deps: EvaluateDeps, arg?: unknown): Promise<void> {
  if (!vscode.workspace.isTrusted) {
    void vscode.window.showErrorMessage(
      'LoftQ evaluations are disabled in Restricted Mode: they read checkpoints from this workspace and write a ' +
        'report. Trust the workspace first.',
    );
    return;
  }
  const out = await outputFolder(arg);
  if (!out) return;
  const name = vscode.workspace.asRelativePath(out);
  if (!fs.existsSync(path.join(out, OUTPUT_MARKER))) {
    void vscode.window.showErrorMessage(
      `${name} is not the output folder of a LoftQ run (no ${OUTPUT_MARKER}); ` +
        'an analysis writes no weights to evaluate.',
    );
    return;
  }
  let report: Report;
  try {
    report = await readReport(path.join(out, REPORT_FILE));
  } catch (e) {
    void vscode.window.showErrorMessage(`Cannot evaluate ${name}: ${(e as Error).message}`);
    return;
  }
  const client = deps.client();
  if (!client || client.state !== State.Running) return serverDown(deps);
  const tokens = await askTokens(name, report);
  if (!tokens) return;
  const cfg = vscode.workspace.getConfiguration('loftq', vscode.Uri.file(out));
  await runEval(deps, client, {
    original: report.checkpoint,
    out,
    ...tokens,
    backend: cfg.get<BackendChoice>('backend', 'auto'),
    workDoneToken: `loftq-eval-${randomUUID()}`,
  });
}

/** "16 held-out sequences × 128 tokens sampled from the model (seed 1)" or "tokens of ids.json". */
export function describeEvalTokens(m: ModelEval): string {
  const g = m.generated;
  if (g) return `${g.sequences} held-out sequences × ${g.length} tokens sampled from the model (seed ${g.seed})`;
  return `${m.sequences} sequences, ${m.tokens} tokens of ${path.basename(m.tokensFile ?? '')}`;
}

async function runEval(deps: EvaluateDeps, client: LanguageClient, params: EvalParams): Promise<void> {
  const name = path.basename(params.out);
  const job = String(params.workDoneToken);
  const what = params.tokens
    ? `tokens ${params.tokens}`
    : `held-out ${params.generate!.sequences}×${params.generate!.length}`;
  deps.log.info(`evaluation ${job}: original ${params.original}; output ${params.out}; ${what}`);
  let result: EvalResult;
  let cancelled = false;
  try {
    result = await withServerProgress(
      client,
      { title: `LoftQ evaluation: ${name}`, token: params.workDoneToken!, onCancel: () => (cancelled = true) },
      (token) => client.sendRequest(Requests.eval, params, token),
    );
  } catch (e) {
    if (cancelled || e instanceof vscode.CancellationError) {
      deps.log.info(`evaluation ${job}: cancelled; the report was not changed`);
      void vscode.window.showInformationMessage(`LoftQ evaluation of ${name} cancelled; the report was not changed.`);
      return;
    }
    const outside = outsideWorkspace(e);
    if (outside && !params.confirmedOutsideWorkspace) {
      if (await confirmOutside(outside, [params.original, params.tokens], path.join(params.out, REPORT_FILE)))
        await runEval(deps, client, {
          ...params,
          confirmedOutsideWorkspace: true,
          workDoneToken: `loftq-eval-${randomUUID()}`,
        });
      return;
    }
    const msg = (e as Error).message ?? String(e);
    deps.log.error(`evaluation ${job}: failed: ${msg}`);
    const a = await vscode.window.showErrorMessage(`LoftQ evaluation of ${name} failed: ${msg}`, 'Show Log');
    if (a) deps.log.show();
    return;
  }
  const m = result.model;
  const f = (x: number, d: number) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  const line =
    `KL LoftQ ${f(m.loftq.kl, 3)} vs QLoRA ${f(m.qlora.kl, 3)} nats/token, ` +
    `same top-1 ${f(m.loftq.top1, 1)} % vs ${f(m.qlora.top1, 1)} %`;
  deps.log.info(`evaluation ${job}: ${line}; ${describeEvalTokens(m)}; ${result.seconds.toFixed(1)} s`);
  if (result.reportPath) deps.reportChanged(result.reportPath);
  const a = await vscode.window.showInformationMessage(
    `Model outputs of ${name}: ${line} (${describeEvalTokens(m)}).`,
    ...(result.reportPath ? ['Open Heatmap'] : []),
  );
  if (a === 'Open Heatmap' && result.reportPath) deps.openHeatmap(result.reportPath);
}
