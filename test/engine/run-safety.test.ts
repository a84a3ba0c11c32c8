// The run lock, interrupts, SIGKILL mid-write and secrets: what keeps a machine safe when runs collide or die.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { BIN, meshvm, PROJECT, scratchRoot, writeRunlist } from '../helpers/scratch.ts';

const SLOW = path.join(PROJECT, 'test/fixtures/recipes/slow.ts');

async function slowRunlist(t: Parameters<typeof scratchRoot>[0], attributes: Record<string, unknown>) {
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  return writeRunlist(dir, 'slow.yaml', `name: slow\nrecipes:\n  - recipe: ${SLOW}\n    attributes: ${JSON.stringify(attributes)}\n`);
}

const start = (args: string[]) => execa(process.execPath, [BIN, ...args], { reject: false, env: { NO_COLOR: '1' }, cwd: PROJECT });

async function waitFor(check: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const logOf = (root: string) => fs.readFile(path.join(root, 'log'), 'utf8').catch(() => '');

test('two runs started together serialize: one waits for the other', async (t) => {
  const root = await scratchRoot(t);
  const file = await slowRunlist(t, { steps: 2, ms: 1500 });
  const [a, b] = await Promise.all([start(['converge', file, '--root', root]), start(['converge', file, '--root', root])]);
  t.is(a.exitCode, 0, String(a.stderr));
  t.is(b.exitCode, 0, String(b.stderr));
  const lines = (await logOf(root)).trim().split('\n');
  t.is(lines.length, 8);
  const pids = lines.map((l) => l.split(' ')[2]);
  t.deepEqual(
    pids.slice(0, 4).every((p) => p === pids[0]),
    true,
    `one run's four lines first:\n${lines.join('\n')}`,
  );
  t.deepEqual(
    pids.slice(4).every((p) => p === pids[4]),
    true,
  );
  t.not(pids[0], pids[4]);
  t.regex(String(a.stdout) + String(b.stdout), /waiting up to 600 s for the run lock held by pid \d+ since .* \(meshvm converge /);
});

test('a second run gives up after --lock-wait, naming the holder', async (t) => {
  const root = await scratchRoot(t);
  const file = await slowRunlist(t, { steps: 1, ms: 3000 });
  const first = start(['converge', file, '--root', root]);
  await waitFor(async () => (await logOf(root)).includes('start'));
  const second = await meshvm(['converge', file, '--root', root, '--lock-wait', '0.3']);
  t.is(second.exitCode, 1);
  t.regex(
    second.stderr,
    new RegExp(`another meshvm run holds the lock .*meshvm\\.lock: pid ${first.pid}, started \\S+ \\(meshvm converge .*slow\\.yaml\\); waited 0\\.3 s`),
  );
  t.is((await first).exitCode, 0);
});

test('SIGTERM: the resource in flight completes, the rest are skipped, the lock is released, the report says interrupted', async (t) => {
  const root = await scratchRoot(t);
  const file = await slowRunlist(t, { steps: 3, ms: 800 });
  const run = start(['converge', file, '--root', root, '--json']);
  await waitFor(async () => (await logOf(root)).includes('start step-1'));
  run.kill('SIGTERM');
  const result = await run;
  t.is(result.exitCode, 1);
  const report = JSON.parse(String(result.stdout));
  t.is(report.outcome, 'interrupted');
  t.true(report.interrupted);
  t.deepEqual(
    report.resources.map((r: { status: string }) => r.status),
    ['changed', 'skipped', 'skipped'],
  );
  t.is((await logOf(root)).trim(), `start step-1 ${run.pid}\nend step-1 ${run.pid}`);
  t.is(JSON.parse(await fs.readFile(path.join(root, 'var/lib/meshvm/last-run.json'), 'utf8')).outcome, 'interrupted');
  const next = await meshvm(['converge', await slowRunlist(t, { steps: 1, ms: 0 }), '--root', root, '--lock-wait', '0']);
  t.is(next.exitCode, 0, `the lock was released: ${next.stderr}`);
});

test('SIGKILL at random points never leaves a torn file, and the next converge completes', async (t) => {
  const root = await scratchRoot(t);
  const bytes = 2_000_000;
  const count = 6;
  let previous = 'A';
  t.is((await meshvm(['converge', await slowRunlist(t, { steps: 0, bigFiles: { letter: 'A', bytes, count } }), '--root', root])).exitCode, 0);
  let killed = 0;
  for (let trial = 0; trial < 12; trial++) {
    const letter = previous === 'A' ? 'B' : 'A';
    const run = start(['converge', await slowRunlist(t, { steps: 0, bigFiles: { letter, bytes, count } }), '--root', root]);
    await new Promise((resolve) => setTimeout(resolve, 250 + Math.random() * 500));
    if (run.kill('SIGKILL')) killed++;
    await run;
    for (let i = 1; i <= count; i++) {
      const content = await fs.readFile(path.join(root, `big-${i}`), 'latin1');
      t.is(content.length, bytes, `big-${i} has its full length after trial ${trial}`);
      t.true(content === previous.repeat(bytes) || content === letter.repeat(bytes), `big-${i} is all old or all new`);
    }
    const done = await meshvm(['converge', await slowRunlist(t, { steps: 0, bigFiles: { letter, bytes, count } }), '--root', root, '--lock-wait', '5']);
    t.is(done.exitCode, 0, done.stderr);
    previous = letter;
  }
  t.log(`${killed} of 12 runs were killed mid-way`);
});

test('a secret never reaches stdout, stderr or the report, even in a diff or a failing verify', async (t) => {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const canary = 'CANARY-9f8e7d6c5b4a-token';
  let n = 0;
  const runlist = (content: string, verify = '') =>
    writeRunlist(
      dir,
      `s${++n}.yaml`,
      `name: s\nrecipes:\n  - recipe: files\n    attributes:\n      directories: [{ path: /etc }]\n      files: [{ path: /etc/token, content: "${content}", sensitive: true, mode: 0o600${verify} }]\n`,
    );
  const outputs: string[] = [];
  for (const [args, file] of [
    [['converge', '--json', '--verbose'], await runlist(`${canary}-1\\n`)],
    [['plan', '--json'], await runlist(`${canary}-2\\n`)],
    [['converge'], await runlist(`${canary}-2\\n`)],
    [['converge', '--json'], await runlist(`${canary}-3\\n`, `, verify: [sh, -c, "cat %{path}; cat %{path} >&2; exit 1"], verifyOnHost: true`)],
  ] as const) {
    const result = await meshvm([args[0], file, '--root', root, ...args.slice(1)]);
    outputs.push(result.stdout, result.stderr);
  }
  outputs.push(await fs.readFile(path.join(root, 'var/lib/meshvm/last-run.json'), 'utf8'));
  const all = outputs.join('\n');
  t.regex(all, /update content \(sensitive\)/);
  t.regex(all, /refused the new content/);
  t.false(all.includes('CANARY'), all);
  t.is(await fs.readFile(path.join(root, 'etc/token'), 'utf8'), `${canary}-2\n`, 'the failed verify left the live file');
});
