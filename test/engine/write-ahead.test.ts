// Write-ahead notifications: what a change owes is on disk before the change lands, and owed refreshes are never dropped.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { meshvm, PROJECT, scratchRoot, writeRunlist } from '../helpers/scratch.ts';

const MODULE = path.join(PROJECT, 'test/fixtures/recipes/write-ahead.ts');
const SERVICE = 'counted_service[/srv/service]';

async function setup(t: Parameters<typeof scratchRoot>[0]) {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  await fs.mkdir(path.join(root, 'srv'));
  let n = 0;
  const runlist = (attributes: Record<string, unknown>) =>
    writeRunlist(dir, `r${++n}.yaml`, `name: write-ahead\nrecipes:\n  - recipe: ${MODULE}\n    attributes: ${JSON.stringify(attributes)}\n`);
  const restarts = async () => (await fs.readFile(path.join(root, 'srv/service.restarts'), 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  const pending = () =>
    fs.readFile(path.join(root, 'var/lib/meshvm/pending.json'), 'utf8').then(
      (s) => JSON.parse(s),
      () => undefined,
    );
  const converge = async (attributes: Record<string, unknown>, env: Record<string, string> = {}) => {
    const result = await meshvm(['converge', await runlist(attributes), '--root', root, '--json'], { env });
    return { ...result, report: result.stdout ? JSON.parse(result.stdout) : undefined };
  };
  return { root, restarts, pending, converge };
}

test('SIGKILL right after a file is replaced (a fault hook, not timing): the restart it owes is on disk, and the next run makes it', async (t) => {
  const { root, restarts, pending, converge } = await setup(t);
  t.is((await converge({})).exitCode, 0);

  const killed = await converge({ a: 'v2\n' }, { MESHVM_TEST_FAULT: 'kill-after-apply=file[/srv/config-a]' });
  t.is(killed.exitCode, -1, 'killed by the fault hook (no exit status)');
  t.is(killed.stdout, '', 'no report: it died');
  t.is(await fs.readFile(path.join(root, 'srv/config-a'), 'utf8'), 'v2\n', 'the new file landed before the kill');
  t.deepEqual(await pending(), { owed: { [SERVICE]: ['file[/srv/config-a]'] } }, 'owed before the change landed');
  t.is(await restarts(), 0);

  // nothing left to change: the restart comes only from what the killed run wrote ahead
  const next = await converge({ a: 'v2\n' });
  t.is(next.exitCode, 0, next.stderr);
  t.is(next.report.summary.changed, 0);
  t.deepEqual(next.report.notifications, [{ ref: SERVICE, status: 'refreshed', because: ['file[/srv/config-a]'] }]);
  t.is(await restarts(), 1);
  t.is(await pending(), undefined);
});

test('a change that did not land after all (the new content refused before the rename) owes nothing', async (t) => {
  const { root, restarts, pending, converge } = await setup(t);
  t.is((await converge({})).exitCode, 0);
  const refused = await converge({ a: 'v2\n', refuseA: true });
  t.is(refused.exitCode, 1);
  t.regex(refused.report.resources[1].error, /refused the new content/);
  t.deepEqual(refused.report.notifications, []);
  t.is(await pending(), undefined, 'written ahead, then withdrawn');
  t.is(await restarts(), 0);
  t.is(await fs.readFile(path.join(root, 'srv/config-a'), 'utf8'), 'v1\n');
});

test('a restart owed to a resource another runlist does not declare is kept and reported, and delivered by a run that declares it', async (t) => {
  const { restarts, pending, converge } = await setup(t);
  t.is((await converge({})).exitCode, 0);
  await converge({ b: 'v2\n' }, { MESHVM_TEST_FAULT: 'kill-after-apply=file[/srv/config-b]' });
  const owed = { owed: { [SERVICE]: ['file[/srv/config-b]'] } };
  t.deepEqual(await pending(), owed);

  const other = await converge({ service: false });
  t.is(other.exitCode, 0, other.stderr);
  t.deepEqual(other.report.notifications, [
    {
      ref: SERVICE,
      status: 'kept',
      because: ['file[/srv/config-b]'],
      why: 'not declared by this runlist: still owed, until a run that declares it delivers it',
    },
  ]);
  t.deepEqual(await pending(), owed, 'still owed');
  t.is(await restarts(), 0);

  const back = await converge({ b: 'v2\n' });
  t.deepEqual(
    back.report.notifications.map((n: { status: string }) => n.status),
    ['refreshed'],
  );
  t.is(await restarts(), 1);
  t.is(await pending(), undefined);
});

test('a composite that notifies: killed right after its part is replaced, it still owes the restart', async (t) => {
  const { root, restarts, pending, converge } = await setup(t);
  t.is((await converge({})).exitCode, 0);
  const killed = await converge({ bundle: 'v2\n' }, { MESHVM_TEST_FAULT: 'kill-after-apply=bundle[/srv/bundle] > file[/srv/bundle]' });
  t.is(killed.exitCode, -1);
  t.is(await fs.readFile(path.join(root, 'srv/bundle'), 'utf8'), 'v2\n');
  t.deepEqual(await pending(), { owed: { [SERVICE]: ['bundle[/srv/bundle]'] } });
  const next = await converge({ bundle: 'v2\n' });
  t.is(next.report.summary.changed, 0);
  t.deepEqual(next.report.notifications, [{ ref: SERVICE, status: 'refreshed', because: ['bundle[/srv/bundle]'] }]);
  t.is(await restarts(), 1);
});
