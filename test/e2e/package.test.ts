// The .deb (npm run package) on a booted Debian 12 guest, as operators install it: from an apt repository (a local one,
// built here with dpkg-scanpackages and bound into the guest). apt-get install gives /usr/bin/meshvm and the units,
// enabling nothing; a converge with converge-timer enables the packaged units without writing copies; the package's
// meshvm.service converges (last-run.json, journal); apt-get remove disables the timer. Logs the install time against
// copying the plain executable (the boot-time cost; the download itself is the sizes over the VM's bandwidth).
import test from 'ava';
import { execa } from 'execa';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pkg from '../../package.json' with { type: 'json' };
import { bootContainer, type Guest } from '../helpers/guest/container.ts';
import { ensureRootfs } from '../helpers/guest/rootfs.ts';
import { e2eGate, ensureArtifact, EXECUTABLE, IMAGE, meshvmDeb, run, sha256File } from './lab.ts';

const ok = await e2eGate(test, 'the .deb in a booted guest');
const serial = ok ? test.serial : test.serial.skip;
const DEB_NAME = `meshvm_${pkg.version}_amd64.deb`;
const REPO = '/srv/meshvm-apt';
const PLAIN = '/srv/meshvm-plain';
let dir = '';
let guest: Guest | undefined;

/** A flat apt repository (Packages, Release) holding the .deb, as an artifact store would serve it. */
async function aptRepository(deb: string, repo: string): Promise<void> {
  await fs.mkdir(repo, { recursive: true });
  await fs.copyFile(deb, path.join(repo, DEB_NAME));
  const packages = (await execa('dpkg-scanpackages', ['--multiversion', '.'], { cwd: repo })).stdout;
  await fs.writeFile(path.join(repo, 'Packages'), `${packages}\n`);
  const sha = await sha256File(path.join(repo, 'Packages'));
  const size = (await fs.stat(path.join(repo, 'Packages'))).size;
  await fs.writeFile(path.join(repo, 'Release'), `Origin: meshvm\nLabel: meshvm\nSHA256:\n ${sha} ${size} Packages\n`);
}

if (ok) {
  test.before('the .deb, its apt repository and a guest', async (t) => {
    t.timeout(20 * 60_000, 'building the image and the artifact the first time');
    const log = (line: string) => t.log(line);
    await ensureArtifact(log);
    await ensureRootfs({ ...IMAGE, log });
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-package-e2e-'));
    const deb = await meshvmDeb(dir);
    log(`the .deb: ${deb}`);
    await aptRepository(deb, path.join(dir, 'repo'));
    await fs.mkdir(path.join(dir, 'plain'));
    await fs.copyFile(EXECUTABLE, path.join(dir, 'plain/meshvm'));
    const sizes = { deb: (await fs.stat(deb)).size, plain: (await fs.stat(EXECUTABLE)).size };
    log(`download: .deb ${(sizes.deb / 2 ** 20).toFixed(1)} MiB, plain executable ${(sizes.plain / 2 ** 20).toFixed(1)} MiB`);
    guest = await bootContainer({
      rootfs: IMAGE,
      binds: [
        { host: path.join(dir, 'repo'), guest: REPO },
        { host: path.join(dir, 'plain'), guest: PLAIN },
      ],
    });
    await guest.waitForBoot(120_000);
  });
  test.after.always(async () => {
    await guest?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });
}

function g(): Guest {
  if (!guest) throw new Error('no guest: the boot before the tests failed');
  return guest;
}

serial('apt-get install meshvm from an apt repository: the executable, the units (none enabled), the sample, the man page', async (t) => {
  t.timeout(5 * 60_000);
  const guest = g();
  await guest.writeFile('/etc/apt/sources.list.d/meshvm.list', `deb [trusted=yes] file:${REPO} ./\n`);
  const update = await guest.exec(['apt-get', 'update'], { timeoutMs: 120_000 });
  t.is(update.exitCode, 0, update.stderr);

  const started = performance.now();
  const install = await guest.exec(['apt-get', 'install', '-y', '--no-install-recommends', 'meshvm'], {
    timeoutMs: 240_000,
    env: { DEBIAN_FRONTEND: 'noninteractive' },
  });
  const installMs = performance.now() - started;
  t.is(install.exitCode, 0, `${install.stdout}\n${install.stderr}`);

  const sha = await sha256File(path.join(dir, 'plain/meshvm'));
  const plainStarted = performance.now();
  const plain = await guest.exec([
    'sh',
    '-ec',
    `cp ${PLAIN}/meshvm /usr/local/bin/meshvm.new; echo "${sha}  /usr/local/bin/meshvm.new" | sha256sum -c -; chmod 0755 /usr/local/bin/meshvm.new; mv /usr/local/bin/meshvm.new /usr/local/bin/meshvm-plain`,
  ]);
  const plainMs = performance.now() - plainStarted;
  t.is(plain.exitCode, 0, plain.stderr);
  t.log(
    `in the guest: apt-get install of the .deb ${(installMs / 1000).toFixed(1)} s; the plain executable copied, checked and moved ${(plainMs / 1000).toFixed(1)} s`,
  );

  t.is(await run(guest, ['/usr/bin/meshvm', '--version']), pkg.version);
  t.is(await run(guest, ['dpkg-query', '-W', '-f=${Status}', 'meshvm']), 'install ok installed');
  for (const unit of ['meshvm.service', 'meshvm.timer', 'meshvm-boot.service']) {
    t.regex(await run(guest, ['systemctl', 'cat', unit]), /^ExecStart=\/usr\/bin\/meshvm converge|^OnUnitActiveSec=30min/m, unit);
  }
  t.is((await guest.exec(['systemctl', 'is-enabled', 'meshvm.timer'])).stdout, 'disabled', 'the package enables nothing');
  t.not((await guest.exec(['systemctl', 'is-active', 'meshvm.timer'])).stdout, 'active');
  t.regex((await guest.readFile('/etc/meshvm/node.yaml.example')) ?? '', /^# attributes:$/m);
  t.is((await guest.exec(['test', '-s', '/usr/share/man/man1/meshvm.1.gz'])).exitCode, 0);
  t.is((await guest.exec(['test', '-s', '/usr/share/meshvm/schemas/node.schema.json'])).exitCode, 0);
});

serial('a converge with converge-timer enables the packaged units (no copies), and the package meshvm.service converges', async (t) => {
  t.timeout(5 * 60_000);
  const guest = g();
  const demo = await run(guest, ['meshvm', 'runlist', 'demo']);
  await guest.writeFile('/etc/meshvm/runlist.yaml', `${demo}\n  - recipe: converge-timer\n`);
  const first = await guest.exec(['meshvm', 'converge', '/etc/meshvm/runlist.yaml', '--json'], { timeoutMs: 120_000 });
  t.is(first.exitCode, 0, first.stderr);
  const refs = (JSON.parse(first.stdout) as { resources: { ref: string }[] }).resources.map((r) => r.ref);
  t.true(refs.includes('service[meshvm.timer]') && refs.includes('service[meshvm-boot.service]'), refs.join(' '));
  t.false(
    refs.some((ref) => ref.startsWith('systemd_unit')),
    'no unit written: the package has them',
  );
  t.is((await guest.exec(['sh', '-c', 'ls /etc/systemd/system/meshvm* 2>/dev/null'])).stdout, '', 'no copy in /etc/systemd/system');
  t.is((await guest.exec(['systemctl', 'is-enabled', 'meshvm.timer'])).stdout, 'enabled');
  t.is((await guest.exec(['systemctl', 'is-active', 'meshvm.timer'])).stdout, 'active');
  t.is((await guest.exec(['systemctl', 'is-enabled', 'meshvm-boot.service'])).stdout, 'enabled');

  const started = await guest.exec(['systemctl', 'start', 'meshvm.service'], { timeoutMs: 180_000 });
  t.is(started.exitCode, 0, started.stderr);
  t.is(await run(guest, ['systemctl', 'show', '-p', 'Result', '--value', 'meshvm.service']), 'success');
  const report = JSON.parse((await guest.readFile('/var/lib/meshvm/last-run.json')) ?? '{}') as { outcome?: string; summary?: { changed: number } };
  t.is(report.outcome, 'unchanged', 'the unit ran the converge: the machine was already converged');
  t.regex(await run(guest, ['journalctl', '-u', 'meshvm.service', '--no-pager', '-o', 'cat']), /nothing to do/);
});

serial('apt-get remove meshvm stops and disables the timer and the boot unit, removes its compile cache; the conffile stays until purge', async (t) => {
  t.timeout(5 * 60_000);
  const guest = g();
  // meshvm ran as root in the guest (the package's units): V8's compiled code of it is cached, and goes with the package
  t.is((await guest.exec(['test', '-d', '/var/cache/meshvm/compile-cache'])).exitCode, 0, 'the compile cache is there before');
  const removed = await guest.exec(['apt-get', 'remove', '-y', 'meshvm'], { timeoutMs: 120_000, env: { DEBIAN_FRONTEND: 'noninteractive' } });
  t.is(removed.exitCode, 0, removed.stderr);
  t.not((await guest.exec(['systemctl', 'is-enabled', 'meshvm.timer'])).stdout, 'enabled');
  t.not((await guest.exec(['systemctl', 'is-active', 'meshvm.timer'])).stdout, 'active');
  t.is((await guest.exec(['sh', '-c', 'ls /etc/systemd/system/*.wants/meshvm* 2>/dev/null'])).stdout, '', 'no enable link left dangling');
  t.not((await guest.exec(['test', '-e', '/usr/bin/meshvm'])).exitCode, 0);
  t.not((await guest.exec(['test', '-e', '/var/cache/meshvm/compile-cache'])).exitCode, 0, 'the compile cache went with it');
  t.truthy(await guest.readFile('/etc/meshvm/node.yaml.example'));
});
