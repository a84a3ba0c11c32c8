// A simulated fleet: N VMs (scratch roots, each its own AppRole secret_id) converging as separate `meshvm converge`
// processes, concurrency bounded, against the Vault and Kubernetes stand-ins with the real services' limits on.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { LAB_WORKLOAD, MESH_RULES, SCRATCH_ISTIO_VM_RECIPES, startMeshLab, type MeshLab } from '../../test/helpers/mesh-lab.ts';
import { startDnsmasq } from '../../test/helpers/dnsmasq.ts';
import { startRoute53, type Call, type Route53StandIn } from '../../test/stand-ins/index.ts';

const PROJECT = path.resolve(import.meta.dirname, '../..');
/** The sources' entry: what the test suite runs (no build needed); the benchmark runs a build (run.ts --meshvm). */
export const SOURCES_BIN = path.join(PROJECT, 'bin/meshvm.js');
/** What one `meshvm converge` holds at its peak (README: 63-94 MiB), rounded up: the memory check's unit. */
export const MIB_PER_PROCESS = 128;

/**
 * The limits, scaled down to a fleet this machine can run (hundreds of VMs, not 10,000) so that they bite as the real
 * ones would on a busy control plane: the API server's APF seats (real: about 245 for workload-low, of 600 in all, each
 * request holding one for its few ms, shared with the cluster's own controllers) as 2 seats each held 50 ms (40
 * requests/s: below the 45-60 requests/s this machine's fleet asks for at its peak, so 429s happen); a Vault rate-limit
 * quota (real: what the operator sets, e.g. 100 or 1,000 per second) as 10 requests per second.
 */
export const SCALED_LIMITS: Limits = { kubeSeats: 2, kubeServiceMs: 50, vaultPerSecond: 10 };
/** Route53's real limit, not scaled: 5 requests per second per AWS account, all actions together. */
export const ROUTE53_PER_SECOND = 5;
/** The aws runlist's private hosted zone (the Route53 stand-in's, answered by a dnsmasq on loopback). */
export const FLEET_ZONE = { id: 'Z0FLEETMESHVM00000001', name: 'mesh.fleet.example.com' };
const AWS_ENV = { AWS_ACCESS_KEY_ID: 'AKIDMESHVMFLEET', AWS_SECRET_ACCESS_KEY: 'fleet-test-aws-secret', AWS_REGION: 'us-east-1' };

export interface Limits {
  kubeSeats: number;
  kubeServiceMs: number;
  vaultPerSecond: number;
}

export interface FleetOptions {
  vms: number;
  concurrency: number;
  /** The stand-ins' limits (default SCALED_LIMITS; false: none). */
  limits?: Limits | false;
  /** cluster.keepAccess on every VM (fewer Vault calls on later runs). */
  keepAccess?: boolean;
  /**
   * What each VM converges: `istiod` (default: the istio-vm runlist's recipes in a scratch root, a WorkloadEntry per VM
   * registered by meshvm, the fleet view on it), `aws` (istiod and the aws recipe: the control plane's Route53 records,
   * checked in DNS first) or `classic` (istio-proxy-user, cluster-env, certs).
   */
  runlist?: FleetRunlist;
  /** The meshvm each VM runs: a .mjs/.js entry (run by this Node) or an executable (default: the sources, bin/meshvm.js). */
  meshvm?: string;
}

export interface Vm {
  index: number;
  root: string;
  runlist: string;
}

export interface RunResult {
  vm: number;
  startedAt: number;
  endedAt: number;
  exitCode: number;
  apiCalls: Record<string, number>;
  error?: string;
}

export type FleetRunlist = 'istiod' | 'aws' | 'classic';

export interface Fleet {
  lab: MeshLab;
  /** The aws runlist's Route53 stand-in (its records answered by a dnsmasq the fleet keeps in step, as Route53's resolver is). */
  route53?: Route53StandIn;
  vms: Vm[];
  converge(vm: Vm): Promise<RunResult>;
  stop(): Promise<void>;
}

/** Each VM registers its own WorkloadEntry (registration manual): names not known in advance, so no resourceNames. */
const FLEET_ENTRY_RULES = [{ verbs: ['get', 'create', 'patch'], apiGroups: ['networking.istio.io'], resources: ['workloadentries'], namespaces: ['vm-ns'] }];

/**
 * The runlist of VM `index`. istiod: what runlists/istio-vm.yaml converges that a scratch root can hold (no package, no
 * services, the resolver left alone), the VM registered by meshvm (a WorkloadEntry at its own address, 10.200.x.y),
 * so each converge reads the cluster's mesh, mints a token when due and publishes its fleet view on its own entry.
 */
export function fleetRunlist(
  kind: FleetRunlist,
  index: number,
  cluster: Record<string, unknown>,
  aws?: { endpoint: string; dnsServer: string },
): Record<string, unknown> {
  if (kind === 'classic') {
    return {
      name: `fleet-vm-${index}`,
      attributes: { flow: 'classic', namespace: 'vm-ns', serviceAccount: 'vm-sa', cluster },
      recipes: [{ recipe: 'istio-proxy-user' }, { recipe: 'cluster-env' }, { recipe: 'certs' }],
    };
  }
  const address = `10.200.${(index + 1) >> 8}.${(index + 1) & 255}`;
  return {
    name: `fleet-vm-${index}`,
    attributes: {
      flow: 'istiod',
      systemNamespace: 'istio-system',
      workload: LAB_WORKLOAD,
      registration: { mode: 'manual', address },
      cluster,
    },
    recipes: [
      ...SCRATCH_ISTIO_VM_RECIPES,
      ...(kind === 'aws' && aws ? [{ recipe: 'aws', attributes: { zone: FLEET_ZONE, endpoint: aws.endpoint, dnsServers: [aws.dnsServer] } }] : []),
    ],
  };
}

/** Why the fleet cannot run here, or undefined: more processes than memory holds, nonsense counts. */
export function refuseFleet(o: FleetOptions, freeBytes = os.freemem()): string | undefined {
  if (!Number.isInteger(o.vms) || o.vms < 1) return `--vms must be a whole number >= 1 (got ${o.vms})`;
  if (!Number.isInteger(o.concurrency) || o.concurrency < 1) return `--concurrency must be a whole number >= 1 (got ${o.concurrency})`;
  const fits = Math.floor(freeBytes / (MIB_PER_PROCESS * 1024 * 1024));
  if (o.concurrency > fits) {
    return `--concurrency ${o.concurrency} needs about ${o.concurrency * MIB_PER_PROCESS} MiB (${MIB_PER_PROCESS} MiB a meshvm process) and ${Math.round(freeBytes / 1048576)} MiB are free: at most ${fits} here`;
  }
  return undefined;
}

/** Starts the stand-ins (loopback only) and writes N VM roots, each with its own AppRole secret_id. */
export async function startFleet(o: FleetOptions): Promise<Fleet> {
  const refused = refuseFleet(o);
  if (refused) throw new Error(refused);
  const teardowns: (() => unknown)[] = [];
  const t = { teardown: (fn: () => unknown) => void teardowns.push(fn) } as never;
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-fleet-'));
  teardowns.push(() => fs.rm(base, { recursive: true, force: true }));
  const limits = o.limits ?? SCALED_LIMITS;
  const lab = await startMeshLab(t, path.join(base, 'lab-root'), {
    rules: [...MESH_RULES, ...FLEET_ENTRY_RULES],
    ...(limits && {
      kubeLimits: { concurrency: limits.kubeSeats, serviceMs: limits.kubeServiceMs },
      vaultRateLimit: { rate: limits.vaultPerSecond },
    }),
  });
  for (const url of [lab.vault.url, lab.kube.url]) {
    if (!['127.0.0.1', 'localhost', '[::1]'].includes(new URL(url).hostname)) throw new Error(`refusing a stand-in outside loopback: ${url}`);
  }
  const aws = o.runlist === 'aws' ? await startAws(t, limits !== false) : undefined;
  const meshvm = o.meshvm ?? SOURCES_BIN;
  const argv = /\.[cm]?[jt]s$/.test(meshvm) ? [process.execPath, meshvm] : [meshvm];
  const generated = new Set<string>();
  lab.vault.state.secretIds.set('meshvm', generated);
  const vms: Vm[] = [];
  for (let index = 0; index < o.vms; index++) {
    const root = path.join(base, `vm-${index}`);
    const secretId = randomUUID();
    generated.add(secretId);
    await fs.mkdir(path.join(root, 'etc/meshvm'), { recursive: true });
    await fs.writeFile(path.join(root, 'etc/meshvm/role-id'), 'role-id-lab\n', { mode: 0o600 });
    await fs.writeFile(path.join(root, 'etc/meshvm/secret-id'), `${secretId}\n`, { mode: 0o600 });
    await fs.writeFile(path.join(root, 'etc/meshvm/vault-ca.pem'), lab.vault.caPem!);
    // each VM its own identity: a host name (the fleet view's Lease name) and an address (its WorkloadEntry)
    await fs.mkdir(path.join(root, 'etc'), { recursive: true });
    await fs.writeFile(path.join(root, 'etc/hostname'), `fleet-vm-${index}\n`);
    const runlist = path.join(root, 'fleet.yaml');
    const cluster = { ...lab.cluster, keepAccess: o.keepAccess ?? false };
    await fs.writeFile(runlist, JSON.stringify(fleetRunlist(o.runlist ?? 'istiod', index, cluster, aws)));
    vms.push({ index, root, runlist });
  }
  return {
    lab,
    ...(aws && { route53: aws.route53 }),
    vms,
    async converge(vm) {
      const startedAt = Date.now();
      const result = await execa(argv[0]!, [...argv.slice(1), 'converge', vm.runlist, '--root', vm.root, '--json', '--lock-wait', '0'], {
        reject: false,
        env: { NO_COLOR: '1', ...(aws && AWS_ENV) },
        timeout: 300_000,
      });
      const endedAt = Date.now();
      await aws?.sync();
      let apiCalls: Record<string, number> = {};
      try {
        apiCalls = JSON.parse(String(result.stdout)).apiCalls ?? {};
      } catch {}
      const run: RunResult = { vm: vm.index, startedAt, endedAt, exitCode: result.exitCode ?? -1, apiCalls };
      if (run.exitCode !== 0) run.error = String(result.stderr).split('\n').slice(-3).join(' ');
      return run;
    },
    async stop() {
      for (const fn of teardowns.reverse()) await fn();
    },
  };
}

/**
 * Route53 for the aws runlist: the stand-in (its real per-account rate when limits are on) and a real dnsmasq on
 * loopback answering the zone's A records from a hosts file, re-written and re-read (SIGHUP) when the records change:
 * after every run and every second, as Route53's resolvers pick up a change within seconds.
 */
async function startAws(t: never, limited: boolean) {
  const route53 = await startRoute53({
    zones: [{ name: FLEET_ZONE.name, id: FLEET_ZONE.id }],
    ...(limited && { rateLimit: { perSecond: ROUTE53_PER_SECOND } }),
  });
  (t as { teardown(fn: () => unknown): void }).teardown(() => route53.stop());
  if (new URL(route53.endpoint).hostname !== '127.0.0.1') throw new Error(`refusing a stand-in outside loopback: ${route53.endpoint}`);
  // dnsmasq re-reads the file as the account it drops to (nobody), so not under the fleet's 0700 directory
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-fleet-dns-'));
  (t as { teardown(fn: () => unknown): void }).teardown(() => fs.rm(dir, { recursive: true, force: true }));
  await fs.chmod(dir, 0o755);
  const hosts = path.join(dir, 'route53.hosts');
  await fs.writeFile(hosts, '', { mode: 0o644 });
  const dns = await startDnsmasq(t, [`--addn-hosts=${hosts}`, '--local-ttl=60']);
  let written = '';
  const sync = async () => {
    const lines = route53
      .records(FLEET_ZONE.id)
      .filter((r) => r.type === 'A')
      .flatMap((r) => (r.values ?? []).map((ip) => `${ip} ${r.name.replace(/\.$/, '')}`))
      .sort()
      .join('\n');
    if (lines === written) return;
    written = lines;
    await fs.writeFile(hosts, `${lines}\n`);
    dns.reload();
  };
  const timer = setInterval(() => void sync(), 1000);
  (t as { teardown(fn: () => unknown): void }).teardown(() => clearInterval(timer));
  return { route53, endpoint: route53.endpoint, dnsServer: dns.server, sync };
}

/** Runs `work` on every item, at most `concurrency` at once, each started no sooner than its `at` (ms from now). */
export async function runPool<T, R>(items: readonly T[], concurrency: number, work: (item: T) => Promise<R>, at: (item: T) => number = () => 0): Promise<R[]> {
  const start = Date.now();
  const order = items.map((item, i) => ({ item, i, at: at(item) })).sort((a, b) => a.at - b.at);
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < order.length) {
      const job = order[next++]!;
      const wait = start + job.at - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      results[job.i] = await work(job.item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, order.length) }, worker));
  return results;
}

export interface ServiceStats {
  requests: number;
  /** Refused by the stand-in's limit (each was retried when its run converged). */
  limited: number;
  /** Requests per second over the scenario's span; and the busiest second's count. */
  perSecond: number;
  peakSecond: number;
}

export interface Summary {
  vms: number;
  converged: number;
  failed: RunResult[];
  /** Seconds: each run's wall time, and from the scenario's start until the last VM converged. */
  p50: number;
  p99: number;
  fleetConverged: number;
  vault: ServiceStats;
  kubernetes: ServiceStats;
  route53?: ServiceStats;
  /** Runs in all (re-runs of failed VMs included) and VMs that never converged. */
  runs: number;
  neverConverged: number[];
  /** API calls a converged run made, as its report counts them (retries included), the mean over the runs. */
  perRun: Record<string, number>;
  /** Kubernetes refusals (Retry-After: 1) echoed by a request exactly 1 s later: near 1 = synchronised waves. */
  kubeEchoes: { refused: number; echoed: number; share: number; baseline: number };
}

const quantile = (sorted: number[], q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : 0);

function serviceStats(calls: readonly Call[], from: number, to: number): ServiceStats {
  const within = calls.filter((c) => c.at >= from && c.at <= to);
  const seconds = new Map<number, number>();
  for (const c of within) seconds.set(Math.floor(c.at / 1000), (seconds.get(Math.floor(c.at / 1000)) ?? 0) + 1);
  return {
    requests: within.length,
    limited: within.filter((c) => c.limited).length,
    perSecond: within.length / Math.max(0.001, (to - from) / 1000),
    peakSecond: Math.max(0, ...seconds.values()),
  };
}

/**
 * Synchronised retry waves, measured: the share of refused requests that are echoed by a request exactly Retry-After
 * later (within `windowMs`). Clients that wait exactly the hint come back as one wave (share near 1); with jitter above
 * the floor the echoes are what the background traffic puts in that window. `baseline` is that background: the same
 * share measured at a control offset (2.5 x Retry-After, where no retry of that refusal lands), so that a busy server's
 * dense traffic is not read as waves: a wave shows as a share well above the baseline.
 */
export function retryEchoShare(calls: readonly Call[], afterMs: number, windowMs = 50): { refused: number; echoed: number; share: number; baseline: number } {
  const times = calls.map((c) => c.at).sort((x, y) => x - y);
  const refused = calls.filter((c) => c.limited);
  const echoedAt = (offset: number) => refused.filter((r) => times.some((at) => at >= r.at + offset && at < r.at + offset + windowMs)).length;
  const echoed = echoedAt(afterMs);
  const share = (n: number) => (refused.length ? n / refused.length : 0);
  return { refused: refused.length, echoed, share: share(echoed), baseline: share(echoedAt(afterMs * 2.5)) };
}

/**
 * The fleet converging as timers would make it: every VM once (at its `at`), and a VM whose run failed again after
 * `rerunMs` plus a random splay (systemd's RandomizedDelaySec), until all converged or `maxRounds` runs each.
 */
export async function convergeFleet(
  fleet: Fleet,
  o: { concurrency: number; at?: (vm: Vm) => number; rerunMs: number; splayMs: number; maxRounds: number },
): Promise<RunResult[]> {
  const all: RunResult[] = [];
  let pending = fleet.vms;
  for (let round = 0; round < o.maxRounds && pending.length > 0; round++) {
    const results = await runPool(pending, o.concurrency, (vm) => fleet.converge(vm), round === 0 ? o.at : () => Math.random() * o.splayMs);
    all.push(...results);
    pending = pending.filter((vm) => results.find((r) => r.vm === vm.index)?.exitCode !== 0);
    if (pending.length && round + 1 < o.maxRounds) await new Promise((r) => setTimeout(r, o.rerunMs));
  }
  return all;
}

function meanCalls(runs: readonly RunResult[]): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const r of runs) for (const [service, n] of Object.entries(r.apiCalls)) sums[service] = (sums[service] ?? 0) + n;
  return Object.fromEntries(Object.entries(sums).map(([service, n]) => [service, Math.round((n / Math.max(1, runs.length)) * 100) / 100]));
}

export function summarize(fleet: Fleet, results: readonly RunResult[], from: number, to = Date.now()): Summary {
  const walls = results.map((r) => (r.endedAt - r.startedAt) / 1000).sort((a, b) => a - b);
  const convergedAt = new Map<number, number>();
  for (const r of results) if (r.exitCode === 0) convergedAt.set(r.vm, Math.min(convergedAt.get(r.vm) ?? Infinity, r.endedAt));
  return {
    vms: fleet.vms.length,
    converged: convergedAt.size,
    failed: results.filter((r) => r.exitCode !== 0),
    runs: results.length,
    neverConverged: fleet.vms.filter((vm) => !convergedAt.has(vm.index)).map((vm) => vm.index),
    perRun: meanCalls(results.filter((r) => r.exitCode === 0)),
    p50: quantile(walls, 0.5),
    p99: quantile(walls, 0.99),
    fleetConverged: convergedAt.size ? (Math.max(...convergedAt.values()) - from) / 1000 : Infinity,
    vault: serviceStats(fleet.lab.vault.calls, from, to),
    kubernetes: serviceStats(fleet.lab.kube.calls, from, to),
    ...(fleet.route53 && { route53: serviceStats(fleet.route53.calls, from, to) }),
    kubeEchoes: retryEchoShare(
      fleet.lab.kube.calls.filter((c) => c.at >= from && c.at <= to),
      1000,
    ),
  };
}
