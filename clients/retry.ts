// Bounded retries with exponential backoff and full jitter, above the server's Retry-After; shared by the Vault and Kubernetes clients.
import { setTimeout as sleep } from 'node:timers/promises';

export interface RetryPolicy {
  /** Attempts in all, the first included (1 = no retry). */
  attempts: number;
  /**
   * Backoff before retry n: a random delay in [0, ceiling], ceiling = min(maxMs, baseMs * 2^(n-1)) (full jitter). When the
   * server says Retry-After, that (capped at maxMs) is the floor and the jitter goes on top: see backoffMs.
   */
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseMs: 200, maxMs: 5000 };

/** What a failed attempt means: retry it (why, for the final message), or give up now. */
export type Verdict = { retry: true; reason: string; afterMs?: number } | { retry: false };

/** Raised when every attempt failed with a retryable error; `cause` is the last one. */
export class RetriesExhausted extends Error {
  readonly attempts: number;
  readonly reason: string;
  constructor(what: string, attempts: number, reason: string, cause: unknown) {
    super(`${what}: gave up after ${attempts} attempts (${reason})`, { cause });
    this.name = 'RetriesExhausted';
    this.attempts = attempts;
    this.reason = reason;
  }
}

/** Test seams: where the wait and the randomness come from. */
export interface RetryHooks {
  sleep?: (ms: number) => Promise<unknown>;
  random?: () => number;
}

/**
 * The wait before retry n (1-based). Without a server hint: full jitter in [0, ceiling]. With Retry-After: never sooner
 * than the server asked (capped at maxMs, so attempts stay bounded in time), plus a random share of
 * max(ceiling, floor) on top, so that a fleet refused together (an APF or quota 429 hands every client the same
 * Retry-After) comes back spread over a window as wide as the hint instead of as one wave at floor.
 */
export function backoffMs(policy: RetryPolicy, n: number, afterMs?: number, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** (n - 1));
  if (afterMs === undefined) return random() * ceiling;
  const floor = Math.min(policy.maxMs, afterMs);
  return floor + random() * Math.max(ceiling, floor);
}

/** Runs `attempt` until it succeeds, `classify` says stop, or the attempts run out. */
export async function withRetry<T>(
  what: string,
  policy: RetryPolicy,
  classify: (error: unknown) => Verdict,
  attempt: (n: number) => Promise<T>,
  hooks: RetryHooks = {},
): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt(n);
    } catch (error) {
      const verdict = classify(error);
      if (!verdict.retry) throw error;
      if (n >= policy.attempts) throw new RetriesExhausted(what, n, verdict.reason, error);
      await (hooks.sleep ?? sleep)(backoffMs(policy, n, verdict.afterMs, hooks.random));
    }
  }
}

const CONNECTION_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);

/** A connection-level failure (reset, refused, timed out) anywhere in the error's cause chain, or undefined. */
export function connectionFailure(error: unknown): string | undefined {
  const chain = causes(error);
  for (const { code, name } of chain) {
    if (typeof code === 'string' && CONNECTION_CODES.has(code)) return code === 'ECONNABORTED' ? 'request timed out' : `connection error ${code}`;
    if (name === 'AbortError' || name === 'TimeoutError') return 'request timed out';
  }
  if (tlsFailure(error)) return undefined;
  for (const { message } of chain) {
    if (typeof message === 'string' && /socket hang up|other side closed|timeout of \d+ms exceeded/i.test(message)) return `connection error (${message})`;
  }
  return undefined;
}

/** A TLS verification failure (wrong or missing CA, name mismatch): not retried, and worth saying plainly. */
export function tlsFailure(error: unknown): string | undefined {
  for (const { code, message } of causes(error)) {
    if (typeof code === 'string' && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/.test(code)) {
      return `the server's TLS certificate was refused (${code}${typeof message === 'string' ? `: ${message}` : ''}); check the CA given for it`;
    }
  }
  return undefined;
}

function causes(error: unknown): { code?: unknown; name?: unknown; message?: unknown }[] {
  const chain: { code?: unknown; name?: unknown; message?: unknown }[] = [];
  for (let e = error, depth = 0; e && typeof e === 'object' && depth < 6; e = (e as { cause?: unknown }).cause, depth++) chain.push(e as never);
  return chain;
}

/** Retry-After in ms when the header holds seconds. */
export function retryAfterMs(value: unknown): number | undefined {
  const seconds = Number(Array.isArray(value) ? value[0] : value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}
