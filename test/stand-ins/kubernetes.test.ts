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

/** A request with a body of another media type (server-side apply's YAML, merge patches). */
const send = (k: KubernetesStandIn, path: string, method: string, contentType: string, body: string, token = 'admin-token'): Promise<Response> =>
  call(`${k.url}${path}`, {
    method,
    ca: k.caPem,
    headers: { authorization: `Bearer ${token}`, 'content-type': contentType, 'user-agent': 'kubectl/v1.33.1' },
    body,
  });

const WG_PATH = '/apis/networking.istio.io/v1/namespaces/vm-ns/workloadgroups';
const applyYaml = (labels: string, extra = '') => `apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata:
  name: reviews
  labels: {${labels}}
spec:
  metadata:
    labels: { app: reviews }
  template:
    serviceAccount: reviews
    network: vm-net
    ports: { http: 9080 }
${extra}`;

test('server-side apply of a WorkloadGroup: fieldManager required, created when absent, a re-apply is a no-op, dropped fields go', async (t) => {
  const k = await kube(t);
  const apply = (body: string, query = 'fieldManager=meshvm') => send(k, `${WG_PATH}/reviews?${query}`, 'PATCH', 'application/apply-patch+yaml', body);
  const missing = await apply(applyYaml('owner: meshvm'), '');
  t.deepEqual(
    [missing.status, missing.json().message],
    [422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'],
  );
  t.is(k.objects.get('workloadgroups', 'vm-ns', 'reviews'), undefined, 'nothing stored by a refused apply');

  const created = await apply(applyYaml('owner: meshvm', '  probe:\n    httpGet: { port: 9080, path: /ready }\n'));
  t.is(created.status, 201);
  const body = created.json();
  t.like(body, {
    apiVersion: 'networking.istio.io/v1',
    kind: 'WorkloadGroup',
    metadata: { name: 'reviews', namespace: 'vm-ns', labels: { owner: 'meshvm' }, generation: 1 },
    spec: { template: { serviceAccount: 'reviews', network: 'vm-net', ports: { http: 9080 } }, probe: { httpGet: { port: 9080, path: '/ready' } } },
  });
  t.like(body.metadata.managedFields[0], { manager: 'meshvm', operation: 'Apply', apiVersion: 'networking.istio.io/v1', fieldsType: 'FieldsV1' });
  t.deepEqual(body.metadata.managedFields[0].fieldsV1['f:spec']['f:template']['f:ports'], { 'f:http': {} });

  const again = await apply(applyYaml('owner: meshvm', '  probe:\n    httpGet: { port: 9080, path: /ready }\n'));
  t.is(again.status, 200);
  t.is(again.json().metadata.resourceVersion, body.metadata.resourceVersion, 'the same apply again writes nothing');
  t.is(again.json().metadata.managedFields[0].time, body.metadata.managedFields[0].time);

  // the probe is no longer applied: this manager owned it alone, so it goes; a changed port is merged in
  const changed = (await apply(applyYaml('owner: meshvm').replace('http: 9080', 'http: 9081'))).json();
  t.is(changed.spec.probe, undefined);
  t.deepEqual(changed.spec.template.ports, { http: 9081 });
  t.is(changed.metadata.generation, 2);
  t.true(Number(changed.metadata.resourceVersion) > Number(body.metadata.resourceVersion));

  const forbidden = await send(k, `${WG_PATH}/reviews?fieldManager=meshvm`, 'PATCH', 'application/apply-patch+yaml', applyYaml(''), 'sa-token');
  t.is(
    forbidden.json().message,
    `workloadgroups.networking.istio.io "reviews" is forbidden: User "${SA_USER}" cannot patch resource "workloadgroups" in API group "networking.istio.io" in the namespace "vm-ns"`,
  );
  k.rbac.set(SA_USER, [{ verbs: ['get', 'patch'], apiGroups: ['networking.istio.io'], resources: ['workloadgroups'], resourceNames: ['reviews'] }]);
  const allowed = await send(k, `${WG_PATH}/reviews?fieldManager=meshvm`, 'PATCH', 'application/apply-patch+yaml', applyYaml('owner: meshvm'), 'sa-token');
  t.is(allowed.status, 200, 'patch on the one resourceName is the whole RBAC an apply to an existing object needs');

  // an apply that creates is authorized as create as well, as the API server's createValidation does
  const ratingsPath = `${WG_PATH}/ratings?fieldManager=meshvm`;
  const ratings = applyYaml('owner: meshvm').replace('name: reviews', 'name: ratings');
  k.rbac.set(SA_USER, [{ verbs: ['get', 'patch'], apiGroups: ['networking.istio.io'], resources: ['workloadgroups'] }]);
  const notCreated = await send(k, ratingsPath, 'PATCH', 'application/apply-patch+yaml', ratings, 'sa-token');
  t.deepEqual([notCreated.status, notCreated.json().message], [403, 'workloadgroups.networking.istio.io "ratings" is forbidden: ']);
  t.is(k.objects.get('workloadgroups', 'vm-ns', 'ratings'), undefined);
  k.rbac.set(SA_USER, [{ verbs: ['patch', 'create'], apiGroups: ['networking.istio.io'], resources: ['workloadgroups'], resourceNames: ['ratings'] }]);
  t.is((await send(k, ratingsPath, 'PATCH', 'application/apply-patch+yaml', ratings, 'sa-token')).status, 201);
});

test('server-side apply: another manager owning a field with another value is a 409 naming it; force takes it; equal values are shared', async (t) => {
  const k = await kube(t);
  const apply = (manager: string, body: string, force = false) =>
    send(k, `${WG_PATH}/reviews?fieldManager=${manager}${force ? '&force=true' : ''}`, 'PATCH', 'application/apply-patch+yaml', body);
  t.is((await apply('meshvm', applyYaml('owner: meshvm'))).status, 201);
  const other = applyYaml('owner: meshvm').replace('network: vm-net', 'network: other-net');
  const refused = await apply('kubectl', other);
  t.is(refused.status, 409);
  t.is(refused.json().reason, 'Conflict');
  t.is(refused.json().message, 'Apply failed with 1 conflict: conflict with "meshvm": .spec.template.network');
  t.deepEqual(refused.json().details.causes, [{ reason: 'FieldManagerConflict', message: 'conflict with "meshvm"', field: '.spec.template.network' }]);
  t.is(
    k.objects.get('workloadgroups', 'vm-ns', 'reviews')?.['spec'] && (k.objects.get('workloadgroups', 'vm-ns', 'reviews')!['spec'] as any).template.network,
    'vm-net',
  );

  const forced = (await apply('kubectl', other, true)).json();
  t.is(forced.spec.template.network, 'other-net');
  const managers = forced.metadata.managedFields.map((e: { manager: string; fieldsV1: any }) => [
    e.manager,
    Boolean(e.fieldsV1['f:spec']?.['f:template']?.['f:network']),
  ]);
  t.deepEqual(managers, [
    ['meshvm', false],
    ['kubectl', true],
  ]);
  // meshvm applies again with its value: now it is meshvm that meets kubectl's ownership
  const back = await apply('meshvm', applyYaml('owner: meshvm'));
  t.is(back.json().message, 'Apply failed with 1 conflict: conflict with "kubectl": .spec.template.network');
  // an Update (merge patch) takes the fields it changes from the appliers, and is named with its API version
  const merged = await send(
    k,
    `${WG_PATH}/reviews?fieldManager=editor`,
    'PATCH',
    'application/merge-patch+json',
    JSON.stringify({ spec: { template: { weight: 3 } } }),
  );
  t.is(merged.json().spec.template.weight, 3);
  const conflictWithUpdate = await apply('meshvm', applyYaml('owner: meshvm').replace('network: vm-net', 'network: other-net\n    weight: 5'));
  t.is(conflictWithUpdate.json().message, 'Apply failed with 1 conflict: conflict with "editor" using networking.istio.io/v1: .spec.template.weight');
});

test('CRD schemas: unknown fields pruned with a warning, types and Istio rules refused naming the field (422), other patch types 415', async (t) => {
  const k = await kube(t);
  const apply = (body: string) => send(k, `${WG_PATH}/reviews?fieldManager=meshvm`, 'PATCH', 'application/apply-patch+yaml', body);
  const pruned = await apply(applyYaml('', '  surprise: true\n'));
  t.is(pruned.status, 201);
  t.is(pruned.json().spec.surprise, undefined);
  t.is(pruned.headers['warning'], '299 - "unknown field \\"spec.surprise\\""');

  const badPort = await apply(applyYaml('').replace('http: 9080', 'http: 70000'));
  t.is(badPort.status, 422);
  t.is(
    badPort.json().message,
    'WorkloadGroup.networking.istio.io "reviews" is invalid: spec.template.ports.http: Invalid value: "integer": port must be between 1-65535',
  );
  const wrongType = await apply(applyYaml('').replace('network: vm-net', 'network: [a, b]'));
  t.is(
    wrongType.json().message,
    'WorkloadGroup.networking.istio.io "reviews" is invalid: spec.template.network: Invalid value: "array": spec.template.network in body must be of type string: "array"',
  );
  t.deepEqual(wrongType.json().details.causes, [
    {
      reason: 'FieldValueInvalid',
      message: 'Invalid value: "array": spec.template.network in body must be of type string: "array"',
      field: 'spec.template.network',
    },
  ]);
  const noTemplate = await send(
    k,
    `${WG_PATH}/other?fieldManager=meshvm`,
    'PATCH',
    'application/apply-patch+yaml',
    'apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nspec: {}\n',
  );
  t.is(noTemplate.json().message, 'WorkloadGroup.networking.istio.io "other" is invalid: spec.template: Required value');
  const twoProbes = await apply(applyYaml('', '  probe: { httpGet: { port: 80 }, tcpSocket: { port: 80 } }\n'));
  t.regex(twoProbes.json().message, /spec\.probe: Invalid value: "object": At most one of \[httpGet tcpSocket exec grpc\] should be set$/);
  const noAddress = await call(`${k.url}/apis/networking.istio.io/v1/namespaces/vm-ns/workloadentries`, {
    method: 'POST',
    ca: k.caPem,
    headers: { authorization: 'Bearer admin-token' },
    body: { apiVersion: 'networking.istio.io/v1', kind: 'WorkloadEntry', metadata: { name: 'x' }, spec: { serviceAccount: 'vm' } },
  });
  t.is(noAddress.json().message, 'WorkloadEntry.networking.istio.io "x" is invalid: spec: Invalid value: "object": Address is required');

  const jsonPatch = await send(k, `${WG_PATH}/reviews`, 'PATCH', 'application/json-patch+json', '[]');
  t.deepEqual(
    [jsonPatch.status, jsonPatch.json().message],
    [415, 'the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/apply-patch+yaml'],
  );
  const forceOnMerge = await send(k, `${WG_PATH}/reviews?force=true`, 'PATCH', 'application/merge-patch+json', '{}');
  t.is(forceOnMerge.json().message, 'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for non-apply patch');
});

test('merge patch: maps merge, null removes, a stale resourceVersion is a 409, a no-op keeps the resourceVersion', async (t) => {
  const k = await kube(t);
  const base = '/apis/networking.istio.io/v1/namespaces/vm-ns/workloadentries';
  const created = await get(k, base, 'admin-token', 'POST', {
    apiVersion: 'networking.istio.io/v1',
    kind: 'WorkloadEntry',
    metadata: { name: 'vm-1', labels: { app: 'vm', stale: 'yes' } },
    spec: { address: '10.0.0.5', serviceAccount: 'vm' },
    status: { conditions: [{ type: 'Healthy', status: 'True' }] },
  });
  t.is(created.json().status, undefined, 'status is the status subresource’s: a create drops it');
  t.like(created.json().metadata.managedFields[0], { manager: 'unknown', operation: 'Update' }, 'no fieldManager, no user agent');
  const merge = (patch: object) => send(k, `${base}/vm-1`, 'PATCH', 'application/merge-patch+json', JSON.stringify(patch));
  const patched = (await merge({ metadata: { labels: { stale: null, version: 'v1' } }, spec: { address: '10.0.0.6' } })).json();
  t.deepEqual(patched.metadata.labels, { app: 'vm', version: 'v1' });
  t.is(patched.spec.address, '10.0.0.6');
  t.is(patched.metadata.generation, 2);
  const noop = (await merge({ spec: { address: '10.0.0.6' } })).json();
  t.is(noop.metadata.resourceVersion, patched.metadata.resourceVersion);
  const stale = await merge({ metadata: { resourceVersion: created.json().metadata.resourceVersion }, spec: { address: '10.0.0.7' } });
  t.deepEqual([stale.status, stale.json().reason], [409, 'Conflict']);
  t.is((await send(k, `${base}/ghost`, 'PATCH', 'application/merge-patch+json', '{}')).status, 404);
});

test('WorkloadEntry status: the Healthy condition set by the test hook, served through the object and its status subresource (RBAC on workloadentries/status)', async (t) => {
  const k = await kube(t);
  const base = '/apis/networking.istio.io/v1/namespaces/vm-ns/workloadentries';
  await get(k, base, 'admin-token', 'POST', {
    apiVersion: 'networking.istio.io/v1',
    kind: 'WorkloadEntry',
    metadata: { name: 'vm-1' },
    spec: { address: '10.0.0.5' },
  });
  t.throws(() => k.objects.setWorkloadEntryHealth('vm-ns', 'ghost', true), { message: 'no WorkloadEntry vm-ns/ghost' });
  const healthy = k.objects.setWorkloadEntryHealth('vm-ns', 'vm-1', true);
  t.is(healthy.metadata['generation'], 1, 'a status change is not a new generation');
  const entry = (await get(k, `${base}/vm-1`, 'admin-token')).json();
  t.like(entry.status.conditions[0], { type: 'Healthy', status: 'True' });
  t.regex(entry.status.conditions[0].lastProbeTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  const unhealthy = k.objects.setWorkloadEntryHealth('vm-ns', 'vm-1', false, 'Get "http://10.0.0.5:9080/ready": connection refused');
  t.like((unhealthy['status'] as any).conditions[0], { status: 'False', message: 'Get "http://10.0.0.5:9080/ready": connection refused' });

  // a write to the object keeps the status; the status subresource is separately authorized
  const latest = (await get(k, `${base}/vm-1`, 'admin-token')).json();
  const replaced = await get(k, `${base}/vm-1`, 'admin-token', 'PUT', { ...latest, spec: { address: '10.0.0.9' }, status: { conditions: [] } });
  t.is(replaced.json().status.conditions[0].status, 'False');
  k.rbac.set(SA_USER, [{ verbs: ['get'], apiGroups: ['networking.istio.io'], resources: ['workloadentries'] }]);
  t.is((await get(k, `${base}/vm-1/status`)).status, 403);
  k.rbac.set(SA_USER, [{ verbs: ['get'], apiGroups: ['networking.istio.io'], resources: ['workloadentries/status'] }]);
  t.is((await get(k, `${base}/vm-1/status`)).json().status.conditions[0].type, 'Healthy');
  const byApi = await send(
    k,
    `${base}/vm-1/status`,
    'PATCH',
    'application/merge-patch+json',
    JSON.stringify({ status: { conditions: [{ type: 'Healthy', status: 'True' }] } }),
  );
  t.is(byApi.json().status.conditions[0].status, 'True');
  t.is(byApi.json().spec.address, '10.0.0.9');
});

test('installIstio: the mesh config, injector values, system namespace label and istiod Deployment as the chart leaves them, read through the API', async (t) => {
  const k = await kube(t);
  k.objects.installIstio({ revision: 'canary', version: '1.24.2', meshId: 'mesh1', clusterName: 'cluster-a', network: 'net-a', namespaceNetwork: 'net-a' });
  const read = (path: string) => get(k, path, 'admin-token').then((r) => r.json());
  const mesh = await read('/api/v1/namespaces/istio-system/configmaps/istio-canary');
  t.is(
    mesh.data.mesh,
    [
      'defaultConfig:',
      '  discoveryAddress: istiod-canary.istio-system.svc:15012',
      '  meshId: mesh1',
      'defaultProviders:',
      '  metrics:',
      '    - prometheus',
      'enablePrometheusMerge: true',
      'rootNamespace: istio-system',
      'trustDomain: cluster.local',
    ].join('\n'),
  );
  const values = JSON.parse((await read('/api/v1/namespaces/istio-system/configmaps/istio-sidecar-injector-canary')).data.values);
  t.like(values, { global: { meshID: 'mesh1', multiCluster: { clusterName: 'cluster-a' }, network: 'net-a' }, revision: 'canary' });
  t.is((await read('/api/v1/namespaces/istio-system')).metadata.labels['topology.istio.io/network'], 'net-a');
  const istiod = await read('/apis/apps/v1/namespaces/istio-system/deployments/istiod-canary');
  t.like(istiod, {
    kind: 'Deployment',
    apiVersion: 'apps/v1',
    metadata: { labels: { app: 'istiod', 'istio.io/rev': 'canary', 'app.kubernetes.io/version': '1.24.2' } },
  });
  t.is(istiod.spec.template.spec.containers[0].image, 'docker.io/istio/pilot:1.24.2');
  const list = await read('/apis/apps/v1/namespaces/istio-system/deployments');
  t.deepEqual([list.kind, list.items.length, list.items[0].kind], ['DeploymentList', 1, undefined]);
  const forbidden = await get(k, '/apis/apps/v1/namespaces/istio-system/deployments/istiod-canary');
  t.is(
    forbidden.json().message,
    `deployments.apps "istiod-canary" is forbidden: User "${SA_USER}" cannot get resource "deployments" in API group "apps" in the namespace "istio-system"`,
  );
});
