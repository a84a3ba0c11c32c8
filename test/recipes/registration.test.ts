// The registration recipe through the real CLI: auto (WorkloadGroup), manual (WorkloadEntry and a selector Service), none; plan writes nothing, a re-converge writes nothing.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { autoRegisterGroup, entryName, registrationAttribute, registrationPorts, registrationProxyMetadata, resolveMode } from '../../recipes/registration.ts';
import { MESH_RULES, startMeshLab, type MeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, writeRunlist, type CliResult } from '../helpers/scratch.ts';

// Stand-ins (test/helpers/mesh-lab.ts): Vault (HTTP API v1, AppRole login, the scoped cluster token in KV v2) stands for the
// site's Vault; the Kubernetes stand-in (API v1.33, RBAC, Istio's CRDs, server-side apply with managedFields) stands for
// the cluster's API server.

const WORKLOAD = { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', ports: [9080], labels: { app: 'reviews', version: 'v1' } };

/** The narrowest Roles the README gives, one per mode (names known in advance: resourceNames). */
const AUTO_ROLE = {
  verbs: ['get', 'create', 'patch'],
  apiGroups: ['networking.istio.io'],
  resources: ['workloadgroups'],
  resourceNames: ['reviews-vm'],
  namespaces: ['vm-ns'],
};
const MANUAL_ROLE = [
  {
    verbs: ['get', 'create', 'patch'],
    apiGroups: ['networking.istio.io'],
    resources: ['workloadentries'],
    resourceNames: ['reviews-vm-10.0.0.5'],
    namespaces: ['vm-ns'],
  },
  { verbs: ['get', 'create', 'patch'], apiGroups: [''], resources: ['services'], resourceNames: ['reviews-vm'], namespaces: ['vm-ns'] },
];

interface Report {
  outcome: string;
  summary: { changed: number };
  resources: { ref: string; status: string; changes: string[]; error?: string }[];
  apiCalls: Record<string, number>;
}

function report(t: ExecutionContext, result: CliResult, exitCode = 0): Report {
  t.is(result.exitCode, exitCode, `exit code; stderr:\n${result.stderr}\nstdout:\n${result.stdout}`);
  return JSON.parse(result.stdout) as Report;
}

async function lab(t: ExecutionContext, rules: unknown[]) {
  const root = await scratchRoot(t);
  const l = await startMeshLab(t, root, { rules: [...MESH_RULES, ...(rules as typeof MESH_RULES)] });
  return { root, lab: l };
}

const runlist = (l: MeshLab, registration: unknown, workload: Record<string, unknown> = WORKLOAD, flow = 'istiod') =>
  JSON.stringify({ name: 'registration-lab', attributes: { flow, workload, cluster: l.cluster, registration }, recipes: [{ recipe: 'registration' }] });

/** The registration's writes (not GETs, not preflight's dry runs, not the fleet view's: test/recipes/fleet-view.test.ts), as "METHOD path". */
const writes = (l: MeshLab) =>
  l.kube.calls
    .filter((c) => c.method !== 'GET' && c.query.dryRun !== 'All' && c.query.fieldManager !== 'meshvm-fleet-view')
    .map((c) => `${c.method} ${c.path}`);
/** Preflight's dry runs (dryRun=All: authorized and validated as the write would be, nothing stored), as "METHOD path". */
const dryRuns = (l: MeshLab) => l.kube.calls.filter((c) => c.query.dryRun === 'All').map((c) => `${c.method} ${c.path}`);

test('auto: plan shows the WorkloadGroup to create and writes nothing; converge applies it once; a re-converge makes 0 API writes', async (t) => {
  const { root, lab: l } = await lab(t, [AUTO_ROLE]);
  const file = await writeRunlist(l.dir, 'auto.yaml', runlist(l, 'auto'));
  const plan = report(t, await meshvm(['plan', file, '--root', root, '--json']));
  t.is(plan.outcome, 'would-change');
  t.deepEqual(plan.resources[0]!.ref, 'workload_group[vm-ns/reviews-vm]');
  t.deepEqual(plan.resources[0]!.changes, [
    'create it',
    'set metadata.labels["app.kubernetes.io/managed-by"] to "meshvm"',
    'set spec.metadata.labels.app to "reviews"',
    'set spec.metadata.labels.version to "v1"',
    'set spec.template.serviceAccount to "vm-sa"',
    'set spec.template.ports.port-9080 to 9080',
  ]);
  t.deepEqual(writes(l), [], 'plan made no API write');

  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.deepEqual(writes(l), ['PATCH /apis/networking.istio.io/v1/namespaces/vm-ns/workloadgroups/reviews-vm']);
  t.like(l.kube.objects.get('workloadgroups', 'vm-ns', 'reviews-vm'), {
    metadata: { labels: { 'app.kubernetes.io/managed-by': 'meshvm' } },
    spec: { metadata: { labels: { app: 'reviews', version: 'v1' } }, template: { serviceAccount: 'vm-sa', ports: { 'port-9080': 9080 } } },
  });

  const again = report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(again.summary.changed, 0);
  t.is(writes(l).length, 1, 're-converge: 0 API writes');
  t.is(again.apiCalls.kubernetes, 1, 'one read');

  // the workload moves to port 9081: plan shows both fields, converge makes one update
  const moved = await writeRunlist(l.dir, 'moved.yaml', runlist(l, 'auto', { ...WORKLOAD, ports: [9081] }));
  const diff = report(t, await meshvm(['plan', moved, '--root', root, '--json']));
  t.deepEqual(diff.resources[0]!.changes, ['set spec.template.ports.port-9081 to 9081', 'remove spec.template.ports.port-9080 (was 9080)']);
  t.is(writes(l).length, 1, 'plan made no API write');
  report(t, await meshvm(['converge', moved, '--root', root, '--json']));
  t.is(writes(l).length, 2, 'one update');
  t.deepEqual((l.kube.objects.get('workloadgroups', 'vm-ns', 'reviews-vm')!['spec'] as { template: { ports: unknown } }).template.ports, { 'port-9081': 9081 });
});

test('auto with cluster-env: the WorkloadGroup both read is one GET per run (the mesh inputs and the registration share it)', async (t) => {
  const { root, lab: l } = await lab(t, [AUTO_ROLE]);
  const both = JSON.stringify({
    name: 'registration-lab',
    attributes: { flow: 'istiod', workload: WORKLOAD, cluster: l.cluster, registration: 'auto' },
    recipes: [{ recipe: 'istio-proxy-user' }, { recipe: 'cluster-env' }, { recipe: 'registration' }],
  });
  const file = await writeRunlist(l.dir, 'both.yaml', both);
  const groupReads = () => l.kube.calls.filter((c) => c.method === 'GET' && c.path.endsWith('/workloadgroups/reviews-vm')).length;
  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(groupReads(), 1, 'first run: one GET (it did not exist), then the apply');
  t.deepEqual(writes(l), ['PATCH /apis/networking.istio.io/v1/namespaces/vm-ns/workloadgroups/reviews-vm']);
  const again = report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(again.summary.changed, 0);
  t.is(groupReads(), 2, 're-converge: one GET');
  t.is(writes(l).length, 1, 're-converge: 0 API writes');
});

test('manual: a WorkloadEntry with health checks and a selector Service; created, then unchanged with 0 writes; offboarding deletes both', async (t) => {
  const { root, lab: l } = await lab(t, [...MANUAL_ROLE.map((r) => ({ ...r, verbs: [...r.verbs, 'delete'] }))]);
  const registration = {
    mode: 'manual',
    address: '10.0.0.5',
    ports: { http: 9080 },
    probe: { httpGet: { path: '/ready', port: 9080 } },
    service: {},
  };
  const file = await writeRunlist(l.dir, 'manual.yaml', runlist(l, registration));
  const plan = report(t, await meshvm(['plan', file, '--root', root, '--json']));
  t.deepEqual(
    plan.resources.map((r) => r.ref),
    ['workload_entry[vm-ns/reviews-vm-10.0.0.5]', 'kube_service[vm-ns/reviews-vm]'],
  );
  t.true(plan.resources[0]!.changes.includes('set metadata.annotations["proxy.istio.io/health-checks-enabled"] to "true"'));
  t.deepEqual(writes(l), []);

  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.deepEqual(writes(l), [
    'PATCH /apis/networking.istio.io/v1/namespaces/vm-ns/workloadentries/reviews-vm-10.0.0.5',
    'PATCH /api/v1/namespaces/vm-ns/services/reviews-vm',
  ]);
  t.like(l.kube.objects.get('workloadentries', 'vm-ns', 'reviews-vm-10.0.0.5'), {
    metadata: { annotations: { 'proxy.istio.io/health-checks-enabled': 'true' } },
    spec: { address: '10.0.0.5', labels: { app: 'reviews', version: 'v1' }, serviceAccount: 'vm-sa', ports: { http: 9080 } },
  });
  t.like(l.kube.objects.get('services', 'vm-ns', 'reviews-vm'), {
    spec: { selector: { app: 'reviews', version: 'v1' }, ports: [{ name: 'http', port: 9080, targetPort: 9080, protocol: 'TCP' }] },
  });
  // istiod marks it healthy: its status, not a change
  l.kube.objects.setWorkloadEntryHealth('vm-ns', 'reviews-vm-10.0.0.5', true);
  const again = report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(again.summary.changed, 0, JSON.stringify(again.resources));
  t.is(writes(l).length, 2, '0 API writes');

  const gone = report(t, await meshvm(['converge', file, '--root', root, '--json', '--set', 'registration.ensure=absent']));
  t.deepEqual(
    gone.resources.map((r) => r.changes),
    [['delete it (it carries app.kubernetes.io/managed-by=meshvm)'], ['delete it (it carries app.kubernetes.io/managed-by=meshvm)']],
  );
  t.is(l.kube.objects.get('workloadentries', 'vm-ns', 'reviews-vm-10.0.0.5'), undefined);
  t.is(l.kube.objects.get('services', 'vm-ns', 'reviews-vm'), undefined);
});

test('bad input is refused before any API call: an address that is not an IP, a label value with a newline', async (t) => {
  const { root, lab: l } = await lab(t, MANUAL_ROLE);
  const cases: [unknown, Record<string, unknown>, RegExp][] = [
    [
      { mode: 'manual', address: 'vm-1.example.com' },
      WORKLOAD,
      /registration\.address: not an IPv4 or IPv6 address: "vm-1\.example\.com" \(recipe registration\)/,
    ],
    [{ mode: 'manual', address: '10.0.0.5', labels: { tier: 'back\nend' } }, WORKLOAD, /registration\.labels\.tier: not a label value: "back\\nend"/],
    [
      { mode: 'manual', address: '10.0.0.5' },
      { ...WORKLOAD, labels: { app: 'reviews\n' } },
      // the workload's labels are typed where they are given (engine/values.ts): refused at the YAML path, before any declaration
      /bad-2\.yaml:1: attributes\.workload\.labels\.app: "reviews\\n" is not a label value \(letters, digits, "-", "_" and "\.", at most 63\) \(recipe registration\)/,
    ],
    ['sometimes', WORKLOAD, /registration\.mode: .*"auto"\|"manual"\|"none"/],
  ];
  for (const [i, [registration, workload, message]] of cases.entries()) {
    const file = await writeRunlist(l.dir, `bad-${i}.yaml`, runlist(l, registration, workload));
    const result = await meshvm(['plan', file, '--root', root]);
    t.is(result.exitCode, 1, result.stdout);
    t.regex(result.stderr, message);
  }
  t.deepEqual(l.kube.calls, [], 'the API server was never asked');
  t.deepEqual(l.vault.calls, [], 'nor Vault');
});

test('a token without the rule: the refusal names the verb, the resource, the namespace and the Role rule to add', async (t) => {
  const { root, lab: l } = await lab(t, [{ ...AUTO_ROLE, verbs: ['get'] }]);
  const file = await writeRunlist(l.dir, 'auto.yaml', runlist(l, 'auto'));
  const result = report(t, await meshvm(['converge', file, '--root', root, '--json']), 1) as unknown as { error: string };
  // refused in preflight (the dry run), before anything on the VM changed
  t.regex(result.error, /^preflight: workload_group\[vm-ns\/reviews-vm\] /);
  t.regex(
    result.error,
    /may not patch workloadgroups\.networking\.istio\.io "reviews-vm" in namespace vm-ns: grant it a Role in namespace vm-ns with \{apiGroups: \["networking\.istio\.io"\], resources: \["workloadgroups"\], resourceNames: \["reviews-vm"\], verbs: \["patch"\]\} and a RoleBinding to system:serviceaccount:vm-ns:meshvm-bootstrap/,
  );
  t.deepEqual(dryRuns(l), ['PATCH /apis/networking.istio.io/v1/namespaces/vm-ns/workloadgroups/reviews-vm'], 'only the dry run was asked');
  t.deepEqual(writes(l), []);
  t.is(l.kube.objects.get('workloadgroups', 'vm-ns', 'reviews-vm'), undefined);
});

test('none (the classic default) declares nothing and asks no API', async (t) => {
  const { root, lab: l } = await lab(t, []);
  const file = await writeRunlist(l.dir, 'classic.yaml', runlist(l, undefined, WORKLOAD, 'classic'));
  const plan = report(t, await meshvm(['plan', file, '--root', root, '--json']));
  t.deepEqual(plan.resources, []);
  t.deepEqual(l.kube.calls, []);
});

test('the mode and the proxy metadata other recipes write: auto for istiod, none for classic; the group, or the entry', (t) => {
  const parse = (v: unknown) => registrationAttribute.parse(v);
  t.is(resolveMode({ flow: 'istiod' }), 'auto');
  t.is(resolveMode({ flow: 'classic' }), 'none');
  t.is(resolveMode({ flow: 'classic', registration: parse('manual') }), 'manual');
  t.is(autoRegisterGroup({ flow: 'istiod', workload: WORKLOAD }), 'reviews-vm');
  t.is(autoRegisterGroup({ flow: 'istiod', workload: WORKLOAD, registration: parse({ ensure: 'absent' }) }), undefined);
  t.is(autoRegisterGroup({ flow: 'istiod', workload: WORKLOAD, registration: parse('none') }), undefined);
  t.is(autoRegisterGroup({ flow: 'classic', workload: WORKLOAD }), undefined);
  t.deepEqual(registrationProxyMetadata({ flow: 'istiod', workload: WORKLOAD }), { ISTIO_META_AUTO_REGISTER_GROUP: 'reviews-vm' });
  t.deepEqual(registrationProxyMetadata({ flow: 'istiod', workload: WORKLOAD, registration: parse({ mode: 'manual', address: 'fd00::5' }) }), {
    ISTIO_META_WORKLOAD_ENTRY: 'reviews-vm-fd00--5',
  });
  t.deepEqual(registrationProxyMetadata({ flow: 'classic', workload: WORKLOAD }), {});
  t.is(entryName('reviews-vm', '10.0.0.5'), 'reviews-vm-10.0.0.5');
  t.deepEqual(registrationPorts({ ports: [9080, 15443] }, undefined), { 'port-9080': 9080, 'port-15443': 15443 });
  t.deepEqual(registrationPorts({ ports: [9080] }, { ports: { http: 9080 } }), { http: 9080 });
  t.throws(() => parse({ mode: 'manual', address: '::1' }), { message: /loopback or unspecified/ });
});
