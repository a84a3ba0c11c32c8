// Route53Records retries through the AWS SDK's own "standard" strategy (Throttling: 400 with the XML error), bounded by maxAttempts,
// (the stand-in of the Route 53 API 2013-04-01 answers).
import test from 'ava';
import { Route53Records } from '../../clients/route53.ts';
import { callsMatching, startRoute53 } from '../stand-ins/index.ts';

const ZONE = 'Z0000000000000000MESH';
const CREDENTIALS = { accessKeyId: 'AKIDROUTE53TEST', secretAccessKey: 'route53-test-secret-key' };

test('Throttling is retried by the SDK and the attempts stay bounded', async (t) => {
  const r = await startRoute53({ zones: [{ name: 'mesh.example.com', id: ZONE }] });
  t.teardown(() => r.stop());
  const client = new Route53Records({ endpoint: r.endpoint, credentials: CREDENTIALS, maxAttempts: 3 });
  t.teardown(() => client.close());

  r.throttleNext(2);
  t.is(await client.read(ZONE, 'istiod.mesh.example.com', 'CNAME'), undefined);
  t.deepEqual(
    callsMatching(r.calls, { action: 'ListResourceRecordSets' }).map((c) => c.status),
    [400, 400, 200],
  );

  r.throttleNext(3);
  await t.throwsAsync(client.read(ZONE, 'istiod.mesh.example.com', 'CNAME'), {
    message: /Throttling: Rate exceeded \(after 3 attempts\); Route53 kept refusing/,
  });
  t.is(callsMatching(r.calls, { action: 'ListResourceRecordSets' }).length, 6);
});
