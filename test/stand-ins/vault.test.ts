// Self-tests of the Vault HTTP API v1 stand-in, driven with fetch and node:https.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { until } from '../helpers/poll.ts';
import { call } from './http-client.ts';
import { callsMatching } from './common.ts';
import { signRequest } from './sigv4.ts';
import { startVault } from './vault.ts';
import type { VaultOptions, VaultStandIn } from './vault.ts';

const DENIED = '1 error occurred:\n\t* permission denied\n\n';

async function vault(t: ExecutionContext, opts: VaultOptions = {}): Promise<VaultStandIn> {
  const v = await startVault(opts);
  t.teardown(() => v.stop());
  return v;
}

async function req(
  v: VaultStandIn,
  method: string,
  path: string,
  opts: { token?: string; namespace?: string; body?: unknown } = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = {};
  if (opts.token !== undefined) headers['x-vault-token'] = opts.token;
  if (opts.namespace !== undefined) headers['x-vault-namespace'] = opts.namespace;
  const init: RequestInit = { method, headers };
  if (opts.body !== undefined) init.body = JSON.stringify(opts.body);
  const res = await fetch(`${v.url}${path}`, init);
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text), headers: res.headers };
}

const appRoleOpts: VaultOptions = {
  policies: { app: [{ path: 'secret/data/app/*', capabilities: ['read'] }] },
  appRoles: { meshvm: { roleId: 'role-1', secretId: 'secret-1', policies: ['app'], ttl: 600, maxTtl: 1200 } },
};

test('sys/health follows the documented status codes; seal-status reports the seal', async (t) => {
  const v = await vault(t);
  const ok = await req(v, 'GET', '/v1/sys/health');
  t.is(ok.status, 200);
  t.like(ok.body, { initialized: true, sealed: false, standby: false });
  v.state.standby = true;
  t.is((await req(v, 'GET', '/v1/sys/health')).status, 429);
  t.is((await req(v, 'GET', '/v1/sys/health?standbyok=true')).status, 200);
  v.state.sealed = true;
  const sealed = await req(v, 'GET', '/v1/sys/health');
  t.is(sealed.status, 503);
  t.true(sealed.body.sealed);
  t.is((await req(v, 'GET', '/v1/sys/health?sealedcode=200')).status, 200);
  t.like((await req(v, 'GET', '/v1/sys/seal-status')).body, { sealed: true, type: 'shamir' });
  const blocked = await req(v, 'GET', '/v1/secret/data/x', { token: v.issueToken({ policies: ['root'] }) });
  t.deepEqual(blocked, { status: 503, body: { errors: ['Vault is sealed'] }, headers: blocked.headers });
  v.state.initialized = false;
  t.is((await req(v, 'GET', '/v1/sys/health')).status, 501);
});

test('AppRole login issues a token whose policies gate KV v2 reads', async (t) => {
  const v = await vault(t, appRoleOpts);
  const bad = await req(v, 'POST', '/v1/auth/approle/login', { body: { role_id: 'role-1', secret_id: 'nope' } });
  t.deepEqual(bad.body, { errors: ['invalid role or secret ID'] });
  t.is(bad.status, 400);
  const login = await req(v, 'POST', '/v1/auth/approle/login', { body: { role_id: 'role-1', secret_id: 'secret-1' } });
  t.is(login.status, 200);
  const auth = login.body.auth;
  t.regex(auth.client_token, /^hvs\.[A-Za-z0-9]{24}$/);
  t.deepEqual(auth.policies, ['default', 'app']);
  t.is(auth.lease_duration, 600);
  t.true(auth.renewable);
  t.deepEqual(auth.metadata, { role_name: 'meshvm' });

  v.putSecret('secret', 'app/vm', { token: 'one' }, { customMetadata: { owner: 'mesh' } });
  const read = await req(v, 'GET', '/v1/secret/data/app/vm', { token: auth.client_token });
  t.is(read.status, 200);
  t.deepEqual(read.body.data.data, { token: 'one' });
  t.like(read.body.data.metadata, { version: 1, deletion_time: '', destroyed: false, custom_metadata: { owner: 'mesh' } });
  t.regex(read.body.data.metadata.created_time, /^\d{4}-\d\d-\d\dT/);
  t.like(read.body, { lease_id: '', renewable: false, lease_duration: 0, mount_type: 'kv' });

  const denied = await req(v, 'GET', '/v1/secret/data/other', { token: auth.client_token });
  t.deepEqual([denied.status, denied.body], [403, { errors: [DENIED] }]);
  const write = await req(v, 'POST', '/v1/secret/data/app/vm', { token: auth.client_token, body: { data: { x: 1 } } });
  t.deepEqual([write.status, write.body], [403, { errors: [DENIED] }]);
});

test('KV v2 keeps versions: rotation, ?version=N, missing, deleted and destroyed versions', async (t) => {
  const v = await vault(t);
  const root = v.issueToken({ policies: ['root'] });
  t.is(v.putSecret('secret', 'app/vm', { token: 'one' }), 1);
  t.is(v.putSecret('secret', 'app/vm', { token: 'two' }), 2);
  const latest = await req(v, 'GET', '/v1/secret/data/app/vm', { token: root });
  t.deepEqual([latest.body.data.data, latest.body.data.metadata.version], [{ token: 'two' }, 2]);
  const first = await req(v, 'GET', '/v1/secret/data/app/vm?version=1', { token: root });
  t.deepEqual([first.body.data.data, first.body.data.metadata.version], [{ token: 'one' }, 1]);
  t.deepEqual(await req(v, 'GET', '/v1/secret/data/app/none', { token: root }).then((r) => [r.status, r.body]), [404, { errors: [] }]);
  t.deepEqual(await req(v, 'GET', '/v1/secret/data/app/vm?version=9', { token: root }).then((r) => [r.status, r.body]), [404, { errors: [] }]);

  const posted = await req(v, 'POST', '/v1/secret/data/app/vm', { token: root, body: { data: { token: 'three' }, options: { cas: 2 } } });
  t.is(posted.body.data.version, 3);
  const cas = await req(v, 'POST', '/v1/secret/data/app/vm', { token: root, body: { data: { token: 'x' }, options: { cas: 2 } } });
  t.deepEqual([cas.status, cas.body], [400, { errors: ['check-and-set parameter did not match the current version'] }]);

  v.deleteSecret('secret', 'app/vm');
  const deleted = await req(v, 'GET', '/v1/secret/data/app/vm', { token: root });
  t.is(deleted.status, 404);
  t.is(deleted.body.data.data, null);
  t.not(deleted.body.data.metadata.deletion_time, '');
  v.deleteSecret('secret', 'app/vm', { version: 1, destroy: true });
  const destroyed = await req(v, 'GET', '/v1/secret/data/app/vm?version=1', { token: root });
  t.deepEqual([destroyed.status, destroyed.body.data.data, destroyed.body.data.metadata.destroyed], [404, null, true]);
  t.deepEqual((await req(v, 'GET', '/v1/secret/data/app/vm?version=2', { token: root })).body.data.data, { token: 'two' });
  const list = await req(v, 'GET', '/v1/secret/metadata/app/?list=true', { token: root });
  t.deepEqual(list.body.data.keys, ['vm']);
  const meta = await req(v, 'GET', '/v1/secret/metadata/app/vm', { token: root });
  t.is(meta.body.data.current_version, 3);
  t.deepEqual(Object.keys(meta.body.data.versions), ['1', '2', '3']);
  t.is((await req(v, 'GET', '/v1/nomount/data/x', { token: root })).body.errors[0], 'no handler for route "nomount/data/x". route entry not found.');
});

test('KV v2 metadata listing: the LIST verb and GET ?list=true|1, gated by the list capability', async (t) => {
  const v = await vault(t, { policies: { lister: [{ path: 'secret/metadata/app/*', capabilities: ['list'] }] } });
  v.putSecret('secret', 'app/vm', { a: 1 });
  v.putSecret('secret', 'app/sub/x', { a: 1 });
  const token = v.issueToken({ policies: ['lister'] });
  const viaVerb = await call(`${v.url}/v1/secret/metadata/app/`, { method: 'LIST', headers: { 'x-vault-token': token } });
  t.deepEqual([viaVerb.status, viaVerb.json().data.keys], [200, ['sub/', 'vm']]);
  t.deepEqual((await req(v, 'GET', '/v1/secret/metadata/app/?list=1', { token })).body.data.keys, ['sub/', 'vm']);
  t.is((await req(v, 'GET', '/v1/secret/metadata/app/vm', { token })).status, 403, 'read is not list');
  const none = await call(`${v.url}/v1/secret/metadata/app/nothing/`, { method: 'LIST', headers: { 'x-vault-token': token } });
  t.deepEqual([none.status, none.json()], [404, { errors: [] }]);
  t.deepEqual(
    v.calls.map((c) => c.method),
    ['LIST', 'GET', 'GET', 'LIST'],
  );
});

test('token self-ops: lookup, renew capped at max TTL, revoke (204) and then "invalid token"', async (t) => {
  const v = await vault(t, appRoleOpts);
  const token = v.issueToken({ policies: ['app'], ttl: 60, maxTtl: 100 });
  const look = await req(v, 'GET', '/v1/auth/token/lookup-self', { token });
  t.is(look.status, 200);
  t.like(look.body.data, { id: token, policies: ['default', 'app'], renewable: true, type: 'service', creation_ttl: 60 });
  t.true(look.body.data.ttl > 55 && look.body.data.ttl <= 60);
  const renewed = await req(v, 'POST', '/v1/auth/token/renew-self', { token, body: { increment: '1h' } });
  t.is(renewed.status, 200);
  t.is(renewed.body.auth.client_token, token);
  t.true(renewed.body.auth.lease_duration > 95 && renewed.body.auth.lease_duration <= 100);
  t.truthy(renewed.body.warnings);
  const revoked = await req(v, 'POST', '/v1/auth/token/revoke-self', { token });
  t.is(revoked.status, 204);
  const after = await req(v, 'GET', '/v1/auth/token/lookup-self', { token });
  t.deepEqual([after.status, after.body], [403, { errors: ['2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n'] }]);
  const none = await req(v, 'GET', '/v1/auth/token/lookup-self');
  t.deepEqual([none.status, none.body], [403, { errors: ['permission denied'] }]);
  const issued = Date.now();
  const expiring = v.issueToken({ ttl: 1 });
  const lookup = () => req(v, 'GET', '/v1/auth/token/lookup-self', { token: expiring });
  t.is((await lookup()).status, 200, 'valid until its TTL runs out');
  await until(async () => (await lookup()).status === 403, { what: 'the 1 s token to expire', timeoutMs: 6000 });
  t.true(Date.now() - issued >= 1000, 'not refused before its TTL');
  t.deepEqual((await lookup()).body, { errors: ['2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n'] });
});

test('namespaces: a secret lives in one namespace; tokens only reach their own subtree', async (t) => {
  const v = await vault(t, {
    policies: { app: [{ path: 'secret/data/*', capabilities: ['read'] }], parent: [{ path: 'child/secret/data/*', capabilities: ['read'] }] },
    appRoles: { a: { roleId: 'ra', secretId: 'sa', policies: ['app'], namespace: 'team-a' } },
  });
  v.putSecret('secret', 'vm', { k: 'a' }, { namespace: 'team-a' });
  v.putSecret('secret', 'vm', { k: 'child' }, { namespace: 'team-a/child' });
  t.is((await req(v, 'POST', '/v1/auth/approle/login', { body: { role_id: 'ra', secret_id: 'sa' } })).status, 400, 'role lives in team-a');
  const login = await req(v, 'POST', '/v1/auth/approle/login', { namespace: 'team-a', body: { role_id: 'ra', secret_id: 'sa' } });
  const token: string = login.body.auth.client_token;
  t.deepEqual((await req(v, 'GET', '/v1/secret/data/vm', { token, namespace: 'team-a/' })).body.data.data, { k: 'a' });
  t.is((await req(v, 'GET', '/v1/secret/data/vm', { token })).status, 403, 'root namespace is outside the token');
  t.is((await req(v, 'GET', '/v1/secret/data/vm', { token, namespace: 'team-b' })).status, 403);
  t.is((await req(v, 'GET', '/v1/secret/data/nothing', { token, namespace: 'team-a' })).status, 404);
  const parent = v.issueToken({ policies: ['parent'], namespace: 'team-a' });
  t.deepEqual((await req(v, 'GET', '/v1/secret/data/vm', { token: parent, namespace: 'team-a/child' })).body.data.data, { k: 'child' });
  t.is((await req(v, 'GET', '/v1/secret/data/vm', { token: parent, namespace: 'team-a' })).status, 403);
});

function iamLogin(o: {
  role: string;
  akid: string;
  secret: string;
  serverId?: string;
  signServerId?: boolean;
  date?: Date;
  url?: string;
  region?: string;
}): Record<string, string> {
  const url = o.url ?? 'https://sts.amazonaws.com/';
  const body = 'Action=GetCallerIdentity&Version=2011-06-15';
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' };
  if (o.serverId !== undefined && o.signServerId !== false) headers['x-vault-aws-iam-server-id'] = o.serverId;
  const signed = signRequest({
    method: 'POST',
    url,
    headers,
    body,
    region: o.region ?? 'us-east-1',
    service: 'sts',
    accessKeyId: o.akid,
    secretAccessKey: o.secret,
    sessionToken: 'session-token',
    ...(o.date ? { date: o.date } : {}),
  });
  if (o.serverId !== undefined && o.signServerId === false) signed['x-vault-aws-iam-server-id'] = o.serverId;
  delete signed['host']; // Go's http.Header does not carry Host
  const goStyle = Object.fromEntries(Object.entries(signed).map(([k, val]) => [k.replace(/(^|-)([a-z])/g, (m) => m.toUpperCase()), [val]]));
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  return {
    role: o.role,
    iam_http_request_method: 'POST',
    iam_request_url: b64(url),
    iam_request_body: b64(body),
    iam_request_headers: b64(JSON.stringify(goStyle)),
  };
}

test('AWS IAM login checks the signed GetCallerIdentity shape, the server-ID header and the signature', async (t) => {
  const arn = 'arn:aws:sts::123456789012:assumed-role/vm-role/i-0abc';
  const v = await vault(t, {
    aws: {
      roles: {
        vm: { boundIamPrincipalArns: ['arn:aws:iam::123456789012:role/vm-role'], policies: ['app'] },
        other: { boundIamPrincipalArns: ['arn:aws:iam::1:role/x'], policies: [] },
      },
      identities: { AKIDEXAMPLE: { arn, secretAccessKey: 'sekrit' }, AKIDNOSECRET: { arn } },
      iamServerId: 'vault.example.com',
    },
  });
  const base = { role: 'vm', akid: 'AKIDEXAMPLE', secret: 'sekrit', serverId: 'vault.example.com' };
  const login = (body: unknown): ReturnType<typeof req> => req(v, 'POST', '/v1/auth/aws/login', { body });
  const ok = await login(iamLogin(base));
  t.is(ok.status, 200, JSON.stringify(ok.body));
  t.deepEqual(ok.body.auth.policies, ['default', 'app']);
  t.like(ok.body.auth.metadata, { account_id: '123456789012', auth_type: 'iam', client_arn: arn, canonical_arn: 'arn:aws:iam::123456789012:role/vm-role' });
  t.is((await login(iamLogin({ ...base, akid: 'AKIDNOSECRET', secret: 'anything' }))).status, 200, 'no secret known: shape only');

  const err = async (body: unknown): Promise<string> => {
    const r = await login(body);
    t.is(r.status, 400);
    return r.body.errors[0];
  };
  const { serverId: _s, ...noServerId } = base;
  t.is(await err(iamLogin(noServerId)), 'error validating X-Vault-AWS-IAM-Server-ID header: missing header "X-Vault-AWS-IAM-Server-ID"');
  t.is(await err(iamLogin({ ...base, serverId: 'evil' })), 'error validating X-Vault-AWS-IAM-Server-ID header: expected "vault.example.com" but got "evil"');
  t.is(await err(iamLogin({ ...base, signServerId: false })), "error validating X-Vault-AWS-IAM-Server-ID header: vault header wasn't signed");
  t.regex(await err(iamLogin({ ...base, secret: 'wrong' })), /SignatureDoesNotMatch/);
  t.regex(await err(iamLogin({ ...base, date: new Date(Date.now() - 3600_000) })), /Signature expired/);
  t.regex(await err(iamLogin({ ...base, region: 'eu-west-1' })), /valid region/);
  t.regex(await err(iamLogin({ ...base, akid: 'AKIDUNKNOWN' })), /InvalidClientTokenId/);
  t.regex(await err(iamLogin({ ...base, url: 'https://sts.eu-west-1.amazonaws.com/' })), /iam_request_url/);
  t.is(await err(iamLogin({ ...base, role: 'other' })), 'IAM Principal "arn:aws:iam::123456789012:role/vm-role" does not belong to the role "other"');
  t.is(await err({ ...iamLogin(base), iam_http_request_method: 'GET' }), 'invalid iam_http_request_method; can only be POST');
  const badAuth = iamLogin(base);
  const headers = JSON.parse(Buffer.from(badAuth['iam_request_headers']!, 'base64').toString()) as Record<string, string[]>;
  headers['Authorization'] = ['AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=abc'];
  t.regex(await err({ ...badAuth, iam_request_headers: Buffer.from(JSON.stringify(headers)).toString('base64') }), /IncompleteSignature/);
  t.is(callsMatching(v.calls, { method: 'POST', path: '/v1/auth/aws/login' }).length, 13);
});

test('Kubernetes secrets engine returns a service-account token with a lease, within the role limits', async (t) => {
  const v = await vault(t, {
    policies: { k8s: [{ path: 'kubernetes/creds/mesh', capabilities: ['update'] }] },
    kubernetes: { roles: { mesh: { serviceAccountName: 'vm-bootstrap', allowedKubernetesNamespaces: ['vm-ns'], tokenMaxTtl: 7200 } } },
  });
  const token = v.issueToken({ policies: ['k8s'] });
  const creds = await req(v, 'POST', '/v1/kubernetes/creds/mesh', { token, body: { kubernetes_namespace: 'vm-ns', ttl: '2h30m' } });
  t.is(creds.status, 200);
  t.like(creds.body, { lease_duration: 7200, renewable: false, mount_type: 'kubernetes' });
  t.regex(creds.body.lease_id, /^kubernetes\/creds\/mesh\/\w+$/);
  t.like(creds.body.data, { service_account_name: 'vm-bootstrap', service_account_namespace: 'vm-ns' });
  t.regex(creds.body.data.service_account_token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  const wrongNs = await req(v, 'POST', '/v1/kubernetes/creds/mesh', { token, body: { kubernetes_namespace: 'default' } });
  t.deepEqual([wrongNs.status, wrongNs.body.errors], [400, ["kubernetes_namespace 'default' is not present in role's allowed_kubernetes_namespaces"]]);
  t.is((await req(v, 'POST', '/v1/kubernetes/creds/mesh', { token: v.issueToken(), body: { kubernetes_namespace: 'vm-ns' } })).status, 403);
  t.is((await req(v, 'PUT', '/v1/sys/leases/revoke', { token, body: { lease_id: creds.body.lease_id } })).status, 204);
  t.true(v.state.leases.get(creds.body.lease_id)?.revoked);
});

test('faults: latency, reset, 5xx, 429, sealed and token expiry, each for the matching path and count', async (t) => {
  const v = await vault(t);
  const token = v.issueToken({ policies: ['root'] });
  v.putSecret('secret', 'a', { x: 1 });
  const path = '/v1/secret/data/a';

  v.faults.inject({ kind: 'latency', ms: 300, path: '/v1/secret/data/*' });
  const started = Date.now();
  t.is((await req(v, 'GET', path, { token })).status, 200);
  t.true(Date.now() - started >= 290);

  v.faults.inject({ kind: 'reset', path });
  await t.throwsAsync(req(v, 'GET', path, { token }));
  t.is(v.calls.at(-1)?.fault, 'reset');

  v.faults.inject({ kind: 'status', status: 502, path, times: 2 });
  t.is((await req(v, 'GET', path, { token })).status, 502);
  t.is((await req(v, 'GET', path, { token })).status, 502);
  t.is((await req(v, 'GET', '/v1/sys/health')).status, 200, 'other paths unaffected');
  t.is((await req(v, 'GET', path, { token })).status, 200, 'count used up');

  v.faults.inject({ kind: 'throttle', retryAfter: 3 });
  const throttled = await req(v, 'GET', path, { token });
  t.deepEqual(
    [throttled.status, throttled.body.errors[0], throttled.headers.get('retry-after')],
    [429, 'request path "secret/data/a": rate limit quota exceeded', '3'],
  );

  v.faults.inject({ kind: 'sealed', method: 'GET' });
  t.deepEqual((await req(v, 'GET', path, { token })).body, { errors: ['Vault is sealed'] });
  t.is((await req(v, 'GET', path, { token })).status, 200);

  v.faults.inject({ kind: 'expire-token', path });
  t.is((await req(v, 'GET', path, { token })).status, 403);
  t.is((await req(v, 'GET', '/v1/auth/token/lookup-self', { token })).status, 403, 'stays expired');
  t.is(v.faults.pending, 0);

  const reads = callsMatching(v.calls, { method: 'GET', path });
  t.deepEqual(
    reads.map((c) => c.status),
    [200, 0, 502, 502, 200, 429, 503, 200, 403],
  );
  t.deepEqual(
    reads.map((c) => c.fault),
    [undefined, 'reset', 'status', 'status', undefined, 'throttle', 'sealed', undefined, 'expire-token'],
  );
  t.is(reads[0]?.headers['x-vault-token'], '(redacted)');
});

test('TLS: serves with a generated CA; clients without the CA are refused', async (t) => {
  const v = await vault(t, { tls: true });
  t.regex(v.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  t.is(v.address, v.url);
  t.regex(v.caPem ?? '', /BEGIN CERTIFICATE/);
  const ok = await call(`${v.url}/v1/sys/health`, { ca: v.caPem! });
  t.is(ok.status, 200);
  await t.throwsAsync(call(`${v.url}/v1/sys/health`), { message: /self[- ]signed|unable to verify|certificate/i });
});
