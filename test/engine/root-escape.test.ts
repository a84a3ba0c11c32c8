// The root-escape corpus: every change reached through an intermediate link that leads out of the root (or that an unprivileged account controls) is refused, naming the path, and nothing outside changes.
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { localHost } from '../../engine/host-local.ts';
import type { Host } from '../../engine/host.ts';
import { meshvm, PROJECT, scratchRoot, seed, snapshot, writeRunlist } from '../helpers/scratch.ts';

const UNPRIVILEGED = 4242;

/** A directory outside the root with what a stray write would hit: a root 0600 file and a directory. */
async function outsideWithCanaries(t: ExecutionContext): Promise<string> {
  const outside = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-outside-'));
  t.teardown(() => fs.rm(outside, { recursive: true, force: true }));
  await fs.writeFile(path.join(outside, 'canary'), 'root only\n', { mode: 0o600 });
  await fs.mkdir(path.join(outside, 'lib'), { mode: 0o700 });
  return outside;
}

/** The two ways a link leads out: an absolute path of this machine, and a relative one climbing above the root. */
const leadsOut = {
  absolute: (outside: string) => outside,
  climbing: (outside: string) => `../../../../../../../../..${outside}`,
};

interface Case {
  what: string;
  /** Makes the link (link(where, target)) and whatever else the case needs under the root. */
  setup(root: string, link: (at: string, target: string) => Promise<void>, outside: string): Promise<void>;
  act(host: Host): Promise<unknown>;
  expect: RegExp;
}

const cases: Case[] = [
  {
    what: 'chmod through /etc, a link',
    setup: (_root, link, outside) => link('etc', outside),
    act: (host) => host.chmod('/etc/canary', 0o666),
    expect: /cannot change \/etc\/canary .*: \/etc is a link to .*(resolves outside the root|leads nowhere inside the root)/,
  },
  {
    what: 'chown through /etc, a link',
    setup: (_root, link, outside) => link('etc', outside),
    act: (host) => host.chown('/etc/canary', { owner: String(UNPRIVILEGED) }),
    expect: /cannot change \/etc\/canary .*: \/etc is a link to .*leads nowhere inside the root/,
  },
  {
    what: 'mkdir whose missing parent is below /var, a link',
    setup: (_root, link, outside) => link('var', outside),
    act: (host) => host.mkdir('/var/lib/deep', { mode: 0o777 }),
    expect: /cannot create \/var\/lib\/deep .*: \/var is a link to .*leads nowhere inside the root/,
  },
  {
    what: 'a file written below /etc, a link (its temp file)',
    setup: (_root, link, outside) => link('etc', outside),
    act: (host) => host.writeFile('/etc/canary', 'overwritten\n'),
    expect: /cannot change \/etc\/canary .*: \/etc is a link/,
  },
  {
    what: 'the backup of a replaced file, /var/lib/meshvm a link',
    setup: async (root, link, outside) => {
      await seed(root, { 'etc/app.conf': 'old\n', 'var/lib/placeholder': '' });
      await link('var/lib/meshvm', outside);
    },
    act: (host) => host.writeFile('/etc/app.conf', 'new\n'),
    expect: /cannot keep a backup of \/etc\/app\.conf in \/var\/lib\/meshvm\/backup: .*\/var\/lib\/meshvm is a link to .*leads nowhere inside the root/,
  },
  {
    what: 'a link made below /etc, a link',
    setup: (_root, link, outside) => link('etc', outside),
    act: (host) => host.symlink('/etc/passwd', '/etc/canary'),
    expect: /cannot change \/etc\/canary .*: \/etc is a link/,
  },
  {
    what: 'a removal below /etc, a link',
    setup: (_root, link, outside) => link('etc', outside),
    act: (host) => host.remove('/etc/canary'),
    expect: /cannot change \/etc\/canary .*: \/etc is a link/,
  },
];

for (const c of cases) {
  for (const [how, target] of Object.entries(leadsOut)) {
    test(`root escape: ${c.what} (${how}) is refused, naming the path; nothing outside changes`, async (t) => {
      const root = await scratchRoot(t);
      const outside = await outsideWithCanaries(t);
      await c.setup(
        root,
        async (at, to) => {
          await fs.mkdir(path.dirname(path.join(root, at)), { recursive: true });
          await fs.symlink(to === outside ? target(outside) : to, path.join(root, at));
        },
        outside,
      );
      const before = await snapshot(outside);
      const inRoot = await snapshot(root);
      const error = await t.throwsAsync(c.act(localHost({ root })));
      t.regex(error?.message ?? '', c.expect);
      t.deepEqual(await snapshot(outside), before, 'nothing outside the root changed');
      t.deepEqual(await snapshot(root), inRoot, 'nothing inside it either: no temp file, no half-made directory');
    });
  }
}

test('root escape: a staged temp name planted as a link out of the root is replaced, never written through', async (t) => {
  const root = await scratchRoot(t);
  const outside = await outsideWithCanaries(t);
  await seed(root, { 'etc/app.conf': 'old\n' });
  await fs.symlink(path.join(outside, 'canary'), path.join(root, 'etc/.app.conf.meshvm-new'));
  const before = await snapshot(outside);
  await localHost({ root }).writeFile('/etc/app.conf', 'new\n');
  t.is(await fs.readFile(path.join(root, 'etc/app.conf'), 'utf8'), 'new\n');
  t.deepEqual(await fs.readdir(path.join(root, 'etc')), ['app.conf'], 'the planted link is gone');
  t.deepEqual(await snapshot(outside), before);
});

test('root escape: the run lock with /run a link out of the root, or the lock file a link, is refused naming it; nothing outside changes', async (t) => {
  const runlists = await scratchRoot(t, 'meshvm-runlists-');
  const runlist = await writeRunlist(runlists, 'slow.yaml', `name: slow\nrecipes:\n  - recipe: ${path.join(PROJECT, 'test/fixtures/recipes/slow.ts')}\n`);
  for (const plant of ['run', 'run/meshvm.lock']) {
    const root = await scratchRoot(t);
    const outside = await outsideWithCanaries(t);
    await fs.mkdir(path.join(root, 'run'), { recursive: true });
    if (plant === 'run') await fs.rmdir(path.join(root, 'run'));
    await fs.symlink(path.join(outside, plant === 'run' ? 'lib' : 'canary'), path.join(root, plant));
    const before = await snapshot(outside);
    const result = await meshvm(['converge', runlist, '--root', root]);
    t.is(result.exitCode, 1, result.stdout);
    t.regex(
      result.stderr,
      plant === 'run' ? /\/run\/meshvm\.lock .*: \/run is a link to .*leads nowhere inside the root/ : /the lock file .*\/run\/meshvm\.lock is a link/,
      plant,
    );
    t.deepEqual(await snapshot(outside), before, plant);
    t.false(
      await fs.stat(path.join(root, 'log')).then(
        () => true,
        () => false,
      ),
      'the run did not go on without its lock',
    );
  }
});

const asRoot = process.getuid?.() === 0;

(asRoot ? test : test.skip)(
  `unsafe path transition: a link in a directory an unprivileged account owns is not followed, even to a path inside the root${asRoot ? '' : ' (skipped: needs root to chown)'}`,
  async (t) => {
    const root = await scratchRoot(t);
    await seed(root, { 'etc/app.conf': 'x\n' });
    await fs.mkdir(path.join(root, 'srv'));
    await fs.chown(path.join(root, 'srv'), UNPRIVILEGED, UNPRIVILEGED);
    await fs.symlink('/etc', path.join(root, 'srv/link'));
    const host = localHost({ root });
    const before = await snapshot(root);
    for (const act of [() => host.writeFile('/srv/link/new', 'x'), () => host.chmod('/srv/link/app.conf', 0o666), () => host.mkdir('/srv/link/d')]) {
      await t.throwsAsync(act(), { message: /\/srv\/link is a link \(to \/etc\) in \/srv, a directory owned by uid 4242, not root; .*unsafe path transition/ });
    }
    t.deepEqual(await snapshot(root), before);
    // root's own /tmp-like directory that anyone can write: its links are anyone's, not followed either
    await fs.mkdir(path.join(root, 'tmp'), { mode: 0o1777 });
    await fs.chmod(path.join(root, 'tmp'), 0o1777);
    await fs.symlink('/etc', path.join(root, 'tmp/link'));
    await t.throwsAsync(host.writeFile('/tmp/link/new', 'x'), { message: /\/tmp\/link is a link \(to \/etc\) in \/tmp, a directory anyone can write; / });
    t.false(
      await fs.stat(path.join(root, 'etc/new')).then(
        () => true,
        () => false,
      ),
    );
    // the same link in a directory root owns is followed, inside the root
    await fs.rename(path.join(root, 'srv/link'), path.join(root, 'link'));
    await host.writeFile('/link/new', 'y\n');
    t.is(await fs.readFile(path.join(root, 'etc/new'), 'utf8'), 'y\n');
  },
);

(asRoot ? test : test.skip)(
  `at --root /: the same rules (an unprivileged account's link, a hard link to a root file)${asRoot ? '' : ' (skipped: needs root to chown)'}`,
  async (t) => {
    const work = await scratchRoot(t, 'meshvm-live-');
    const outside = await outsideWithCanaries(t);
    const owned = path.join(work, 'owned');
    await fs.mkdir(owned);
    await fs.chown(owned, UNPRIVILEGED, UNPRIVILEGED);
    await fs.symlink(outside, path.join(owned, 'link'));
    // a second name for the root file, as an account could make with fs.protected_hardlinks off (made here by root)
    await fs.link(path.join(outside, 'canary'), path.join(owned, 'hard'));
    const before = await snapshot(outside);
    const host = localHost({ root: '/' });
    await t.throwsAsync(host.chmod(path.join(owned, 'link/canary'), 0o666), { message: /unsafe path transition/ });
    await t.throwsAsync(host.chown(path.join(owned, 'hard'), { owner: String(UNPRIVILEGED) }), {
      message: new RegExp(`refusing to set the owner of ${owned}/hard: it has 2 hard links in a directory owned by uid 4242`),
    });
    t.deepEqual(await snapshot(outside), before);
  },
);
