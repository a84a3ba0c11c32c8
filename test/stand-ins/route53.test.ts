// Self-tests of the Route 53 API 2013-04-01 stand-in, driven with fetch and SigV4-signed requests; XML checked by string matching.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { until } from '../helpers/poll.ts';
import { callsMatching } from './common.ts';
import { signRequest } from './sigv4.ts';
import { startRoute53 } from './route53.ts';
import type { Route53Options, Route53StandIn } from './route53.ts';

const ZONE = 'Z0000000000000000TEST';

async function r53(t: ExecutionContext, opts: Route53Options = {}): Promise<Route53StandIn> {
  const r = await startRoute53({
    zones: [{ name: 'example.com', id: ZONE, records: [{ name: 'www.example.com', type: 'A', ttl: 60, values: ['192.0.2.1'] }] }],
    ...opts,
  });
  t.teardown(() => r.stop());
  return r;
}

async function send(
  r: Route53StandIn,
  method: string,
  path: string,
  body?: string,
  sign = true,
): Promise<{ status: number; xml: string; requestId: string | null }> {
  const url = `${r.endpoint}${path}`;
  const headers = sign
    ? signRequest({
        method,
        url,
        body: body ?? '',
        region: 'us-east-1',
        service: 'route53',
        accessKeyId: 'AKIDEXAMPLE',
        secretAccessKey: 'x',
        headers: body === undefined ? {} : { 'content-type': 'application/xml' },
      })
    : {};
  delete headers['host'];
  const res = await fetch(url, { method, headers, ...(body === undefined ? {} : { body }) });
  return { status: res.status, xml: await res.text(), requestId: res.headers.get('x-amzn-requestid') };
}

const rrset = (name: string, type: string, values: string[], ttl = 300): string =>
  `<ResourceRecordSet><Name>${name}</Name><Type>${type}</Type><TTL>${ttl}</TTL><ResourceRecords>${values.map((v) => `<ResourceRecord><Value>${v}</Value></ResourceRecord>`).join('')}</ResourceRecords></ResourceRecordSet>`;
const batch = (...changes: Array<[string, string]>): string =>
  `<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Comment>meshvm</Comment><Changes>${changes.map(([a, s]) => `<Change><Action>${a}</Action>${s}</Change>`).join('')}</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>`;
const change = (r: Route53StandIn, body: string): ReturnType<typeof send> => send(r, 'POST', `/2013-04-01/hostedzone/${ZONE}/rrset/`, body);
/** Long enough that the checks made right after a change cannot miss the PENDING window on a loaded machine. */
const SYNC_MS = 1000;
const changeId = (xml: string): string | undefined => /<ChangeInfo><Id>\/change\/(C[A-Z0-9]+)<\/Id>/.exec(xml)?.[1];
const changeStatus = async (r: Route53StandIn, id: string): Promise<string | undefined> =>
  /<Status>(\w+)<\/Status>/.exec((await send(r, 'GET', `/2013-04-01/change/${id}`)).xml)?.[1];
const insync = (r: Route53StandIn, id: string): Promise<void> =>
  until(async () => (await changeStatus(r, id)) === 'INSYNC', { what: `change ${id} to go INSYNC`, timeoutMs: SYNC_MS + 5000 });
const names = (xml: string): string[] => [...xml.matchAll(/<ResourceRecordSet><Name>([^<]+)<\/Name><Type>([^<]+)<\/Type>/g)].map((m) => `${m[1]} ${m[2]}`);

test('ListResourceRecordSets: SOA/NS created with the zone, DNS ordering, name/type start, truncation', async (t) => {
  const r = await r53(t);
  const all = await send(r, 'GET', `/2013-04-01/hostedzone/${ZONE}/rrset`);
  t.is(all.status, 200);
  t.regex(all.xml, /^<\?xml version="1\.0"\?>\n<ListResourceRecordSetsResponse xmlns="https:\/\/route53\.amazonaws\.com\/doc\/2013-04-01\/">/);
  t.deepEqual(names(all.xml), ['example.com. NS', 'example.com. SOA', 'www.example.com. A']);
  t.true(
    all.xml.includes(
      '<ResourceRecordSet><Name>www.example.com.</Name><Type>A</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>192.0.2.1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>',
    ),
  );
  t.true(all.xml.includes('<IsTruncated>false</IsTruncated><MaxItems>300</MaxItems>'));
  t.truthy(all.requestId);

  const one = await send(r, 'GET', `/2013-04-01/hostedzone/${ZONE}/rrset?name=www.example.com&type=A&maxitems=1`);
  t.deepEqual(names(one.xml), ['www.example.com. A']);
  const page = await send(r, 'GET', `/2013-04-01/hostedzone/${ZONE}/rrset?maxitems=2`);
  t.deepEqual(names(page.xml), ['example.com. NS', 'example.com. SOA']);
  t.true(
    page.xml.includes(
      '<IsTruncated>true</IsTruncated><NextRecordName>www.example.com.</NextRecordName><NextRecordType>A</NextRecordType><MaxItems>2</MaxItems>',
    ),
  );
  const bad = await send(r, 'GET', `/2013-04-01/hostedzone/${ZONE}/rrset?type=A`);
  t.is(bad.status, 400);
  t.regex(bad.xml, /<Code>InvalidInput<\/Code>/);
});

test('ChangeResourceRecordSets: UPSERT creates then updates; PENDING until the sync delay, then INSYNC', async (t) => {
  const r = await r53(t, { changeSyncDelayMs: SYNC_MS });
  const submitted = Date.now();
  const res = await change(r, batch(['UPSERT', rrset('istiod.Example.com', 'CNAME', ['abc.elb.amazonaws.com'], 30)]));
  t.is(res.status, 200);
  const m =
    /<ChangeResourceRecordSetsResponse xmlns="[^"]+"><ChangeInfo><Id>\/change\/(C[A-Z0-9]+)<\/Id><Status>PENDING<\/Status><SubmittedAt>[^<]+Z<\/SubmittedAt><Comment>meshvm<\/Comment><\/ChangeInfo>/.exec(
      res.xml,
    );
  t.truthy(m, res.xml);
  const id = m![1]!;
  t.regex(
    (await send(r, 'GET', `/2013-04-01/change/${id}`)).xml,
    /<GetChangeResponse xmlns="[^"]+"><ChangeInfo><Id>\/change\/C\w+<\/Id><Status>PENDING<\/Status>/,
  );
  await insync(r, id);
  t.true(Date.now() - submitted >= SYNC_MS, 'not INSYNC before the sync delay');
  t.deepEqual(
    r.records('example.com').find((x) => x.type === 'CNAME'),
    { name: 'istiod.example.com.', type: 'CNAME', ttl: 30, values: ['abc.elb.amazonaws.com'] },
  );
  await change(r, batch(['UPSERT', rrset('istiod.example.com.', 'CNAME', ['def.elb.amazonaws.com'], 30)]));
  t.deepEqual(
    r
      .records(ZONE)
      .filter((x) => x.type === 'CNAME')
      .map((x) => x.values),
    [['def.elb.amazonaws.com']],
  );
  t.regex((await send(r, 'GET', '/2013-04-01/change/CNOSUCH')).xml, /<Code>NoSuchChange<\/Code>/);
});

test('change batches are transactional and report every problem as InvalidChangeBatch', async (t) => {
  const r = await r53(t);
  const before = r.records(ZONE);
  const res = await change(
    r,
    batch(
      ['CREATE', rrset('new.example.com', 'A', ['192.0.2.9'])],
      ['CREATE', rrset('www.example.com', 'A', ['192.0.2.1'], 60)],
      ['DELETE', rrset('gone.example.com', 'TXT', ['"x"'])],
      ['DELETE', rrset('www.example.com', 'A', ['192.0.2.99'], 60)],
    ),
  );
  t.is(res.status, 400);
  t.regex(
    res.xml,
    /^<\?xml version="1\.0"\?>\n<ErrorResponse xmlns="https:\/\/route53\.amazonaws\.com\/doc\/2013-04-01\/"><Error><Type>Sender<\/Type><Code>InvalidChangeBatch<\/Code><Message>/,
  );
  t.true(
    res.xml.includes(
      "<Message>[Tried to create resource record set [name='www.example.com.', type='A'] but it already exists, " +
        "Tried to delete resource record set [name='gone.example.com.', type='TXT'] but it was not found, " +
        "Tried to delete resource record set [name='www.example.com.', type='A'] but the values provided do not match the current values]</Message>",
    ),
    res.xml,
  );
  t.deepEqual(r.records(ZONE), before, 'nothing applied');

  const conflict = await change(r, batch(['CREATE', rrset('www.example.com', 'CNAME', ['x.example.net'])]));
  t.true(
    conflict.xml.includes(
      '[RRSet of type CNAME with DNS name www.example.com. is not permitted as it conflicts with other records with the same DNS name in zone example.com.]',
    ),
  );
  const outside = await change(r, batch(['UPSERT', rrset('www.example.org', 'A', ['192.0.2.1'])]));
  t.true(outside.xml.includes('[RRSet with DNS name www.example.org. is not permitted in zone example.com.]'));

  const ok = await change(
    r,
    batch(['DELETE', rrset('www.example.com', 'A', ['192.0.2.1'], 60)], ['CREATE', rrset('www.example.com', 'CNAME', ['lb.example.net'])]),
  );
  t.is(ok.status, 200, 'delete + create in one batch is atomic');
  t.deepEqual(names((await send(r, 'GET', `/2013-04-01/hostedzone/${ZONE}/rrset?name=www.example.com`)).xml), ['www.example.com. CNAME']);
});

test('alias targets and wildcard names round-trip in the XML', async (t) => {
  const r = await r53(t);
  const alias =
    '<ResourceRecordSet><Name>*.mesh.example.com</Name><Type>A</Type><AliasTarget><HostedZoneId>Z35SXDOTRQ7X7K</HostedZoneId><DNSName>dualstack.lb.amazonaws.com</DNSName><EvaluateTargetHealth>false</EvaluateTargetHealth></AliasTarget></ResourceRecordSet>';
  t.is((await change(r, batch(['CREATE', alias]))).status, 200);
  const list = await send(r, 'GET', `/2013-04-01/hostedzone/${ZONE}/rrset?name=*.mesh.example.com`);
  t.true(
    list.xml.includes(
      '<ResourceRecordSet><Name>\\052.mesh.example.com.</Name><Type>A</Type><AliasTarget><HostedZoneId>Z35SXDOTRQ7X7K</HostedZoneId><DNSName>dualstack.lb.amazonaws.com.</DNSName><EvaluateTargetHealth>false</EvaluateTargetHealth></AliasTarget></ResourceRecordSet>',
    ),
    list.xml,
  );
  const both = '<ResourceRecordSet><Name>x.example.com</Name><Type>A</Type></ResourceRecordSet>';
  t.regex((await change(r, batch(['CREATE', both]))).xml, /<Code>InvalidInput<\/Code><Message>Invalid request: Expected exactly one of \[AliasTarget/);
});

test('hosted zone lookups: by name, by id, unknown id is NoSuchHostedZone (404)', async (t) => {
  const r = await r53(t, {
    zones: [
      { name: 'example.com', id: ZONE },
      { name: 'mesh.internal', id: 'ZPRIVATE', private: true },
      { name: 'a.example.com', id: 'ZSUB' },
    ],
  });
  const byName = await send(r, 'GET', '/2013-04-01/hostedzonesbyname?dnsname=example.com&maxitems=1');
  t.true(byName.xml.includes(`<HostedZones><HostedZone><Id>/hostedzone/${ZONE}</Id><Name>example.com.</Name>`), byName.xml);
  t.true(
    byName.xml.includes(
      '<DNSName>example.com.</DNSName><IsTruncated>true</IsTruncated><NextDNSName>a.example.com.</NextDNSName><NextHostedZoneId>/hostedzone/ZSUB</NextHostedZoneId><MaxItems>1</MaxItems>',
    ),
    byName.xml,
  );
  const zone = await send(r, 'GET', '/2013-04-01/hostedzone/ZPRIVATE');
  t.true(zone.xml.includes('<Name>mesh.internal.</Name>'));
  t.true(zone.xml.includes('<PrivateZone>true</PrivateZone></Config><ResourceRecordSetCount>2</ResourceRecordSetCount>'));
  t.true(zone.xml.includes('<DelegationSet><NameServers><NameServer>ns-1.awsdns-01.org</NameServer>'));
  const missing = await send(r, 'GET', '/2013-04-01/hostedzone/ZNOPE/rrset');
  t.is(missing.status, 404);
  t.true(
    missing.xml.includes('<Error><Type>Sender</Type><Code>NoSuchHostedZone</Code><Message>No hosted zone found with ID: ZNOPE</Message></Error><RequestId>'),
  );
});

test('requests must carry an AWS4-HMAC-SHA256 Authorization header', async (t) => {
  const r = await r53(t);
  const res = await send(r, 'GET', `/2013-04-01/hostedzone/${ZONE}/rrset`, undefined, false);
  t.is(res.status, 403);
  t.regex(res.xml, /<Code>MissingAuthenticationToken<\/Code>/);
  const wrong = await fetch(`${r.endpoint}/2013-04-01/hostedzone/${ZONE}/rrset`, {
    headers: {
      authorization: 'AWS4-HMAC-SHA256 Credential=A/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=' + 'a'.repeat(64),
      'x-amz-date': '20250101T000000Z',
    },
  });
  t.is(wrong.status, 403);
  t.regex(await wrong.text(), /<Code>IncompleteSignature<\/Code>/);
});

test('faults: Throttling and PriorRequestNotComplete XML (HTTP 400), latency, reset; calls counted per action', async (t) => {
  const r = await r53(t);
  const list = `/2013-04-01/hostedzone/${ZONE}/rrset`;
  r.throttleNext(2);
  for (let i = 0; i < 2; i++) {
    const res = await send(r, 'GET', list);
    t.is(res.status, 400);
    t.true(
      res.xml.includes(
        '<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>',
      ),
      res.xml,
    );
  }
  t.is((await send(r, 'GET', list)).status, 200);

  r.priorRequestNotCompleteNext(1);
  t.is((await send(r, 'GET', list)).status, 200, 'only changes are affected');
  const prior = await change(r, batch(['UPSERT', rrset('a.example.com', 'A', ['192.0.2.5'])]));
  t.deepEqual([prior.status, /<Code>(\w+)<\/Code>/.exec(prior.xml)?.[1]], [400, 'PriorRequestNotComplete']);
  t.is(r.records(ZONE).length, 3, 'rejected change not applied');
  t.is((await change(r, batch(['UPSERT', rrset('a.example.com', 'A', ['192.0.2.5'])]))).status, 200);

  r.faults.inject({ kind: 'latency', ms: 250, action: 'GetHostedZone' });
  const t0 = Date.now();
  t.is((await send(r, 'GET', `/2013-04-01/hostedzone/${ZONE}`)).status, 200);
  t.true(Date.now() - t0 >= 240);
  r.faults.inject({ kind: 'reset' });
  await t.throwsAsync(send(r, 'GET', list));
  r.faults.inject({ kind: 'status', status: 500 });
  t.regex((await send(r, 'GET', list)).xml, /<Type>Receiver<\/Type><Code>InternalFailure<\/Code>/);

  t.is(callsMatching(r.calls, { action: 'ListResourceRecordSets' }).length, 6);
  t.is(callsMatching(r.calls, { action: 'ChangeResourceRecordSets' }).length, 2);
  t.deepEqual(
    callsMatching(r.calls, { action: 'ChangeResourceRecordSets' }).map((c) => [c.status, c.fault]),
    [
      [400, 'prior-request-not-complete'],
      [200, undefined],
    ],
  );
  t.is(r.calls[0]?.headers['authorization'], '(redacted)');
});

test('rejectWhilePending: a second change to a zone still PENDING gets PriorRequestNotComplete', async (t) => {
  const r = await r53(t, { changeSyncDelayMs: SYNC_MS, rejectWhilePending: true });
  const first = await change(r, batch(['UPSERT', rrset('a.example.com', 'A', ['192.0.2.5'])]));
  t.is(first.status, 200);
  t.regex((await change(r, batch(['UPSERT', rrset('b.example.com', 'A', ['192.0.2.6'])]))).xml, /PriorRequestNotComplete/);
  await insync(r, changeId(first.xml)!);
  t.is((await change(r, batch(['UPSERT', rrset('b.example.com', 'A', ['192.0.2.6'])]))).status, 200);
});

test('allowedActions: a read-only IAM policy lists but any change answers 403 AccessDenied naming the action, and nothing is applied', async (t) => {
  const r = await r53(t, { allowedActions: ['ListResourceRecordSets', 'GetChange'] });
  t.is((await send(r, 'GET', `/2013-04-01/hostedzone/${ZONE}/rrset`)).status, 200);
  const denied = await change(r, batch(['UPSERT', rrset('a.example.com', 'A', ['192.0.2.5'])]));
  t.is(denied.status, 403);
  t.regex(
    denied.xml,
    /<Error><Type>Sender<\/Type><Code>AccessDenied<\/Code><Message>User: arn:aws:sts::123456789012:assumed-role\/mesh-vm\/i-0123456789abcdef0 is not authorized to perform: route53:ChangeResourceRecordSets on resource: arn:aws:route53:::hostedzone\/Z0000000000000000TEST because no identity-based policy allows the route53:ChangeResourceRecordSets action<\/Message>/,
  );
  t.is(r.records(ZONE).length, 3, 'not applied');
  r.allowedActions = undefined;
  t.is((await change(r, batch(['UPSERT', rrset('a.example.com', 'A', ['192.0.2.5'])]))).status, 200, 'the policy can change mid-test');
});
