// Bounded restart with exponential backoff: a crash-looping sidecar stops being restarted and the user is told.

export interface RestartPolicyOptions {
  /** first delay */
  baseDelayMs: number;
  maxDelayMs: number;
  /** restarts allowed inside the window before giving up */
  maxRestarts: number;
  windowMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicyOptions = {
  baseDelayMs: 500,
  maxDelayMs: 8000,
  maxRestarts: 5,
  windowMs: 3 * 60_000,
};

export class RestartPolicy {
  private readonly crashes: number[] = [];

  constructor(private readonly options: RestartPolicyOptions = DEFAULT_RESTART_POLICY) {}

  /** Records a crash at `now`; returns the delay before the next start, or null when the budget is spent. */
  onCrash(now: number): number | null {
    this.crashes.push(now);
    while (this.crashes.length > 0 && now - (this.crashes[0] ?? now) > this.options.windowMs) this.crashes.shift();
    if (this.crashes.length > this.options.maxRestarts) return null;
    const delay = this.options.baseDelayMs * 2 ** (this.crashes.length - 1);
    return Math.min(delay, this.options.maxDelayMs);
  }

  /** A manual restart forgets earlier crashes. */
  reset(): void {
    this.crashes.length = 0;
  }

  get recentCrashes(): number {
    return this.crashes.length;
  }
}

/** The last `capacity` lines written to a stream, for error reports. */
export class LineRing {
  private readonly lines: string[] = [];
  private partial = '';

  constructor(private readonly capacity = 100) {}

  push(chunk: string): string[] {
    const parts = (this.partial + chunk).split(/\r?\n/);
    this.partial = parts.pop() ?? '';
    for (const line of parts) {
      this.lines.push(line);
      if (this.lines.length > this.capacity) this.lines.shift();
    }
    return parts;
  }

  tail(n = this.capacity): string[] {
    const all = this.partial === '' ? this.lines : [...this.lines, this.partial];
    return all.slice(-n);
  }
}
