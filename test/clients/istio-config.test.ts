// The reads of a cluster's mesh (clients/istio-config.ts through KubernetesClient) against the Kubernetes API stand-in: typed
// values as an installed Istio serves them, and a hostile API server whose every field read is refused naming object, field and value.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { ClusterValueError, KubernetesClient } from '../../clients/kubernetes.ts';
import { istiodVersionOf, parseMeshConfig, parseWorkloadGroup } from '../../clients/istio-config.ts';
import { startKubernetes, testPki, type KubernetesStandIn } from '../stand-ins/index.ts';

/** The Kubernetes API server (v1.33, the stand-in on loopback) and a client with an admin token. */
async function cluster(t: ExecutionContext): Promise<{ kube: KubernetesStandIn; k: KubernetesClient }> {
  const kube = await startKubernetes({
    tokens: { admin: { user: 'admin', groups: ['system:masters'] }, vm: { user: 'vm', groups: [] } },
    rbac: { vm: [] },
  });
  t.teardown(() => kube.stop());
  return { kube, k: new KubernetesClient({ server: kube.url, caPem: kube.caPem, token: 'admin', retry: { attempts: 1, baseMs: 1, maxMs: 1 } }) };
}

const CP = { namespace: 'istio-system', revision: '' };

test('an installed control plane reads as typed values: the mesh config, the injector values, the network label, istiod’s version', async (t) => {
  const { kube, k } = await cluster(t);
  kube.objects.installIstio({
    version: '1.24.2',
    meshId: 'mesh1',
    clusterName: 'cluster-a',
    network: 'net-a',
    namespaceNetwork: 'net-ns',
    trustDomain: 'example.org',
  });
  const mesh = await k.meshConfig(CP);
  t.deepEqual(mesh, {
    source: 'ConfigMap istio-system/istio',
    trustDomain: 'example.org',
    defaultConfig: { discoveryAddress: 'istiod.istio-system.svc:15012', meshId: 'mesh1', proxyMetadata: {} },
  });
  t.deepEqual(await k.injectorValues(CP), {
    source: 'ConfigMap istio-system/istio-sidecar-injector',
    clusterName: 'cluster-a',
    network: 'net-a',
    meshId: 'mesh1',
  });
  t.is(await k.namespaceNetwork('istio-system'), 'net-ns');
  t.is(await k.namespaceNetwork('nowhere'), undefined, 'no such namespace');
  t.is(await k.istiodVersion(CP), '1.24.2');
  t.is(await k.istiodVersion({ namespace: 'istio-system', revision: 'canary' }), undefined, 'no istiod-canary Deployment');
  t.is(await k.injectorValues({ namespace: 'istio-system', revision: 'canary' }), undefined);
  await t.throwsAsync(k.meshConfig({ namespace: 'istio-system', revision: 'canary' }), {
    message:
      'no ConfigMap istio-system/istio-canary: the mesh config of istiod revision canary (is Istio installed in istio-system? set systemNamespace or workload.revision to the control plane this VM joins)',
  });
});

test('istiod’s version: the image tag (variants stripped), else app.kubernetes.io/version, else operator.istio.io/version, else none', (t) => {
  const deployment = (image: string | undefined, labels: Record<string, string> = {}) => ({
    metadata: { labels },
    spec: {
      template: {
        spec: {
          containers: [
            { name: 'sidecar', image: 'x:1' },
            { name: 'discovery', ...(image ? { image } : {}) },
          ],
        },
      },
    },
  });
  const at = 'Deployment istio-system/istiod';
  t.is(istiodVersionOf(deployment('docker.io/istio/pilot:1.24.2-distroless'), at), '1.24.2');
  t.is(istiodVersionOf(deployment('registry.local:5000/istio/pilot:1.25.0-beta.0'), at), '1.25.0-beta.0');
  t.is(istiodVersionOf(deployment('gcr.io/istio/pilot@sha256:abc', { 'app.kubernetes.io/version': '1.23.4' }), at), '1.23.4', 'by digest: the label');
  t.is(istiodVersionOf(deployment('istio/pilot:latest', { 'operator.istio.io/version': '1.22.1' }), at), '1.22.1');
  t.is(istiodVersionOf(deployment('istio/pilot:latest'), at), undefined);
  t.throws(() => istiodVersionOf(deployment('istio/pilot:latest', { 'app.kubernetes.io/version': '1.24\n' }), at), {
    message:
      'Deployment istio-system/istiod: metadata.labels."app.kubernetes.io/version": "1.24\\n" is not an Istio version such as 1.24.2 (major.minor.patch)',
  });
  t.throws(() => istiodVersionOf(deployment('istio/pilot:1.24.2\nx'), at), {
    message: 'Deployment istio-system/istiod: spec.template.spec.containers[1].image: "istio/pilot:1.24.2\\nx" is not an image reference',
  });
});

test('a WorkloadGroup reads with its labels (template over metadata), proxy.istio.io/config in istioctl’s order, ports and probe', async (t) => {
  const { kube, k } = await cluster(t);
  kube.objects.put({
    apiVersion: 'networking.istio.io/v1',
    kind: 'WorkloadGroup',
    metadata: {
      name: 'reviews',
      namespace: 'bookinfo',
      annotations: { 'proxy.istio.io/config': 'proxyMetadata: { A: object, B: object }\nstatusPort: 15030' },
    },
    spec: {
      metadata: { labels: { app: 'reviews', version: 'v1' }, annotations: { 'proxy.istio.io/config': 'proxyMetadata: { B: spec }' } },
      template: { labels: { version: 'v2' }, serviceAccount: 'reviews', network: 'vm-net', ports: { http: 9080 } },
      probe: { httpGet: { path: '/ready', port: 9080 }, periodSeconds: 5 },
    },
  });
  t.deepEqual(await k.workloadGroup('bookinfo', 'reviews'), {
    source: 'WorkloadGroup bookinfo/reviews',
    namespace: 'bookinfo',
    name: 'reviews',
    labels: { app: 'reviews', version: 'v2' },
    proxyConfigs: [{ proxyMetadata: { A: 'object', B: 'object' }, statusPort: 15030 }, { proxyMetadata: { B: 'spec' } }],
    template: { serviceAccount: 'reviews', network: 'vm-net', ports: { http: 9080 } },
    probe: { httpGet: { path: '/ready', port: 9080 }, periodSeconds: 5 },
  });
  t.is(await k.workloadGroup('bookinfo', 'ghost'), undefined);
});

test('a WorkloadGroup port name may be 63 characters (a DNS-1123 label), not 64', (t) => {
  const wg = (name: string) => ({ metadata: { name: 'wg', namespace: 'vm-ns' }, spec: { template: { ports: { [name]: 9080 } } } });
  t.deepEqual(parseWorkloadGroup(wg('p'.repeat(63))).template.ports, { ['p'.repeat(63)]: 9080 });
  t.throws(() => parseWorkloadGroup(wg('p'.repeat(64))), { instanceOf: ClusterValueError });
});

test('a refused read names the verb, the resource and the Role rule (here: the mesh config ConfigMap)', async (t) => {
  const { kube } = await cluster(t);
  kube.objects.installIstio();
  const k = new KubernetesClient({ server: kube.url, caPem: kube.caPem, token: 'vm' });
  await t.throwsAsync(k.meshConfig(CP), {
    message:
      'reading ConfigMap istio-system/istio: the token (vm) may not get configmaps "istio" in namespace istio-system: grant it a Role in namespace istio-system with {apiGroups: [""], resources: ["configmaps"], resourceNames: ["istio"], verbs: ["get"]} and a RoleBinding to vm',
  });
});

/** One field of one object made hostile, the read that must refuse it, and the error it must give. */
interface Hostile {
  what: string;
  plant(kube: KubernetesStandIn, pem: string): void;
  read(k: KubernetesClient): Promise<unknown>;
  message: string;
}

const meshWith = (mesh: string) => (kube: KubernetesStandIn) => kube.objects.setConfigMap('istio-system', 'istio', { mesh });
const injectorWith = (values: string) => (kube: KubernetesStandIn) => kube.objects.setConfigMap('istio-system', 'istio-sidecar-injector', { values });
const group = (spec: Record<string, unknown>, annotations?: Record<string, string>) => (kube: KubernetesStandIn) =>
  kube.objects.put({ kind: 'WorkloadGroup', metadata: { name: 'wg', namespace: 'vm-ns', ...(annotations ? { annotations } : {}) }, spec });
const service =
  (status: Record<string, unknown>, ports: unknown[] = [{ port: 15012 }]) =>
  (kube: KubernetesStandIn) =>
    kube.objects.setService('istio-system', 'istio-eastwestgateway', { type: 'LoadBalancer', ports }, { loadBalancer: status });
const WG = 'WorkloadGroup vm-ns/wg';
const MESH = 'ConfigMap istio-system/istio';
const INJECTOR = 'ConfigMap istio-system/istio-sidecar-injector';

const HOSTILE: Hostile[] = [
  {
    what: 'mesh: not YAML',
    plant: meshWith('defaultConfig: [unclosed'),
    read: (k) => k.meshConfig(CP),
    message: `${MESH}: data.mesh: "defaultConfig: [unclosed" is not YAML (`,
  },
  { what: 'mesh: a list', plant: meshWith('- a'), read: (k) => k.meshConfig(CP), message: `${MESH}: mesh: ["a"] is not a YAML map` },
  {
    what: 'trustDomain with a newline',
    plant: meshWith('trustDomain: "cluster.local\\nevil"'),
    read: (k) => k.meshConfig(CP),
    message: `${MESH}: mesh.trustDomain: "cluster.local\\nevil" is not a trust domain (letters, digits, ".", "-", "_")`,
  },
  {
    what: 'a proxyMetadata value that is a boolean',
    plant: meshWith('defaultConfig:\n  proxyMetadata:\n    ISTIO_META_DNS_CAPTURE: true'),
    read: (k) => k.meshConfig(CP),
    message: `${MESH}: mesh.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE: true is not a string (proxyMetadata values are strings: quote it)`,
  },
  {
    what: 'a proxyMetadata value with a newline',
    plant: meshWith('defaultConfig:\n  proxyMetadata:\n    EVIL: "a\\nISTIO_META_CLUSTER_ID=other"'),
    read: (k) => k.meshConfig(CP),
    message: `${MESH}: mesh.defaultConfig.proxyMetadata.EVIL: "a\\nISTIO_META_CLUSTER_ID=other" is not one line of text (no newline, NUL or control character)`,
  },
  {
    what: 'a proxyMetadata key that is no variable name',
    plant: meshWith('defaultConfig:\n  proxyMetadata:\n    "A=B": x'),
    read: (k) => k.meshConfig(CP),
    message: `${MESH}: mesh.defaultConfig.proxyMetadata: "A=B" is not an environment variable name (letters, digits, "_")`,
  },
  {
    what: 'discoveryAddress not host:port',
    plant: meshWith('defaultConfig:\n  discoveryAddress: "istiod.istio-system.svc:15012\\n"'),
    read: (k) => k.meshConfig(CP),
    message: `${MESH}: mesh.defaultConfig.discoveryAddress: "istiod.istio-system.svc:15012\\n" is not host:port (a DNS name or an IP address, and a port)`,
  },
  {
    what: 'statusPort out of range',
    plant: meshWith('defaultConfig:\n  statusPort: 70000'),
    read: (k) => k.meshConfig(CP),
    message: `${MESH}: mesh.defaultConfig.statusPort: 70000 is not a port number (1 to 65535)`,
  },
  {
    what: 'meshId with a NUL',
    plant: meshWith('defaultConfig:\n  meshId: "mesh\\0"'),
    read: (k) => k.meshConfig(CP),
    message: `${MESH}: mesh.defaultConfig.meshId: "mesh\\u0000" is not a label value (at most 63 letters, digits, "-", "_", ".")`,
  },
  {
    what: 'a newline deep in a ProxyConfig field meshvm carries through',
    plant: meshWith('defaultConfig:\n  tracing:\n    zipkin:\n      address: "zipkin:9411\\nproxyMetadata: {}"'),
    read: (k) => k.meshConfig(CP),
    message: `${MESH}: mesh.defaultConfig.tracing.zipkin.address: "zipkin:9411\\nproxyMetadata: {}" is not one line of text (no newline, NUL or control character)`,
  },
  {
    what: 'injector values: not JSON',
    plant: injectorWith('{"global": '),
    read: (k) => k.injectorValues(CP),
    message: `${INJECTOR}: data.values: "{\\"global\\": " is not JSON (`,
  },
  {
    what: 'clusterName with a newline',
    plant: injectorWith(JSON.stringify({ global: { multiCluster: { clusterName: 'a\nb' } } })),
    read: (k) => k.injectorValues(CP),
    message: `${INJECTOR}: values.global.multiCluster.clusterName: "a\\nb" is not a cluster ID (letters, digits, "-", "_", ".")`,
  },
  {
    what: 'network that is no label value',
    plant: injectorWith(JSON.stringify({ global: { network: 'net a' } })),
    read: (k) => k.injectorValues(CP),
    message: `${INJECTOR}: values.global.network: "net a" is not a label value (at most 63 letters, digits, "-", "_", ".")`,
  },
  {
    what: 'the namespace network label',
    plant: (kube) => kube.objects.setNamespace('istio-system', { 'topology.istio.io/network': 'net\n' }),
    read: (k) => k.namespaceNetwork('istio-system'),
    message: 'Namespace istio-system: metadata.labels."topology.istio.io/network": "net\\n" is not a label value (at most 63 letters, digits, "-", "_", ".")',
  },
  {
    what: 'a WorkloadGroup service account',
    plant: group({ template: { serviceAccount: 'Reviews!' } }),
    read: (k) => k.workloadGroup('vm-ns', 'wg'),
    message: `${WG}: spec.template.serviceAccount: "Reviews!" is not a service account name (lower case letters, digits, "-" and ".")`,
  },
  {
    what: 'a WorkloadGroup network',
    plant: group({ template: { network: 'vm-net\nISTIO_META_CLUSTER_ID=x' } }),
    read: (k) => k.workloadGroup('vm-ns', 'wg'),
    message: `${WG}: spec.template.network: "vm-net\\nISTIO_META_CLUSTER_ID=x" is not a label value (at most 63 letters, digits, "-", "_", ".")`,
  },
  {
    what: 'a WorkloadGroup port',
    plant: group({ template: { ports: { http: 0 } } }),
    read: (k) => k.workloadGroup('vm-ns', 'wg'),
    message: `${WG}: spec.template.ports.http: 0 is not a port number (1 to 65535)`,
  },
  {
    what: 'a WorkloadGroup label value',
    plant: group({ metadata: { labels: { app: 'a"b' } }, template: {} }),
    read: (k) => k.workloadGroup('vm-ns', 'wg'),
    message: `${WG}: spec.metadata.labels.app: "a\\"b" is not a label value (at most 63 letters, digits, "-", "_", ".")`,
  },
  {
    what: 'a WorkloadGroup address that is no IP or name',
    plant: group({ template: { address: '10.0.0.300' } }),
    read: (k) => k.workloadGroup('vm-ns', 'wg'),
    message: `${WG}: spec.template.address: "10.0.0.300" is not an IP address, a DNS name or unix://path`,
  },
  {
    what: 'a probe path with a newline',
    plant: group({ template: {}, probe: { httpGet: { path: '/ready\n', port: 80 } } }),
    read: (k) => k.workloadGroup('vm-ns', 'wg'),
    message: `${WG}: spec.probe.httpGet.path: "/ready\\n" is not one line of text (no newline, NUL or control character)`,
  },
  {
    what: 'proxy.istio.io/config with a newline in a value',
    plant: group({ template: {} }, { 'proxy.istio.io/config': 'proxyMetadata:\n  X: "a\\nb"' }),
    read: (k) => k.workloadGroup('vm-ns', 'wg'),
    message: `${WG}: metadata.annotations."proxy.istio.io/config".proxyMetadata.X: "a\\nb" is not one line of text (no newline, NUL or control character)`,
  },
  {
    what: 'the root cert: PEM and something else',
    plant: (kube, pem) => kube.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': `${pem}\nISTIO_META=x\n` }),
    read: (k) => k.rootCert('vm-ns'),
    message: 'ConfigMap vm-ns/istio-ca-root-cert: data."root-cert.pem": "-----BEGIN CERTIFICATE-----',
  },
  {
    what: 'a load balancer IP that is none',
    plant: service({ ingress: [{ ip: '10.150.0.6\n10.0.0.1 evil' }] }),
    read: (k) => k.controlPlaneAddresses({ services: ['istio-eastwestgateway'] }),
    message: 'Service istio-system/istio-eastwestgateway: status.loadBalancer.ingress[0].ip: "10.150.0.6\\n10.0.0.1 evil" is not an IP address',
  },
  {
    what: 'a load balancer hostname that is no DNS name',
    plant: service({ ingress: [{ ip: '10.0.0.1' }, { hostname: 'ELB_1.example.com' }] }),
    read: (k) => k.controlPlaneAddresses({ services: ['istio-eastwestgateway'] }),
    message:
      'Service istio-system/istio-eastwestgateway: status.loadBalancer.ingress[1].hostname: "ELB_1.example.com" is not a DNS name (lower case letters, digits, "-" and ".")',
  },
  {
    what: 'a service port out of range',
    plant: service({ ingress: [{ ip: '10.0.0.1' }] }, [{ port: 15012 }, { port: 0 }]),
    read: (k) => k.controlPlaneAddresses({ services: ['istio-eastwestgateway'] }),
    message: 'Service istio-system/istio-eastwestgateway: spec.ports[1].port: 0 is not a port number (1 to 65535)',
  },
  {
    what: 'a cluster DNS ClusterIP that is none',
    plant: (kube) => kube.objects.setService('kube-system', 'kube-dns', { type: 'ClusterIP', clusterIP: '10.96.0.300' }),
    read: (k) => k.clusterDns(),
    message: 'Service kube-system/kube-dns: spec.clusterIP: "10.96.0.300" is not an IP address',
  },
  {
    what: 'a service CIDR that is none',
    plant: (kube) => kube.objects.put({ kind: 'ServiceCIDR', metadata: { name: 'kubernetes' }, spec: { cidrs: ['10.96.0.0/12', '10.200.0.0/33'] } }),
    read: (k) => k.serviceCidrs(),
    message: 'ServiceCIDRs (networking.k8s.io/v1): spec.cidrs[1]: "10.200.0.0/33" is not a CIDR such as 10.96.0.0/12',
  },
];

for (const c of HOSTILE) {
  test(`hostile API server: ${c.what} is refused naming the object, the field and the value`, async (t) => {
    const { kube, k } = await cluster(t);
    const pki = await testPki();
    c.plant(kube, pki.caPem);
    const error = await t.throwsAsync(c.read(k));
    t.true(error instanceof ClusterValueError, `${error?.name}: ${error?.message}`);
    t.true(error!.message.startsWith(c.message), error!.message);
  });
}

test('hostile API server: the classic Secret’s key and chain must be PEM', async (t) => {
  const { kube, k } = await cluster(t);
  const pki = await testPki();
  kube.objects.setSecret('vm-ns', 'istio.vm', { 'root-cert.pem': pki.caPem, 'cert-chain.pem': pki.certPem, 'key.pem': 'not a key' });
  await t.throwsAsync(k.istioSecret('vm-ns', 'vm'), { message: /^Secret vm-ns\/istio\.vm: data\."key\.pem" is not a PEM private key/ });
  kube.objects.setSecret('vm-ns', 'istio.vm', { 'root-cert.pem': pki.caPem, 'cert-chain.pem': 'CHAIN', 'key.pem': pki.keyPem });
  await t.throwsAsync(k.istioSecret('vm-ns', 'vm'), { message: /^Secret vm-ns\/istio\.vm: data\."cert-chain\.pem": "CHAIN" is not PEM certificates/ });
});

test('parseMeshConfig: an empty mesh key is an empty mesh config; unknown fields are carried (istioctl keeps them in the VM’s mesh config)', (t) => {
  t.deepEqual(parseMeshConfig('', 'ConfigMap x/istio'), { source: 'ConfigMap x/istio', trustDomain: '', defaultConfig: { proxyMetadata: {} } });
  const mesh = parseMeshConfig('defaultConfig:\n  concurrency: 2\n  tracing: { sampling: 1.5 }\nenableTracing: true\n', 'ConfigMap x/istio');
  t.deepEqual(mesh.defaultConfig, { concurrency: 2, tracing: { sampling: 1.5 }, proxyMetadata: {} });
});
