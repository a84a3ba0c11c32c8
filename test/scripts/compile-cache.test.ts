// The compile cache (bin/compile-cache.js) is used only in a directory no other user can write: code read from it is run.
import test from 'ava';
import { execa } from 'execa';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { compileCacheDir } from '../../bin/compile-cache.js';
import { fileNotOwned, notOwned } from '../../bin/owned-path.js';
import { BIN, scratchRoot } from '../helpers/scratch.ts';

test('where the cache goes: MESHVM_COMPILE_CACHE, "off", /var/cache for root, ~/.cache for others, never /tmp by default', (t) => {
  t.is(compileCacheDir({ MESHVM_COMPILE_CACHE: 'off' }, 0), undefined);
  t.is(compileCacheDir({ MESHVM_COMPILE_CACHE: '/srv/cache' }, 0), '/srv/cache');
  t.is(compileCacheDir({}, 0), '/var/cache/meshvm/compile-cache');
  t.is(compileCacheDir({}, 1000), path.join(os.homedir(), '.cache/meshvm/compile-cache'));
  t.is(compileCacheDir({}, undefined), undefined);
});

test('a cache directory another user could write to, or reach through a link, is refused', async (t) => {
  const dir = await scratchRoot(t, 'meshvm-cc-');
  await fs.chmod(dir, 0o700);
  const cache = path.join(dir, 'cache');
  await fs.mkdir(cache, { mode: 0o700 });
  t.is(notOwned(cache, 0), undefined, 'a 0700 directory of ours under the sticky /tmp is safe');
  await fs.chmod(cache, 0o1777);
  t.regex(notOwned(cache, 0) ?? '', /cache is writable by others \(mode 1777\)/, 'the directory itself: not even sticky');
  await fs.chmod(cache, 0o700);
  await fs.chmod(dir, 0o777);
  t.regex(notOwned(cache, 0) ?? '', /is writable by others \(mode 777\)/, 'a parent without the sticky bit');
  await fs.chmod(dir, 0o700);
  await fs.chown(cache, 65534, 65534);
  t.regex(notOwned(cache, 0) ?? '', /belongs to uid 65534/, "another user's directory (made first, as in /tmp)");
  await fs.chown(cache, 0, 0);
  await fs.symlink(cache, path.join(dir, 'link'));
  t.regex(notOwned(path.join(dir, 'link'), 0) ?? '', /link is not a directory or regular file/);
  // a file through a link (as a CA bundle in /etc/ssl/certs): the link's directory and the file it leads to both count
  const file = path.join(cache, 'ca.pem');
  await fs.writeFile(file, '', { mode: 0o644 });
  await fs.symlink(file, path.join(dir, 'ca-link.pem'));
  t.is(fileNotOwned(path.join(dir, 'ca-link.pem'), 0), undefined);
  await fs.chmod(file, 0o666);
  t.regex(fileNotOwned(path.join(dir, 'ca-link.pem'), 0) ?? '', /ca\.pem is writable by others \(mode 666\)/);
  t.regex(fileNotOwned(path.join(dir, 'missing.pem'), 0) ?? '', /ENOENT/);
  // a link in the middle of the chain, in a directory another user owns: both ends are root's, the middle could be re-pointed
  await fs.chmod(file, 0o644);
  const users = path.join(dir, 'home-bob');
  await fs.mkdir(users, { mode: 0o755 });
  await fs.symlink(file, path.join(users, 'ca.pem'));
  await fs.chown(users, 65534, 65534);
  await fs.symlink(path.join(users, 'ca.pem'), path.join(dir, 'via-bob.pem'));
  t.regex(fileNotOwned(path.join(dir, 'via-bob.pem'), 0) ?? '', /home-bob belongs to uid 65534/);
});

test('the command caches its compiled code in a safe directory, and writes nothing into an unsafe one', async (t) => {
  const dir = await scratchRoot(t, 'meshvm-cc-');
  await fs.chmod(dir, 0o700);
  const safe = path.join(dir, 'safe');
  const run = (cache: string) => execa(process.execPath, [BIN, '--version'], { env: { MESHVM_COMPILE_CACHE: cache }, reject: false });
  const ok = await run(safe);
  t.is(ok.exitCode, 0, ok.stderr);
  t.true((await fs.readdir(safe, { recursive: true })).length > 0, 'compiled code was cached');
  t.is((await fs.stat(safe)).mode & 0o777, 0o700, 'made for this user only');
  const shared = path.join(dir, 'shared');
  await fs.mkdir(shared);
  await fs.chmod(shared, 0o777);
  const refused = await run(shared);
  t.is(refused.exitCode, 0, refused.stderr);
  t.regex(refused.stdout, /^\d+\.\d+\.\d+/);
  t.deepEqual(await fs.readdir(shared), [], 'an unsafe directory: the run goes on without the cache');
});
