// The language server: wires LSP features to the plan-file logic and the engine. Every
// handler is async and short; heavy work (LoftQ runs) is the engine's, off this thread.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  CodeActionKind,
  CodeLens,
  CodeLensRefreshRequest,
  Connection,
  Diagnostic,
  DiagnosticSeverity,
  DidChangeConfigurationNotification,
  DidChangeWatchedFilesNotification,
  ErrorCodes,
  FileChangeType,
  InitializeResult,
  ResponseError,
  TextDocuments,
  TextDocumentSyncKind,
  WorkDoneProgressCancelNotification,
} from 'vscode-languageserver';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { openCheckpoint, readRegularFile } from '../checkpoint';
import { MAX_PLAN_BYTES, planSizeMessage, planTooLarge } from '../plan/planSize';
import { inspectWithShard } from '../engine/inspect';
import { parsePlan } from '../plan/planfile';
import { Requests } from '../protocol/requests';
import type {
  AnalyzeParams,
  InspectParams,
  PlanRequestParams,
  PlanResult,
  QuantizeParams,
  PlanLocation,
  PlanLocationParams,
  Report,
  RunContext,
  RunContextParams,
} from '../protocol/lsp_ext';
import type { EvalParams } from '../protocol/lsp_ext';
import { planCodeActions } from './codeActions';
import { planDiagnostics, SOURCE, summaryLenses } from './diagnostics';
import { comparePlanner } from './plannerCompare';
import { FactsCache, MAX_REPORT_BYTES, REPORT_FILE } from './facts';
import { PlanDoc, PlanFacts } from './planDoc';
import { planHover } from './hover';
import { calibrationFileProblems } from './calibration';
import { setMixedPlanner } from './mixedPlan';
import { applyPlanToText, replacedOverrides } from '../plan/planner/planedit';
import { plannerOrFirstK, runPlanner } from './planner';
import { isReport } from '../planInsight/reportIndex';
import { planLocation, runContext } from './runContext';
import { Engine, Runs, toPath } from './runs';
import { EvalRequests } from './evalRequests';
import { Settings } from './settings';
import { PLAN_FILE, scanWorkspace } from './workspaceScan';
import { VERSION } from '../engine/version';

const DEBOUNCE_MS = 120;

function planError(message: string): Diagnostic {
  return {
    range: { start: { line: 0, character: 0 }, end: { line: 0, character: 0 } },
    severity: DiagnosticSeverity.Error,
    code: 'plan',
    source: SOURCE,
    message,
  };
}

function uriToPath(uri: string): string | undefined {
  try {
    return uri.startsWith('file:') ? fileURLToPath(uri) : undefined;
  } catch {
    return undefined;
  }
}

export function isPlanUri(uri: string): boolean {
  const p = uriToPath(uri);
  return !!p && path.basename(p) === PLAN_FILE;
}

export function startServer(connection: Connection, engine: () => Engine | undefined = () => undefined): void {
  setMixedPlanner(plannerOrFirstK);
  const documents = new TextDocuments(TextDocument);
  const settings = new Settings(connection);
  const facts = new FactsCache();
  const onDisk = new Set<string>(); // URIs of plan files found on disk (scan + watcher)
  const timers = new Map<string, NodeJS.Timeout>();
  const generation = new Map<string, number>();
  /** The plan summary of each published pass, shown as a code lens: information, not a squiggle. */
  const summaries = new Map<string, CodeLens[]>();
  let codeLensRefresh = false;
  let roots: string[] = [];
  let watchDynamic = false,
    configDynamic = false,
    foldersSupported = false,
    codeActionDisabledSupport = false;

  // Files are read only when regular and bounded (checkpoint/sidefile.ts): a FIFO plan or report
  // would otherwise hold a thread-pool thread forever, and four of them every file operation.
  const readText = async (file: string, max: number) => new TextDecoder().decode(await readRegularFile(file, max));
  const textOf = async (file: string) =>
    documents.get(pathToFileURL(file).toString())?.getText() ?? readText(file, MAX_PLAN_BYTES);
  const runs = new Runs(
    connection,
    engine,
    (uri) => settings.get(uri.startsWith('file:') ? uri : pathToFileURL(toPath(uri)).toString()),
    textOf,
    () => roots,
  );
  const backendFor = async (p: string) => (await settings.get(pathToFileURL(toPath(p)).toString())).backend;
  const evals = new EvalRequests(connection, backendFor, () => roots);

  async function planDoc(uri: string): Promise<PlanDoc | undefined> {
    const file = uriToPath(uri);
    if (!file) return undefined;
    const open = documents.get(uri);
    let text: string;
    try {
      text = open ? open.getText() : await readText(file, MAX_PLAN_BYTES);
    } catch {
      return undefined;
    }
    if (planTooLarge(text)) return undefined;
    const cfg = await settings.get(uri);
    const { plan } = parsePlan(text);
    const f: PlanFacts = {};
    if (plan.checkpoint) {
      f.checkpoint = await facts.checkpoint(file, plan);
      const r = await facts.report(file, plan);
      f.report = r.report;
      f.reportProblem = r.problem;
      f.reportSources = r.sources;
      if (plan.calibration) f.calibration = await calibrationFileProblems(file, plan, f.checkpoint);
    }
    return new PlanDoc(uri, file, text, open?.version ?? 0, f, cfg.defaults);
  }

  /** A plan over MAX_PLAN_BYTES (open or on disk) gets this one error and no further analysis. */
  async function planSizeProblem(uri: string): Promise<string | undefined> {
    const open = documents.get(uri);
    if (open) return planTooLarge(open.getText());
    const file = uriToPath(uri);
    const st = file ? await fsp.stat(file).catch(() => undefined) : undefined;
    return st?.isFile() && st.size > MAX_PLAN_BYTES ? planSizeMessage(st.size) : undefined;
  }

  async function publish(uri: string): Promise<void> {
    const gen = (generation.get(uri) ?? 0) + 1;
    generation.set(uri, gen);
    // Diagnostics of an older text must not go out under a newer version: a change during this
    // pass drops its result (the change scheduled a pass of its own).
    const version = documents.get(uri)?.version;
    const stale = () => generation.get(uri) !== gen || documents.get(uri)?.version !== version;
    let diagnostics: Diagnostic[];
    try {
      const tooLarge = await planSizeProblem(uri);
      if (tooLarge) {
        if (generation.get(uri) !== gen) return;
        void connection.sendDiagnostics({
          uri,
          version: documents.get(uri)?.version,
          diagnostics: [planError(tooLarge)],
        });
        return;
      }
      const p = await planDoc(uri);
      if (generation.get(uri) !== gen) return; // a newer pass is under way
      if (!p) {
        void connection.sendDiagnostics({ uri, diagnostics: [] });
        return;
      }
      const { threshold } = await settings.get(uri);
      // The planner's side of the comparison runs in a worker; the diagnostics themselves are synchronous.
      if (p.has(['budget'])) p.facts.plannerComparison = await comparePlanner(p);
      if (generation.get(uri) !== gen) return;
      diagnostics = planDiagnostics(p, threshold);
    } catch (e) {
      // A plan that breaks the checker (e.g. nesting deep enough to exhaust the parser's
      // stack) must still get an answer, not keep stale diagnostics in silence.
      const why = (e instanceof Error ? e.message : String(e)).split('\n')[0];
      diagnostics = [planError(`this plan cannot be checked: ${why}`)];
    }
    if (stale()) return;
    void connection.sendDiagnostics({ uri, version, diagnostics });
    const lenses = summaryLenses(diagnostics);
    if (JSON.stringify(lenses) !== JSON.stringify(summaries.get(uri) ?? [])) {
      summaries.set(uri, lenses);
      if (codeLensRefresh) void connection.sendRequest(CodeLensRefreshRequest.type).catch(() => undefined);
    }
  }

  function schedule(uri: string, delay = DEBOUNCE_MS): void {
    clearTimeout(timers.get(uri));
    timers.set(
      uri,
      setTimeout(() => {
        timers.delete(uri);
        publish(uri).catch((e) => connection.console.error(`diagnostics of ${uri}: ${(e as Error).stack ?? e}`));
      }, delay),
    );
  }

  const allPlans = () => new Set([...onDisk, ...documents.keys().filter(isPlanUri)]);
  const refreshAll = () => {
    for (const u of allPlans()) schedule(u);
  };

  connection.onInitialize((params): InitializeResult => {
    const c = params.capabilities;
    settings.supported = !!c.workspace?.configuration;
    watchDynamic = !!c.workspace?.didChangeWatchedFiles?.dynamicRegistration;
    configDynamic = !!c.workspace?.didChangeConfiguration?.dynamicRegistration;
    runs.workDoneProgressSupported = !!c.window?.workDoneProgress;
    evals.workDoneProgressSupported = runs.workDoneProgressSupported;
    foldersSupported = !!c.workspace?.workspaceFolders;
    codeActionDisabledSupport = !!c.textDocument?.codeAction?.disabledSupport;
    codeLensRefresh = !!c.workspace?.codeLens?.refreshSupport;
    const folders = params.workspaceFolders?.map((f) => uriToPath(f.uri)) ?? [
      params.rootUri ? uriToPath(params.rootUri) : (params.rootPath ?? undefined),
    ];
    roots = folders.filter((f): f is string => !!f);
    return {
      capabilities: {
        textDocumentSync: TextDocumentSyncKind.Incremental,
        hoverProvider: true,
        codeLensProvider: { resolveProvider: false },
        codeActionProvider: { codeActionKinds: [CodeActionKind.QuickFix, CodeActionKind.RefactorRewrite] },
        workspace: { workspaceFolders: { supported: true, changeNotifications: true } },
      },
      serverInfo: { name: 'loftq-lens', version: VERSION },
    };
  });

  connection.onInitialized(async () => {
    connection.onNotification(WorkDoneProgressCancelNotification.type, (p) => {
      runs.cancelProgress(p.token);
      evals.cancelProgress(p.token);
    });
    if (watchDynamic) {
      await connection.client.register(DidChangeWatchedFilesNotification.type, {
        watchers: [
          { globPattern: `**/${PLAN_FILE}` },
          { globPattern: `**/${REPORT_FILE}` },
          { globPattern: '**/*.safetensors' },
          { globPattern: '**/model.safetensors.index.json' },
        ],
      });
    }
    if (configDynamic) await connection.client.register(DidChangeConfigurationNotification.type, { section: 'loftq' });
    if (foldersSupported) {
      connection.workspace.onDidChangeWorkspaceFolders(async (e) => {
        for (const f of e.removed) {
          for (const u of [...onDisk])
            if (u.startsWith(f.uri + '/')) {
              onDisk.delete(u);
              void connection.sendDiagnostics({ uri: u, diagnostics: [] });
            }
        }
        const added = e.added.map((f) => uriToPath(f.uri)).filter((f): f is string => !!f);
        roots.push(...added);
        const found = await scanWorkspace(added);
        for (const f of found.reports) facts.known.add(f);
        for (const f of found.plans) {
          const u = pathToFileURL(f).toString();
          onDisk.add(u);
          schedule(u);
        }
      });
    }
    const found = await scanWorkspace(roots);
    for (const f of found.reports) facts.known.add(f);
    for (const f of found.plans) onDisk.add(pathToFileURL(f).toString());
    refreshAll();
  });

  connection.onDidChangeConfiguration(() => {
    settings.clear();
    refreshAll();
  });

  connection.onDidChangeWatchedFiles(({ changes }) => {
    let other = false;
    for (const ch of changes) {
      if (!isPlanUri(ch.uri)) {
        const file = uriToPath(ch.uri);
        const report = file && path.basename(file) === REPORT_FILE && ch.type !== FileChangeType.Deleted;
        if (report) facts.known.add(file);
        other = true;
        continue;
      }
      if (ch.type === FileChangeType.Deleted) {
        onDisk.delete(ch.uri);
        if (!documents.get(ch.uri)) void connection.sendDiagnostics({ uri: ch.uri, diagnostics: [] });
      } else {
        onDisk.add(ch.uri);
        schedule(ch.uri);
      }
    }
    // A report or checkpoint changed: every plan may refer to it (the facts cache re-reads by stamp).
    if (other) refreshAll();
  });

  documents.onDidChangeContent((e) => {
    if (isPlanUri(e.document.uri)) schedule(e.document.uri);
  });
  documents.onDidClose((e) => {
    if (isPlanUri(e.document.uri)) schedule(e.document.uri, 0);
  });

  connection.onHover(async (params) => {
    if (!isPlanUri(params.textDocument.uri)) return null;
    const p = await planDoc(params.textDocument.uri);
    return p ? planHover(p, params.position) : null;
  });

  connection.onCodeLens((params) => summaries.get(params.textDocument.uri) ?? []);

  connection.onCodeAction(async (params) => {
    if (!isPlanUri(params.textDocument.uri)) return [];
    const p = await planDoc(params.textDocument.uri);
    return p ? planCodeActions(p, params, codeActionDisabledSupport) : [];
  });

  connection.onRequest(Requests.inspect, async (params: InspectParams) => {
    if (!params || typeof params.checkpoint !== 'string')
      throw new ResponseError(ErrorCodes.InvalidParams, "'checkpoint' is required");
    try {
      return await inspectWithShard(await openCheckpoint(toPath(params.checkpoint)));
    } catch (e) {
      throw new ResponseError(ErrorCodes.InvalidParams, (e as Error).message);
    }
  });

  connection.onRequest(Requests.readReport, async (params: { path: string }): Promise<Report | null> => {
    if (!params || typeof params.path !== 'string')
      throw new ResponseError(ErrorCodes.InvalidParams, "'path' is required");
    let file = toPath(params.path);
    if (path.basename(file) === PLAN_FILE) file = path.join(path.dirname(file), REPORT_FILE);
    else if ((await fsp.stat(file).catch(() => undefined))?.isDirectory()) file = path.join(file, REPORT_FILE);
    let json: unknown;
    try {
      json = JSON.parse(await readText(file, MAX_REPORT_BYTES));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new ResponseError(ErrorCodes.InvalidParams, `${file}: ${(e as Error).message}`);
    }
    if (!isReport(json))
      throw new ResponseError(
        ErrorCodes.InvalidParams,
        `${file} is not a loftq report (version 1 with a 'matrices' list)`,
      );
    // A report the client shows is one the user cares about: plans of its checkpoint use it too.
    facts.known.add(file);
    refreshAll();
    return json;
  });

  connection.onRequest(Requests.plan, async (params: PlanRequestParams): Promise<PlanResult> => {
    if (!params || typeof params.plan !== 'string')
      throw new ResponseError(ErrorCodes.InvalidParams, "'plan' (a loftq.json URI or path) is required");
    const uri = params.plan.startsWith('file:') ? params.plan : pathToFileURL(toPath(params.plan)).toString();
    const tooLarge = await planSizeProblem(uri);
    if (tooLarge) throw new ResponseError(ErrorCodes.InvalidParams, `${params.plan}: ${tooLarge}`);
    const p = await planDoc(uri);
    if (!p) throw new ResponseError(ErrorCodes.InvalidParams, `${params.plan} cannot be read`);
    if (p.facts.checkpoint && !p.facts.checkpoint.ok)
      throw new ResponseError(ErrorCodes.InvalidParams, p.facts.checkpoint.message);
    const budget = params.budget ?? p.parsed.plan.budget;
    if (!budget)
      throw new ResponseError(
        ErrorCodes.InvalidParams,
        'no budget: give one or add "budget": { "avgBits": … } to the plan',
      );
    try {
      const plan = await runPlanner(p, budget, params);
      if (!plan)
        throw new ResponseError(
          ErrorCodes.InvalidParams,
          `no analysis of this plan's checkpoint (${p.path}): run ` +
            `'loftq analyze CKPT --bits 2,3,4,8 --rank 64 --spectrum 64 --report ${REPORT_FILE}' next to it`,
        );
      return {
        ...plan,
        planText: applyPlanToText(p.text, plan.choices, budget),
        replaces: replacedOverrides(p.text, plan.choices),
      };
    } catch (e) {
      if (e instanceof ResponseError) throw e;
      throw new ResponseError(ErrorCodes.InvalidParams, (e as Error).message);
    }
  });

  const contextDeps = {
    plans: () => [...allPlans()],
    planDoc,
    threshold: async (uri: string) => (await settings.get(uri)).threshold,
  };
  connection.onRequest(Requests.runContext, async (params: RunContextParams): Promise<RunContext> => {
    if (!params || typeof params.checkpoint !== 'string')
      throw new ResponseError(ErrorCodes.InvalidParams, "'checkpoint' is required");
    return runContext(toPath(params.checkpoint), contextDeps);
  });

  connection.onRequest(Requests.planLocation, async (params: PlanLocationParams): Promise<PlanLocation> => {
    if (!params || typeof params.checkpoint !== 'string' || typeof params.tensor !== 'string') {
      throw new ResponseError(ErrorCodes.InvalidParams, "'checkpoint' and 'tensor' are required");
    }
    return planLocation(toPath(params.checkpoint), params.tensor, contextDeps);
  });

  connection.onRequest(Requests.analyze, async (params: AnalyzeParams, token) => {
    const result = await runs.analyze(params, token);
    facts.known.add(result.reportPath);
    refreshAll();
    return result;
  });

  connection.onRequest(Requests.quantize, async (params: QuantizeParams, token) => {
    const result = await runs.quantize(params, token);
    // The output folder may be outside every watcher: the plans of this checkpoint learn of it now.
    facts.known.add(result.reportPath);
    refreshAll();
    return result;
  });

  connection.onRequest(Requests.eval, async (params: EvalParams, token) => {
    const result = await evals.eval(params, token);
    // The report's model block changed: readers of that report see it at once.
    if (result.reportPath) facts.known.add(result.reportPath);
    refreshAll();
    return result;
  });

  connection.onShutdown(() => {
    evals.abortAll();
    runs.abortAll();
    for (const t of timers.values()) clearTimeout(t);
  });

  documents.listen(connection);
  connection.listen();
}
