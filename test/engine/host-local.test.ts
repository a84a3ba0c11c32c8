// localHost's file side under a root: links followed inside the root as a chroot would, writes kept inside, facts forgotten, backups kept.
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { localHost } from '../../engine/host-local.ts';
import { BACKUP_DIR, BACKUPS_KEPT } from '../../engine/state-paths.ts';
import { scratchRoot, seed } from '../helpers/scratch.ts';

test('reads follow links inside the root: absolute, relative, and relative ones climbing above it', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { 'run/real.conf': 'inside\n', 'etc/placeholder': '' });
  await fs.symlink('/run/real.conf', path.join(root, 'etc/absolute'));
  await fs.symlink('../run/real.conf', path.join(root, 'etc/relative'));
  // on this machine this names /run/real.conf far above the scratch root; in a chroot ".." stops at the root
  await fs.symlink('../../../../../../../../../run/real.conf', path.join(root, 'etc/climbing'));
  await fs.symlink('/etc', path.join(root, 'etc-link'));
  const host = localHost({ root });
  for (const p of ['/etc/absolute', '/etc/relative', '/etc/climbing', '/etc-link/absolute']) t.is(await host.readFile(p), 'inside\n', p);
  t.is(await host.readFile('/etc/missing'), undefined);
});

test("a link to this machine's file is read inside the root (absent there), never from the machine", async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { 'etc/placeholder': '' });
  t.truthy(await fs.readFile('/usr/lib/os-release', 'utf8'), 'this machine has the file the link names');
  await fs.symlink('/usr/lib/os-release', path.join(root, 'etc/os-release'));
  await fs.symlink('/proc/self/root/etc/passwd', path.join(root, 'etc/passwd'));
  const host = localHost({ root });
  t.is(await host.readFile('/etc/os-release'), undefined);
  t.is(await host.readFile('/etc/passwd'), undefined);
  t.deepEqual([...(await host.accounts()).users.keys()], ['root'], "the machine's accounts are not the root's");
  // a link to its own path is a loop inside the root, as a chroot sees it
  await fs.symlink('/etc/hostname', path.join(root, 'etc/hostname'));
  await t.throwsAsync(host.readFile('/etc/hostname'), { message: /too many levels of symbolic links/ });
});

test('a link loop is an error saying so', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { 'etc/placeholder': '' });
  await fs.symlink('/etc/b', path.join(root, 'etc/a'));
  await fs.symlink('/etc/a', path.join(root, 'etc/b'));
  await t.throwsAsync(localHost({ root }).readFile('/etc/a'), { message: /too many levels of symbolic links/ });
});

test('writes through a link that leads out of the root are refused, and nothing outside changes', async (t) => {
  const root = await scratchRoot(t);
  const outside = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-outside-'));
  t.teardown(() => fs.rm(outside, { recursive: true, force: true }));
  await fs.symlink(outside, path.join(root, 'etc'));
  const host = localHost({ root });
  for (const attempt of [
    () => host.writeFile('/etc/x', 'no'),
    () => host.mkdir('/etc/d'),
    () => host.symlink('/target', '/etc/l'),
    () => host.remove('/etc/x'),
  ]) {
    await t.throwsAsync(attempt(), { message: /resolves outside the root/ });
  }
  t.deepEqual(await fs.readdir(outside), []);
});

test('stat, readLink and listDir follow a link in the directory inside the root, as reads do', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { 'meshvm-real-etc/app.conf': 'x\n' });
  await fs.symlink('/meshvm-real-etc', path.join(root, 'etc'));
  await fs.symlink('app.conf', path.join(root, 'meshvm-real-etc/app.link'));
  const host = localHost({ root });
  t.is(await host.readFile('/etc/app.conf'), 'x\n');
  t.is((await host.stat('/etc/app.conf'))?.type, 'file');
  t.is((await host.stat('/etc/app.link'))?.type, 'symlink', 'the last component is not followed');
  t.is(await host.readLink('/etc/app.link'), 'app.conf');
  t.deepEqual((await host.listDir('/etc'))?.sort(), ['app.conf', 'app.link']);
});

test('chmod, chown and mkdir -p never reach out of the root through a link', async (t) => {
  const root = await scratchRoot(t);
  const outside = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-outside-'));
  t.teardown(() => fs.rm(outside, { recursive: true, force: true }));
  await fs.writeFile(path.join(outside, 'secret'), 'x', { mode: 0o600 });
  await seed(root, { 'etc/placeholder': '' });
  await fs.symlink(path.join(outside, 'secret'), path.join(root, 'etc/secret'));
  await fs.symlink(outside, path.join(root, 'var'));
  const host = localHost({ root });
  // the absolute link is followed inside the root, where it leads nowhere: refused, and the file out there keeps its mode
  await t.throwsAsync(host.chmod('/etc/secret', 0o666));
  t.is((await fs.stat(path.join(outside, 'secret'))).mode & 0o777, 0o600);
  await t.throwsAsync(host.mkdir('/var/lib/deep'), { message: /resolves outside the root/ });
  await t.throwsAsync(host.chown('/var/secret', { owner: 'root' }), { message: /resolves outside the root/ });
  t.deepEqual(await fs.readdir(outside), ['secret']);
});

test('a write keeps the replaced file as a backup, the last few only, and forgets memoised facts', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { 'etc/app.conf': 'v0\n' });
  const host = localHost({ root });
  let computed = 0;
  const fact = () => host.memo('fact', async () => ++computed);
  t.is(await fact(), 1);
  t.is(await fact(), 1, 'computed once');
  for (let i = 1; i <= BACKUPS_KEPT + 2; i++) await host.writeFile('/etc/app.conf', `v${i}\n`);
  t.is(await fact(), 2, 'recomputed after a change');
  t.is(await host.readFile('/etc/app.conf'), `v${BACKUPS_KEPT + 2}\n`);
  const backups = (await fs.readdir(path.join(root, BACKUP_DIR))).sort();
  t.is(backups.length, BACKUPS_KEPT);
  const kept = await Promise.all(backups.map((b) => fs.readFile(path.join(root, BACKUP_DIR, b), 'utf8')));
  t.deepEqual(
    kept,
    [2, 3, 4, 5, 6].map((i) => `v${i}\n`),
  );
  t.is(((await fs.stat(path.join(root, 'etc/app.conf'))).mode & 0o777).toString(8), '644');
  t.deepEqual((await fs.readdir(path.join(root, 'etc'))).sort(), ['app.conf'], 'no staged file left');
});

test('a failed command still forgets memoised facts', async (t) => {
  const host = localHost({ root: await scratchRoot(t) });
  let computed = 0;
  const fact = () => host.memo('fact', async () => ++computed);
  await fact();
  await t.throwsAsync(host.run(['false']));
  t.is(await fact(), 2);
});

test('a file replaced by a link is kept as a backup first', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { 'etc/app.conf': 'was a file\n' });
  await localHost({ root }).symlink('/etc/other.conf', '/etc/app.conf');
  t.is(await fs.readlink(path.join(root, 'etc/app.conf')), '/etc/other.conf');
  const backups = await fs.readdir(path.join(root, BACKUP_DIR));
  t.is(backups.length, 1);
  t.is(await fs.readFile(path.join(root, BACKUP_DIR, backups[0]!), 'utf8'), 'was a file\n');
});

test('commands: input reaches stdin, output comes back whole, the exit status is kept, a missing program "could not be run"', async (t) => {
  const root = await scratchRoot(t);
  const host = localHost({ root });
  const big = `${'x'.repeat(1023)}\n`.repeat(2048); // 2 MiB: more than a pipe holds, both ways
  const echoed = await host.query(['cat'], { input: big });
  t.is(echoed.stdout, big);
  t.is(echoed.exitCode, 0);
  // a command that never reads its input: the broken pipe is not an error of the run
  t.is((await host.query(['true'], { input: big })).exitCode, 0);
  const failed = await host.query(['sh', '-c', 'echo out; echo err >&2; exit 3']);
  t.deepEqual(failed, { stdout: 'out\n', stderr: 'err\n', exitCode: 3 });
  await t.throwsAsync(host.run(['sh', '-c', 'echo nope >&2; exit 4']), { message: /`sh -c echo nope >&2; exit 4` exited 4:\n\s+nope/ });
  await t.throwsAsync(host.query(['/nonexistent/program']), { message: /`\/nonexistent\/program` could not be run:\n\s+spawn \/nonexistent\/program ENOENT/ });
  await t.throwsAsync(host.query(['sleep', '5'], { timeoutMs: 100 }), { message: /`sleep 5` could not be run:\n\s+Command timed out after 100 milliseconds/ });
});
