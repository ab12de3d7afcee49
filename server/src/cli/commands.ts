// The table of subcommands. Each command is in its own file; add a line here to register one.

export interface Command {
  summary: string;
  run(argv: string[]): Promise<number>;
}

import { inspectCommand } from './commands/inspect';
import { lspCommand } from './commands/lsp';
import { planCommand } from './commands/plan';
import { quantizeCommand } from './commands/quantize';
import { analyzeCommand } from './commands/analyze';
import { mergeCommand } from './commands/merge';
import { evalCommand } from './commands/eval';

export const COMMANDS: Record<string, Command> = {
  inspect: inspectCommand,
  lsp: lspCommand,
  quantize: quantizeCommand,
  analyze: analyzeCommand,
  plan: planCommand,
  merge: mergeCommand,
  eval: evalCommand,
};
