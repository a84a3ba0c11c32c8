import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Directory } from '../../resources/directory.ts';
import { localHost } from '../../engine/host-local.ts';
import { converge, convergesOnce, scratchRoot, seed } from '../helpers/scratch.ts';

test('a directory and its parents converge once', async (t) => {
  const root = await scratchRoot(t);
  await convergesOnce(t, root, () => [Directory({ path: '/var/lib/istio/envoy', mode: 0o750, owner: 'root', group: 'root' })]);
  t.is((await fs.stat(path.join(root, 'var/lib/istio/envoy'))).mode & 0o7777, 0o750);
  t.is((await fs.stat(path.join(root, 'var/lib/istio'))).mode & 0o7777, 0o755, 'parents get 0755');
});

test('a mode drift is repaired, setgid included', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'srv'), { mode: 0o777 });
  await fs.chmod(path.join(root, 'srv'), 0o777);
  const result = await converge(localHost({ root }), [Directory({ path: '/srv', mode: 0o2755 })]);
  t.deepEqual(result.resources[0]!.changes, ['set mode to 02755 (was 0777)']);
  t.is((await fs.stat(path.join(root, 'srv'))).mode & 0o7777, 0o2755);
});

test('parents: false refuses to create missing parents', async (t) => {
  const root = await scratchRoot(t);
  const result = await converge(localHost({ root }), [Directory({ path: '/a/b', parents: false })]);
  t.regex(result.resources[0]!.error!, /its parent \/a does not exist and parents is false/);
});

test('a file where a directory should be is an error, not a replacement', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/certs': 'not a dir' });
  const result = await converge(localHost({ root }), [Directory({ path: '/etc/certs' })]);
  t.regex(result.resources[0]!.error!, /directory\[\/etc\/certs\]: read failed: \/etc\/certs exists and is a file, not a directory/);
  t.is(await fs.readFile(path.join(root, 'etc/certs'), 'utf8'), 'not a dir');
});
