// Execute: guards each way, plan says would-run or not and runs nothing, a notification runs it once, failures show the output's last lines.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Execute } from '../../resources/execute.ts';
import { File } from '../../resources/file.ts';
import { localHost } from '../../engine/host-local.ts';
import { converge, convergesOnce, scratchRoot, seed, snapshot } from '../helpers/scratch.ts';

/** A command that appends a line to <root>/var/log/runs, so a test can count how often it ran. */
async function counter(t: Parameters<typeof scratchRoot>[0]) {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'var/log'), { recursive: true });
  const log = path.join(root, 'var/log/runs');
  const runs = async () => (await fs.readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  return { root, log, runs, count: ['sh', '-c', 'echo ran >> "$0"', log] };
}

test('creates: runs while the path is missing, then never again; plan after that has nothing to do', async (t) => {
  const { root, runs } = await counter(t);
  const marker = path.join(root, 'opt/envoy');
  await fs.mkdir(path.join(root, 'opt'));
  const first = await convergesOnce(t, root, () => [
    Execute({
      onHost: true,
      name: 'unpack envoy',
      command: ['sh', '-c', 'echo ran >> "$0"; touch "$1"', path.join(root, 'var/log/runs'), marker],
      creates: '/opt/envoy',
    }),
  ]);
  t.deepEqual(first.resources[0]!.changes, [
    `run \`sh -c 'echo ran >> "$0"; touch "$1"' ${path.join(root, 'var/log/runs')} ${marker}\` (/opt/envoy does not exist)`,
  ]);
  t.is(await runs(), 1);
});

test('creates: an existing path means it does not run', async (t) => {
  const { root, runs, count } = await counter(t);
  await seed(root, { '/opt/envoy': '' });
  const result = await converge(localHost({ root }), [Execute({ onHost: true, command: count, creates: '/opt/envoy' })]);
  t.is(result.resources[0]!.status, 'unchanged');
  t.is(await runs(), 0);
});

test('onlyIf and notIf, each way', async (t) => {
  const cases = [
    { guard: { onlyIf: ['true'] }, runs: 1 },
    { guard: { onlyIf: ['false'] }, runs: 0 },
    { guard: { notIf: ['true'] }, runs: 0 },
    { guard: { notIf: ['false'] }, runs: 1 },
    { guard: { onlyIf: ['true'], notIf: ['true'] }, runs: 0 },
    { guard: { onlyIf: ['true'], notIf: ['false'] }, runs: 1 },
  ];
  for (const c of cases) {
    const { root, runs, count } = await counter(t);
    const result = await converge(localHost({ root }), [Execute({ onHost: true, command: count, ...c.guard })]);
    t.false(result.failed, JSON.stringify(c.guard));
    t.is(await runs(), c.runs, JSON.stringify(c.guard));
    t.is(result.resources[0]!.status, c.runs ? 'changed' : 'unchanged', JSON.stringify(c.guard));
  }
});

test('a guard that reads the machine makes it converge: runs once, then the guard says no', async (t) => {
  const { root, runs, count, log } = await counter(t);
  await convergesOnce(t, root, () => [Execute({ onHost: true, name: 'first boot', command: count, notIf: ['test', '-s', log] })]);
  t.is(await runs(), 1);
});

test('plan runs the guards, says would-run and why, and changes nothing', async (t) => {
  const { root, runs, count } = await counter(t);
  const before = await snapshot(root);
  const would = await converge(localHost({ root }), [Execute({ onHost: true, name: 'enable', command: count, onlyIf: ['test', '-d', root] })], 'plan');
  t.is(would.resources[0]!.status, 'would-change');
  t.regex(would.resources[0]!.changes[0]!, /^run `sh -c .*` \(onlyIf `test -d \S+` succeeded\)$/);
  const wouldNot = await converge(
    localHost({ root }),
    [Execute({ onHost: true, name: 'enable', command: count, onlyIf: ['test', '-d', path.join(root, 'nope')] })],
    'plan',
  );
  t.is(wouldNot.resources[0]!.status, 'unchanged');
  t.is(await runs(), 0);
  t.deepEqual(await snapshot(root), before);
});

test('a notified command runs once per change, never on its own; plan only says it would', async (t) => {
  const { root, runs, count } = await counter(t);
  await fs.mkdir(path.join(root, 'etc'));
  const declare = (content: string) => {
    const reload = Execute({ onHost: true, name: 'daemon-reload', command: count, onlyWhenNotified: true });
    return [File({ path: '/etc/unit.conf', content }, { notifies: reload }), reload];
  };
  const plan = await converge(localHost({ root }), declare('v1\n'), 'plan');
  t.deepEqual(
    plan.notifications.map((n) => n.status),
    ['would-refresh'],
  );
  t.is(await runs(), 0);

  const first = await converge(localHost({ root }), declare('v1\n'));
  t.deepEqual(first.notifications, [{ ref: 'execute[daemon-reload]', status: 'refreshed', because: ['file[/etc/unit.conf]'] }]);
  t.is(first.resources[1]!.status, 'unchanged', 'not run on converge');
  t.is(await runs(), 1);

  const again = await converge(localHost({ root }), declare('v1\n'));
  t.deepEqual(again.notifications, []);
  t.is(await runs(), 1, 'no change, no run');

  await converge(localHost({ root }), declare('v2\n'));
  t.is(await runs(), 2);
});

test('a guarded command that ran in this run is not run again by a notification', async (t) => {
  const { root, runs, count, log } = await counter(t);
  await fs.mkdir(path.join(root, 'etc'));
  const run = Execute({ onHost: true, name: 'setup', command: count, notIf: ['test', '-s', log] });
  const result = await converge(localHost({ root }), [File({ path: '/etc/setup.conf', content: 'x\n' }, { notifies: run }), run]);
  t.is(result.resources[1]!.status, 'changed');
  t.deepEqual(
    result.notifications.map((n) => n.status),
    ['not-needed'],
  );
  t.is(await runs(), 1);
});

test('a failing command shows its exit code and the last lines of its output', async (t) => {
  const root = await scratchRoot(t);
  const script = 'for i in $(seq 1 30); do echo "out $i"; done; echo "broken: no such thing" >&2; exit 3';
  const result = await converge(localHost({ root }), [Execute({ onHost: true, name: 'migrate', shell: true, script, onlyIf: ['true'] })]);
  t.true(result.failed);
  const error = result.resources[0]!.error!;
  t.regex(error, /^execute\[migrate\]: apply failed: `sh -c .*` exited 3/);
  t.regex(error, /stderr \(last lines\):\n {4}broken: no such thing/);
  t.regex(error, /out 30/);
  t.notRegex(error, /out 20\n/, 'only the last lines');
});

test('sensitive hides the command line in plan, errors and the ref', async (t) => {
  const root = await scratchRoot(t);
  const secret = 's3cr3t-t0ken-value';
  const declare = () => [
    Execute({
      onHost: true,
      name: 'login',
      command: ['sh', '-c', 'echo "denied" >&2; exit 1', secret],
      onlyIf: ['true'],
      env: { TOKEN: 'another-s3cret' },
      sensitive: true,
    }),
  ];
  const plan = await converge(localHost({ root }), declare(), 'plan');
  t.deepEqual(plan.resources[0]!.changes, ['run `(sensitive command)` (onlyIf succeeded)']);
  const result = await converge(localHost({ root }), declare());
  t.is(result.resources[0]!.ref, 'execute[login]');
  t.regex(result.resources[0]!.error!, /`\(sensitive command\)` exited 1\n.*denied/s);
  t.notRegex(JSON.stringify(result), /s3cr3t/);
  t.throws(() => Execute({ command: ['echo', secret], onlyIf: ['true'], sensitive: true }), { message: /name: a sensitive command needs a name/ });
});

test('env and cwd reach the command and its guards; cwd is a path inside the root', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'work'));
  await convergesOnce(t, root, () => [
    Execute({
      onHost: true,
      name: 'greet',
      command: ['sh', '-c', 'pwd > out; echo "$GREETING" >> out'],
      cwd: '/work',
      env: { GREETING: 'hello' },
      notIf: ['test', '-e', 'out'],
    }),
  ]);
  t.is(await fs.readFile(path.join(root, 'work/out'), 'utf8'), `${await fs.realpath(path.join(root, 'work'))}\nhello\n`);
});

test('a command that overruns its timeout is stopped and says so', async (t) => {
  const root = await scratchRoot(t);
  const started = Date.now();
  const result = await converge(localHost({ root }), [Execute({ onHost: true, command: ['sleep', '10'], onlyIf: ['true'], timeoutSeconds: 0.3 })]);
  t.true(Date.now() - started < 5000);
  t.regex(result.resources[0]!.error!, /`sleep 10` did not finish within 0\.3s and was stopped/);
});

test('a command that succeeds without creating its creates path fails, instead of running on every converge', async (t) => {
  const root = await scratchRoot(t);
  const result = await converge(localHost({ root }), [Execute({ onHost: true, command: ['true'], creates: '/opt/never' })]);
  t.regex(result.resources[0]!.error!, /`true` succeeded but \/opt\/never still does not exist, so every run would run it again/);
});

test('a guard that cannot be run fails the read, naming it', async (t) => {
  const root = await scratchRoot(t);
  const result = await converge(localHost({ root }), [Execute({ onHost: true, command: ['true'], onlyIf: ['/nonexistent/check'] })], 'plan');
  t.regex(result.resources[0]!.error!, /read failed: the onlyIf guard `\/nonexistent\/check` could not be run/);
});

test('bad specs are refused at declaration, naming the ref and the field', (t) => {
  t.throws(() => Execute({ command: ['apt-get', 'update'] }), {
    message: /execute\[apt-get update\].*: nothing says when it is needed, so it would run on every converge/,
  });
  t.throws(() => Execute({ name: 'x', shell: true, onlyIf: ['true'] }), { message: /execute\[x\].*script: shell: true runs a script: give one/ });
  t.throws(() => Execute({ name: 'x', script: 'echo hi', onlyIf: ['true'] }), { message: /shell: a script runs only when the spec says shell: true/ });
  t.throws(() => Execute({ shell: true, script: 'echo hi', onlyIf: ['true'] }), { message: /name: a script needs a name/ });
  t.throws(() => Execute({ command: ['true'], onlyWhenNotified: true, creates: '/x' }), {
    message: /onlyWhenNotified: a command run only when notified has no use for creates/,
  });
  t.throws(() => Execute({ command: [], onlyIf: ['true'] }), { message: /command: expected a command: a list of words/ });
  t.throws(() => Execute({ command: ['true'], creates: 'opt/x' }), { message: /creates: path must be absolute/ });
  t.throws(() => Execute({ command: ['true'], onlyIf: ['true'], env: { 'BAD-NAME': 'x' } }), {
    message: /env\.BAD-NAME: "BAD-NAME" is not an environment variable name/,
  });
  t.throws(() => Execute({ command: ['true'], onlyIf: ['true'], timeoutSeconds: 0 }), { message: /timeoutSeconds: timeoutSeconds must be more than 0/ });
  // @ts-expect-error a string command is a type error, and refused at run time too: commands are argv
  t.throws(() => Execute({ command: 'rm -rf /tmp/x', onlyIf: ['true'] }), { message: /command: / });
});
