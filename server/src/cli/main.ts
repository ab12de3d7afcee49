#!/usr/bin/env node
// `loftq` — the headless front end over the engine. Each subcommand lives in its own
// file under commands/; this file only dispatches and maps errors to exit codes
// (0 ok, 1 runtime error, 2 bad usage or bad input) with one clear line, never a stack.

// Bundled to dist/cli-main.js, which dist/cli.js (entry.ts) loads once the signal handlers exist;
// imported first here too, so that this bundle run directly has them before anything else loads.
import './interrupt';
import { COMMANDS } from './commands';
import { exitCodeOf, oneLine } from './errors';

const USAGE = `usage: loftq <command> [options]

commands:
${Object.entries(COMMANDS)
  .map(([n, c]) => `  ${n.padEnd(9)} ${c.summary}`)
  .join('\n')}

Run 'loftq <command> --help' for a command's options.`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h') {
    process.stdout.write(USAGE + '\n');
    return name ? 0 : 2;
  }
  if (name === '--version') {
    process.stdout.write(`${require('../../../package.json').version}\n`);
    return 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`loftq: unknown command '${name}'\n${USAGE}\n`);
    return 2;
  }
  return cmd.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`loftq: ${oneLine(e)}\n`);
    if (process.env.LOFTQ_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    process.exitCode = exitCodeOf(e);
  },
);
