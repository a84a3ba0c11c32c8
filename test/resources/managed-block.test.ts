import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ManagedBlock, renderWithBlock, managedBlockSpec } from '../../resources/managed-block.ts';
import { localHost } from '../../engine/host-local.ts';
import { converge, convergesOnce, scratchRoot, seed } from '../helpers/scratch.ts';

const HOSTS = '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n# a comment the admin wrote   \n10.0.0.5 db.internal\n';

test('a block is added to /etc/hosts, the rest stays byte for byte, then nothing to do', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/hosts': HOSTS });
  await convergesOnce(t, root, () => [ManagedBlock({ path: '/etc/hosts', name: 'istiod', lines: ['10.150.0.6 istiod.istio-system.svc'] })]);
  const text = await fs.readFile(path.join(root, 'etc/hosts'), 'utf8');
  t.is(text, HOSTS + '# BEGIN meshvm istiod\n10.150.0.6 istiod.istio-system.svc\n# END meshvm istiod\n');
});

test('a changed block is replaced in place, lines after it untouched', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/hosts': 'a\n# BEGIN meshvm x\nold\n# END meshvm x\nz\n' });
  const result = await converge(localHost({ root }), [ManagedBlock({ path: '/etc/hosts', name: 'x', lines: ['new 1', 'new 2'] })]);
  t.deepEqual(result.resources[0]!.changes, ['update the block\n    - old\n    + new 1\n    + new 2']);
  t.is(await fs.readFile(path.join(root, 'etc/hosts'), 'utf8'), 'a\n# BEGIN meshvm x\nnew 1\nnew 2\n# END meshvm x\nz\n');
});

test('two blocks in one file are independent; ensure absent removes only its own', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/hosts': HOSTS });
  await converge(localHost({ root }), [
    ManagedBlock({ path: '/etc/hosts', name: 'one', lines: ['1.1.1.1 one'] }),
    ManagedBlock({ path: '/etc/hosts', name: 'two', lines: ['2.2.2.2 two'] }),
  ]);
  await convergesOnce(t, root, () => [ManagedBlock({ path: '/etc/hosts', name: 'one', lines: [], ensure: 'absent' })]);
  t.is(await fs.readFile(path.join(root, 'etc/hosts'), 'utf8'), HOSTS + '# BEGIN meshvm two\n2.2.2.2 two\n# END meshvm two\n');
});

test('a file without a final newline gets one before the block; a missing file is created', (t) => {
  const spec = managedBlockSpec.parse({ path: '/etc/hosts', lines: ['x'] });
  t.is(renderWithBlock('a', spec), 'a\n# BEGIN meshvm meshvm\nx\n# END meshvm meshvm\n');
  t.is(renderWithBlock('', spec), '# BEGIN meshvm meshvm\nx\n# END meshvm meshvm\n');
});

test('a begin marker without its end marker is an error that says how to fix it', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/hosts': 'a\n# BEGIN meshvm x\nold\n' });
  const result = await converge(localHost({ root }), [ManagedBlock({ path: '/etc/hosts', name: 'x', lines: ['y'] })]);
  t.regex(result.resources[0]!.error!, /found "# BEGIN meshvm x" but no "# END meshvm x" after it; fix the file by hand/);
  t.is(await fs.readFile(path.join(root, 'etc/hosts'), 'utf8'), 'a\n# BEGIN meshvm x\nold\n');
});
