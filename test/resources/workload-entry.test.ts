// WorkloadEntry and the selector Service against the Kubernetes API stand-in; the VM's primary address from captured `ip -j` output and from a real network namespace.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { InputError } from '../../engine/errors.ts';
import { localHost } from '../../engine/host-local.ts';
import { KubernetesClient } from '../../clients/kubernetes.ts';
import type { KubeConnect } from '../../resources/workload-group.ts';
import {
  KubeService,
  parseAddresses,
  parseDefaultRoutes,
  primaryAddress,
  renderKubeService,
  renderWorkloadEntry,
  WorkloadEntry,
  kubeServiceSpec,
  workloadEntrySpec,
} from '../../resources/workload-entry.ts';
import { changedRefs, converge, scratchRoot } from '../helpers/scratch.ts';
import { startKubernetes, type KubernetesStandIn, type RbacRule } from '../stand-ins/index.ts';

const unused: KubeConnect = () => Promise.reject(new Error('the API was asked'));
const entry = { name: 'reviews-vm-10.0.0.5', namespace: 'vm-ns', address: '10.0.0.5', serviceAccount: 'vm-sa', labels: { app: 'reviews' } };

// Captured on a Debian 12 VM (iproute2 6.1.0): `ip -j route show default`, `ip -6 -j route show default`, `ip -j addr show`.
const ROUTE4 = '[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]}]\n';
const ROUTE6 = '[{"dst":"default","gateway":"fd00::1","dev":"eth0","metric":1024,"flags":[],"pref":"medium"}]\n';
const ADDR = JSON.stringify([
  {
    ifindex: 1,
    ifname: 'lo',
    flags: ['LOOPBACK', 'UP', 'LOWER_UP'],
    addr_info: [
      { family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host', label: 'lo', valid_life_time: 4294967295, preferred_life_time: 4294967295 },
      { family: 'inet6', local: '::1', prefixlen: 128, scope: 'host', valid_life_time: 4294967295, preferred_life_time: 4294967295 },
    ],
  },
  {
    ifindex: 4,
    ifname: 'eth0',
    flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
    addr_info: [
      { family: 'inet', local: '192.0.2.2', prefixlen: 24, broadcast: '192.0.2.255', scope: 'global', label: 'eth0' },
      { family: 'inet6', local: 'fd00::2', prefixlen: 64, scope: 'global', nodad: true },
      { family: 'inet6', local: 'fe80::fc:ff:fe00:1', prefixlen: 64, scope: 'link' },
    ],
  },
]);

test('the default routes and the addresses, parsed from captured `ip -j` output', (t) => {
  t.deepEqual(parseDefaultRoutes(ROUTE4), [{ dev: 'eth0', metric: 0 }]);
  t.deepEqual(parseDefaultRoutes(ROUTE6), [{ dev: 'eth0', metric: 1024 }]);
  t.deepEqual(parseDefaultRoutes(''), []);
  t.deepEqual(
    parseDefaultRoutes(
      '[{"dst":"default","gateway":"10.1.0.1","dev":"eth1","metric":200,"flags":[]},{"dst":"default","gateway":"10.0.0.1","dev":"eth0","prefsrc":"10.0.0.5","metric":100,"flags":[]}]',
    ),
    [
      { dev: 'eth0', metric: 100, prefsrc: '10.0.0.5' },
      { dev: 'eth1', metric: 200 },
    ],
    'lowest metric first',
  );
  t.deepEqual(
    parseAddresses(ADDR).map((a) => [a.ifname, a.family, a.address, a.usable]),
    [
      ['lo', 4, '127.0.0.1', false],
      ['lo', 6, '::1', false],
      ['eth0', 4, '192.0.2.2', true],
      ['eth0', 6, 'fd00::2', true],
      ['eth0', 6, 'fe80::fc:ff:fe00:1', false],
    ],
  );
  t.throws(() => parseDefaultRoutes('default via 192.0.2.1 dev eth0'), { message: /did not print JSON/ });
});

test("the primary address is read in the VM's own network (a namespace made for the test), IPv4 first, IPv6 when asked", async (t) => {
  const netns = `meshvm-reg-${randomBytes(4).toString('hex')}`;
  const ip = (...args: string[]) => execa('ip', ['-n', netns, ...args]);
  const add = await execa('ip', ['netns', 'add', netns], { reject: false });
  if (add.exitCode !== 0) return t.fail(`ip netns add ${netns}: ${add.stderr}`);
  t.teardown(() => execa('ip', ['netns', 'del', netns], { reject: false }).then(() => undefined));
  const host = localHost({ netns });

  await ip('link', 'set', 'lo', 'up');
  await t.throwsAsync(primaryAddress(host), {
    message: /cannot tell the VM's primary address \(no IPv4 default route; no IPv6 default route\); give the address/,
  });

  // a veth pair, both ends inside the namespace: vm0 is the VM's interface
  await ip('link', 'add', 'vm0', 'type', 'veth', 'peer', 'name', 'vm1');
  await ip('link', 'set', 'vm1', 'up');
  await ip('link', 'set', 'vm0', 'up');
  await ip('addr', 'add', '10.77.0.5/24', 'dev', 'vm0');
  await ip('addr', 'add', 'fd77::5/64', 'dev', 'vm0', 'nodad');
  await ip('route', 'add', 'default', 'via', '10.77.0.1', 'dev', 'vm0');
  await ip('-6', 'route', 'add', 'default', 'via', 'fd77::1', 'dev', 'vm0');
  t.deepEqual(await primaryAddress(host), { address: '10.77.0.5', dev: 'vm0' });
  t.deepEqual(await primaryAddress(host, 6), { address: 'fd77::5', dev: 'vm0' });

  // a route that names its source address wins over the device's first address
  await ip('addr', 'add', '10.77.0.9/24', 'dev', 'vm0');
  await ip('route', 'replace', 'default', 'via', '10.77.0.1', 'dev', 'vm0', 'src', '10.77.0.9');
  t.deepEqual(await primaryAddress(host), { address: '10.77.0.9', dev: 'vm0' });

  await t.throwsAsync(primaryAddress(localHost({ root: await scratchRoot(t) })), {
    message: /an offline root .* has no network to read the VM's address from/,
  });
});

test('bad input is refused at declaration: an address that is not an IP, a label value with a newline, a Service without a selector', (t) => {
  const refused = (make: () => unknown, message: RegExp) => t.regex(t.throws(make, { instanceOf: InputError })?.message ?? '', message);
  refused(
    () => WorkloadEntry({ ...entry, address: 'vm-1.example.com', connect: unused }),
    /^workload_entry\[vm-ns\/reviews-vm-10\.0\.0\.5\] .*address: not an IPv4 or IPv6 address: "vm-1\.example\.com"/,
  );
  refused(() => WorkloadEntry({ ...entry, address: '127.0.0.1', connect: unused }), /address: 127\.0\.0\.1 is a loopback or unspecified address/);
  refused(() => WorkloadEntry({ ...entry, labels: { app: 'reviews\n' }, connect: unused }), /labels\.app: not a label value: "reviews\\n"/);
  refused(
    () => KubeService({ name: 'reviews', namespace: 'vm-ns', selector: {}, ports: [{ name: 'http', port: 9080 }], connect: unused }),
    /selector: a selector Service needs at least one label/,
  );
  refused(
    () =>
      KubeService({
        name: 'reviews',
        namespace: 'vm-ns',
        selector: { app: 'x' },
        ports: [
          { name: 'http', port: 9080 },
          { name: 'http', port: 9081 },
        ],
        connect: unused,
      }),
    /ports\[1\]: name http is listed twice/,
  );
});

test('the WorkloadEntry and the Service as applied: health checks as istiod reads them, every Service port field given', (t) => {
  t.deepEqual(renderWorkloadEntry(workloadEntrySpec.parse({ ...entry, network: 'net-1', ports: { http: 9080 }, healthChecks: true, connect: unused })), {
    metadata: {
      name: 'reviews-vm-10.0.0.5',
      namespace: 'vm-ns',
      labels: { app: 'reviews', 'app.kubernetes.io/managed-by': 'meshvm' },
      annotations: { 'proxy.istio.io/health-checks-enabled': 'true' },
    },
    spec: { address: '10.0.0.5', labels: { app: 'reviews' }, serviceAccount: 'vm-sa', network: 'net-1', ports: { http: 9080 } },
  });
  t.deepEqual(
    renderKubeService(
      kubeServiceSpec.parse({
        name: 'reviews',
        namespace: 'vm-ns',
        selector: { app: 'reviews' },
        ports: [{ name: 'http', port: 80, targetPort: 9080 }],
        connect: unused,
      }),
    ).spec,
    {
      selector: { app: 'reviews' },
      ports: [{ name: 'http', port: 80, targetPort: 9080, protocol: 'TCP' }],
    },
  );
});

// ---- against the Kubernetes API stand-in (it stands for the cluster's API server: v1.33, RBAC, Istio's CRDs, server-side apply) ----

const SA = 'system:serviceaccount:vm-ns:meshvm-bootstrap';
/** The narrowest Role for manual registration with a selector Service (README). */
const MANUAL_RULES: RbacRule[] = [
  {
    verbs: ['get', 'create', 'patch', 'delete'],
    apiGroups: ['networking.istio.io'],
    resources: ['workloadentries'],
    resourceNames: ['reviews-vm-10.0.0.5'],
    namespaces: ['vm-ns'],
  },
  { verbs: ['get', 'create', 'patch', 'delete'], apiGroups: [''], resources: ['services'], resourceNames: ['reviews'], namespaces: ['vm-ns'] },
];

async function cluster(t: ExecutionContext, rules: RbacRule[] = MANUAL_RULES): Promise<{ k: KubernetesStandIn; connect: KubeConnect }> {
  const k = await startKubernetes({ tokens: { 'scoped-token': { user: SA, groups: ['system:serviceaccounts'] } }, rbac: { [SA]: rules } });
  t.teardown(() => k.stop());
  const client = new KubernetesClient({ server: k.url, caPem: k.caPem, token: 'scoped-token', retry: { attempts: 3, baseMs: 5, maxMs: 20 } });
  return { k, connect: async () => client };
}

const writes = (k: KubernetesStandIn) => k.calls.filter((c) => c.method !== 'GET');

const declare = (connect: KubeConnect, over: { entry?: Record<string, unknown>; service?: Record<string, unknown> } = {}) => [
  WorkloadEntry({ ...entry, ports: { http: 9080 }, healthChecks: true, connect, ...over.entry }),
  KubeService({ name: 'reviews', namespace: 'vm-ns', selector: { app: 'reviews' }, ports: [{ name: 'http', port: 9080 }], connect, ...over.service }),
];

test("a WorkloadEntry and its Service: created by two applies, then unchanged with 0 API writes, while istiod writes the entry's status", async (t) => {
  const { k, connect } = await cluster(t);
  const host = localHost({ root: await scratchRoot(t) });
  const plan = await converge(host, declare(connect), 'plan');
  t.deepEqual(changedRefs(plan), ['workload_entry[vm-ns/reviews-vm-10.0.0.5]', 'kube_service[vm-ns/reviews]']);
  t.true(plan.resources[0]!.changes.includes('set metadata.annotations["proxy.istio.io/health-checks-enabled"] to "true"'));
  t.true(plan.resources[0]!.changes.includes('set spec.address to "10.0.0.5"'));
  t.deepEqual(writes(k), []);

  const first = await converge(host, declare(connect));
  t.false(first.failed, first.resources.map((r) => r.error).join('\n'));
  t.deepEqual(
    writes(k).map((c) => `${c.method} ${c.path} ${c.headers['content-type']}`),
    [
      'PATCH /apis/networking.istio.io/v1/namespaces/vm-ns/workloadentries/reviews-vm-10.0.0.5 application/apply-patch+yaml',
      'PATCH /api/v1/namespaces/vm-ns/services/reviews application/apply-patch+yaml',
    ],
  );
  t.like(k.objects.get('workloadentries', 'vm-ns', 'reviews-vm-10.0.0.5'), {
    spec: { address: '10.0.0.5', labels: { app: 'reviews' }, serviceAccount: 'vm-sa', ports: { http: 9080 } },
  });
  t.like(k.objects.get('services', 'vm-ns', 'reviews'), {
    spec: { selector: { app: 'reviews' }, ports: [{ name: 'http', port: 9080, targetPort: 9080, protocol: 'TCP' }] },
  });

  // istiod reports the VM healthy (status subresource): not meshvm's field, not a change
  k.objects.setWorkloadEntryHealth('vm-ns', 'reviews-vm-10.0.0.5', true);
  const before = writes(k).length;
  t.deepEqual(changedRefs(await converge(host, declare(connect))), []);
  t.is(writes(k).length, before, '0 API writes');
  t.like(k.objects.get('workloadentries', 'vm-ns', 'reviews-vm-10.0.0.5'), { status: { conditions: [{ type: 'Healthy', status: 'True' }] } });
});

test('a port meshvm set and no longer declares is removed; plan says so and writes nothing', async (t) => {
  const { k, connect } = await cluster(t);
  const host = localHost({ root: await scratchRoot(t) });
  await converge(host, declare(connect, { entry: { ports: { http: 9080, grpc: 3550 } } }));
  const n = writes(k).length;
  const plan = await converge(host, declare(connect), 'plan');
  t.deepEqual(plan.resources[0]!.changes, ['remove spec.ports.grpc (was 3550)']);
  t.is(writes(k).length, n);
  await converge(host, declare(connect));
  t.is(writes(k).length, n + 1);
  t.deepEqual((k.objects.get('workloadentries', 'vm-ns', 'reviews-vm-10.0.0.5')!['spec'] as { ports: unknown }).ports, { http: 9080 });
});

test('ensure absent deletes the entry and Service meshvm made; a 403 on a Service names the rule to add', async (t) => {
  const { k, connect } = await cluster(t);
  const host = localHost({ root: await scratchRoot(t) });
  await converge(host, declare(connect));
  const gone = await converge(host, declare(connect, { entry: { ensure: 'absent' }, service: { ensure: 'absent' } }));
  t.deepEqual(changedRefs(gone), ['workload_entry[vm-ns/reviews-vm-10.0.0.5]', 'kube_service[vm-ns/reviews]']);
  t.is(k.objects.get('workloadentries', 'vm-ns', 'reviews-vm-10.0.0.5'), undefined);
  t.is(k.objects.get('services', 'vm-ns', 'reviews'), undefined);

  k.rbac.set(SA, MANUAL_RULES.slice(0, 1));
  const denied = await converge(host, declare(connect));
  t.true(denied.failed);
  t.regex(
    denied.resources[1]!.error ?? '',
    /reading Service vm-ns\/reviews: the token \(system:serviceaccount:vm-ns:meshvm-bootstrap\) may not get services "reviews" in namespace vm-ns: grant it a Role in namespace vm-ns with \{apiGroups: \[""\], resources: \["services"\], resourceNames: \["reviews"\], verbs: \["get"\]\}/,
  );
});
