// Crash safety of the built executable on a scratch root: SIGKILL at random points (many trials) never leaves a torn
// file (targets, backups, state) and the next converge completes; two converges started together take turns.
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { body, layout } from './fixtures/many-files.ts';
import { e2eGate, ensureArtifact, EXECUTABLE } from './lab.ts';
import { until } from '../helpers/poll.ts';

const TRIALS = Math.max(Number(process.env.MESHVM_E2E_KILL_TRIALS ?? 100), 1);
const SHAPE = { count: 120, bigCount: 2, bigBytes: 128 * 1024 };
const FIXTURE = path.join(import.meta.dirname, 'fixtures/many-files.ts');

const ok = await e2eGate(test, 'SIGKILL trials and the run lock');
const serial = ok ? test.serial : test.serial.skip;
let dir = '';
let exe = '';
let runlist = '';

if (ok) {
  test.before('the executable, a runlist of many files', async (t) => {
    t.timeout(15 * 60_000, 'building the artifact the first time');
    await ensureArtifact((line) => t.log(line));
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-crash-'));
    exe = path.join(dir, 'meshvm'); // a copy: immune to a rebuild by another test file
    await fs.copyFile(EXECUTABLE, exe);
    await fs.chmod(exe, 0o755);
    runlist = path.join(dir, 'many.yaml');
    await fs.writeFile(runlist, `name: many-files\nrecipes:\n  - recipe: ${FIXTURE}\n    attributes: ${JSON.stringify({ version: 0, ...SHAPE })}\n`);
  });
  test.after.always('remove the scratch dirs', async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });
}

const files = layout(SHAPE);
const args = (root: string, version: number, extra: string[] = []) => ['converge', runlist, '--root', root, '--set', `many-files.version=${version}`, ...extra];
const converge = (root: string, version: number, extra: string[] = []) =>
  execa(exe, args(root, version, extra), { reject: false, stdin: 'ignore', timeout: 120_000, env: { NO_COLOR: '1' } });

/** For each declared file: which version it holds whole, or why it is not whole. */
async function versions(root: string, allowed: readonly number[]): Promise<{ held: Map<number, number>; torn: string[] }> {
  const held = new Map<number, number>();
  const torn: string[] = [];
  for (const f of files) {
    const full = path.join(root, f.path);
    const [content, st] = await Promise.all([fs.readFile(full, 'latin1').catch(() => undefined), fs.stat(full).catch(() => undefined)]);
    const v = allowed.find((version) => content === body(version, f.path, f.bytes));
    if (v === undefined)
      torn.push(`${f.path}: ${content === undefined ? 'missing' : `${content.length} bytes, starting ${JSON.stringify(content.slice(0, 40))}`}`);
    else if ((st!.mode & 0o777) !== 0o640) torn.push(`${f.path}: mode ${(st!.mode & 0o777).toString(8)}`);
    else held.set(v, (held.get(v) ?? 0) + 1);
  }
  return { held, torn };
}

/** Backups are copies of a whole earlier version: each names its file and holds some version's full content. */
async function tornBackups(root: string): Promise<string[]> {
  const backupDir = path.join(root, 'var/lib/meshvm/backup');
  const bad: string[] = [];
  for (const name of await fs.readdir(backupDir).catch(() => [] as string[])) {
    if (name.startsWith('.')) continue; // a copy in progress (a temp name), never a backup
    const content = await fs.readFile(path.join(backupDir, name), 'latin1');
    const m = /^version (\d+) of (\S+)\n/.exec(content);
    const f = m && files.find((x) => x.path === m[2]);
    if (!m || !f || content !== body(Number(m[1]), f.path, f.bytes)) bad.push(`${name}: ${content.length} bytes`);
  }
  return bad;
}

/** meshvm's own JSON state, when present, parses. */
async function stateProblems(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const file of ['var/lib/meshvm/last-run.json', 'var/lib/meshvm/pending.json']) {
    const text = await fs.readFile(path.join(root, file), 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    try {
      JSON.parse(text);
    } catch {
      out.push(`${file} is not JSON (${text.length} bytes)`);
    }
  }
  return out;
}

async function leftovers(root: string): Promise<string[]> {
  const r = await execa('find', [root, '-name', '.*.meshvm-new'], { reject: false });
  return r.stdout.split('\n').filter(Boolean);
}

serial(`SIGKILL at random points (${TRIALS} trials): never a torn file, and the next converge completes`, async (t) => {
  t.timeout(20 * 60_000);
  const root = path.join(dir, 'root-kill');
  await fs.mkdir(root);
  // warm-up: the full run's length sets the window the kills fall in
  const durations: number[] = [];
  for (let v = 0; v < 3; v++) {
    const started = Date.now();
    const r = await converge(root, v);
    t.is(r.exitCode, 0, String(r.stderr));
    durations.push(Date.now() - started);
  }
  const full = durations.sort((a, b) => a - b)[1]!;
  let previous = 2;
  const outcomes = { beforeAnyWrite: 0, midway: 0, allWritten: 0, exitedFirst: 0, leftoverTemps: 0 };
  const problems: string[] = [];
  for (let trial = 0; trial < TRIALS; trial++) {
    const next = previous + 1;
    // unshare: meshvm is PID 1 of its own PID namespace, so the flock holder it leaves is killed and reaped with it
    // (the host's PID 1 does not reap orphans); --kill-child hands our SIGKILL to meshvm at once
    const run = execa('unshare', ['--pid', '--fork', '--kill-child', '--', exe, ...args(root, next)], {
      reject: false,
      stdin: 'ignore',
      stdout: 'ignore',
      stderr: 'ignore',
    });
    await new Promise((resolve) => setTimeout(resolve, full * (0.1 + Math.random())));
    const killed = run.kill('SIGKILL');
    const result = await run;
    if (!killed || result.exitCode === 0) outcomes.exitedFirst++;
    const { held, torn } = await versions(root, [previous, next]);
    problems.push(
      ...torn.map((x) => `trial ${trial}: ${x}`),
      ...(await tornBackups(root)).map((x) => `trial ${trial}: backup ${x}`),
      ...(await stateProblems(root)).map((x) => `trial ${trial}: ${x}`),
    );
    const fresh = held.get(next) ?? 0;
    if (fresh === 0) outcomes.beforeAnyWrite++;
    else if (fresh === files.length) outcomes.allWritten++;
    else outcomes.midway++;
    if ((await leftovers(root)).length) outcomes.leftoverTemps++;

    // the next converge: no stale lock (it would not wait), everything at the new version, nothing left over
    const done = await converge(root, next, ['--lock-wait', '0', '--json']);
    if (done.exitCode !== 0) problems.push(`trial ${trial}: the next converge exited ${done.exitCode}: ${String(done.stderr).slice(-500)}`);
    else {
      const after = await versions(root, [next]);
      if (after.torn.length) problems.push(`trial ${trial}: after the next converge: ${after.torn.join('; ')}`);
      const report = JSON.parse(String(done.stdout)) as { outcome: string };
      if (!['changed', 'unchanged'].includes(report.outcome)) problems.push(`trial ${trial}: next converge outcome ${report.outcome}`);
      const temps = await leftovers(root);
      if (temps.length) problems.push(`trial ${trial}: temp files after the next converge: ${temps.join(', ')}`);
    }
    previous = next;
    if (problems.length > 20) break;
  }
  t.deepEqual(problems, []);
  t.log(
    `${TRIALS} trials, full run ${full} ms (kills uniformly between ${Math.round(full * 0.1)} and ${Math.round(full * 1.1)} ms): ` +
      `killed before any file was written ${outcomes.beforeAnyWrite}, midway (old and new files side by side) ${outcomes.midway}, ` +
      `after every file was written ${outcomes.allWritten}, exited before the kill ${outcomes.exitedFirst}; a temp file left behind in ${outcomes.leftoverTemps} (replaced by the next run)`,
  );
  t.true(outcomes.midway >= TRIALS / 5, `enough kills land mid-way: ${outcomes.midway}`);
});

serial('two converges at once: the second waits for the first, naming it, and finds nothing left to do', async (t) => {
  const root = path.join(dir, 'root-lock');
  await fs.mkdir(root);
  t.is((await converge(root, 1)).exitCode, 0);
  // the first holds the lock (and its run) for a second, so the second surely meets it, whatever the machine's load
  const first = converge(root, 2, ['--json', '--set', 'many-files.holdSeconds=1']);
  const lockFile = path.join(root, 'run/meshvm.lock');
  await until(async () => (await fs.readFile(lockFile, 'utf8').catch(() => '')).includes(`"pid":${first.pid}`), {
    what: 'the first converge to hold the lock',
    timeoutMs: 30_000,
  });
  const second = converge(root, 2, ['--json']);
  const [a, b] = await Promise.all([first, second]);
  t.is(a.exitCode, 0, String(a.stderr));
  t.is(b.exitCode, 0, String(b.stderr));
  t.notRegex(String(a.stderr), /waiting up to/, 'the first did not wait');
  t.regex(
    String(b.stderr),
    new RegExp(`waiting up to 600 s for the run lock held by pid ${first.pid} since \\S+ \\(meshvm converge `),
    'the second waited, naming the first',
  );
  const reports = [a, b].map((r) => JSON.parse(String(r.stdout)) as { summary: { changed: number } });
  t.deepEqual(
    reports.map((r) => r.summary.changed),
    [files.length + 1, 0],
    'the first did the work (and ran its hold), the second found it done',
  );
  t.deepEqual((await versions(root, [2])).torn, []);
});
