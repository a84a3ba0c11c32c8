// WorkloadGroup and what the registration kinds share: values typed where they enter, the object as state (paths, field sets), the diff, and the contract against the Kubernetes API stand-in.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { InputError } from '../../engine/errors.ts';
import { KubernetesClient } from '../../clients/kubernetes.ts';
import type { KubeObject } from '../../clients/workload-group.ts';
import {
  describeObjectChange,
  judgeObject,
  labelKeyProblem,
  labelValueProblem,
  leaves,
  matches,
  objectChanges,
  ownedLeaves,
  pathsOwnedByMeshvm,
  renderPath,
  renderWorkloadGroup,
  workloadAddressProblem,
  WorkloadGroup,
  workloadGroupSpec,
  type KubeConnect,
} from '../../resources/workload-group.ts';
import { converge, changedRefs, scratchRoot } from '../helpers/scratch.ts';
import { localHost } from '../../engine/host-local.ts';
import { startKubernetes, type KubernetesStandIn, type RbacRule } from '../stand-ins/index.ts';

const unused: KubeConnect = () => Promise.reject(new Error('the API was asked'));

test('label keys and values as Kubernetes validates them; the offending value is named', (t) => {
  for (const key of ['app', 'app.kubernetes.io/name', 'topology.istio.io/network', 'a_b.c-d', 'x/y']) t.is(labelKeyProblem(key), undefined, key);
  for (const key of ['', 'a/b/c', 'Bad.Prefix/x', '-app', 'app-', 'a'.repeat(64), 'app\nx', 'a\u0000b'])
    t.regex(labelKeyProblem(key) ?? '', /^not a label key: /, JSON.stringify(key));
  for (const value of ['', 'reviews', 'v1.2_3', 'a'.repeat(63)]) t.is(labelValueProblem(value), undefined, value);
  t.is(
    labelValueProblem('a\nb'),
    'not a label value: "a\\nb" (at most 63 letters, digits, "-", "_" and ".", starting and ending with a letter or digit; no newlines)',
  );
  for (const value of ['a'.repeat(64), '-x', 'x y', 'é']) t.truthy(labelValueProblem(value), value);
});

test('a workload address is an IPv4 or IPv6 address the cluster can reach', (t) => {
  for (const ok of ['10.0.0.5', '192.0.2.2', 'fd00::2', '2001:db8::1']) t.is(workloadAddressProblem(ok), undefined, ok);
  t.is(workloadAddressProblem('vm-1.example.com'), 'not an IPv4 or IPv6 address: "vm-1.example.com"');
  t.is(workloadAddressProblem('10.0.0.5\n'), 'not an IPv4 or IPv6 address: "10.0.0.5\\n"');
  t.regex(workloadAddressProblem('fe80::1%eth0') ?? '', /not an IPv4 or IPv6 address/);
  for (const local of ['127.0.0.1', '127.1.2.3', '::1', '0.0.0.0', '::']) t.regex(workloadAddressProblem(local) ?? '', /loopback or unspecified/, local);
});

const base = { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', connect: unused };

test('bad input is refused at declaration, naming the object, the field and the value, before any API call', (t) => {
  const refused = (input: Record<string, unknown>, message: RegExp) => {
    const error = t.throws(() => WorkloadGroup({ ...base, ...input }), { instanceOf: InputError });
    t.regex(error?.message ?? '', message);
  };
  refused({ labels: { app: 'reviews\nx' } }, /^workload_group\[vm-ns\/reviews-vm\] \(declared at .+\): labels\.app: not a label value: "reviews\\nx"/);
  refused({ labels: { 'bad key': 'x' } }, /labels\.bad key: not a label key: "bad key"/);
  refused({ labels: { 'app.kubernetes.io/managed-by': 'helm' } }, /meshvm sets app\.kubernetes\.io\/managed-by itself/);
  refused({ ports: { HTTP_1: 8080 } }, /ports\.HTTP_1: not a port name: "HTTP_1"/);
  refused({ ports: { http: 70000 } }, /ports\.http: a port is between 1 and 65535/);
  refused({ network: 'net\u0000work' }, /network: not a network name: "net\\u0000work"/);
  refused({ namespace: 'VM_NS' }, /namespace: not a DNS-1123 label: "VM_NS"/);
  refused({ annotations: { 'proxy.istio.io/config': 'a\u001bb' } }, /annotation value "a\\u001bb" has a control character/);
  refused(
    { probe: { httpGet: { port: 8080 }, tcpSocket: { port: 8080 } } },
    /probe: give exactly one of httpGet, tcpSocket and exec \(given: httpGet, tcpSocket\)/,
  );
  refused({ probe: { httpGet: { port: 8080, path: 'healthz' } } }, /probe\.httpGet\.path: a path starts with "\/": "healthz"/);
  refused({ probe: { exec: { command: ['curl', 'x\ny'] } } }, /probe\.exec\.command\[1\]: the command word "x\\ny" has a control character/);
  refused({ connect: 'https://10.0.0.1' }, /connect: expected the function that opens the cluster connection/);
  // a multi-line proxy config is an annotation Istio reads as YAML: allowed
  t.notThrows(() => WorkloadGroup({ ...base, annotations: { 'proxy.istio.io/config': 'proxyMetadata:\n  FOO: bar\n' } }));
});

test('the WorkloadGroup is Istio schema: spec.metadata for the entries, spec.template, spec.probe; managed-by meshvm; nothing empty', (t) => {
  const spec = workloadGroupSpec.parse({
    ...base,
    labels: { app: 'reviews', version: 'v1' },
    network: 'net-1',
    ports: { http: 9080 },
    probe: { periodSeconds: 5, httpGet: { path: '/ready', port: 9080 } },
  });
  t.deepEqual(renderWorkloadGroup(spec), {
    metadata: { name: 'reviews-vm', namespace: 'vm-ns', labels: { 'app.kubernetes.io/managed-by': 'meshvm' } },
    spec: {
      metadata: { labels: { app: 'reviews', version: 'v1' } },
      template: { serviceAccount: 'vm-sa', network: 'net-1', ports: { http: 9080 } },
      probe: { periodSeconds: 5, httpGet: { path: '/ready', port: 9080 } },
    },
  });
  t.deepEqual(renderWorkloadGroup(workloadGroupSpec.parse(base)).spec, { template: { serviceAccount: 'vm-sa' } });
});

test('paths read as people write them; leaves are scalars and lists; a field set names lists as one value', (t) => {
  t.is(renderPath(['spec', 'template', 'ports', 'http']), 'spec.template.ports.http');
  t.is(renderPath(['metadata', 'labels', 'app.kubernetes.io/managed-by']), 'metadata.labels["app.kubernetes.io/managed-by"]');
  t.deepEqual(leaves({ a: { b: 1, c: [1, 2], d: {} }, e: undefined }), [
    [['a', 'b'], 1],
    [
      ['a', 'c'],
      [1, 2],
    ],
  ]);
  // as a v1.33 API server records a server-side apply (fieldsV1), "." marking the map itself
  const fieldsV1 = {
    'f:metadata': { 'f:labels': { '.': {}, 'f:app.kubernetes.io/managed-by': {} } },
    'f:spec': {
      'f:metadata': { '.': {}, 'f:labels': { '.': {}, 'f:app': {} } },
      'f:template': { '.': {}, 'f:ports': { '.': {}, 'f:grpc': {}, 'f:http': {} }, 'f:serviceAccount': {} },
      'f:probe': { 'f:exec': { 'f:command': {} } },
      'f:ports': { '.': {}, 'k:{"port":9080,"protocol":"TCP"}': { '.': {}, 'f:name': {} } },
    },
  };
  t.deepEqual(ownedLeaves(fieldsV1).map(renderPath), [
    'metadata.labels["app.kubernetes.io/managed-by"]',
    'spec.metadata.labels.app',
    'spec.template.ports.grpc',
    'spec.template.ports.http',
    'spec.template.serviceAccount',
    'spec.probe.exec.command',
    'spec.ports',
  ]);
  const object: KubeObject = {
    metadata: {
      name: 'x',
      managedFields: [
        { manager: 'meshvm', operation: 'Apply', fieldsType: 'FieldsV1', fieldsV1 },
        { manager: 'kubectl-edit', operation: 'Update', fieldsType: 'FieldsV1', fieldsV1: { 'f:spec': { 'f:template': { 'f:weight': {} } } } },
      ],
    },
  };
  t.false(pathsOwnedByMeshvm(object).map(renderPath).includes('spec.template.weight'), "another manager's field is not meshvm's");
  t.true(
    matches({ a: [{ port: 80, targetPort: 80 }] }, { a: [{ port: 80, targetPort: 80, protocol: 'TCP' }], b: 1 }),
    'server-filled fields are not a difference',
  );
  t.false(matches([1, 2], [1, 2, 3]));
});

test("changes: everything when absent; only what differs; others' labels and status are not compared; a field meshvm owned and dropped is removed", (t) => {
  const spec = workloadGroupSpec.parse({ ...base, labels: { app: 'reviews' }, ports: { http: 9080 } });
  const desired = renderWorkloadGroup(spec);
  const created = objectChanges(spec, desired, undefined);
  t.deepEqual(Object.keys(created), [
    'ensure',
    'metadata.labels["app.kubernetes.io/managed-by"]',
    'spec.metadata.labels.app',
    'spec.template.serviceAccount',
    'spec.template.ports.http',
  ]);
  t.deepEqual(
    Object.entries(created).map(([f, c]) => describeObjectChange(f, c!)),
    [
      'create it',
      'set metadata.labels["app.kubernetes.io/managed-by"] to "meshvm"',
      'set spec.metadata.labels.app to "reviews"',
      'set spec.template.serviceAccount to "vm-sa"',
      'set spec.template.ports.http to 9080',
    ],
  );

  const stored: KubeObject = {
    ...desired,
    metadata: {
      ...desired.metadata,
      uid: 'u-1',
      labels: { ...desired.metadata.labels, team: 'payments' },
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' },
    },
    spec: { ...desired.spec, template: { serviceAccount: 'vm-sa', ports: { http: 9080, grpc: 3550 } } },
    status: { conditions: [] },
  };
  t.deepEqual(objectChanges(spec, desired, judgeObject(stored, desired)), {}, "a grpc port, a team label and status that are not meshvm's are left alone");

  const owned: KubeObject = {
    ...stored,
    metadata: {
      ...stored.metadata,
      managedFields: [
        {
          manager: 'meshvm',
          operation: 'Apply',
          fieldsV1: { 'f:spec': { 'f:template': { 'f:ports': { 'f:http': {}, 'f:grpc': {} }, 'f:serviceAccount': {} } } },
        },
      ],
    },
  };
  const moved = workloadGroupSpec.parse({ ...base, labels: { app: 'reviews' }, ports: { http: 9081 } });
  const changes = objectChanges(moved, renderWorkloadGroup(moved), judgeObject(owned, renderWorkloadGroup(moved)));
  t.deepEqual(
    Object.entries(changes).map(([f, c]) => describeObjectChange(f, c!)),
    ['set spec.template.ports.http to 9081 (was 9080)', 'remove spec.template.ports.grpc (was 3550)'],
  );

  const gone = workloadGroupSpec.parse({ ...base, ensure: 'absent' });
  t.deepEqual(objectChanges(gone, renderWorkloadGroup(gone), undefined), {});
  t.deepEqual(
    Object.entries(objectChanges(gone, renderWorkloadGroup(gone), { ensure: 'present', uid: 'u-1' })).map(([f, c]) => describeObjectChange(f, c!)),
    ['delete it (it carries app.kubernetes.io/managed-by=meshvm)'],
  );
});

// ---- against the Kubernetes API stand-in (it stands for the cluster's API server: v1.33, RBAC, Istio's CRDs, server-side apply) ----

const SA = 'system:serviceaccount:vm-ns:meshvm-bootstrap';
const FAST = { attempts: 3, baseMs: 5, maxMs: 20 };
/** The narrowest Role for auto registration (README): get, create (a server-side apply that creates), patch, delete; one name. */
const AUTO_RULES: RbacRule[] = [
  {
    verbs: ['get', 'create', 'patch', 'delete'],
    apiGroups: ['networking.istio.io'],
    resources: ['workloadgroups'],
    resourceNames: ['reviews-vm'],
    namespaces: ['vm-ns'],
  },
];

async function cluster(t: ExecutionContext, rules: RbacRule[] = AUTO_RULES): Promise<{ k: KubernetesStandIn; connect: KubeConnect }> {
  const k = await startKubernetes({ tokens: { 'scoped-token': { user: SA, groups: ['system:serviceaccounts'] } }, rbac: { [SA]: rules } });
  t.teardown(() => k.stop());
  const client = new KubernetesClient({ server: k.url, caPem: k.caPem, token: 'scoped-token', retry: FAST });
  return { k, connect: async () => client };
}

/** Requests that could change something: anything but GET. */
const writes = (k: KubernetesStandIn) => k.calls.filter((c) => c.method !== 'GET');

const group = (connect: KubeConnect, over: Record<string, unknown> = {}) =>
  WorkloadGroup({ ...base, connect, labels: { app: 'reviews' }, ports: { http: 9080 }, probe: { httpGet: { path: '/ready', port: 9080 } }, ...over });

test('a WorkloadGroup is created by one server-side apply (field manager meshvm), then unchanged with 0 API writes', async (t) => {
  const { k, connect } = await cluster(t);
  const host = localHost({ root: await scratchRoot(t) });

  const plan = await converge(host, [group(connect)], 'plan');
  t.deepEqual(changedRefs(plan), ['workload_group[vm-ns/reviews-vm]']);
  t.deepEqual(plan.resources[0]!.changes.slice(0, 2), ['create it', 'set metadata.labels["app.kubernetes.io/managed-by"] to "meshvm"']);
  t.deepEqual(writes(k), [], 'plan wrote nothing');

  const first = await converge(host, [group(connect)]);
  t.false(first.failed, first.resources[0]?.error);
  t.deepEqual(
    writes(k).map((c) => [c.method, c.path, c.query['fieldManager'], c.query['force'], c.headers['content-type']]),
    [['PATCH', '/apis/networking.istio.io/v1/namespaces/vm-ns/workloadgroups/reviews-vm', 'meshvm', 'true', 'application/apply-patch+yaml']],
  );
  const stored = k.objects.get('workloadgroups', 'vm-ns', 'reviews-vm')!;
  t.like(stored, {
    metadata: { labels: { 'app.kubernetes.io/managed-by': 'meshvm' } },
    spec: { metadata: { labels: { app: 'reviews' } }, template: { serviceAccount: 'vm-sa', ports: { http: 9080 } }, probe: { httpGet: { port: 9080 } } },
  });

  const before = k.calls.length;
  const second = await converge(host, [group(connect)]);
  t.deepEqual(changedRefs(second), []);
  t.deepEqual(
    k.calls.slice(before).map((c) => c.method),
    ['GET'],
    'the second converge only read',
  );
});

test("a changed port: plan shows the field from → to and writes nothing; converge makes one update; another manager's label stays", async (t) => {
  const { k, connect } = await cluster(t);
  const host = localHost({ root: await scratchRoot(t) });
  await converge(host, [group(connect)]);
  // someone else labels the object (as a controller or kubectl would)
  const stored = k.objects.get('workloadgroups', 'vm-ns', 'reviews-vm')!;
  k.objects.put({ ...stored, metadata: { ...stored.metadata, labels: { ...(stored.metadata['labels'] as object), team: 'payments' } } });
  t.deepEqual(changedRefs(await converge(host, [group(connect)], 'plan')), [], "someone else's label is not a change");

  const writesBefore = writes(k).length;
  const plan = await converge(host, [group(connect, { ports: { http: 9081 } })], 'plan');
  t.deepEqual(plan.resources[0]!.changes, ['set spec.template.ports.http to 9081 (was 9080)']);
  t.is(writes(k).length, writesBefore, 'plan made no API write');

  const applied = await converge(host, [group(connect, { ports: { http: 9081 } })]);
  t.deepEqual(applied.resources[0]!.changes, ['set spec.template.ports.http to 9081 (was 9080)']);
  t.is(writes(k).length, writesBefore + 1, 'one update');
  const after = k.objects.get('workloadgroups', 'vm-ns', 'reviews-vm')!;
  t.like(after, { metadata: { labels: { team: 'payments', 'app.kubernetes.io/managed-by': 'meshvm' } }, spec: { template: { ports: { http: 9081 } } } });
  t.deepEqual(changedRefs(await converge(host, [group(connect, { ports: { http: 9081 } })])), []);
});

test('a 403 names the verb, the resource, the namespace and the Role rule to add', async (t) => {
  const { k, connect } = await cluster(t, [{ verbs: ['get'], apiGroups: ['networking.istio.io'], resources: ['workloadgroups'], namespaces: ['vm-ns'] }]);
  const result = await converge(localHost({ root: await scratchRoot(t) }), [group(connect)]);
  t.true(result.failed);
  t.regex(
    result.resources[0]!.error ?? '',
    /applying WorkloadGroup vm-ns\/reviews-vm \(server-side apply, field manager meshvm\): the token \(system:serviceaccount:vm-ns:meshvm-bootstrap\) may not patch workloadgroups\.networking\.istio\.io "reviews-vm" in namespace vm-ns: grant it a Role in namespace vm-ns with \{apiGroups: \["networking\.istio\.io"\], resources: \["workloadgroups"\], resourceNames: \["reviews-vm"\], verbs: \["patch"\]\}/,
  );
  t.is(k.objects.get('workloadgroups', 'vm-ns', 'reviews-vm'), undefined);
});

test('ensure absent deletes the group meshvm made, and refuses one it did not make', async (t) => {
  const { k, connect } = await cluster(t);
  // a host per run, as each meshvm run has: a run reads an object once (the host's memo)
  const root = await scratchRoot(t);
  const host = () => localHost({ root });
  await converge(host(), [group(connect)]);
  const plan = await converge(host(), [group(connect, { ensure: 'absent' })], 'plan');
  t.deepEqual(plan.resources[0]!.changes, ['delete it (it carries app.kubernetes.io/managed-by=meshvm)']);
  t.truthy(k.objects.get('workloadgroups', 'vm-ns', 'reviews-vm'), 'plan deleted nothing');
  const removed = await converge(host(), [group(connect, { ensure: 'absent' })]);
  t.deepEqual(changedRefs(removed), ['workload_group[vm-ns/reviews-vm]']);
  t.is(k.objects.get('workloadgroups', 'vm-ns', 'reviews-vm'), undefined);
  t.deepEqual(changedRefs(await converge(host(), [group(connect, { ensure: 'absent' })])), [], 'gone stays gone');

  k.objects.put({ apiVersion: 'networking.istio.io/v1', kind: 'WorkloadGroup', metadata: { name: 'reviews-vm', namespace: 'vm-ns' }, spec: { template: {} } });
  const refused = await converge(host(), [group(connect, { ensure: 'absent' })]);
  t.true(refused.failed);
  t.regex(refused.resources[0]!.error ?? '', /does not carry app\.kubernetes\.io\/managed-by=meshvm: meshvm deletes only what it made/);
  t.truthy(k.objects.get('workloadgroups', 'vm-ns', 'reviews-vm'));
});
