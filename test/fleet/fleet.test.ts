// The fleet simulation's small case (bench/fleet): 20 VMs as separate `meshvm converge` processes against the Vault and
// Kubernetes API stand-ins with their limits on (APF seats: 429 + Retry-After: 1; a Vault rate-limit quota: 429).
import test from 'ava';
import { convergeFleet, refuseFleet, startFleet, summarize } from '../../bench/fleet/fleet.ts';

test('20 VMs at once: every VM converges, every refusal was retried, and the retries come back spread, not as waves', async (t) => {
  // the classic runlist (4 requests a first converge): few enough that one seat held 300 ms bites without taking minutes
  const fleet = await startFleet({ vms: 20, concurrency: 8, runlist: 'classic', limits: { kubeSeats: 1, kubeServiceMs: 300, vaultPerSecond: 5 } });
  t.teardown(() => fleet.stop());
  const from = Date.now();
  const results = await convergeFleet(fleet, { concurrency: 8, rerunMs: 2000, splayMs: 2000, maxRounds: 5 });
  const s = summarize(fleet, results, from);
  t.log(
    `runs ${s.runs}, fleet converged in ${s.fleetConverged.toFixed(1)} s (p50 ${s.p50} s, p99 ${s.p99} s); ` +
      `Vault ${s.vault.requests} requests (${s.vault.limited} refused), Kubernetes ${s.kubernetes.requests} (${s.kubernetes.limited} refused); ` +
      `Retry-After echoes ${s.kubeEchoes.echoed}/${s.kubeEchoes.refused} (background ${s.kubeEchoes.baseline.toFixed(2)})`,
  );
  t.deepEqual(s.neverConverged, [], s.failed.map((r) => r.error).join('\n'));
  t.true(s.kubernetes.limited + s.vault.limited >= 10, 'the limits bit');
  // a refused request left unretried would have failed its run for good: every VM converged, within the re-runs its timer makes
  t.true(s.runs <= 20 * 5);
  // clients that waited exactly Retry-After would echo nearly every refusal 1.000-1.050 s later
  t.true(s.kubeEchoes.refused >= 10, `Kubernetes refusals: ${s.kubeEchoes.refused}`);
  t.true(s.kubeEchoes.share < 0.6, `share of refusals echoed exactly Retry-After later: ${s.kubeEchoes.share.toFixed(2)}`);
});

test('bad input: more processes than memory holds, or nonsense counts, is refused with the reason', (t) => {
  t.regex(refuseFleet({ vms: 10, concurrency: 64 }, 1024 * 1024 * 1024) ?? '', /--concurrency 64 needs about 8192 MiB .* 1024 MiB are free: at most 8 here/);
  t.regex(refuseFleet({ vms: 0, concurrency: 1 }) ?? '', /--vms must be a whole number >= 1/);
  t.is(refuseFleet({ vms: 10, concurrency: 2 }, 8 * 1024 ** 3), undefined);
});
