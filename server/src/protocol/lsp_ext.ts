// The one contract between the engine, the CLI, the language server, the VS Code client
// and the webviews: report schema, plan-file schema, custom LSP methods and webview
// messages. Pure types and constants — it imports only the pure registry of domain facts
// (../registry) — so every side (Node, browser) can import it without pulling in vscode or
// LSP packages. In the manner of rust-analyzer's editors/code/src/lsp_ext.ts.

// ---------------------------------------------------------------------------------------
// Quantization settings and the report (`loftq-report.json`)
// ---------------------------------------------------------------------------------------

import type { BackendChoice, BackendName, ExportFormat, MatrixSettings, Quantizer, ScaleStorage } from '../registry';
export type { BackendChoice, BackendName, Bits, ExportFormat, MatrixSettings, Quantizer } from '../registry';
export { DEFAULT_SETTINGS, SUPPORTED_BITS } from '../registry';

export interface MatrixReport extends MatrixSettings {
  /** Tensor name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  name: string;
  /** [out, in]. */
  shape: [number, number];
  /** The input dtype (the backbone and adapters are written in it). */
  dtype: string;
  /** ‖W − Q − (α/r)·B·A‖_F / ‖W‖_F of the files as written. */
  relError: number;
  /** The same after each LoftQ iteration (float32 compute, before the output cast). */
  relErrorPerIter: number[];
  /** QLoRA baseline ‖W − quantize(W)‖_F / ‖W‖_F. */
  qloraRelError: number;
  frobeniusNorm: number;
  seconds: number;
  /** Where the seconds went: read (+convert), quantize, svd, lowRank (B·A and errors), write. */
  phases?: Record<string, number>;
  /** Error after bitsandbytes re-quantizes the stored backbone to NF4 (block 64) at load. */
  nf4ReloadRelError?: number;
  /** Set when the matrix was skipped (e.g. NaN/Inf); the tensor is then copied unchanged. */
  skipped?: string;
  /** With calibration statistics G = SSᵀ of the layer's input: ‖(W − Q − B·A)·S‖_F / ‖W·S‖_F. */
  outputRelError?: number;
  /** The QLoRA counterpart ‖(W − quantize(W))·S‖_F / ‖W·S‖_F. */
  qloraOutputRelError?: number;
  /** The LoftQ iteration (1-based) whose factors were kept (lowest output error with calibration). */
  bestIter?: number;
}

export interface ReportTotals {
  matrices: number;
  parameters: number;
  seconds: number;
  /** Codes + fp32 scales of the quantized matrices (as `--format packed` writes them;
   *  registry/bytes.ts REPORT_SCALES) + every other tensor as stored. The planner and the
   *  editor count double-quantized scales instead and say so. */
  backboneBytes: number;
  /** Both LoRA factors in the checkpoint's float width. */
  adapterBytes: number;
  /** Sum of the matrices' phases (CPU seconds across workers), plus the final assembly. */
  phases?: Record<string, number>;
  /** GEMM work issued on the backend, and its rate over the run's SVD + low-rank time. */
  gemmGflop?: number;
}

export interface Report {
  version: 1;
  tool: string;
  checkpoint: string;
  backend: BackendName;
  settings: MatrixSettings;
  matrices: MatrixReport[];
  totals: ReportTotals;
  /** `loftq analyze` only: one report per analysed bit width lives in `analyses`. */
  analyses?: AnalysisEntry[];
  /** Where calibration statistics came from, when the run was calibrated. */
  calibration?: CalibrationInfo;
  /** A calibrated analysis' probe of each matrix's output gain: quantize(W) at `bits` for one matrix
   *  at a time, KL to the original over the first `tokens` calibration tokens. */
  outputSensitivity?: { bits: number; sequences: number; tokens: number };
  /** Model-level fidelity, when `loftq eval` (or a calibrated run's evaluation) ran. */
  model?: ModelEval;
}

/** Where calibrated LoftQ's statistics come from (one source) — `loftq quantize --calib FILE |
 *  --calib-generate N,LEN | --imatrix FILE`, and `QuantizeParams.calibration`. */
export interface CalibrationParams {
  /** JSON array of token-id sequences (`[[1, 403, …], …]`), or a `.txt` tokenized with the checkpoint's
   *  tokenizer.json. */
  file?: string;
  /** Sample this many sequences of this many tokens from the original model (seeded). */
  generate?: { sequences: number; length: number; seed?: number };
  /** llama.cpp importance matrix (GGUF or legacy .dat): diagonal statistics. */
  imatrix?: string;
  /** Ridge λ relative to mean(diag G) in S·Sᵀ = G + λI; default 0.01. */
  ridge?: number;
  /** The calibration pass's products: 'auto' (default: bf16 on the native backend with
   *  AVX512-BF16, else float32) or 'float32' (always). */
  products?: 'auto' | 'float32';
}

export interface CalibrationInfo {
  /** 'tokens' (JSON ids), 'text' (tokenized .txt), 'generated', 'imatrix'. */
  source: 'tokens' | 'text' | 'generated' | 'imatrix';
  file?: string;
  sequences: number;
  tokens: number;
  /** Inputs at most this wide get a full G; wider ones keep only its diagonal. */
  fullStatMaxDim: number;
  ridge: number;
  /** 'generated': the sampler's seed (--calib-seed). */
  seed?: number;
  /** The calibration pass's products (token sources): 'bf16' on the native backend with
   *  AVX512-BF16 (activations and weights rounded to bf16, float32 sums), else 'float32'. */
  products?: 'bf16' | 'float32';
}

/** Output-space comparison with the original model (llama-perplexity --kl-divergence style). */
export interface ModelSideEval {
  /** Mean KL(original ‖ this) in nats per token. */
  kl: number;
  klMedian: number;
  klP99: number;
  /** Percentage of positions (0–100) whose top-1 token equals the original's. */
  top1: number;
  ppl: number;
  /** ln(ppl / original ppl). */
  lnPplRatio: number;
}

export interface ModelEval {
  tokensFile?: string;
  /** Held-out tokens sampled from the original model (no tokensFile): sizes and the sampler's seed. */
  generated?: { sequences: number; length: number; seed: number };
  sequences: number;
  tokens: number;
  original: { ppl: number };
  loftq: ModelSideEval;
  qlora: ModelSideEval;
}

/** One (bits) column of an analysis: errors for several bit widths without writing weights. */
export interface AnalysisEntry {
  bits: number;
  rank: number;
  iters: number;
  quantizer: Quantizer;
  blockSize: number;
  matrices: {
    name: string;
    shape: [number, number];
    relError: number;
    qloraRelError: number;
    frobeniusNorm: number;
    /** Singular values of the final residual W − Q (top max-rank), for rank prediction. */
    residualSpectrum?: number[];
    /** Calibrated analyses (the report's `calibration`), as MatrixReport's: ‖(W − Q − B·A)·S‖_F / ‖W·S‖_F. */
    outputRelError?: number;
    qloraOutputRelError?: number;
    /** ‖W·S‖_F, so that output errors add up across matrices. */
    outputNorm?: number;
    /** Singular values of (W − Q)·S for the kept iterate (top max-rank): rank prediction in output terms. */
    outputSpectrum?: number[];
    bestIter?: number;
    /** KL (nats per token) per unit ‖(W − Q − B·A)·S‖²_F: the model's output with this matrix quantized
     *  alone, over its output error (report.outputSensitivity says how it was probed). */
    outputGain?: number;
  }[];
}

// ---------------------------------------------------------------------------------------
// The plan file (`loftq.json`, JSON with comments)
// ---------------------------------------------------------------------------------------

export interface PlanOverride {
  match: string;
  bits?: number;
  rank?: number;
  iters?: number;
  quantizer?: Quantizer;
  blockSize?: number;
  /** Leave the matched matrices unquantized. */
  skip?: boolean;
}

export interface PlanBudget {
  avgBits?: number;
  bytes?: number;
}

export interface PlanFile {
  checkpoint: string;
  defaults?: Partial<MatrixSettings>;
  overrides?: PlanOverride[];
  budget?: PlanBudget;
  targets?: string[];
  /** A `loftq-report.json` (relative to the plan) whose errors the editor shows for this plan; without it,
   *  the newest reports of the checkpoint the server knows of (next to the plan, runs' output folders). */
  analysis?: string;
  /** The output format a run of this plan writes (`--format` wins on the CLI). */
  format?: ExportFormat;
  /** Calibrated LoftQ for a run of this plan: the CLI's calibration options (and
   *  QuantizeParams.calibration) field by field, files relative to the plan (plan/calibration.ts).
   *  A calibration option on the CLI, or QuantizeParams.calibration, replaces it. */
  calibration?: CalibrationParams;
}

// ---------------------------------------------------------------------------------------
// Progress and problems (engine → CLI / server / client)
// ---------------------------------------------------------------------------------------

export interface ProgressEvent {
  /** 0-based index of the matrix that just started or finished. */
  index: number;
  total: number;
  name: string;
  phase: 'start' | 'done' | 'write';
  /** Estimated seconds remaining, when known. */
  etaSeconds?: number;
}

// ---------------------------------------------------------------------------------------
// Custom LSP methods (namespaced `loftq/…`)
// ---------------------------------------------------------------------------------------

export interface QuantizeParams {
  /** File path of a .safetensors file or a sharded checkpoint folder. */
  checkpoint: string;
  out: string;
  settings: MatrixSettings;
  /** Plan file whose defaults/overrides apply (optional). */
  plan?: string;
  backend?: BackendChoice;
  format?: ExportFormat;
  /** Worker threads; 0 or absent: auto (one per core, the `loftq.workers` setting first). */
  workers?: number;
  /** Calibrated (activation-aware) LoftQ: statistics of each layer's input from these tokens. */
  calibration?: CalibrationParams;
  /** Work-done progress token created by the client (window/workDoneProgress/create). */
  workDoneToken?: string | number;
  /**
   * The server refuses a run whose checkpoint, output, plan or calibration files lie outside the
   * workspace folders (real paths), with InvalidParams and `data: { outsideWorkspace: path }`.
   * The client sets this only after the user confirmed those paths.
   */
  confirmedOutsideWorkspace?: boolean;
}

export interface QuantizeResult {
  reportPath: string;
  out: string;
  report: Report;
}

export const Methods = {
  /** request QuantizeParams → QuantizeResult. Cancellable; reports work-done progress. */
  quantize: 'loftq/quantize',
  /** request { checkpoint } → InspectResult. Reads the header only. */
  inspect: 'loftq/inspect',
  /** request { path } → Report | null. Reads an existing loftq-report.json. */
  readReport: 'loftq/readReport',
  /** request PlanRequestParams → PlanResult (mixed-precision planner). */
  plan: 'loftq/plan',
  /** request EvalParams → EvalResult (`loftq eval`). Cancellable; reports work-done progress. */
  eval: 'loftq/eval',
  /** notification server → client: one matrix finished during a run. */
  matrixDone: 'loftq/matrixDone',
  /** notification server → client: a run started / ended. */
  runState: 'loftq/runState',
  /** request RunContextParams → RunContext: what a run of this checkpoint would meet, before any question. */
  runContext: 'loftq/runContext',
  /** request AnalyzeParams → AnalyzeResult: errors at several bit widths, no weights written. Cancellable; progress. */
  analyze: 'loftq/analyze',
  /** request PlanLocationParams → PlanLocation: where a checkpoint's plan decides one tensor's settings. */
  planLocation: 'loftq/planLocation',
} as const;

export interface AnalyzeParams {
  checkpoint: string;
  /** Where the report goes (`…/loftq-report.json`); written whole or not at all. */
  report: string;
  bits: number[];
  rank: number;
  iters: number;
  quantizer: Quantizer;
  blockSize: number;
  /** Top singular values kept per residual, for the planner's smaller-rank predictions (default 64). */
  spectrum?: number;
  /** A plan whose `targets` select the matrices (its settings do not apply to an analysis; its
   *  `calibration` block does, unless `calibration` is given here). */
  plan?: string;
  backend?: BackendChoice;
  workers?: number;
  /** Calibrated analysis, as QuantizeParams.calibration: the report then carries output errors and
   *  the planner minimises predicted output error. */
  calibration?: CalibrationParams;
  workDoneToken?: string | number;
  /** As QuantizeParams.confirmedOutsideWorkspace. */
  confirmedOutsideWorkspace?: boolean;
}

export interface AnalyzeResult {
  reportPath: string;
  report: Report;
}

export interface PlanLocationParams {
  checkpoint: string;
  /** Tensor name, e.g. `model.layers.3.mlp.down_proj.weight`. */
  tensor: string;
}

export interface PlanRange {
  start: { line: number; character: number };
  end: { line: number; character: number };
}

export interface PlanLocation {
  /** The module name an override for this tensor matches (the tensor name without `.weight`). */
  module: string;
  /** The loftq.json that plans the checkpoint, when there is one. */
  plan?: string;
  /** The override that decides the tensor's settings (the last that matches), by its index in `overrides`. */
  override?: { index: number; range: PlanRange };
  /** Where the defaults are (or the `checkpoint` line when the plan has none), when no override matches. */
  defaults?: PlanRange;
}

export interface RunContextParams {
  /** A .safetensors file (a shard of a sharded checkpoint stands for the whole), a sharded folder, or a
   *  loftq.json (its checkpoint, with that plan). */
  checkpoint: string;
}

/** Where a plan problem is, for "Open Plan". */
export interface PlanProblemAt {
  message: string;
  line: number;
  character: number;
}

export interface RunContext {
  /** The checkpoint a run would read: the folder when `checkpoint` was one shard of it. */
  checkpoint: string;
  /** Set when `checkpoint` named one shard of the sharded checkpoint `checkpoint`. */
  shardOf?: string;
  /** Why no run of this checkpoint can succeed (unreadable, corrupt, pickle…), one line. */
  problem?: string;
  /** Matrices a run without a plan quantizes (the default targets). */
  matrices: number;
  /** Largest rank every one of them allows: the smallest min(out, in), and a matrix that has it. */
  maxRank?: { rank: number; matrix: string };
  /** Why the model cannot run a forward pass here (no or an unsupported config.json): calibration from
   *  tokens or sampling, and `loftq/eval`, would be refused. */
  forwardPassProblem?: string;
  /** The loftq.json whose `checkpoint` is this one (nearest to it when several). */
  plan?: {
    file: string;
    /** What the plan's `defaults` set (the questions a run asks skip these). */
    defaults: Partial<MatrixSettings>;
    overrides: number;
    /** The plan's budget, when it has one. */
    budget?: PlanBudget;
    /** The plan's output format, when it sets one (a run with the plan writes it). */
    format?: ExportFormat;
    /** The plan's calibration block as written (files relative to the plan), when it has one. */
    calibration?: CalibrationParams;
    /** Matrices the plan quantizes (its targets, minus skipped). */
    matrices: number;
    /** Largest rank the matrices whose rank the run's settings decide allow. */
    maxRank?: { rank: number; matrix: string };
    /** The plan's first Error diagnostic: a run with it would be refused. */
    error?: PlanProblemAt;
  };
}

/** `loftq eval ORIGINAL OUT --tokens FILE` as a request: runs on a worker thread. */
export interface EvalParams {
  /** The checkpoint that was quantized (path or file URI). */
  original: string;
  /** The output folder of a quantize run. */
  out: string;
  /** JSON array of token-id sequences, or a .txt file tokenized with the original's tokenizer.json. */
  tokens?: string;
  /** Held-out tokens sampled from the original model instead of a file (`loftq eval --generate N,LEN`).
   *  The seed defaults to the report's calibration seed + 1 (registry heldOutSeed), never the calibration's.
   *  Neither `tokens` nor `generate`: the registry's EVAL_SPECS sizes, sampled so. */
  generate?: { sequences: number; length: number; seed?: number };
  backend?: BackendChoice;
  /** Record the result as the `model` block of OUT/loftq-report.json (default true). */
  updateReport?: boolean;
  workDoneToken?: string | number;
  /** As for QuantizeParams: paths outside the workspace folders need the user's confirmation. */
  confirmedOutsideWorkspace?: boolean;
}

export interface EvalResult {
  model: ModelEval;
  /** The report written, when updateReport. */
  reportPath?: string;
  seconds: number;
}

export interface InspectParams {
  checkpoint: string;
}

export interface TensorSummary {
  name: string;
  dtype: string;
  shape: number[];
  parameters: number;
  bytes: number;
  file: string;
}

export interface InspectResult {
  checkpoint: string;
  files: string[];
  metadata: Record<string, string>;
  tensors: TensorSummary[];
  totals: {
    tensors: number;
    parameters: number;
    bytes: number;
    byDtype: Record<string, { tensors: number; parameters: number; bytes: number }>;
  };
  /** loftq/inspect of a single file that one index in its folder lists among several shards. */
  shard?: ViewerShard;
}

export interface MatrixDoneParams {
  runId: string;
  index: number;
  total: number;
  matrix: MatrixReport;
}

export interface RunStateParams {
  runId: string;
  checkpoint: string;
  out: string;
  state: 'started' | 'finished' | 'cancelled' | 'failed';
  message?: string;
  reportPath?: string;
}

export interface PlanRequestParams {
  /** Plan file URI or path; its checkpoint and budget are used unless given here. */
  plan: string;
  budget?: PlanBudget;
  bits?: number[];
  ranks?: number[];
  objective?: 'absolute' | 'relative';
}

export interface PlanChoice {
  name: string;
  bits: number;
  rank: number;
  predictedError: number;
  bytes: number;
  /** True when a LoftQ run at exactly this (bits, rank) gave predictedError; false when predicted from a larger
   *  rank. */
  exact?: boolean;
}

export interface PlanSummary {
  error: number;
  /** What the budget counted: codes + scales, plus adapters for a byte budget (docs/planner.md). */
  bytes: number;
  /** Backbone bits per weight, codes + scales only, as the LoftQ and LQ-LoRA papers quote "2.5 bits". */
  avgBits: number;
  /** The LoRA adapters of the plan, shown beside avgBits (counted in byte budgets). */
  adapterBytes?: number;
}

export type ErrorMeasure = 'output' | 'weight';

/** How the planner's error is named to users (`loftq plan`, the editor's plan diff and code action). */
export const ERROR_MEASURE_LABELS: Record<ErrorMeasure, string> = {
  output: 'output error (calibrated)',
  weight: 'weight error',
};

export interface PlanResult {
  budget: PlanBudget;
  plan: PlanSummary;
  baselines: {
    uniform: PlanSummary & { bits: number };
    firstK: PlanSummary & { k: number };
  };
  optimalityGap: number;
  /** What every `error` here sums: 'output' — ‖(W − Q − A·Bᵀ)·S‖²_F in the calibration metric (the
   *  analysis was calibrated), 'weight' — ‖W − Q − A·Bᵀ‖²_F. `ERROR_MEASURE_LABELS` names them. */
  errorMeasure?: ErrorMeasure;
  choices: PlanChoice[];
  overrides: PlanOverride[];
  /** `loftq/plan` only: the plan file's text with the planner's choices applied (comments kept). */
  planText?: string;
  /** `loftq/plan` only: the user's overrides planText changes, one line each
   *  (`'model.layers.3.mlp.down_proj' bits 4 → 2 (1 matrix)`); entries the plan agrees with stay. */
  replaces?: string[];
}

// ---------------------------------------------------------------------------------------
// Webview messages (extension host ↔ webview). Large numeric data goes as typed arrays.
// ---------------------------------------------------------------------------------------

/** Weight-space errors (loftq, qlora, their ratio) and, with calibration, output-space ones. */
export type HeatmapMetric = 'loftq' | 'qlora' | 'ratio' | 'output' | 'qloraOutput' | 'outputRatio';
/** Colour range: this report's values (far-out ones flagged), or one fixed range for every report. */
export type HeatmapScale = 'data' | 'fixed';

/** What the heatmap header says about the run (fields absent while a run is live). */
export interface HeatmapSummary {
  checkpoint: string;
  out?: string;
  reportPath?: string;
  settings?: MatrixSettings;
  backend?: string;
  seconds?: number;
  /** When the report was written (ms since the epoch). */
  writtenAt?: number;
  calibration?: CalibrationInfo;
  model?: ModelEval;
  /** The quantized matrices' stored bytes (registry/bytes.ts: HQQ as it stores and loads them,
   *  codebooks as `--format packed` stores them) and their weights. */
  quantized?: { bytes: number; parameters: number; storage: ScaleStorage };
  /** The folder holds a quantize run's weights: the header offers "Evaluate model outputs". */
  evaluable?: boolean;
}

export interface HeatmapCell {
  name: string;
  layer: number;
  module: string;
  shape: [number, number];
  bits: number;
  rank: number;
}

export type ToHeatmap =
  | {
      type: 'init';
      title: string;
      metric: HeatmapMetric;
      layers: number[];
      modules: string[];
      cells: HeatmapCell[];
      unplaced: HeatmapCell[];
      /** Per cell (same order as cells then unplaced): loftq, qlora relErrors. */ loftq: Float32Array;
      qlora: Float32Array;
      /** Per cell: iteration errors, flattened with offsets. */ perIter: Float32Array;
      perIterOffsets: Uint32Array;
      /** The report shown, when there is one (persisted for reload); absent while a run is live. */
      reportPath?: string;
      live?: boolean;
      /** How a live run ended without a report. */ ended?: 'cancelled' | 'failed';
      summary?: HeatmapSummary;
      /** An analysis report's widths (more than one: the webview offers a switch) and the one shown. */
      widths?: number[];
      bits?: number;
    }
  | { type: 'matrix'; matrix: MatrixReport }
  /** More cells during a live run, in the same typed-array form as `init`. */
  | ({ type: 'append' } & HeatmapBatch)
  | { type: 'theme' };

/** Cells plus their numbers as typed arrays (per-iteration errors flattened with offsets, length cells + 1). */
export interface HeatmapBatch {
  cells: HeatmapCell[];
  loftq: Float32Array;
  qlora: Float32Array;
  perIter: Float32Array;
  perIterOffsets: Uint32Array;
  /** Output-space errors (NaN where a matrix has none); absent when no matrix has them. */
  output?: Float32Array;
  qloraOutput?: Float32Array;
  /** MatrixReport.bestIter per cell, 0 where unknown. */
  bestIter?: Uint16Array;
}

/** What a heatmap webview persists (getState/setState) so a reload can reopen it from the report. */
export interface HeatmapState {
  reportPath?: string;
  /** The analysed width shown (analysis reports). */
  bits?: number;
  metric?: HeatmapMetric;
  scale?: HeatmapScale;
}

export type FromHeatmap =
  | { type: 'ready' }
  | { type: 'reveal'; name: string; createOverride: boolean }
  | { type: 'openTensor'; name: string }
  | { type: 'metric'; metric: HeatmapMetric }
  /** Run "Evaluate Model Outputs" on the shown output folder. */
  | { type: 'evaluate' }
  /** Show another analysed width of an analysis report. */
  | { type: 'bits'; bits: number };

export type ToViewer =
  | {
      type: 'header';
      inspect: InspectResult;
      errors?: Record<string, { loftq: number; qlora: number; bits: number }>;
      /** The file is a LoftQ run's output or adapter: the viewer says whose and offers no Quantize. */
      origin?: ViewerOrigin;
    }
  /** The file could not be read as a checkpoint: the viewer offers no Quantize. */
  | { type: 'error'; message: string }
  /** Scroll to and highlight one tensor (heatmap → "show in viewer"). */
  | { type: 'select'; name: string };

export interface ViewerOrigin {
  /** 'output': a LoftQ output's backbone (its folder holds loftq_init/); 'adapter': LoRA factors. */
  kind: 'output' | 'adapter';
  /** The checkpoint the run's report names, when the report could be read. */
  of?: string;
}

export interface ViewerShard {
  /** The index file (`model.safetensors.index.json`) that lists this shard. */
  index: string;
  /** 1-based position of this file among the index's shards, and how many there are. */
  number: number;
  of: number;
  /** Tensors in the whole checkpoint. */
  tensors: number;
}

/** `quantize` from a shard quantizes the whole checkpoint; `openIndex` opens the shard's index file. */
export type FromViewer = { type: 'ready' } | { type: 'quantize' } | { type: 'reopenAsText' } | { type: 'openIndex' };
