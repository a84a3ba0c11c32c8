// meshvm offboard of the istiod flow on a scratch root, against the stand-ins of test/helpers/mesh-lab.ts (Vault, API v1,
// for the site's Vault; the Kubernetes stand-in, API v1.33 with RBAC and Istio's CRDs, for the cluster's API server):
// cluster.env, the mesh config, the root certificate, the istio-token and istiod's /etc/hosts line go, the root's tree is
// as before; the WorkloadEntry and the selector Service meshvm applied are deleted in the stand-in; an object of the
// same name meshvm did not make is left, and named.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { MESH_RULES, startMeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, seed, snapshot, writeRunlist, type Snapshot } from '../helpers/scratch.ts';

const WORKLOAD = { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', ports: [9080], labels: { app: 'reviews' } };
const ENTRY = 'reviews-vm-10.0.0.5';
/** The README's Role for registration manual, with delete (offboarding). */
const MANUAL_ROLE = [
  {
    verbs: ['get', 'create', 'patch', 'delete'],
    apiGroups: ['networking.istio.io'],
    resources: ['workloadentries'],
    resourceNames: [ENTRY],
    namespaces: ['vm-ns'],
  },
  { verbs: ['get', 'create', 'patch', 'delete'], apiGroups: [''], resources: ['services'], resourceNames: ['reviews-vm'], namespaces: ['vm-ns'] },
];

/** meshvm's report and backups, the shadow tools' backup copies: what may differ (logs). */
const LOGS = /^(var\/|var\/lib\/|var\/lib\/meshvm\/|var\/lib\/meshvm\/last-run\.json|var\/lib\/meshvm\/backup\/.*|etc\/(passwd|group|shadow|gshadow)-)$/;
const allowed = (snap: Snapshot) => Object.fromEntries(Object.entries(snap).filter(([p]) => !LOGS.test(p)));

interface Report {
  outcome: string;
  notes?: string[];
  summary: { changed: number };
  resources: { ref: string; status: string }[];
}

test('istiod flow, registration manual: offboard --purge deletes the WorkloadEntry and Service meshvm made, and the root is as it was', async (t) => {
  const root = await scratchRoot(t);
  const accounts = {
    'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\n',
    'etc/group': 'root:x:0:\n',
    'etc/shadow': 'root:*:19000::::::\n',
    'etc/gshadow': 'root:*::\n',
  };
  await seed(root, { ...accounts, 'etc/hosts': '127.0.0.1 localhost\n' });
  const l = await startMeshLab(t, root, { rules: [...MESH_RULES, ...MANUAL_ROLE] });
  const file = await writeRunlist(
    l.dir,
    'istiod.yaml',
    JSON.stringify({
      name: 'istiod-offboard',
      attributes: { flow: 'istiod', workload: WORKLOAD, cluster: l.cluster, registration: { mode: 'manual', address: '10.0.0.5', service: {} } },
      recipes: [
        { recipe: 'istio-proxy-user' },
        { recipe: 'cluster-env' },
        { recipe: 'sidecar', attributes: { package: { from: 'none' } } },
        { recipe: 'certs' },
        { recipe: 'registration' },
      ],
    }),
  );
  const before = await snapshot(root);
  const converged = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(converged.exitCode, 0, converged.stderr);
  t.truthy(l.kube.objects.get('workloadentries', 'vm-ns', ENTRY));
  t.truthy(l.kube.objects.get('services', 'vm-ns', 'reviews-vm'));
  t.regex(await fs.readFile(path.join(root, 'etc/hosts'), 'utf8'), /^10\.150\.0\.6 istiod\.istio-system\.svc$/m);
  t.regex(await fs.readFile(path.join(root, 'var/run/secrets/tokens/istio-token'), 'utf8'), /^ey/);

  const off = await meshvm(['offboard', '--purge', file, '--root', root, '--json']);
  t.is(off.exitCode, 0, off.stderr);
  const report = JSON.parse(off.stdout) as Report;
  t.deepEqual(report.notes, []);
  t.deepEqual(
    report.resources.filter((r) => r.status === 'changed').map((r) => r.ref),
    [
      'workload_entry[vm-ns/reviews-vm-10.0.0.5]',
      'kube_service[vm-ns/reviews-vm]',
      'managed_block[/etc/hosts#istiod]',
      'file[/etc/istio/config/mesh]',
      'file[/etc/certs/root-cert.pem]',
      'file[/var/run/secrets/tokens/istio-token]',
      'directory[/var/run/secrets/tokens]',
      'directory[/var/run/secrets]',
      'directory[/etc/istio/proxy]',
      'directory[/etc/istio/config]',
      'directory[/etc/certs]',
      'file[/var/lib/istio/envoy/sidecar.env]',
      'file[/var/lib/istio/envoy/cluster.env]',
      'directory[/var/lib/istio/envoy]',
      'user[istio-proxy]',
      'group[istio-proxy]',
      'directory[/var/lib/istio]',
    ],
  );
  t.is(l.kube.objects.get('workloadentries', 'vm-ns', ENTRY), undefined, 'the WorkloadEntry deleted');
  t.is(l.kube.objects.get('services', 'vm-ns', 'reviews-vm'), undefined, 'the Service deleted');
  // what the converge made and the offboard left: the parents made on the way for paths that a real machine has as links
  // (/etc/istio -> /var/lib/istio, the package's; /var/run -> /run, the system's), which no recipe declares
  const left = Object.keys(allowed(await snapshot(root))).filter((p) => !(p in before));
  t.deepEqual(left, ['etc/istio/', 'var/run/']);
  t.is(await fs.readFile(path.join(root, 'etc/hosts'), 'utf8'), '127.0.0.1 localhost\n');

  // an entry of the same name that someone else made: left, and said so
  l.kube.objects.put({
    apiVersion: 'networking.istio.io/v1',
    kind: 'WorkloadEntry',
    metadata: { name: ENTRY, namespace: 'vm-ns' },
    spec: { address: '10.0.0.5' },
  });
  const again = await meshvm(['offboard', '--purge', file, '--root', root, '--json']);
  t.is(again.exitCode, 0, again.stderr);
  const second = JSON.parse(again.stdout) as Report;
  t.is(second.summary.changed, 0);
  t.deepEqual(second.notes, [`left WorkloadEntry vm-ns/${ENTRY}: it does not carry app.kubernetes.io/managed-by=meshvm`]);
  t.truthy(l.kube.objects.get('workloadentries', 'vm-ns', ENTRY));
});
