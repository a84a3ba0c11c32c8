// interception: none (the Tetrate guide's VM without iptables) through the real CLI: the Sidecar object read back from the
// Kubernetes stand-in, the /etc/hosts block and sidecar.env byte for byte, converge twice → no-op, bad input refused before
// anything is written; the leftover-chain removal and the no-chain check on real iptables in a throwaway namespace.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { HAS_ISTIO_CHAINS, REMOVE_ISTIO_CHAINS } from '../../recipes/interception.ts';
import { hostsFileAddresses, interceptionChecks, noIptablesChecks } from '../../recipes/checks/interception.ts';
import { Service } from '../../resources/service.ts';
import { localHost } from '../../engine/host-local.ts';
import { MESH_RULES, startMeshLab, type MeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, seed, writeRunlist } from '../helpers/scratch.ts';

// Stand-ins (test/helpers/mesh-lab.ts): Vault (AppRole login, the scoped cluster token in KV v2) stands for the site's
// Vault; the Kubernetes stand-in (API v1.33, RBAC, Istio's CRDs incl. networking.istio.io/v1 Sidecar, server-side apply)
// stands for the cluster's API server.

const WORKLOAD = { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', ports: [9080], labels: { app: 'reviews', version: 'v1' } };
const MESH_HOSTS = ['ratings.bookinfo.svc.cluster.local', 'details.bookinfo.svc.cluster.local'];
/** The narrowest rule the README gives for the Sidecar object (its name known in advance). */
const SIDECAR_ROLE = {
  verbs: ['get', 'create', 'patch'],
  apiGroups: ['networking.istio.io'],
  resources: ['sidecars'],
  resourceNames: ['reviews-vm'],
  namespaces: ['vm-ns'],
};
const HOSTS = '127.0.0.1 localhost\n::1 localhost ip6-localhost\n';

interface Report {
  outcome: string;
  summary: { changed: number };
  resources: { ref: string; status: string; changes: string[]; error?: string }[];
}

const writes = (l: MeshLab) => l.kube.calls.filter((c) => c.method !== 'GET' && c.query.dryRun !== 'All').map((c) => `${c.method} ${c.path}`);

async function world(t: ExecutionContext, attributes: Record<string, unknown> = {}, rules: unknown[] = [SIDECAR_ROLE]) {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/hosts': HOSTS });
  const lab = await startMeshLab(t, root, { rules: [...MESH_RULES, ...(rules as typeof MESH_RULES)] });
  const file = await writeRunlist(
    lab.dir,
    'no-iptables.yaml',
    JSON.stringify({
      name: 'no-iptables-lab',
      attributes: { flow: 'istiod', workload: WORKLOAD, cluster: lab.cluster, interception: 'none', meshHosts: MESH_HOSTS, ...attributes },
      recipes: [{ recipe: 'istio-proxy-user' }, { recipe: 'sidecar', attributes: { package: { from: 'none' } } }, { recipe: 'interception' }],
    }),
  );
  const run = async (command: 'converge' | 'plan' | 'verify' | 'offboard', ...extra: string[]) => {
    const result = await meshvm([command, file, '--root', root, '--json', ...extra]);
    return { ...result, report: (result.stdout ? JSON.parse(result.stdout) : undefined) as Report };
  };
  return { root, lab, run };
}

test('interception none: plan writes nothing; converge applies the Sidecar object, the hosts block and ISTIO_CUSTOM_IP_TABLES; a second converge changes nothing', async (t) => {
  const { root, lab, run } = await world(t);
  const plan = await run('plan');
  t.is(plan.exitCode, 0, plan.stderr);
  t.is(plan.report.outcome, 'would-change');
  t.true(plan.report.resources.some((r) => r.ref === 'istio_sidecar[vm-ns/reviews-vm]' && r.status === 'would-change'));
  t.deepEqual(writes(lab), [], 'plan made no API write');
  t.is(await fs.readFile(path.join(root, 'etc/hosts'), 'utf8'), HOSTS, 'plan left /etc/hosts as it was');

  const first = await run('converge');
  t.is(first.exitCode, 0, first.stderr);
  t.deepEqual(writes(lab), ['PATCH /apis/networking.istio.io/v1/namespaces/vm-ns/sidecars/reviews-vm']);
  const sidecar = lab.kube.objects.get('sidecars', 'vm-ns', 'reviews-vm') as unknown as { metadata: { labels: Record<string, string> }; spec: unknown };
  t.deepEqual(sidecar.metadata.labels, { 'app.kubernetes.io/managed-by': 'meshvm' });
  t.deepEqual(sidecar.spec, {
    workloadSelector: { labels: { app: 'reviews', version: 'v1' } },
    ingress: [{ port: { number: 9080, protocol: 'TCP', name: 'port-9080' }, defaultEndpoint: '127.0.0.1:9080', captureMode: 'NONE' }],
    egress: [{ bind: '127.0.0.2', captureMode: 'NONE', hosts: ['*/ratings.bookinfo.svc.cluster.local', '*/details.bookinfo.svc.cluster.local'] }],
  });
  t.is(
    await fs.readFile(path.join(root, 'etc/hosts'), 'utf8'),
    `${HOSTS}# BEGIN meshvm mesh-services\n127.0.0.2 ratings.bookinfo.svc.cluster.local\n127.0.0.2 details.bookinfo.svc.cluster.local\n# END meshvm mesh-services\n`,
  );
  t.is(await fs.readFile(path.join(root, 'var/lib/istio/envoy/sidecar.env'), 'utf8'), 'ISTIO_CUSTOM_IP_TABLES=true\n');

  const second = await run('converge');
  t.is(second.exitCode, 0, second.stderr);
  t.is(second.report.summary.changed, 0, JSON.stringify(second.report.resources.filter((r) => r.status !== 'unchanged')));
  t.is(writes(lab).length, 1, 'the second converge made no API write');

  const verify = await run('verify');
  const checks = (JSON.parse(verify.stdout) as { checks: { check: string; ok: boolean; skipped?: boolean; detail: string }[] }).checks;
  t.deepEqual(
    checks.filter((c) => c.check === 'mesh hosts' || c.check === 'no iptables').map((c) => [c.check, c.ok, c.detail]),
    [
      ['no iptables', true, "ISTIO_CUSTOM_IP_TABLES=true in the sidecar's environment: istio-start.sh installs no chains"],
      ['no iptables', true, `chains not checked under --root ${root} (they live in the running kernel)`],
      ['mesh hosts', true, "ratings.bookinfo.svc.cluster.local is 127.0.0.2 (/etc/hosts), the proxy's egress listener"],
      ['mesh hosts', true, "details.bookinfo.svc.cluster.local is 127.0.0.2 (/etc/hosts), the proxy's egress listener"],
    ],
  );
});

test('interception none: ingress ports, protocol, local port and the egress address as given; a changed host list is one patch', async (t) => {
  const { lab, run } = await world(t, { ingress: [{ port: 9080, protocol: 'HTTP', localPort: 8080, name: 'http' }], egressAddress: '127.0.0.3' });
  t.is((await run('converge')).exitCode, 0);
  t.like(lab.kube.objects.get('sidecars', 'vm-ns', 'reviews-vm'), {
    spec: {
      ingress: [{ port: { number: 9080, protocol: 'HTTP', name: 'http' }, defaultEndpoint: '127.0.0.1:8080' }],
      egress: [{ bind: '127.0.0.3' }],
    },
  });
  const moved = await run('converge', '--set', 'meshHosts=[ratings.bookinfo.svc.cluster.local]');
  t.is(moved.exitCode, 0, moved.stderr);
  t.deepEqual(
    moved.report.resources.filter((r) => r.status === 'changed').map((r) => [r.ref, r.changes]),
    [
      [
        'istio_sidecar[vm-ns/reviews-vm]',
        [
          'set spec.egress to [{"bind":"127.0.0.3","captureMode":"NONE","hosts":["*/ratings.bookinfo.svc.cluster.local"]}] (was [{"bind":"127.0.0.3","captureMode":"NONE","hosts":["*/ratings.bookinfo.svc.cluster.local","*/details.bookinfo.svc.cluster.local"]}])',
        ],
      ],
      ['managed_block[/etc/hosts#mesh-services]', ['update the block\n    - 127.0.0.3 details.bookinfo.svc.cluster.local']],
    ],
  );
  t.is(writes(lab).length, 2, 'one patch for the changed host list');
});

for (const [title, attributes, message] of [
  ['a mesh host that is not a DNS name', { meshHosts: ['ratings_bookinfo'] }, /meshHosts\[0\]: expected a DNS name/],
  [
    '127.0.0.1 as the egress address',
    { egressAddress: '127.0.0.1' },
    /egressAddress: not an egress address: "127.0.0.1" \(a loopback IPv4 address other than 127\.0\.0\.1/,
  ],
  ['no mesh hosts', { meshHosts: [] }, /interception none needs meshHosts/],
  ['a workload without labels', { workload: { ...WORKLOAD, labels: {} } }, /selects it by at least one label/],
  ['an unknown protocol', { ingress: [{ port: 9080, protocol: 'FTP' }] }, /ingress\[0\]\.protocol/],
] as const) {
  test(`interception none refuses ${title}, naming it, before anything is written`, async (t) => {
    const { root, lab, run } = await world(t, attributes);
    const result = await run('converge');
    t.is(result.exitCode, 1);
    t.regex(result.stderr + result.stdout, message);
    t.deepEqual(writes(lab), [], 'no API write');
    t.is(await fs.readFile(path.join(root, 'etc/hosts'), 'utf8'), HOSTS, '/etc/hosts untouched');
    await t.throwsAsync(fs.access(path.join(root, 'var/lib/istio/envoy/sidecar.env')), undefined, 'sidecar.env not written');
  });
}

test('interception none without the Sidecar rule: plan already fails on the 403 (in preflight), naming the verb, resource and namespace', async (t) => {
  const { lab, run } = await world(t, {}, []);
  const result = await run('plan');
  t.is(result.exitCode, 1);
  t.regex(
    result.stdout,
    /preflight: istio_sidecar\[vm-ns\/reviews-vm\] \(declared at [^)]+\): reading Sidecar vm-ns\/reviews-vm: the token \(system:serviceaccount:vm-ns:meshvm-bootstrap\) may not get sidecars.networking.istio.io \\"reviews-vm\\" in namespace vm-ns/,
  );
  t.deepEqual(writes(lab), []);
  t.is(lab.kube.objects.get('sidecars', 'vm-ns', 'reviews-vm'), undefined);
});

/** A throwaway network namespace, removed after the test. */
async function netns(t: ExecutionContext): Promise<(argv: string[], input?: string) => Promise<{ exitCode: number; stdout: string; stderr: string }>> {
  const ns = `meshvm-noipt-${randomBytes(4).toString('hex')}`;
  await execa('ip', ['netns', 'add', ns]);
  t.teardown(() =>
    execa('ip', ['netns', 'del', ns]).then(
      () => undefined,
      () => undefined,
    ),
  );
  return async (argv, input) => {
    const r = await execa('ip', ['netns', 'exec', ns, ...argv], { reject: false, ...(input !== undefined && { input }) });
    return { exitCode: r.exitCode ?? 1, stdout: String(r.stdout), stderr: String(r.stderr) };
  };
}

/** What a sidecar run with iptables leaves (istio-iptables' REDIRECT rules, abridged), beside a rule that is not Istio's. */
const ISTIO_LEFTOVERS = [
  '*nat',
  ':ISTIO_INBOUND - [0:0]',
  ':ISTIO_IN_REDIRECT - [0:0]',
  ':ISTIO_OUTPUT - [0:0]',
  ':ISTIO_REDIRECT - [0:0]',
  ':SITE - [0:0]',
  '-A PREROUTING -p tcp -j ISTIO_INBOUND',
  '-A OUTPUT -j ISTIO_OUTPUT',
  '-A OUTPUT -p udp --dport 5000 -j SITE',
  '-A ISTIO_INBOUND -p tcp -m tcp --dport 9080 -j ISTIO_IN_REDIRECT',
  '-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006',
  '-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN',
  '-A ISTIO_OUTPUT -j ISTIO_REDIRECT',
  '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001',
  '-A SITE -j RETURN',
  'COMMIT',
  '*mangle',
  ':ISTIO_DIVERT - [0:0]',
  '-A PREROUTING -p tcp -j ISTIO_DIVERT',
  'COMMIT',
  '',
].join('\n');

test('leftover ISTIO chains (real iptables, throwaway namespace): removed in one restore per table, the site rule kept; then iptables-save has none and a second run has nothing to do', async (t) => {
  const inNs = await netns(t);
  t.is((await inNs(['iptables-restore'], ISTIO_LEFTOVERS)).exitCode, 0);
  t.is((await inNs(['sh', '-c', HAS_ISTIO_CHAINS])).exitCode, 0, 'the guard sees the chains');
  const removed = await inNs(['sh', '-c', REMOVE_ISTIO_CHAINS]);
  t.is(removed.exitCode, 0, removed.stderr);
  const saved = (await inNs(['iptables-save'])).stdout;
  t.notRegex(saved, /ISTIO/);
  t.regex(saved, /^-A OUTPUT -p udp -m udp --dport 5000 -j SITE$/m);
  t.regex(saved, /^-A SITE -j RETURN$/m);
  t.is((await inNs(['sh', '-c', HAS_ISTIO_CHAINS])).exitCode, 1, 'the guard now says there is nothing to do');
});

test('verify (interception none) on the live tables of a throwaway namespace: a leftover chain fails naming it; a name elsewhere in /etc/hosts fails', async (t) => {
  const inNs = await netns(t);
  t.is((await inNs(['iptables-restore'], ISTIO_LEFTOVERS)).exitCode, 0);
  const root = await scratchRoot(t);
  await seed(root, { '/var/lib/istio/envoy/sidecar.env': 'ISTIO_CUSTOM_IP_TABLES=true\n' });
  // the checks read the tables through the host door: run them in the namespace with a small script
  const script = path.join(root, 'checks.ts');
  await fs.writeFile(
    script,
    `import { noIptablesChecks } from ${JSON.stringify(path.resolve('recipes/checks/interception.ts'))};
import { localHost } from ${JSON.stringify(path.resolve('engine/host-local.ts'))};
const host = localHost();
const checks = await noIptablesChecks({ interception: 'none', meshHosts: [], egressAddress: '127.0.0.2' }, { host, declared: [], recipes: [], timeoutMs: 1000 });
console.log(JSON.stringify(checks));
`,
  );
  // the live host's sidecar.env is not ours to write: the environment check is made on the root below; here the chains
  const result = await inNs([process.execPath, script]);
  t.is(result.exitCode, 0, result.stderr);
  const chains = (JSON.parse(result.stdout) as { check: string; ok: boolean; detail: string }[]).filter((c) => c.detail.includes('chain'));
  t.deepEqual(
    chains.map((c) => [c.ok, c.detail]),
    [[false, 'ISTIO chains present: nat ISTIO_INBOUND, nat ISTIO_IN_REDIRECT, nat ISTIO_OUTPUT, nat ISTIO_REDIRECT, mangle ISTIO_DIVERT']],
  );

  const onRoot = await noIptablesChecks(
    { interception: 'none', meshHosts: ['ratings.bookinfo.svc.cluster.local'], egressAddress: '127.0.0.2' },
    { host: localHost({ root }), declared: [], recipes: [], timeoutMs: 1000 },
  );
  t.true(onRoot.find((c) => c.detail.startsWith('ISTIO_CUSTOM_IP_TABLES=true'))?.ok);
  const host = onRoot.find((c) => c.check === 'mesh hosts');
  t.false(host?.ok);
  t.is(host?.detail, 'ratings.bookinfo.svc.cluster.local is not found (/etc/hosts), not the egress address 127.0.0.2');
});

test('hostsFileAddresses: the addresses of a name in /etc/hosts, first line first, comments ignored', (t) => {
  const text = '127.0.0.1 localhost\n10.0.0.9 ratings.x # old\n# 127.0.0.5 ratings.x\n127.0.0.2 ratings.x other\n';
  t.deepEqual(hostsFileAddresses(text, 'ratings.x'), ['10.0.0.9', '127.0.0.2']);
  t.deepEqual(hostsFileAddresses(text, 'missing'), []);
});

test("sidecar-services' interception check (live): with ISTIO_CUSTOM_IP_TABLES=true it expects no chains and says why, instead of failing on them", async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/var/lib/istio/envoy/sidecar.env': 'ISTIO_CUSTOM_IP_TABLES=true\n' });
  // the root's files, seen as the running system's: the check reads sidecar.env before it would read any table
  const host = Object.create(localHost({ root }), { live: { value: true } }) as ReturnType<typeof localHost>;
  const declared = [Service({ name: 'istio', enabled: true, running: true })];
  const checks = await interceptionChecks({ flow: 'istiod' }, { host, declared, recipes: ['sidecar-services'], timeoutMs: 100 });
  t.deepEqual(checks, [
    {
      check: 'interception',
      ok: true,
      skipped: true,
      detail: 'ISTIO_CUSTOM_IP_TABLES=true: the sidecar installs no chains (interception: none; the interception recipe checks that mode)',
    },
  ]);
});

test('the shipped runlist istio-vm-no-iptables under a scratch root: converges, then a second converge changes nothing and makes no API write', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/hosts': HOSTS });
  // the units the istio-sidecar package installs, so that systemctl --root can enable istio
  await seed(root, { '/lib/systemd/system/istio.service': '[Service]\nExecStart=/usr/local/bin/istio-start.sh\n[Install]\nWantedBy=multi-user.target\n' });
  const lab = await startMeshLab(t, root, {
    rules: [
      ...MESH_RULES,
      SIDECAR_ROLE,
      {
        verbs: ['get', 'create', 'patch'],
        apiGroups: ['networking.istio.io'],
        resources: ['workloadgroups'],
        resourceNames: ['reviews-vm'],
        namespaces: ['vm-ns'],
      },
    ] as typeof MESH_RULES,
  });
  const node = await writeRunlist(lab.dir, 'node.yaml', JSON.stringify({ attributes: { workload: WORKLOAD, meshHosts: MESH_HOSTS, cluster: lab.cluster } }));
  const run = () =>
    meshvm(['converge', 'runlists/istio-vm-no-iptables.yaml', '--root', root, '--node', node, '--set', 'sidecar.package={from: none}', '--json']);
  const first = await run();
  t.is(first.exitCode, 0, first.stderr + first.stdout);
  t.like(lab.kube.objects.get('sidecars', 'vm-ns', 'reviews-vm'), { spec: { egress: [{ bind: '127.0.0.2' }] } });
  const clusterEnv = await fs.readFile(path.join(root, 'var/lib/istio/envoy/cluster.env'), 'utf8');
  t.notRegex(clusterEnv, /ISTIO_META_DNS_CAPTURE/, 'no DNS capture: it would be an iptables rule');
  const before = writes(lab).length;
  const second = await run();
  t.is(second.exitCode, 0, second.stderr);
  const report = JSON.parse(second.stdout) as Report;
  t.is(report.summary.changed, 0, JSON.stringify(report.resources.filter((r) => r.status !== 'unchanged')));
  t.is(writes(lab).length, before, 'no API write');
});

test('offboard (interception none): the Sidecar object deleted, the hosts block gone (/etc/hosts byte for byte as before), sidecar.env removed; a second offboard changes nothing', async (t) => {
  const { root, lab, run } = await world(t, {}, [{ ...SIDECAR_ROLE, verbs: [...SIDECAR_ROLE.verbs, 'delete'] }]);
  t.is((await run('converge')).exitCode, 0);
  t.truthy(lab.kube.objects.get('sidecars', 'vm-ns', 'reviews-vm'));
  const off = await run('offboard');
  t.is(off.exitCode, 0, off.stderr + off.stdout);
  t.deepEqual(
    off.report.resources.filter((r) => r.status === 'changed').map((r) => r.ref),
    ['istio_sidecar[vm-ns/reviews-vm]', 'managed_block[/etc/hosts#mesh-services]', 'file[/var/lib/istio/envoy/sidecar.env]'],
  );
  t.is(lab.kube.objects.get('sidecars', 'vm-ns', 'reviews-vm'), undefined, 'the stand-in no longer has the Sidecar');
  t.is(await fs.readFile(path.join(root, 'etc/hosts'), 'utf8'), HOSTS);
  await t.throwsAsync(fs.access(path.join(root, 'var/lib/istio/envoy/sidecar.env')));
  const again = await run('offboard');
  t.is(again.exitCode, 0, again.stderr);
  t.is(again.report.summary.changed, 0);
});

test('offboard (interception none): a Sidecar of the name that meshvm did not make is left, and said so', async (t) => {
  const { lab, run } = await world(t, {}, [{ ...SIDECAR_ROLE, verbs: [...SIDECAR_ROLE.verbs, 'delete'] }]);
  t.is((await run('converge')).exitCode, 0);
  // someone took the object over: kubectl apply of their own, without meshvm's label
  const theirs = lab.kube.objects.get('sidecars', 'vm-ns', 'reviews-vm')!;
  lab.kube.objects.put({ ...theirs, metadata: { ...theirs.metadata, labels: { team: 'mesh' } } });
  const off = await run('offboard');
  t.is(off.exitCode, 0, off.stderr + off.stdout);
  t.deepEqual((JSON.parse(off.stdout) as { notes: string[] }).notes, ['left Sidecar vm-ns/reviews-vm: it does not carry app.kubernetes.io/managed-by=meshvm']);
  t.truthy(lab.kube.objects.get('sidecars', 'vm-ns', 'reviews-vm'));
});
