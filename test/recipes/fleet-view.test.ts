// The fleet seen from Kubernetes through the real CLI: a converge's status on the VM's WorkloadEntry (labels, annotations,
// the MeshvmConverged condition beside istiod's Healthy one) or on its Lease; 0 writes on a steady no-op, a bounded heartbeat.
import fs from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { HEARTBEAT_SECONDS } from '../../clients/fleet-view.ts';
import type { KubeObject } from '../stand-ins/kubernetes.ts';
import { FLEET_VIEW_RULES, MESH_RULES, startMeshLab, type MeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, writeRunlist, type CliResult } from '../helpers/scratch.ts';

// Stand-ins (test/helpers/mesh-lab.ts): Vault (HTTP API v1, AppRole login, the scoped cluster token in KV v2) stands for the
// site's Vault; the Kubernetes stand-in (API v1.33, RBAC, Istio's CRDs with their status subresource, merge patch and
// server-side apply, coordination.k8s.io/v1 Lease) stands for the cluster's API server.

const WORKLOAD = { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', ports: [9080], labels: { app: 'reviews' } };
const ENTRY = 'reviews-vm-10.0.0.5';
const MANAGER = 'meshvm-fleet-view';

/** The README's Role for registration manual with the fleet view (names known in advance: resourceNames). */
const MANUAL_RULES = [
  { verbs: ['get', 'create', 'patch'], apiGroups: ['networking.istio.io'], resources: ['workloadentries'], resourceNames: [ENTRY], namespaces: ['vm-ns'] },
  {
    verbs: ['get', 'update', 'patch'],
    apiGroups: ['networking.istio.io'],
    resources: ['workloadentries/status'],
    resourceNames: [ENTRY],
    namespaces: ['vm-ns'],
  },
];
const LEASE_RULES = [
  { verbs: ['get', 'create', 'patch', 'delete'], apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['vm-7'], namespaces: ['vm-ns'] },
];

interface Report {
  outcome: string;
  summary: { changed: number };
  apiCalls: Record<string, number>;
}
interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
}
interface Entry {
  metadata: { labels: Record<string, string>; annotations: Record<string, string> };
  spec: Record<string, unknown>;
  status?: { conditions?: Condition[] };
}

function report(t: ExecutionContext, result: CliResult, exitCode = 0): Report {
  t.is(result.exitCode, exitCode, `exit code; stderr:\n${result.stderr}\nstdout:\n${result.stdout}`);
  return JSON.parse(result.stdout) as Report;
}

async function lab(t: ExecutionContext, rules: unknown[]) {
  const root = await scratchRoot(t);
  // what a mesh VM needs without the fleet view's rules: each test gives the narrow ones it means
  const base = MESH_RULES.filter((r) => !(FLEET_VIEW_RULES as unknown[]).includes(r));
  const l = await startMeshLab(t, root, { rules: [...base, ...(rules as typeof MESH_RULES)] });
  return { root, lab: l };
}

const runlist = (l: MeshLab, registration: unknown, extra: Record<string, unknown>[] = [], flow = 'istiod') =>
  JSON.stringify({
    name: 'fleet-lab',
    attributes: { flow, workload: WORKLOAD, cluster: l.cluster, registration },
    recipes: [{ recipe: 'registration' }, ...extra],
  });

/** The fleet view's own requests (its field manager), as "METHOD path". */
const published = (l: MeshLab) => l.kube.calls.filter((c) => c.query.fieldManager === MANAGER).map((c) => `${c.method} ${c.path}`);
const entry = (l: MeshLab) => l.kube.objects.get('workloadentries', 'vm-ns', ENTRY) as unknown as Entry;
const condition = (e: Entry, type: string) => e.status?.conditions?.find((c) => c.type === type);
const ENTRY_PATH = `/apis/networking.istio.io/v1/namespaces/vm-ns/workloadentries/${ENTRY}`;

/** Moves the last publish back in time, as a clock moved forward would. */
async function agePublished(root: string, seconds: number): Promise<void> {
  const file = path.join(root, 'var/lib/meshvm/fleet-view.json');
  const data = JSON.parse(await fs.readFile(file, 'utf8')) as { at: string };
  data.at = new Date(Date.parse(data.at) - seconds * 1000).toISOString();
  await fs.writeFile(file, JSON.stringify(data));
}

test('manual: labels, annotations and the MeshvmConverged condition appear; a steady no-op makes 0 writes and 0 extra reads; istiod Healthy survives', async (t) => {
  const { root, lab: l } = await lab(t, MANUAL_RULES);
  const file = await writeRunlist(l.dir, 'manual.yaml', runlist(l, { mode: 'manual', address: '10.0.0.5' }));

  report(t, await meshvm(['plan', file, '--root', root, '--json']));
  t.deepEqual(published(l), [], 'plan publishes nothing');

  const first = report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(first.outcome, 'changed');
  t.deepEqual(published(l), [`PUT ${ENTRY_PATH}/status`, `PATCH ${ENTRY_PATH}`]);
  let e = entry(l);
  t.like(e.metadata.labels, { 'meshvm.io/outcome': 'converged', 'meshvm.io/changed': '1', 'meshvm.io/drift': '0', 'app.kubernetes.io/managed-by': 'meshvm' });
  t.regex(e.metadata.labels['meshvm.io/version']!, /^\d+\.\d+\.\d+/);
  t.like(e.metadata.annotations, { 'meshvm.io/runlist': 'fleet-lab', 'meshvm.io/resources': '1 total, 1 changed, 0 failed, 0 skipped' });
  t.is(e.metadata.annotations['meshvm.io/last-change'], e.metadata.annotations['meshvm.io/last-run']);
  t.false(Number.isNaN(Date.parse(e.metadata.annotations['meshvm.io/last-run']!)));
  t.like(condition(e, 'MeshvmConverged'), { status: 'True', reason: 'Converged' });
  t.regex(
    condition(e, 'MeshvmConverged')!.message!,
    /converged runlist fleet-lab; the last change, at .*: 1 total, 1 changed, 0 failed, 0 skipped, 0 of them drift$/,
  );
  const transition = condition(e, 'MeshvmConverged')!.lastTransitionTime;

  // istiod reports the VM healthy (its own condition, through the status subresource)
  l.kube.objects.setWorkloadEntryHealth('vm-ns', ENTRY, true);
  const callsBefore = l.kube.calls.length;
  const second = report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(second.outcome, 'unchanged');
  t.is(published(l).length, 2, 'steady no-op: 0 writes');
  t.deepEqual(
    l.kube.calls.slice(callsBefore).map((c) => `${c.method} ${c.path}`),
    [`GET ${ENTRY_PATH}`],
    "the registration's own read only: the fleet view compared with what it last published, on the VM",
  );
  t.like(entry(l).metadata.labels, { 'meshvm.io/outcome': 'converged', 'meshvm.io/changed': '1' }, 'the last change stays in view');

  // the runlist gives the entry a label: a change, published; istiod's condition kept beside meshvm's
  const relabelled = await writeRunlist(l.dir, 'relabelled.yaml', runlist(l, { mode: 'manual', address: '10.0.0.5', labels: { tier: 'back' } }));
  report(t, await meshvm(['converge', relabelled, '--root', root, '--json']));
  t.deepEqual(published(l).slice(2), [`PUT ${ENTRY_PATH}/status`, `PATCH ${ENTRY_PATH}`]);
  e = entry(l);
  t.like(condition(e, 'Healthy'), { status: 'True' }, "istiod's condition is kept");
  t.like(condition(e, 'MeshvmConverged'), { status: 'True', reason: 'Converged', lastTransitionTime: transition });
  t.deepEqual(e.status?.conditions?.map((c) => c.type).sort(), ['Healthy', 'MeshvmConverged']);
  report(t, await meshvm(['converge', relabelled, '--root', root, '--json']));
  t.is(published(l).length, 4, 'steady again: 0 writes');
});

test('the heartbeat: the last-run time is refreshed once the last publish is older than the heartbeat, not before', async (t) => {
  const { root, lab: l } = await lab(t, MANUAL_RULES);
  const file = await writeRunlist(l.dir, 'manual.yaml', runlist(l, { mode: 'manual', address: '10.0.0.5' }));
  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  const steady = published(l).length;

  await agePublished(root, HEARTBEAT_SECONDS - 300);
  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(published(l).length, steady, 'within the heartbeat: no write');

  // the clock moves past the heartbeat: the last publish, and the last-run time the entry carries, are that old
  const e = entry(l);
  const old = new Date(Date.now() - (HEARTBEAT_SECONDS + 60) * 1000).toISOString();
  l.kube.objects.put({ ...e, metadata: { ...e.metadata, annotations: { ...e.metadata.annotations, 'meshvm.io/last-run': old } } } as unknown as KubeObject);
  await agePublished(root, 360);
  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.deepEqual(published(l).slice(steady), [`PATCH ${ENTRY_PATH}`], 'the heartbeat: one merge patch, the condition untouched');
  t.true(Date.parse(entry(l).metadata.annotations['meshvm.io/last-run']!) > Date.parse(old));

  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(published(l).length, steady + 1, 'then quiet again');
});

test('drift and a failure change the view: the drift label and the resources found; the condition False with its reason', async (t) => {
  const { root, lab: l } = await lab(t, MANUAL_RULES);
  const blocked = '/etc/fleet-blocked.conf';
  const files = (content: string) => [{ recipe: 'files', attributes: { files: [{ path: blocked, content }] } }];
  const file = await writeRunlist(l.dir, 'manual.yaml', runlist(l, { mode: 'manual', address: '10.0.0.5' }, files('a\n')));
  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  const steady = published(l).length;

  // someone edits the file meshvm manages: the runlist did not change, so the correction is drift
  await fs.writeFile(path.join(root, blocked), 'edited\n');
  const drifted = report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(drifted.outcome, 'changed');
  let e = entry(l);
  t.like(e.metadata.labels, { 'meshvm.io/outcome': 'converged', 'meshvm.io/changed': '1', 'meshvm.io/drift': '1' });
  t.is(e.metadata.annotations['meshvm.io/drift-found'], `file[${blocked}]`);
  t.regex(condition(e, 'MeshvmConverged')!.message!, /2 total, 1 changed, 0 failed, 0 skipped, 1 of them drift$/);
  t.true(published(l).length > steady);

  // the next no-op keeps the last change in view: 0 writes
  const after = published(l).length;
  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(published(l).length, after);
  e = entry(l);
  t.is(e.metadata.labels['meshvm.io/drift'], '1');
  const transition = condition(e, 'MeshvmConverged')!.lastTransitionTime;

  // the file's path becomes a directory: the converge fails there, and says so on the entry
  await fs.rm(path.join(root, blocked));
  await fs.mkdir(path.join(root, blocked));
  report(t, await meshvm(['converge', file, '--root', root, '--json']), 1);
  e = entry(l);
  t.is(e.metadata.labels['meshvm.io/outcome'], 'failed');
  const failed = condition(e, 'MeshvmConverged')!;
  t.like(failed, { status: 'False', reason: 'Failed' });
  t.regex(failed.message!, /1 of 2 resources failed/);
  t.not(failed.lastTransitionTime, transition, 'the status flipped: a new transition time');
});

test('registration none: a Lease named after the VM carries the view; a no-op writes nothing; offboarding deletes it', async (t) => {
  const { root, lab: l } = await lab(t, LEASE_RULES);
  await fs.mkdir(path.join(root, 'etc'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/hostname'), 'VM-7\n');
  const file = await writeRunlist(l.dir, 'none.yaml', runlist(l, 'none'));
  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  const lease = () =>
    l.kube.objects.get('leases', 'vm-ns', 'vm-7') as unknown as
      | (Entry & { spec: { holderIdentity: string; leaseDurationSeconds: number; renewTime: string } })
      | undefined;
  t.like(lease()?.metadata.labels, { 'meshvm.io/outcome': 'converged', 'app.kubernetes.io/managed-by': 'meshvm' });
  t.like(lease()?.spec, { holderIdentity: 'meshvm', leaseDurationSeconds: 3600 });
  t.regex(lease()!.spec.renewTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  t.deepEqual(published(l), ['PATCH /apis/coordination.k8s.io/v1/namespaces/vm-ns/leases/vm-7'], 'created by server-side apply, by name');

  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(published(l).length, 1, 'no-op: 0 writes');

  const plan = report(t, await meshvm(['plan', '--offboard', file, '--root', root, '--json'])) as unknown as { resources: { ref: string }[] };
  t.deepEqual(
    plan.resources.map((r) => r.ref),
    ['kube_lease[vm-ns/vm-7]'],
  );
  report(t, await meshvm(['offboard', file, '--root', root, '--json']));
  t.is(lease(), undefined);
  await t.throwsAsync(fs.stat(path.join(root, 'var/lib/meshvm/fleet-view.json')), { code: 'ENOENT' });
});

test('a publish the cluster refuses is a warning: the converge succeeds, and the next run tries again', async (t) => {
  const { root, lab: l } = await lab(t, [{ ...MANUAL_RULES[0]! }]); // no rule for workloadentries/status
  const file = await writeRunlist(l.dir, 'manual.yaml', runlist(l, { mode: 'manual', address: '10.0.0.5' }));
  const result = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(report(t, result).outcome, 'changed');
  t.regex(result.stderr, /registration: could not publish the run's status: .*workloadentries\/status/);
  const refused = () => l.kube.calls.filter((c) => c.path.endsWith('/status')).length;
  t.is(refused(), 1);
  // the next run does not ask again before the heartbeat: a Role without the verbs costs one refusal per heartbeat
  const again = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(report(t, again).outcome, 'unchanged');
  t.regex(again.stderr, /the fleet view is not published \(refused at /);
  t.is(refused(), 1);
  await agePublished(root, HEARTBEAT_SECONDS);
  const logins = l.vault.calls.filter((c) => c.path.endsWith('/login')).length;
  t.regex((await meshvm(['converge', file, '--root', root, '--json'])).stderr, /could not publish/);
  // the access kept between runs (keepAccess) is refused: it is forgotten and read again once (its rights may have
  // changed), and the fresh token is refused too
  t.is(refused(), 3);
  t.is(l.vault.calls.filter((c) => c.path.endsWith('/login')).length, logins + 1);
});

test('classic flow (no registration object): the certs recipe keeps the Lease, with the certificate expiry; offboarding deletes it', async (t) => {
  const { root, lab: l } = await lab(t, LEASE_RULES);
  await fs.mkdir(path.join(root, 'etc'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/hostname'), 'vm-7\n');
  const classic = JSON.stringify({
    name: 'classic-lab',
    attributes: { flow: 'classic', namespace: 'vm-ns', serviceAccount: 'vm-sa', cluster: l.cluster },
    recipes: [{ recipe: 'istio-proxy-user' }, { recipe: 'certs' }],
  });
  const file = await writeRunlist(l.dir, 'classic.yaml', classic);
  const first = report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(first.outcome, 'changed');
  const lease = l.kube.objects.get('leases', 'vm-ns', 'vm-7') as unknown as Entry | undefined;
  t.like(lease?.metadata.labels, { 'meshvm.io/outcome': 'converged', 'app.kubernetes.io/managed-by': 'meshvm' });
  t.like(lease?.metadata.annotations, { 'meshvm.io/runlist': 'classic-lab' });
  t.false(Number.isNaN(Date.parse(lease?.metadata.annotations['meshvm.io/certificate-expiry'] ?? '')), 'the workload certificate expiry');
  t.deepEqual(published(l), ['PATCH /apis/coordination.k8s.io/v1/namespaces/vm-ns/leases/vm-7']);

  report(t, await meshvm(['converge', file, '--root', root, '--json']));
  t.is(published(l).length, 1, 'no-op: 0 writes');
  report(t, await meshvm(['offboard', file, '--root', root, '--json']));
  t.is(l.kube.objects.get('leases', 'vm-ns', 'vm-7'), undefined);
});
