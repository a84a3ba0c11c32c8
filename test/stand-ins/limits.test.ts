// The stand-ins' optional request limits (the real services' rate and concurrency limits): the token bucket, the seats, and each stand-in's refusal shape.
import test from 'ava';
import { call } from './http-client.ts';
import { RateLimit, Seats } from './limits.ts';
import { startKubernetes } from './kubernetes.ts';
import { startRoute53 } from './route53.ts';
import { startVault } from './vault.ts';

test('RateLimit: a burst, then refusals naming the wait, then refilled at the rate', (t) => {
  const bucket = new RateLimit(5, 1000);
  const start = Date.now();
  t.deepEqual(
    [0, 0, 0, 0, 0].map(() => bucket.take(start)),
    [0, 0, 0, 0, 0],
  );
  t.is(bucket.take(start), 200, 'the next token in 1/5 s');
  t.is(bucket.take(start + 100), 100);
  t.is(bucket.take(start + 200), 0);
  t.is(bucket.take(start + 10_000), 0, 'refilled, but never beyond the burst');
  t.is([1, 2, 3, 4, 5].filter(() => bucket.take(start + 10_000) === 0).length, 4);
  t.throws(() => new RateLimit(0), { message: /rate > 0/ });
});

test('Seats: at most `limit` held at once, a release frees one (twice is once)', (t) => {
  const seats = new Seats(2);
  const a = seats.take();
  const b = seats.take();
  t.truthy(a && b);
  t.is(seats.take(), undefined);
  a?.();
  a?.();
  const c = seats.take();
  t.truthy(c);
  t.is(seats.take(), undefined);
  t.is(seats.peak, 2);
});

test('Vault: a rate-limit quota answers 429 with its error body (headers only when enabled); sys/health is exempt', async (t) => {
  const v = await startVault({ tls: false, rateLimit: { rate: 3, intervalSeconds: 60 } });
  t.teardown(() => v.stop());
  const statuses: number[] = [];
  for (let i = 0; i < 5; i++) statuses.push((await call(`${v.url}/v1/secret/data/app`, { headers: { 'x-vault-token': 'nope' } })).status);
  t.deepEqual(statuses, [403, 403, 403, 429, 429]);
  const refused = await call(`${v.url}/v1/secret/data/app`);
  t.deepEqual(refused.json(), { errors: ['request path "secret/data/app": rate limit quota exceeded'] });
  t.is(refused.headers['retry-after'], undefined, 'Vault sends no Retry-After unless enable_rate_limit_response_headers');
  t.is((await call(`${v.url}/v1/sys/health`)).status, 200);
  t.is(v.calls.filter((c) => c.limited).length, 3);

  const withHeaders = await startVault({ tls: false, rateLimit: { rate: 1, intervalSeconds: 30, headers: true } });
  t.teardown(() => withHeaders.stop());
  await call(`${withHeaders.url}/v1/secret/data/app`);
  const second = await call(`${withHeaders.url}/v1/secret/data/app`);
  t.is(second.status, 429);
  t.true(Number(second.headers['retry-after']) >= 29 && Number(second.headers['retry-after']) <= 30, String(second.headers['retry-after']));
});

test('Kubernetes: beyond the seats, 429 TooManyRequests with Retry-After as APF sends it', async (t) => {
  const k = await startKubernetes({ tls: false, limits: { concurrency: 2, serviceMs: 400 } });
  t.teardown(() => k.stop());
  const url = k.url;
  const answers = await Promise.all([1, 2, 3, 4, 5].map(() => call(`${url}/version`)));
  const statuses = answers.map((a) => a.status).sort();
  t.deepEqual(statuses, [200, 200, 429, 429, 429]);
  const refused = answers.find((a) => a.status === 429);
  t.is(refused?.headers['retry-after'], '1');
  t.like(refused?.json(), { kind: 'Status', reason: 'TooManyRequests', code: 429, details: { retryAfterSeconds: 1 } });
  t.is(k.calls.filter((c) => c.limited).length, 3);
  t.is((await call(`${url}/version`)).status, 200, 'seats are given back when a response ends');
});

test('Route53: the per-account rate answers 400 Throttling "Rate exceeded" in the XML error shape', async (t) => {
  const r = await startRoute53({ rateLimit: { perSecond: 5 } });
  t.teardown(() => r.stop());
  const answers = [];
  for (let i = 0; i < 8; i++) answers.push(await call(`${r.endpoint}/2013-04-01/hostedzone`));
  const served = answers.filter((a) => a.status !== 400).length;
  t.true(served >= 5 && served < 8, `${served} of 8 rapid requests served`);
  const throttled = answers.find((a) => a.status === 400);
  t.regex(throttled?.text ?? '', /<Error><Type>Sender<\/Type><Code>Throttling<\/Code><Message>Rate exceeded<\/Message><\/Error>/);
  t.is(r.calls.filter((c) => c.limited).length, 8 - served);
});
