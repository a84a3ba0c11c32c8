// KubernetesClient under the faults of the Kubernetes API v1.33 stand-in: latency, reset, 5xx, 429 with Retry-After, expired token (401).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { KubernetesClient } from '../../clients/kubernetes.ts';
import type { KubernetesClientOptions } from '../../clients/kubernetes.ts';
import { callsMatching, startKubernetes, testPki } from '../stand-ins/index.ts';
import type { KubernetesStandIn } from '../stand-ins/index.ts';

/** A root certificate as istiod publishes it (the client refuses anything that is not PEM certificates). */
const ROOT = (await testPki()).caPem;

const SA = 'system:serviceaccount:vm-ns:vm-bootstrap';
const GET_CM = 'get configmaps';

async function cluster(t: ExecutionContext): Promise<KubernetesStandIn> {
  const k = await startKubernetes({
    tokens: { 'scoped-token': { user: SA, groups: ['system:serviceaccounts'] }, 'fresh-token': { user: SA, groups: ['system:serviceaccounts'] } },
    rbac: {
      [SA]: [
        { verbs: ['get'], resources: ['configmaps'], namespaces: ['vm-ns'] },
        { verbs: ['create'], resources: ['serviceaccounts/token'], namespaces: ['vm-ns'] },
      ],
    },
    serviceAccounts: ['vm-ns/vm'],
  });
  t.teardown(() => k.stop());
  k.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': ROOT });
  return k;
}

const client = (k: KubernetesStandIn, extra: Partial<KubernetesClientOptions> = {}) =>
  new KubernetesClient({ server: k.url, caPem: k.caPem, token: 'scoped-token', retry: { attempts: 4, baseMs: 5, maxMs: 50 }, ...extra });
const statuses = (k: KubernetesStandIn, action = GET_CM) => callsMatching(k.calls, { action }).map((c) => c.status);

test('latency past the request timeout: retried, then answered', async (t) => {
  const k = await cluster(t);
  k.faults.inject({ kind: 'latency', ms: 1500, action: GET_CM });
  t.is(await client(k, { timeoutSeconds: 0.3 }).rootCert('vm-ns'), ROOT);
  t.is(callsMatching(k.calls, { action: GET_CM }).length, 2);
});

test('a reset connection and 5xx are retried', async (t) => {
  const k = await cluster(t);
  k.faults.inject({ kind: 'reset', action: GET_CM });
  k.faults.inject({ kind: 'status', status: 503, action: GET_CM });
  t.is(await client(k).rootCert('vm-ns'), ROOT);
  t.deepEqual(statuses(k), [0, 503, 200]);
});

test('429 honours Retry-After (capped by the policy) and then succeeds', async (t) => {
  const k = await cluster(t);
  k.faults.inject({ kind: 'throttle', retryAfter: 1, action: GET_CM });
  const started = Date.now();
  t.is(await client(k, { retry: { attempts: 3, baseMs: 5, maxMs: 300 } }).rootCert('vm-ns'), ROOT);
  t.true(Date.now() - started >= 290, 'waited the capped Retry-After');
  t.deepEqual(statuses(k), [429, 200]);
});

test('5xx without end: bounded attempts and an error naming the request, no token handed out', async (t) => {
  const k = await cluster(t);
  k.faults.inject({ kind: 'status', status: 500, action: 'create serviceaccounts/token', times: Infinity });
  await t.throwsAsync(client(k).requestToken({ namespace: 'vm-ns', serviceAccount: 'vm' }), {
    message:
      /^requesting a token for ServiceAccount vm-ns\/vm: the Kubernetes API answered HTTP 500: Internal error occurred: injected fault \(after 4 attempts\)$/,
  });
  t.deepEqual(statuses(k, 'create serviceaccounts/token'), [500, 500, 500, 500]);
});

test('an expired token: refreshed once through the callback (e.g. from Vault), else a clear 401 error', async (t) => {
  const k = await cluster(t);
  k.faults.inject({ kind: 'expire-token', action: GET_CM });
  let refreshed = 0;
  const kube = client(k, { refreshToken: async () => (refreshed++, 'fresh-token') });
  t.is(await kube.rootCert('vm-ns'), ROOT);
  t.is(refreshed, 1);
  t.deepEqual(statuses(k), [401, 200]);

  k.tokens.expire('fresh-token');
  await t.throwsAsync(client(k, { token: 'fresh-token' }).rootCert('vm-ns'), {
    message:
      /^reading ConfigMap vm-ns\/istio-ca-root-cert: the Kubernetes API at https:\/\/127\.0\.0\.1:\d+ refused the token \(401 Unauthorized\): it has expired or been revoked/,
  });
});

test('nothing listens: connection refused, retried, then the server is named', async (t) => {
  const k = await cluster(t);
  await k.stop();
  await t.throwsAsync(client(k).rootCert('vm-ns'), {
    message: /cannot reach the Kubernetes API at https:\/\/127\.0\.0\.1:\d+: connection error ECONNREFUSED; .*\(after 4 attempts\)$/,
  });
});

test('a CA that did not sign the server certificate: refused at once, not retried, and said so', async (t) => {
  const k = await cluster(t);
  const { testPki } = await import('../stand-ins/index.ts');
  const other = await testPki({ fresh: true });
  const error = await t.throwsAsync(client(k, { caPem: other.caPem }).rootCert('vm-ns'), {
    message:
      /^reading ConfigMap vm-ns\/istio-ca-root-cert: the Kubernetes API at https:\/\/127\.0\.0\.1:\d+: the server's TLS certificate was refused \(\w+.*check the CA given for it/,
  });
  t.notRegex(error.message, /attempts/, 'not retried');
  t.is(k.calls.length, 0, 'no request got through the handshake');
});
