import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { File } from '../../resources/file.ts';
import { localHost } from '../../engine/host-local.ts';
import { converge, convergesOnce, scratchRoot, seed, snapshot } from '../helpers/scratch.ts';

test('a file converges once, then reports zero changes', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc'));
  await convergesOnce(t, root, () => [File({ path: '/etc/motd', content: 'hello\n', mode: 0o640, owner: 'root', group: 'root' })]);
  const st = await fs.stat(path.join(root, 'etc/motd'));
  t.is(st.mode & 0o7777, 0o640);
  t.is(await fs.readFile(path.join(root, 'etc/motd'), 'utf8'), 'hello\n');
});

test('only what differs is applied: a mode drift is repaired without rewriting the content', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/motd': 'hello\n' });
  await fs.chmod(path.join(root, 'etc/motd'), 0o666);
  const before = await fs.stat(path.join(root, 'etc/motd'));
  const result = await converge(localHost({ root }), [File({ path: '/etc/motd', content: 'hello\n', mode: 0o644 })]);
  t.deepEqual(result.resources[0]!.fields, ['mode']);
  t.deepEqual(result.resources[0]!.changes, ['set mode to 0644 (was 0666)']);
  const after = await fs.stat(path.join(root, 'etc/motd'));
  t.is(after.ino, before.ino, 'same inode: content not rewritten');
  t.is(after.mode & 0o7777, 0o644);
});

test('fields the spec does not set are left alone', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/motd': 'hello\n' });
  await fs.chmod(path.join(root, 'etc/motd'), 0o600);
  const result = await converge(localHost({ root }), [File({ path: '/etc/motd', content: 'bye\n' })]);
  t.deepEqual(result.resources[0]!.fields, ['content']);
  t.is((await fs.stat(path.join(root, 'etc/motd'))).mode & 0o7777, 0o600, 'the replaced file keeps its mode');
});

test('plan shows a unified diff and changes nothing', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/app.conf': 'a=1\nb=2\nc=3\n' });
  const before = await snapshot(root);
  const result = await converge(localHost({ root }), [File({ path: '/etc/app.conf', content: 'a=1\nb=20\nc=3\n', mode: 0o600 })], 'plan');
  t.is(result.resources[0]!.status, 'would-change');
  const [diff, mode] = result.resources[0]!.changes;
  t.regex(diff!, /update content\n {2}@@ -1,3 \+1,3 @@\n {3}a=1\n {2}-b=2\n {2}\+b=20\n {3}c=3/);
  t.regex(mode!, /set mode to 0600 \(was 06[46]4\)/);
  t.deepEqual(await snapshot(root), before);
});

test('a verify command that refuses the staged file leaves the live file untouched', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/app.conf': 'good\n' });
  const before = await snapshot(root);
  const result = await converge(localHost({ root }), [
    File({ path: '/etc/app.conf', content: 'bad\n', verify: ['grep', '-q', 'good', '%{path}'], verifyOnHost: true }),
  ]);
  t.true(result.failed);
  t.regex(result.resources[0]!.error!, /verify command `grep -q good %\{path\}` refused the new content \(exit 1\)/);
  t.regex(result.resources[0]!.error!, /the live \/etc\/app\.conf was left untouched/);
  t.deepEqual(await snapshot(root), before, 'no temp file left, live file unchanged, no backup taken');
});

test('a verify command naming a line: the line is quoted, but never from a sensitive file', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/app.conf': 'good\n' });
  const refuse = ['sh', '-c', 'echo "error at line 2 of $1" >&2; exit 1', 'sh', '%{path}'];
  for (const sensitive of [false, true]) {
    const result = await converge(localHost({ root }), [
      File({ path: '/etc/app.conf', content: 'ok=1\npw=hunter2\n', verify: refuse, verifyOnHost: true, sensitive }),
    ]);
    t.true(result.failed);
    if (sensitive) t.notRegex(result.resources[0]!.error!, /hunter2/);
    else t.regex(result.resources[0]!.error!, /line 2: pw=hunter2/);
  }
});

test('a verify command that accepts lets the file through', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/app.conf': 'good\n' });
  const result = await converge(localHost({ root }), [
    File({ path: '/etc/app.conf', content: 'good too\n', verify: ['grep', '-q', 'good', '%{path}'], verifyOnHost: true }),
  ]);
  t.false(result.failed);
  t.is(await fs.readFile(path.join(root, 'etc/app.conf'), 'utf8'), 'good too\n');
});

test('the replaced file is kept as a backup, the last 5 only, readable by root alone', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc'));
  for (let i = 0; i < 8; i++) await converge(localHost({ root }), [File({ path: '/etc/motd', content: `v${i}\n` })]);
  const dir = path.join(root, 'var/lib/meshvm/backup');
  const kept = (await fs.readdir(dir)).sort();
  t.is(kept.length, 5);
  t.true(kept.every((name) => name.startsWith('%2Fetc%2Fmotd.')));
  const contents = await Promise.all(kept.map((name) => fs.readFile(path.join(dir, name), 'utf8')));
  t.deepEqual(contents, ['v2\n', 'v3\n', 'v4\n', 'v5\n', 'v6\n']);
  t.is((await fs.stat(path.join(dir, kept[0]!))).mode & 0o777, 0o600);
});

test('ensure absent removes the file, then has nothing to do', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/old.conf': 'x\n' });
  await convergesOnce(t, root, () => [File({ path: '/etc/old.conf', ensure: 'absent' })]);
  t.false(
    await fs.stat(path.join(root, 'etc/old.conf')).then(
      () => true,
      () => false,
    ),
  );
});

test('an owner that does not exist fails naming the owner, and writes nothing', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc'));
  const before = await snapshot(root);
  const result = await converge(localHost({ root }), [File({ path: '/etc/motd', content: 'x\n', owner: 'nosuchuser' })]);
  t.true(result.failed);
  t.regex(result.resources[0]!.error!, /file\[\/etc\/motd\]: apply failed: .*no user "nosuchuser"/);
  t.deepEqual(await snapshot(root), before);
});

test('a missing parent directory is a clear error', async (t) => {
  const root = await scratchRoot(t);
  const result = await converge(localHost({ root }), [File({ path: '/etc/nodir/x.conf', content: 'x\n' })]);
  t.regex(result.resources[0]!.error!, /directory \/etc\/nodir does not exist \(declare a Directory for it\)/);
});

test('bad specs are refused at declaration, naming the ref and the field', (t) => {
  t.throws(() => File({ path: 'etc/motd', content: 'x' }), { message: /file\[etc\/motd\].*: path: path must be absolute/ });
  t.throws(() => File({ path: '/etc/../motd', content: 'x' }), { message: /path must not contain "\.\."/ });
  t.throws(() => File({ path: '/etc/motd', mode: 0o17777 }), { message: /file\[\/etc\/motd\].*mode: mode must be between 0000 and 07777/ });
  t.throws(() => File({ path: '/etc/motd', mode: '0999' }), { message: /expected an octal mode/ });
  // @ts-expect-error an unknown field is a type error, and refused at run time too
  t.throws(() => File({ path: '/etc/motd', colour: 'red' }), { message: /Unrecognized key: "colour"/ });
});

test('a symlink out of a scratch root is not followed', async (t) => {
  const root = await scratchRoot(t);
  const outside = await scratchRoot(t);
  await fs.symlink(outside, path.join(root, 'etc'));
  const result = await converge(localHost({ root }), [File({ path: '/etc/escape', content: 'x\n' })]);
  t.true(result.failed);
  t.regex(result.resources[0]!.error!, /resolves outside the root/);
  t.deepEqual(await fs.readdir(outside), []);
});

test('under a scratch root, an absolute symlink is read inside the root, never from this machine', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/run/systemd/resolve/stub-resolv.conf': 'nameserver 127.0.0.53\n' });
  await fs.mkdir(path.join(root, 'etc'));
  await fs.symlink('/run/systemd/resolve/stub-resolv.conf', path.join(root, 'etc/resolv.conf'));
  await fs.symlink('../run/systemd/resolve', path.join(root, 'etc/resolve-dir'));
  await fs.symlink('/etc/passwd', path.join(root, 'etc/host-passwd'));
  const host = localHost({ root });
  t.is(await host.readFile('/etc/resolv.conf'), 'nameserver 127.0.0.53\n');
  t.is(await host.readFile('/etc/resolve-dir/stub-resolv.conf'), 'nameserver 127.0.0.53\n');
  t.is(await host.readFile('/etc/host-passwd'), undefined, "the root has no /etc/passwd: this machine's is not read");
});
