// npm test's pretest (scripts/test-deps.ts) on a machine where systemd runs: in a booted Debian 12 guest, its aptInstall
// installs a package whose maintainer scripts enable and start its service (as debhelper's do, like openssh-server's),
// and the enabled unit files and the active units are the same before and after. (test-deps.test.ts shows the same on
// this machine's own files, where no systemd may be running to ask which units are active.)
import test from 'ava';
import { execa } from 'execa';
import fs from 'node:fs/promises';
import path from 'node:path';
import { bootContainer, canBootContainers, type Guest } from '../helpers/guest/container.ts';
import { ensureRootfs } from '../helpers/guest/rootfs.ts';
import { PROJECT, scratchRoot } from '../helpers/scratch.ts';

const NAME = 'meshvm-pretest-probe';
const MESHVM_DIR = '/srv/meshvm';

const gate = await canBootContainers();
const guestTest = gate.ok ? test.serial : test.serial.skip;
if (!gate.ok) test.skip(`the pretest in a booted guest is skipped on this machine (${gate.reason})`, () => {});

/** A package that asks, on install, to enable and start its service the way debhelper's scripts do. */
async function serviceDeb(dir: string): Promise<string> {
  const tree = path.join(dir, 'pkg');
  const file = async (rel: string, content: string, mode = 0o644) => {
    await fs.mkdir(path.dirname(path.join(tree, rel)), { recursive: true });
    await fs.writeFile(path.join(tree, rel), content);
    await fs.chmod(path.join(tree, rel), mode);
  };
  await file(
    'DEBIAN/control',
    `Package: ${NAME}\nVersion: 1.0\nArchitecture: all\nMaintainer: meshvm tests <tests@meshvm.invalid>\nDescription: a service (meshvm test)\n`,
  );
  await file(
    'DEBIAN/postinst',
    `#!/bin/sh\nset -e\nif [ "$1" = configure ]; then\n  deb-systemd-helper enable ${NAME}.service\n  deb-systemd-invoke start ${NAME}.service || true\nfi\n`,
    0o755,
  );
  await file(
    `lib/systemd/system/${NAME}.service`,
    `[Unit]\nDescription=meshvm pretest probe\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n`,
  );
  const deb = path.join(dir, `${NAME}.deb`);
  await execa('dpkg-deb', ['--root-owner-group', '--build', tree, deb]);
  return deb;
}

async function units(guest: Guest): Promise<{ enabled: string[]; active: string[] }> {
  const list = async (argv: string[]) =>
    (await guest.exec(['systemctl', ...argv, '--no-legend', '--plain', '--type=service,socket,timer,path'], { check: true })).stdout
      .split('\n')
      .map((line) => line.trim().split(/\s+/)[0]!)
      .filter(Boolean)
      .sort();
  return { enabled: await list(['list-unit-files', '--state=enabled']), active: await list(['list-units', '--state=active']) };
}

guestTest(`aptInstall in a booted guest: a package that enables and starts its service leaves enabled and active units as they were`, async (t) => {
  t.timeout(10 * 60_000);
  await ensureRootfs({ log: (line) => t.log(line) });
  const dir = await scratchRoot(t, 'meshvm-pretest-guest-');
  await serviceDeb(dir);
  const guest = await bootContainer({
    node: true,
    binds: [
      { host: PROJECT, guest: MESHVM_DIR },
      { host: dir, guest: '/srv/debs' },
    ],
  });
  try {
    await guest.waitForBoot(120_000);
    const before = await units(guest);
    t.true(before.active.length > 3, before.active.join(' '));
    const script = `const { aptInstall } = await import('${MESHVM_DIR}/scripts/test-deps.ts');
      console.log(JSON.stringify(await aptInstall(['/srv/debs/${NAME}.deb'], ['${NAME}'])));`;
    const run = await guest.exec(['node', '--input-type=module', '-e', script], { timeoutMs: 180_000 });
    t.is(run.exitCode, 0, run.stderr);
    const { undone, stopped } = JSON.parse(run.stdout) as { undone: string[]; stopped: string[] };
    t.true(
      undone.some((link) => link.endsWith(`multi-user.target.wants/${NAME}.service`)),
      `the enable link its postinst made was taken away: ${undone.join(' ')}`,
    );
    t.deepEqual(stopped, [], 'nothing had to be stopped: policy-rc.d kept it from starting');
    t.is((await guest.exec(['dpkg-query', '-W', '-f=${Status}', NAME])).stdout, 'install ok installed');
    t.deepEqual(await units(guest), before, 'the same unit files enabled and the same units active');
    t.is((await guest.exec(['systemctl', 'is-active', `${NAME}.service`])).stdout, 'inactive');
    t.is((await guest.exec(['test', '-e', '/usr/sbin/policy-rc.d'])).exitCode, 1, 'no policy-rc.d left behind');
  } finally {
    await guest.stop();
  }
});
