// Honest failure reports: last-run.json always says how the last converge ended (failed, with its error, in whatever phase),
// and --json prints a full report on failure too; a bad runlist on a fresh root still writes nothing.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { meshvm, PROJECT, scratchRoot, snapshot, writeRunlist } from '../helpers/scratch.ts';

const MODULE = path.join(PROJECT, 'test/fixtures/recipes/phases.ts');

async function setup(t: Parameters<typeof scratchRoot>[0]) {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  let n = 0;
  const runlist = (body: string) => writeRunlist(dir, `r${++n}.yaml`, `name: report\nrecipes:\n  - recipe: ${MODULE}\n${body}`);
  const lastRun = async () => JSON.parse(await fs.readFile(path.join(root, 'var/lib/meshvm/last-run.json'), 'utf8'));
  return { root, runlist, lastRun };
}

const REPORT_KEYS = [
  'apiCalls',
  'finishedAt',
  'interrupted',
  'meshvm',
  'mode',
  'notifications',
  'outcome',
  'resources',
  'root',
  'runlist',
  'startedAt',
  'summary',
];

const failures: { title: string; body: string; args?: string[]; expect: RegExp }[] = [
  {
    title: 'a runlist that does not load (an unknown attribute)',
    body: '    attributes: { colour: red }\n',
    expect: /r2\.yaml:4: .*Unrecognized key: "colour"/,
  },
  { title: 'malformed YAML', body: '    attributes: [\n', expect: /r2\.yaml:\d+: malformed YAML/ },
  { title: 'a failing plan (a bad Vault address while declaring)', body: '    attributes: { vault: { address: "not a url" } }\n', expect: /vault: address/ },
  { title: 'a resource that fails', body: '    attributes: { fail: true }\n', expect: /failing\[fails\]: apply failed: failing as asked/ },
];

for (const c of failures) {
  test(`after a success, a converge that fails (${c.title}) writes and prints a failed report with its error`, async (t) => {
    const { root, runlist, lastRun } = await setup(t);
    const ok = await meshvm(['converge', await runlist(''), '--root', root, '--json']);
    t.is(ok.exitCode, 0, ok.stderr);
    t.deepEqual(Object.keys(JSON.parse(ok.stdout)).sort(), REPORT_KEYS);
    t.is((await lastRun()).outcome, 'changed');

    const failed = await meshvm(['converge', await runlist(c.body), '--root', root, '--json', ...(c.args ?? [])]);
    t.is(failed.exitCode, 1);
    t.notRegex(failed.stderr, /^\s+at /m, 'no stack trace');
    const report = JSON.parse(failed.stdout);
    t.deepEqual(Object.keys(report).sort(), [...REPORT_KEYS, 'error'].sort(), 'the same shape as a success, with the error');
    t.is(report.outcome, 'failed');
    t.is(report.mode, 'converge');
    t.is(report.root, root);
    t.regex(report.error, c.expect);
    t.deepEqual(await lastRun(), report, 'last-run.json is the failed run, not the success before it');
  });
}

test('plan --json prints a full failed report, and writes nothing', async (t) => {
  const { root, runlist } = await setup(t);
  t.is((await meshvm(['converge', await runlist(''), '--root', root])).exitCode, 0);
  const before = await snapshot(root);
  const failed = await meshvm(['plan', await runlist('    attributes: { colour: red }\n'), '--root', root, '--json']);
  t.is(failed.exitCode, 1);
  const report = JSON.parse(failed.stdout);
  t.is(report.outcome, 'failed');
  t.is(report.mode, 'plan');
  t.regex(report.error, /Unrecognized key: "colour"/);
  t.deepEqual(await snapshot(root), before);
});

test('a bad runlist on a root never converged writes nothing, and --json still prints the failed report', async (t) => {
  const { root, runlist } = await setup(t);
  const failed = await meshvm(['converge', await runlist('    attributes: { colour: red }\n'), '--root', root, '--json']);
  t.is(failed.exitCode, 1);
  t.is(JSON.parse(failed.stdout).outcome, 'failed');
  t.deepEqual(await snapshot(root), {});
});
