// clients/access-cache.ts: kept access is used only from a file this user wrote, 0600, not (nearly) expired; written whole,
// through the run's Host (the safe path walk), never through a link out of the root.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { AccessCache, EXPIRY_MARGIN_MS, type KeptAccess } from '../../clients/access-cache.ts';
import { localHost } from '../../engine/host-local.ts';
import { scratchRoot } from '../helpers/scratch.ts';

const kept = (expiresAt: number): KeptAccess => ({
  access: { server: 'https://203.0.113.10:6443', caPem: 'PEM', token: 'kept-k8s-token' },
  vault: { address: 'https://vault.example.com:8200', token: 'kept-vault-token' },
  expiresAt,
});

const cacheIn = (root: string, config: unknown = { some: 'config' }) => {
  const host = localHost({ root });
  return new AccessCache(config, host, host);
};

test('saved (0600 in a 0700 directory), loaded back while valid; refused within the expiry margin; dropped', async (t) => {
  const root = await scratchRoot(t);
  const cache = cacheIn(root);
  t.is(await cache.load(), undefined);
  await cache.save(kept(Date.now() + 10 * 60_000));
  t.is((await fs.stat(path.join(root, cache.file))).mode & 0o777, 0o600);
  t.is((await fs.stat(path.dirname(path.join(root, cache.file)))).mode & 0o777, 0o700);
  t.is((await cache.load())?.access.token, 'kept-k8s-token');
  t.is(await cache.load(Date.now() + 10 * 60_000 - EXPIRY_MARGIN_MS + 1000), undefined, 'about to expire: not used');
  await cache.drop();
  t.is(await cache.load(), undefined);
});

test('a kept file readable by others, or not JSON, is not trusted', async (t) => {
  const root = await scratchRoot(t);
  const cache = cacheIn(root);
  await cache.save(kept(Date.now() + 10 * 60_000));
  const file = path.join(root, cache.file);
  await fs.chmod(file, 0o644);
  t.is(await cache.load(), undefined);
  await fs.chmod(file, 0o600);
  await fs.writeFile(file, '{"access":', { mode: 0o600 });
  t.is(await cache.load(), undefined);
});

test('plan and verify (no writable Host) load kept access but cannot change it', async (t) => {
  const root = await scratchRoot(t);
  await cacheIn(root).save(kept(Date.now() + 10 * 60_000));
  const readOnly = new AccessCache({ some: 'config' }, localHost({ root }));
  t.false(readOnly.writable);
  t.is((await readOnly.load())?.access.token, 'kept-k8s-token');
  await t.throwsAsync(() => readOnly.save(kept(Date.now() + 10 * 60_000)), { message: /changed by a converge only/ });
  await t.throwsAsync(() => readOnly.drop(), { message: /changed by a converge only/ });
});

test('each cluster configuration has its own file, whatever the order of its keys', (t) => {
  const host = localHost({ root: '/nonexistent' });
  const a = new AccessCache({ vault: 'a', access: 'x' }, host);
  const b = new AccessCache({ vault: 'b', access: 'x' }, host);
  t.not(a.file, b.file);
  t.is(new AccessCache({ access: 'x', vault: 'a' }, host).file, a.file);
  t.regex(a.file, /^\/run\/meshvm\/cluster-access\/[0-9a-f]{16}\.json$/);
});

test('a `run` link in the root that leads outside it is not written through (the safe path walk refuses it)', async (t) => {
  const root = await scratchRoot(t);
  const outside = await scratchRoot(t, 'meshvm-outside-');
  for (const target of [outside, path.relative(root, outside)]) {
    await fs.rm(path.join(root, 'run'), { force: true });
    await fs.symlink(target, path.join(root, 'run'));
    const cache = cacheIn(root);
    await t.throwsAsync(() => cache.save(kept(Date.now() + 10 * 60_000)));
    t.deepEqual(await fs.readdir(outside), [], `nothing written through run -> ${target}`);
  }
});
