// One plan file as the server sees it: text, syntax tree, parsed plan, and what it refers
// to (checkpoint header, report) — everything diagnostics, hovers and code actions need.

import type { Node } from 'jsonc-parser';
import { TextDocument } from 'vscode-languageserver-textdocument';
import type { Range } from 'vscode-languageserver';
import type { TensorInfo } from '../checkpoint';
import { JsonPath, parsePlan, ParsedPlan } from '../plan/planfile';
import type { MatrixSettings } from '../protocol/lsp_ext';
import { planTree, spanOfPath, SpanPart, Span } from './jsonRanges';
import { assignMatrices, PlanAssignment } from '../planInsight/planModel';
import type { PlannerComparison } from '../planInsight/plannerCompare';
import type { ReportIndex } from '../planInsight/reportIndex';
import { findNodeAtLocation } from 'jsonc-parser';
import type { CalibrationFileProblem } from './calibration';

export type CheckpointFacts =
  { ok: true; path: string; tensors: TensorInfo[] } | { ok: false; path: string; message: string };

export interface PlanFacts {
  checkpoint?: CheckpointFacts;
  report?: ReportIndex;
  /** Why the report next to the plan (or the plan's `analysis`) could not be used. */
  reportProblem?: string;
  /** The report files behind `report`, newest first. */
  reportSources?: string[];
  /** This plan next to the planner's (plannerCompare.ts), when diagnostics asked for it. */
  plannerComparison?: PlannerComparison | null;
  /** What the `calibration` block's files and the model say about a run of it (calibration.ts). */
  calibration?: CalibrationFileProblem[];
}

export class PlanDoc {
  readonly doc: TextDocument;
  readonly root: Node | undefined;
  readonly parsed: ParsedPlan;
  private assignmentCache?: PlanAssignment | null;

  constructor(
    readonly uri: string,
    readonly path: string,
    readonly text: string,
    version: number,
    readonly facts: PlanFacts,
    readonly base: MatrixSettings,
  ) {
    this.doc = TextDocument.create(uri, 'jsonc', version, text);
    this.root = planTree(text);
    this.parsed = parsePlan(text);
  }

  /** Null until the checkpoint header is known. */
  get assignment(): PlanAssignment | null {
    if (this.assignmentCache === undefined) {
      const ck = this.facts.checkpoint;
      this.assignmentCache = ck?.ok ? assignMatrices(this.parsed, this.base, ck.tensors) : null;
    }
    return this.assignmentCache;
  }

  has(path: JsonPath): boolean {
    return !!this.root && !!findNodeAtLocation(this.root, path);
  }

  span(path: JsonPath, part: SpanPart = 'value'): Span {
    return spanOfPath(this.root, path, part);
  }

  range(path: JsonPath, part: SpanPart = 'value'): Range {
    return this.spanRange(this.span(path, part));
  }

  spanRange(s: Span): Range {
    return { start: this.doc.positionAt(s.offset), end: this.doc.positionAt(s.offset + s.length) };
  }
}
