// When the language server dies, restart it — but not forever: a server that crashes
// again and again (bad install, a checkpoint that kills it on open) must stop and say so.

export interface RestartDecision {
  restart: boolean;
  /** Crashes inside the current window, this one included. */
  crashes: number;
}

export class RestartPolicy {
  private readonly times: number[] = [];

  constructor(
    readonly maxRestarts = 4,
    readonly windowMs = 3 * 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records a crash and says whether to restart. */
  crashed(): RestartDecision {
    const t = this.now();
    this.times.push(t);
    while (this.times.length && t - this.times[0] > this.windowMs) this.times.shift();
    return { restart: this.times.length <= this.maxRestarts, crashes: this.times.length };
  }
}
