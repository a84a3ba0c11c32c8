// dns.mode: istio (the sidecar's DNS proxy: nothing of dnsmasq declared, the resolver left as it is) and dnsmasq (forwarding
// only to an address the VM reaches: a ClusterIP refused naming the fix). Through the real CLI into scratch roots.
// Stand-ins (test/helpers/mesh-lab.ts): the Kubernetes stand-in (API v1.33, RBAC, ServiceCIDR kubernetes = 10.63.240.0/20,
// an Istio 1.24.2 install) stands for the cluster's API server, the Vault stand-in for the site's Vault holding the scoped
// cluster token.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { localHost } from '../../engine/host-local.ts';
import { cidrContains, dns, dnsAttributes, dnsMode } from '../../recipes/dns.ts';
import { MESH_RULES, startMeshLab, type MeshLab } from '../helpers/mesh-lab.ts';
import { machineSnapshot, meshvm, scratchRoot, seed, writeRunlist } from '../helpers/scratch.ts';

const WORKLOAD = { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', ports: [9080] };
const RESOLV = 'nameserver 10.0.2.3\nsearch example.internal\n';

/** What a mesh VM's scoped token may read besides the lab's default: the Istio install (mesh config, injector, istiod). */
const RULES = [
  ...MESH_RULES,
  { verbs: ['get'], resources: ['configmaps'], namespaces: ['istio-system'] },
  { verbs: ['get'], resources: ['namespaces'] },
  { verbs: ['get'], apiGroups: ['networking.istio.io'], resources: ['workloadgroups'], namespaces: ['vm-ns'] },
];

async function istioLab(t: ExecutionContext, root: string): Promise<MeshLab> {
  const l = await startMeshLab(t, root, { rules: RULES });
  l.kube.objects.installIstio();
  return l;
}

interface Report {
  outcome: string;
  resources: { ref: string; status: string }[];
  notifications: { ref: string; status: string }[];
}

/** An istiod VM's runlist (the sidecar installed some other way: a scratch root has no apt), dns given `dns` as attributes. */
function istiodRunlist(lab: MeshLab, dns: Record<string, unknown> = {}) {
  return JSON.stringify({
    name: 'dns-mode',
    // registration has its own tests (test/recipes/registration.test.ts)
    attributes: { flow: 'istiod', workload: WORKLOAD, registration: 'none', cluster: lab.cluster },
    recipes: [
      { recipe: 'istio-proxy-user' },
      { recipe: 'dns', attributes: dns },
      { recipe: 'cluster-env' },
      { recipe: 'sidecar', attributes: { package: { from: 'none' } } },
      { recipe: 'certs' },
    ],
  });
}

/** The dns recipe alone, classic flow by default (dnsmasq mode), no dnsmasq service or resolver in a scratch root. */
function dnsRunlist(lab: MeshLab, dns: Record<string, unknown>, flow = 'classic') {
  return JSON.stringify({
    name: 'dns-only',
    attributes: { flow, cluster: lab.cluster },
    recipes: [
      { recipe: 'dns', attributes: { controlPlane: [{ name: 'istiod', address: '10.150.0.6' }], dnsmasq: { manage: false }, resolver: 'none', ...dns } },
    ],
  });
}

async function converge(t: ExecutionContext, file: string, root: string): Promise<Report> {
  const result = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(result.exitCode, 0, result.stderr);
  return JSON.parse(result.stdout) as Report;
}

/** A refused run: exit 1, the message, and nothing under the root changed. */
async function refused(t: ExecutionContext, file: string, root: string, expect: RegExp[]): Promise<string> {
  const before = await machineSnapshot(root);
  const result = await meshvm(['converge', file, '--root', root]);
  t.is(result.exitCode, 1, result.stdout);
  for (const e of expect) t.regex(result.stderr, e);
  t.deepEqual(await machineSnapshot(root), before, 'nothing written');
  return result.stderr;
}

const exists = (p: string) =>
  fs.stat(p).then(
    () => true,
    () => false,
  );

test('cidrContains: an address inside or outside a service range, either family', (t) => {
  t.true(cidrContains('10.63.240.0/20', '10.63.255.254'));
  t.false(cidrContains('10.63.240.0/20', '10.63.224.1'));
  t.true(cidrContains('fd00:10:96::/112', 'fd00:10:96::a'));
  t.false(cidrContains('fd00:10:96::/112', '10.63.240.1'), 'another family is never inside');
  t.false(cidrContains('not-a-cidr', '10.0.0.1'));
});

test("dnsMode: istio for the istiod flow, dnsmasq for the classic one, unless given; mode istio's verify has no dnsmasq to check", async (t) => {
  t.is(dnsMode({ flow: 'istiod' }), 'istio');
  t.is(dnsMode({ flow: 'classic' }), 'dnsmasq');
  t.is(dnsMode({ flow: 'istiod', mode: 'dnsmasq' }), 'dnsmasq');
  const root = await scratchRoot(t);
  const checks = await dns.checks!(dnsAttributes.parse({ flow: 'istiod' }), { host: localHost({ root }), declared: [], recipes: ['dns'], timeoutMs: 1000 });
  t.deepEqual(checks, [], "the sidecar's DNS capture is checked with its interception rules, not here");
});

test('dns.mode istio, the istiod default: no dnsmasq, no drop-in, no resolver change; the resolver file and the cluster DNS untouched', async (t) => {
  const root = await scratchRoot(t);
  const lab = await istioLab(t, root);
  await seed(root, { '/etc/resolv.conf': RESOLV });
  const file = await writeRunlist(lab.dir, 'istiod.yaml', istiodRunlist(lab));

  const plan = await meshvm(['plan', file, '--root', root, '--json']);
  t.is(plan.exitCode, 0, plan.stderr);
  const first = await converge(t, file, root);
  const dnsRefs = first.resources.map((r) => r.ref).filter((ref) => /dnsmasq|resolv|kubedns|resolved|dhclient/.test(ref));
  t.deepEqual(dnsRefs, [], 'nothing DNS-related declared');
  t.true(first.resources.length > 0, 'the rest of the runlist converged');
  t.is(await fs.readFile(path.join(root, 'etc/resolv.conf'), 'utf8'), RESOLV, 'the resolver still points upstream');
  for (const p of ['etc/dnsmasq.d', 'etc/systemd/resolved.conf.d', 'etc/dhcp', 'etc/meshvm/upstream-resolv.conf']) t.false(await exists(path.join(root, p)), p);
  t.deepEqual(
    lab.kube.calls.filter((c) => c.path.includes('/namespaces/kube-system/')).map((c) => `${c.method} ${c.path}`),
    [],
    'kube-dns is not asked for',
  );
  const second = await converge(t, file, root);
  t.is(second.outcome, 'unchanged');
});

test('dns.mode istio refuses the attributes only dnsmasq mode uses, naming them and the fix; nothing written', async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root);
  const file = await writeRunlist(lab.dir, 'istiod.yaml', istiodRunlist(lab, { search: ['mesh.internal.example.com'], clusterDns: '10.150.0.53' }));
  await refused(t, file, root, [
    /recipe dns\): dns\.mode is istio .* so dns\.clusterDns and dns\.search would do nothing: remove them, or set dns\.mode: dnsmasq/,
  ]);
});

test('dns.mode dnsmasq (the classic default): a kube-dns ClusterIP is refused, naming the Service and the fix; allowed when the VM routes to ClusterIPs', async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root);
  // the lab's kube-dns is kube-system/kube-dns, type ClusterIP, 10.150.0.7
  const file = await writeRunlist(lab.dir, 'dns.yaml', dnsRunlist(lab, {}));
  await refused(t, file, root, [
    /recipe dns\): Service kube-system\/kube-dns is of type ClusterIP: its address 10\.150\.0\.7 is a ClusterIP, which a VM outside the cluster usually cannot reach/,
    /internal LoadBalancer \(as the 0\.8 guide's kube-system\/dns-ilb\) and set dns\.dnsService to it, or set dns\.clusterDns/,
    /set dns\.routesToClusterIps: true/,
  ]);
  // the same for an istiod VM that chose dnsmasq
  await refused(t, await writeRunlist(lab.dir, 'dns-istiod.yaml', dnsRunlist(lab, { mode: 'dnsmasq' }, 'istiod')), root, [
    /Service kube-system\/kube-dns is of type ClusterIP/,
  ]);

  const allowed = await writeRunlist(lab.dir, 'routes.yaml', dnsRunlist(lab, { routesToClusterIps: true }));
  const report = await converge(t, allowed, root);
  t.deepEqual(
    report.resources.filter((r) => r.status === 'changed').map((r) => r.ref),
    ['directory[/etc/dnsmasq.d]', 'file[/etc/dnsmasq.d/kubedns]'],
  );
  t.is(
    await fs.readFile(path.join(root, 'etc/dnsmasq.d/kubedns'), 'utf8'),
    'server=/svc.cluster.local/10.150.0.7\naddress=/istiod/10.150.0.6\naddress=/istiod.istio-system/10.150.0.6\n',
  );
});

test("dns.mode dnsmasq: an internal LoadBalancer (the 0.8 guide's dns-ilb) is used as is; a given clusterDns is checked against the service range", async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root);
  lab.kube.objects.setService(
    'kube-system',
    'dns-ilb',
    { type: 'LoadBalancer', ports: [{ port: 53, protocol: 'UDP' }] },
    { loadBalancer: { ingress: [{ ip: '10.150.0.53' }] } },
  );
  const ilb = await writeRunlist(lab.dir, 'ilb.yaml', dnsRunlist(lab, { dnsService: 'kube-system/dns-ilb' }));
  await converge(t, ilb, root);
  t.regex(await fs.readFile(path.join(root, 'etc/dnsmasq.d/kubedns'), 'utf8'), /^server=\/svc\.cluster\.local\/10\.150\.0\.53$/m);

  // an address given by hand: inside the cluster's service range (the ServiceCIDR API says 10.63.240.0/20) it is a ClusterIP
  const inside = await writeRunlist(lab.dir, 'inside.yaml', dnsRunlist(lab, { clusterDns: '10.63.240.10' }));
  await refused(t, inside, root, [
    /dns\.clusterDns 10\.63\.240\.10 is a ClusterIP \(inside the cluster's service range 10\.63\.240\.0\/20\)/,
    /dns\.routesToClusterIps: true/,
  ]);
  t.true(
    lab.kube.calls.some((c) => c.action === 'list servicecidrs' && c.status === 200),
    'the range was read from the cluster',
  );
  const outside = await writeRunlist(lab.dir, 'outside.yaml', dnsRunlist(lab, { clusterDns: '10.150.0.54' }));
  await converge(t, outside, root);
  t.regex(await fs.readFile(path.join(root, 'etc/dnsmasq.d/kubedns'), 'utf8'), /^server=\/svc\.cluster\.local\/10\.150\.0\.54$/m);
});

test('dns.mode dnsmasq: what the cluster says of the DNS Service is checked before it reaches a dnsmasq line (a hostname, a forged address)', async (t) => {
  const root = await scratchRoot(t);
  const lab = await startMeshLab(t, root);
  const ingress = (entry: Record<string, string>) =>
    lab.kube.objects.setService('kube-system', 'dns-ilb', { type: 'LoadBalancer', ports: [{ port: 53 }] }, { loadBalancer: { ingress: [entry] } });
  const file = await writeRunlist(lab.dir, 'ilb.yaml', dnsRunlist(lab, { dnsService: 'kube-system/dns-ilb' }));
  ingress({ hostname: 'dns-1234.elb.us-east-1.amazonaws.com' });
  await refused(t, file, root, [
    /Service kube-system\/dns-ilb answers at "dns-1234\.elb\.us-east-1\.amazonaws\.com", a hostname, not an IP address; .*set dns\.clusterDns/,
  ]);
  ingress({ ip: '10.150.0.53\naddress=/istiod/6.6.6.6' });
  await refused(t, file, root, [
    /Service kube-system\/dns-ilb: status\.loadBalancer\.ingress\[0\]\.ip: "10\.150\.0\.53\\naddress=\/istiod\/6\.6\.6\.6" is not an IP address/,
  ]);
});
