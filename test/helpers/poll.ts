// Waiting in tests: poll for the effect a test waits for, with a deadline, instead of sleeping a fixed time.
import { setTimeout as sleep } from 'node:timers/promises';

export interface UntilOptions {
  /** What is awaited, for the error at the deadline: "change C1 to go INSYNC". */
  what: string;
  /** Give up after this long (default 5000 ms); the condition is asked once more at the deadline. */
  timeoutMs?: number;
  /** Pause between two asks (default 20 ms). */
  intervalMs?: number;
}

/**
 * Resolves as soon as `condition` holds; rejects naming `what` when it still does not hold at the deadline.
 * A condition that throws fails at once: "not yet" is `false`, an error is an error.
 */
export async function until(condition: () => Promise<boolean> | boolean, { what, timeoutMs = 5000, intervalMs = 20 }: UntilOptions): Promise<void> {
  const started = performance.now();
  let asked = 0;
  for (;;) {
    asked++;
    if (await condition()) return;
    const left = started + timeoutMs - performance.now();
    if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (asked ${asked} times)`);
    await sleep(Math.min(intervalMs, left));
  }
}
