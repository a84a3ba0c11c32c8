// Package's dnf backend for real: Debian's rpmbuild builds tiny .rpm fixtures, createrepo_c makes a local repository of
// them (file:// baseurl, no network), and Package converges an rpm-managed root (a Rocky-like os-release, rpm's database
// at /var/lib/rpm) with Debian's dnf --installroot: present, pinned (down and up), absent, an .rpm by path and by https URL
// (a loopback https server standing in for the site's artifact store), each once, then nothing to do. Bad .rpms are
// refused in preflight with nothing changed; a failed upgrade leaves the version before; dnf's lock is waited for.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { localHost } from '../../engine/host-local.ts';
import { preflight } from '../../engine/preflight.ts';
import { Package } from '../../resources/package.ts';
import { wantedSidecarVersion } from '../../recipes/sidecar.ts';
import { changedRefs, converge, convergesOnce, machineSnapshot, meshvm, PROJECT, scratchRoot, seed, writeRunlist } from '../helpers/scratch.ts';
import { testPki } from '../stand-ins/tls.ts';

const TOOLS = ['rpm', 'rpmbuild', 'dnf', 'createrepo_c'];
const missing = (
  await Promise.all(TOOLS.map(async (tool) => ((await execa('sh', ['-c', `command -v ${tool}`], { reject: false })).exitCode === 0 ? undefined : tool)))
).filter(Boolean);
const withDnf = missing.length === 0 ? test.serial : test.skip;
if (missing.length > 0)
  test.skip(`dnf backend tests are skipped on this machine (${missing.join(', ')} missing; scripts/test-deps.ts installs rpm, dnf and createrepo-c from Debian)`, () => {});

const A = 'meshvm-test-a';
const RECIPE = path.join(PROJECT, 'test/fixtures/recipes/packages.ts');

interface Fixture {
  name: string;
  version: string;
  arch?: string;
  requires?: string;
  /** A %pre scriptlet in Lua: rpm runs it itself, chrooted in the root (which has no shell for a sh one). */
  pre?: string;
  /** A %post scriptlet in Lua, the same way. */
  post?: string;
}

/** One tiny .rpm: a file /usr/share/<name>/version holding its version. */
async function buildRpm(top: string, out: string, f: Fixture): Promise<string> {
  const spec = [
    `Name: ${f.name}`,
    `Version: ${f.version}`,
    'Release: 1',
    'Summary: meshvm test fixture',
    'License: MIT',
    ...(f.arch === 'noarch' || !f.arch ? ['BuildArch: noarch'] : []),
    ...(f.requires ? [`Requires: ${f.requires}`] : []),
    '%description',
    'A package for the tests of meshvm.',
    '%install',
    `mkdir -p %{buildroot}/usr/share/${f.name}`,
    `echo ${f.version} > %{buildroot}/usr/share/${f.name}/version`,
    ...(f.pre ? ['%pre -p <lua>', f.pre] : []),
    ...(f.post ? ['%post -p <lua>', f.post] : []),
    '%files',
    `/usr/share/${f.name}/version`,
    '',
  ].join('\n');
  await fs.mkdir(top, { recursive: true });
  const file = path.join(top, `${f.name}-${f.version}.spec`);
  await fs.writeFile(file, spec);
  const target = f.arch && f.arch !== 'noarch' ? ['--target', f.arch] : [];
  // HOME there: Debian's rpm would otherwise make ~/.rpmdb in this machine's root home
  await execa('rpmbuild', ['--quiet', ...target, '--define', `_topdir ${top}`, '--define', `_rpmdir ${out}`, '--define', '_build_id_links none', '-bb', file], {
    env: { HOME: top },
  });
  const arch = f.arch ?? 'noarch';
  return path.join(out, arch, `${f.name}-${f.version}-1.${arch}.rpm`);
}

let work = '';
let repo = '';
const files: Record<string, string> = {};

test.before(async () => {
  if (missing.length > 0) return;
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-rpms-'));
  repo = path.join(work, 'repo');
  const top = path.join(work, 'top');
  const loose = path.join(work, 'loose');
  for (const f of [
    { name: A, version: '1.0' },
    { name: A, version: '1.1' },
    // stand-ins for the istio-sidecar RPM and RHEL's hostname package (files only: the root has no shell for scriptlets)
    { name: 'istio-sidecar', version: '1.24.0' },
    { name: 'hostname', version: '3.23' },
  ])
    await buildRpm(top, repo, f);
  await execa('createrepo_c', ['-q', repo]);
  // not in the repository: given by path or URL
  files.a10 = await buildRpm(top, path.join(work, 'a10'), { name: A, version: '1.0' });
  files.a12broken = await buildRpm(top, loose, { name: A, version: '1.2', requires: 'meshvm-test-missing' });
  files.a14postFails = await buildRpm(top, loose, { name: A, version: '1.4', post: 'error("the fixture %%post fails on purpose")' });
  files.a13arm = await buildRpm(top, loose, { name: A, version: '1.3', arch: os.arch() === 'arm64' ? 'x86_64' : 'aarch64' });
  files.b = await buildRpm(top, loose, { name: 'meshvm-test-b', version: '2.0' });
  // istio-sidecar's scripts make the istio-proxy account with Debian's addgroup where it is missing, which RHEL lacks (#31203)
  files.sidecarTrap = await buildRpm(top, path.join(work, 'trap'), {
    name: 'istio-sidecar',
    version: '1.24.0',
    pre: [
      'local found = false',
      'for line in io.lines("/etc/passwd") do if line:sub(1, 12) == "istio-proxy:" then found = true end end',
      'if not found then error("addgroup: command not found (no istio-proxy account before install)") end',
    ].join('\n'),
  });
});
test.after.always(async () => {
  if (work) await fs.rm(work, { recursive: true, force: true });
});

/** An rpm-managed root as RHEL 8 lays it out: os-release, the local repository, an empty rpm database at /var/lib/rpm. */
async function rpmRoot(t: ExecutionContext): Promise<string> {
  const root = await scratchRoot(t, 'meshvm-rpmroot-');
  await seed(root, {
    '/etc/os-release': 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n',
    '/etc/yum.repos.d/meshvm-test.repo': `[meshvm-test]\nname=meshvm test fixtures\nbaseurl=file://${repo}\ngpgcheck=0\nenabled=1\n`,
  });
  await execa('rpm', ['--root', root, '--dbpath', '/var/lib/rpm', '--initdb']);
  return root;
}

/** What rpm's database in the root says is installed: "1.1-1", or undefined. */
async function installed(root: string, name = A): Promise<string | undefined> {
  const result = await execa('rpm', ['--root', root, '--dbpath', '/var/lib/rpm', '-q', '--queryformat', '%{VERSION}-%{RELEASE}', name], { reject: false });
  return result.exitCode === 0 ? result.stdout : undefined;
}

/**
 * The root as machineSnapshot sees it, without SQLite's shared-memory index of rpm's database (rpmdb.sqlite-shm): every
 * reader rewrites it, rpm -q too (this test's own reads); the database and its write-ahead log are compared.
 */
async function rootSnapshot(root: string) {
  const out = await machineSnapshot(root);
  delete out['var/lib/rpm/rpmdb.sqlite-shm'];
  return out;
}

const sha256 = async (file: string) =>
  createHash('sha256')
    .update(await fs.readFile(file))
    .digest('hex');

withDnf('present, pinned down and up (version-release, then the version alone), absent: each converges once, then nothing to do', async (t) => {
  const root = await rpmRoot(t);
  await convergesOnce(t, root, () => [Package({ name: A })]);
  t.is(await installed(root), '1.1-1', "the repository's newest");
  t.is(await fs.readFile(path.join(root, `usr/share/${A}/version`), 'utf8'), '1.1\n');

  const down = await convergesOnce(t, root, () => [Package({ name: A, version: '1.0-1' })]);
  t.deepEqual(down.resources[0]!.changes, ['set version to 1.0-1 (was 1.1-1)']);
  t.is(await installed(root), '1.0-1');

  await convergesOnce(t, root, () => [Package({ name: A, version: '1.1' })]);
  t.is(await installed(root), '1.1-1');

  await convergesOnce(t, root, () => [Package({ name: A, ensure: 'absent' })]);
  t.is(await installed(root), undefined);
  t.false(
    await fs.stat(path.join(root, `usr/share/${A}/version`)).then(
      () => true,
      () => false,
    ),
    'its file went with it',
  );
});

withDnf('a version the repository does not have: converge fails saying dnf found no match, nothing installed', async (t) => {
  const root = await rpmRoot(t);
  const result = await converge(localHost({ root }), [Package({ name: A, version: '9.9-1' })]);
  t.true(result.failed);
  t.regex(result.resources[0]!.error!, /No match for argument: meshvm-test-a-9\.9-1/);
  t.is(await installed(root), undefined);
});

/** A loopback https server for one file (the site's artifact store); counts requests. */
async function artifactStore(t: ExecutionContext, file: string) {
  const pki = await testPki();
  const body = await fs.readFile(file);
  let requests = 0;
  const server = createServer({ cert: pki.certPem, key: pki.keyPem }, (_req, res) => {
    requests++;
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/${path.basename(file)}`, caPem: pki.caPem, requests: () => requests };
}

withDnf('an .rpm by https URL through the CLI under --root: plan writes nothing, converge installs it once, then nothing to do, then absent', async (t) => {
  const root = await rpmRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const store = await artifactStore(t, files.a10!);
  await seed(root, { '/etc/meshvm/artifact-ca.pem': store.caPem });
  const rpm = { url: store.url, sha256: await sha256(files.a10!), caFile: '/etc/meshvm/artifact-ca.pem' };
  const runlist = (spec: object) =>
    writeRunlist(dir, 'packages.yaml', JSON.stringify({ name: 'packages', recipes: [{ recipe: RECIPE, attributes: { packages: [spec] } }] }));

  await runlist({ name: A, version: '1.0-1', rpm });
  const before = await rootSnapshot(root);
  const plan = await meshvm(['plan', path.join(dir, 'packages.yaml'), '--root', root]);
  t.is(plan.exitCode, 0, plan.stderr);
  t.regex(plan.stdout + plan.stderr, /preflight: .*package\[meshvm-test-a\]: https:\/\/127\.0\.0\.1:\d+\/\S+: \d+ bytes with the sha256 required/);
  t.deepEqual(await rootSnapshot(root), before, 'plan wrote nothing');

  const first = await meshvm(['converge', path.join(dir, 'packages.yaml'), '--root', root, '--json']);
  t.is(first.exitCode, 0, first.stderr);
  t.regex(first.stdout + first.stderr, /package meshvm-test-a 1\.0-1 noarch/, 'preflight read the name, version and arch of the download');
  t.is(await installed(root), '1.0-1');
  t.is((await fs.readFile(path.join(root, 'var/lib/meshvm/debs/meshvm-test-a.sha256'), 'utf8')).trim(), rpm.sha256, 'the mark of the file it came from');
  t.true((await fs.stat(path.join(root, `var/cache/meshvm/rpms/${A}_${rpm.sha256}.rpm`))).isFile());

  const again = await meshvm(['converge', path.join(dir, 'packages.yaml'), '--root', root, '--json']);
  t.is(again.exitCode, 0, again.stderr);
  t.deepEqual(changedOf(again.stdout), [], 'the second converge changes nothing');
  t.is(store.requests(), 2, 'plan hashed it once, converge fetched it once; the cached copy served the second converge');

  await runlist({ name: A, ensure: 'absent' });
  const absent = await meshvm(['converge', path.join(dir, 'packages.yaml'), '--root', root, '--json']);
  t.is(absent.exitCode, 0, absent.stderr);
  t.deepEqual(changedOf(absent.stdout), ['package[meshvm-test-a]']);
  t.is(await installed(root), undefined);
  t.false(
    await fs.stat(path.join(root, 'var/lib/meshvm/debs/meshvm-test-a.sha256')).then(
      () => true,
      () => false,
    ),
    'its mark went with it',
  );
});

/** The refs a --json report says changed. */
function changedOf(stdout: string): string[] {
  const report = JSON.parse(stdout) as { resources: { ref: string; status: string }[] };
  return report.resources.filter((r) => r.status === 'changed').map((r) => r.ref);
}

withDnf(
  'an .rpm that is not what the resource asked (name, version, arch; by path or URL): refused in preflight, nothing installed or written (the download not kept)',
  async (t) => {
    const root = await rpmRoot(t);
    const dir = await scratchRoot(t, 'meshvm-runlists-');
    await seed(root, { '/srv/b.rpm': '', '/srv/a10.rpm': '', '/srv/a13.rpm': '' });
    await fs.copyFile(files.b!, path.join(root, 'srv/b.rpm'));
    await fs.copyFile(files.a10!, path.join(root, 'srv/a10.rpm'));
    await fs.copyFile(files.a13arm!, path.join(root, 'srv/a13.rpm'));
    const arm = path.basename(path.dirname(files.a13arm!));
    const store = await artifactStore(t, files.b!);
    await seed(root, { '/etc/meshvm/artifact-ca.pem': store.caPem });
    const byUrl = { url: store.url, sha256: await sha256(files.b!), caFile: '/etc/meshvm/artifact-ca.pem' };
    const cases: [object, RegExp][] = [
      [
        { name: A, rpm: { path: '/srv/b.rpm' } },
        /\/srv\/b\.rpm is the package meshvm-test-b, not meshvm-test-a; installing it would leave meshvm-test-a missing on every run/,
      ],
      [{ name: A, version: '1.1-1', rpm: { path: '/srv/a10.rpm' } }, /\/srv\/a10\.rpm is meshvm-test-a 1\.0-1, not the version 1\.1-1 pinned/],
      [{ name: A, rpm: { path: '/srv/a13.rpm' } }, new RegExp(`/srv/a13\\.rpm is meshvm-test-a 1\\.3-1 for ${arm}, not this machine's \\S+ \\(or noarch\\)`)],
      [{ name: A, rpm: byUrl }, /meshvm-test-b-2\.0-1\.noarch\.rpm is the package meshvm-test-b, not meshvm-test-a/],
      [
        { name: A, arch: 'x86_64', rpm: { path: '/srv/a10.rpm', sha256: await sha256(files.a10!) } },
        /is meshvm-test-a 1\.0-1 for noarch, not the arch x86_64 asked/,
      ],
    ];
    const before = await rootSnapshot(root);
    for (const [spec, message] of cases) {
      const file = await writeRunlist(dir, 'bad.yaml', JSON.stringify({ name: 'bad', recipes: [{ recipe: RECIPE, attributes: { packages: [spec] } }] }));
      const result = await meshvm(['converge', file, '--root', root]);
      t.is(result.exitCode, 1, JSON.stringify(spec));
      t.regex(result.stderr, /preflight: package\[meshvm-test-a\] \(declared at [^)]+\): /);
      t.regex(result.stderr, message);
      t.regex(result.stderr, /; nothing was changed/);
      t.is(await installed(root), undefined);
      t.deepEqual(await rootSnapshot(root), before, 'nothing written');
    }
  },
);

withDnf('an upgrade dnf cannot do (a dependency missing): fails saying the version before is still installed', async (t) => {
  const root = await rpmRoot(t);
  await convergesOnce(t, root, () => [Package({ name: A, version: '1.1-1' })]);
  await seed(root, { '/srv/a12.rpm': '' });
  await fs.copyFile(files.a12broken!, path.join(root, 'srv/a12.rpm'));
  const result = await converge(localHost({ root }), [Package({ name: A, rpm: { path: '/srv/a12.rpm', sha256: await sha256(files.a12broken!) } })]);
  t.true(result.failed);
  t.regex(result.resources[0]!.error!, /installing \S+a12\.rpm failed, and meshvm-test-a 1\.1-1 is still installed: .*nothing provides meshvm-test-missing/s);
  t.is(await installed(root), '1.1-1');
});

withDnf("dnf's lock held by another process: refused after lockWaitSeconds naming the holder; waited for while it is held", async (t) => {
  const root = await rpmRoot(t);
  const holder = execa('sleep', ['600']);
  const ended = holder.catch(() => undefined);
  t.teardown(async () => {
    holder.kill();
    await ended;
  });
  await seed(root, { '/var/lib/dnf/rpmdb_lock.pid': String(holder.pid) });
  const refused = await converge(localHost({ root }), [Package({ name: A, lockWaitSeconds: 0 })]);
  t.true(refused.failed);
  t.regex(refused.resources[0]!.error!, /another dnf held its lock for longer than lockWaitSeconds \(0\): RPMDB already locked by \d+/);
  t.is(await installed(root), undefined);

  // let go of the lock while the converge waits for it
  const waiting = converge(localHost({ root }), [Package({ name: A, lockWaitSeconds: 120 })]);
  setTimeout(() => holder.kill(), 3000);
  const waited = await waiting;
  t.false(waited.failed, waited.resources[0]?.error);
  t.deepEqual(changedRefs(waited), ['package[meshvm-test-a]']);
  t.is(await installed(root), '1.1-1');
});

withDnf('preflight through the engine: an .rpm by path is read before install; a missing file is named', async (t) => {
  const root = await rpmRoot(t);
  await seed(root, { '/srv/a10.rpm': '' });
  await fs.copyFile(files.a10!, path.join(root, 'srv/a10.rpm'));
  const host = localHost({ root });
  const lines = await preflight([Package({ name: A, rpm: { path: '/srv/a10.rpm', sha256: await sha256(files.a10!) } })], { host, mode: 'plan' });
  t.deepEqual(lines, ['preflight: package[meshvm-test-a]: /srv/a10.rpm: the sha256 required, package meshvm-test-a 1.0-1 noarch']);
  await t.throwsAsync(preflight([Package({ name: A, rpm: { path: '/srv/none.rpm' } })], { host, mode: 'plan' }), {
    message: /preflight: package\[meshvm-test-a\] .*the \.rpm \/srv\/none\.rpm does not exist; nothing was changed/,
  });
  t.is(await installed(root), undefined);
});

/** An RPM-family root with the accounts useradd --prefix extends, as a RHEL image has them. */
async function rpmMachine(t: ExecutionContext): Promise<string> {
  const root = await rpmRoot(t);
  await seed(root, {
    '/etc/passwd': 'root:x:0:0:root:/root:/bin/bash\n',
    '/etc/group': 'root:x:0:\n',
    '/etc/shadow': 'root:*:19000::::::\n',
    '/etc/gshadow': 'root:*::\n',
  });
  await fs.chmod(path.join(root, 'etc/shadow'), 0o640);
  return root;
}

const sidecarRunlist = (dir: string, recipes: string[]) =>
  writeRunlist(
    dir,
    'sidecar.yaml',
    JSON.stringify({
      name: 'rpm-sidecar',
      recipes: recipes.map((recipe) =>
        recipe === 'sidecar' ? { recipe, attributes: { flow: 'classic', inboundPorts: [8080], package: { from: 'dnf' } } } : { recipe },
      ),
    }),
  );

withDnf('the sidecar recipe on an RPM-family root: the istio-proxy account, then hostname, then istio-sidecar with dnf; then nothing to do', async (t) => {
  const root = await rpmMachine(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const file = await sidecarRunlist(dir, ['istio-proxy-user', 'sidecar']);
  const before = await rootSnapshot(root);
  const plan = await meshvm(['plan', file, '--root', root]);
  t.is(plan.exitCode, 0, plan.stderr);
  t.deepEqual(await rootSnapshot(root), before, 'plan wrote nothing');

  const first = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(first.exitCode, 0, first.stderr);
  const changed = changedOf(first.stdout);
  const at = (ref: string) => changed.indexOf(ref);
  t.true(at('user[istio-proxy]') >= 0 && at('user[istio-proxy]') < at('package[hostname]'), changed.join(' '));
  t.true(at('package[hostname]') < at('package[istio-sidecar]'), 'hostname before the sidecar: istio-start.sh runs it');
  t.is(await installed(root, 'hostname'), '3.23-1');
  t.is(await installed(root, 'istio-sidecar'), '1.24.0-1');
  t.regex(await fs.readFile(path.join(root, 'var/lib/istio/envoy/sidecar.env'), 'utf8'), /ISTIO_INBOUND_PORTS=8080/);

  const again = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(again.exitCode, 0, again.stderr);
  t.deepEqual(changedOf(again.stdout), []);

  // what the version-skew check weighs on this host: rpm's view of the package installed
  const host = localHost({ root });
  const dnf = (version?: string) => ({ from: 'dnf' as const, name: 'istio-sidecar', ...(version && { version }) });
  t.is(await wantedSidecarVersion(host, dnf()), undefined, 'unpinned and installed: left as it is');
  t.is(await wantedSidecarVersion(host, dnf('1.24.0')), undefined, 'pinned (the version alone) and there');
  t.deepEqual(await wantedSidecarVersion(host, dnf('1.25.1-1')), { version: '1.25.1-1', from: 'sidecar.package.version' });
  const release = 'https://storage.googleapis.com/istio-release/releases/1.24.3/rpm/istio-sidecar.rpm';
  t.deepEqual(await wantedSidecarVersion(host, { from: 'rpm', name: 'istio-sidecar', url: release, sha256: 'a'.repeat(64) }), {
    version: '1.24.3',
    from: `the .rpm's URL ${release}`,
  });
});

withDnf('the sidecar recipe on an RPM-family root before the istio-proxy account is declared: refused, nothing installed', async (t) => {
  const root = await rpmMachine(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const before = await rootSnapshot(root);
  for (const recipes of [['sidecar'], ['sidecar', 'istio-proxy-user']]) {
    const result = await meshvm(['converge', await sidecarRunlist(dir, recipes), '--root', root]);
    t.is(result.exitCode, 1, recipes.join(' '));
    t.regex(result.stderr, /owner "istio-proxy" (does not exist|is declared by user\[istio-proxy\], but after this resource)/);
    t.is(await installed(root, 'istio-sidecar'), undefined);
    t.deepEqual(await rootSnapshot(root), before, 'nothing written');
  }
});

withDnf("istio-sidecar's account trap (#31203), its %pre run for real: without the account it fails; after istio-proxy-user it installs", async (t) => {
  const root = await rpmMachine(t);
  await seed(root, { '/srv/istio-sidecar.rpm': '' });
  await fs.copyFile(files.sidecarTrap!, path.join(root, 'srv/istio-sidecar.rpm'));
  const rpm = { path: '/srv/istio-sidecar.rpm', sha256: await sha256(files.sidecarTrap!) };
  const alone = await converge(localHost({ root }), [Package({ name: 'istio-sidecar', rpm })]);
  t.true(alone.failed, 'the package alone, before the account: its %pre fails');
  t.regex(alone.resources[0]!.error!, /addgroup: command not found \(no istio-proxy account before install\)/);
  t.is(await installed(root, 'istio-sidecar'), undefined);

  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const file = await writeRunlist(
    dir,
    'sidecar.yaml',
    JSON.stringify({
      name: 'rpm-sidecar',
      recipes: [{ recipe: 'istio-proxy-user' }, { recipe: RECIPE, attributes: { packages: [{ name: 'istio-sidecar', rpm }] } }],
    }),
  );
  const result = await meshvm(['converge', file, '--root', root]);
  t.is(result.exitCode, 0, result.stderr);
  t.is(await installed(root, 'istio-sidecar'), '1.24.0-1', 'the account first: the same %pre passes');
});

withDnf('an upgrade whose %post fails (rpm leaves it installed): the version before is put back from the repository, and the error says so', async (t) => {
  const root = await rpmRoot(t);
  await convergesOnce(t, root, () => [Package({ name: A, version: '1.1-1' })]);
  await seed(root, { '/srv/a14.rpm': '' });
  await fs.copyFile(files.a14postFails!, path.join(root, 'srv/a14.rpm'));
  const result = await converge(localHost({ root }), [Package({ name: A, rpm: { path: '/srv/a14.rpm', sha256: await sha256(files.a14postFails!) } })]);
  t.true(result.failed);
  t.regex(
    result.resources[0]!.error!,
    /installing \S+a14\.rpm failed, and meshvm-test-a 1\.1-1 is installed again \(put back from meshvm-test-a-1\.1-1\): .*the fixture %post fails on purpose/s,
  );
  t.is(await installed(root), '1.1-1');
});
