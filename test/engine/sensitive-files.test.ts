// Sensitive files and failed writes: a secret is 0600 by default, keeps no backups, leaves no readable temp file; a full disk names the file.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa, execaSync } from 'execa';
import { localHost } from '../../engine/host-local.ts';
import { BACKUP_DIR } from '../../engine/state-paths.ts';
import { File } from '../../resources/file.ts';
import { converge, convergesOnce, PROJECT, scratchRoot, seed } from '../helpers/scratch.ts';

const KEY = '/etc/certs/key.pem';
const SECRET = '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGsecretsecretsecretsecretsecretsecretsecret\n-----END PRIVATE KEY-----\n';

test('a sensitive File without a mode is created 0600 and converges once; one given a mode keeps it', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { 'etc/certs/.keep': '' });
  const first = await convergesOnce(t, root, () => [
    File({ path: KEY, content: SECRET, sensitive: true }),
    File({ path: '/etc/certs/shared.pem', content: SECRET, sensitive: true, mode: 0o640 }),
  ]);
  t.true(first.resources[0]!.changes.includes('set mode to 0600'), first.resources[0]!.changes.join('\n'));
  t.is((await fs.stat(path.join(root, KEY))).mode & 0o7777, 0o600);
  t.is((await fs.stat(path.join(root, 'etc/certs/shared.pem'))).mode & 0o7777, 0o640);
});

test('an existing sensitive file at 0644 is repaired to 0600 in place, not rewritten', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { [KEY.slice(1)]: SECRET });
  await fs.chmod(path.join(root, KEY), 0o644);
  const { ino } = await fs.stat(path.join(root, KEY));
  const result = await converge(localHost({ root }), [File({ path: KEY, content: SECRET, sensitive: true })]);
  t.deepEqual(result.resources[0]!.changes, ['set mode to 0600 (was 0644)']);
  const after = await fs.stat(path.join(root, KEY));
  t.is(after.mode & 0o7777, 0o600);
  t.is(after.ino, ino, 'the same file: chmod, not a rewrite');
});

test('a sensitive file keeps no backup of its old secret, and the ones kept before are removed (not those of other files)', async (t) => {
  const root = await scratchRoot(t);
  const stem = encodeURIComponent(KEY);
  const other = `${encodeURIComponent(`${KEY}.old`)}.2026-01-01T00-00-00-000Z`;
  await seed(root, {
    [KEY.slice(1)]: 'the old secret\n',
    [`${BACKUP_DIR.slice(1)}/${stem}.2026-01-01T00-00-00-000Z`]: 'an older secret\n',
    [`${BACKUP_DIR.slice(1)}/${other}`]: 'not a backup of key.pem\n',
  });
  const result = await converge(localHost({ root }), [File({ path: KEY, content: SECRET, sensitive: true })]);
  t.false(result.failed, result.resources[0]!.error);
  t.deepEqual(await fs.readdir(path.join(root, BACKUP_DIR)), [other]);
  t.is(await fs.readFile(path.join(root, KEY), 'utf8'), SECRET);
});

test('a run killed before the rename leaves at most a 0600 temp of the secret, removed by the next write or by the removal', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { 'etc/certs/.keep': '' });
  const staged = path.join(root, 'etc/certs/.key.pem.meshvm-new');
  // the staged file is complete when verify runs: the process is SIGKILLed there, the last moment before the rename
  const script = `
    const { localHost } = await import(${JSON.stringify(path.join(PROJECT, 'engine/host-local.ts'))});
    await localHost({ root: ${JSON.stringify(root)} }).writeFile(${JSON.stringify(KEY)}, ${JSON.stringify(SECRET)}, {
      mode: 0o600, sensitive: true, verify: async () => process.kill(process.pid, 'SIGKILL'),
    });`;
  const killed = await execa(process.execPath, ['--input-type=module', '-e', script], { reject: false });
  t.is(killed.signal, 'SIGKILL', String(killed.stderr));
  const left = await fs.stat(staged);
  t.is(left.mode & 0o7777, 0o600, 'the leftover is readable by its owner (root) alone');
  t.is(left.uid, 0);
  await t.throwsAsync(fs.stat(path.join(root, KEY)), { code: 'ENOENT' }, 'the secret never went live half-written');

  const host = localHost({ root });
  await host.writeFile(KEY, SECRET, { mode: 0o600, sensitive: true });
  t.deepEqual((await fs.readdir(path.join(root, 'etc/certs'))).sort(), ['.keep', 'key.pem'], 'the next write replaced the leftover');
  await execa(process.execPath, ['--input-type=module', '-e', script], { reject: false });
  await host.remove(KEY);
  t.deepEqual(await fs.readdir(path.join(root, 'etc/certs')), ['.keep'], 'removing the file removes a leftover of it too');
});

/** Whether a tmpfs can be mounted here (root): else the full-disk test counts as skipped. */
function mountRefused(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to mount a tiny tmpfs';
  const found = execaSync('mount', ['--version'], { reject: false });
  return found.exitCode === 0 ? undefined : 'no mount(8)';
}
const refused = mountRefused();

(refused ? test.skip : test)(
  `a full disk (ENOSPC) fails the write naming the file, the live file untouched, no temp left${refused ? ` (skipped: ${refused})` : ''}`,
  async (t) => {
    const root = await scratchRoot(t);
    const mounted = await execa('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', root], { reject: false });
    if (mounted.exitCode !== 0) return t.fail(`mount: ${mounted.stderr}`);
    t.teardown(() => execa('umount', [root], { reject: false }));
    const host = localHost({ root });
    await host.mkdir('/etc');
    await host.writeFile('/etc/app.conf', 'v1\n');
    const error = await t.throwsAsync(host.writeFile('/etc/app.conf', 'x'.repeat(1 << 20)));
    t.regex(error?.message ?? '', /^cannot write \/etc\/app\.conf: ENOSPC: no space left on device/);
    t.is((error as NodeJS.ErrnoException).code, 'ENOSPC');
    t.is(await fs.readFile(path.join(root, 'etc/app.conf'), 'utf8'), 'v1\n');
    t.deepEqual(await fs.readdir(path.join(root, 'etc')), ['app.conf']);
  },
);
