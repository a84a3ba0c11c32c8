// Owns the system resources on the real tools, inside booted Debian guests driven by the real CLI: Service, SystemdUnit, Package, ResolvConf, DnsmasqConfig.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bootContainer, canBootContainers } from '../helpers/guest/container.ts';
import { buildDeb, serveHttps } from '../helpers/guest/debs.ts';
import type { BindMount, Guest } from '../helpers/guest/container.ts';
import { ensureRootfs } from '../helpers/guest/rootfs.ts';
import { until } from '../helpers/poll.ts';
import { PROJECT } from '../helpers/scratch.ts';
import type { RunReport } from '../../engine/report.ts';

const gate = await canBootContainers();
const guestTest = gate.ok ? test : test.skip;
if (!gate.ok) {
  const reason = gate.reason;
  // a skip is a skip: counted as skipped, the reason in its title
  test.skip(`system-resource guest tests are skipped on this machine (${reason})`, () => {});
}

if (gate.ok) {
  test.before('build or reuse the guest images', async (t) => {
    t.timeout(20 * 60_000, 'building the Debian 12 images (run scripts/build-test-rootfs.ts ahead in CI)');
    await ensureRootfs({ log: (line) => t.log(line) });
    await ensureRootfs({ resolved: true, log: (line) => t.log(line) });
  });
}

/** Where the project (read-only) and the recipe module of these tests are in every guest. */
const MESHVM_DIR = '/opt/meshvm';
const SYSTEM_RECIPE = `${MESHVM_DIR}/test/fixtures/guest/system.ts`;

/** Boots a guest with Node and the project bound in; stopped when the test ends, whatever happens. */
async function bootGuest(t: ExecutionContext, opts: { resolved?: boolean; binds?: BindMount[] } = {}): Promise<Guest> {
  const guest = await bootContainer({
    node: true,
    rootfs: { resolved: opts.resolved ?? false },
    binds: [{ host: PROJECT, guest: MESHVM_DIR }, ...(opts.binds ?? [])],
  });
  t.teardown(() => guest.stop());
  const state = await guest.waitForBoot();
  t.log(
    `${opts.resolved ? 'systemd-resolved' : 'plain'} guest up in ${state.bootMs} ms (${state.state}${state.failedUnits.length ? `: ${state.failedUnits.join(', ')}` : ''})`,
  );
  return guest;
}

interface Converge {
  exitCode: number;
  stderr: string;
  report: RunReport;
  /** Refs of the resources this run changed, in order. */
  changed: string[];
  /** "ref status" of each notification delivered. */
  refreshes: string[];
}

let runlists = 0;

/** Secrets in meshvm's own environment on every converge here: none may reach a command it runs (a maintainer script dumps its environment). */
const ENV_CANARIES = { VAULT_TOKEN: 'hvs.guest-canary-vault-token-5tq', AWS_SECRET_ACCESS_KEY: 'guest-canary-aws-secret-key-91x' };

/** Writes the runlist into the guest and runs `meshvm converge RUNLIST --json` there, on the guest itself (root /). */
async function converge(guest: Guest, runlist: object): Promise<Converge> {
  const file = `/root/runlist-${++runlists}.yaml`;
  await guest.writeFile(file, JSON.stringify(runlist, null, 2) + '\n'); // JSON is YAML
  const r = await guest.exec(['node', `${MESHVM_DIR}/bin/meshvm.js`, 'converge', file, '--json'], {
    cwd: '/root',
    timeoutMs: 120_000,
    env: { NO_COLOR: '1', ...ENV_CANARIES },
  });
  let report: RunReport;
  try {
    report = JSON.parse(r.stdout) as RunReport;
  } catch {
    throw new Error(`meshvm converge ${file} printed no JSON report (exit ${r.exitCode}):\n${r.stdout}\n${r.stderr}`);
  }
  return {
    exitCode: r.exitCode,
    stderr: r.stderr,
    report,
    changed: (report.resources ?? []).filter((x) => x.status === 'changed').map((x) => x.ref),
    refreshes: (report.notifications ?? []).map((n) => `${n.ref} ${n.status}`),
  };
}

/** The test recipe module with these attributes (see test/fixtures/guest/system.ts). */
const system = (attributes: object) => ({ name: 'guest-system', recipes: [{ recipe: SYSTEM_RECIPE, attributes }] });

/** Asserts a converge succeeded with exactly these changes and notifications. */
function converged(t: ExecutionContext, run: Converge, changed: string[], refreshes: string[] = [], what = 'converge'): void {
  t.is(run.exitCode, 0, `${what} failed:\n${run.stderr}`);
  t.deepEqual(run.changed, changed, `${what}: changed resources`);
  t.deepEqual(run.refreshes, refreshes, `${what}: notifications`);
}

/** Asserts a converge failed, at the resource given; returns that resource's error. */
function refused(t: ExecutionContext, run: Converge, ref: string): string {
  t.is(run.exitCode, 1, run.stderr);
  const failed = run.report.resources.find((r) => r.status === 'failed');
  t.is(failed?.ref, ref);
  return failed?.error ?? '';
}

/** Asserts a converge was refused by its preflight (nothing changed, one error line naming the resource); returns the error. */
function refusedInPreflight(t: ExecutionContext, run: Converge, ref: string): string {
  t.is(run.exitCode, 1, run.stderr);
  t.is(run.report.outcome, 'failed');
  t.deepEqual(run.changed, [], 'nothing changed');
  const error = (run.report as unknown as { error?: string }).error ?? '';
  t.true(error.startsWith(`preflight: ${ref} `), error);
  t.is(run.stderr.trim().split('\n').length, 1, run.stderr);
  return error;
}

async function out(guest: Guest, argv: string[]): Promise<string> {
  return (await guest.exec(argv, { check: true })).stdout.trim();
}

/** `systemctl show -p ...` as a map. */
async function show(guest: Guest, unit: string, ...props: string[]): Promise<Record<string, string>> {
  const text = await out(guest, ['systemctl', 'show', unit, ...props.flatMap((p) => ['-p', p])]);
  return Object.fromEntries(text.split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
}

// ---------------------------------------------------------------------------------------------------------------
// Service and SystemdUnit

const DEMO_UNIT = '/etc/systemd/system/meshvm-demo.service';
const DEMO_CONFIG = '/etc/meshvm-demo.conf';
const DEMO_DROP_IN_DIR = '/etc/systemd/system/meshvm-demo.service.d';
const DEMO_STARTS = '/var/lib/meshvm-demo/starts';
// ExecStartPre runs to completion before `systemctl start` returns, so a start is on record when meshvm exits.
const RECORD_START = [
  '#!/bin/sh',
  '# ExecStartPre of meshvm-demo.service: one line per start, with the unit version and the config it started with.',
  'mkdir -p /var/lib/meshvm-demo',
  `echo "unit=\${DEMO_UNIT:-none} config=$(cat ${DEMO_CONFIG})" >> ${DEMO_STARTS}`,
  '',
].join('\n');

/** meshvm-demo.service (Type=simple) from SystemdUnit, its config file (a File that notifies it), optionally a drop-in written as a plain File. */
function demo(config: string, unitVersion: number, more: { dropIn?: string; dnsmasqMasked?: boolean } = {}) {
  return system({
    directories: more.dropIn ? [{ path: DEMO_DROP_IN_DIR, mode: '0755' }] : [],
    files: [
      { path: '/usr/local/bin/meshvm-demo-record', mode: '0755', content: RECORD_START },
      { path: DEMO_CONFIG, content: `${config}\n`, notifies: ['meshvm-demo'] },
      // a plain File, not a SystemdUnit: nothing but the Service itself knows a daemon-reload is owed
      ...(more.dropIn ? [{ path: `${DEMO_DROP_IN_DIR}/10-version.conf`, content: more.dropIn, notifies: ['meshvm-demo'] }] : []),
      // a notification to the masked service: a refresh it must not turn into a failed restart
      ...(more.dnsmasqMasked === undefined ? [] : [{ path: '/etc/dnsmasq.d/meshvm-demo.conf', content: '# meshvm guest test\n', notifies: ['dnsmasq'] }]),
    ],
    units: [
      {
        name: 'meshvm-demo.service',
        sections: {
          Unit: { Description: 'meshvm guest test service' },
          Service: {
            Type: 'simple',
            Environment: `DEMO_UNIT=${unitVersion}`,
            ExecStartPre: '/usr/local/bin/meshvm-demo-record',
            ExecStart: '/bin/sleep infinity',
          },
          Install: { WantedBy: 'multi-user.target' },
        },
        notifies: ['meshvm-demo'],
      },
    ],
    services: [
      { name: 'meshvm-demo', enabled: true, running: true },
      ...(more.dnsmasqMasked === undefined ? [] : [{ name: 'dnsmasq', masked: more.dnsmasqMasked }]),
    ],
  });
}

guestTest(
  'Service: enabled and started once; one restart per config change, none when nothing changed; daemon-reload before the restart; masked',
  async (t) => {
    const started = Date.now();
    const guest = await bootGuest(t);
    const starts = async () => (await guest.readFile(DEMO_STARTS))?.trim().split('\n') ?? [];
    const service = 'service[meshvm-demo.service]';
    const unit = `systemd_unit[${DEMO_UNIT}]`;

    // First converge: written, enabled and started; the config change's restart is not needed (started in this run).
    converged(
      t,
      await converge(guest, demo('v1', 1)),
      ['file[/usr/local/bin/meshvm-demo-record]', `file[${DEMO_CONFIG}]`, unit, service],
      [`${service} not-needed`],
      'first converge',
    );
    t.is(await out(guest, ['systemctl', 'is-enabled', 'meshvm-demo.service']), 'enabled');
    t.is(await out(guest, ['systemctl', 'is-active', 'meshvm-demo.service']), 'active');
    t.deepEqual(await starts(), ['unit=1 config=v1'], 'started exactly once');
    const pid = (await show(guest, 'meshvm-demo.service', 'MainPID')).MainPID;

    // Nothing changed: nothing restarted.
    converged(t, await converge(guest, demo('v1', 1)), [], [], 'second converge');
    t.deepEqual(await starts(), ['unit=1 config=v1'], 'not restarted when nothing changed');
    t.is((await show(guest, 'meshvm-demo.service', 'MainPID')).MainPID, pid);

    // The config file changed: restarted exactly once.
    converged(t, await converge(guest, demo('v2', 1)), [`file[${DEMO_CONFIG}]`], [`${service} refreshed`], 'config change');
    t.deepEqual(await starts(), ['unit=1 config=v1', 'unit=1 config=v2'], 'restarted exactly once, with the new config');

    // The unit and the config changed in one run (both notify): reloaded, then restarted once, with the new definition.
    converged(t, await converge(guest, demo('v3', 2)), [`file[${DEMO_CONFIG}]`, unit], [`${service} refreshed`], 'unit and config change');
    t.deepEqual((await starts()).slice(2), ['unit=2 config=v3'], 'two notifications, one restart');

    // A drop-in written by a plain File: only the Service can see the daemon-reload owed; the restart runs the new unit.
    const dropIn = '[Service]\nEnvironment=DEMO_UNIT=3\n';
    converged(
      t,
      await converge(guest, demo('v3', 2, { dropIn })),
      [`directory[${DEMO_DROP_IN_DIR}]`, `file[${DEMO_DROP_IN_DIR}/10-version.conf]`],
      [`${service} refreshed`],
      'drop-in',
    );
    t.deepEqual((await starts()).slice(3), ['unit=3 config=v3'], 'the restart ran the reloaded unit (daemon-reload came first)');
    t.is((await show(guest, 'meshvm-demo.service', 'NeedDaemonReload')).NeedDaemonReload, 'no');

    // masked, then unmasked (a vendor unit: systemctl cannot mask a unit whose file is in /etc/systemd/system); each once.
    converged(
      t,
      await converge(guest, demo('v3', 2, { dropIn, dnsmasqMasked: true })),
      ['file[/etc/dnsmasq.d/meshvm-demo.conf]', 'service[dnsmasq.service]'],
      ['service[dnsmasq.service] refreshed'],
      'mask',
    );
    t.is((await guest.exec(['systemctl', 'is-active', 'dnsmasq.service'])).stdout, 'inactive', 'a masked service is not restarted when notified');
    t.is((await guest.exec(['systemctl', 'is-enabled', 'dnsmasq.service'])).stdout, 'masked');
    t.is((await show(guest, 'dnsmasq.service', 'LoadState')).LoadState, 'masked');
    converged(t, await converge(guest, demo('v3', 2, { dropIn, dnsmasqMasked: true })), [], [], 'mask again');
    converged(t, await converge(guest, demo('v3', 2, { dropIn, dnsmasqMasked: false })), ['service[dnsmasq.service]'], [], 'unmask');
    t.is((await guest.exec(['systemctl', 'is-enabled', 'dnsmasq.service'])).stdout, 'disabled');
    converged(t, await converge(guest, demo('v3', 2, { dropIn, dnsmasqMasked: false })), [], [], 'unmask again');

    t.is((await starts()).length, 4, 'four starts in all: the first, the config change, the unit change, the drop-in');
    t.is(await out(guest, ['systemctl', 'is-active', 'meshvm-demo.service']), 'active');
    t.log(`service test: ${Date.now() - started} ms`);
  },
);

guestTest(
  'SystemdUnit: the converge timer passes systemd-analyze verify and is enabled once; a unit systemd-analyze rejects never reaches the live file',
  async (t) => {
    const started = Date.now();
    const guest = await bootGuest(t);
    const timer = {
      name: 'converge-timer',
      recipes: [
        {
          recipe: 'converge-timer',
          // a command that exists (verify checks it); a first run an hour away, so it never fires during the test
          attributes: {
            command: `/usr/local/bin/node ${MESHVM_DIR}/bin/meshvm.js converge /etc/meshvm/runlist.yaml`,
            onBootSec: '1h',
            every: '30min',
            splay: '5min',
          },
        },
      ],
    };
    // and the boot converge (meshvm-boot.service, enabled, not started: it runs at the next boot, before istio)
    const refs = [
      'systemd_unit[/etc/systemd/system/meshvm.service]',
      'systemd_unit[/etc/systemd/system/meshvm.timer]',
      'service[meshvm.timer]',
      'systemd_unit[/etc/systemd/system/meshvm-boot.service]',
      'service[meshvm-boot.service]',
    ];
    converged(t, await converge(guest, timer), refs, [], 'first converge');
    const verify = await guest.exec([
      'systemd-analyze',
      'verify',
      '--man=no',
      '/etc/systemd/system/meshvm.timer',
      '/etc/systemd/system/meshvm.service',
      '/etc/systemd/system/meshvm-boot.service',
    ]);
    t.is(verify.exitCode, 0, verify.stderr);
    t.is(await out(guest, ['systemctl', 'is-enabled', 'meshvm.timer']), 'enabled');
    t.is(await out(guest, ['systemctl', 'is-active', 'meshvm.timer']), 'active');
    t.is(await out(guest, ['systemctl', 'is-enabled', 'meshvm-boot.service']), 'enabled');
    t.is((await guest.exec(['systemctl', 'is-active', 'meshvm-boot.service'])).stdout, 'inactive', 'enabled for the next boot, not run by the converge');
    const timerFile = (await guest.readFile('/etc/systemd/system/meshvm.timer')) ?? '';
    for (const line of ['OnBootSec=1h', 'OnUnitActiveSec=30min', 'RandomizedDelaySec=5min', 'Persistent=yes', 'WantedBy=timers.target'])
      t.regex(timerFile, new RegExp(`^${line}$`, 'm'));
    // what systemd made of it (OnUnitActiveSec shows once the service has run)
    const props = await show(guest, 'meshvm.timer', 'RandomizedDelayUSec', 'TimersMonotonic', 'Persistent', 'NeedDaemonReload');
    t.is(props.RandomizedDelayUSec, '5min');
    t.regex(props.TimersMonotonic ?? '', /OnBootUSec=1h\b/);
    t.is(props.Persistent, 'yes');
    t.is(props.NeedDaemonReload, 'no');
    converged(t, await converge(guest, timer), [], [], 'second converge');

    // A new unit that systemd-analyze rejects: refused, never written.
    const broken = (name: string) =>
      system({ units: [{ name, sections: { Unit: { Description: 'refused' }, Service: { Type: 'oneshot', ExecStart: '/usr/bin/no-such-program' } } }] });
    const error = refused(t, await converge(guest, broken('meshvm-broken.service')), 'systemd_unit[/etc/systemd/system/meshvm-broken.service]');
    t.regex(error, /no-such-program is not executable/);
    t.regex(error, /the live \/etc\/systemd\/system\/meshvm-broken\.service was left untouched/);
    t.is(await guest.readFile('/etc/systemd/system/meshvm-broken.service'), undefined);

    // A rejected update of a live unit: the live file and systemd's view of it stay as they were.
    const before = await guest.readFile('/etc/systemd/system/meshvm.service');
    refused(t, await converge(guest, broken('meshvm.service')), 'systemd_unit[/etc/systemd/system/meshvm.service]');
    t.is(await guest.readFile('/etc/systemd/system/meshvm.service'), before);
    t.is((await show(guest, 'meshvm.service', 'NeedDaemonReload')).NeedDaemonReload, 'no');
    t.deepEqual((await guest.exec(['sh', '-c', 'ls -A /etc/systemd/system | grep meshvm-new || true'])).stdout, '', 'no staged file left behind');
    converged(t, await converge(guest, timer), [], [], 'the timer runlist after the refusals');
    t.log(`systemd-unit test: ${Date.now() - started} ms`);
  },
);

// ---------------------------------------------------------------------------------------------------------------
// Package

guestTest(
  'Package: a .deb by verified sha256 from a path and from an https URL, apt present, pinned and absent; a wrong checksum installs nothing',
  async (t) => {
    const started = Date.now();
    const debs = await mkdtemp(path.join(tmpdir(), 'meshvm-debs-'));
    t.teardown(() => rm(debs, { recursive: true, force: true }));
    // its postinst (run by dpkg under apt under meshvm) keeps the environment it was given
    const local = await buildDeb(debs, 'meshvm-test-local', '1.0', { scripts: { postinst: '#!/bin/sh\nenv > /var/tmp/meshvm-test-local.postinst-env\n' } });
    const remote = await buildDeb(debs, 'meshvm-test-remote', '2.1');
    const other = await buildDeb(debs, 'meshvm-test-other', '1.0');
    const guest = await bootGuest(t, { binds: [{ host: debs, guest: '/srv/debs' }] });
    const https = await serveHttps(t, guest, debs);
    const status = async (name: string) => (await guest.exec(['dpkg-query', '-W', '-f', '${db:Status-Abbrev}${Version}', name])).stdout.trim();
    const cached = async () => (await out(guest, ['sh', '-c', 'ls -A /var/cache/meshvm/debs 2>/dev/null || true'])).split('\n').filter(Boolean);
    const policy = await out(guest, ['apt-cache', 'policy', 'tree']);
    const treeVersion = /Candidate: (\S+)/.exec(policy)?.[1] ?? '';
    t.not(treeVersion, '', policy);

    const packages = (hello: 'present' | 'absent') =>
      system({
        packages: [
          { name: 'meshvm-test-local', deb: { path: `/srv/debs/${path.basename(local.file)}`, sha256: local.sha256 } },
          { name: 'meshvm-test-remote', deb: { url: `${https.url}/${path.basename(remote.file)}`, sha256: remote.sha256, caFile: '/etc/meshvm-test/ca.pem' } },
          { name: 'hello', ensure: hello },
          { name: 'tree', version: treeVersion },
        ],
      });
    // plan's preflight: the .debs checked (the downloaded one streamed through sha256, not kept), what apt has said
    await guest.writeFile('/root/packages-plan.yaml', JSON.stringify(packages('present')));
    const plan = await guest.exec(['node', `${MESHVM_DIR}/bin/meshvm.js`, 'plan', '/root/packages-plan.yaml'], {
      cwd: '/root',
      timeoutMs: 120_000,
      env: { NO_COLOR: '1' },
    });
    t.is(plan.exitCode, 0, plan.stderr);
    t.regex(plan.stdout, /^preflight: package\[meshvm-test-local\]: \/srv\/debs\/\S+: the sha256 required, package meshvm-test-local 1\.0$/m);
    t.regex(plan.stdout, /^preflight: package\[meshvm-test-remote\]: https:\/\/\S+: \d+ bytes with the sha256 required \(not kept in plan/m);
    t.regex(plan.stdout, /^preflight: package\[hello\]: apt has hello \S+$/m);
    t.deepEqual(await cached(), [], 'plan kept nothing');
    t.deepEqual(https.requests.splice(0), [`/${path.basename(remote.file)}`], "plan's one fetch (not counted below)");

    converged(
      t,
      await converge(guest, packages('present')),
      ['package[meshvm-test-local]', 'package[meshvm-test-remote]', 'package[hello]', 'package[tree]'],
      [],
      'first converge',
    );
    t.is(await status('meshvm-test-local'), 'ii 1.0');
    const postinstEnv = (await guest.readFile('/var/tmp/meshvm-test-local.postinst-env')) ?? '';
    t.regex(postinstEnv, /^DEBIAN_FRONTEND=noninteractive$/m, 'the postinst ran, with what apt is given');
    for (const canary of Object.values(ENV_CANARIES)) t.false(postinstEnv.includes(canary), "no secret of meshvm's environment in the maintainer script's");
    t.is(await guest.readFile('/usr/share/meshvm-test-local/VERSION'), '1.0\n');
    t.is(await status('meshvm-test-remote'), 'ii 2.1');
    t.deepEqual(https.requests, [`/${path.basename(remote.file)}`], 'downloaded once');
    t.deepEqual(await cached(), [`meshvm-test-remote_${remote.sha256}.deb`], 'the download is in the cache under its checksum');
    t.is((await out(guest, ['sha256sum', `/var/cache/meshvm/debs/meshvm-test-remote_${remote.sha256}.deb`])).split(' ')[0], remote.sha256);
    t.is(await status('hello'), 'ii 2.10-3');
    t.is(await out(guest, ['hello']), 'Hello, world!');
    t.is(await status('tree'), `ii ${treeVersion}`);
    converged(t, await converge(guest, packages('present')), [], [], 'second converge');
    t.is(https.requests.length, 1, 'nothing downloaded when nothing changed');

    // A wrong checksum, local or downloaded: refused in preflight, before anything changes; nothing installed, nothing cached.
    const wrong = 'f'.repeat(64);
    const fromPath = refusedInPreflight(
      t,
      await converge(guest, system({ packages: [{ name: 'meshvm-test-other', deb: { path: `/srv/debs/${path.basename(other.file)}`, sha256: wrong } }] })),
      'package[meshvm-test-other]',
    );
    t.regex(fromPath, new RegExp(`has sha256 ${other.sha256}, not ${wrong}; refusing to install it`));
    const fromUrl = refusedInPreflight(
      t,
      await converge(
        guest,
        system({
          packages: [
            { name: 'meshvm-test-other', deb: { url: `${https.url}/${path.basename(other.file)}`, sha256: wrong, caFile: '/etc/meshvm-test/ca.pem' } },
          ],
        }),
      ),
      'package[meshvm-test-other]',
    );
    t.regex(fromUrl, /refusing it/);
    t.is(https.requests.length, 2, 'the wrong download was fetched, then refused');
    t.is((await guest.exec(['dpkg-query', '-W', 'meshvm-test-other'])).exitCode, 1, 'never reached dpkg');
    t.deepEqual(await cached(), [`meshvm-test-remote_${remote.sha256}.deb`], 'the refused download is not kept');
    t.is(await guest.readFile('/var/lib/meshvm/debs/meshvm-test-other.sha256'), undefined);

    // absent: removed once, then nothing to do.
    converged(t, await converge(guest, packages('absent')), ['package[hello]'], [], 'hello absent');
    t.notRegex(await status('hello'), /^ii/);
    t.not((await guest.exec(['sh', '-c', 'command -v hello'])).exitCode, 0);
    converged(t, await converge(guest, packages('absent')), [], [], 'hello absent again');
    t.log(`package test: ${Date.now() - started} ms`);
  },
);

// ---------------------------------------------------------------------------------------------------------------
// The resolver

const CLUSTER_NAME = 'kubernetes.default.svc.cluster.local';
const CLUSTER_IP = '10.96.0.1';
const KUBEDNS = { address: '127.0.0.1', port: 5354 };

/** A stand-in for the cluster DNS: a dnsmasq of its own in the guest (a transient unit), answering CLUSTER_NAME only. */
async function startKubedns(guest: Guest): Promise<void> {
  await guest.exec(
    [
      'systemd-run',
      '--unit=kubedns',
      '--',
      'dnsmasq',
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      `--listen-address=${KUBEDNS.address}`,
      `--port=${KUBEDNS.port}`,
      `--address=/${CLUSTER_NAME}/${CLUSTER_IP}`,
      '--log-queries',
      '--log-facility=-',
    ],
    { check: true },
  );
  const answers = async () => (await dig(guest, [`@${KUBEDNS.address}`, '-p', String(KUBEDNS.port), CLUSTER_NAME])) === CLUSTER_IP;
  await until(answers, { what: 'the kubedns stand-in to answer', timeoutMs: 10_000, intervalMs: 100 }).catch(async (error: Error) => {
    throw new Error(`${error.message}:\n${(await guest.exec(['journalctl', '-u', 'kubedns', '--no-pager'])).stdout}`);
  });
}

async function dig(guest: Guest, args: string[]): Promise<string> {
  return (await guest.exec(['dig', '+short', '+time=2', '+tries=1', ...args])).stdout.trim();
}

/** The queries the kubedns stand-in received. */
async function kubednsQueries(guest: Guest): Promise<string[]> {
  const log = (await guest.exec(['journalctl', '-u', 'kubedns', '--no-pager', '-o', 'cat'])).stdout;
  return log.split('\n').filter((line) => /query\[A\]/.test(line));
}

/**
 * systemd-resolved sends nothing to global DNS servers ("Network is down") while no link other than loopback is up
 * with a routable address, as in a guest with loopback only. A veth pair with both ends inside the guest's namespace
 * is such a link, like a VM's NIC; it leads nowhere, and every query still goes over 127.0.0.1.
 */
async function addRoutableLink(guest: Guest): Promise<void> {
  await guest.exec(
    [
      'sh',
      '-ec',
      [
        'ip link add meshvm-nic type veth peer name meshvm-peer',
        'ip addr add 10.250.0.2/24 dev meshvm-nic',
        'ip link set meshvm-peer up',
        'ip link set meshvm-nic up',
      ].join('\n'),
    ],
    { check: true },
  );
}

guestTest('ResolvConf on systemd-resolved: the drop-in routes ~cluster.local to the declared server, and resolvectl query answers from it', async (t) => {
  const started = Date.now();
  const guest = await bootGuest(t, { resolved: true });
  await addRoutableLink(guest);
  await startKubedns(guest);
  const before = await guest.exec(['resolvectl', 'query', CLUSTER_NAME]);
  t.not(before.exitCode, 0, 'no server for the cluster name before the converge');
  const resolvedPid = (await show(guest, 'systemd-resolved.service', 'MainPID')).MainPID;

  const runlist = system({ resolvConf: { nameservers: [`${KUBEDNS.address}:${KUBEDNS.port}`], routeDomains: ['cluster.local'] } });
  converged(t, await converge(guest, runlist), ['resolv_conf[meshvm]'], [], 'first converge');
  const dropIn = await guest.readFile('/etc/systemd/resolved.conf.d/meshvm.conf');
  t.regex(dropIn ?? '', /^DNS=127\.0\.0\.1:5354$/m);
  t.regex(dropIn ?? '', /^Domains=~cluster\.local$/m);
  t.is(await out(guest, ['readlink', '/etc/resolv.conf']), '../run/systemd/resolve/stub-resolv.conf', 'resolv.conf left to systemd-resolved');
  t.not((await show(guest, 'systemd-resolved.service', 'MainPID')).MainPID, resolvedPid, 'systemd-resolved restarted for the new drop-in');

  const query = await guest.exec(['resolvectl', 'query', CLUSTER_NAME]);
  t.is(query.exitCode, 0, query.stderr);
  t.regex(query.stdout, new RegExp(`${CLUSTER_NAME.replaceAll('.', '\\.')}: ${CLUSTER_IP.replaceAll('.', '\\.')}`));
  t.true(
    (await kubednsQueries(guest)).some((line) => line.includes(CLUSTER_NAME) && line.includes('from 127.0.0.1')),
    'the query reached the declared server',
  );
  const status = await out(guest, ['resolvectl', 'status']);
  t.regex(status, /DNS Servers:? 127\.0\.0\.1:5354/);
  t.regex(status, /DNS Domain:? ~cluster\.local/);
  t.regex(await out(guest, ['getent', 'hosts', CLUSTER_NAME]), new RegExp(`^${CLUSTER_IP.replaceAll('.', '\\.')}\\s`), 'programs reach it through the stub');

  const restartedPid = (await show(guest, 'systemd-resolved.service', 'MainPID')).MainPID;
  converged(t, await converge(guest, runlist), [], [], 'second converge');
  t.is((await show(guest, 'systemd-resolved.service', 'MainPID')).MainPID, restartedPid, 'not restarted when nothing changed');
  t.log(`resolved test: ${Date.now() - started} ms`);
});

guestTest(
  'ResolvConf as a file + DnsmasqConfig on a plain host: getent and dig of a cluster name answer through dnsmasq; a config dnsmasq rejects stays out',
  async (t) => {
    const started = Date.now();
    const guest = await bootGuest(t);
    await startKubedns(guest);
    t.is((await guest.exec(['getent', 'hosts', CLUSTER_NAME])).exitCode, 2, 'unknown before the converge');

    const dnsmasq = (extraOptions: string[] = []) => ({
      listenAddresses: ['127.0.0.1'],
      upstream: { from: 'none' },
      forward: [{ domain: 'cluster.local', server: KUBEDNS.address, port: KUBEDNS.port }],
      extraOptions,
      notifies: ['dnsmasq'],
    });
    const runlist = (extraOptions?: string[]) =>
      system({
        dnsmasq: [dnsmasq(extraOptions)],
        services: [{ name: 'dnsmasq', enabled: true, running: true }],
        resolvConf: { nameservers: ['127.0.0.1'] },
      });
    converged(
      t,
      await converge(guest, runlist()),
      ['dnsmasq_config[/etc/dnsmasq.d/meshvm.conf]', 'service[dnsmasq.service]', 'resolv_conf[meshvm]'],
      ['service[dnsmasq.service] not-needed'],
      'first converge',
    );
    const resolvConf = await guest.readFile('/etc/resolv.conf');
    t.regex(resolvConf ?? '', /^# Managed by meshvm/);
    t.regex(resolvConf ?? '', /^nameserver 127\.0\.0\.1$/m);
    t.regex(
      (await guest.readFile('/etc/dhcp/dhclient-enter-hooks.d/meshvm')) ?? '',
      /make_resolv_conf\(\) \{ :; \}/,
      'dhclient is installed: its hook keeps leases off the file',
    );
    t.is(await out(guest, ['systemctl', 'is-enabled', 'dnsmasq.service']), 'enabled');

    t.regex(await out(guest, ['getent', 'hosts', CLUSTER_NAME]), new RegExp(`^${CLUSTER_IP.replaceAll('.', '\\.')}\\s`));
    const viaResolvConf = await guest.exec(['dig', '+time=2', '+tries=1', CLUSTER_NAME]);
    t.regex(viaResolvConf.stdout, /SERVER: 127\.0\.0\.1#53\b/, 'dig asked the nameserver of /etc/resolv.conf: dnsmasq on port 53');
    t.regex(viaResolvConf.stdout, new RegExp(`^${CLUSTER_NAME.replaceAll('.', '\\.')}\\.\\s.*\\sA\\s+${CLUSTER_IP.replaceAll('.', '\\.')}$`, 'm'));
    t.true(
      (await kubednsQueries(guest)).some((line) => line.includes(CLUSTER_NAME) && line.includes('from 127.0.0.1')),
      'dnsmasq forwarded it to the cluster DNS',
    );

    const dnsmasqPid = (await show(guest, 'dnsmasq.service', 'MainPID')).MainPID;
    converged(t, await converge(guest, runlist()), [], [], 'second converge');
    t.is((await show(guest, 'dnsmasq.service', 'MainPID')).MainPID, dnsmasqPid, 'dnsmasq not restarted when nothing changed');

    // A drop-in dnsmasq --test rejects: refused, the live file untouched, dnsmasq still answering.
    const live = await guest.readFile('/etc/dnsmasq.d/meshvm.conf');
    const error = refused(t, await converge(guest, runlist(['no-such-option'])), 'dnsmasq_config[/etc/dnsmasq.d/meshvm.conf]');
    t.regex(error, /verify command `dnsmasq --test --conf-file=%\{path\}` refused the new content/);
    t.regex(error, /no-such-option/);
    t.is(await guest.readFile('/etc/dnsmasq.d/meshvm.conf'), live);
    t.is((await show(guest, 'dnsmasq.service', 'MainPID')).MainPID, dnsmasqPid);
    t.is(await dig(guest, [CLUSTER_NAME]), CLUSTER_IP);
    t.log(`dnsmasq + file test: ${Date.now() - started} ms`);
  },
);
