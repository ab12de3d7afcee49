// The `loftq/…` methods as typed LSP messages, rust-analyzer style: each names its
// parameters and result, so `connection.onRequest(Requests.quantize, …)` on the server and
// `client.sendRequest(Requests.quantize, …)` in an editor agree at compile time. The method
// strings and the payload types are lsp_ext.ts's; this file only pairs them. It is the one
// protocol file that imports an LSP package, so the numerical core never imports it.
// docs/lsp.md lists every method (test/unit/protocolMethods.test.ts keeps them in step).

import { NotificationType, RequestType } from 'vscode-languageserver-protocol';
import { Methods } from './lsp_ext';
import type {
  AnalyzeParams,
  AnalyzeResult,
  EvalParams,
  EvalResult,
  InspectParams,
  InspectResult,
  MatrixDoneParams,
  PlanLocation,
  PlanLocationParams,
  PlanRequestParams,
  PlanResult,
  QuantizeParams,
  QuantizeResult,
  Report,
  RunContext,
  RunContextParams,
  RunStateParams,
} from './lsp_ext';

export interface ReadReportParams {
  /** A report, a folder holding one, or a plan file (its folder's report). */
  path: string;
}

export const Requests = {
  quantize: new RequestType<QuantizeParams, QuantizeResult, void>(Methods.quantize),
  analyze: new RequestType<AnalyzeParams, AnalyzeResult, void>(Methods.analyze),
  inspect: new RequestType<InspectParams, InspectResult, void>(Methods.inspect),
  readReport: new RequestType<ReadReportParams, Report | null, void>(Methods.readReport),
  plan: new RequestType<PlanRequestParams, PlanResult, void>(Methods.plan),
  runContext: new RequestType<RunContextParams, RunContext, void>(Methods.runContext),
  eval: new RequestType<EvalParams, EvalResult, void>(Methods.eval),
  planLocation: new RequestType<PlanLocationParams, PlanLocation, void>(Methods.planLocation),
} as const;

/** Server → client. */
export const Notifications = {
  matrixDone: new NotificationType<MatrixDoneParams>(Methods.matrixDone),
  runState: new NotificationType<RunStateParams>(Methods.runState),
} as const;
