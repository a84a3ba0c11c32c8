// Reboots of a mesh VM, on a booted Debian 12 (systemd as PID 1) whose disk survives them: after a reboot the istio-token
// (on tmpfs) is minted again by the boot converge before istio starts, timed; restarts are the needed ones only (a token
// re-mint none, a hand-edited cluster.env one, a new sidecar package one, a moved istiod line in /etc/hosts one of dnsmasq);
// a control plane that does not answer at boot does not hold istio, and the timer's converge repairs the VM afterwards.
// The far side, in a network namespace of the test's own that outlives the guest's reboots (a cluster does not restart when
// a VM does): the Kubernetes stand-in (API v1.33, RBAC, TokenRequest signing JWTs, an Istio 1.24.2 install) stands for
// the cluster's API server, reached directly (server + caFile + tokenFile), and an https server for the artifact store
// serving istio-sidecar .debs (test/e2e/fixtures/istio-sidecar, built with dpkg-deb). meshvm runs from the sources with
// the test's Node bound in (Debian 12's nodejs is too old).
import test from 'ava';
import { execa, type ResultPromise } from 'execa';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { bootContainer, type Guest } from '../helpers/guest/container.ts';
import { ensureRootfs } from '../helpers/guest/rootfs.ts';
import { until } from '../helpers/poll.ts';
import { testPki, type TestPki } from '../stand-ins/index.ts';
import { buildSidecarDeb, e2eGate, IMAGE, lastRun, PROJECT, run, sha256File, sidecarStarts, WORKLOAD, type RunReport } from './lab.ts';

const ok = await e2eGate(test, 'reboots: the boot converge, restarts, a dead control plane');
const serial = ok ? test.serial : test.serial.skip;

const MESHVM_DIR = '/opt/meshvm';
const MESHVM = ['/usr/local/bin/node', `${MESHVM_DIR}/bin/meshvm.js`];
const TOKEN = '/var/run/secrets/tokens/istio-token';
const KUBE_PORT = 6443;
const ARTIFACT_PORT = 8443;
const EASTWEST = '10.150.0.6';

// ---------------------------------------------------------------------------------------------------------------
// The far side: a process in the test's network namespace, driven by JSON lines on its stdin

const FAR_SIDE = String.raw`
import { createServer } from 'node:https';
import fs from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
const repo = process.argv[1];
const { startKubernetes } = await import(repo + '/test/stand-ins/index.ts');
const { MESH_RULES, VM_SA } = await import(repo + '/test/helpers/mesh-lab.ts');
const c = JSON.parse(process.argv[2]);
const rules = [
  ...MESH_RULES,
  { verbs: ['get'], resources: ['configmaps'], namespaces: ['istio-system'] },
  { verbs: ['get'], resources: ['namespaces'] },
  { verbs: ['get'], apiGroups: ['apps'], resources: ['deployments'], namespaces: ['istio-system'] },
  { verbs: ['get', 'create', 'patch'], apiGroups: ['networking.istio.io'], resources: ['workloadgroups'], namespaces: ['vm-ns'] },
];
let kube;
const kubeStart = async () => {
  kube = await startKubernetes({
    port: c.kubePort,
    serviceCIDRs: { kubernetes: ['10.63.240.0/20'] },
    tokens: { 'scoped-token': { user: VM_SA, groups: ['system:serviceaccounts'] } },
    rbac: { [VM_SA]: rules },
    serviceAccounts: ['vm-ns/vm-sa'],
  });
  kube.objects.setService('istio-system', 'istio-eastwestgateway', { type: 'LoadBalancer', ports: [{ port: 15012 }] }, { loadBalancer: { ingress: [{ ip: c.eastwest }] } });
  kube.objects.setService('kube-system', 'kube-dns', { type: 'ClusterIP', clusterIP: '10.150.0.7' });
  kube.objects.setConfigMap('vm-ns', 'istio-ca-root-cert', { 'root-cert.pem': c.rootPem });
  kube.objects.installIstio({ version: '1.24.2' });
};
await kubeStart();
let tokenRequests = 0;
const count = () => { tokenRequests += kube ? kube.calls.filter((x) => x.method === 'POST' && x.path.endsWith('/token')).length : 0; };
const artifacts = createServer({ cert: c.certPem, key: c.keyPem }, (req, res) => {
  const name = decodeURIComponent(new URL(req.url ?? '/', 'https://x').pathname.slice(1));
  if (!/^[\w.-]+$/.test(name)) return void res.writeHead(404).end();
  fs.readFile(path.join(c.artifactDir, name)).then((body) => res.writeHead(200).end(body), () => res.writeHead(404).end());
});
await new Promise((resolve) => artifacts.listen(c.artifactPort, '127.0.0.1', resolve));
const say = (m) => process.stdout.write(JSON.stringify(m) + '\n');
say({ ready: true, kubeCaPem: kube.caPem });
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const { id, cmd } = JSON.parse(line);
  if (cmd === 'kube-stop') { count(); await kube.stop(); kube = undefined; }
  if (cmd === 'kube-start') await kubeStart();
  const mine = kube ? kube.calls.filter((x) => x.method === 'POST' && x.path.endsWith('/token')).length : 0;
  say({ id, tokenRequests: tokenRequests + mine });
}).on('close', async () => { await kube?.stop(); artifacts.close(); process.exit(0); });
`;

interface FarSide {
  netns: string;
  kubeCaPem: string;
  call(cmd: 'stats' | 'kube-stop' | 'kube-start'): Promise<{ tokenRequests: number }>;
  stop(): Promise<void>;
}

async function startFarSide(config: { artifactDir: string; pki: TestPki; rootPem: string }): Promise<FarSide> {
  const netns = `meshvm-boot-${process.pid}-${randomBytes(3).toString('hex')}`;
  await execa('ip', ['netns', 'add', netns]);
  await execa('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  await execa('ip', ['-n', netns, 'addr', 'add', `${EASTWEST}/32`, 'dev', 'lo']);
  const child: ResultPromise = execa(
    'ip',
    [
      'netns',
      'exec',
      netns,
      process.execPath,
      '--input-type=module',
      '-e',
      FAR_SIDE,
      PROJECT,
      JSON.stringify({
        kubePort: KUBE_PORT,
        artifactPort: ARTIFACT_PORT,
        artifactDir: config.artifactDir,
        certPem: config.pki.certPem,
        keyPem: config.pki.keyPem,
        rootPem: config.rootPem,
        eastwest: EASTWEST,
      }),
    ],
    { stdin: 'pipe', stdout: 'pipe', stderr: 'pipe', reject: false },
  );
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await child;
      clearTimeout(timer);
      await execa('ip', ['netns', 'del', netns], { reject: false });
    })());
  const waiting = new Map<number, (m: { tokenRequests: number }) => void>();
  let ready!: (m: { kubeCaPem: string }) => void;
  const readyAnswer = new Promise<{ kubeCaPem: string }>((resolve) => (ready = resolve));
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    const m = JSON.parse(line) as { ready?: boolean; kubeCaPem?: string; id?: number; tokenRequests: number };
    if (m.ready) ready({ kubeCaPem: m.kubeCaPem! });
    else if (m.id !== undefined) waiting.get(m.id)?.(m);
  });
  const exited = child.then((r) => {
    throw new Error(`the far side exited: ${String(r.stderr).slice(-2000)}`);
  });
  exited.catch(() => {});
  const { kubeCaPem } = await Promise.race([readyAnswer, exited]).catch(async (error: unknown) => {
    await stop();
    throw error;
  });
  let next = 0;
  return {
    netns,
    kubeCaPem,
    stop,
    async call(cmd) {
      const id = ++next;
      const answer = new Promise<{ tokenRequests: number }>((resolve) => waiting.set(id, resolve));
      child.stdin!.write(JSON.stringify({ id, cmd }) + '\n');
      return Promise.race([answer, exited]);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The VM: the shared image under an overlay of its own (its disk), booted in the far side's namespace, rebooted at will

interface Vm {
  guest: Guest;
  /** process.hrtime.bigint() just before systemd-nspawn started: CLOCK_MONOTONIC, the clock systemd's *TimestampMonotonic use. */
  launchedNs: bigint;
}

let farSide: FarSide | undefined;
let disk: { merged: string; remove(): Promise<void> } | undefined;
let vm: Vm | undefined;
let workDir = '';
let deb: { file: string; sha256: string } | undefined;

async function boot(): Promise<Vm> {
  const launchedNs = process.hrtime.bigint();
  const guest = await bootContainer({
    rootfsDir: disk!.merged,
    // --volatile=no: the guest writes to its overlay, which outlives it; the far side's namespace instead of a fresh one
    nspawnArgs: ['--volatile=no', `--network-namespace-path=/run/netns/${farSide!.netns}`],
    node: true,
    binds: [{ host: PROJECT, guest: MESHVM_DIR }],
  });
  await guest.waitForBoot(180_000);
  return { guest, launchedNs };
}

async function reboot(): Promise<Vm> {
  await vm!.guest.stop();
  vm = await boot();
  return vm;
}

async function converge(g: Guest): Promise<RunReport> {
  const r = await g.exec([...MESHVM, 'converge', '/etc/meshvm/runlist.yaml', '--json'], { timeoutMs: 180_000 });
  if (r.exitCode !== 0) throw new Error(`converge failed (${r.exitCode}):\n${r.stderr}\n${r.stdout.slice(-3000)}`);
  return JSON.parse(r.stdout) as RunReport;
}

async function show(g: Guest, unit: string, ...props: string[]): Promise<Record<string, string>> {
  const text = await run(g, ['systemctl', 'show', unit, ...props.flatMap((p) => ['-p', p])]);
  return Object.fromEntries(text.split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
}

const nodeYaml = (pkg: { url: string; sha256: string }, extra: string[] = []) =>
  [
    'attributes:',
    `  workload: { name: ${WORKLOAD.name}, namespace: ${WORKLOAD.namespace}, serviceAccount: ${WORKLOAD.serviceAccount}, ports: [${WORKLOAD.port}] }`,
    `  package: { from: deb, url: ${pkg.url}, sha256: ${pkg.sha256}, caFile: /etc/meshvm/artifacts-ca.pem }`,
    `  cluster: { server: "https://127.0.0.1:${KUBE_PORT}", caFile: /etc/meshvm/cluster-ca.pem, tokenFile: /etc/meshvm/cluster-token }`,
    `  command: ${MESHVM.join(' ')} converge /etc/meshvm/runlist.yaml`,
    ...extra,
    '',
  ].join('\n');

/** "Tue 2026-12-01 15:06:27.658123 UTC" (systemctl --timestamp=us+utc) as epoch milliseconds, to the microsecond. */
function utcMs(text: string): number {
  const m = /(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)\.(\d{6}) UTC/.exec(text);
  if (!m) throw new Error(`not a systemd timestamp in us+utc: ${JSON.stringify(text)}`);
  return Date.parse(`${m[1]}T${m[2]}Z`) + Number(m[3]) / 1000;
}

const refreshed = (report: RunReport) => report.notifications.filter((n) => n.status === 'refreshed').map((n) => n.ref);
const changedRefs = (report: RunReport) => report.resources.filter((r) => r.status === 'changed').map((r) => r.ref);

if (ok) {
  test.before('the far side, the disk, and a first boot converged with the istio-vm runlist', async (t) => {
    t.timeout(15 * 60_000, 'building the image the first time');
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-e2e-boot-'));
    const artifactDir = path.join(workDir, 'artifacts');
    await fs.mkdir(artifactDir);
    deb = await buildSidecarDeb(artifactDir);
    const pki = await testPki({ fresh: true });
    const root = await testPki({ fresh: true });
    farSide = await startFarSide({ artifactDir, pki, rootPem: root.caPem });

    const lower = await ensureRootfs({ ...IMAGE, log: (line) => t.log(line) });
    const base = path.join(workDir, 'disk');
    for (const d of ['upper', 'work', 'merged']) await fs.mkdir(path.join(base, d), { recursive: true });
    await execa('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${base}/upper,workdir=${base}/work`, `${base}/merged`]);
    disk = {
      merged: `${base}/merged`,
      remove: async () => {
        await execa('umount', [`${base}/merged`], { reject: false });
      },
    };
    vm = await boot();
    const g = vm.guest;
    await g.writeFile('/etc/meshvm/cluster-ca.pem', farSide.kubeCaPem);
    await g.writeFile('/etc/meshvm/cluster-token', 'scoped-token\n', { mode: 0o600 });
    await g.writeFile('/etc/meshvm/artifacts-ca.pem', pki.caPem);
    await g.writeFile('/etc/meshvm/node.yaml', nodeYaml({ url: `https://127.0.0.1:${ARTIFACT_PORT}/istio-sidecar.deb`, sha256: deb.sha256 }), { mode: 0o600 });
    await g.writeFile('/etc/meshvm/runlist.yaml', await run(g, [...MESHVM, 'runlist', 'istio-vm']));
    const first = await converge(g);
    if (first.summary.failed) throw new Error(JSON.stringify(first.resources.filter((r) => r.status === 'failed')));
  });
  test.after.always('stop the VM, the far side, remove the disk', async () => {
    await vm?.guest.stop();
    await farSide?.stop();
    await disk?.remove();
    if (workDir) await fs.rm(workDir, { recursive: true, force: true });
  });
}

serial('the first converge: istio started once with its token; meshvm-boot.service enabled, ordered before istio', async (t) => {
  const g = vm!.guest;
  t.is(await sidecarStarts(g), 1);
  t.is((await run(g, ['systemctl', 'is-active', 'istio.service'])).trim(), 'active');
  t.regex(await run(g, ['cat', TOKEN]), /^ey/);
  t.is((await g.exec(['systemd-analyze', 'verify', '--man=no', '/etc/systemd/system/meshvm-boot.service'])).exitCode, 0);
  const unit = await show(g, 'meshvm-boot.service', 'UnitFileState', 'Before', 'After', 'TimeoutStartUSec');
  t.is(unit.UnitFileState, 'enabled');
  t.regex(unit.Before ?? '', /\bistio\.service\b/);
  t.regex(unit.After ?? '', /\bnetwork-online\.target\b/);
  t.is(unit.TimeoutStartUSec, '1min 30s');
});

serial('reboot: the boot converge mints the token before istio starts (timed); istio starts once', async (t) => {
  const before = await sidecarStarts(vm!.guest);
  const minted = (await farSide!.call('stats')).tokenRequests;
  const { guest: g, launchedNs } = await reboot();
  await until(async () => (await sidecarStarts(g)) === before + 1, { what: 'istio to start after the reboot', timeoutMs: 120_000, intervalMs: 100 });
  const converge = await show(g, 'meshvm-boot.service', 'Result', 'ExecMainStartTimestampMonotonic', 'ExecMainExitTimestampMonotonic');
  const istio = await show(g, 'istio.service', 'ActiveState', 'ExecMainStartTimestampMonotonic');
  t.is(converge.Result, 'success');
  t.is(istio.ActiveState, 'active');
  const ms = (monotonicUs: string) => Number((BigInt(monotonicUs) * 1000n - launchedNs) / 1_000_000n);
  const convergeStart = ms(converge.ExecMainStartTimestampMonotonic!);
  const convergeEnd = ms(converge.ExecMainExitTimestampMonotonic!);
  const istioStart = ms(istio.ExecMainStartTimestampMonotonic!);
  t.true(istioStart >= convergeEnd, `istio started at ${istioStart} ms, the boot converge ended at ${convergeEnd} ms`);

  // the token: minted in this boot (a TokenRequest), written before istio started, the one istio's start found
  t.is((await farSide!.call('stats')).tokenRequests, minted + 1, 'one TokenRequest at boot');
  const tokenWritten = Number(await run(g, ['stat', '-c', '%.6Y', TOKEN])) * 1000;
  const istioStartReal = utcMs(await run(g, ['systemctl', 'show', 'istio.service', '-p', 'ExecMainStartTimestamp', '--timestamp=us+utc', '--value']));
  t.true(tokenWritten <= istioStartReal, `token written at ${tokenWritten}, istio started at ${istioStartReal} (epoch ms)`);
  t.is(await run(g, ['stat', '-c', '%U %a', TOKEN]), 'istio-proxy 600');
  const report = (await lastRun(g))!;
  t.true(changedRefs(report).includes(`istio_token[${TOKEN}]`));
  t.deepEqual(refreshed(report), [], 'nothing restarted: istio had not started when the converge ran');
  t.log(
    `reboot → istio with its token: ${istioStart} ms from launch (the boot converge ran ${convergeStart}–${convergeEnd} ms, ${convergeEnd - convergeStart} ms; ` +
      `istio started ${istioStart - convergeEnd} ms after it). Before the boot converge: istio ran without a token until the timer, 121 s (issue 11)`,
  );
});

serial('restarts: a token re-mint none, a hand-edited cluster.env one, a new sidecar package one', async (t) => {
  const g = vm!.guest;
  let starts = await sidecarStarts(g);

  await run(g, ['rm', '-rf', '/var/run/secrets']);
  const reminted = await converge(g);
  t.true(changedRefs(reminted).includes(`istio_token[${TOKEN}]`));
  t.deepEqual(refreshed(reminted), [], 'a token re-mint restarts nothing');
  t.is(await sidecarStarts(g), starts);

  await run(g, ['sh', '-c', 'echo EDITED_BY_HAND=1 >> /var/lib/istio/envoy/cluster.env']);
  const edited = await converge(g);
  t.deepEqual(changedRefs(edited), ['file[/var/lib/istio/envoy/cluster.env]']);
  t.deepEqual(refreshed(edited), ['service[istio.service]']);
  t.is(await sidecarStarts(g), ++starts, 'one restart');

  // a new version of the package, served beside the first
  const tree = await fs.mkdtemp(path.join(workDir, 'deb-'));
  await fs.cp(path.join(PROJECT, 'test/e2e/fixtures/istio-sidecar'), tree, { recursive: true });
  const control = path.join(tree, 'DEBIAN/control');
  await fs.writeFile(control, (await fs.readFile(control, 'utf8')).replace(/^Version: .*$/m, 'Version: 1.24.1-meshvm1'));
  for (const [file, mode] of [
    ['DEBIAN/postinst', 0o755],
    ['usr/local/bin/istio-start.sh', 0o755],
    ['usr/local/bin/pilot-agent', 0o755],
  ] as const)
    await fs.chmod(path.join(tree, file), mode);
  await execa('find', [tree, '-type', 'd', '-exec', 'chmod', '0755', '{}', '+']);
  const newer = path.join(workDir, 'artifacts', 'istio-sidecar-1.24.1.deb');
  await execa('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', tree, newer]);
  await g.writeFile(
    '/etc/meshvm/node.yaml',
    nodeYaml({ url: `https://127.0.0.1:${ARTIFACT_PORT}/istio-sidecar-1.24.1.deb`, sha256: await sha256File(newer) }),
    { mode: 0o600 },
  );
  const upgraded = await converge(g);
  t.deepEqual(changedRefs(upgraded), ['package[istio-sidecar]']);
  t.deepEqual(
    upgraded.notifications.map((n) => `${n.ref} ${n.status} ${n.because.join(',')}`),
    ['service[istio.service] refreshed package[istio-sidecar]'],
  );
  t.is(await sidecarStarts(g), ++starts, 'one restart for the new package');
  t.is(await run(g, ['dpkg-query', '-W', '-f=${Version}', 'istio-sidecar']), '1.24.1-meshvm1');
  const again = await converge(g);
  t.is(again.outcome, 'unchanged');
  t.is(await sidecarStarts(g), starts);
});

serial('a control plane that does not answer at boot holds istio only as long as the converge tries; the timer repairs the VM', async (t) => {
  await farSide!.call('kube-stop');
  const before = await sidecarStarts(vm!.guest);
  const { guest: g } = await reboot();
  await until(async () => (await sidecarStarts(g)) === before + 1, { what: 'istio to start after the reboot', timeoutMs: 150_000, intervalMs: 200 });
  const converge = await show(g, 'meshvm-boot.service', 'Result', 'ExecMainStartTimestampMonotonic');
  const istio = await show(g, 'istio.service', 'ActiveState', 'ExecMainStartTimestampMonotonic');
  t.is(converge.Result, 'exit-code', 'the boot converge failed: no cluster');
  t.is(istio.ActiveState, 'active', 'istio started anyway');
  const heldMs = Number(BigInt(istio.ExecMainStartTimestampMonotonic!) - BigInt(converge.ExecMainStartTimestampMonotonic!)) / 1000;
  t.true(heldMs < 90_000, `held ${heldMs} ms`);
  t.is((await g.exec(['test', '-e', TOKEN])).exitCode, 1, 'no token yet');
  t.log(`the control plane down at boot: istio started ${heldMs.toFixed(0)} ms after the boot converge began (its retries; bound 90 s)`);

  // the cluster is back: what meshvm.timer triggers mints the token
  await farSide!.call('kube-start');
  const timerRun = await g.exec(['systemctl', 'start', 'meshvm.service'], { timeoutMs: 180_000 });
  t.is(timerRun.exitCode, 0, (await g.exec(['journalctl', '-u', 'meshvm.service', '--no-pager', '-n', '40'])).stdout);
  t.regex(await run(g, ['cat', TOKEN]), /^ey/);
});

serial('dns.mode dnsmasq by choice: a moved istiod line in /etc/hosts restarts dnsmasq once, and dnsmasq answers the new address', async (t) => {
  const g = vm!.guest;
  const deb1 = {
    url: `https://127.0.0.1:${ARTIFACT_PORT}/istio-sidecar-1.24.1.deb`,
    sha256: await sha256File(path.join(workDir, 'artifacts', 'istio-sidecar-1.24.1.deb')),
  };
  // the stand-in's kube-dns is a ClusterIP, which this VM (in the cluster's namespace) does reach
  const dns = ['  dns: { mode: dnsmasq, routesToClusterIps: true, resolver: none }'];
  await g.writeFile('/etc/meshvm/node.yaml', nodeYaml(deb1, dns), { mode: 0o600 });
  const starts = await sidecarStarts(g);
  const switched = await converge(g);
  t.true(changedRefs(switched).includes('file[/etc/dnsmasq.d/kubedns]'), JSON.stringify(changedRefs(switched)));
  t.is((await run(g, ['systemctl', 'is-active', 'dnsmasq.service'])).trim(), 'active');
  const dig = async () => (await run(g, ['dig', '+short', '+time=2', '+tries=1', '@127.0.0.1', 'istiod.istio-system.svc'])).trim();
  t.is(await dig(), EASTWEST);
  const pid = (await show(g, 'dnsmasq.service', 'MainPID')).MainPID;

  await g.writeFile('/etc/meshvm/node.yaml', nodeYaml(deb1, [...dns, '  certs: { istiodAddress: 10.150.0.66 }']), { mode: 0o600 });
  const moved = await converge(g);
  t.is(changedRefs(moved).filter((ref) => ref.includes('/etc/hosts')).length, 1, `the hosts line moved: ${changedRefs(moved).join(', ')}`);
  t.deepEqual(
    changedRefs(moved).filter((ref) => !ref.includes('/etc/hosts')),
    [],
    'nothing else changed',
  );
  t.deepEqual(refreshed(moved), ['service[dnsmasq.service]'], 'dnsmasq restarted once, istio not at all');
  t.not((await show(g, 'dnsmasq.service', 'MainPID')).MainPID, pid);
  t.is(await dig(), '10.150.0.66', 'dnsmasq answers from the new /etc/hosts');
  t.is(await sidecarStarts(g), starts);
  const again = await converge(g);
  t.is(again.outcome, 'unchanged');
  t.deepEqual(again.notifications, []);
});
