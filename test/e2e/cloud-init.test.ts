// End to end on a booted Debian 12 (systemd as PID 1): the example user-data installs meshvm from the artifact store and
// converges istio-vm at boot; the stand-in sidecar (test/e2e/fixtures/istio-sidecar) then gets its certificate from the
// lab's istiod, which auto-registers the VM, and answers DNS as the agent's proxy does; then the timer repairs drift after
// a simulated reboot; then two converges meet at the lock. The far side: lab.ts (Vault, Kubernetes and istiod stand-ins,
// the artifact store, the DHCP nameserver).
import test from 'ava';
import {
  bootDiagnostics,
  changedRefs,
  cloudInitStatus,
  guestPerFile,
  bootWithExample,
  lastRun,
  LAB,
  run,
  sidecarReady,
  sidecarStarts,
  WORKLOAD,
  type MeshGuest,
  type RunReport,
} from './lab.ts';

let boot: { bootMs: number; cloudInitDoneMs: number } | undefined;
const { serial, guest } = await guestPerFile(
  test,
  'cloud-init at boot, the timer, two converges',
  'boot a guest with the example user-data',
  (log) => bootWithExample({ log }),
  async (mg) => {
    const state = await mg.guest.waitForBoot(180_000);
    const ci = await cloudInitStatus(mg.guest);
    if (ci.status !== 'done') throw new Error(`cloud-init did not finish cleanly: ${ci.text}\n${await bootDiagnostics(mg.guest)}`);
    boot = { bootMs: state.bootMs, cloudInitDoneMs: Date.now() - mg.launchedAt };
  },
);

const stat = async (m: MeshGuest, file: string) => run(m.guest, ['stat', '-c', '%U:%G %a %F', file]);
const jwtClaims = (token: string) =>
  JSON.parse(Buffer.from(token.trim().split('.')[1] ?? '', 'base64url').toString()) as { sub: string; aud: string[] | string; exp: number };

serial('cloud-init at boot: meshvm from the artifact store converges istio-vm; a second converge changes nothing; verify passes', async (t) => {
  const m = guest();
  const g = m.guest;
  const report = await lastRun(g);
  t.truthy(report, 'the boot converge wrote /var/lib/meshvm/last-run.json');
  t.is(report!.outcome, 'changed', JSON.stringify(report!.resources.filter((r) => r.status === 'failed')));
  t.is(report!.summary.failed, 0);
  const convergedMs = Date.parse(report!.finishedAt) - m.launchedAt;
  t.log(
    `boot (systemd up) ${boot!.bootMs} ms; far side listening ${m.labReadyMs} ms; boot-to-converged ${convergedMs} ms ` +
      `(the converge itself ${report!.summary.seconds} s, ${report!.summary.changed} of ${report!.summary.total} resources changed); cloud-init done ${boot!.cloudInitDoneMs} ms`,
  );

  // meshvm came from the artifact store, and the VM has no Node.js of its own
  t.not((await g.exec(['sh', '-c', 'command -v node || command -v nodejs'])).exitCode, 0, 'no Node.js on the VM');
  t.is((await run(g, ['sha256sum', '/usr/bin/meshvm'])).split(' ')[0], m.executableSha256, 'the executable the .deb installed');
  t.regex(await run(g, ['dpkg-query', '-W', '-f=${db:Status-Abbrev}', 'meshvm']), /^ii/);
  const stats = await m.lab.stats();
  t.deepEqual(stats.artifactRequests, [
    { path: '/meshvm.deb', status: 200 },
    { path: '/istio-sidecar.deb', status: 200 },
  ]);
  t.is(stats.tokenRequests, 1, 'one TokenRequest for the istio-token');

  // the package's units: the converge-timer recipe only enabled them, writing no copies
  t.false(
    report!.resources.some((r) => r.ref.startsWith('systemd_unit[/etc/systemd/system/meshvm')),
    'no meshvm unit written',
  );
  t.is((await g.exec(['sh', '-c', 'ls /etc/systemd/system/meshvm* 2>/dev/null'])).stdout, '');

  // services enabled and active; dnsmasq (in the image, disabled) left alone: cluster names are the sidecar's DNS proxy's
  for (const unit of ['istio.service', 'meshvm.timer']) {
    t.is((await g.exec(['systemctl', 'is-enabled', unit])).stdout, 'enabled', unit);
    t.is((await g.exec(['systemctl', 'is-active', unit])).stdout, 'active', unit);
  }
  t.is((await g.exec(['systemctl', 'is-enabled', 'meshvm-boot.service'])).stdout, 'enabled', 'the boot converge, for the next boot');
  t.is((await g.exec(['systemctl', 'is-enabled', 'dnsmasq.service'])).stdout, 'disabled');
  t.is((await g.exec(['systemctl', 'is-active', 'dnsmasq.service'])).stdout, 'inactive');
  t.is(await run(g, ['dpkg-query', '-W', '-f=${db:Status-Abbrev}${Version}', 'istio-sidecar']), 'ii 1.24.0-meshvm1');
  t.is(await run(g, ['readlink', '/etc/istio']), '/var/lib/istio', "the package's postinst ran");
  t.is(await sidecarStarts(g), 1, 'the sidecar started once (started by the converge, not restarted for its inputs)');

  // the sidecar connects to istiod through the hosts line: certificate, name table, the VM registered
  const readyStarted = Date.now();
  await sidecarReady(g);
  t.log(`the sidecar ready ${Date.now() - readyStarted} ms after cloud-init was done`);
  t.is(await run(g, ['cat', '/etc/resolv.conf']), `nameserver ${LAB.upstreamDns}`, 'the resolver left as it was');
  t.not((await g.exec(['test', '-e', '/etc/dnsmasq.d/kubedns'])).exitCode, 0, 'no dnsmasq drop-in');
  t.regex(await run(g, ['getent', 'hosts', 'istiod.istio-system.svc']), new RegExp(`^${LAB.eastwest.replaceAll('.', '\\.')}\\s`));
  // a cluster name from istiod's name table, through the DNS capture; other names forwarded to the nameserver the VM had
  t.regex(await run(g, ['getent', 'ahostsv4', 'kubernetes.default.svc.cluster.local']), new RegExp(`^${LAB.kubernetesIp.replaceAll('.', '\\.')}\\s`));
  t.regex(
    await run(g, ['getent', 'ahostsv4', 'example.org']),
    new RegExp(`^${LAB.exampleOrgIp.replaceAll('.', '\\.')}\\s`),
    "the agent's proxy forwards the rest to the nameserver the VM had",
  );
  const digUpstream = ['dig', '+short', '+time=2', '+tries=1', `@${LAB.upstreamDns}`, 'kubernetes.default.svc.cluster.local'];
  t.is(await run(g, digUpstream), LAB.kubernetesIp, 'a query to the nameserver is answered by the proxy (captured)');
  t.is(
    await run(g, ['setpriv', '--reuid=istio-proxy', '--regid=istio-proxy', '--clear-groups', ...digUpstream]),
    '',
    "the nameserver itself does not know the name: istio-proxy's own queries pass the capture",
  );
  const registered = await m.lab.stats();
  t.deepEqual(
    registered.istiod.map((c) => `${c.address} ${c.identity} ${c.entry} ${c.error ?? ''}`.trim()),
    [`${LAB.eastwest} ${WORKLOAD.namespace}/${WORKLOAD.serviceAccount} ${WORKLOAD.namespace}/${WORKLOAD.name}-${LAB.vmAddress}`],
    'one connection to istiod, as the workload, which registered the VM',
  );
  t.deepEqual(
    registered.workloadEntries.map((e) => `${e.name} ${e.address} ${e.annotations['istio.io/autoRegistrationGroup']}`),
    [`${WORKLOAD.namespace}/${WORKLOAD.name}-${LAB.vmAddress} ${LAB.vmAddress} ${WORKLOAD.name}`],
  );

  // certs and token: present, owned by istio-proxy, the token readable by it alone
  t.is(await stat(m, '/etc/certs/root-cert.pem'), 'istio-proxy:istio-proxy 644 regular file');
  t.regex(await run(g, ['cat', '/etc/certs/root-cert.pem']), /^-----BEGIN CERTIFICATE-----/);
  t.is(await stat(m, '/var/run/secrets/tokens/istio-token'), 'istio-proxy:istio-proxy 600 regular file');
  const claims = jwtClaims(await run(g, ['cat', '/var/run/secrets/tokens/istio-token']));
  t.is(claims.sub, `system:serviceaccount:${WORKLOAD.namespace}:${WORKLOAD.serviceAccount}`);
  t.deepEqual([claims.aud].flat(), ['istio-ca']);
  t.is(await stat(m, '/etc/istio/config/mesh'), 'istio-proxy:istio-proxy 644 regular file');
  t.is(await stat(m, '/var/lib/istio/envoy/cluster.env'), 'istio-proxy:istio-proxy 644 regular file');
  t.regex(await run(g, ['cat', '/var/lib/istio/envoy/cluster.env']), new RegExp(`^ISTIO_INBOUND_PORTS='${WORKLOAD.port}'$`, 'm'));
  t.is(await stat(m, '/etc/meshvm/node.yaml'), 'root:root 600 regular file');
  // the user-data carried a wrapping token, not the secret_id: unwrapped once, the secret_id kept 0600, the token gone
  t.is(await stat(m, '/etc/meshvm/secret-id'), 'root:root 600 regular file');
  t.is(await run(g, ['cat', '/etc/meshvm/secret-id']), 'secret-id-lab');
  t.not((await g.exec(['test', '-e', '/etc/meshvm/secret-id.wrapped'])).exitCode, 0, 'the wrapped file removed');

  // the sidecar's interception, installed by its start script, with the DNS capture (ISTIO_META_DNS_CAPTURE=true)
  const nat = await run(g, ['iptables-save', '-t', 'nat']);
  t.regex(nat, new RegExp(`^-A ISTIO_INBOUND -p tcp -m tcp --dport ${WORKLOAD.port} -j ISTIO_IN_REDIRECT$`, 'm'));
  t.regex(nat, new RegExp(`^-A OUTPUT -d ${LAB.upstreamDns.replaceAll('.', '\\.')}/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053$`, 'm'));

  // a second converge changes nothing, restarts nothing and writes nothing to the cluster
  const kubeBefore = (await m.lab.stats()).kubeCalls.length;
  const started = Date.now();
  const second = await g.exec(['meshvm', 'converge', '/etc/meshvm/runlist.yaml', '--json'], { timeoutMs: 120_000 });
  const noopMs = Date.now() - started;
  t.is(second.exitCode, 0, second.stderr);
  const again = JSON.parse(second.stdout) as RunReport & { apiCalls: Record<string, number> };
  t.deepEqual(changedRefs(again), [], 'the second converge changes nothing');
  t.deepEqual(again.notifications, []);
  t.is(again.outcome, 'unchanged');
  t.is(await sidecarStarts(g), 1);
  const noopKube = (await m.lab.stats()).kubeCalls.slice(kubeBefore);
  const apiWrites = (calls: string[]) => calls.filter((c) => !/^(get|list) /.test(c));
  // the fleet view's first publish may fall here: istiod registers the entry once the sidecar has connected, which can be
  // after the first converge ended (it then found no entry to publish on); a steady no-op's 0 writes: test/recipes/fleet-view.test.ts
  const fleetView = ['update workloadentries/status', 'patch workloadentries'];
  const firstPublish = apiWrites(noopKube).length > 0;
  // the boot converge kept the cluster access (keepAccess) and the slow-changing inputs (keepInputs): the VM's
  // WorkloadGroup and the root certificate are what a no-op reads, and the entry's status when it publishes the first time
  t.deepEqual(
    noopKube.filter((c) => /^(get|list) /.test(c)).sort(),
    ['get configmaps', ...(firstPublish ? ['get workloadentries'] : []), 'get workloadgroups'],
    `writes: ${apiWrites(noopKube).join(', ') || 'none'}`,
  );
  t.is(again.apiCalls['vault'] ?? 0, 0, 'no Vault call');
  t.true(
    apiWrites(noopKube).every((c) => fleetView.includes(c)),
    `reads only, but the fleet view's first publish: ${apiWrites(noopKube).join(', ')}`,
  );
  t.log(
    `no-op converge in the guest: ${noopMs} ms wall (meshvm says ${again.summary.seconds} s, ${again.summary.total} resources); ` +
      `API calls ${JSON.stringify(again.apiCalls)}; the Kubernetes stand-in saw ${noopKube.length} reads (${[...new Set(noopKube)].join(', ')})`,
  );

  // meshvm verify: the guide's checks, istiod and the gateway as the sidecar reaches them
  const verify = await g.exec(['meshvm', 'verify', '/etc/meshvm/runlist.yaml', '--json'], { timeoutMs: 120_000 });
  const checks = JSON.parse(verify.stdout) as { ok: boolean; checks: { check: string; ok: boolean; detail: string; skipped?: boolean }[] };
  t.log(checks.checks.map((c) => `${c.ok ? 'ok' : 'FAILED'} ${c.check}: ${c.detail}`).join('\n'));
  t.is(verify.exitCode, 0, verify.stdout + verify.stderr);
  t.true(checks.ok);
  t.false(
    checks.checks.some((c) => c.skipped),
    'nothing skipped on a booted machine',
  );
  // dns.mode istio has no check of its own: the capture is the interception's (dns capture) line
  t.deepEqual(
    [...new Set(checks.checks.map((c) => c.check))],
    ['control plane', 'certs', 'registration', 'services', 'sidecar', 'interception', 'dns capture'],
  );
  t.deepEqual(
    checks.checks.filter((c) => c.check !== 'certs' && c.check !== 'services').map((c) => `${c.check}: ${c.detail}`),
    [
      `control plane: istiod.istio-system.svc:15012 (${LAB.eastwest}) accepts a connection as istio-proxy (uid ${(await run(g, ['id', '-u', 'istio-proxy'])).trim()}, which the sidecar's redirect lets through)`,
      `registration: WorkloadEntry ${WORKLOAD.namespace}/${WORKLOAD.name}-${LAB.vmAddress} exists (health checks are off: no probe, so no Healthy condition to wait for)`,
      'sidecar: localhost:15021/healthz/ready answers 200: the sidecar is ready',
      'interception: the ISTIO_INBOUND, ISTIO_OUTPUT and ISTIO_REDIRECT nat chains exist',
      "dns capture: udp and tcp port 53 are redirected to the sidecar's DNS proxy (15053)",
    ],
  );
  t.true(
    checks.checks.some((c) => c.detail === '/etc/certs/cert-chain.pem (written by the agent) is valid, chains to the root and is not due'),
    "the agent's chain, signed by the lab's istiod for the workload's SPIFFE identity",
  );
});

serial(
  'the timer: after a simulated reboot, a hand edit and a deleted interception rule, one run repairs all of it and restarts the sidecar once',
  async (t) => {
    const m = guest();
    const g = m.guest;
    const before = await sidecarStarts(g);
    const tokenBefore = await run(g, ['cat', '/var/run/secrets/tokens/istio-token']);
    const clusterEnv = await run(g, ['cat', '/var/lib/istio/envoy/cluster.env']);
    const rule = `-A ISTIO_INBOUND -p tcp -m tcp --dport ${WORKLOAD.port} -j ISTIO_IN_REDIRECT`;

    await run(g, ['rm', '-rf', '/var/run/secrets']); // /var/run is a tmpfs: a reboot empties it
    await run(g, ['sed', '-i', `s/^ISTIO_INBOUND_PORTS=.*/ISTIO_INBOUND_PORTS=${WORKLOAD.port},9090/`, '/var/lib/istio/envoy/cluster.env']);
    await run(g, ['iptables', '-t', 'nat', '-D', ...rule.slice(3).split(' ')]);
    t.false((await run(g, ['iptables-save', '-t', 'nat'])).split('\n').includes(rule));
    t.is(await sidecarStarts(g), before, 'nothing restarted the sidecar meanwhile');

    // what meshvm.timer triggers
    const started = Date.now();
    const timerRun = await g.exec(['systemctl', 'start', 'meshvm.service'], { timeoutMs: 180_000 });
    t.is(timerRun.exitCode, 0, `${timerRun.stderr}\n${(await g.exec(['journalctl', '-u', 'meshvm.service', '--no-pager', '-n', '60'])).stdout}`);
    t.log(
      `the timer's run took ${Date.now() - started} ms; in the journal:\n${(await run(g, ['journalctl', '-u', 'meshvm.service', '-o', 'cat', '--no-pager']))
        .split('\n')
        .filter((l) => !/^\s+[-+@ ]/.test(l))
        .join('\n')}`,
    );
    const report = (await lastRun(g))!;
    t.is(report.outcome, 'changed');
    t.deepEqual(changedRefs(report).sort(), [
      'directory[/var/run/secrets/tokens]',
      'directory[/var/run/secrets]',
      'execute[istio interception rules]',
      'file[/var/lib/istio/envoy/cluster.env]',
      'istio_token[/var/run/secrets/tokens/istio-token]',
    ]);
    t.deepEqual(
      report.notifications.map((n) => `${n.ref} ${n.status}`),
      ['service[istio.service] refreshed'],
    );
    t.deepEqual(
      report.notifications[0]!.because.sort(),
      ['execute[istio interception rules]', 'file[/var/lib/istio/envoy/cluster.env]'],
      'the re-minted token is not a reason (the agent reads the file again itself)',
    );

    t.is(await sidecarStarts(g), before + 1, 'exactly one restart of the sidecar');
    t.is(await run(g, ['cat', '/var/lib/istio/envoy/cluster.env']), clusterEnv, 'the hand edit is undone');
    const nat = (await run(g, ['iptables-save', '-t', 'nat'])).split('\n');
    t.true(nat.includes(rule), 'the deleted rule is back (the restarted sidecar installed its rules again)');
    t.false(
      nat.some((l) => l.includes('--dport 9090')),
      'and the hand-edited port is not intercepted',
    );
    t.is(await stat(m, '/var/run/secrets/tokens/istio-token'), 'istio-proxy:istio-proxy 600 regular file');
    t.not(await run(g, ['cat', '/var/run/secrets/tokens/istio-token']), tokenBefore, 'a token minted again');
    t.is((await g.exec(['systemctl', 'is-active', 'istio.service'])).stdout, 'active');
    await sidecarReady(g);

    // and the next run has nothing to do
    const next = await g.exec(['systemctl', 'start', 'meshvm.service'], { timeoutMs: 180_000 });
    t.is(next.exitCode, 0);
    t.is((await lastRun(g))!.outcome, 'unchanged');
    t.is(await sidecarStarts(g), before + 1);
  },
);

serial('two converges started together: one waits for the lock, then finds the work done (one token, no restart)', async (t) => {
  const m = guest();
  const g = m.guest;
  const before = await sidecarStarts(g);
  const minted = (await m.lab.stats()).tokenRequests;
  await run(g, ['rm', '-rf', '/var/run/secrets']);
  const both = await g.exec(
    [
      'sh',
      '-c',
      [
        'meshvm converge /etc/meshvm/runlist.yaml --json >/tmp/a.json 2>/tmp/a.err & a=$!',
        'meshvm converge /etc/meshvm/runlist.yaml --json >/tmp/b.json 2>/tmp/b.err & b=$!',
        'wait $a; ra=$?; wait $b; rb=$?; echo $ra $rb',
      ].join('\n'),
    ],
    { timeoutMs: 180_000 },
  );
  t.is(both.stdout, '0 0', `${await g.readFile('/tmp/a.err')}\n${await g.readFile('/tmp/b.err')}`);
  const reports = await Promise.all(
    ['a', 'b'].map(async (x) => ({ report: JSON.parse((await g.readFile(`/tmp/${x}.json`))!) as RunReport, err: (await g.readFile(`/tmp/${x}.err`))! })),
  );
  const waited = reports.filter((r) => /waiting up to 600 s for the run lock held by pid \d+/.test(r.err));
  t.is(waited.length, 1, 'exactly one of them waited for the other');
  const [first, second] = waited[0] === reports[0] ? [reports[1]!, reports[0]!] : [reports[0]!, reports[1]!];
  t.true(changedRefs(first.report).includes('istio_token[/var/run/secrets/tokens/istio-token]'));
  t.deepEqual(changedRefs(second.report), [], 'the one that waited found the work done');
  t.is((await m.lab.stats()).tokenRequests, minted + 1, 'one token minted, not two');
  t.is(await sidecarStarts(g), before, 'no restart: a re-minted token restarts nothing');
});
