// Adaptive debounce: wait about as long as the user's usual pause between keystrokes, so a fast typist does not
// fire a request per key and a slow one does not wait needlessly. A fixed delay overrides it.

export interface AdaptiveDebounceOptions {
  minMs: number;
  maxMs: number;
  /** keystroke intervals remembered */
  window: number;
  /** intervals longer than this are pauses, not typing rhythm */
  pauseMs: number;
}

export const DEFAULT_DEBOUNCE: AdaptiveDebounceOptions = { minMs: 60, maxMs: 350, window: 30, pauseMs: 1500 };

export class AdaptiveDebounce {
  private readonly intervals: number[] = [];
  private lastKeystroke: number | null = null;

  constructor(private readonly options: AdaptiveDebounceOptions = DEFAULT_DEBOUNCE) {}

  /** Call on every document change made by typing. */
  recordKeystroke(now: number): void {
    if (this.lastKeystroke !== null) {
      const gap = now - this.lastKeystroke;
      if (gap > 0 && gap < this.options.pauseMs) {
        this.intervals.push(gap);
        if (this.intervals.length > this.options.window) this.intervals.shift();
      }
    }
    this.lastKeystroke = now;
  }

  /**
   * The delay before asking: 1.5 × the median typing interval (a pause noticeably longer than usual means the
   * user is waiting), clamped; with a fixed setting, that. `lastLatencyMs` (the sidecar's recent answer time)
   * shortens the wait a little when the sidecar is slow, since the request costs nothing while it is cancelled.
   */
  delayMs(fixedMs: number | null, lastLatencyMs: number | null = null): number {
    if (fixedMs !== null) return Math.max(0, fixedMs);
    const { minMs, maxMs } = this.options;
    if (this.intervals.length < 3) return Math.round((minMs + maxMs) / 2);
    const sorted = [...this.intervals].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)] ?? minMs;
    let delay = 1.5 * median;
    if (lastLatencyMs !== null && lastLatencyMs > 500) delay *= 0.75;
    return Math.round(Math.min(maxMs, Math.max(minMs, delay)));
  }
}

/** Resolves true after `ms`, or false as soon as the cancellation event fires. */
export function sleepCancellable(ms: number, onCancel: (listener: () => void) => { dispose(): void }): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      sub.dispose();
      resolve(true);
    }, ms);
    const sub = onCancel(() => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}
