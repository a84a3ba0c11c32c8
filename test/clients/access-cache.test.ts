// clients/access-cache.ts: kept access is used only from a file this user wrote, 0600, not (nearly) expired; written whole.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { AccessCache, EXPIRY_MARGIN_MS, type KeptAccess } from '../../clients/access-cache.ts';
import { scratchRoot } from '../helpers/scratch.ts';

const kept = (expiresAt: number): KeptAccess => ({
  access: { server: 'https://203.0.113.10:6443', caPem: 'PEM', token: 'kept-k8s-token' },
  vault: { address: 'https://vault.example.com:8200', token: 'kept-vault-token' },
  expiresAt,
});

test('saved, loaded back while valid; refused within the expiry margin; dropped', async (t) => {
  const root = await scratchRoot(t);
  const cache = new AccessCache({ some: 'config' }, (p) => path.join(root, p));
  t.is(await cache.load(), undefined);
  await cache.save(kept(Date.now() + 10 * 60_000));
  t.is((await cache.load())?.access.token, 'kept-k8s-token');
  t.is(await cache.load(Date.now() + 10 * 60_000 - EXPIRY_MARGIN_MS + 1000), undefined, 'about to expire: not used');
  await cache.drop();
  t.is(await cache.load(), undefined);
});

test('a kept file readable by others, or not JSON, is not trusted', async (t) => {
  const root = await scratchRoot(t);
  const cache = new AccessCache({ some: 'config' }, (p) => path.join(root, p));
  await cache.save(kept(Date.now() + 10 * 60_000));
  const file = path.join(root, cache.file);
  await fs.chmod(file, 0o644);
  t.is(await cache.load(), undefined);
  await fs.chmod(file, 0o600);
  await fs.writeFile(file, '{"access":', { mode: 0o600 });
  t.is(await cache.load(), undefined);
});

test('each cluster configuration has its own file', (t) => {
  const a = new AccessCache({ vault: 'a' }, (p) => p);
  const b = new AccessCache({ vault: 'b' }, (p) => p);
  t.not(a.file, b.file);
  t.regex(a.file, /^\/run\/meshvm\/cluster-access\/[0-9a-f]{16}\.json$/);
});
