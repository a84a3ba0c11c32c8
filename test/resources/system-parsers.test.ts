// Pure parsers and renderers of the system resources, on captured command output.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseDpkgQuery, packageType } from '../../resources/package.ts';
import { parseSystemctlShow, unitStatus, unitName, unloadedUnitFiles } from '../../resources/systemd.ts';
import { renderUnit, systemdUnitSpec } from '../../resources/systemd-unit.ts';
import { Package } from '../../resources/package.ts';
import { Service, serviceType } from '../../resources/service.ts';
import { localHost } from '../../engine/host-local.ts';
import type { Host } from '../../engine/host.ts';
import { PROJECT, scratchRoot, seed } from '../helpers/scratch.ts';

test('dpkg-query output: installed packages and versions; removed-but-configured is not installed', async (t) => {
  const captured = await fs.readFile(path.join(PROJECT, 'test/fixtures/dpkg/query.txt'), 'utf8');
  const parsed = parseDpkgQuery(captured + 'oldpkg\trc \t1.0-1\nlibfoo:amd64\tii \t2.0\n');
  t.deepEqual(parsed.get('iptables'), { installed: true, version: '1.8.9-2' });
  t.deepEqual(parsed.get('oldpkg'), { installed: false, version: '1.0-1' });
  t.deepEqual(parsed.get('libfoo'), { installed: true, version: '2.0' });
  t.false(parsed.has('nosuchpkg'));
});

test('package changes: install, pin, .deb by sha256, absent', (t) => {
  const spec = (s: object) => packageType.schema.parse({ name: 'istio-sidecar', ...s });
  t.deepEqual(packageType.changes(spec({}), { installed: false, version: undefined, deb: undefined }), { installed: { from: false, to: true } });
  t.deepEqual(packageType.changes(spec({}), { installed: true, version: '1', deb: undefined }), {});
  t.deepEqual(packageType.changes(spec({ version: '2' }), { installed: true, version: '1', deb: undefined }), { version: { from: '1', to: '2' } });
  const sha = 'a'.repeat(64);
  t.deepEqual(
    packageType.changes(spec({ deb: { url: 'https://example.test/istio-sidecar.deb', sha256: sha } }), { installed: true, version: '1', deb: sha }),
    {},
  );
  t.deepEqual(
    Object.keys(
      packageType.changes(spec({ deb: { url: 'https://example.test/istio-sidecar.deb', sha256: sha } }), {
        installed: true,
        version: '1',
        deb: 'b'.repeat(64),
      }),
    ),
    ['deb'],
  );
  t.deepEqual(packageType.changes(spec({ ensure: 'absent' }), { installed: true, version: '1', deb: undefined }), { installed: { from: true, to: false } });
});

test('package specs that make no sense are refused naming the field', (t) => {
  // Debian's and RPM's names both: letters, digits and a few marks (NetworkManager, python3_x are RPM names), no space or slash
  t.throws(() => Package({ name: 'bad name' }), { message: /package\[bad name\].*name: expected a package name/ });
  t.throws(() => Package({ name: '../etc' }), { message: /name: expected a package name/ });
  t.throws(() => Package({ name: 'x1', deb: { url: 'http://example.test/x.deb', sha256: 'a'.repeat(64) } }), { message: /deb/ });
  t.throws(() => Package({ name: 'x1', deb: { url: 'https://example.test/x.deb', sha256: 'abc' } }), { message: /expected a sha256 of 64 hex digits/ });
});

test('systemctl show: masked, enabled, running, needs daemon-reload', (t) => {
  const props = parseSystemctlShow('LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\nNeedDaemonReload=no\n');
  t.deepEqual(unitStatus(props), { loaded: true, masked: false, enabled: true, running: true, needsDaemonReload: false });
  t.deepEqual(unitStatus(parseSystemctlShow('LoadState=masked\nActiveState=inactive\nUnitFileState=masked\n')).masked, true);
  t.false(unitStatus(parseSystemctlShow('LoadState=loaded\nActiveState=failed\nUnitFileState=disabled\n')).running);
  t.true(
    unitStatus(parseSystemctlShow('LoadState=loaded\nActiveState=inactive\nUnitFileState=static\n')).enabled,
    'a static unit cannot be enabled: enabled: true is already true',
  );
  t.true(unitStatus(parseSystemctlShow('ActiveState=activating\nNeedDaemonReload=yes')).needsDaemonReload);
});

test('unit names: a suffix is added, a slash is refused', (t) => {
  t.is(unitName.parse('istio'), 'istio.service');
  t.is(unitName.parse('meshvm.timer'), 'meshvm.timer');
  t.throws(() => Service({ name: '/lib/systemd/system/istio.service' }), { message: /service\[.*\].*name: a unit name must not contain "\/"/ });
  t.throws(() => Service({ name: 'istio', masked: true, running: true }), { message: /a masked service cannot be enabled or running/ });
});

test('a timer renders deterministically, with splay', (t) => {
  const spec = systemdUnitSpec.parse({
    name: 'meshvm.timer',
    sections: {
      Unit: { Description: 'Re-converge meshvm' },
      Timer: { OnBootSec: '2min', OnUnitActiveSec: '30min', RandomizedDelaySec: '5min', Persistent: true },
      Install: { WantedBy: 'timers.target' },
    },
  });
  t.is(
    renderUnit(spec.sections!),
    [
      '# Managed by meshvm: changes made here are overwritten.',
      '[Unit]',
      'Description=Re-converge meshvm',
      '',
      '[Timer]',
      'OnBootSec=2min',
      'OnUnitActiveSec=30min',
      'RandomizedDelaySec=5min',
      'Persistent=yes',
      '',
      '[Install]',
      'WantedBy=timers.target',
      '',
    ].join('\n'),
  );
  t.is(
    renderUnit({ Service: { ExecStart: ['', '/usr/bin/true'] } }),
    '# Managed by meshvm: changes made here are overwritten.\n[Service]\nExecStart=\nExecStart=/usr/bin/true\n',
  );
});

test('a daemon-reload is owed for unit files systemd has not loaded, which its NeedDaemonReload misses', (t) => {
  // systemd 252 (Debian 12), a running demo.service, after `mkdir demo.service.d` and a drop-in written there
  const running = parseSystemctlShow('FragmentPath=/etc/systemd/system/demo.service\nDropInPaths=\nNeedDaemonReload=no\n');
  const cases: { name: string; props: Record<string, string>; etc: { unitFile: boolean; dropIns: string[] }; unloaded: string[] }[] = [
    {
      name: 'a drop-in in a new .d directory',
      props: running,
      etc: { unitFile: true, dropIns: ['10-version.conf'] },
      unloaded: ['/etc/systemd/system/demo.service.d/10-version.conf'],
    },
    {
      name: 'every drop-in loaded',
      props: { ...running, DropInPaths: '/etc/systemd/system/demo.service.d/10-version.conf /etc/systemd/system/demo.service.d/20-env.conf' },
      etc: { unitFile: true, dropIns: ['10-version.conf', '20-env.conf'] },
      unloaded: [],
    },
    {
      name: 'one of two loaded',
      props: { ...running, DropInPaths: '/etc/systemd/system/demo.service.d/10-version.conf' },
      etc: { unitFile: true, dropIns: ['10-version.conf', '20-env.conf'] },
      unloaded: ['/etc/systemd/system/demo.service.d/20-env.conf'],
    },
    { name: 'files other than .conf are not drop-ins', props: running, etc: { unitFile: true, dropIns: ['README', '10-version.conf.dpkg-old'] }, unloaded: [] },
    {
      name: "a unit file in /etc that takes the vendor one's place",
      props: { FragmentPath: '/lib/systemd/system/demo.service', DropInPaths: '' },
      etc: { unitFile: true, dropIns: [] },
      unloaded: ['/etc/systemd/system/demo.service'],
    },
    {
      name: 'a vendor unit, nothing in /etc',
      props: { FragmentPath: '/usr/lib/systemd/system/demo.service', DropInPaths: '' },
      etc: { unitFile: false, dropIns: [] },
      unloaded: [],
    },
  ];
  for (const c of cases) t.deepEqual(unloadedUnitFiles('demo.service', c.props, c.etc), c.unloaded, c.name);
});

/** A live-looking host over a scratch root: `systemctl show` answers with the given output, commands run are recorded. */
function systemdHost(root: string, show: string, ran: string[][]): Host {
  const host = localHost({ root });
  return {
    ...host,
    root: '/',
    live: true,
    query: async (argv) => (argv[0] === 'systemctl' && argv[1] === 'show' ? { stdout: show, stderr: '', exitCode: 0 } : host.query(argv)),
    async run(argv) {
      ran.push([...argv]);
      return { stdout: '', stderr: '', exitCode: 0 };
    },
  };
}

test('a notified service: daemon-reloaded first when a drop-in is one systemd has not loaded; a masked one is not restarted', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, {
    'etc/systemd/system/demo.service': '[Service]\nExecStart=/bin/sleep infinity\n',
    'etc/systemd/system/demo.service.d/10-version.conf': '[Service]\nEnvironment=V=2\n',
  });
  const show = 'FragmentPath=/etc/systemd/system/demo.service\nDropInPaths=\nNeedDaemonReload=no\n';
  const ran: string[][] = [];
  await serviceType.refresh(systemdHost(root, show, ran), serviceType.schema.parse({ name: 'demo' }), undefined);
  t.deepEqual(ran, [
    ['systemctl', 'daemon-reload'],
    ['systemctl', 'restart', 'demo.service'],
  ]);

  ran.length = 0;
  await serviceType.refresh(
    systemdHost(root, show.replace('DropInPaths=', 'DropInPaths=/etc/systemd/system/demo.service.d/10-version.conf'), ran),
    serviceType.schema.parse({ name: 'demo' }),
    undefined,
  );
  t.deepEqual(ran, [['systemctl', 'restart', 'demo.service']], 'loaded already: no reload');

  ran.length = 0;
  await serviceType.refresh(
    systemdHost(root, 'LoadState=masked\nNeedDaemonReload=no\n', ran),
    serviceType.schema.parse({ name: 'dnsmasq', masked: true }),
    undefined,
  );
  t.deepEqual(ran, [], 'systemctl refuses to restart a masked unit: a notification must not fail the run');
});
