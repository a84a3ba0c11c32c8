// npm run bench:fleet: the fleet simulation's scenarios (boot storm, steady state, control-plane outage and recovery) at a size this machine holds.
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { parseArgs } from 'node:util';
import { convergeFleet, refuseFleet, SCALED_LIMITS, startFleet, summarize, type Fleet, type FleetRunlist, type Summary } from './fleet.ts';

// the meshvm processes timed here keep V8's compile cache in the checkout, as the tests do (test/helpers/setup.ts),
// not in this machine's /var/cache/meshvm, where a root meshvm keeps it by default
process.env.MESHVM_COMPILE_CACHE ??= new URL('../../node_modules/.cache/meshvm-compile-cache', import.meta.url).pathname;

const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '100' },
    concurrency: { type: 'string', default: String(Math.max(2, os.availableParallelism() * 2)) },
    scenario: { type: 'string', default: 'all' },
    splay: { type: 'string', default: '30' },
    outage: { type: 'string', default: '20' },
    'no-limits': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    runlist: { type: 'string', default: 'istiod' },
    meshvm: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  process.stdout.write(`npm run bench:fleet -- [options]   (node bench/fleet/run.ts)

  --vms N           VMs in the fleet (default 100), each a scratch root with its own secret_id, host name and address
  --concurrency N   meshvm processes at once (default 2 x cores; refused beyond what free memory holds)
  --scenario S      boot-storm, steady, outage or all (default all)
  --splay S         steady state: timers spread over S seconds (default 30)
  --outage S        the API server answers 503 for S seconds (default 20)
  --runlist R       istiod (default: the istio-vm recipes, a WorkloadEntry per VM), aws (istiod and the aws
                    recipe: Route53 at its real 5 requests/s, DNS checked first) or classic
  --meshvm PATH     the meshvm each VM runs (a .mjs entry or the executable); default: built from these sources
  --no-limits       the stand-ins without the scaled API limits
  --json            the summaries as JSON
Stand-ins listen on loopback only.
`);
  process.exit(0);
}
const vms = Number(values.vms);
const concurrency = Number(values.concurrency);
const splayMs = Number(values.splay) * 1000;
const outageMs = Number(values.outage) * 1000;
const scenarios = values.scenario === 'all' ? ['boot-storm', 'steady', 'outage'] : [values.scenario];
const limits = values['no-limits'] ? false : SCALED_LIMITS;
const refused =
  refuseFleet({ vms, concurrency }) ??
  (scenarios.every((s) => ['boot-storm', 'steady', 'outage'].includes(s ?? ''))
    ? undefined
    : `--scenario: boot-storm, steady, outage or all (got ${values.scenario})`) ??
  (values.meshvm === undefined || existsSync(values.meshvm) ? undefined : `--meshvm: no such file ${values.meshvm}`) ??
  (['istiod', 'aws', 'classic'].includes(values.runlist) ? undefined : `--runlist: istiod, aws or classic (got ${values.runlist})`) ??
  (Number.isFinite(splayMs) && splayMs >= 0 && Number.isFinite(outageMs) && outageMs >= 0 ? undefined : '--splay and --outage are seconds >= 0');
if (refused) {
  process.stderr.write(`bench:fleet: ${refused}\n`);
  process.exit(2);
}

const TIMER = { rerunMs: 5000, splayMs: 5000, maxRounds: 8 };

async function bootStorm(fleet: Fleet): Promise<Summary> {
  const from = Date.now();
  return summarize(fleet, await convergeFleet(fleet, { concurrency, ...TIMER }), from);
}

async function steady(fleet: Fleet): Promise<Summary> {
  const from = Date.now();
  return summarize(fleet, await convergeFleet(fleet, { concurrency, ...TIMER, at: () => Math.random() * splayMs }), from);
}

/** The API server answers 503 to everything for `outageMs` while the timers run; then it is back: how long until all converged, at what cost. */
async function outage(fleet: Fleet): Promise<Summary & { outageRuns: number; recoveryRequests: number }> {
  fleet.lab.kube.faults.inject({ kind: 'status', status: 503, times: Infinity });
  const down = Date.now();
  const during = await convergeFleet(fleet, { concurrency, rerunMs: 0, splayMs: 0, maxRounds: 1, at: () => Math.random() * Math.min(splayMs, outageMs) });
  const wait = down + outageMs - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  fleet.lab.kube.faults.clear();
  const from = Date.now();
  const failed = new Set(during.filter((r) => r.exitCode !== 0).map((r) => r.vm));
  const recovering = { ...fleet, vms: fleet.vms.filter((vm) => failed.has(vm.index)) };
  // the failed VMs' timers fire again within their splay, as systemd's RandomizedDelaySec spreads them
  const results = await convergeFleet(recovering, { concurrency, ...TIMER, at: () => Math.random() * TIMER.splayMs });
  const summary = summarize(recovering, results, from);
  return { ...summary, outageRuns: during.length, recoveryRequests: summary.vault.requests + summary.kubernetes.requests };
}

const line = (name: string, s: Summary) =>
  `| ${name} | ${s.vms} | ${s.converged} | ${s.runs} | ${s.p50.toFixed(2)} | ${s.p99.toFixed(2)} | ${s.fleetConverged.toFixed(1)} | ` +
  `${s.vault.requests} (${s.vault.perSecond.toFixed(1)}/s, peak ${s.vault.peakSecond}) | ${s.vault.limited} | ` +
  `${s.kubernetes.requests} (${s.kubernetes.perSecond.toFixed(1)}/s, peak ${s.kubernetes.peakSecond}) | ${s.kubernetes.limited} | ` +
  `${s.route53 ? `${s.route53.requests} (${s.route53.perSecond.toFixed(1)}/s, peak ${s.route53.peakSecond}) | ${s.route53.limited}` : '- | -'} | ` +
  `${s.kubeEchoes.echoed}/${s.kubeEchoes.refused} (background ${s.kubeEchoes.baseline.toFixed(2)}) | ${Object.entries(s.perRun)
    .map(([service, n]) => `${service} ${n}`)
    .join(', ')} |`;

// What each VM runs: the given build, else a fresh build of these sources in a scratch directory (a VM runs the
// bundle, not the sources: about a quarter of the CPU a run; dist/ is left to the tests)
let built: string | undefined;
let meshvm = values.meshvm ? path.resolve(values.meshvm) : undefined;
if (!meshvm) {
  built = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-fleet-build-'));
  const started = Date.now();
  const build = await execa(process.execPath, [path.join(import.meta.dirname, '../../scripts/build.ts'), '--outdir', built], { reject: false, all: true });
  if (build.exitCode !== 0) {
    process.stderr.write(`bench:fleet: the build failed (exit ${build.exitCode}):\n${build.all}\n`);
    process.exit(1);
  }
  if (!values.json) process.stdout.write(`built meshvm in ${((Date.now() - started) / 1000).toFixed(1)} s: ${path.join(built, 'meshvm.mjs')}\n`);
  meshvm = path.join(built, 'meshvm.mjs');
}
const runlist = values.runlist as FleetRunlist;
const fleet = await startFleet({ vms, concurrency, limits, keepAccess: true, runlist, meshvm });
const out: Record<string, unknown> = { vms, concurrency, limits, cores: os.availableParallelism() };
try {
  const rows: string[] = [];
  for (const name of scenarios) {
    const s = name === 'boot-storm' ? await bootStorm(fleet) : name === 'steady' ? await steady(fleet) : await outage(fleet);
    out[name ?? ''] = { ...s, failed: s.failed.length };
    rows.push(line(name ?? '', s));
    if (!values.json) process.stdout.write(`${name}: done\n`);
  }
  if (values.json) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  else {
    process.stdout.write(
      `\nN=${vms}, concurrency ${concurrency}, runlist ${runlist}, meshvm ${values.meshvm ?? 'built from these sources'}, limits ${JSON.stringify(limits)}, keepAccess on\n` +
        '| scenario | VMs | converged | runs | p50 s | p99 s | fleet converged s | Vault requests | Vault refused | Kubernetes requests | Kubernetes refused | Route53 requests | Route53 throttled | Retry-After echoes | calls per converged run |\n' +
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n' +
        `${rows.join('\n')}\n`,
    );
    const o = out['outage'] as { outageRuns?: number; recoveryRequests?: number } | undefined;
    if (o) process.stdout.write(`outage: ${o.outageRuns} runs failed during it; the recovery cost ${o.recoveryRequests} requests\n`);
  }
} finally {
  await fleet.stop();
  if (built) await fs.rm(built, { recursive: true, force: true });
}
