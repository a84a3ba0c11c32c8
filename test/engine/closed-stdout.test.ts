// A closed stdout or stderr (EPIPE: `meshvm converge ... | head -1`, an ssh session that drops): the converge goes on,
// finishes, writes its report and exits with its real status, without a stack trace.
import test from 'ava';
import { execa } from 'execa';
import fs from 'node:fs/promises';
import path from 'node:path';
import { BIN, PROJECT, scratchRoot, writeRunlist } from '../helpers/scratch.ts';

const MODULE = path.join(PROJECT, 'test/fixtures/recipes/phases.ts');

/** Runs a converge whose reader goes away after the first chunk of output (stdout, or both streams). */
async function convergeClosed(t: Parameters<typeof scratchRoot>[0], attributes: Record<string, unknown>, close: 'stdout' | 'both') {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const file = await writeRunlist(dir, 'r.yaml', `name: closed\nrecipes:\n  - recipe: ${MODULE}\n    attributes: ${JSON.stringify(attributes)}\n`);
  const child = execa(process.execPath, [BIN, 'converge', file, '--root', root, '--verbose'], { reject: false, cwd: PROJECT, env: { NO_COLOR: '1' } });
  let stderr = '';
  child.stdout!.once('data', () => child.stdout!.destroy());
  if (close === 'both') child.stderr!.once('data', () => child.stderr!.destroy());
  else child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk));
  const result = await child;
  const report = JSON.parse(await fs.readFile(path.join(root, 'var/lib/meshvm/last-run.json'), 'utf8'));
  const log = await fs.readFile(path.join(root, 'log'), 'utf8').catch(() => '');
  return { exitCode: result.exitCode, signal: result.signal, stderr, report, log };
}

test('stdout closed after the first line: every step still runs, the report is written, exit 0, nothing on stderr', async (t) => {
  const run = await convergeClosed(t, { steps: 4, stepMs: 50 }, 'stdout');
  t.is(run.signal, undefined);
  t.is(run.exitCode, 0);
  t.is(run.stderr, '', 'no EPIPE stack trace');
  t.is(run.report.outcome, 'changed');
  t.is(run.report.summary.changed, 6);
  t.is(run.log.match(/^end step-/gm)?.length, 4);
});

test('stdout and stderr both closed, and a resource fails: the run still finishes, reports failed, exits 1', async (t) => {
  const run = await convergeClosed(t, { steps: 2, stepMs: 50, fail: true }, 'both');
  t.is(run.exitCode, 1);
  t.is(run.report.outcome, 'failed');
  t.regex(run.report.error, /failing as asked/);
  t.is(run.log.match(/^end step-/gm)?.length, 2);
});
