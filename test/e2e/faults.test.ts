// End to end, Vault unreachable at boot: the boot converge retries with backoff, fails cleanly and leaves nothing half
// done; the timer the example started completes the job once Vault is back.
import test from 'ava';
import type { Guest } from '../helpers/guest/container.ts';
import { bootDiagnostics, cloudInitStatus, guestPerFile, bootWithExample, lastRun, LAB, run, sidecarStarts } from './lab.ts';

/** Counts connection attempts to Vault's port (SYNs into the namespace's filter INPUT chain; a rule with no target). */
const SYN_RULE = ['INPUT', '-p', 'tcp', '-m', 'tcp', '--dport', String(LAB.vaultPort), '--tcp-flags', 'FIN,SYN,RST,ACK', 'SYN'];
async function vaultSyns(guest: Guest): Promise<number> {
  const save = await run(guest, ['iptables-save', '-c', '-t', 'filter']);
  const line = save.split('\n').find((l) => l.endsWith(`-A ${SYN_RULE.join(' ')}`));
  return Number(/^\[(\d+):/.exec(line ?? '')?.[1] ?? NaN);
}

const { serial, guest } = await guestPerFile(
  test,
  'Vault unreachable at boot',
  'boot a guest with the example user-data while Vault is down',
  (log) =>
    bootWithExample({
      vaultDown: true,
      log,
      beforeReady: async (g) => void (await g.exec(['iptables', '-I', ...SYN_RULE], { check: true })),
    }),
  async (mg) => void (await mg.guest.waitForBoot(180_000)),
);

serial('Vault unreachable at boot: retries with backoff, fails cleanly, leaves no partial state; the timer completes the job once Vault is back', async (t) => {
  const m = guest();
  const g = m.guest;
  const ci = await cloudInitStatus(g);
  t.is(ci.status, 'error', `cloud-init reports the failed runcmd: ${ci.text}`);
  const output = (await g.readFile('/var/log/cloud-init-output.log')) ?? '';
  t.regex(
    output,
    /meshvm: .*recipes\[2\] \(recipe cluster-env\): unwrapping the secret_id in \/etc\/meshvm\/secret-id\.wrapped: cannot reach Vault at https:\/\/127\.0\.0\.1:8200: connection error ECONNREFUSED;.* \(after 5 attempts\)/,
    await bootDiagnostics(g),
  );
  t.is(await vaultSyns(g), 5, 'five connection attempts to Vault');

  // nothing half done: the plan failed before anything was applied
  t.is(await g.readFile('/var/lib/meshvm/last-run.json'), undefined, 'no report: nothing ran');
  t.is(await g.readFile('/var/lib/meshvm/pending.json'), undefined);
  t.not((await g.exec(['getent', 'passwd', 'istio-proxy'])).exitCode, 0, 'no istio-proxy account (the first recipe)');
  t.not((await g.exec(['dpkg-query', '-W', 'istio-sidecar'])).exitCode, 0, 'no sidecar package');
  for (const p of [
    '/etc/dnsmasq.d/kubedns',
    '/etc/dnsmasq.d/meshvm.conf',
    '/etc/meshvm/upstream-resolv.conf',
    '/var/lib/istio',
    '/var/run/secrets',
    '/etc/certs',
  ]) {
    t.not((await g.exec(['test', '-e', p])).exitCode, 0, `${p} does not exist`);
  }
  // no download kept: /var/cache/meshvm holds at most V8's compiled code of meshvm itself (bin/compile-cache.js)
  t.regex(await run(g, ['sh', '-c', 'ls -A /var/cache/meshvm 2>/dev/null || true']), /^(compile-cache)?$/, "nothing cached but meshvm's compiled code");
  t.is(await run(g, ['cat', '/etc/resolv.conf']), `nameserver ${LAB.upstreamDns}`, 'the resolver untouched');
  t.is(await run(g, ['find', '/', '-xdev', '-name', '.*.meshvm-new']), '', 'no temp file anywhere');
  const touched = await run(g, [
    'find',
    '/etc',
    '/var/lib',
    '/var/cache',
    '/usr/local',
    '-xdev',
    '-newer',
    '/etc/meshvm/runlist.yaml',
    '-not',
    '-path',
    '/var/lib/cloud/*',
    '-not',
    '-path',
    '/var/lib/systemd/*',
    '-not',
    '-path',
    '/etc/systemd/system/timers.target.wants*',
    '-not',
    '-path',
    '/var/cache/meshvm',
    '-not',
    '-path',
    '/var/cache/meshvm/compile-cache*',
  ]);
  t.is(touched, '', 'nothing written after the runlist, besides enabling the timer');
  // what the example set up before converging: the timer that will retry
  t.is((await g.exec(['systemctl', 'is-active', 'meshvm.timer'])).stdout, 'active');
  t.is((await g.exec(['systemctl', 'is-enabled', 'meshvm.timer'])).stdout, 'enabled');

  // still down: a run by hand fails the same way, and retries with backoff (the client's full jitter: 4 sleeps of up to 0.2, 0.4, 0.8, 1.6 s)
  const started = Date.now();
  const again = await g.exec(['meshvm', 'converge', '/etc/meshvm/runlist.yaml'], { timeoutMs: 120_000 });
  const failedMs = Date.now() - started;
  t.is(again.exitCode, 1);
  t.is(await vaultSyns(g), 10);
  t.log(`a converge with Vault down: 5 attempts, exit 1 after ${failedMs} ms`);

  // Vault is back: the next timer run (what meshvm.timer triggers) converges the machine
  await m.lab.vaultStart();
  const timerRun = await g.exec(['systemctl', 'start', 'meshvm.service'], { timeoutMs: 180_000 });
  t.is(timerRun.exitCode, 0, (await g.exec(['journalctl', '-u', 'meshvm.service', '--no-pager', '-n', '80'])).stdout);
  const report = (await lastRun(g))!;
  t.is(report.outcome, 'changed');
  t.is(report.summary.failed, 0);
  for (const unit of ['istio.service', 'meshvm.timer']) t.is((await g.exec(['systemctl', 'is-active', unit])).stdout, 'active', unit);
  t.is(await sidecarStarts(g), 1);
  t.regex(await run(g, ['getent', 'hosts', 'istiod.istio-system.svc']), new RegExp(`^${LAB.eastwest.replaceAll('.', '\\.')}\\s`));
  const next = await g.exec(['systemctl', 'start', 'meshvm.service'], { timeoutMs: 180_000 });
  t.is(next.exitCode, 0);
  t.is((await lastRun(g))!.outcome, 'unchanged');
  // the wrapped secret_id waited for Vault: unwrapped by the timer's run, once
  t.is(await run(g, ['cat', '/etc/meshvm/secret-id']), 'secret-id-lab');
  t.not((await g.exec(['test', '-e', '/etc/meshvm/secret-id.wrapped'])).exitCode, 0, 'the wrapped file removed');
});
