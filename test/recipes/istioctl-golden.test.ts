// The istiod flow's files against `istioctl x workload entry configure`'s golden files (test/fixtures/istioctl, from istio/istio's
// testdata): the renderers fed the same inputs, then the real CLI against the Kubernetes API stand-in holding those inputs.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { Resolver } from 'node:dns/promises';
import fs from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseMeshConfig, parseWorkloadGroup } from '../../clients/istio-config.ts';
import { KubernetesClient } from '../../clients/kubernetes.ts';
import { renderIstiodClusterEnv } from '../../recipes/cluster-env.ts';
import { goFloat, renderGoYaml, renderHosts, renderMeshConfig } from '../../recipes/certs.ts';
import { dnsmasqRestart, istiodHost, managesDnsmasq, meshMember, memberProxyMetadata } from '../../recipes/mesh.ts';
import { workload as workloadSchema } from '../../recipes/mesh.ts';
import { machineSnapshot, meshvm, PROJECT, scratchRoot, snapshot, writeRunlist } from '../helpers/scratch.ts';
import { until } from '../helpers/poll.ts';
import { startKubernetes, testPki, type KubernetesStandIn, type RbacRule } from '../stand-ins/index.ts';
import { startDnsmasq } from '../helpers/dnsmasq.ts';

const FIXTURES = path.join(PROJECT, 'test/fixtures/istioctl');
const fixture = (file: string) => fs.readFile(path.join(FIXTURES, file), 'utf8');

/**
 * istioctl's golden files of the vmconfig cases were regenerated at different commits: the ipv4 and nil-proxy-metadata
 * cluster.env (and the ipv4 mesh.yaml) at 62a425dc, when istioctl also wrote IDENTITY_PATH_PREFIX (MeshConfig's
 * identityPathPrefix, since removed from Istio and from istioctl). That line is the one difference the test allows.
 */
const withoutIdentityPathPrefix = (golden: string) => golden.replace(/^ *IDENTITY_PATH_PREFIX(=''|: "")\n/m, '');

/** The inputs of istioctl's TestWorkloadEntryConfigure (workload_test.go): the flags of each case. */
const CASES = {
  ipv4: { internalIP: '10.10.10.10', ingressIP: '10.10.10.11', revision: 'rev-1' },
  ipv6: { internalIP: 'fd00:10:96::1', ingressIP: 'fd00:10:96::2', revision: 'rev-1' },
} as const;

/** The workload as a runlist says it (istioctl -f workloadgroup.yaml --revision rev-1 --clusterID Kubernetes). */
const workloadAttrs = (revision: string, clusterId?: string) =>
  workloadSchema.parse({ name: 'foo', namespace: 'bar', serviceAccount: 'vm-serviceaccount', revision, ...(clusterId ? { clusterId } : {}) });

for (const [name, flags] of Object.entries(CASES)) {
  test(`${name}: cluster.env, the mesh config and the hosts line equal istioctl's golden files, key for key`, async (t) => {
    // both directories hold the same inputs (their goldens agree on every value but the addresses); the store has one of each
    const group = parseWorkloadGroup(parseYaml(await fixture('vmconfig/ipv6/workloadgroup.yaml')));
    const mesh = parseMeshConfig(await fixture('vmconfig/ipv4/meshconfig.yaml'), 'ConfigMap istio-system/istio-rev-1');
    const member = meshMember(workloadAttrs(flags.revision, 'Kubernetes'), 'istio-system', { mesh, group });
    const options = { dnsCapture: true };

    const clusterEnv = renderIstiodClusterEnv(member, options, { svcIp: flags.internalIP });
    const goldenEnv = await fixture(`vmconfig/${name}/cluster.env.golden`);
    if (name === 'ipv6') t.is(clusterEnv, goldenEnv, 'byte for byte (the golden of the current istioctl)');
    else t.is(clusterEnv, withoutIdentityPathPrefix(goldenEnv));

    t.is(renderMeshConfig(member, options), withoutIdentityPathPrefix(await fixture('vmconfig/ipv4/mesh.yaml.golden')));

    const hosts = renderHosts([flags.ingressIP], istiodHost('istio-system', flags.revision));
    t.deepEqual(hosts, (await fixture(`vmconfig/${name}/hosts.golden`)).split('\n').filter(Boolean));
  });
}

test('nil proxy metadata (no revision, defaultConfig: {}): the mesh config byte for byte, cluster.env key for key', async (t) => {
  const group = parseWorkloadGroup(parseYaml(await fixture('vmconfig-nil-proxy-metadata/workloadgroup.yaml')));
  const mesh = parseMeshConfig('defaultConfig: {}', 'ConfigMap istio-system/istio');
  const member = meshMember(workloadAttrs('', 'Kubernetes'), 'istio-system', { mesh, group });
  t.is(renderMeshConfig(member, { dnsCapture: true }), await fixture('vmconfig-nil-proxy-metadata/mesh.yaml.golden'));
  t.is(
    renderIstiodClusterEnv(member, { dnsCapture: true }, { svcIp: '10.10.10.10' }),
    withoutIdentityPathPrefix(await fixture('vmconfig-nil-proxy-metadata/cluster.env.golden')),
  );
});

test('ISTIO_META_POD_PORTS as istioctl marshals model.PodPort (its TestWorkloadEntryToPodPortsMeta), ports in name order', (t) => {
  const mesh = parseMeshConfig('', 'ConfigMap istio-system/istio');
  const group = parseWorkloadGroup({ metadata: { name: 'foo', namespace: 'bar' }, spec: { template: { ports: { HTTPS: 443, HTTP: 80 } } } });
  const md = memberProxyMetadata(meshMember(workloadAttrs('', 'Kubernetes'), 'istio-system', { mesh, group }), { dnsCapture: false });
  t.is(md.ISTIO_META_POD_PORTS, '[{"name":"HTTP","containerPort":80,"protocol":""},{"name":"HTTPS","containerPort":443,"protocol":""}]');
  t.is(md.ISTIO_META_DNS_CAPTURE, undefined, '--capture-dns=false writes none');
});

test('the mesh config as go-yaml v2 writes it: key order, scalar styles, numbers, folding at 80 columns', (t) => {
  const keys = ['b', 'B', 'a10', 'a2', 'a1', '_x', 'ISTIO_METAJSON_LABELS', 'ISTIO_META_X'];
  t.deepEqual(
    renderGoYaml(Object.fromEntries(keys.map((k) => [k, 1])))
      .trim()
      .split('\n')
      .map((l) => l.split(':')[0]),
    ['_x', 'B', 'ISTIO_META_X', 'ISTIO_METAJSON_LABELS', 'a1', 'a2', 'a10', 'b'],
  );
  const styles: [unknown, string][] = [
    ['latest', 'latest'],
    ['', '""'],
    ['true', '"true"'],
    ['on', '"on"'],
    ['123', '"123"'],
    ['1e3', '"1e3"'],
    ['2001-12-14', '"2001-12-14"'],
    ['istiod.istio-system.svc:15012', 'istiod.istio-system.svc:15012'],
    ['a: b', "'a: b'"],
    ['{"a":"b"}', `'{"a":"b"}'`],
    ['[x]', "'[x]'"],
    ['- x', "'- x'"],
    ['#x', "'#x'"],
    ['a #b', "'a #b'"],
    ["it's", "it's"],
    ["'q'", "'''q'''"],
    [' lead', "' lead'"],
    [15021, '15021'],
    [1000000, '1e+06'],
    [0.5, '0.5'],
    [true, 'true'],
    [null, 'null'],
  ];
  for (const [value, want] of styles) t.is(renderGoYaml({ k: value }), `k: ${want}\n`, String(value));
  t.is(goFloat(1.5e-5), '1.5e-05');
  t.is(goFloat(123456), '123456');
  t.is(
    renderGoYaml({ a: { b: [] as unknown[], c: {}, d: [{ name: 'x', value: 'y' }, 'z', 'v'] } }),
    'a:\n  b: []\n  c: {}\n  d:\n  - name: x\n    value: "y"\n  - z\n  - v\n',
  );
  const long = Array.from({ length: 20 }, (_, i) => `word${i}`).join(' ');
  t.is(renderGoYaml({ defaultConfig: { proxyMetadata: { NOTE: long } } }).split('\n')[2], `    NOTE: ${long.slice(0, long.indexOf(' word12'))}`);
  t.is(renderGoYaml({ defaultConfig: { proxyMetadata: { NOTE: long } } }).split('\n')[3], `      ${long.slice(long.indexOf('word12'))}`);
});

test("istioctl's golden root cert is not a certificate: istioctl copies it, meshvm refuses it naming the ConfigMap and field", async (t) => {
  const kube = await startKubernetes({ tokens: { admin: { user: 'admin', groups: ['system:masters'] } } });
  t.teardown(() => kube.stop());
  kube.objects.setConfigMap('bar', 'istio-ca-root-cert', { 'root-cert.pem': await fixture('vmconfig/ipv4/root-cert.pem.golden') });
  const k = new KubernetesClient({ server: kube.url, caPem: kube.caPem, token: 'admin' });
  await t.throwsAsync(k.rootCert('bar'), {
    message:
      'ConfigMap bar/istio-ca-root-cert: data."root-cert.pem": "fake-CA-cert" is not PEM certificates (-----BEGIN CERTIFICATE----- blocks that parse as X.509, nothing else)',
  });
});

/** The narrowest rules the istiod flow's cluster-env and certs need (what the README's Role lists). */
const ISTIOD_RULES = (revision: string): RbacRule[] => {
  const suffix = revision ? `-${revision}` : '';
  return [
    { verbs: ['get'], resources: ['configmaps'], resourceNames: ['istio-ca-root-cert'], namespaces: ['bar'] },
    { verbs: ['get'], resources: ['configmaps'], resourceNames: [`istio${suffix}`, `istio-sidecar-injector${suffix}`], namespaces: ['istio-system'] },
    { verbs: ['get'], apiGroups: ['networking.istio.io'], resources: ['workloadgroups'], resourceNames: ['foo'], namespaces: ['bar'] },
    { verbs: ['get'], resources: ['namespaces'], resourceNames: ['istio-system'] },
    { verbs: ['list'], resources: ['services'], namespaces: ['istio-system'] },
    { verbs: ['create'], resources: ['serviceaccounts/token'], resourceNames: ['vm-serviceaccount'], namespaces: ['bar'] },
  ];
};
const VM_USER = 'system:serviceaccount:meshvm:vm-bootstrap';

interface Lab {
  kube: KubernetesStandIn;
  root: string;
  dir: string;
  rootPem: string;
  cluster: { server: string; caFile: string; tokenFile: string };
}

/** A cluster holding istioctl's test inputs (Kubernetes API server: the loopback stand-in), and a VM root that reaches it by files. */
async function goldenLab(t: ExecutionContext, o: { revision: string; ingress: Record<string, string>; meshConfig?: string }): Promise<Lab> {
  const kube = await startKubernetes({
    tokens: { 'vm-token': { user: VM_USER, groups: ['system:serviceaccounts'] } },
    rbac: { [VM_USER]: ISTIOD_RULES(o.revision) },
    serviceAccounts: ['bar/vm-serviceaccount'],
  });
  t.teardown(() => kube.stop());
  // the control plane as installed, with the testdata's mesh config; the injector names the cluster as istioctl's --clusterID did
  kube.objects.installIstio({ revision: o.revision, mesh: o.meshConfig ?? (await fixture('vmconfig/ipv4/meshconfig.yaml')), clusterName: 'Kubernetes' });
  const group = parseYaml(await fixture('vmconfig/ipv6/workloadgroup.yaml'));
  kube.objects.put({ ...group, apiVersion: 'networking.istio.io/v1' });
  const pki = await testPki({ fresh: true });
  kube.objects.setConfigMap('bar', 'istio-ca-root-cert', { 'root-cert.pem': pki.caPem });
  kube.objects.setService(
    'istio-system',
    'istio-eastwestgateway',
    { type: 'LoadBalancer', ports: [{ name: 'tls-istiod', port: 15012 }] },
    { loadBalancer: { ingress: [o.ingress] } },
  );
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-golden-');
  await fs.mkdir(path.join(root, 'etc/meshvm'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/meshvm/k8s-ca.crt'), kube.caPem);
  await fs.writeFile(path.join(root, 'etc/meshvm/k8s-token'), 'vm-token\n', { mode: 0o600 });
  return { kube, root, dir, rootPem: pki.caPem, cluster: { server: kube.url, caFile: '/etc/meshvm/k8s-ca.crt', tokenFile: '/etc/meshvm/k8s-token' } };
}

const runlist = (lab: Lab, o: { revision: string; svcIp?: string; certs?: Record<string, unknown> }) =>
  JSON.stringify({
    name: 'istioctl-golden',
    attributes: {
      flow: 'istiod',
      workload: { name: 'foo', namespace: 'bar', serviceAccount: 'vm-serviceaccount', revision: o.revision },
      // istioctl without --autoregister
      registration: 'none',
      cluster: lab.cluster,
    },
    recipes: [
      { recipe: 'istio-proxy-user' },
      { recipe: 'cluster-env', attributes: o.svcIp ? { svcIp: o.svcIp } : {} },
      { recipe: 'certs', attributes: o.certs ?? {} },
    ],
  });

/** The lines of a block meshvm manages in a file. */
const block = (text: string, name: string) => {
  const lines = text.split('\n');
  return lines.slice(lines.indexOf(`# BEGIN meshvm ${name}`) + 1, lines.indexOf(`# END meshvm ${name}`));
};
const writes = (kube: KubernetesStandIn, since: number) => kube.calls.slice(since).filter((c) => c.method !== 'GET');

for (const [name, flags] of Object.entries(CASES)) {
  test(`${name}, end to end: the CLI converges the files from the cluster equal to istioctl's; again, nothing changes and no API write`, async (t) => {
    const lab = await goldenLab(t, { revision: flags.revision, ingress: { ip: flags.ingressIP } });
    const file = await writeRunlist(lab.dir, 'golden.yaml', runlist(lab, { revision: flags.revision, svcIp: flags.internalIP }));
    const first = await meshvm(['converge', file, '--root', lab.root, '--json']);
    t.is(first.exitCode, 0, first.stderr);
    const read = (p: string) => fs.readFile(path.join(lab.root, p), 'utf8');
    const env = await read('var/lib/istio/envoy/cluster.env');
    const goldenEnv = await fixture(`vmconfig/${name}/cluster.env.golden`);
    t.is(env, name === 'ipv6' ? goldenEnv : withoutIdentityPathPrefix(goldenEnv));
    t.is(await read('etc/istio/config/mesh'), withoutIdentityPathPrefix(await fixture('vmconfig/ipv4/mesh.yaml.golden')));
    t.deepEqual(block(await read('etc/hosts'), 'istiod'), (await fixture(`vmconfig/${name}/hosts.golden`)).split('\n').filter(Boolean));
    t.is(await read('etc/certs/root-cert.pem'), lab.rootPem, "the cluster's root cert as it is");

    const since = lab.kube.calls.length;
    const second = JSON.parse((await meshvm(['converge', file, '--root', lab.root, '--json'])).stdout);
    t.is(second.summary.changed, 0);
    t.deepEqual(writes(lab.kube, since), [], 'no API write (the token on disk is still good)');
    const reads = lab.kube.calls.slice(since).map((c) => c.action);
    t.log(`no-op converge: ${second.summary.seconds} s, ${reads.length} Kubernetes reads (${reads.join(', ')})`);
    const plan = await meshvm(['plan', file, '--root', lab.root, '--detailed-exitcode']);
    t.is(plan.exitCode, 0, plan.stdout);
  });
}

test('the cluster decides: a changed mesh config (trust domain, mesh ID, proxy metadata, status port) moves both files, restarting istio once', async (t) => {
  const lab = await goldenLab(t, {
    revision: '',
    ingress: { ip: '10.10.10.11' },
    meshConfig: 'defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n',
  });
  await fs.mkdir(path.join(lab.root, 'lib/systemd/system'), { recursive: true });
  await fs.writeFile(
    path.join(lab.root, 'lib/systemd/system/istio.service'),
    '[Service]\nExecStart=/usr/local/bin/istio-start.sh\n[Install]\nWantedBy=multi-user.target\n',
  );
  lab.kube.rbac.get(VM_USER)!.push({ verbs: ['get'], apiGroups: ['networking.istio.io'], resources: ['workloadgroups'], namespaces: ['bar'] });
  const base = JSON.parse(runlist(lab, { revision: '' }));
  base.recipes.push({ recipe: 'sidecar-services' });
  const file = await writeRunlist(lab.dir, 'moves.yaml', JSON.stringify(base));
  t.is((await meshvm(['converge', file, '--root', lab.root])).exitCode, 0);
  const read = (p: string) => fs.readFile(path.join(lab.root, p), 'utf8');
  t.regex(await read('var/lib/istio/envoy/cluster.env'), /^TRUST_DOMAIN=''$/m, 'no trust domain in the mesh config: none written (as istioctl)');

  lab.kube.objects.setConfigMap('istio-system', 'istio', {
    mesh: [
      'trustDomain: example.org',
      'defaultConfig:',
      '  discoveryAddress: istiod.istio-system.svc:15012',
      '  meshId: mesh-east',
      '  statusPort: 15030',
      '  proxyMetadata:',
      '    ISTIO_META_DNS_AUTO_ALLOCATE: "true"',
    ].join('\n'),
  });
  // the mesh config is kept between runs (cluster.keepInputs, 1h by default): --refresh reads it now
  const after = JSON.parse((await meshvm(['converge', file, '--root', lab.root, '--json', '--refresh'])).stdout);
  t.deepEqual(
    after.resources.filter((r: { status: string }) => r.status === 'changed').map((r: { ref: string }) => r.ref),
    ['file[/var/lib/istio/envoy/cluster.env]', 'file[/etc/istio/config/mesh]'],
  );
  t.deepEqual(
    after.notifications.map((n: { ref: string; status: string }) => `${n.ref} ${n.status}`),
    ['service[istio.service] refreshed'],
  );
  const env = await read('var/lib/istio/envoy/cluster.env');
  for (const line of [
    "TRUST_DOMAIN='example.org'",
    "ISTIO_META_MESH_ID='mesh-east'",
    "ISTIO_META_DNS_AUTO_ALLOCATE='true'",
    "ISTIO_LOCAL_EXCLUDE_PORTS='22,15090,15021,15030'",
  ])
    t.true(env.split('\n').includes(line), line);
  const mesh = parseYaml(await read('etc/istio/config/mesh'));
  t.like(mesh.defaultConfig, { meshId: 'mesh-east', statusPort: 15030, proxyMetadata: { TRUST_DOMAIN: 'example.org', ISTIO_META_MESH_ID: 'mesh-east' } });
});

test('AWS: an east-west gateway with a hostname gets the line of its address, resolved each converge; an unresolvable name is an error naming it', async (t) => {
  const LB = 'eastwest-1234.elb.us-east-1.amazonaws.com';
  const lab = await goldenLab(t, { revision: '', ingress: { hostname: LB }, meshConfig: 'defaultConfig: {}' });
  const hostsFile = path.join(lab.dir, 'elb-hosts');
  await fs.chmod(lab.dir, 0o755); // dnsmasq reads it as nobody
  await fs.writeFile(hostsFile, `10.150.0.6 ${LB}\n`, { mode: 0o644 });
  const dns = await startDnsmasq(t, [`--addn-hosts=${hostsFile}`]);
  const file = await writeRunlist(lab.dir, 'aws.yaml', runlist(lab, { revision: '', certs: { lookupServers: [dns.server] } }));
  const first = await meshvm(['converge', file, '--root', lab.root]);
  t.is(first.exitCode, 0, first.stderr);
  const hostsLines = async () => block(await fs.readFile(path.join(lab.root, 'etc/hosts'), 'utf8'), 'istiod');
  t.deepEqual(await hostsLines(), ['10.150.0.6 istiod.istio-system.svc']);
  t.is((await meshvm(['plan', file, '--root', lab.root, '--detailed-exitcode'])).exitCode, 0, 'the same address: nothing to do');

  // the load balancer moved (AWS replaces ELB nodes): the next converge follows it
  await fs.writeFile(hostsFile, `10.150.0.9 ${LB}\n10.150.1.9 ${LB}\n`);
  dns.reload();
  const resolver = new Resolver({ timeout: 500, tries: 1 });
  resolver.setServers([dns.server]);
  await until(async () => (await resolver.resolve4(LB)).length === 2, { what: 'dnsmasq to answer the new addresses' });
  const moved = await meshvm(['converge', file, '--root', lab.root, '--json']);
  t.deepEqual(
    JSON.parse(moved.stdout)
      .resources.filter((r: { status: string }) => r.status === 'changed')
      .map((r: { ref: string }) => r.ref),
    ['managed_block[/etc/hosts#istiod]'],
  );
  t.deepEqual(await hostsLines(), ['10.150.0.9 istiod.istio-system.svc', '10.150.1.9 istiod.istio-system.svc']);

  // nothing answers for the name: refused before anything is written, naming the hostname and the Service
  await fs.writeFile(hostsFile, '');
  dns.reload();
  await until(async () => (await resolver.resolve4(LB).catch(() => [])).length === 0, { what: 'dnsmasq to forget the name' });
  const before = await machineSnapshot(lab.root);
  const failed = await meshvm(['converge', file, '--root', lab.root]);
  t.is(failed.exitCode, 1);
  t.regex(
    failed.stderr,
    new RegExp(
      `cannot resolve ${LB.replaceAll('.', '\\.')} \\(the load balancer of Service istio-system/istio-eastwestgateway, for istiod's line in /etc/hosts\\): \\w+; check that this VM resolves it through ${dns.server}, or set certs\\.istiodAddress`,
    ),
  );
  t.deepEqual(await machineSnapshot(lab.root), before, "nothing but meshvm's record of the failed run");
});

test('a missing east-west gateway says what to install; a control-plane service override reaches certs', async (t) => {
  const lab = await goldenLab(t, { revision: '', ingress: { ip: '10.10.10.11' }, meshConfig: 'defaultConfig: {}' });
  lab.kube.objects.delete('services', 'istio-system', 'istio-eastwestgateway');
  const file = await writeRunlist(lab.dir, 'missing.yaml', runlist(lab, { revision: '' }));
  const missing = await meshvm(['converge', file, '--root', lab.root]);
  t.is(missing.exitCode, 1);
  t.regex(missing.stderr, /no Service istio-eastwestgateway in istio-system: install the east-west gateway \(or set certs\.istiodAddress\)/);

  lab.kube.objects.setService(
    'istio-system',
    'istiod-gw',
    { type: 'LoadBalancer', ports: [{ port: 15012 }] },
    { loadBalancer: { ingress: [{ ip: '10.20.0.5' }] } },
  );
  const overridden = JSON.parse(runlist(lab, { revision: '' }));
  overridden.attributes.controlPlaneServices = { istiod: 'istiod-gw' };
  const ok = await meshvm(['converge', await writeRunlist(lab.dir, 'override.yaml', JSON.stringify(overridden)), '--root', lab.root]);
  t.is(ok.exitCode, 0, ok.stderr);
  t.deepEqual(block(await fs.readFile(path.join(lab.root, 'etc/hosts'), 'utf8'), 'istiod'), ['10.20.0.5 istiod.istio-system.svc']);
});

test('bad input from the cluster: a mesh config value with a newline is refused naming the ConfigMap, the field and the value; nothing is written', async (t) => {
  const lab = await goldenLab(t, {
    revision: '',
    ingress: { ip: '10.10.10.11' },
    meshConfig: 'defaultConfig:\n  proxyMetadata:\n    EXTRA: "ok\\nISTIO_META_CLUSTER_ID=hijacked"\n',
  });
  const file = await writeRunlist(lab.dir, 'hostile.yaml', runlist(lab, { revision: '' }));
  const before = await snapshot(lab.root);
  const result = await meshvm(['converge', file, '--root', lab.root]);
  t.is(result.exitCode, 1);
  t.regex(
    result.stderr,
    /ConfigMap istio-system\/istio: mesh\.defaultConfig\.proxyMetadata\.EXTRA: "ok\\nISTIO_META_CLUSTER_ID=hijacked" is not one line of text \(no newline, NUL or control character\)/,
  );
  t.deepEqual(await snapshot(lab.root), before);
  t.deepEqual(writes(lab.kube, 0), [], 'and nothing asked of the API but reads');
});

test('restarts: a re-minted istio-token restarts nothing (the agent reads the file again); the mesh config and cluster.env do, once', async (t) => {
  const lab = await goldenLab(t, { revision: '', ingress: { ip: '10.10.10.11' }, meshConfig: 'defaultConfig: {}' });
  await fs.mkdir(path.join(lab.root, 'lib/systemd/system'), { recursive: true });
  await fs.writeFile(
    path.join(lab.root, 'lib/systemd/system/istio.service'),
    '[Service]\nExecStart=/usr/local/bin/istio-start.sh\n[Install]\nWantedBy=multi-user.target\n',
  );
  // due at every converge: the token's whole life is inside the renewal window
  const base = JSON.parse(runlist(lab, { revision: '', certs: { tokenSeconds: 600, renewBeforeSeconds: 86_400 } }));
  base.recipes.push({ recipe: 'sidecar-services' });
  const file = await writeRunlist(lab.dir, 'restarts.yaml', JSON.stringify(base));
  t.is((await meshvm(['converge', file, '--root', lab.root])).exitCode, 0);
  const remint = JSON.parse((await meshvm(['converge', file, '--root', lab.root, '--json'])).stdout);
  t.deepEqual(
    remint.resources.filter((r: { status: string }) => r.status === 'changed').map((r: { ref: string }) => r.ref),
    ['istio_token[/var/run/secrets/tokens/istio-token]'],
  );
  t.deepEqual(remint.notifications, [], 'no restart for a new token');
  t.is(lab.kube.calls.filter((c) => c.action === 'create serviceaccounts/token').length, 2);
});

test('multi-network: the VM’s network is the attribute’s, else the WorkloadGroup’s, else the injector’s, else the system namespace label; both files carry it', async (t) => {
  const mesh = parseMeshConfig('defaultConfig: {}', 'ConfigMap istio-system/istio');
  const injector = { source: 'ConfigMap istio-system/istio-sidecar-injector', clusterName: 'cluster-a', network: 'net-cluster', meshId: '' };
  const group = parseWorkloadGroup({ metadata: { name: 'foo', namespace: 'bar' }, spec: { template: { network: 'net-vm' } } });
  const w = workloadAttrs('');
  t.is(meshMember(w, 'istio-system', { mesh, namespaceNetwork: 'net-ns', injector: { ...injector, network: '' } }).network, 'net-ns');
  t.is(meshMember(w, 'istio-system', { mesh, namespaceNetwork: 'net-ns', injector }).network, 'net-cluster');
  t.is(meshMember(w, 'istio-system', { mesh, injector, group }).network, 'net-vm');
  const member = meshMember({ ...w, network: 'net-given' }, 'istio-system', { mesh, injector, group });
  t.is(member.network, 'net-given');
  t.is(member.clusterId, 'cluster-a', 'the cluster ID from the injector values');
  t.true(renderIstiodClusterEnv(member, { dnsCapture: true }).split('\n').includes("ISTIO_META_NETWORK='net-given'"));
  t.is(parseYaml(renderMeshConfig(member, { dnsCapture: true })).defaultConfig.proxyMetadata.ISTIO_META_NETWORK, 'net-given');
  t.throws(() => meshMember(w, 'istio-system', { mesh }), {
    message:
      "cannot learn the cluster ID: no ConfigMap istio-system/istio-sidecar-injector (its values' global.multiCluster.clusterName); set workload.clusterId",
  });
});

test('dnsmasq is notified of a changed /etc/hosts line only when the runlist’s dns recipe manages it (managesDnsmasq, called by dns)', (t) => {
  const services = new Map<string, unknown>();
  const ctx = {
    service: <T>(key: string, create: () => T): T => {
      if (!services.has(key)) services.set(key, create());
      return services.get(key) as T;
    },
  } as unknown as Parameters<typeof dnsmasqRestart>[0];
  t.deepEqual(dnsmasqRestart(ctx), {}, 'dns did not declare dnsmasq: nothing to notify (a notification to an undeclared service is a plan error)');
  managesDnsmasq(ctx);
  t.deepEqual(
    dnsmasqRestart(ctx).notifies?.map((n) => n.ref),
    ['service[dnsmasq.service]'],
  );
});
