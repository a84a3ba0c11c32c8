// Delayed notifications: de-duplicated, delivered once at the end, also after a failure, persisted until delivered.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { meshvm, scratchRoot, writeRunlist, PROJECT } from '../helpers/scratch.ts';

const MODULE = path.join(PROJECT, 'test/fixtures/recipes/notify.ts');

async function setup(t: Parameters<typeof scratchRoot>[0]) {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  await fs.mkdir(path.join(root, 'srv'));
  const runlist = (attributes: Record<string, unknown>) =>
    writeRunlist(dir, 'notify.yaml', `name: notify\nrecipes:\n  - recipe: ${MODULE}\n    attributes: ${JSON.stringify(attributes)}\n`);
  const restarts = async () => (await fs.readFile(path.join(root, 'srv/service.restarts'), 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  const pending = () =>
    fs.readFile(path.join(root, 'var/lib/meshvm/pending.json'), 'utf8').then(
      (s) => JSON.parse(s),
      () => undefined,
    );
  return { root, runlist, restarts, pending };
}

test('a service started in this run is not restarted; two changed files notifying it restart it once', async (t) => {
  const { root, runlist, restarts } = await setup(t);
  const file = await runlist({ content: 'v1\n' });
  const first = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(first.exitCode, 0, first.stderr);
  const report = JSON.parse(first.stdout);
  t.deepEqual(
    report.notifications.map((n: { status: string }) => n.status),
    ['not-needed'],
  );
  t.is(await restarts(), 0);

  const again = await meshvm(['converge', await runlist({ content: 'v2\n' }), '--root', root, '--json']);
  const second = JSON.parse(again.stdout);
  t.deepEqual(second.notifications, [{ ref: 'fake_service[/srv/service]', status: 'refreshed', because: ['file[/srv/config-a]', 'file[/srv/config-b]'] }]);
  t.is(await restarts(), 1, 'once, though two files changed');

  const noop = await meshvm(['converge', await runlist({ content: 'v2\n' }), '--root', root]);
  t.is(noop.exitCode, 0);
  t.is(await restarts(), 1, 'no change, no restart');
});

test('a restart owed by a failed run is delivered at its end, and by the next run if that delivery failed too', async (t) => {
  const { root, runlist, restarts, pending } = await setup(t);
  await meshvm(['converge', await runlist({}), '--root', root]);

  // the files change, then a later resource fails: the restart is still delivered at the end
  const failed = await meshvm(['converge', await runlist({ content: 'v2\n', failAfter: true }), '--root', root, '--json']);
  t.is(failed.exitCode, 1);
  t.is(JSON.parse(failed.stdout).notifications[0].status, 'refreshed');
  t.is(await restarts(), 1);

  // the files change and the restart itself fails: it stays owed, on disk
  const broken = await meshvm(['converge', await runlist({ content: 'v3\n', failRefresh: true }), '--root', root]);
  t.is(broken.exitCode, 1);
  t.regex(broken.stdout, /fake_service\[\/srv\/service\] refresh FAILED/);
  t.deepEqual(await pending(), { owed: { 'fake_service[/srv/service]': ['file[/srv/config-a]', 'file[/srv/config-b]'] } });

  // the next run has nothing to change but delivers the restart it owes
  const next = await meshvm(['converge', await runlist({ content: 'v3\n' }), '--root', root, '--json']);
  t.is(next.exitCode, 0, next.stderr);
  const report = JSON.parse(next.stdout);
  t.is(report.summary.changed, 0);
  t.is(report.notifications[0].status, 'refreshed');
  t.is(await restarts(), 2);
  t.is(await pending(), undefined, 'nothing owed any more');
});

test('plan shows the restarts it would cause and changes nothing', async (t) => {
  const { root, runlist, restarts } = await setup(t);
  await meshvm(['converge', await runlist({}), '--root', root]);
  const plan = await meshvm(['plan', await runlist({ content: 'v2\n' }), '--root', root, '--detailed-exitcode']);
  t.is(plan.exitCode, 2);
  t.regex(plan.stdout, /fake_service\[\/srv\/service\] would refresh \(because file\[\/srv\/config-a\], file\[\/srv\/config-b\] changed\)/);
  t.is(await restarts(), 0);
  t.is(await fs.readFile(path.join(root, 'srv/config-a'), 'utf8'), 'v1\n');
});

test('notifying a resource the runlist does not declare is an error before anything runs', async (t) => {
  const { root, runlist } = await setup(t);
  const result = await meshvm(['converge', await runlist({ declareService: false }), '--root', root]);
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /file\[\/srv\/config-a\]: notifies fake_service\[\/srv\/service\], which this runlist does not declare/);
  t.deepEqual(await fs.readdir(path.join(root, 'srv')), []);
});
