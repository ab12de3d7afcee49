// SIGINT (Ctrl-C) and SIGTERM (`timeout`, systemd, Kubernetes) cancel a command the same
// way, whenever they arrive. The handlers are installed when the CLI starts, before any
// command runs: a signal that comes before a run has anything to clean up exits 130 at
// once; during a run it aborts the run's signal, the run removes what it wrote, and the
// CLI exits 130. A second signal exits 130 at once.
//
// dist/cli.js is a tiny entry (entry.ts) that installs them before it loads the CLI's
// bundle (dist/cli-main.js, megabytes to parse): both bundles hold this module, so its state
// lives on globalThis under a registered symbol and the handlers are installed once.

interface InterruptState {
  controller: AbortController;
  /** A run is cleaning up after itself: the first signal aborts it instead of exiting. */
  cleaning: boolean;
}

const KEY = Symbol.for('loftq.cli.interrupt');

function state(): InterruptState {
  const g = globalThis as unknown as Record<symbol, InterruptState | undefined>;
  const existing = g[KEY];
  if (existing) return existing;
  const s: InterruptState = { controller: new AbortController(), cleaning: false };
  g[KEY] = s;
  const onSignal = (name: NodeJS.Signals): void => {
    if (!s.cleaning || s.controller.signal.aborted) process.exit(130);
    process.stderr.write(`\ncancelling (${name})… (Ctrl-C again to exit at once)\n`);
    s.controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return s;
}

// Installed on import: entry.ts (and main.ts) import this module first.
state();

/** The signal a command passes to its run; from now on a signal cancels the run cleanly
 *  instead of exiting at once. */
export function interruptSignal(): AbortSignal {
  const s = state();
  s.cleaning = true;
  return s.controller.signal;
}
