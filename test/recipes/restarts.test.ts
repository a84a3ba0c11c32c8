// Restarts that are needed, and only those: the istio-token's re-mint restarts nothing, a changed cluster.env, sidecar.env or
// mesh config restarts istio once, a new sidecar package restarts it once; a sidecar istiod cannot serve is refused before
// anything changes, and so are inbound ports sidecar.env and cluster.env would disagree on. Through the real CLI into
// scratch roots, where a restart is the notification service[istio.service] delivered (systemd restarts it on a live
// machine: test/e2e/boot.test.ts counts the sidecar's real starts).
// Stand-ins (test/helpers/mesh-lab.ts): the Kubernetes stand-in (API v1.33, RBAC, TokenRequest, an Istio 1.24.2 install:
// mesh and injector ConfigMaps, the istiod Deployment) stands for the cluster's API server; the Vault stand-in for the
// site's Vault holding the scoped cluster token.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { localHost } from '../../engine/host-local.ts';
import { flatten } from '../../engine/recipe.ts';
import type { CommandResult, HostReader } from '../../engine/host.ts';
import { minorVersion, sidecar, sidecarAttributes, sidecarInboundPorts, versionSkewProblem, wantedSidecarVersion } from '../../recipes/sidecar.ts';
import { parseListJobs } from '../../recipes/sidecar-services.ts';
import { MESH_RULES, startMeshLab, type MeshLab } from '../helpers/mesh-lab.ts';
import { meshvm, scratchRoot, snapshot, writeRunlist } from '../helpers/scratch.ts';

const WORKLOAD = { name: 'reviews-vm', namespace: 'vm-ns', serviceAccount: 'vm-sa', ports: [9080] };
const ISTIO = 'service[istio.service]';

/** What a mesh VM's scoped token may read besides the lab's default: the Istio install (mesh config, injector, istiod). */
const RULES = [
  ...MESH_RULES,
  { verbs: ['get'], resources: ['configmaps'], namespaces: ['istio-system'] },
  { verbs: ['get'], apiGroups: ['apps'], resources: ['deployments'], namespaces: ['istio-system'] },
  { verbs: ['get'], resources: ['namespaces'] },
  { verbs: ['get'], apiGroups: ['networking.istio.io'], resources: ['workloadgroups'], namespaces: ['vm-ns'] },
];

interface Report {
  outcome: string;
  resources: { ref: string; status: string }[];
  notifications: { ref: string; status: string; because: string[] }[];
}

async function lab(t: ExecutionContext, root: string, istiodVersion = '1.24.2'): Promise<MeshLab> {
  const l = await startMeshLab(t, root, { rules: RULES });
  l.kube.objects.installIstio({ version: istiodVersion });
  return l;
}

/** The units the istio-sidecar package installs, so that systemctl --root can enable istio in a scratch root. */
async function fakeSidecarUnit(root: string) {
  await fs.mkdir(path.join(root, 'lib/systemd/system'), { recursive: true });
  await fs.writeFile(
    path.join(root, 'lib/systemd/system/istio.service'),
    '[Service]\nExecStart=/usr/local/bin/istio-start.sh\n[Install]\nWantedBy=multi-user.target\n',
  );
}

/** An istiod VM with the sidecar's services (the package installed some other way: a scratch root has no apt). */
function runlist(l: MeshLab, sidecarAttrs: Record<string, unknown> = {}) {
  return JSON.stringify({
    name: 'restarts',
    // registration has its own tests (test/recipes/registration.test.ts)
    attributes: { flow: 'istiod', workload: WORKLOAD, registration: 'none', cluster: l.cluster },
    recipes: [
      { recipe: 'istio-proxy-user' },
      { recipe: 'dns' },
      { recipe: 'cluster-env' },
      { recipe: 'sidecar', attributes: { package: { from: 'none' }, ...sidecarAttrs } },
      { recipe: 'certs' },
      { recipe: 'sidecar-services' },
    ],
  });
}

async function converge(t: ExecutionContext, file: string, root: string): Promise<Report> {
  const result = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(result.exitCode, 0, result.stderr);
  return JSON.parse(result.stdout) as Report;
}

const restarts = (report: Report) => report.notifications.filter((n) => n.ref === ISTIO && n.status === 'refreshed');
const changed = (report: Report) => report.resources.filter((r) => r.status === 'changed').map((r) => r.ref);

test('the token re-mint restarts nothing; cluster.env, sidecar.env and the mesh config changed together restart istio once', async (t) => {
  const root = await scratchRoot(t);
  const l = await lab(t, root);
  await fakeSidecarUnit(root);
  const file = await writeRunlist(l.dir, 'restarts.yaml', runlist(l));
  const first = await converge(t, file, root);
  // (offline, istio is only enabled: the refresh the first run owes is a no-op under --root; on a live machine the run that
  // starts istio restarts nothing, test/e2e/boot.test.ts)
  t.true(changed(first).includes(`service[istio.service]`), 'istio enabled by the first converge');

  // a reboot empties /var/run: the token is minted again, and the agent reads the new file itself
  await fs.rm(path.join(root, 'var/run/secrets'), { recursive: true });
  const reminted = await converge(t, file, root);
  t.true(changed(reminted).includes('istio_token[/var/run/secrets/tokens/istio-token]'), JSON.stringify(changed(reminted)));
  t.deepEqual(reminted.notifications, [], `a re-minted token restarts nothing (changed: ${changed(reminted).join(', ')})`);

  // one input changed: one restart
  const clusterEnv = path.join(root, 'var/lib/istio/envoy/cluster.env');
  await fs.appendFile(clusterEnv, 'EDITED_BY_HAND=1\n');
  const one = await converge(t, file, root);
  t.deepEqual(changed(one), ['file[/var/lib/istio/envoy/cluster.env]']);
  t.deepEqual(
    restarts(one).map((n) => n.because),
    [['file[/var/lib/istio/envoy/cluster.env]']],
  );

  // three inputs changed: still one restart, owed to all three
  await fs.appendFile(clusterEnv, 'EDITED_BY_HAND=1\n');
  await fs.appendFile(path.join(root, 'var/lib/istio/envoy/sidecar.env'), 'EDITED_BY_HAND=1\n');
  await fs.appendFile(path.join(root, 'etc/istio/config/mesh'), '# edited by hand\n');
  const three = await converge(t, file, root);
  t.is(restarts(three).length, 1, JSON.stringify(three.notifications));
  t.deepEqual(restarts(three)[0]!.because.sort(), [
    'file[/etc/istio/config/mesh]',
    'file[/var/lib/istio/envoy/cluster.env]',
    'file[/var/lib/istio/envoy/sidecar.env]',
  ]);
  const again = await converge(t, file, root);
  t.is(again.outcome, 'unchanged');
  t.deepEqual(again.notifications, []);
});

test('a new sidecar package restarts the sidecar services once: the Package declaration notifies them', async (t) => {
  const root = await scratchRoot(t);
  const attributes = sidecarAttributes.parse({
    flow: 'istiod',
    workload: WORKLOAD,
    versionSkew: 'ignore',
    package: { from: 'deb', url: 'https://artifacts.example.com/istio-sidecar.deb', sha256: 'a'.repeat(64) },
  });
  const context = (recipes: string[]) => ({
    host: localHost({ root }),
    runlist: { name: 'x', file: path.join(root, 'x.yaml'), dir: root, recipes },
    mode: 'plan' as const,
    service: <T>(_key: string, create: () => T) => create(),
  });
  const declared = flatten(await sidecar.declare(attributes, context(['sidecar', 'sidecar-services'])));
  const pkg = declared.find((d) => d.ref === 'package[istio-sidecar]');
  t.deepEqual(
    pkg?.notifies.map((n) => n.ref),
    [ISTIO],
  );
  // without the recipe that declares istio, nothing to notify (and no error)
  const alone = flatten(await sidecar.declare(attributes, context(['sidecar'])));
  t.deepEqual(alone.find((d) => d.ref === 'package[istio-sidecar]')?.notifies, []);
});

test('version skew: minorVersion and the rule, as Istio supports (a sidecar as new as istiod, or one minor behind)', (t) => {
  t.deepEqual(minorVersion('1.24.0-meshvm1'), { major: 1, minor: 24 });
  t.deepEqual(minorVersion('1:1.23.4-1~deb12'), { major: 1, minor: 23 });
  t.deepEqual(minorVersion('1.25-alpha.0'), { major: 1, minor: 25 });
  t.is(minorVersion('latest'), undefined);
  t.is(versionSkewProblem('1.24.2', '1.24.0'), undefined, 'a newer patch is the same minor');
  t.is(versionSkewProblem('1.23.0', '1.24.2'), undefined, 'one minor behind');
  t.regex(versionSkewProblem('1.25.0', '1.24.2') ?? '', /the sidecar 1\.25\.0 is newer than istiod 1\.24\.2/);
  t.regex(versionSkewProblem('1.22.3', '1.24.2') ?? '', /the sidecar 1\.22\.3 is 2 minor versions behind istiod 1\.24\.2/);
  t.regex(versionSkewProblem('0.8.0', '1.24.2') ?? '', /a major version behind/);
  t.regex(versionSkewProblem('latest', '1.24.2') ?? '', /has no major\.minor/);
});

/** A live machine as wantedSidecarVersion reads it: what dpkg-query and apt-cache say (captured), the .deb mark meshvm wrote. */
function machine(o: { installed?: string; mark?: string; candidate?: string }): HostReader {
  const result = (stdout: string): CommandResult => ({ stdout, stderr: '', exitCode: 0 }) as CommandResult;
  return {
    live: true,
    readFile: async (p: string) => (p === '/var/lib/meshvm/debs/istio-sidecar.sha256' && o.mark ? `${o.mark}\n` : undefined),
    query: async (argv: readonly string[]) =>
      argv[0] === 'dpkg-query'
        ? result(o.installed ? `istio-sidecar\tii \t${o.installed}\n` : '')
        : result(`istio-sidecar:\n  Installed: (none)\n  Candidate: ${o.candidate ?? '(none)'}\n`),
  } as unknown as HostReader;
}

test('the version the skew check weighs: what this run would install, never a package left as it is', async (t) => {
  const sha = 'b'.repeat(64);
  const deb = (url: string, version?: string) => ({ from: 'deb' as const, name: 'istio-sidecar', url, sha256: sha, ...(version && { version }) });
  const release = 'https://storage.googleapis.com/istio-release/releases/1.24.3/deb/istio-sidecar.deb';
  t.deepEqual(await wantedSidecarVersion(machine({}), deb(release)), { version: '1.24.3', from: `the .deb's URL ${release}` });
  t.deepEqual(await wantedSidecarVersion(machine({}), deb('https://a.example/istio-sidecar_1.23.0_amd64.deb')), {
    version: '1.23.0',
    from: "the .deb's URL https://a.example/istio-sidecar_1.23.0_amd64.deb",
  });
  t.is(await wantedSidecarVersion(machine({}), deb('https://a.example/istio-sidecar.deb')), undefined, 'not known before the download');
  t.deepEqual(await wantedSidecarVersion(machine({}), deb('https://a.example/istio-sidecar.deb', '1.24.0')), {
    version: '1.24.0',
    from: 'sidecar.package.version',
  });
  t.is(await wantedSidecarVersion(machine({ installed: '1.22.0', mark: sha }), deb(release)), undefined, 'installed from this very .deb');
  t.truthy(await wantedSidecarVersion(machine({ installed: '1.22.0', mark: 'c'.repeat(64) }), deb(release)), 'another .deb: a change');
  const apt = (version?: string) => ({ from: 'apt' as const, name: 'istio-sidecar', ...(version && { version }) });
  t.deepEqual(await wantedSidecarVersion(machine({ candidate: '1.24.1-1' }), apt()), { version: '1.24.1-1', from: "apt's candidate for istio-sidecar" });
  t.is(await wantedSidecarVersion(machine({ installed: '1.20.0', candidate: '1.24.1-1' }), apt()), undefined, 'unpinned and installed: left as it is');
  t.is(await wantedSidecarVersion(machine({ installed: '1.24.1' }), apt('1.24.1')), undefined, 'pinned and there');
  t.deepEqual(await wantedSidecarVersion(machine({ installed: '1.23.0' }), apt('1.24.1')), { version: '1.24.1', from: 'sidecar.package.version' });
  t.deepEqual(await wantedSidecarVersion(machine({}), { from: 'none', version: '1.24.0' }), { version: '1.24.0', from: 'sidecar.package.version' });
  t.is(await wantedSidecarVersion(machine({}), { from: 'none' }), undefined);
});

test('version skew through the cluster: a newer sidecar or one two minors behind is refused in plan and converge, naming both versions; nothing written', async (t) => {
  const root = await scratchRoot(t);
  const l = await lab(t, root, '1.24.2');
  await fakeSidecarUnit(root);
  for (const [version, expect] of [
    ['1.25.0', /the sidecar 1\.25\.0 is newer than istiod 1\.24\.2: .*\(sidecar from sidecar\.package\.version, istiod in istio-system\)/],
    ['1.22.3', /the sidecar 1\.22\.3 is 2 minor versions behind istiod 1\.24\.2/],
  ] as const) {
    const file = await writeRunlist(l.dir, `skew-${version}.yaml`, runlist(l, { package: { from: 'none', version } }));
    const before = await snapshot(root);
    for (const command of ['plan', 'converge']) {
      const result = await meshvm([command, file, '--root', root]);
      t.is(result.exitCode, 1, `${command} ${version}: ${result.stdout}`);
      t.regex(result.stderr, expect, `${command} ${version}`);
      t.regex(result.stderr, /recipe sidecar\).*or set sidecar\.versionSkew: ignore/);
    }
    t.deepEqual(await snapshot(root), before, `${version}: nothing written`);
  }
  t.true(
    l.kube.calls.some((c) => c.path === '/apis/apps/v1/namespaces/istio-system/deployments/istiod' && c.status === 200),
    "istiod's version was read from its Deployment",
  );
  for (const version of ['1.24.2', '1.23.0']) {
    const file = await writeRunlist(l.dir, `skew-${version}.yaml`, runlist(l, { package: { from: 'none', version } }));
    await converge(t, file, root);
  }
  // the guard can be switched off, and only then is the skewed sidecar accepted
  const ignored = await writeRunlist(l.dir, 'ignored.yaml', runlist(l, { package: { from: 'none', version: '1.22.3' }, versionSkew: 'ignore' }));
  await converge(t, ignored, root);
});

test("inbound ports sidecar.env and cluster.env would disagree on are refused naming both; the workload's own ports are accepted", async (t) => {
  t.is(sidecarInboundPorts({ flow: 'istiod', inboundPorts: undefined, workload: { ports: [9080] } }), undefined, 'istiod: cluster.env carries them');
  t.is(sidecarInboundPorts({ flow: 'istiod', inboundPorts: [9080, 9443], workload: { ports: [9443, 9080] } }), '9080,9443');
  t.is(sidecarInboundPorts({ flow: 'classic', inboundPorts: [8080], workload: undefined }), '8080');
  t.throws(() => sidecarInboundPorts({ flow: 'istiod', inboundPorts: [8080], workload: { ports: [] } }), {
    message: /cluster\.env ISTIO_INBOUND_PORTS=from the WorkloadGroup, or \* for all/,
  });

  const root = await scratchRoot(t);
  const l = await lab(t, root);
  await fakeSidecarUnit(root);
  const file = await writeRunlist(l.dir, 'ports.yaml', runlist(l, { inboundPorts: [8080] }));
  const before = await snapshot(root);
  const result = await meshvm(['plan', file, '--root', root]);
  t.is(result.exitCode, 1);
  t.regex(
    result.stderr,
    /recipe sidecar\): conflicting inbound ports: sidecar\.inboundPorts \(sidecar\.env ISTIO_INBOUND_PORTS=8080\) and the workload's \(cluster\.env ISTIO_INBOUND_PORTS=9080\), which wins when istio starts/,
  );
  t.deepEqual(await snapshot(root), before);
});

test('parseListJobs reads systemctl list-jobs as captured at boot', (t) => {
  const captured = ['75 istio.service                          start waiting', '86 meshvm-boot.service                    start running', ''].join('\n');
  t.deepEqual(parseListJobs(captured), [
    { id: 75, unit: 'istio.service', type: 'start', state: 'waiting' },
    { id: 86, unit: 'meshvm-boot.service', type: 'start', state: 'running' },
  ]);
  t.deepEqual(parseListJobs('No jobs running.\n'), []);
});
