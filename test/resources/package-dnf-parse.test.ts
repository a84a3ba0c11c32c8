// Package's dnf/rpm backend, pure parts: rpm -q/-qp and dnf output captured from Debian's rpm 4.18 and dnf 4.14 driving an
// installroot (test/fixtures/rpm/), versions as rpm spells them, and which backend a root's os-release and databases select.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { localHost } from '../../engine/host-local.ts';
import type { HostReader } from '../../engine/host.ts';
import { osFamily, packageBackend, parseOsRelease } from '../../resources/package/detect.ts';
import { dnfErrors, parseRpmQuery, rpmVersion, rpmVersionMatches } from '../../resources/package/dnf.ts';
import { packageSpec } from '../../resources/package.ts';
import { PROJECT, scratchRoot, seed } from '../helpers/scratch.ts';

const fixture = (name: string) => fs.readFile(path.join(PROJECT, 'test/fixtures/rpm', name), 'utf8');

test('parseRpmQuery reads rpm -q --queryformat lines (an epoch, none, a package not installed left out)', async (t) => {
  t.deepEqual(parseRpmQuery(await fixture('rpm-q.txt')), [
    { name: 'meshvm-test-a', epoch: '', version: '1.0', release: '1', arch: 'noarch' },
    { name: 'meshvm-test-c', epoch: '2', version: '3.1', release: '4.el9', arch: 'noarch' },
  ]);
  t.deepEqual(parseRpmQuery(await fixture('rpm-qp.txt')), [{ name: 'meshvm-test-c', epoch: '2', version: '3.1', release: '4.el9', arch: 'noarch' }]);
  t.deepEqual(parseRpmQuery('package meshvm-test-b is not installed\n'), []);
});

test('rpmVersion spells [epoch:]version-release; a pin matches exactly, without epoch 0, or by version alone', (t) => {
  t.is(rpmVersion({ epoch: '', version: '1.0', release: '1' }), '1.0-1');
  t.is(rpmVersion({ epoch: '0', version: '1.0', release: '1' }), '1.0-1');
  t.is(rpmVersion({ epoch: '2', version: '3.1', release: '4.el9' }), '2:3.1-4.el9');
  t.true(rpmVersionMatches('1.0-1', '1.0-1'));
  t.true(rpmVersionMatches('0:1.0-1', '1.0-1'));
  t.true(rpmVersionMatches('1.0', '1.0-7.el9'));
  t.false(rpmVersionMatches('1.0', '1.0.1-1'));
  t.false(rpmVersionMatches('1.0-1', '1.0-2'));
  t.false(rpmVersionMatches('3.1-4.el9', '2:3.1-4.el9'), 'an epoch installed is part of the version');
});

test('dnfErrors keeps what dnf said went wrong: no match, a dependency problem, the rpmdb lock and its holder, a failed %post', async (t) => {
  t.is(dnfErrors(await fixture('dnf-no-match.txt')), 'No match for argument: meshvm-test-a-9.9\nError: Unable to find a match: meshvm-test-a-9.9');
  t.is(
    dnfErrors(await fixture('dnf-problem.txt')),
    ['Error: ', ' Problem: conflicting requests', '  - nothing provides /bin/sh needed by meshvm-test-c-2:3.1-4.el9.noarch'].join('\n'),
  );
  t.regex(dnfErrors(await fixture('dnf-locked.txt')), /^RPMDB already locked by \d+\n {2}The application with PID \d+ is: sleep$/);
  t.is(
    dnfErrors(await fixture('dnf-post-failed.txt')),
    [
      'error: lua script failed: [string "%post(meshvm-test-post-1-1.noarch)"]:1: the fixture %post fails on purpose',
      'Error in POSTIN scriptlet in rpm package meshvm-test-post',
    ].join('\n'),
    'a failed %post dnf went on from (exit 0)',
  );
  t.is(dnfErrors('one\ntwo\n'), 'one\ntwo', 'no error lines: the last lines as they are');
});

test("parseOsRelease and osFamily: this machine's own os-release, and ID_LIKE lists", async (t) => {
  const own = parseOsRelease(await fs.readFile('/etc/os-release', 'utf8'));
  t.truthy(own.ID);
  t.deepEqual(osFamily(parseOsRelease('ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n')), ['rocky', 'rhel', 'centos', 'fedora']);
  t.deepEqual(osFamily(parseOsRelease("ID=amzn\nID_LIKE='centos rhel fedora'\n")), ['amzn', 'centos', 'rhel', 'fedora']);
  t.deepEqual(osFamily({}), []);
});

const ROCKY = 'ID="rocky"\nID_LIKE="rhel centos fedora"\n';

test('packageBackend: os-release and the package databases pick apt or dnf; an empty root stays apt', async (t) => {
  const backendOf = async (files: Record<string, string>) => {
    const root = await scratchRoot(t);
    await seed(root, files);
    return (await packageBackend(localHost({ root }))).kind;
  };
  t.is(await backendOf({}), 'apt');
  t.is(await backendOf({ '/etc/os-release': 'ID=debian\n', '/var/lib/dpkg/status': '' }), 'apt');
  t.is(await backendOf({ '/etc/os-release': 'ID=ubuntu\nID_LIKE=debian\n' }), 'apt');
  t.is(await backendOf({ '/etc/os-release': ROCKY }), 'dnf');
  t.is(await backendOf({ '/usr/lib/os-release': 'ID=amzn\nID_LIKE="centos rhel fedora"\n' }), 'dnf');
  t.is(await backendOf({ '/var/lib/rpm/rpmdb.sqlite': '' }), 'dnf', 'an rpm database and no os-release');
  await t.throwsAsync(backendOf({ '/etc/os-release': 'ID="opensuse-leap"\nID_LIKE="suse opensuse"\n' }), {
    message: /this is a SUSE host \(os-release ID opensuse-leap\): its packages are installed with zypper, which Package does not drive/,
  });
});

test('an RPM-family root on a machine with neither dnf nor yum: the error says it is dnf that is needed', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/os-release': ROCKY });
  const host = localHost({ root });
  // this machine has dnf (the pretest installs it): a reader that finds neither stands for one without
  const without: HostReader = Object.assign(Object.create(host) as HostReader, {
    query: (argv: readonly string[]) => (argv[0] === 'sh' ? Promise.resolve({ exitCode: 1, stdout: '', stderr: '' }) : host.query(argv)),
    memo: <T>(_key: string, compute: () => Promise<T>) => compute(),
  });
  await t.throwsAsync(packageBackend(without), {
    message:
      /an RPM-family host \(os-release ID rocky, like rhel centos fedora\): Package installs its packages with dnf \(or yum\), and neither is on PATH on this machine .*; install dnf/,
  });
});

test('the spec: RPM names and versions are accepted; a .deb and an .rpm together, or a file with absent, refused', (t) => {
  t.notThrows(() => packageSpec.parse({ name: 'NetworkManager', version: '1:1.46.0-26.el9_4' }));
  t.throws(() => packageSpec.parse({ name: 'x1', deb: { path: '/a.deb' }, rpm: { path: '/a.rpm' } }), { message: /give deb or rpm, not both/ });
  t.throws(() => packageSpec.parse({ name: 'x1', ensure: 'absent', rpm: { path: '/a.rpm' } }), { message: /makes no sense with ensure: absent/ });
  t.throws(() => packageSpec.parse({ name: 'x1', rpm: { url: 'http://example.test/a.rpm', sha256: 'a'.repeat(64) } }), { message: /expected an https URL/ });
});
