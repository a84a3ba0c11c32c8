// Self-tests of the shared stand-in plumbing: SigV4 (AWS test suite vectors), fault queue, test PKI.
import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { Faults, pathMatches } from './common.ts';
import type { CommonFault } from './common.ts';
import { parseAuthorization, signature, signRequest } from './sigv4.ts';
import { testPki } from './tls.ts';

const SECRET = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';

// AWS SigV4 test suite: get-vanilla and post-vanilla (host example.amazonaws.com, 20150830T123600Z, us-east-1, "service").
for (const [name, method, sig] of [
  ['get-vanilla', 'GET', '5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31'],
  ['post-vanilla', 'POST', '5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b'],
] as const) {
  test(`SigV4 matches the AWS test suite vector ${name}`, (t) => {
    const headers = signRequest({
      method,
      url: 'https://example.amazonaws.com/',
      region: 'us-east-1',
      service: 'service',
      accessKeyId: 'AKIDEXAMPLE',
      secretAccessKey: SECRET,
      date: new Date('2015-08-30T12:36:00Z'),
    });
    t.is(
      headers['authorization'],
      `AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=${sig}`,
    );
    const parsed = parseAuthorization(headers['authorization']);
    t.deepEqual(parsed, {
      accessKeyId: 'AKIDEXAMPLE',
      date: '20150830',
      region: 'us-east-1',
      service: 'service',
      signedHeaders: ['host', 'x-amz-date'],
      signature: sig,
    });
    t.is(
      signature({
        method,
        pathAndQuery: '/',
        headers,
        signedHeaders: ['host', 'x-amz-date'],
        body: '',
        secretAccessKey: SECRET,
        amzDate: '20150830T123600Z',
        region: 'us-east-1',
        service: 'service',
      }),
      sig,
    );
  });
}

test('parseAuthorization rejects what is not an AWS4-HMAC-SHA256 header', (t) => {
  t.is(parseAuthorization(undefined), undefined);
  t.is(parseAuthorization('Bearer abc'), undefined);
  t.is(parseAuthorization('AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=short'), undefined);
});

test('fault queue: scoped by path glob, method and action; counts down; latency adds up', (t) => {
  const f = new Faults<CommonFault | { kind: 'throttle' }>();
  f.inject({ kind: 'latency', ms: 10, times: Infinity });
  f.inject({ kind: 'latency', ms: 5, path: '/v1/secret/*' });
  f.inject({ kind: 'status', status: 500, path: '/v1/secret/*', method: 'get', times: 2 });
  f.inject({ kind: 'throttle', action: 'GetChange' });
  t.deepEqual(f.take({ method: 'POST', path: '/v1/secret/a' }), { delayMs: 15 });
  t.deepEqual(f.take({ method: 'GET', path: '/v1/secret/a/b' }), { delayMs: 10, fault: { kind: 'status', status: 500 } });
  t.deepEqual(f.take({ method: 'GET', path: '/v1/other' }), { delayMs: 10 });
  t.deepEqual(f.take({ method: 'GET', path: '/x', action: 'GetChange' }), { delayMs: 10, fault: { kind: 'throttle' } });
  t.deepEqual(f.take({ method: 'GET', path: '/v1/secret/c' }), { delayMs: 10, fault: { kind: 'status', status: 500 } });
  t.deepEqual(f.take({ method: 'GET', path: '/v1/secret/c' }), { delayMs: 10 });
  t.is(f.pending, 1);
  f.clear();
  t.is(f.pending, 0);
  t.true(pathMatches(/^\/v1\//, '/v1/x'));
  t.false(pathMatches('/v1/a', '/v1/a/b'));
});

test('test PKI: server cert for 127.0.0.1 issued by the CA', async (t) => {
  const pki = await testPki();
  const ca = new X509Certificate(pki.caPem);
  const cert = new X509Certificate(pki.certPem);
  t.true(ca.ca);
  t.true(cert.checkIssued(ca));
  t.true(cert.verify(ca.publicKey));
  t.is(cert.checkIP('127.0.0.1'), '127.0.0.1');
  t.is(await testPki(), await testPki(), 'shared per process');
  t.not((await testPki({ fresh: true })).caPem, pki.caPem);
});
