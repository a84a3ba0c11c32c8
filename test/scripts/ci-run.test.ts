// .ci/run, run for real in a copy of the tree whose npm and node are stubs (they stand for `npm ci`/`npm test` and the
// dependency scripts): its closing line sums up ava's output, and its temp log is gone afterwards, passed or failed.
import test from 'ava';
import { execa } from 'execa';
import fs from 'node:fs/promises';
import path from 'node:path';
import { PROJECT, scratchRoot } from '../helpers/scratch.ts';

async function ciRun(t: Parameters<typeof scratchRoot>[0], avaOutput: string, exit: number) {
  const tree = await scratchRoot(t, 'meshvm-ci-tree-');
  const tmp = await scratchRoot(t, 'meshvm-ci-tmp-');
  await fs.mkdir(path.join(tree, '.ci'));
  await fs.copyFile(path.join(PROJECT, '.ci/run'), path.join(tree, '.ci/run'));
  await fs.mkdir(path.join(tree, 'node_modules/.bin'), { recursive: true });
  await fs.mkdir(path.join(tree, 'stubs'));
  const stub = async (file: string, body: string) => fs.writeFile(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  await stub(path.join(tree, 'node_modules/.bin/node'), 'exit 0');
  await fs.writeFile(path.join(tree, 'ava-output'), avaOutput);
  await stub(path.join(tree, 'stubs/npm'), `[ "$1" = test ] || exit 0\ncat "${path.join(tree, 'ava-output')}"\nexit ${exit}`);
  const run = await execa(path.join(tree, '.ci/run'), {
    reject: false,
    env: { PATH: `${path.join(tree, 'stubs')}:${process.env.PATH}`, TMPDIR: tmp },
  });
  return { run, left: await fs.readdir(tmp) };
}

test('.ci/run removes its temp log after a passing run and sums up ava', async (t) => {
  const { run, left } = await ciRun(t, '  ✔ a\n  ─\n\n  12 tests passed\n  2 tests skipped\n', 0);
  t.is(run.exitCode, 0, run.stderr);
  t.is(run.stdout.trim().split('\n').at(-1), 'ava: 12 passed, 0 failed, 2 skipped');
  t.deepEqual(left, [], 'no temp file left in TMPDIR');
});

test('.ci/run removes its temp log after a failing run too, and exits with npm test status', async (t) => {
  const { run, left } = await ciRun(t, '  ✘ a\n\n  3 tests passed\n  1 test failed\n', 1);
  t.is(run.exitCode, 1);
  t.is(run.stdout.trim().split('\n').at(-1), 'ava: 3 passed, 1 failed, 0 skipped');
  t.deepEqual(left, [], 'no temp file left in TMPDIR');
});
