// npm test's pretest (scripts/test-deps.ts) installs Debian packages without starting or enabling their services.
// First the hold itself on scratch directories; then for real: apt-get installs a throwaway .deb whose maintainer
// scripts do what debhelper's do (deb-systemd-helper enable, update-rc.d defaults, invoke-rc.d start), and the host's
// service links, policy-rc.d and running services are as before; the package is purged afterwards.
import test from 'ava';
import { execa, execaSync } from 'execa';
import fs from 'node:fs/promises';
import path from 'node:path';
import { POLICY_DENY, POLICY_RC_D, SERVICE_LINK_DIRS, aptInstall, serviceLinks, unitsIn, withServicesHeld } from '../../scripts/test-deps.ts';
import { scratchRoot } from '../helpers/scratch.ts';

test('while held, policy-rc.d denies (exit 101); afterwards the added links are gone, old ones and policy-rc.d as before', async (t) => {
  const dir = await scratchRoot(t);
  const policy = path.join(dir, 'policy-rc.d');
  const systemd = path.join(dir, 'systemd');
  await fs.mkdir(path.join(systemd, 'multi-user.target.wants'), { recursive: true });
  await fs.symlink('/lib/systemd/system/old.service', path.join(systemd, 'multi-user.target.wants/old.service'));
  await fs.writeFile(policy, '#!/bin/sh\nexit 0\n', { mode: 0o700 });
  await fs.chmod(policy, 0o700);

  const { result, undone } = await withServicesHeld(
    async () => {
      t.is(await fs.readFile(policy, 'utf8'), POLICY_DENY);
      await fs.symlink('/lib/systemd/system/new.service', path.join(systemd, 'multi-user.target.wants/new.service'));
      await fs.symlink('/lib/systemd/system/new.service', path.join(systemd, 'newalias.service'));
      return (await execa(policy, ['new', 'start'], { reject: false })).exitCode;
    },
    { policy, linkDirs: [systemd] },
  );
  t.is(result, 101, 'policy-rc.d says "not allowed" while the install runs');
  t.deepEqual(undone.sort(), [path.join(systemd, 'multi-user.target.wants/new.service'), path.join(systemd, 'newalias.service')]);
  t.deepEqual([...(await serviceLinks([systemd])).keys()], [path.join(systemd, 'multi-user.target.wants/old.service')]);
  t.is(await fs.readFile(policy, 'utf8'), '#!/bin/sh\nexit 0\n', 'the policy-rc.d that was there is put back');
  t.is((await fs.stat(policy)).mode & 0o777, 0o700);
});

test('without a policy-rc.d before, none after; links are undone also when the install fails', async (t) => {
  const dir = await scratchRoot(t);
  const policy = path.join(dir, 'policy-rc.d');
  const rc2 = path.join(dir, 'rc2.d');
  await fs.mkdir(rc2);
  const failed = withServicesHeld(
    async () => {
      await fs.symlink('../init.d/x', path.join(rc2, 'S01x'));
      throw new Error('dpkg failed');
    },
    { policy, linkDirs: [rc2] },
  );
  await t.throwsAsync(failed, { message: 'dpkg failed' });
  t.deepEqual(await fs.readdir(rc2), []);
  await t.throwsAsync(fs.stat(policy), { code: 'ENOENT' });
});

test('unitsIn picks the systemd units from dpkg -L', (t) => {
  const list = [
    '/.',
    '/lib/systemd/system',
    '/lib/systemd/system/ssh.service',
    '/lib/systemd/system/ssh@.service',
    '/lib/systemd/system/ssh.socket',
    '/usr/lib/systemd/system/x.timer',
    '/etc/init.d/ssh',
    '/lib/systemd/system/rescue.target.wants/ssh.service',
  ].join('\n');
  t.deepEqual(unitsIn(list), ['ssh.service', 'ssh@.service', 'ssh.socket', 'x.timer']);
});

const NAME = 'meshvm-test-dummy';

async function dummyDeb(dir: string, marks: string): Promise<string> {
  const tree = path.join(dir, 'pkg');
  const file = async (rel: string, content: string, mode = 0o644) => {
    await fs.mkdir(path.dirname(path.join(tree, rel)), { recursive: true });
    await fs.writeFile(path.join(tree, rel), content, { mode });
    await fs.chmod(path.join(tree, rel), mode);
  };
  await file(
    'DEBIAN/control',
    `Package: ${NAME}\nVersion: 1.0\nArchitecture: all\nMaintainer: meshvm tests <tests@meshvm.invalid>\nDescription: throwaway package with a service (meshvm test)\n`,
  );
  await file(
    'DEBIAN/postinst',
    `#!/bin/sh\nset -e\ntouch ${marks}/postinst\nif [ "$1" = configure ]; then\n  deb-systemd-helper enable ${NAME}.service\n  update-rc.d ${NAME} defaults >/dev/null\n  deb-systemd-invoke start ${NAME}.service || true\n  invoke-rc.d ${NAME} start || true\nfi\n`,
    0o755,
  );
  await file(
    'DEBIAN/postrm',
    `#!/bin/sh\nset -e\nif [ "$1" = purge ]; then\n  update-rc.d ${NAME} remove >/dev/null\n  deb-systemd-helper purge ${NAME}.service >/dev/null\nfi\n`,
    0o755,
  );
  await file(
    `lib/systemd/system/${NAME}.service`,
    `[Unit]\nDescription=meshvm test dummy\n[Service]\nType=oneshot\nExecStart=/bin/touch ${marks}/started\n[Install]\nWantedBy=multi-user.target\n`,
  );
  await file(
    `etc/init.d/${NAME}`,
    `#!/bin/sh\n### BEGIN INIT INFO\n# Provides: ${NAME}\n# Required-Start:\n# Required-Stop:\n# Default-Start: 2 3 4 5\n# Default-Stop: 0 1 6\n# Short-Description: meshvm test dummy\n### END INIT INFO\n[ "$1" = start ] && touch ${marks}/started\nexit 0\n`,
    0o755,
  );
  const deb = path.join(dir, `${NAME}.deb`);
  await execa('dpkg-deb', ['--root-owner-group', '--build', tree, deb]);
  return deb;
}

const canInstall =
  process.getuid?.() === 0 &&
  execaSync('sh', ['-c', 'command -v apt-get && command -v dpkg-deb && command -v deb-systemd-helper'], { reject: false }).exitCode === 0;
const real = canInstall ? test.serial : test.skip;

real(
  `apt-get installs a package with a service (${canInstall ? 'real apt/dpkg' : 'skipped: needs root, apt-get, dpkg-deb, deb-systemd-helper'}): nothing enabled, nothing started`,
  async (t) => {
    const dir = await scratchRoot(t, 'meshvm-deps-');
    const marks = path.join(dir, 'marks');
    await fs.mkdir(marks);
    const deb = await dummyDeb(dir, marks);
    const links = await serviceLinks();
    const policy = await fs.readFile(POLICY_RC_D, 'utf8').catch(() => undefined);
    const active = async () => (await execa('systemctl', ['is-active', `${NAME}.service`], { reject: false })).stdout.trim();
    t.teardown(async () => {
      await withServicesHeld(() => execa('dpkg', ['--purge', NAME], { reject: false }));
    });

    const { undone, stopped } = await aptInstall([deb], [NAME]);
    t.true(await fs.stat(path.join(marks, 'postinst')).then(() => true), 'the maintainer script ran (and asked to enable and start)');
    t.true(
      undone.some((link) => link.endsWith(`multi-user.target.wants/${NAME}.service`)),
      `the enable link deb-systemd-helper made was taken away: ${undone.join(' ')}`,
    );
    t.deepEqual(await serviceLinks(), links, `no service link under ${SERVICE_LINK_DIRS.join(' ')} differs from before`);
    t.is(await fs.readFile(POLICY_RC_D, 'utf8').catch(() => undefined), policy, 'policy-rc.d as it was');
    await t.throwsAsync(fs.stat(path.join(marks, 'started')), { code: 'ENOENT' }, 'the service never started');
    t.deepEqual(stopped, []);
    t.not(await active(), 'active');
    t.is((await execa('dpkg-query', ['-W', '-f=${Status}', NAME])).stdout, 'install ok installed');
  },
);
