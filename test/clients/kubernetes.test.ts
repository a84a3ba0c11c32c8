// KubernetesClient against the Kubernetes API v1.33 stand-in (ConfigMap, Secret, Services, ServiceCIDR, dry-run, TokenRequest, WorkloadEntry, RBAC).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { secrets } from '../../engine/secrets.ts';
import { KubernetesClient } from '../../clients/kubernetes.ts';
import { VaultClient } from '../../clients/vault.ts';
import { callsMatching, startKubernetes, startVault, testPki } from '../stand-ins/index.ts';
import type { KubernetesOptions, KubernetesStandIn, RbacRule } from '../stand-ins/index.ts';

/** PEM as istiod and the classic CA publish it (the client refuses anything that is not PEM certificates). */
const PKI = await testPki();

const SA = 'system:serviceaccount:vm-ns:vm-bootstrap';
const FAST = { attempts: 4, baseMs: 5, maxMs: 20 };
const MESH_RULES: RbacRule[] = [
  { verbs: ['get'], resources: ['configmaps'], resourceNames: ['istio-ca-root-cert'], namespaces: ['vm-ns'] },
  { verbs: ['get'], resources: ['secrets'], resourceNames: ['istio.vm'], namespaces: ['vm-ns'] },
  { verbs: ['list'], resources: ['services'], namespaces: ['istio-system'] },
  { verbs: ['get'], resources: ['services'], resourceNames: ['kube-dns'], namespaces: ['kube-system'] },
  { verbs: ['create'], resources: ['serviceaccounts/token'], namespaces: ['vm-ns'] },
  { verbs: ['list'], apiGroups: ['networking.k8s.io'], resources: ['servicecidrs'] },
  { verbs: ['get', 'create', 'update'], apiGroups: ['networking.istio.io'], resources: ['workloadentries'], namespaces: ['vm-ns'] },
];

async function cluster(t: ExecutionContext, opts: KubernetesOptions = {}): Promise<KubernetesStandIn> {
  const k = await startKubernetes({
    tokens: { 'scoped-token': { user: SA, groups: ['system:serviceaccounts', 'system:authenticated'] } },
    rbac: { [SA]: MESH_RULES },
    serviceAccounts: ['vm-ns/vm', 'vm-ns/vm-bootstrap'],
    ...opts,
  });
  t.teardown(() => k.stop());
  k.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': PKI.caPem });
  k.objects.setService(
    'istio-system',
    'istio-eastwestgateway',
    {
      type: 'LoadBalancer',
      ports: [
        { name: 'tls-istiod', port: 15012 },
        { name: 'tls', port: 15443 },
      ],
    },
    { loadBalancer: { ingress: [{ ip: '203.0.113.9', hostname: 'abc.elb.amazonaws.com' }] } },
  );
  k.objects.setService(
    'istio-system',
    'istio-ingressgateway',
    { type: 'LoadBalancer', ports: [{ port: 443 }] },
    { loadBalancer: { ingress: [{ ip: '203.0.113.7' }] } },
  );
  k.objects.setService('istio-system', 'pending-gw', { type: 'LoadBalancer', ports: [{ port: 80 }] });
  k.objects.setService('istio-system', 'istiod', { type: 'ClusterIP', clusterIP: '10.96.0.20', ports: [{ port: 15012 }] });
  k.objects.setService('kube-system', 'kube-dns', { type: 'ClusterIP', clusterIP: '10.96.0.10', ports: [{ port: 53 }] });
  return k;
}

const client = (k: KubernetesStandIn, token = 'scoped-token') => new KubernetesClient({ server: k.url, caPem: k.caPem, token, retry: FAST });

test('the reads of a mesh VM: root cert, cluster DNS, LoadBalancer addresses (hostname first, then IP)', async (t) => {
  const k = await cluster(t);
  const kube = client(k);
  t.is(await kube.rootCert('vm-ns'), PKI.caPem);
  t.is(await kube.clusterDns(), '10.96.0.10');
  t.deepEqual(await kube.controlPlaneAddresses(), [
    {
      service: 'istio-eastwestgateway',
      namespace: 'istio-system',
      address: 'abc.elb.amazonaws.com',
      kind: 'hostname',
      ports: [
        { name: 'tls-istiod', port: 15012 },
        { name: 'tls', port: 15443 },
      ],
    },
    { service: 'istio-ingressgateway', namespace: 'istio-system', address: '203.0.113.7', kind: 'ip', ports: [{ port: 443 }] },
  ]);
  await t.throwsAsync(kube.controlPlaneAddresses({ services: ['pending-gw'] }), {
    message: 'Service istio-system/pending-gw is not a LoadBalancer with an address yet (status.loadBalancer.ingress is empty)',
  });
  t.is(secrets.redact('scoped-token'), '(sensitive)');
});

test('the Services of a namespace are listed once per client, whichever services each caller picks (certs, then dns)', async (t) => {
  const k = await cluster(t);
  const kube = client(k);
  t.deepEqual(
    (await kube.controlPlaneAddresses({ services: ['istio-eastwestgateway'] })).map((a) => a.address),
    ['abc.elb.amazonaws.com'],
  );
  t.deepEqual(
    (await kube.controlPlaneAddresses({ services: ['istio-eastwestgateway', 'istio-ingressgateway'] })).map((a) => a.address),
    ['abc.elb.amazonaws.com', '203.0.113.7'],
  );
  t.is(callsMatching(k.calls, { action: 'list services' }).length, 1);
  await kube.controlPlaneAddresses({ labelSelector: 'istio=eastwestgateway' });
  t.is(callsMatching(k.calls, { action: 'list services' }).length, 2, 'another selector is another read');
});

test('the classic istio.<serviceaccount> secret, base64-decoded, the key masked', async (t) => {
  const k = await cluster(t);
  const key = '-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIKUBERNETESTESTKEYMATERIAL\n-----END EC PRIVATE KEY-----\n';
  k.objects.setSecret('vm-ns', 'istio.vm', { 'root-cert.pem': PKI.caPem, 'cert-chain.pem': PKI.certPem, 'key.pem': key }, 'istio.io/key-and-cert');
  t.deepEqual(await client(k).istioSecret('vm-ns', 'vm'), { rootCert: PKI.caPem, certChain: PKI.certPem, key });
  t.is(secrets.redact(key), '(sensitive)');
});

test('a scoped token outside its scope is refused with the permission it lacks', async (t) => {
  const k = await cluster(t);
  k.objects.setConfigMap('other', 'istio-ca-root-cert', { 'root-cert.pem': 'X' });
  const kube = client(k);
  await t.throwsAsync(kube.rootCert('other'), {
    message:
      `reading ConfigMap other/istio-ca-root-cert: the token (${SA}) may not get configmaps "istio-ca-root-cert" in namespace other: ` +
      `grant it a Role in namespace other with {apiGroups: [""], resources: ["configmaps"], resourceNames: ["istio-ca-root-cert"], verbs: ["get"]} and a RoleBinding to ${SA}`,
  });
  await t.throwsAsync(kube.requestToken({ namespace: 'default', serviceAccount: 'vm' }), {
    message:
      /may not create serviceaccounts\/token "vm" in namespace default: grant it a Role in namespace default with \{apiGroups: \[""\], resources: \["serviceaccounts\/token"\], resourceNames: \["vm"\], verbs: \["create"\]\}/,
  });
  k.rbac.set(
    SA,
    MESH_RULES.filter((r) => !r.resources.includes('servicecidrs')),
  );
  await t.throwsAsync(kube.serviceCidrs(), {
    message:
      /may not list servicecidrs\.networking\.k8s\.io at the cluster scope: grant it a ClusterRole with \{apiGroups: \["networking\.k8s\.io"\], resources: \["servicecidrs"\], verbs: \["list"\]\} and a ClusterRoleBinding.*may not create services in namespace default.*set the service CIDR in the runlist/,
  });
  t.is(callsMatching(k.calls, { action: 'get configmaps' })[0]?.status, 403, 'one attempt: a 403 is not retried');
  t.is(callsMatching(k.calls, { action: 'get configmaps' }).length, 1);
});

test('service CIDRs: every ServiceCIDR, united (dual-stack and added ranges)', async (t) => {
  const k = await cluster(t, { serviceCIDRs: { kubernetes: ['10.96.0.0/12', 'fd00:10:96::/112'], extra: ['10.200.0.0/16', '10.96.0.0/12'] } });
  t.deepEqual(await client(k).serviceCidrs(), { cidrs: ['10.200.0.0/16', '10.96.0.0/12', 'fd00:10:96::/112'], source: 'servicecidr-api', notes: [] });
});

test('service CIDR fallbacks: the dry-run probe names the range, else the attribute, and nothing is created', async (t) => {
  const old = await cluster(t, { serviceCIDRApi: false, serviceCIDRs: ['10.32.0.0/12'] });
  old.rbac.set(SA, [...MESH_RULES, { verbs: ['create'], resources: ['services'], namespaces: ['vm-ns'] }]);
  const probed = await client(old).serviceCidrs({ probeNamespace: 'vm-ns' });
  t.deepEqual(probed.cidrs, ['10.32.0.0/12']);
  t.is(probed.source, 'dry-run-probe');
  t.deepEqual(probed.notes, ['the ServiceCIDR API is not served (a cluster older than v1.33)']);
  t.is(old.objects.list('services', 'vm-ns').length, 0, 'dry-run: nothing stored');
  t.deepEqual(
    callsMatching(old.calls, { action: 'create services' }).map((c) => c.query['dryRun']),
    ['All'],
  );

  const locked = await cluster(t, { serviceCIDRApi: false });
  const fallback = await client(locked).serviceCidrs({ probeNamespace: 'vm-ns', fallback: ['10.100.0.0/16'] });
  t.is(fallback.source, 'attribute');
  t.deepEqual(fallback.cidrs, ['10.100.0.0/16']);
  t.regex(fallback.notes[1] ?? '', /may not create services in namespace vm-ns/);
});

test('TokenRequest: audience istio-ca, at least 600 s, the expiry the issuer granted', async (t) => {
  const k = await cluster(t, { tokenExpiration: (s) => Math.min(s, 1800) });
  const kube = client(k);
  const before = Date.now();
  const minted = await kube.requestToken({ namespace: 'vm-ns', serviceAccount: 'vm', expirationSeconds: 7200 });
  t.deepEqual(minted.audiences, ['istio-ca']);
  const granted = minted.expiresAt.getTime() - before;
  t.true(granted > 1790_000 && granted < 1801_000, `the response's expiry (${granted} ms), not the 7200 s asked`);
  t.is(secrets.redact(minted.token), '(sensitive)');
  t.deepEqual(k.tokens.lookup(minted.token)?.audiences, ['istio-ca']);
  await t.throwsAsync(kube.requestToken({ namespace: 'vm-ns', serviceAccount: 'vm', expirationSeconds: 300 }), {
    instanceOf: RangeError,
    message: /at least 600 seconds/,
  });
  await t.throwsAsync(kube.requestToken({ namespace: 'vm-ns', serviceAccount: 'ghost' }), {
    message: /requesting a token for ServiceAccount vm-ns\/ghost: not found \(serviceaccounts "ghost" not found\)/,
  });
});

test('WorkloadEntry: created, then unchanged, then replaced when the spec differs', async (t) => {
  const k = await cluster(t);
  const kube = client(k);
  const entry = { namespace: 'vm-ns', name: 'vm-1', labels: { app: 'vm' }, spec: { address: '10.0.0.5', serviceAccount: 'vm', labels: { app: 'vm' } } };
  t.is(await kube.upsertWorkloadEntry(entry), 'created');
  t.is(await kube.upsertWorkloadEntry(entry), 'unchanged');
  t.is(await kube.upsertWorkloadEntry({ ...entry, spec: { ...entry.spec, address: '10.0.0.6' } }), 'updated');
  t.like(k.objects.get('workloadentries', 'vm-ns', 'vm-1'), { spec: { address: '10.0.0.6' }, metadata: { labels: { app: 'vm' }, generation: 2 } });
});

test('configured from what Vault returned: the token minted by the Kubernetes secrets engine works against the API', async (t) => {
  const k = await cluster(t);
  const vault = await startVault({
    tls: true,
    policies: {
      mesh: [
        { path: 'secret/data/meshvm/*', capabilities: ['read'] },
        { path: 'kubernetes/creds/mesh', capabilities: ['update'] },
      ],
    },
    kubernetes: {
      roles: { mesh: { serviceAccountName: 'vm-bootstrap', allowedKubernetesNamespaces: ['vm-ns'] } },
      mint: (r) => k.tokens.mint({ namespace: r.kubernetesNamespace, serviceAccount: r.serviceAccountName, expirationSeconds: r.ttlSeconds }),
    },
  });
  t.teardown(() => vault.stop());
  vault.putSecret('secret', 'meshvm/cluster-a', { server: k.url, 'ca.crt': k.caPem });
  const token = vault.issueToken({ policies: ['mesh'] });
  const access = await new VaultClient(
    { address: vault.url, caFile: '/ca.pem', auth: { method: 'token' } },
    { env: { VAULT_TOKEN: token }, readFile: async () => vault.caPem },
  ).kubernetesAccess({ kv: { path: 'meshvm/cluster-a' }, creds: { role: 'mesh', namespace: 'vm-ns' } });
  const kube = new KubernetesClient({ ...access, retry: FAST });
  t.is(await kube.clusterDns(), '10.96.0.10');
  t.is(k.tokens.lookup(access.token)?.user, SA);
});
