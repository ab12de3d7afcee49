// "Analyze with LoftQ": LoftQ errors of a checkpoint at several bit widths (no weights written)
// through `loftq/analyze`, with progress and cancel. The report goes next to the plan (or the
// checkpoint) in `loftq-analysis/` — said in the questions, and checked for writability before
// them (another folder offered); the server gives it to the plan at once, and the planner's plan
// is one click away ("Plan Mixed Precision…", which makes a loftq.json when there is none).
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { withServerProgress } from './serverProgress';
import { LanguageClient, State } from 'vscode-languageclient/node';
import type {
  AnalyzeParams,
  AnalyzeResult,
  BackendChoice,
  CalibrationParams,
  MatrixSettings,
  RunContext,
} from '../../server/src/protocol/lsp_ext';
import { Requests } from '../../server/src/protocol/requests';
import { MATRIX_SETTING_SPECS, quantizerSpec } from '../../server/src/registry';
import { createPlan, planDefaults } from './planReveal';
import { askCalibrationAlone } from './runWizard';
import { refusalText, unwritable } from './writable';
import { ANALYSIS_FOLDER, ReportIndex } from './reports';
import {
  anotherFolder,
  confirmOutside,
  notAdapterOrOutput,
  outsideWorkspace,
  runContextFor,
  resolveTarget,
  serverDown,
  startingSettings,
} from './quantize';

export interface AnalyzeDeps {
  client: () => LanguageClient | undefined;
  log: vscode.LogOutputChannel;
  /** Remembers the report for the checkpoint (the viewer's error columns, a shard's included). */
  reports?: ReportIndex;
  openHeatmap(reportPath: string): void;
}

const PLAN_FILE = 'loftq.json';
/** The planner predicts smaller ranks from the residual spectrum; 64 is the rank of published LoftQ models. */
const ANALYSIS_RANK = 64;

/** A loftq.json (argument, or the active editor) stands for its checkpoint with that plan. */
async function target(arg: unknown): Promise<vscode.Uri | undefined> {
  if (typeof arg === 'string' && arg.startsWith('file:')) return vscode.Uri.parse(arg);
  if (arg instanceof vscode.Uri) return arg;
  const active = vscode.window.activeTextEditor?.document.uri;
  if (active?.scheme === 'file' && path.basename(active.fsPath) === PLAN_FILE) return active;
  return resolveTarget(undefined, 'Analyze with LoftQ');
}

export async function analyzeCommand(deps: AnalyzeDeps, arg?: unknown): Promise<void> {
  if (!vscode.workspace.isTrusted) {
    void vscode.window.showErrorMessage(
      'LoftQ analyses are disabled in Restricted Mode: they read checkpoints from this workspace and write a report. ' +
        'Trust the workspace first.',
    );
    return;
  }
  const uri = await target(arg);
  if (!uri) return;
  const client = deps.client();
  if (!client || client.state !== State.Running) return serverDown(deps);
  if (path.basename(uri.fsPath) !== PLAN_FILE && !(await notAdapterOrOutput(uri.fsPath, 'analyze'))) return;
  const ctx = await runContextFor(client, uri.fsPath, 'analyze');
  if (!ctx) return;
  const name = vscode.workspace.asRelativePath(ctx.checkpoint);
  const title = `Analyze ${name} with LoftQ`;
  const start = startingSettings(uri);
  // The report goes next to the plan (or the checkpoint) in loftq-analysis/: said, and checked before any question.
  let base = ctx.plan
    ? path.dirname(ctx.plan.file)
    : ctx.checkpoint.endsWith('.safetensors')
      ? path.dirname(ctx.checkpoint)
      : ctx.checkpoint;
  const blocked = await unwritable(base);
  if (blocked) {
    const chosen = await anotherFolder(
      `${vscode.workspace.asRelativePath(base)} ${refusalText(blocked)}, so the analysis report cannot go into its ` +
        `${ANALYSIS_FOLDER}/ folder. Choose where it goes.`,
    );
    if (!chosen) return;
    base = chosen;
  }
  const reportPath = path.join(base, ANALYSIS_FOLDER, 'loftq-report.json');
  // The plan's quantizer when it has one (an HQQ plan analyses HQQ widths), else the setting's.
  const quantizer = ctx.plan?.defaults.quantizer ?? start.quantizer;
  // A calibrated analysis (the plan's calibration block, or chosen here) lets the planner minimise output error.
  const planCalibrated = !!ctx.plan?.calibration;
  const steps = planCalibrated || ctx.forwardPassProblem ? 2 : 3;
  const widths = await vscode.window.showQuickPick(
    quantizerSpec(quantizer).bits.map((b) => ({ label: `${b}-bit`, bits: b, picked: b >= 2 && b <= 4 })),
    {
      title: `${title} (1/${steps})`,
      placeHolder: 'Bit widths to analyse (the planner chooses among them)',
      canPickMany: true,
      ignoreFocusOut: true,
    },
  );
  if (!widths?.length) return;
  const cap = Math.min(ANALYSIS_RANK, ctx.maxRank?.rank ?? ANALYSIS_RANK);
  const ranks = [...new Set([cap, 64, 32, 16, 8].filter((r) => r <= cap))];
  const small = ctx.maxRank && ctx.maxRank.rank < ANALYSIS_RANK ? ctx.maxRank : undefined;
  const clamp = small ? ` (at most ${small.rank} = min(out, in) of ${small.matrix})` : '';
  const rank = await vscode.window.showQuickPick(
    ranks.map((r) => ({
      label: String(r),
      rank: r,
      description: r === cap ? 'recommended: the planner predicts every smaller rank from it' : undefined,
    })),
    {
      title: `${title} (2/${steps})`,
      placeHolder: `Rank of the analysis${clamp}; the report goes to ${vscode.workspace.asRelativePath(reportPath)}`,
      ignoreFocusOut: true,
    },
  );
  if (!rank) return;
  let calibration: CalibrationParams | undefined;
  if (steps === 3) {
    const c = await askCalibrationAlone(`${title} (3/3)`);
    if (c === undefined) return;
    calibration = c ?? undefined;
  }
  const cfg = vscode.workspace.getConfiguration('loftq', uri);
  const params: AnalyzeParams = {
    checkpoint: ctx.checkpoint,
    report: reportPath,
    bits: widths.map((w) => w.bits),
    rank: rank.rank,
    iters: Math.min(start.iters, MATRIX_SETTING_SPECS.iters.max),
    quantizer,
    blockSize: start.blockSize,
    spectrum: rank.rank,
    plan: ctx.plan?.file,
    ...(calibration ? { calibration } : {}),
    backend: cfg.get<BackendChoice>('backend', 'auto'),
    workers: cfg.get<number>('workers') || undefined,
  };
  // A plan made after the analysis starts from these settings (the planner then sets bits and rank).
  const analysed = widths.map((w) => w.bits);
  const planStart: MatrixSettings = {
    ...start,
    quantizer,
    bits: analysed.includes(start.bits) ? start.bits : analysed[Math.floor(analysed.length / 2)],
    rank: Math.min(start.rank, rank.rank),
    iters: params.iters,
  };
  await runAnalysis(deps, client, params, ctx, planStart);
}

async function runAnalysis(
  deps: AnalyzeDeps,
  client: LanguageClient,
  params: AnalyzeParams,
  ctx: RunContext,
  planStart: MatrixSettings,
): Promise<void> {
  const job = `loftq-analyze-${randomUUID()}`;
  const name = path.basename(params.checkpoint);
  deps.log.info(
    `analysis ${job}: checkpoint ${params.checkpoint}; plan ${params.plan ?? 'none'} (targets only); ` +
      `widths ${params.bits.join(', ')}; rank ${params.rank}, ${params.iters} iterations, ${params.quantizer}, ` +
      `block ${params.blockSize}; backend ${params.backend ?? 'auto'}; workers ${params.workers ?? 'auto'}; ` +
      `report ${params.report}`,
  );
  let result: AnalyzeResult;
  let cancelled = false;
  try {
    result = await withServerProgress(
      client,
      {
        title: `LoftQ analysis (${params.bits.join(', ')} bits): ${name}`,
        token: job,
        onCancel: () => (cancelled = true),
      },
      (token) => client.sendRequest(Requests.analyze, { ...params, workDoneToken: job }, token),
    );
  } catch (e) {
    if (cancelled) {
      deps.log.info(`analysis ${job}: cancelled; no report was written`);
      void vscode.window.showInformationMessage(`LoftQ analysis of ${name} cancelled; no report was written.`);
      return;
    }
    const outside = outsideWorkspace(e);
    if (outside && !params.confirmedOutsideWorkspace) {
      if (await confirmOutside(outside, [params.checkpoint, params.plan], params.report))
        await runAnalysis(deps, client, { ...params, confirmedOutsideWorkspace: true }, ctx, planStart);
      return;
    }
    deps.log.error(`analysis ${job}: failed: ${(e as Error).message}`);
    const a = await vscode.window.showErrorMessage(
      `LoftQ analysis of ${name} failed: ${(e as Error).message}`,
      'Show Log',
    );
    if (a) deps.log.show();
    return;
  }
  deps.reports?.remember(ctx.checkpoint, result.reportPath);
  const means = result.report.analyses!.map(
    (a) =>
      `${a.bits}-bit ${(a.matrices.reduce((s, m) => s + m.relError, 0) / Math.max(1, a.matrices.length)).toFixed(3)}`,
  );
  deps.log.info(
    `analysis ${job}: done on backend ${result.report.backend}: mean LoftQ error ${means.join(', ')}; ` +
      `report ${result.reportPath}`,
  );
  const a = await vscode.window.showInformationMessage(
    `LoftQ analysis of ${name}: mean LoftQ error ${means.join(', ')}; ` +
      `report in ${vscode.workspace.asRelativePath(result.reportPath)}.`,
    'Plan Mixed Precision…',
    'Open Heatmap',
    'Open Report',
  );
  if (a === 'Plan Mixed Precision…') {
    // Without a plan of this checkpoint, a new loftq.json: the checkpoint, these settings, this analysis.
    let plan = ctx.plan?.file;
    if (!plan) {
      plan = await createPlan(ctx.checkpoint, planDefaults(planStart), {
        analysis: result.reportPath,
        calibration: params.calibration,
      });
      if (!plan) return;
      deps.log.info(`analysis ${job}: created ${plan} for the planner`);
    }
    await vscode.commands.executeCommand('loftq.planMixedPrecision', vscode.Uri.file(plan));
  } else if (a === 'Open Heatmap') deps.openHeatmap(result.reportPath);
  else if (a === 'Open Report') await vscode.window.showTextDocument(vscode.Uri.file(result.reportPath));
}
