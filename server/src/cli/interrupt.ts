// SIGINT (Ctrl-C) and SIGTERM (`timeout`, systemd, Kubernetes) cancel a command the same
// way, whenever they arrive. The handlers are installed when the CLI starts, before any
// command runs: a signal that comes before a run has anything to clean up exits 130 at
// once; during a run it aborts the run's signal, the run removes what it wrote, and the
// CLI exits 130. A second signal exits 130 at once.

const controller = new AbortController();
let cleaning = false;

function onSignal(name: NodeJS.Signals): void {
  if (!cleaning || controller.signal.aborted) process.exit(130);
  process.stderr.write(`\ncancelling (${name})… (Ctrl-C again to exit at once)\n`);
  controller.abort();
}

// Installed on import: main.ts imports this module first, before the bundle's other modules load.
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

/** The signal a command passes to its run; from now on a signal cancels the run cleanly
 *  instead of exiting at once. */
export function interruptSignal(): AbortSignal {
  cleaning = true;
  return controller.signal;
}
