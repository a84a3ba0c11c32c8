// VaultClient against the Vault HTTP API v1 stand-in (AppRole, AWS IAM and token auth, KV v2, Kubernetes secrets engine, namespaces, TLS).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { secrets } from '../../engine/secrets.ts';
import { VaultClient } from '../../clients/vault.ts';
import type { VaultConfigInput } from '../../clients/vault.ts';
import { callsMatching, startVault } from '../stand-ins/index.ts';
import type { VaultOptions, VaultStandIn } from '../stand-ins/index.ts';
import { scratchRoot } from '../helpers/scratch.ts';

const ARN = 'arn:aws:sts::123456789012:assumed-role/vm-role/i-0abc';
const AWS = { accessKeyId: 'AKIDVAULTTEST', secretAccessKey: 'vault-test-aws-secret', sessionToken: 'vault-test-session-token' };
const FAST = { attempts: 4, baseMs: 5, maxMs: 20 };
const CLUSTER = {
  server: 'https://203.0.113.10:6443',
  token: 'eyJhbGciOiJSUzI1NiJ9.scoped-token.sig',
  'ca.crt': '-----BEGIN CERTIFICATE-----\nMIIBcluster\n-----END CERTIFICATE-----\n',
};

const options: VaultOptions = {
  tls: true,
  policies: {
    mesh: [
      { path: 'secret/data/meshvm/*', capabilities: ['read'] },
      { path: 'kubernetes/creds/mesh', capabilities: ['update'] },
    ],
  },
  appRoles: { meshvm: { roleId: 'role-id-1', secretId: 'secret-id-1', policies: ['mesh'] } },
  aws: {
    roles: {
      vm: { boundIamPrincipalArns: ['arn:aws:iam::123456789012:role/vm-role'], policies: ['mesh'] },
      other: { boundIamPrincipalArns: ['arn:aws:iam::1:role/x'] },
    },
    identities: { [AWS.accessKeyId]: { arn: ARN, secretAccessKey: AWS.secretAccessKey } },
    iamServerId: 'vault.example.com',
  },
  kubernetes: { roles: { mesh: { serviceAccountName: 'vm-bootstrap', allowedKubernetesNamespaces: ['vm-ns'] } } },
};

/** A TLS Vault stand-in with the cluster secret stored, and a scratch dir holding its CA and the AppRole files. */
async function setup(
  t: ExecutionContext,
  opts: VaultOptions = options,
): Promise<{ v: VaultStandIn; dir: string; base: Pick<VaultConfigInput, 'address' | 'caFile' | 'retry'> }> {
  const v = await startVault(opts);
  t.teardown(() => v.stop());
  v.putSecret('secret', 'meshvm/cluster-a', CLUSTER, opts.appRoles?.['meshvm']?.namespace ? { namespace: opts.appRoles['meshvm'].namespace } : {});
  const dir = await scratchRoot(t);
  await fs.writeFile(path.join(dir, 'ca.pem'), v.caPem!);
  await fs.writeFile(path.join(dir, 'role-id'), 'role-id-1\n');
  await fs.writeFile(path.join(dir, 'secret-id'), 'secret-id-1\n');
  return { v, dir, base: { address: v.url, caFile: path.join(dir, 'ca.pem'), retry: FAST } };
}

const logins = (v: VaultStandIn) => v.calls.filter((c) => c.path.endsWith('/login'));

test('AppRole: one login for the run, KV v2 reads, the token revoked at close', async (t) => {
  const { v, dir, base } = await setup(t);
  const vault = new VaultClient({ ...base, auth: { method: 'approle', roleIdFile: path.join(dir, 'role-id'), secretIdFile: path.join(dir, 'secret-id') } });
  const own = { ...CLUSTER, server: 'https://198.51.100.77:6443', token: 'approle-test-scoped-token' };
  v.putSecret('secret', 'meshvm/cluster-b', own);
  const access = await vault.kubernetesAccess({ kv: { path: 'meshvm/cluster-b' } });
  t.deepEqual(access, { server: own.server, caPem: own['ca.crt'], token: own.token });
  const again = await vault.readKv('meshvm/cluster-b', { secret: ['token'] });
  t.is(again.version, 1);
  t.is(logins(v).length, 1, 'one login per run');
  t.deepEqual(callsMatching(v.calls, { method: 'GET', path: '/v1/secret/data/meshvm/cluster-b' }).length, 2);
  t.is(secrets.redact(`token ${own.token}`), 'token (sensitive)', 'the scoped token is masked');
  t.is(secrets.redact(own.server), own.server, 'server and CA are not secrets');
  t.is(secrets.redact('secret-id-1'), '(sensitive)', 'the secret_id is masked');
  const [token] = [...v.state.tokens.values()];
  t.is(secrets.redact(token!.id), '(sensitive)', 'the Vault token is masked');
  await vault.close();
  t.true(token!.revoked, 'revoked at close');
  t.is(vault.closeError, undefined);
  await vault.close();
  t.is(callsMatching(v.calls, { path: '/v1/auth/token/revoke-self' }).length, 1, 'close is idempotent');
});

test('AWS IAM: GetCallerIdentity signed with SigV4 and the server-ID header; the stand-in verifies the signature', async (t) => {
  const { v, base } = await setup(t);
  const vault = new VaultClient({ ...base, auth: { method: 'aws', role: 'vm', serverIdHeader: 'vault.example.com' } }, { awsCredentials: AWS });
  t.deepEqual((await vault.readKv('meshvm/cluster-a')).data, CLUSTER);
  const token = [...v.state.tokens.values()][0]!;
  t.like(token.meta, { auth_type: 'iam', client_arn: ARN, canonical_arn: 'arn:aws:iam::123456789012:role/vm-role' });
  t.is(secrets.redact(AWS.secretAccessKey), '(sensitive)');
  await vault.close();
  t.true(token.revoked);
});

test('AWS IAM refusals say what to fix: wrong role, unbound principal, missing server ID, bad credentials', async (t) => {
  const { base } = await setup(t);
  const login = (auth: Record<string, unknown>, credentials = AWS) =>
    new VaultClient(
      { ...base, auth: { method: 'aws', role: 'vm', serverIdHeader: 'vault.example.com', ...auth } as never },
      { awsCredentials: credentials },
    ).login();
  await t.throwsAsync(login({ role: 'ghost' }), {
    message:
      /Vault aws login at auth\/aws: Vault at .* has no role "ghost" \(entry for role ghost not found\): check auth\.role .* create the role at auth\/aws\/role\/ghost/,
  });
  await t.throwsAsync(login({ role: 'other' }), {
    message:
      /IAM Principal "arn:aws:iam::123456789012:role\/vm-role" does not belong to the role "other": add this instance's IAM role to the Vault role's bound_iam_principal_arn/,
  });
  await t.throwsAsync(login({ serverIdHeader: undefined }), { message: /missing header "X-Vault-AWS-IAM-Server-ID": set auth\.serverIdHeader/ });
  await t.throwsAsync(login({}, { ...AWS, secretAccessKey: 'wrong-secret-key' }), {
    message: /STS did not accept the signed GetCallerIdentity .*SignatureDoesNotMatch/,
  });
});

test("token auth: from a file or VAULT_TOKEN; the operator's token is never revoked", async (t) => {
  const { v, dir, base } = await setup(t);
  const given = v.issueToken({ policies: ['mesh'] });
  await fs.writeFile(path.join(dir, 'token'), `${given}\n`);
  const fromFile = new VaultClient({ ...base, auth: { method: 'token', file: path.join(dir, 'token') } });
  t.is((await fromFile.readKv('meshvm/cluster-a')).data['server'], CLUSTER.server);
  await fromFile.close();
  const fromEnv = new VaultClient({ ...base, auth: { method: 'token' } }, { env: { VAULT_TOKEN: given } });
  t.is((await fromEnv.readKv('meshvm/cluster-a')).version, 1);
  await fromEnv.close();
  t.false(v.state.tokens.get(given)!.revoked);
  t.deepEqual(logins(v), []);
  t.deepEqual(callsMatching(v.calls, { path: '/v1/auth/token/revoke-self' }), []);
  await t.throwsAsync(new VaultClient({ ...base, auth: { method: 'token' } }, { env: {} }).login(), {
    message: /token auth needs auth\.file or the VAULT_TOKEN environment variable/,
  });
});

test('namespaces: the login and the reads carry X-Vault-Namespace', async (t) => {
  const { v, dir, base } = await setup(t, {
    ...options,
    appRoles: { meshvm: { roleId: 'role-id-1', secretId: 'secret-id-1', policies: ['mesh'], namespace: 'team-a' } },
  });
  const config = { ...base, auth: { method: 'approle' as const, roleIdFile: path.join(dir, 'role-id'), secretIdFile: path.join(dir, 'secret-id') } };
  t.is((await new VaultClient({ ...config, namespace: 'team-a' }).readKv('meshvm/cluster-a')).data['server'], CLUSTER.server);
  t.true(v.calls.every((c) => c.headers['x-vault-namespace'] === 'team-a'));
  await t.throwsAsync(new VaultClient(config).login(), {
    message: /refused the role_id\/secret_id read from .*role-id and .*secret-id \(invalid role or secret ID\)/,
  });
});

test('a policy that lacks the path: the 403 names the path and the capability to add', async (t) => {
  const { dir, base } = await setup(t);
  const vault = new VaultClient({ ...base, auth: { method: 'approle', roleIdFile: path.join(dir, 'role-id'), secretIdFile: path.join(dir, 'secret-id') } });
  await t.throwsAsync(vault.readKv('other/cluster'), {
    message:
      /reading the KV v2 secret secret\/data\/other\/cluster: Vault at https:\/\/127\.0\.0\.1:\d+ denied GET secret\/data\/other\/cluster \(403 permission denied\): the token's policy lacks path "secret\/data\/other\/cluster" \{ capabilities = \["read"\] \}/,
  });
});

test('missing KV data: the full API path (secret/data/...), a deleted version, a missing key', async (t) => {
  const { v, dir, base } = await setup(t);
  const vault = new VaultClient({ ...base, auth: { method: 'approle', roleIdFile: path.join(dir, 'role-id'), secretIdFile: path.join(dir, 'secret-id') } });
  await t.throwsAsync(vault.readKv('meshvm/nothing'), {
    message: /no KV v2 secret at secret\/data\/meshvm\/nothing \(the full API path\): store it with `vault kv put -mount=secret meshvm\/nothing \.\.\.`/,
  });
  v.putSecret('secret', 'meshvm/partial', { server: CLUSTER.server, 'ca.crt': CLUSTER['ca.crt'] });
  await t.throwsAsync(vault.kubernetesAccess({ kv: { path: 'meshvm/partial' } }), {
    message: 'the KV v2 secret secret/data/meshvm/partial has no "token" (it has: server, ca.crt); store it there',
  });
  v.putSecret('secret', 'meshvm/gone', CLUSTER);
  v.deleteSecret('secret', 'meshvm/gone');
  await t.throwsAsync(vault.readKv('meshvm/gone'), { message: /no KV v2 secret at secret\/data\/meshvm\/gone .*\(its current version was deleted at \d{4}-/ });
});

test('Kubernetes secrets engine: the token minted from kubernetes/creds/ROLE, server and CA from KV', async (t) => {
  const { v, dir, base } = await setup(t);
  const vault = new VaultClient({ ...base, auth: { method: 'approle', roleIdFile: path.join(dir, 'role-id'), secretIdFile: path.join(dir, 'secret-id') } });
  const access = await vault.kubernetesAccess({ kv: { path: 'meshvm/cluster-a' }, creds: { role: 'mesh', namespace: 'vm-ns', ttlSeconds: 900 } });
  t.is(access.server, CLUSTER.server);
  t.not(access.token, CLUSTER.token);
  t.regex(access.token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  t.true(access.tokenExpiresAt!.getTime() > Date.now() + 880_000);
  t.is(secrets.redact(access.token), '(sensitive)');
  const creds = callsMatching(v.calls, { method: 'POST', path: '/v1/kubernetes/creds/mesh' });
  t.is(creds.length, 1);
  await t.throwsAsync(vault.mintKubernetesToken({ role: 'mesh', namespace: 'default' }), {
    message: /kubernetes_namespace 'default' is not present in role's allowed_kubernetes_namespaces/,
  });
});

test('bad configuration is refused before any request', (t) => {
  t.throws(() => new VaultClient({ address: 'vault:8200', auth: { method: 'token' } }), { message: /vault: address: / });
  t.throws(() => new VaultClient({ address: 'https://vault:8200', auth: { method: 'kerberos' } as never }), { message: /vault: auth\.method: / });
});
