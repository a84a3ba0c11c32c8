// Self-tests of the Kubernetes API v1.33 stand-in, driven with node:https and the stand-in's CA.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { verify } from 'node:crypto';
import { call } from './http-client.ts';
import type { Response } from './http-client.ts';
import { callsMatching } from './common.ts';
import { startKubernetes } from './kubernetes.ts';
import type { KubernetesOptions, KubernetesStandIn } from './kubernetes.ts';

const SA_USER = 'system:serviceaccount:vm-ns:vm-bootstrap';

async function kube(t: ExecutionContext, opts: KubernetesOptions = {}): Promise<KubernetesStandIn> {
  const k = await startKubernetes({
    tokens: {
      'sa-token': { user: SA_USER, groups: ['system:serviceaccounts', 'system:authenticated'] },
      'admin-token': { user: 'admin', groups: ['system:masters'] },
    },
    rbac: {
      [SA_USER]: [
        { verbs: ['get'], resources: ['configmaps'], resourceNames: ['istio-ca-root-cert'], namespaces: ['vm-ns'] },
        { verbs: ['get', 'list'], resources: ['services'], namespaces: ['istio-system'] },
        { verbs: ['create'], resources: ['serviceaccounts/token'], namespaces: ['vm-ns'] },
        { verbs: ['get', 'list'], apiGroups: ['networking.k8s.io'], resources: ['servicecidrs'] },
      ],
    },
    serviceAccounts: ['vm-ns/vm', 'vm-ns/vm-bootstrap'],
    ...opts,
  });
  t.teardown(() => k.stop());
  return k;
}

const get = (k: KubernetesStandIn, path: string, token: string | null = 'sa-token', method = 'GET', body?: object): Promise<Response> =>
  call(`${k.url}${path}`, { method, ca: k.caPem, ...(token === null ? {} : { headers: { authorization: `Bearer ${token}` } }), ...(body ? { body } : {}) });

test('bearer auth and RBAC: get allowed, 403 with the real Status text, 401 for bad or missing tokens', async (t) => {
  const k = await kube(t);
  k.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': 'PEM-1' });
  k.objects.setConfigMap('other', 'istio-ca-root-cert', { 'root-cert.pem': 'PEM-1' });
  const ok = await get(k, '/api/v1/namespaces/vm-ns/configmaps/istio-ca-root-cert');
  t.is(ok.status, 200);
  t.like(ok.json(), { kind: 'ConfigMap', apiVersion: 'v1', metadata: { name: 'istio-ca-root-cert', namespace: 'vm-ns' }, data: { 'root-cert.pem': 'PEM-1' } });

  const forbidden = await get(k, '/api/v1/namespaces/other/configmaps/istio-ca-root-cert');
  t.is(forbidden.status, 403);
  t.deepEqual(forbidden.json(), {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message:
      'configmaps "istio-ca-root-cert" is forbidden: User "system:serviceaccount:vm-ns:vm-bootstrap" cannot get resource "configmaps" in API group "" in the namespace "other"',
    reason: 'Forbidden',
    details: { name: 'istio-ca-root-cert', kind: 'configmaps' },
    code: 403,
  });
  const listForbidden = await get(k, '/api/v1/namespaces/vm-ns/configmaps');
  t.is(listForbidden.json().message, `configmaps is forbidden: User "${SA_USER}" cannot list resource "configmaps" in API group "" in the namespace "vm-ns"`);
  t.is((await get(k, '/api/v1/namespaces/vm-ns/configmaps', 'admin-token')).status, 200, 'system:masters bypasses RBAC');

  const unauthorized = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'Unauthorized', reason: 'Unauthorized', code: 401 };
  t.deepEqual(await get(k, '/api/v1/namespaces/vm-ns/configmaps/istio-ca-root-cert', 'wrong').then((r) => [r.status, r.json()]), [401, unauthorized]);
  t.deepEqual(await get(k, '/api/v1/namespaces/vm-ns/configmaps/istio-ca-root-cert', null).then((r) => [r.status, r.json()]), [401, unauthorized]);
  k.tokens.expire('sa-token');
  t.is((await get(k, '/api/v1/namespaces/vm-ns/configmaps/istio-ca-root-cert')).status, 401);
  const missing = await get(k, '/api/v1/namespaces/vm-ns/configmaps/nope', 'admin-token');
  t.deepEqual([missing.status, missing.json().message, missing.json().reason], [404, 'configmaps "nope" not found', 'NotFound']);
  t.deepEqual(await get(k, '/apis/unknown.io/v1/things', 'admin-token').then((r) => [r.status, r.text]), [404, '404 page not found\n']);
});

test('anonymous requests (when enabled) are forbidden as system:anonymous', async (t) => {
  const k = await kube(t, { anonymous: true });
  const r = await get(k, '/api/v1/namespaces/vm-ns/secrets/x', null);
  t.is(r.status, 403);
  t.is(r.json().message, 'secrets "x" is forbidden: User "system:anonymous" cannot get resource "secrets" in API group "" in the namespace "vm-ns"');
});

test('objects: secrets are base64, services carry LoadBalancer status, rotation bumps resourceVersion', async (t) => {
  const k = await kube(t);
  k.objects.setSecret('istio-system', 'cacerts', { 'ca-cert.pem': 'CERT' });
  const secret = (await get(k, '/api/v1/namespaces/istio-system/secrets/cacerts', 'admin-token')).json();
  t.is(Buffer.from(secret.data['ca-cert.pem'], 'base64').toString(), 'CERT');
  t.is(secret.type, 'Opaque');

  k.objects.setService(
    'istio-system',
    'istio-eastwestgateway',
    { type: 'LoadBalancer', ports: [{ name: 'tls-istiod', port: 15012 }] },
    { loadBalancer: { ingress: [{ hostname: 'abc.elb.amazonaws.com' }] } },
    { istio: 'eastwestgateway' },
  );
  k.objects.setService('istio-system', 'istiod', { type: 'ClusterIP', clusterIP: '10.96.0.20' }, { loadBalancer: {} }, { app: 'istiod' });
  k.objects.setService('istio-system', 'ip-gw', { type: 'LoadBalancer' }, { loadBalancer: { ingress: [{ ip: '203.0.113.7' }] } });
  const gw = (await get(k, '/api/v1/namespaces/istio-system/services/istio-eastwestgateway')).json();
  t.deepEqual(gw.status.loadBalancer.ingress, [{ hostname: 'abc.elb.amazonaws.com' }]);
  const list = (await get(k, '/api/v1/namespaces/istio-system/services')).json();
  t.is(list.kind, 'ServiceList');
  t.deepEqual(
    list.items.map((s: { metadata: { name: string } }) => s.metadata.name),
    ['ip-gw', 'istio-eastwestgateway', 'istiod'],
  );
  t.is(list.items[0].kind, undefined, 'built-in list items carry no kind');
  t.deepEqual(list.items[0].status.loadBalancer.ingress, [{ ip: '203.0.113.7' }]);
  const selected = (await get(k, '/api/v1/namespaces/istio-system/services?labelSelector=istio%3Deastwestgateway')).json();
  t.deepEqual(
    selected.items.map((s: { metadata: { name: string } }) => s.metadata.name),
    ['istio-eastwestgateway'],
  );
  t.is((await get(k, '/api/v1/namespaces/default/services/kubernetes', 'admin-token')).json().spec.clusterIP, '10.96.0.1');

  const v1 = k.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': 'OLD' });
  const v2 = k.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': 'NEW' });
  t.true(Number(v2.metadata['resourceVersion']) > Number(v1.metadata['resourceVersion']));
  t.is(v2.metadata['uid'], v1.metadata['uid']);
  t.is((await get(k, '/api/v1/namespaces/vm-ns/configmaps/istio-ca-root-cert')).json().data['root-cert.pem'], 'NEW');
});

test('ServiceCIDR list holds every range (dual-stack); older clusters answer 404 for the unknown resource', async (t) => {
  const k = await kube(t, { serviceCIDRs: { kubernetes: ['10.96.0.0/12', 'fd00:10:96::/112'], extra: ['10.200.0.0/16'] } });
  const list = await get(k, '/apis/networking.k8s.io/v1/servicecidrs');
  t.is(list.status, 200);
  const body = list.json();
  t.is(body.kind, 'ServiceCIDRList');
  t.deepEqual(
    body.items.map((i: { metadata: { name: string }; spec: { cidrs: string[] } }) => [i.metadata.name, i.spec.cidrs]),
    [
      ['extra', ['10.200.0.0/16']],
      ['kubernetes', ['10.96.0.0/12', 'fd00:10:96::/112']],
    ],
  );
  t.is((await get(k, '/apis/networking.k8s.io/v1/servicecidrs/kubernetes')).json().spec.cidrs[1], 'fd00:10:96::/112');
  k.rbac.delete(SA_USER);
  const forbidden = (await get(k, '/apis/networking.k8s.io/v1/servicecidrs')).json();
  t.is(
    forbidden.message,
    `servicecidrs.networking.k8s.io is forbidden: User "${SA_USER}" cannot list resource "servicecidrs" in API group "networking.k8s.io" at the cluster scope`,
  );
  t.deepEqual(forbidden.details, { group: 'networking.k8s.io', kind: 'servicecidrs' });

  const old = await kube(t, { serviceCIDRApi: false });
  const gone = await get(old, '/apis/networking.k8s.io/v1/servicecidrs', 'admin-token');
  t.deepEqual(
    [gone.status, gone.json()],
    [
      404,
      {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: 'the server could not find the requested resource',
        reason: 'NotFound',
        details: {},
        code: 404,
      },
    ],
  );
});

const probe = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'meshvm-probe' }, spec: { clusterIP: '1.1.1.1', ports: [{ port: 443 }] } };

test('dry-run probe with an out-of-range clusterIP: 422 naming the range, nothing stored', async (t) => {
  const k = await kube(t);
  const r = await get(k, '/api/v1/namespaces/vm-ns/services?dryRun=All', 'admin-token', 'POST', probe);
  t.is(r.status, 422);
  const detail =
    'Invalid value: []string{"1.1.1.1"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12';
  t.deepEqual(r.json(), {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: `Service "meshvm-probe" is invalid: spec.clusterIPs: ${detail}`,
    reason: 'Invalid',
    details: { name: 'meshvm-probe', kind: 'Service', causes: [{ reason: 'FieldValueInvalid', message: detail, field: 'spec.clusterIPs' }] },
    code: 422,
  });
  t.regex(r.json().message, /range of valid IPs is (?:CIDR )?([0-9a-fA-F:./]+)/);

  const inRange = await get(k, '/api/v1/namespaces/vm-ns/services?dryRun=All', 'admin-token', 'POST', { ...probe, spec: { clusterIP: '10.96.5.5' } });
  t.is(inRange.status, 201);
  t.is(k.objects.get('services', 'vm-ns', 'meshvm-probe'), undefined, 'dry-run stores nothing');

  const real = await get(k, '/api/v1/namespaces/vm-ns/services', 'admin-token', 'POST', probe);
  t.is(
    real.json().message,
    'Service "meshvm-probe" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: failed to allocate IP 1.1.1.1: the provided network does not match the current range',
    'v1.33 MultiCIDR allocator: a real create does not name the range',
  );
  const created = await get(k, '/api/v1/namespaces/vm-ns/services', 'admin-token', 'POST', { ...probe, spec: { ports: [{ port: 80 }] } });
  t.is(created.status, 201);
  t.is(created.json().spec.clusterIP, '10.96.0.10');
  t.truthy(k.objects.get('services', 'vm-ns', 'meshvm-probe'));
  const v6 = await get(k, '/api/v1/namespaces/vm-ns/services?dryRun=All', 'admin-token', 'POST', {
    ...probe,
    metadata: { name: 'p6' },
    spec: { clusterIP: 'fd00::1' },
  });
  t.regex(v6.json().message, /IPv6 is not configured on this cluster/);
  const forbidden = await get(k, '/api/v1/namespaces/vm-ns/services?dryRun=All', 'sa-token', 'POST', probe);
  t.is(forbidden.json().message, `services is forbidden: User "${SA_USER}" cannot create resource "services" in API group "" in the namespace "vm-ns"`);

  const old = await kube(t, { serviceCIDRApi: false, serviceCIDRs: ['10.32.0.0/12'] });
  const oldReal = await get(old, '/api/v1/namespaces/vm-ns/services', 'admin-token', 'POST', probe);
  t.regex(oldReal.json().message, /The range of valid IPs is 10\.32\.0\.0\/12$/);
});

test('TokenRequest: 201 with a signed JWT, min 10 minutes, RBAC on serviceaccounts/token, 404 for unknown SA', async (t) => {
  const k = await kube(t, { maxTokenExpirationSeconds: 7200 });
  const path = '/api/v1/namespaces/vm-ns/serviceaccounts/vm/token';
  const body = { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: ['istio-ca'], expirationSeconds: 3600 } };
  const before = Date.now();
  const r = await get(k, path, 'sa-token', 'POST', body);
  t.is(r.status, 201);
  const tr = r.json();
  t.like(tr, {
    kind: 'TokenRequest',
    apiVersion: 'authentication.k8s.io/v1',
    metadata: { name: 'vm', namespace: 'vm-ns' },
    spec: { audiences: ['istio-ca'], expirationSeconds: 3600 },
  });
  t.regex(tr.status.expirationTimestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  const exp = Date.parse(tr.status.expirationTimestamp);
  t.true(exp >= Math.floor(before / 1000) * 1000 + 3600_000 - 1000 && exp <= Date.now() + 3600_000);
  const [h, p, s] = tr.status.token.split('.');
  t.true(verify('sha256', Buffer.from(`${h}.${p}`), k.serviceAccountPublicKeyPem, Buffer.from(s, 'base64url')));
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  t.like(claims, { aud: ['istio-ca'], sub: 'system:serviceaccount:vm-ns:vm', 'kubernetes.io': { namespace: 'vm-ns', serviceaccount: { name: 'vm' } } });
  t.is(claims.exp * 1000, exp);

  const short = await get(k, path, 'sa-token', 'POST', { ...body, spec: { expirationSeconds: 599 } });
  t.is(short.status, 422);
  t.deepEqual(
    short.json().message,
    'TokenRequest.authentication.k8s.io "vm" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes',
  );
  t.is(short.json().details.causes[0].field, 'spec.expirationSeconds');
  const capped = (await get(k, path, 'sa-token', 'POST', { ...body, spec: { expirationSeconds: 86400 } })).json();
  t.is(capped.spec.expirationSeconds, 7200, 'issuer cap applied');
  const defaulted = (await get(k, path, 'sa-token', 'POST', {})).json();
  t.deepEqual([defaulted.spec.expirationSeconds, defaulted.spec.audiences], [3600, ['https://kubernetes.default.svc.cluster.local']]);

  const unknown = await get(k, '/api/v1/namespaces/vm-ns/serviceaccounts/ghost/token', 'sa-token', 'POST', body);
  t.deepEqual([unknown.status, unknown.json().message], [404, 'serviceaccounts "ghost" not found']);
  const forbidden = await get(k, '/api/v1/namespaces/default/serviceaccounts/vm/token', 'sa-token', 'POST', body);
  t.deepEqual(
    [forbidden.status, forbidden.json().message],
    [403, `serviceaccounts "vm" is forbidden: User "${SA_USER}" cannot create resource "serviceaccounts/token" in API group "" in the namespace "default"`],
  );
  t.deepEqual(forbidden.json().details, { name: 'vm', kind: 'serviceaccounts' });
});

test('minted tokens authenticate only for the API audience, until expiry or SA deletion; issuer may alter validity', async (t) => {
  const k = await kube(t, {
    tokenExpiration: (s) => Math.min(s, 900),
    rbac: { 'system:serviceaccount:vm-ns:vm': [{ verbs: ['get'], resources: ['configmaps'] }] },
  });
  k.objects.setConfigMap('vm-ns', 'c', { a: 'b' });
  const api = k.tokens.mint({ namespace: 'vm-ns', serviceAccount: 'vm', expirationSeconds: 3600 });
  t.is(api.expirationSeconds, 900);
  t.is((await get(k, '/api/v1/namespaces/vm-ns/configmaps/c', api.token)).status, 200);
  const istio = k.tokens.mint({ namespace: 'vm-ns', serviceAccount: 'vm', audiences: ['istio-ca'] });
  t.is((await get(k, '/api/v1/namespaces/vm-ns/configmaps/c', istio.token)).status, 401, 'istio-ca audience is not accepted by the API server');
  t.throws(() => k.tokens.mint({ namespace: 'vm-ns', serviceAccount: 'vm', expirationSeconds: 60 }), { message: /less than 10 minutes/ });
  k.objects.delete('serviceaccounts', 'vm-ns', 'vm');
  t.is((await get(k, '/api/v1/namespaces/vm-ns/configmaps/c', api.token)).status, 401, 'bound token dies with its SA');
});

test('WorkloadEntry create / get / replace with conflicts as the API server reports them', async (t) => {
  const k = await kube(t);
  const base = '/apis/networking.istio.io/v1/namespaces/vm-ns/workloadentries';
  const we = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'WorkloadEntry',
    metadata: { name: 'vm-1', labels: { app: 'vm' } },
    spec: { address: '10.0.0.5', serviceAccount: 'vm' },
  };
  const created = await get(k, base, 'admin-token', 'POST', we);
  t.is(created.status, 201);
  t.like(created.json(), { apiVersion: 'networking.istio.io/v1', kind: 'WorkloadEntry', metadata: { name: 'vm-1', namespace: 'vm-ns', generation: 1 } });
  const dup = await get(k, base, 'admin-token', 'POST', we);
  t.deepEqual([dup.status, dup.json().reason, dup.json().message], [409, 'AlreadyExists', 'workloadentries.networking.istio.io "vm-1" already exists']);
  const current = (await get(k, `${base}/vm-1`, 'admin-token')).json();
  t.is(current.spec.address, '10.0.0.5');
  const noRv = await get(k, `${base}/vm-1`, 'admin-token', 'PUT', { ...we, spec: { address: '10.0.0.6' } });
  t.is(noRv.status, 422);
  const replaced = await get(k, `${base}/vm-1`, 'admin-token', 'PUT', { ...current, spec: { address: '10.0.0.6' } });
  t.is(replaced.status, 200);
  t.is(replaced.json().metadata.generation, 2);
  const stale = await get(k, `${base}/vm-1`, 'admin-token', 'PUT', { ...current, spec: { address: '10.0.0.7' } });
  t.deepEqual([stale.status, stale.json().reason], [409, 'Conflict']);
  const list = (await get(k, base, 'admin-token')).json();
  t.deepEqual([list.kind, list.items[0].kind, list.items[0].spec.address], ['WorkloadEntryList', 'WorkloadEntry', '10.0.0.6']);
  const forbidden = await get(k, base, 'sa-token', 'POST', { ...we, metadata: { name: 'vm-2' } });
  t.is(
    forbidden.json().message,
    `workloadentries.networking.istio.io is forbidden: User "${SA_USER}" cannot create resource "workloadentries" in API group "networking.istio.io" in the namespace "vm-ns"`,
  );
  t.is((await get(k, `${base}/vm-1`, 'admin-token', 'DELETE')).status, 200);
  t.is((await get(k, `${base}/vm-1`, 'admin-token')).status, 404);
});

test('faults: latency, reset, 5xx Status, 429 with Retry-After, token expiry (401); calls record verb and resource', async (t) => {
  const k = await kube(t);
  k.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': 'PEM' });
  const path = '/api/v1/namespaces/vm-ns/configmaps/istio-ca-root-cert';
  k.faults.inject({ kind: 'latency', ms: 250, action: 'get configmaps' });
  const t0 = Date.now();
  t.is((await get(k, path)).status, 200);
  t.true(Date.now() - t0 >= 240);
  k.faults.inject({ kind: 'reset', path });
  await t.throwsAsync(get(k, path), { code: 'ECONNRESET' });
  k.faults.inject({ kind: 'status', status: 503 });
  const unavailable = await get(k, path);
  t.deepEqual([unavailable.status, unavailable.json().reason], [503, 'ServiceUnavailable']);
  k.faults.inject({ kind: 'throttle', retryAfter: 2 });
  const throttled = await get(k, path);
  t.deepEqual(
    [throttled.status, throttled.headers['retry-after'], throttled.json().reason, throttled.json().details],
    [429, '2', 'TooManyRequests', { retryAfterSeconds: 2 }],
  );
  k.faults.inject({ kind: 'expire-token' });
  t.is((await get(k, path)).status, 401);
  t.is((await get(k, path)).status, 401);
  t.deepEqual(
    callsMatching(k.calls, { action: 'get configmaps' }).map((c) => c.status),
    [200, 0, 503, 429, 401, 401],
  );
  t.is(k.calls[0]?.headers['authorization'], '(redacted)');
});

test('TLS: the API is only reachable with the stand-in CA', async (t) => {
  const k = await kube(t);
  t.regex(k.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  await t.throwsAsync(call(`${k.url}/version`), { message: /self[- ]signed|unable to verify|certificate/i });
  t.like((await call(`${k.url}/version`, { ca: k.caPem })).json(), { major: '1', minor: '33', gitVersion: 'v1.33.1' });
});
