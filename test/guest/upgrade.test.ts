// Sidecar package upgrades on real dpkg and systemd in a booted Debian guest, through the real CLI and the sidecar recipes:
// a bad sha256 changes nothing (the guest's tree before and after), an upgrade installs once and restarts istio once, a
// broken .deb (its postinst fails) leaves the previous version installed and running, a rollback is the same operation.
// The fixture istio-sidecar .debs carry a fake istio.service that records each start (its version and InvocationID); the
// artifact store is an https server inside the guest's network namespace (test/helpers/guest/debs.ts).
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bootContainer, canBootContainers, type Guest } from '../helpers/guest/container.ts';
import { buildDeb, serveHttps } from '../helpers/guest/debs.ts';
import { ensureRootfs } from '../helpers/guest/rootfs.ts';
import { PROJECT } from '../helpers/scratch.ts';
import type { RunReport } from '../../engine/report.ts';

const gate = await canBootContainers();
const guestTest = gate.ok ? test : test.skip;
if (!gate.ok) test.skip(`sidecar upgrade guest tests are skipped on this machine (${gate.reason})`, () => {});
if (gate.ok) {
  test.before('build or reuse the guest image', async (t) => {
    t.timeout(20 * 60_000, 'building the Debian 12 image (run scripts/build-test-rootfs.ts ahead in CI)');
    await ensureRootfs({ log: (line) => t.log(line) });
  });
}

const MESHVM_DIR = '/opt/meshvm';
const STARTS = '/var/lib/istio-fake/starts';
const PACKAGE = 'package[istio-sidecar]';
const ISTIO = 'service[istio.service]';

/**
 * The fake sidecar: istio.service records "<version> <InvocationID>" at each start (ExecStartPre runs to completion before
 * `systemctl start` returns, so a start is on record when meshvm exits), then sleeps.
 */
function sidecarDeb(dir: string, version: string, opts: { brokenPostinst?: boolean } = {}) {
  return buildDeb(dir, 'istio-sidecar', version, {
    files: {
      '/lib/systemd/system/istio.service': [
        '[Unit]',
        'Description=fake Istio sidecar (meshvm tests)',
        '[Service]',
        'ExecStartPre=/usr/bin/istio-fake-record',
        'ExecStart=/bin/sleep infinity',
        '[Install]',
        'WantedBy=multi-user.target',
        '',
      ].join('\n'),
      '/usr/bin/istio-fake-record': {
        content: `#!/bin/sh\nmkdir -p ${path.dirname(STARTS)}\necho "$(cat /usr/share/istio-sidecar/VERSION) $INVOCATION_ID" >> ${STARTS}\n`,
        mode: 0o755,
      },
    },
    ...(opts.brokenPostinst && { scripts: { postinst: '#!/bin/sh\necho "the fixture postinst fails on purpose" >&2\nexit 1\n' } }),
  });
}

interface Run {
  exitCode: number;
  stderr: string;
  report: RunReport & { error?: string };
  changed: string[];
  refreshed: string[];
}

let runlists = 0;

/** Writes a runlist (the istiod flow's sidecar recipes) for this package into the guest; returns the converge/plan to run it. */
async function runlistFor(guest: Guest, pkg: { url: string; sha256: string }) {
  const file = `/root/runlist-${++runlists}.yaml`;
  const runlist = {
    name: 'sidecar-upgrade',
    attributes: { flow: 'istiod' },
    recipes: [
      { recipe: 'istio-proxy-user' },
      // no cluster here: the version-skew check has its own tests (test/recipes/restarts.test.ts)
      { recipe: 'sidecar', attributes: { versionSkew: 'ignore', package: { from: 'deb', ...pkg, caFile: '/etc/meshvm-test/ca.pem' } } },
      { recipe: 'sidecar-services' },
    ],
  };
  await guest.writeFile(file, JSON.stringify(runlist, null, 2) + '\n');
  return async (command: 'converge' | 'plan' = 'converge'): Promise<Run> => {
    const r = await guest.exec(['node', `${MESHVM_DIR}/bin/meshvm.js`, command, file, '--json'], { cwd: '/root', timeoutMs: 120_000, env: { NO_COLOR: '1' } });
    let report: Run['report'];
    try {
      report = JSON.parse(r.stdout) as Run['report'];
    } catch {
      throw new Error(`meshvm ${command} ${file} printed no JSON report (exit ${r.exitCode}):\n${r.stdout}\n${r.stderr}`);
    }
    return {
      exitCode: r.exitCode,
      stderr: r.stderr,
      report,
      changed: (report.resources ?? []).filter((x) => x.status === 'changed').map((x) => x.ref),
      refreshed: (report.notifications ?? []).filter((n) => n.status === 'refreshed').map((n) => n.ref),
    };
  };
}

/**
 * The guest's tree: each entry's path, type, mode and owner, a file's size and mtime (a rewrite shows), a link's target;
 * not a directory's mtime or size, which record that an entry was made and removed again. The kernel's, the logs' and
 * the test's own directories are left out.
 */
/** Where a root meshvm keeps V8's compiled code (bin/compile-cache.js): not machine state, left out of the snapshots. */
const COMPILE_CACHE = '/var/cache/meshvm/compile-cache';

async function tree(guest: Guest): Promise<string[]> {
  // pruned besides the runtime trees: V8's compiled code of meshvm itself (bin/compile-cache.js), made by any run as root
  const prune = ['/proc', '/sys', '/dev', '/run', '/tmp', '/var/tmp', '/var/log', MESHVM_DIR, '/srv', '/root', COMPILE_CACHE]
    .map((p) => `-path ${p}`)
    .join(' -o ');
  const print = `\\( -type f -printf '%p f %m %U:%G %s %T@\\n' \\) -o \\( -type l -printf '%p l %l\\n' \\) -o -printf '%p %y %m %U:%G\\n'`;
  const r = await guest.exec(['sh', '-c', `find / -xdev \\( ${prune} \\) -prune -o ${print} | sort`], { check: true });
  return r.stdout.split('\n').filter((line) => !line.startsWith(`${path.dirname(COMPILE_CACHE)} `));
}

async function status(guest: Guest): Promise<string> {
  return (await guest.exec(['dpkg-query', '-W', '-f', '${db:Status-Abbrev}${Version}', 'istio-sidecar'])).stdout.trim();
}

async function starts(guest: Guest): Promise<string[]> {
  return ((await guest.readFile(STARTS)) ?? '').split('\n').filter(Boolean);
}

async function istio(guest: Guest): Promise<{ active: string; invocation: string }> {
  const r = await guest.exec(['systemctl', 'show', '-p', 'ActiveState', '-p', 'InvocationID', 'istio'], { check: true });
  const values = Object.fromEntries(r.stdout.split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
  return { active: values.ActiveState ?? '', invocation: values.InvocationID ?? '' };
}

function nothingToDo(t: ExecutionContext, run: Run, what: string): void {
  t.is(run.exitCode, 0, `${what}: ${run.stderr}`);
  t.deepEqual([run.changed, run.refreshed], [[], []], `${what}: a no-op`);
}

guestTest(
  'sidecar package: a bad sha256 changes nothing; upgrade, a broken upgrade, rollback: one install and one restart each, the old one kept running',
  async (t) => {
    const started = Date.now();
    const debs = await mkdtemp(path.join(tmpdir(), 'meshvm-upgrade-'));
    t.teardown(() => rm(debs, { recursive: true, force: true }));
    const v12 = await sidecarDeb(debs, '1.2.0');
    const v13 = await sidecarDeb(debs, '1.3.0');
    const broken = await sidecarDeb(debs, '1.4.0', { brokenPostinst: true });
    const impostor = await buildDeb(debs, 'meshvm-test-impostor', '1.0');
    const guest = await bootContainer({
      node: true,
      binds: [
        { host: PROJECT, guest: MESHVM_DIR },
        { host: debs, guest: '/srv/debs' },
      ],
    });
    t.teardown(() => guest.stop());
    await guest.waitForBoot();
    const https = await serveHttps(t, guest, debs);
    const at = (deb: { file: string; sha256: string }) => ({ url: `${https.url}/${path.basename(deb.file)}`, sha256: deb.sha256 });

    // A wrong sha256 on a fresh machine: refused in preflight, one line, and the guest's tree is as it was.
    const wrong = { ...at(v12), sha256: 'e'.repeat(64) };
    const badRun = await runlistFor(guest, wrong);
    const before = await tree(guest);
    const bad = await badRun();
    t.is(bad.exitCode, 1);
    t.deepEqual(bad.changed, []);
    const errorLines = bad.stderr.trim().split('\n');
    t.is(errorLines.length, 1, bad.stderr);
    t.regex(
      errorLines[0]!,
      new RegExp(
        `^meshvm: preflight: ${PACKAGE.replace(/[[\]]/g, '\\$&')} \\(declared at \\S*recipes/sidecar.ts:\\d+\\): the download of .* has sha256 ${v12.sha256}, not the ${wrong.sha256} the spec requires; refusing it; nothing was changed$`,
      ),
    );
    t.deepEqual(await tree(guest), before, 'no account, no directory, no cache, no lock file, no report');
    t.regex(await status(guest), /^$|^un/, 'dpkg never saw it');

    // The right sha256 of the wrong package (it would never converge): refused in preflight once downloaded; nothing kept.
    const wrongPackage = await (await runlistFor(guest, at(impostor)))();
    t.is(wrongPackage.exitCode, 1);
    t.regex(
      wrongPackage.report.error ?? '',
      /^preflight: package\[istio-sidecar\] .*\.deb is the package meshvm-test-impostor, not istio-sidecar; .*nothing was changed$/,
    );
    t.deepEqual(await tree(guest), before, 'the download is not kept');

    // 1.2: installed, istio started once.
    const install12 = await runlistFor(guest, at(v12));
    const first = await install12();
    t.is(first.exitCode, 0, first.stderr);
    t.true(first.changed.includes(PACKAGE) && first.changed.includes(ISTIO), first.changed.join(', '));
    t.is(await status(guest), 'ii 1.2.0');
    t.is((await starts(guest)).length, 1);
    t.regex((await starts(guest))[0]!, /^1\.2\.0 /);
    nothingToDo(t, await install12(), 'converge 1.2 again');

    // Plan of the upgrade: would change, the download checked and not kept.
    const install13 = await runlistFor(guest, at(v13));
    const plan = await install13('plan');
    t.is(plan.exitCode, 0, plan.stderr);
    t.deepEqual(
      plan.report.resources.filter((r) => r.status === 'would-change').map((r) => r.ref),
      [PACKAGE],
    );
    t.is(await guest.readFile(`/var/cache/meshvm/debs/istio-sidecar_${v13.sha256}.deb`), undefined, 'plan kept nothing');

    // 1.3: one install, one restart.
    const up = await install13();
    t.is(up.exitCode, 0, up.stderr);
    t.deepEqual([up.changed, up.refreshed], [[PACKAGE], [ISTIO]]);
    t.is(await status(guest), 'ii 1.3.0');
    const afterUpgrade = await starts(guest);
    t.is(afterUpgrade.length, 2, afterUpgrade.join('\n'));
    t.regex(afterUpgrade[1]!, /^1\.3\.0 /);
    nothingToDo(t, await install13(), 'converge 1.3 again');

    // 1.4, whose postinst fails: 1.3 is put back, istio was not restarted and runs 1.3; the error says so.
    const running = await istio(guest);
    const brokenRun = await runlistFor(guest, at(broken));
    const failed = await brokenRun();
    t.is(failed.exitCode, 1);
    const failure = failed.report.resources.find((r) => r.status === 'failed');
    t.is(failure?.ref, PACKAGE);
    t.regex(
      failure?.error ?? '',
      /installing .*istio-sidecar_.*\.deb failed, and istio-sidecar 1\.3\.0 is installed again \(put back from .*\) and istio still runs it: /,
    );
    t.regex(failure?.error ?? '', /the fixture postinst fails on purpose|post-installation script subprocess returned error exit status 1/);
    t.log(`the broken upgrade's error: ${failure?.error}`);
    t.deepEqual(failed.refreshed, [], 'no restart');
    t.is(await status(guest), 'ii 1.3.0');
    t.deepEqual(await istio(guest), running, 'the same istio process runs on');
    t.deepEqual(await starts(guest), afterUpgrade);
    nothingToDo(t, await install13(), 'converge 1.3 after the broken one');

    // Rollback to 1.2: the same operation (a downgrade), from the cache; one restart.
    const downloads = https.requests.length;
    const back = await install12();
    t.is(back.exitCode, 0, back.stderr);
    t.deepEqual([back.changed, back.refreshed], [[PACKAGE], [ISTIO]]);
    t.is(await status(guest), 'ii 1.2.0');
    t.is(https.requests.length, downloads, '1.2 came from the cache');
    const afterRollback = await starts(guest);
    t.is(afterRollback.length, 3, afterRollback.join('\n'));
    t.regex(afterRollback[2]!, /^1\.2\.0 /);
    nothingToDo(t, await install12(), 'converge 1.2 after the rollback');
    t.log(`upgrade test: ${Date.now() - started} ms, ${https.requests.length} downloads`);
  },
);
