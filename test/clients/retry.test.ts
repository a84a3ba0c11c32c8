// clients/retry.ts: bounded attempts, full jitter, Retry-After as a floor with jitter above it (a refused fleet does not come back as one wave).
import test from 'ava';
import { backoffMs, RetriesExhausted, withRetry, type RetryPolicy, type Verdict } from '../../clients/retry.ts';

const POLICY: RetryPolicy = { attempts: 5, baseMs: 200, maxMs: 5000 };
const fixed = (value: number) => () => value;

test('without a server hint: full jitter up to the exponential ceiling, capped at maxMs', (t) => {
  t.is(backoffMs(POLICY, 1, undefined, fixed(0)), 0);
  t.is(backoffMs(POLICY, 1, undefined, fixed(0.999999)), 199.9998);
  t.is(backoffMs(POLICY, 3, undefined, fixed(0.5)), 400);
  t.is(backoffMs(POLICY, 20, undefined, fixed(1)), 5000);
});

test('Retry-After is a floor, never shortened, and the jitter goes on top of it', (t) => {
  t.is(backoffMs(POLICY, 1, 1000, fixed(0)), 1000);
  t.is(backoffMs(POLICY, 1, 1000, fixed(0.5)), 1500, 'the window above the floor is as wide as the hint');
  t.is(backoffMs(POLICY, 4, 1000, fixed(0.5)), 1000 + 800, 'or as the backoff ceiling, whichever is larger');
  t.is(backoffMs(POLICY, 1, 0, fixed(0.5)), 100, 'Retry-After: 0 is plain backoff');
});

test('a Retry-After beyond maxMs is capped, so that the time a run can wait stays bounded', (t) => {
  t.is(backoffMs(POLICY, 1, 60_000, fixed(0)), 5000);
  t.is(backoffMs(POLICY, 1, 60_000, fixed(1)), 10_000);
});

test('a fleet refused together with the same Retry-After comes back spread, not as one wave', (t) => {
  // 1000 clients get "429, Retry-After: 1" at the same instant; the old rule (wait exactly the hint) sent all 1000 back at 1.000 s.
  const waits = Array.from({ length: 1000 }, () => backoffMs(POLICY, 1, 1000));
  t.true(Math.min(...waits) >= 1000, 'nobody comes back before the server asked');
  const buckets = new Map<number, number>();
  for (const w of waits) buckets.set(Math.floor(w / 100), (buckets.get(Math.floor(w / 100)) ?? 0) + 1);
  const busiest = Math.max(...buckets.values());
  t.log(`busiest 100 ms bucket: ${busiest} of 1000 retries, over ${buckets.size} buckets`);
  t.true(busiest < 200, `no 100 ms window holds a fifth of the fleet's retries (busiest: ${busiest})`);
});

const retryable: (error: unknown) => Verdict = (error) => ({ retry: true, reason: String((error as Error).message), afterMs: 1000 });

test('withRetry: waits backoffMs between attempts, and gives up after `attempts` with the last reason', async (t) => {
  const waits: number[] = [];
  let calls = 0;
  const error = await t.throwsAsync(
    withRetry(
      'reading x',
      { attempts: 3, baseMs: 200, maxMs: 5000 },
      retryable,
      async () => {
        calls++;
        throw new Error(`429 number ${calls}`);
      },
      { sleep: async (ms) => void waits.push(ms), random: fixed(0.25) },
    ),
    { instanceOf: RetriesExhausted },
  );
  t.is(calls, 3);
  t.deepEqual(waits, [1250, 1250]);
  t.is(error?.message, 'reading x: gave up after 3 attempts (429 number 3)');
});

test('withRetry: a verdict of no retry throws at once, without waiting', async (t) => {
  const waits: number[] = [];
  await t.throwsAsync(
    withRetry(
      'reading x',
      POLICY,
      () => ({ retry: false }),
      async () => {
        throw new Error('403');
      },
      { sleep: async (ms) => void waits.push(ms) },
    ),
    { message: '403' },
  );
  t.deepEqual(waits, []);
});

test('withRetry: succeeds on a later attempt and returns its value', async (t) => {
  const waits: number[] = [];
  const value = await withRetry(
    'reading x',
    POLICY,
    retryable,
    async (n) => {
      if (n < 3) throw new Error('busy');
      return n;
    },
    { sleep: async (ms) => void waits.push(ms), random: fixed(0) },
  );
  t.is(value, 3);
  t.deepEqual(waits, [1000, 1000]);
});
