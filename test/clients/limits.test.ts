// Many clients at once against the stand-ins with the real services' limits on (limits.ts): every refusal is retried
// and every client gets its answer (Kubernetes APF seats, a Vault rate-limit quota, Route53's per-account rate).
import test from 'ava';
import { KubernetesClient } from '../../clients/kubernetes.ts';
import { Route53Records } from '../../clients/route53.ts';
import { VaultClient } from '../../clients/vault.ts';
import { callsMatching, startKubernetes, startRoute53, startVault, testPki } from '../stand-ins/index.ts';

const ROOT = (await testPki()).caPem;
const SA = 'system:serviceaccount:vm-ns:vm-bootstrap';
const CLIENTS = 12;

test('Kubernetes: 12 clients against 3 seats all get their answer; every 429 was retried', async (t) => {
  const k = await startKubernetes({
    tokens: { 'scoped-token': { user: SA, groups: ['system:serviceaccounts'] } },
    rbac: { [SA]: [{ verbs: ['get'], resources: ['configmaps'], namespaces: ['vm-ns'] }] },
    limits: { concurrency: 3, serviceMs: 500 },
  });
  t.teardown(() => k.stop());
  k.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': ROOT });
  const answers = await Promise.all(
    Array.from({ length: CLIENTS }, () =>
      new KubernetesClient({ server: k.url, caPem: k.caPem, token: 'scoped-token', retry: { attempts: 6, baseMs: 50, maxMs: 2000 } }).rootCert('vm-ns'),
    ),
  );
  t.deepEqual(answers, Array(CLIENTS).fill(ROOT));
  const calls = callsMatching(k.calls, { action: 'get configmaps' });
  const limited = calls.filter((c) => c.limited);
  t.true(limited.length > 0, 'the seats refused some');
  t.is(calls.length - limited.length, CLIENTS, 'each client served exactly once');
});

test('Vault: 12 logins and reads against a quota of 10 requests/s all succeed; the 429s were retried', async (t) => {
  const v = await startVault({
    tls: false,
    policies: { mesh: [{ path: 'secret/data/meshvm/*', capabilities: ['read'] }] },
    appRoles: { meshvm: { roleId: 'role-id-1', secretId: 'secret-id-1', policies: ['mesh'] } },
    rateLimit: { rate: 10, intervalSeconds: 1 },
  });
  t.teardown(() => v.stop());
  v.putSecret('secret', 'meshvm/cluster-a', { server: 'https://203.0.113.10:6443' });
  const files: Record<string, string> = { '/etc/meshvm/role-id': 'role-id-1', '/etc/meshvm/secret-id': 'secret-id-1' };
  const read = () =>
    new VaultClient(
      {
        address: v.url,
        insecure: true,
        retry: { attempts: 8, baseMs: 200, maxMs: 3000 },
        auth: { method: 'approle', roleIdFile: '/etc/meshvm/role-id', secretIdFile: '/etc/meshvm/secret-id' },
      },
      { readFile: async (file) => files[file], warn: () => {} },
    ).readKv('meshvm/cluster-a');
  const answers = await Promise.all(Array.from({ length: CLIENTS }, read));
  t.true(answers.every((a) => a.version === 1));
  const limited = v.calls.filter((c) => c.limited);
  t.true(limited.length > 0, 'the quota refused some');
  t.is(callsMatching(v.calls, { path: '/v1/secret/data/meshvm/cluster-a' }).filter((c) => c.status === 200).length, CLIENTS);
});

test('Route53: 12 clients against 5 requests/s all read their record; the SDK retried every Throttling', async (t) => {
  const zone = 'Z0000000000000000MESH';
  const r = await startRoute53({ zones: [{ name: 'mesh.example.com', id: zone }], rateLimit: { perSecond: 5 } });
  t.teardown(() => r.stop());
  const credentials = { accessKeyId: 'AKIDROUTE53TEST', secretAccessKey: 'route53-test-secret-key' };
  const answers = await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      const client = new Route53Records({ endpoint: r.endpoint, credentials, maxAttempts: 8 });
      try {
        return await client.read(zone, 'mesh.example.com', 'NS');
      } finally {
        client.close();
      }
    }),
  );
  t.true(answers.every((a) => a?.values?.length === 4));
  t.true(
    r.calls.some((c) => c.limited),
    'the account rate refused some',
  );
  t.is(r.calls.filter((c) => c.status === 200).length, CLIENTS);
});
