// Route53Records against the Route 53 API 2013-04-01 stand-in (ListResourceRecordSets, ChangeResourceRecordSets, GetChange;
// an IAM policy) and real dnsmasq on loopback (answering authoritatively, as Route53 does, or as a cache in front of it).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { apiCalls } from '../../engine/api-calls.ts';
import { localHost } from '../../engine/host-local.ts';
import { secrets } from '../../engine/secrets.ts';
import { Route53Records } from '../../resources/route53-record.ts';
import { callsMatching, startRoute53 } from '../stand-ins/index.ts';
import type { Route53Options, Route53StandIn } from '../stand-ins/index.ts';
import { converge, scratchRoot } from '../helpers/scratch.ts';
import { until } from '../helpers/poll.ts';
import { startDnsmasq } from '../helpers/dnsmasq.ts';

const ZONE = 'Z0000000000000000MESH';
const CREDENTIALS = { accessKeyId: 'AKIDROUTE53TEST', secretAccessKey: 'route53-test-secret-key', sessionToken: 'route53-session' };
const LB = 'abc-123.elb.us-east-1.amazonaws.com';

async function route53(t: ExecutionContext, opts: Route53Options = {}): Promise<Route53StandIn> {
  const r = await startRoute53({ zones: [{ name: 'mesh.example.com', id: ZONE }], ...opts });
  t.teardown(() => r.stop());
  return r;
}

const records = [
  { name: 'istiod.mesh.example.com', type: 'CNAME' as const, values: [LB], ttl: 60 },
  { name: 'gw.mesh.example.com', type: 'A' as const, values: ['192.0.2.7', '192.0.2.8'], ttl: 30 },
];

const declare = (r: Route53StandIn, extra: Record<string, unknown> = {}) => [
  Route53Records({
    zoneId: ZONE,
    records,
    endpoint: r.endpoint,
    credentials: CREDENTIALS,
    dnsCheck: false,
    ...extra,
  }),
];

const changes = (r: Route53StandIn) => callsMatching(r.calls, { action: 'ChangeResourceRecordSets' }).filter((c) => c.status === 200);

/** dnsmasq answers its own records authoritatively (AA), with the TTL given here: as Route53 holds them. */
const rightAnswers = [
  '--host-record=probe.test,127.0.0.9',
  `--host-record=${LB},192.0.2.50`,
  `--cname=istiod.mesh.example.com,${LB},60`,
  '--host-record=gw.mesh.example.com,192.0.2.7,30',
  '--host-record=gw.mesh.example.com,192.0.2.8,30',
];

test.serial('DNS already answers right: converged with zero Route53 API calls', async (t) => {
  const r = await route53(t);
  const dns = (await startDnsmasq(t, rightAnswers)).server;
  const root = await scratchRoot(t);
  apiCalls.reset();
  const result = await converge(localHost({ root }), declare(r, { dnsCheck: { servers: [dns] } }));
  t.false(result.failed, result.resources[0]?.error);
  t.is(result.resources[0]?.status, 'unchanged');
  t.deepEqual(r.calls, [], 'not one request reached Route53');
  t.deepEqual(apiCalls.snapshot(), {}, 'and the report counts none');
});

test('DNS answers wrong: exactly one UPSERT batch for the zone, then nothing to do', async (t) => {
  const r = await route53(t, {
    zones: [{ name: 'mesh.example.com', id: ZONE, records: [{ name: 'gw.mesh.example.com', type: 'A', ttl: 30, values: ['192.0.2.7'] }] }],
  });
  const dns = (await startDnsmasq(t, ['--host-record=probe.test,127.0.0.9', '--host-record=gw.mesh.example.com,192.0.2.7'])).server;
  const root = await scratchRoot(t);
  const first = await converge(localHost({ root }), declare(r, { dnsCheck: { servers: [dns] } }));
  t.false(first.failed, first.resources[0]?.error);
  t.is(first.resources[0]?.status, 'changed');
  t.deepEqual(first.resources[0]?.changes, [
    `upsert istiod.mesh.example.com. CNAME ${LB}. ttl 60 (was absent)`,
    'upsert gw.mesh.example.com. A 192.0.2.7, 192.0.2.8 ttl 30 (was 192.0.2.7 ttl 30)',
  ]);
  t.is(changes(r).length, 1, 'one ChangeBatch');
  t.is(callsMatching(r.calls, { action: 'ListResourceRecordSets' }).length, 2, 'one list per record DNS did not confirm');
  t.deepEqual(
    r.records(ZONE).filter((x) => x.type !== 'NS' && x.type !== 'SOA'),
    [
      { name: 'gw.mesh.example.com.', type: 'A', ttl: 30, values: ['192.0.2.7', '192.0.2.8'] },
      { name: 'istiod.mesh.example.com.', type: 'CNAME', ttl: 60, values: [LB] },
    ],
  );

  const again = await converge(localHost({ root }), declare(r));
  t.is(again.resources[0]?.status, 'unchanged', 'Route53 now holds what is declared');
  t.is(changes(r).length, 1, 'no second batch');
});

test('plan shows the change and makes none', async (t) => {
  const r = await route53(t);
  const root = await scratchRoot(t);
  const plan = await converge(localHost({ root }), declare(r), 'plan');
  t.is(plan.resources[0]?.status, 'would-change');
  t.is(plan.resources[0]?.changes.length, 2);
  t.deepEqual(callsMatching(r.calls, { action: 'ChangeResourceRecordSets' }), []);
  t.is(r.records(ZONE).length, 2, 'only SOA and NS');
});

test('Throttling and PriorRequestNotComplete are retried with backoff, and the batch lands once', async (t) => {
  const r = await route53(t);
  r.throttleNext(2);
  r.priorRequestNotCompleteNext(1);
  const root = await scratchRoot(t);
  const result = await converge(localHost({ root }), declare(r));
  t.false(result.failed, result.resources[0]?.error);
  t.deepEqual(
    r.calls.filter((c) => c.fault).map((c) => c.fault),
    ['throttle', 'throttle', 'prior-request-not-complete'],
  );
  t.is(changes(r).length, 1);
  t.is(r.records(ZONE).length, 4);
});

test('Throttling without end: a bounded number of attempts, a clear error, nothing applied', async (t) => {
  const r = await route53(t);
  r.faults.inject({ kind: 'throttle', action: 'ChangeResourceRecordSets', times: Infinity });
  const root = await scratchRoot(t);
  const result = await converge(localHost({ root }), declare(r, { maxAttempts: 2 }));
  t.true(result.failed);
  t.regex(
    result.resources[0]?.error ?? '',
    /Route53: changing 2 record set\(s\) in hosted zone Z0000000000000000MESH: Throttling: Rate exceeded \(after 2 attempts\); Route53 kept refusing/,
  );
  t.is(callsMatching(r.calls, { action: 'ChangeResourceRecordSets' }).length, 2);
  t.is(r.records(ZONE).length, 2);
});

test('waits, bounded, for INSYNC when asked', async (t) => {
  const r = await route53(t, { changeSyncDelayMs: 300 });
  const root = await scratchRoot(t);
  const ok = await converge(localHost({ root }), declare(r, { waitForSync: { maxSeconds: 10, pollSeconds: 0.1 } }));
  t.false(ok.failed, ok.resources[0]?.error);
  t.true(callsMatching(r.calls, { action: 'GetChange' }).length >= 1);

  const slow = await route53(t, { changeSyncDelayMs: 60_000 });
  const late = await converge(localHost({ root }), declare(slow, { waitForSync: { maxSeconds: 1, pollSeconds: 0.2 } }));
  t.true(late.failed);
  t.regex(late.resources[0]?.error ?? '', /Route53 change \/change\/C\w+ was not INSYNC within 1 s .*it was accepted and will finish propagating/);
});

test('an alias record round-trips: applied once, then unchanged', async (t) => {
  const r = await route53(t);
  const root = await scratchRoot(t);
  const alias = [
    Route53Records({
      zoneId: ZONE,
      endpoint: r.endpoint,
      credentials: CREDENTIALS,
      dnsCheck: false,
      records: [{ name: 'mesh.example.com', type: 'A', alias: { hostedZoneId: 'Z35SXDOTRQ7X7K', dnsName: `dualstack.${LB}` } }],
    }),
  ];
  t.is((await converge(localHost({ root }), alias)).resources[0]?.status, 'changed');
  t.is((await converge(localHost({ root }), alias)).resources[0]?.status, 'unchanged');
  t.deepEqual(r.records(ZONE).find((x) => x.type === 'A')?.alias, { hostedZoneId: 'Z35SXDOTRQ7X7K', dnsName: `dualstack.${LB}.`, evaluateTargetHealth: false });
});

test('a batch Route53 refuses fails whole, with its reason, and changes nothing', async (t) => {
  const r = await route53(t, {
    zones: [{ name: 'mesh.example.com', id: ZONE, records: [{ name: 'istiod.mesh.example.com', type: 'A', ttl: 60, values: ['192.0.2.1'] }] }],
  });
  const root = await scratchRoot(t);
  const result = await converge(localHost({ root }), declare(r));
  t.true(result.failed);
  t.regex(
    result.resources[0]?.error ?? '',
    /InvalidChangeBatch: \[RRSet of type CNAME with DNS name istiod\.mesh\.example\.com\. is not permitted as it conflicts/,
  );
  t.deepEqual(
    r.records(ZONE).filter((x) => x.name.startsWith('gw')),
    [],
    'the A record of the same batch was not applied either',
  );
});

test('declarations are checked: one value per CNAME, no TTL on an alias, credentials masked', (t) => {
  t.throws(() => Route53Records({ zoneId: ZONE, records: [{ name: 'a.mesh.example.com', type: 'CNAME', values: ['x.example.com', 'y.example.com'] }] }), {
    message: /records\[0\]\.values: a CNAME has exactly one value/,
  });
  t.throws(
    () =>
      Route53Records({ zoneId: ZONE, records: [{ name: 'a.mesh.example.com', type: 'A', ttl: 60, alias: { hostedZoneId: 'Z1', dnsName: 'lb.example.com' } }] }),
    { message: /ttl: an alias record takes its TTL from the target/ },
  );
  t.throws(
    () =>
      Route53Records({
        zoneId: ZONE,
        records: [
          { name: 'a.mesh.example.com', type: 'A', values: ['10.0.0.1'] },
          { name: 'a.mesh.example.com', type: 'CNAME', values: ['b.example.com'] },
        ],
      }),
    { message: /declared twice/ },
  );
  Route53Records({ zoneId: `/hostedzone/${ZONE}`, records, credentials: CREDENTIALS });
  t.is(secrets.redact(`key ${CREDENTIALS.secretAccessKey}`), 'key (sensitive)');
});

// -- TTL and target: the DNS check says "right" only when it can tell both

const ZONE_RECORDS = [
  { name: 'istiod.mesh.example.com', type: 'CNAME', ttl: 60, values: [LB] },
  { name: 'gw.mesh.example.com', type: 'A', ttl: 30, values: ['192.0.2.7', '192.0.2.8'] },
];

test('a TTL change on converged records: DNS (authoritative) shows the old TTL, Route53 is asked, one UPSERT batch, then nothing to do', async (t) => {
  const r = await route53(t, { zones: [{ name: 'mesh.example.com', id: ZONE, records: ZONE_RECORDS }] });
  const dns = (await startDnsmasq(t, rightAnswers)).server;
  const root = await scratchRoot(t);
  const at = (ttl: number) => [
    Route53Records({
      zoneId: ZONE,
      records: records.map((x) => ({ ...x, ttl })),
      endpoint: r.endpoint,
      credentials: CREDENTIALS,
      dnsCheck: { servers: [dns] },
    }),
  ];
  const first = await converge(localHost({ root }), at(120));
  t.false(first.failed, first.resources[0]?.error);
  t.deepEqual(first.resources[0]?.changes, [
    `upsert istiod.mesh.example.com. CNAME ${LB}. ttl 120 (was ${LB}. ttl 60)`,
    'upsert gw.mesh.example.com. A 192.0.2.7, 192.0.2.8 ttl 120 (was 192.0.2.7, 192.0.2.8 ttl 30)',
  ]);
  t.is(changes(r).length, 1, 'one ChangeBatch for both');
  t.deepEqual(
    r.records(ZONE).map((x) => x.ttl),
    [172800, 900, 120, 120],
  );
  // DNS still says 60 and 30 (this dnsmasq is not Route53): Route53 is asked, and holds what is declared
  const again = await converge(localHost({ root }), at(120));
  t.is(again.resources[0]?.status, 'unchanged');
  t.is(changes(r).length, 1, 'no second batch');
  // back to the TTLs DNS answers: right without a Route53 call
  const calls = r.calls.length;
  const plan = await converge(
    localHost({ root }),
    [Route53Records({ zoneId: ZONE, records, endpoint: r.endpoint, credentials: CREDENTIALS, dnsCheck: { servers: [dns] } })],
    'plan',
  );
  t.is(plan.resources[0]?.status, 'unchanged');
  t.is(r.calls.length, calls, 'no Route53 call when DNS answers target and TTL authoritatively');
});

test('a cached answer cannot tell a TTL: Route53 is asked; a cached TTL above the declared one is a difference', async (t) => {
  const { checkRecordInDns, queryDns } = await import('../../clients/dns-check.ts');
  const authority = (await startDnsmasq(t, ['--host-record=probe.test,127.0.0.9', '--host-record=gw.mesh.example.com,192.0.2.7,120'])).server;
  const cache = (await startDnsmasq(t, [`--server=127.0.0.1#${authority.split(':')[1]}`])).server;
  const gw = { name: 'gw.mesh.example.com', type: 'A', values: ['192.0.2.7'] };
  // the first answer through the cache is the authority's own (AA); the next ones are the cache's, counting down
  t.true((await queryDns(gw.name, 'A', { servers: [cache] })).authoritative);
  await until(async () => !(await queryDns(gw.name, 'A', { servers: [cache] })).authoritative, { what: 'the cache to answer gw itself' });
  t.like(await checkRecordInDns({ ...gw, ttl: 120 }, { servers: [authority] }), { verdict: 'right', valuesRight: true });
  t.like(await checkRecordInDns({ ...gw, ttl: 120 }, { servers: [cache] }), { verdict: 'unsure', valuesRight: true });
  t.like(await checkRecordInDns({ ...gw, ttl: 60 }, { servers: [cache] }), { verdict: 'differs', valuesRight: true });
  t.like(await checkRecordInDns({ ...gw, ttl: 60 }, { servers: [authority] }), {
    verdict: 'differs',
    detail: 'answers 192.0.2.7 ttl 120, not ttl 60 (authoritative)',
  });
  t.like(await checkRecordInDns({ ...gw, ttl: 120, values: ['192.0.2.9'] }, { servers: [authority] }), { verdict: 'differs', valuesRight: false });
  t.like(await checkRecordInDns({ name: 'nope.mesh.example.com', type: 'A', ttl: 60, values: ['192.0.2.9'] }, { servers: [authority] }), {
    verdict: 'unsure',
    valuesRight: false,
  });
  t.like(await checkRecordInDns(gw, { servers: ['127.0.0.1:9'], timeoutMs: 500 }), { verdict: 'unsure', valuesRight: false });
});

test('the DNS wire format: a query for a name, a response with compressed names, IPv6 in RFC 5952 form', async (t) => {
  const { decodeResponse, encodeQuery, normalizeValue } = await import('../../clients/dns-check.ts');
  const query = encodeQuery(0x1234, 'Istiod.Mesh.example.com', 'CNAME');
  t.is(query.toString('hex'), '123401000001000000000000' + '06697374696f64046d657368076578616d706c6503636f6d00' + '00050001');
  // the answer to it (AA, one CNAME whose owner points at the question, whose target ends in a pointer) and an AAAA
  const answer = Buffer.concat([
    Buffer.from('123485000001000200000000', 'hex'),
    query.subarray(12),
    Buffer.from('c00c000500010000003c0005026c62c013', 'hex'),
    Buffer.from('c035001c00010000001e0010', 'hex'),
    Buffer.from('20010db8000000000000000000000001', 'hex'),
  ]);
  t.deepEqual(decodeResponse(answer), {
    id: 0x1234,
    authoritative: true,
    truncated: false,
    rcode: 0,
    answers: [
      { name: 'istiod.mesh.example.com.', type: 'CNAME', ttl: 60, data: 'lb.mesh.example.com.' },
      { name: 'lb.mesh.example.com.', type: 'AAAA', ttl: 30, data: '2001:db8::1' },
    ],
  });
  t.is(normalizeValue('AAAA', '2001:0DB8:0:0:0:0:0:1'), '2001:db8::1');
  t.is(normalizeValue('AAAA', '::ffff:192.0.2.1'), '::ffff:c000:201');
  t.is(normalizeValue('CNAME', 'LB.Example.com'), 'lb.example.com.');
  t.throws(() => decodeResponse(Buffer.concat([answer.subarray(0, 12), Buffer.from([0xc0, 12])])), { message: /compression loop/ });
});

// -- mode check: records something else owns, read and never written

test('mode check: records external-dns made (any TTL) pass with a read-only policy and no write; a missing or wrong one fails naming it, 0 writes', async (t) => {
  const owned = [
    { name: 'istiod.mesh.example.com', type: 'CNAME', ttl: 300, values: [LB] },
    { name: 'gw.mesh.example.com', type: 'A', ttl: 300, values: ['192.0.2.8', '192.0.2.7'] },
  ];
  const r = await route53(t, { zones: [{ name: 'mesh.example.com', id: ZONE, records: owned }], allowedActions: ['ListResourceRecordSets'] });
  const root = await scratchRoot(t);
  const check = (extra: Record<string, unknown> = {}) => [
    Route53Records({
      mode: 'check',
      zoneId: ZONE,
      records: records.map(({ ttl: _ttl, ...x }) => x),
      endpoint: r.endpoint,
      credentials: CREDENTIALS,
      dnsCheck: false,
      ...extra,
    }),
  ];
  const ok = await converge(localHost({ root }), check());
  t.false(ok.failed, ok.resources[0]?.error);
  t.is(ok.resources[0]?.status, 'unchanged', "the TTL is the owner's to pick when none is declared");
  t.is(callsMatching(r.calls, { action: 'ListResourceRecordSets' }).length, 2);

  // a TTL declared in check mode is compared
  const ttl = await converge(localHost({ root }), check({ records: records.map((x) => ({ ...x, ttl: 60 })) }));
  t.true(ttl.failed);
  t.regex(
    ttl.resources[0]?.error ?? '',
    /istiod\.mesh\.example\.com\. CNAME is abc-123\.elb\.us-east-1\.amazonaws\.com\. ttl 300, not abc-123\.elb\.us-east-1\.amazonaws\.com\. ttl 60/,
  );

  // external-dns lost one record and points the other elsewhere
  const zone = r.zones.get(ZONE)!;
  zone.records = zone.records.filter((x) => x.type !== 'A').map((x) => (x.type === 'CNAME' ? { ...x, values: ['other.elb.amazonaws.com'] } : x));
  for (const mode of ['plan', 'converge'] as const) {
    const bad = await converge(localHost({ root }), check(), mode);
    t.true(bad.failed, mode);
    t.is(bad.resources[0]?.status, 'failed');
    t.true(
      bad.resources[0]?.error?.includes(
        `mode check: 2 of the 2 record(s) in hosted zone ${ZONE} are not as declared, and meshvm does not write them: ` +
          `istiod.mesh.example.com. CNAME is other.elb.amazonaws.com. ttl 300, not ${LB}.; gw.mesh.example.com. A is absent, not 192.0.2.7, 192.0.2.8. ` +
          "Fix them where they are owned (external-dns: the Service's annotations; Terraform), or set mode manage to let meshvm UPSERT them",
      ),
      bad.resources[0]?.error,
    );
  }
  t.deepEqual(callsMatching(r.calls, { action: 'ChangeResourceRecordSets' }), [], 'not one write was attempted');
  t.false(
    r.calls.some((c) => c.status === 403),
    'nothing needed a permission the read-only policy lacks',
  );
});

test('mode check answered by DNS alone: no Route53 call at all', async (t) => {
  const r = await route53(t, { allowedActions: [] });
  const dns = (await startDnsmasq(t, rightAnswers)).server;
  const root = await scratchRoot(t);
  const result = await converge(localHost({ root }), declare(r, { mode: 'check', dnsCheck: { servers: [dns] } }));
  t.false(result.failed, result.resources[0]?.error);
  t.is(result.resources[0]?.status, 'unchanged');
  t.deepEqual(r.calls, []);
});

test('mode manage with a read-only role: the refused UPSERT names the permission, or mode check', async (t) => {
  const r = await route53(t, { allowedActions: ['ListResourceRecordSets'] });
  const root = await scratchRoot(t);
  const result = await converge(localHost({ root }), declare(r));
  t.true(result.failed);
  t.regex(
    result.resources[0]?.error ?? '',
    /Route53: changing 2 record set\(s\) in hosted zone Z0000000000000000MESH: AccessDenied: User: .* is not authorized to perform: route53:ChangeResourceRecordSets .*; grant the instance role route53:ChangeResourceRecordSets \(and route53:GetChange to wait for INSYNC\), or set mode check when something else owns these records/,
  );
  t.is(callsMatching(r.calls, { action: 'ChangeResourceRecordSets' }).length, 1, 'AccessDenied is not retried');
});

test('a CNAME target or an address that is not one is refused at declaration, naming the value', (t) => {
  t.throws(() => Route53Records({ zoneId: ZONE, records: [{ name: 'a.mesh.example.com', type: 'CNAME', values: ['lb.example.com\nx=1'] }] }), {
    message: /records\[0\]\.values\[0\]: expected a DNS name as the CNAME's target, not "lb\.example\.com\\nx=1"/,
  });
  t.throws(() => Route53Records({ zoneId: ZONE, records: [{ name: 'a.mesh.example.com', type: 'A', values: ['10.0.0.1\u0000'] }] }), {
    message: /records\[0\]\.values\[0\]: expected an IPv4 address, not "10\.0\.0\.1\\u0000"/,
  });
});
