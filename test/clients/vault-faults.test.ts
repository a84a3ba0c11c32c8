// VaultClient under the faults of the Vault HTTP API v1 stand-in: latency, reset, 5xx, 429, sealed, expired token.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { VaultClient } from '../../clients/vault.ts';
import type { VaultConfigInput } from '../../clients/vault.ts';
import { callsMatching, startVault } from '../stand-ins/index.ts';
import type { VaultStandIn } from '../stand-ins/index.ts';

const KV = '/v1/secret/data/meshvm/cluster-a';
const CLUSTER = { server: 'https://203.0.113.10:6443', token: 'faults-scoped-token', 'ca.crt': 'PEM' };
const FILES: Record<string, string> = { '/etc/meshvm/role-id': 'role-id-1', '/etc/meshvm/secret-id': 'secret-id-1' };

async function setup(t: ExecutionContext): Promise<{ v: VaultStandIn; approle: (extra?: Partial<VaultConfigInput>) => VaultClient }> {
  const v = await startVault({
    policies: {
      mesh: [
        { path: 'secret/data/meshvm/*', capabilities: ['read'] },
        { path: 'kubernetes/creds/mesh', capabilities: ['update'] },
      ],
    },
    appRoles: { meshvm: { roleId: 'role-id-1', secretId: 'secret-id-1', policies: ['mesh'] } },
    kubernetes: { roles: { mesh: { serviceAccountName: 'vm-bootstrap', allowedKubernetesNamespaces: ['vm-ns'] } } },
  });
  t.teardown(() => v.stop());
  v.putSecret('secret', 'meshvm/cluster-a', CLUSTER);
  const approle = (extra: Partial<VaultConfigInput> = {}) =>
    new VaultClient(
      {
        address: v.url,
        insecure: true, // the stand-in on loopback, plain http: TLS is what vault.test.ts and tls.test.ts cover
        retry: { attempts: 4, baseMs: 5, maxMs: 20 },
        auth: { method: 'approle', roleIdFile: '/etc/meshvm/role-id', secretIdFile: '/etc/meshvm/secret-id' },
        ...extra,
      },
      { readFile: async (file) => FILES[file], warn: () => {} },
    );
  return { v, approle };
}

const statuses = (v: VaultStandIn, path: string) => callsMatching(v.calls, { path }).map((c) => c.status);

test('latency past the request timeout: the read is retried and succeeds', async (t) => {
  const { v, approle } = await setup(t);
  v.faults.inject({ kind: 'latency', ms: 1500, path: KV });
  const vault = approle({ timeoutSeconds: 0.3 });
  t.is((await vault.readKv('meshvm/cluster-a')).data['server'], CLUSTER.server);
  t.is(callsMatching(v.calls, { path: KV }).length, 2);
});

test('latency under the timeout is only latency', async (t) => {
  const { v, approle } = await setup(t);
  v.faults.inject({ kind: 'latency', ms: 200, path: KV });
  t.is((await approle().readKv('meshvm/cluster-a')).version, 1);
  t.deepEqual(statuses(v, KV), [200]);
});

test('a reset connection during login and during a read is retried', async (t) => {
  const { v, approle } = await setup(t);
  v.faults.inject({ kind: 'reset', path: '/v1/auth/approle/login' });
  v.faults.inject({ kind: 'reset', path: KV });
  t.is((await approle().readKv('meshvm/cluster-a')).version, 1);
  t.deepEqual(statuses(v, '/v1/auth/approle/login'), [0, 200]);
  t.deepEqual(statuses(v, KV), [0, 200]);
  t.is(v.state.tokens.size, 1, 'one token issued');
});

test('5xx and 429 are retried with backoff until they pass', async (t) => {
  const { v, approle } = await setup(t);
  v.faults.inject({ kind: 'status', status: 502, path: KV, times: 2 });
  v.faults.inject({ kind: 'throttle', path: KV });
  t.is((await approle().readKv('meshvm/cluster-a')).version, 1);
  t.deepEqual(statuses(v, KV), [502, 502, 429, 200]);
});

test('5xx without end: bounded attempts, the last error, no partial access (KV read but creds failing)', async (t) => {
  const { v, approle } = await setup(t);
  v.faults.inject({ kind: 'status', status: 500, path: '/v1/kubernetes/creds/mesh', times: Infinity });
  const vault = approle();
  const error = await t.throwsAsync(vault.kubernetesAccess({ kv: { path: 'meshvm/cluster-a' }, creds: { role: 'mesh', namespace: 'vm-ns' } }));
  t.regex(
    error.message,
    /^minting a Kubernetes token from kubernetes\/creds\/mesh: Vault at http:\/\/127\.0\.0\.1:\d+ answered POST kubernetes\/creds\/mesh with HTTP 500: internal error \(injected\) \(after 4 attempts\)$/,
  );
  t.deepEqual(statuses(v, '/v1/kubernetes/creds/mesh'), [500, 500, 500, 500]);
  t.is(v.state.leases.size, 0);
});

test('a sealed Vault: retried while it unseals, else an error that says to unseal it', async (t) => {
  const { v, approle } = await setup(t);
  v.faults.inject({ kind: 'sealed', path: KV, times: 2 });
  t.is((await approle().readKv('meshvm/cluster-a')).version, 1);
  t.deepEqual(statuses(v, KV), [503, 503, 200]);

  v.state.sealed = true;
  await t.throwsAsync(approle().login(), {
    message: /^Vault approle login at auth\/approle: Vault at http:\/\/127\.0\.0\.1:\d+ is sealed: unseal it \(vault operator unseal\).*\(after 4 attempts\)$/,
  });
  t.deepEqual(statuses(v, '/v1/auth/approle/login').slice(-4), [503, 503, 503, 503]);
});

test('a login token that expires mid-run: one more login, then the read succeeds', async (t) => {
  const { v, approle } = await setup(t);
  const vault = approle();
  await vault.readKv('meshvm/cluster-a');
  v.faults.inject({ kind: 'expire-token', path: KV });
  t.is((await vault.readKv('meshvm/cluster-a')).version, 1);
  t.is(callsMatching(v.calls, { path: '/v1/auth/approle/login' }).length, 2);
  t.deepEqual(statuses(v, KV), [200, 403, 200]);
});

test('an operator token that expired: a clear error, no retry', async (t) => {
  const { v } = await setup(t);
  const token = v.issueToken({ policies: ['mesh'] });
  v.expireToken(token);
  const vault = new VaultClient({ address: v.url, insecure: true, auth: { method: 'token' } }, { env: { VAULT_TOKEN: token }, warn: () => {} });
  await t.throwsAsync(vault.readKv('meshvm/cluster-a'), {
    message: /Vault at http:\/\/127\.0\.0\.1:\d+ refused the token as invalid or expired \(403 permission denied; invalid token\): give meshvm a fresh token/,
  });
  t.deepEqual(statuses(v, KV), [403]);
});

test('a revoke that cannot reach Vault does not fail the run; it is reported in closeError', async (t) => {
  const { v, approle } = await setup(t);
  const vault = approle();
  await vault.login();
  v.faults.inject({ kind: 'reset', path: '/v1/auth/token/revoke-self', times: Infinity });
  await t.notThrowsAsync(vault.close());
  t.regex(vault.closeError ?? '', /could not revoke the run's Vault token \(it expires at its TTL\)/);
  t.is(callsMatching(v.calls, { path: '/v1/auth/token/revoke-self' }).length, 4);
});

test('nothing listens: connection refused, retried, then the address is named', async (t) => {
  const { v, approle } = await setup(t);
  await v.stop();
  await t.throwsAsync(approle().login(), { message: /cannot reach Vault at http:\/\/127\.0\.0\.1:\d+: connection error ECONNREFUSED; check the address/ });
});

test('TLS without the right CA: refused at once with the reason, not retried', async (t) => {
  const v = await startVault({ tls: true });
  t.teardown(() => v.stop());
  const token = v.issueToken({ policies: ['root'] });
  const vault = new VaultClient({ address: v.url, auth: { method: 'token' }, retry: { attempts: 4, baseMs: 5, maxMs: 20 } }, { env: { VAULT_TOKEN: token } });
  const error = await t.throwsAsync(vault.readKv('meshvm/cluster-a'), {
    message:
      /^reading the KV v2 secret secret\/data\/meshvm\/cluster-a: Vault at https:\/\/127\.0\.0\.1:\d+: the server's TLS certificate was refused \(\w+.*\(caFile\)$/,
  });
  t.notRegex(error.message, /attempts/);
  t.is(v.calls.length, 0);
});
