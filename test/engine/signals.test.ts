// SIGINT/SIGTERM in every phase of a run (loading, the lock wait, planning, converging, delivering): the run's Vault token
// is revoked, the lock released, an `interrupted` report written and printed, and the exit status is non-zero.
// Vault is the loopback stand-in (test/stand-ins/vault.ts, standing for HashiCorp Vault's AppRole login and revoke-self).
import test from 'ava';
import { execa, type ResultPromise } from 'execa';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startVault } from '../stand-ins/index.ts';
import { BIN, PROJECT, meshvm, scratchRoot, writeRunlist } from '../helpers/scratch.ts';
import { until } from '../helpers/poll.ts';

const MODULE = path.join(PROJECT, 'test/fixtures/recipes/phases.ts');

async function setup(t: Parameters<typeof scratchRoot>[0], options: { vault?: boolean } = {}) {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  let vault: Awaited<ReturnType<typeof startVault>> | undefined;
  let config: Record<string, unknown> | undefined;
  if (options.vault) {
    vault = await startVault({ tls: true, appRoles: { meshvm: { roleId: 'role-id-signals', secretId: 'secret-id-signals', policies: [] } } });
    t.teardown(() => vault!.stop());
    await fs.writeFile(path.join(dir, 'ca.pem'), vault.caPem!);
    await fs.writeFile(path.join(dir, 'role-id'), 'role-id-signals\n');
    await fs.writeFile(path.join(dir, 'secret-id'), 'secret-id-signals\n', { mode: 0o600 });
    config = {
      address: vault.url,
      caFile: path.join(dir, 'ca.pem'),
      auth: { method: 'approle', roleIdFile: path.join(dir, 'role-id'), secretIdFile: path.join(dir, 'secret-id') },
      retry: { attempts: 1 },
    };
  }
  let n = 0;
  const runlist = (attributes: Record<string, unknown>) =>
    writeRunlist(
      dir,
      `r${++n}.yaml`,
      `name: phases\nrecipes:\n  - recipe: ${MODULE}\n    attributes: ${JSON.stringify({ ...(config && { vault: config }), ...attributes })}\n`,
    );
  const log = () => fs.readFile(path.join(root, 'log'), 'utf8').catch(() => '');
  /** Starts a converge (the runlist written first); `child` is the running process, to signal and await. */
  const start = async (attributes: Record<string, unknown>, env: Record<string, string> = {}, args: string[] = []): Promise<{ child: ResultPromise }> => {
    const file = await runlist(attributes);
    const child = execa(process.execPath, [BIN, 'converge', file, '--root', root, '--json', ...args], {
      reject: false,
      cwd: PROJECT,
      env: { NO_COLOR: '1', ...env },
    });
    return { child };
  };
  const lastRun = async () => JSON.parse(await fs.readFile(path.join(root, 'var/lib/meshvm/last-run.json'), 'utf8'));
  /** Every token the stand-in issued at an AppRole login, and whether it was revoked. */
  const logins = () => [...vault!.state.tokens.values()].filter((token) => token.path === 'auth/approle/login').map((token) => token.revoked);
  const lockFree = async () => (await meshvm(['converge', await runlist({}), '--root', root, '--lock-wait', '0'])).exitCode === 0;
  return { root, runlist, log, start, lastRun, logins, lockFree, vault };
}

/** The interrupted run's report, on stdout and in last-run.json: same shape as a finished run's, outcome interrupted. */
async function interruptedReport(
  t: Parameters<typeof scratchRoot>[0],
  result: { stdout: unknown; stderr: unknown; exitCode?: number },
  lastRun: () => Promise<any>,
) {
  t.is(result.exitCode, 1, String(result.stderr));
  t.notRegex(String(result.stderr), /^\s+at /m, 'no stack trace');
  const report = JSON.parse(String(result.stdout));
  t.is(report.outcome, 'interrupted');
  t.true(report.interrupted);
  t.deepEqual(Object.keys(report.summary).sort(), ['changed', 'failed', 'seconds', 'skipped', 'total', 'unchanged']);
  t.deepEqual(await lastRun(), { ...report }, 'last-run.json is the report printed');
  return report;
}

test('SIGTERM while planning: planning ends, nothing is changed, the Vault token is revoked, the lock released, the report says interrupted', async (t) => {
  const { root, log, start, lastRun, logins, lockFree } = await setup(t, { vault: true });
  const { child: run } = await start({ planMs: 4000 });
  await until(async () => (await log()).includes('planning'), { what: 'planning to start', timeoutMs: 30_000 });
  run.kill('SIGTERM');
  const result = await run;
  t.regex(String(result.stderr), /SIGTERM: stopping once planning ends/);
  t.regex(String(result.stderr), /meshvm: interrupted by SIGTERM while planning: stopped before changing anything/);
  const report = await interruptedReport(t, result, lastRun);
  t.is(report.error, 'interrupted by SIGTERM while planning: stopped before changing anything');
  t.deepEqual(
    report.resources.map((r: { status: string }) => r.status),
    ['skipped', 'skipped'],
  );
  t.deepEqual(logins(), [true], 'the one login of the run, revoked');
  await t.throwsAsync(fs.access(path.join(root, 'srv/marker')), undefined, 'nothing converged');
  t.true(await lockFree(), 'the lock was released');
});

test('SIGINT while loading the runlist (a recipe module slow to import): interrupted, before anything else', async (t) => {
  const { root, log, start, lastRun } = await setup(t);
  const { child: run } = await start({}, { PHASES_LOAD_LOG: path.join(root, 'log'), PHASES_LOAD_MS: '3000' });
  await until(async () => (await log()).includes('loading'), { what: 'the recipe module to load', timeoutMs: 30_000 });
  run.kill('SIGINT');
  const result = await run;
  t.regex(String(result.stderr), /meshvm: interrupted by SIGINT while loading the runlist/);
  const report = await interruptedReport(t, result, lastRun);
  t.deepEqual(report.resources, []);
  await t.throwsAsync(fs.access(path.join(root, 'srv')));
});

test('SIGTERM while waiting for the run lock: the wait stops at once, the lock is untouched, the report says interrupted', async (t) => {
  const { root, start, lastRun } = await setup(t);
  await fs.mkdir(path.join(root, 'run'));
  const lockFile = path.join(root, 'run/meshvm.lock');
  // --no-fork: flock becomes sleep, so killing it frees the lock and leaves no sleep behind
  const holder = execa('flock', ['--no-fork', lockFile, 'sleep', '120'], { reject: false });
  t.teardown(() => void holder.kill('SIGKILL'));
  await until(async () => (await execa('flock', ['--nonblock', lockFile, 'true'], { reject: false })).exitCode !== 0, { what: 'the holder to take the lock' });
  const { child: run } = await start({}, {}, ['--lock-wait', '120']);
  let stderr = '';
  run.stderr!.on('data', (chunk: Buffer) => (stderr += chunk));
  await until(() => stderr.includes('waiting up to 120 s for the run lock'), { what: 'the run to wait for the lock', timeoutMs: 30_000 });
  run.kill('SIGTERM');
  const result = await run;
  t.regex(String(result.stderr), /SIGTERM: no longer waiting for the run lock/);
  t.regex(String(result.stderr), /meshvm: interrupted by SIGTERM while waiting for the run lock/);
  await interruptedReport(t, result, lastRun);
  t.false(holder.killed, 'the holder still holds it');
  t.is(holder.exitCode ?? null, null);
});

test('SIGTERM while converging: the step in flight finishes, the rest are skipped, the Vault token is revoked', async (t) => {
  const { log, start, lastRun, logins, lockFree } = await setup(t, { vault: true });
  const { child: run } = await start({ steps: 3, stepMs: 800 });
  await until(async () => (await log()).includes('start step-1'), { what: 'the first step', timeoutMs: 30_000 });
  run.kill('SIGTERM');
  const result = await run;
  const report = await interruptedReport(t, result, lastRun);
  t.deepEqual(
    report.resources.map((r: { status: string }) => r.status),
    ['changed', 'changed', 'changed', 'skipped', 'skipped'],
  );
  t.is((await log()).trim(), 'start step-1\nend step-1');
  t.deepEqual(logins(), [true]);
  t.true(await lockFree());
});

test('SIGTERM while delivering: the restart in flight finishes, the rest stay owed and are made by the next run', async (t) => {
  const { root, log, start, lastRun } = await setup(t);
  t.is((await (await start({ restart: { content: 'v1\n', ms: 0 } })).child).exitCode, 0);
  const { child: run } = await start({ restart: { content: 'v2\n', ms: 1500 } });
  await until(async () => (await log()).split('restart /srv/service-1').length === 3, { what: 'the first restart', timeoutMs: 30_000 });
  run.kill('SIGTERM');
  const result = await run;
  const report = await interruptedReport(t, result, lastRun);
  t.deepEqual(
    report.notifications.map((n: { ref: string; status: string }) => `${n.ref} ${n.status}`),
    ['slow_service[/srv/service-1] refreshed', 'slow_service[/srv/service-2] skipped'],
  );
  t.deepEqual(JSON.parse(await fs.readFile(path.join(root, 'var/lib/meshvm/pending.json'), 'utf8')), {
    owed: { 'slow_service[/srv/service-2]': ['file[/srv/config-2]'] },
  });
  const next = await (await start({ restart: { content: 'v2\n', ms: 0 } })).child;
  t.is(next.exitCode, 0, String(next.stderr));
  t.deepEqual(
    JSON.parse(String(next.stdout)).notifications.map((n: { ref: string; status: string }) => `${n.ref} ${n.status}`),
    ['slow_service[/srv/service-2] refreshed'],
  );
  t.is((await log()).match(/^restarted /gm)?.length, 4, 'each service restarted once more after the first run (which restarted both)');
});

test('SIGTERM while verifying: the checks in flight end, then verify exits 1 saying so, with its JSON error', async (t) => {
  const { root, runlist, log } = await setup(t);
  t.is((await meshvm(['converge', await runlist({}), '--root', root])).exitCode, 0);
  const run = execa(process.execPath, [BIN, 'verify', await runlist({ checkMs: 3000 }), '--root', root, '--json'], { reject: false, cwd: PROJECT });
  await until(async () => (await log()).includes('checking'), { what: 'the check to start', timeoutMs: 30_000 });
  run.kill('SIGTERM');
  const result = await run;
  t.is(result.exitCode, 1);
  t.regex(String(result.stderr), /SIGTERM: stopping once verifying ends/);
  t.regex(String(result.stderr), /meshvm: interrupted by SIGTERM while verifying$/m);
  t.deepEqual(JSON.parse(String(result.stdout)), { ok: false, error: 'interrupted by SIGTERM while verifying' });
});

test('a second SIGTERM while the clean-up hangs (a Vault that never answers the revoke) exits at once, 143, saying what it left', async (t) => {
  const { log, start, logins, vault } = await setup(t, { vault: true });
  vault!.faults.inject({ kind: 'latency', ms: 120_000, method: 'POST', path: '/v1/auth/token/revoke-self' });
  const { child: run } = await start({ planMs: 1500 });
  await until(async () => (await log()).includes('planning'), { what: 'planning to start', timeoutMs: 30_000 });
  run.kill('SIGTERM');
  await until(() => vault!.calls.some((call) => call.path === '/v1/auth/token/revoke-self'), { what: 'the revoke to be asked', timeoutMs: 30_000 });
  t.is(run.exitCode ?? null, null, 'the first signal left the run cleaning up: the revoke hangs');
  run.kill('SIGTERM');
  const result = await run;
  t.is(result.exitCode, 143, String(result.stderr));
  t.regex(String(result.stderr), /SIGTERM: stopping once planning ends/);
  t.regex(
    String(result.stderr),
    /meshvm: SIGTERM again: exiting now \(status 143\) without finishing the clean-up; the run's Vault token may not have been revoked \(it expires at its TTL\)/,
  );
  t.notRegex(String(result.stderr), /^\s+at /m, 'no stack trace');
  t.deepEqual(logins(), [false], 'the token was not revoked, as said');
});

test('a second SIGINT while the resource in flight finishes exits at once, 130, saying it may be half-changed and the report is missing', async (t) => {
  const { log, start, lastRun } = await setup(t);
  const { child: run } = await start({ steps: 2, stepMs: 60_000 });
  await until(async () => (await log()).includes('start step-1'), { what: 'the first step', timeoutMs: 30_000 });
  run.kill('SIGINT');
  let stderr = '';
  run.stderr!.on('data', (chunk: Buffer) => (stderr += chunk));
  await until(() => stderr.includes('SIGINT: finishing the resource in flight'), { what: 'the first signal to be noted', timeoutMs: 30_000 });
  run.kill('SIGINT');
  const result = await run;
  t.is(result.exitCode, 130, String(result.stderr));
  t.regex(
    String(result.stderr),
    /meshvm: SIGINT again: exiting now \(status 130\) without finishing the clean-up; the resource in flight may be half-changed \(the next run converges it\); last-run\.json does not record this run/,
  );
  t.is((await log()).trim(), 'start step-1', 'the step in flight did not finish');
  await t.throwsAsync(lastRun());
});
