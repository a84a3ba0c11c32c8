// The real services' request limits, for the stand-ins (off unless a test or the fleet bench turns them on): a token bucket and a seat count.

/**
 * A token bucket: `rate` requests per `intervalMs`, at most `burst` at once. The shape of Vault's rate-limit quota
 * (sys/quotas/rate-limit: rate per interval) and of AWS's per-account API rate (Route53: 5 requests per second).
 */
export class RateLimit {
  readonly rate: number;
  readonly intervalMs: number;
  readonly burst: number;
  #tokens: number;
  #last: number;

  constructor(rate: number, intervalMs = 1000, burst = rate) {
    if (!(rate > 0 && intervalMs > 0 && burst >= 1))
      throw new RangeError(`a rate limit needs rate > 0, interval > 0 and burst >= 1 (got ${rate}/${intervalMs} ms, burst ${burst})`);
    this.rate = rate;
    this.intervalMs = intervalMs;
    this.burst = burst;
    this.#tokens = burst;
    this.#last = Date.now();
  }

  /** 0 when this request may go now (a token is spent), else the ms until the next token. */
  take(now = Date.now()): number {
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#last) * this.rate) / this.intervalMs);
    this.#last = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.#tokens) * this.intervalMs) / this.rate);
  }
}

/** At most `limit` requests in flight at once: the shape of the API server's concurrency seats (max-requests-inflight, APF). */
export class Seats {
  readonly limit: number;
  #busy = 0;
  /** The most seats ever held at once (for tests: the limit was reached, and never exceeded). */
  peak = 0;

  constructor(limit: number) {
    if (!(Number.isInteger(limit) && limit >= 1)) throw new RangeError(`a concurrency limit needs a whole number >= 1 (got ${limit})`);
    this.limit = limit;
  }

  /** Takes a seat and returns its release function, or undefined when every seat is taken. */
  take(): (() => void) | undefined {
    if (this.#busy >= this.limit) return undefined;
    this.#busy++;
    this.peak = Math.max(this.peak, this.#busy);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#busy--;
    };
  }
}
