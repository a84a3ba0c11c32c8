// Route53Records against the Route 53 API 2013-04-01 stand-in (ListResourceRecordSets, ChangeResourceRecordSets, GetChange) and a real dnsmasq on loopback.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { apiCalls } from '../../engine/api-calls.ts';
import { localHost } from '../../engine/host-local.ts';
import { secrets } from '../../engine/secrets.ts';
import { Route53Records } from '../../resources/route53-record.ts';
import { callsMatching, startRoute53 } from '../stand-ins/index.ts';
import type { Route53Options, Route53StandIn } from '../stand-ins/index.ts';
import { converge, scratchRoot } from '../helpers/scratch.ts';

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

/** A dnsmasq answering from the given records on 127.0.0.1 and a free port; stopped at teardown. */
async function dnsmasq(t: ExecutionContext, args: string[]): Promise<string> {
  const port = await freeUdpPort();
  const child = spawn(
    'dnsmasq',
    [
      '-k',
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--no-poll',
      '--bind-interfaces',
      '--listen-address=127.0.0.1',
      `--port=${port}`,
      '--pid-file=',
      ...args,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  t.teardown(() => void child.kill('SIGTERM'));
  const server = `127.0.0.1:${port}`;
  const resolver = new Resolver({ timeout: 200, tries: 1 });
  resolver.setServers([server]);
  for (let i = 0; i < 50; i++) {
    if (child.exitCode !== null) throw new Error(`dnsmasq exited ${child.exitCode}: ${stderr}`);
    if (
      await resolver.resolve4('probe.test').then(
        () => true,
        (e: NodeJS.ErrnoException) => e.code !== 'ECONNREFUSED' && e.code !== 'ETIMEOUT',
      )
    )
      return server;
    await sleep(50);
  }
  throw new Error(`dnsmasq did not answer on ${server}: ${stderr}`);
}

function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

const rightAnswers = [
  '--host-record=probe.test,127.0.0.9',
  `--host-record=${LB},192.0.2.50`,
  `--cname=istiod.mesh.example.com,${LB}`,
  '--host-record=gw.mesh.example.com,192.0.2.7',
  '--host-record=gw.mesh.example.com,192.0.2.8',
];

test.serial('DNS already answers right: converged with zero Route53 API calls', async (t) => {
  const r = await route53(t);
  const dns = await dnsmasq(t, rightAnswers);
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
  const dns = await dnsmasq(t, ['--host-record=probe.test,127.0.0.9', '--host-record=gw.mesh.example.com,192.0.2.7']);
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
