// Owns booting a Debian 12 guest (systemd as PID 1) with systemd-nspawn in its own network namespace, and talking to it.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { constants, tmpdir } from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import type { ResultPromise } from 'execa';
import { ensureRootfs } from './rootfs.ts';
import type { RootfsOptions } from './rootfs.ts';

export interface BindMount {
  /** Absolute path on the host (must exist). */
  host: string;
  /** Absolute path in the guest (created if missing). */
  guest: string;
  /** Read-only unless false; default true. */
  readOnly?: boolean;
}

export interface NoCloudSeed {
  /** The user-data file as written (usually starts with `#cloud-config`). */
  userData: string;
  /** More meta-data keys; `instance-id` defaults to a fresh unique id, `local-hostname` to the machine name. */
  metaData?: Record<string, string>;
  /** Optional network-config (v1/v2 YAML). The image sets `network: {config: disabled}`, so it is ignored by default. */
  networkConfig?: string;
  vendorData?: string;
}

export interface BootOptions {
  /** Which image: the options given to ensureRootfs (e.g. `{ resolved: true }`). Default: the base image. */
  rootfs?: RootfsOptions;
  /** Or an already built root directory (skips ensureRootfs). */
  rootfsDir?: string;
  /** Extra bind mounts (read-only unless readOnly: false). */
  binds?: readonly BindMount[];
  /** NoCloud seed, bound read-only at /var/lib/cloud/seed/nocloud. Without one, cloud-init is disabled for the boot. */
  seed?: NoCloudSeed;
  /** Run cloud-init even without a seed (it then uses DataSourceNone). Default: only with a seed. */
  cloudInit?: boolean;
  /** Bind this process's Node binary read-only at /usr/local/bin/node (Debian 12's nodejs is too old for meshvm). */
  node?: boolean;
  /** Guest hostname; default the machine name. */
  hostname?: string;
  /** More arguments for the guest's systemd, e.g. `systemd.log_level=debug`. */
  initArgs?: readonly string[];
  /** More systemd-nspawn options, e.g. `--capability=CAP_SYS_MODULE` or `--setenv=X=1`. */
  nspawnArgs?: readonly string[];
  /** How long to wait for the guest's PID 1 to appear; default 30 s. */
  startTimeoutMs?: number;
}

export interface ExecOptions {
  /** Standard input; default none (/dev/null). */
  input?: string | Uint8Array;
  /** Kill the command after this long and reject; default 60 s. */
  timeoutMs?: number;
  /** Added to the guest's default environment (PATH, HOME=/root, LANG=C.UTF-8, TERM=dumb). */
  env?: Record<string, string>;
  /** Working directory in the guest; default /. */
  cwd?: string;
  /** Run as this guest user (runuser); default root. */
  user?: string;
  /** Reject when the exit code is not 0 (message carries argv, code and stderr); default false. */
  check?: boolean;
  /** Keep a trailing newline in stdout/stderr; default stripped. */
  keepFinalNewline?: boolean;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface BootState {
  /** `systemctl is-system-running` once the boot jobs are done. */
  state: 'running' | 'degraded';
  /** Units in failed state (empty when running). */
  failedUnits: string[];
  /** Milliseconds from the nspawn launch until the guest was up. */
  bootMs: number;
}

export interface Guest {
  /** Machine name (also the default hostname), unique per boot. */
  readonly name: string;
  /** The network namespace the guest lives in (`ip netns exec <netns> …` starts stand-ins the guest reaches on 127.0.0.1). */
  readonly netns: string;
  /** The image directory (pristine: the guest writes to a tmpfs overlay). */
  readonly rootfs: string;
  /** Host PID of systemd-nspawn. */
  readonly nspawnPid: number;
  /** Host PID of the guest's PID 1 (systemd). */
  readonly leaderPid: number;
  /** Host directory holding console.log and the seed; removed by stop() unless MESHVM_TEST_KEEP=1. */
  readonly workDir: string;
  /**
   * Runs argv inside the guest (its mount, PID, network, UTS and IPC namespaces and its root, via nsenter) as root
   * with a clean environment. Resolves with the exit code (128+N when killed by signal N); rejects on timeout, or
   * with `check` on a non-zero exit. Unlike a guest service it keeps the host's capabilities and cgroup and has no
   * seccomp filter. A command that leaves a background process holding stdout/stderr (`sh -c 'daemon &'`) does not
   * return until that process exits: redirect its output, or start daemons with `systemd-run` / a unit.
   */
  exec(argv: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Waits until the boot jobs are done and the system is running or degraded; rejects otherwise. Default 90 s. */
  waitForBoot(timeoutMs?: number): Promise<BootState>;
  /** Waits for cloud-init to finish (`cloud-init status --wait --long`); rejects when it reports an error. */
  waitForCloudInit(timeoutMs?: number): Promise<string>;
  /** Copies a host file or directory (recursively) to guestPath, creating parent directories. */
  copyIn(hostPath: string, guestPath: string): Promise<void>;
  /** Writes a guest file (parents created), mode default 0644, owned by root. */
  writeFile(guestPath: string, content: string | Uint8Array, opts?: { mode?: number }): Promise<void>;
  /** Reads a guest file as UTF-8 text; undefined when it does not exist. */
  readFile(guestPath: string): Promise<string | undefined>;
  /** argv that runs a host command inside the guest's network namespace (for stand-in servers). */
  netnsArgv(argv: readonly string[]): [string, ...string[]];
  /** The guest console so far (systemd status lines, cloud-init output). */
  consoleLog(): Promise<string>;
  /** Resolves when the guest powers itself off (e.g. cloud-init power_state); rejects after timeoutMs (default 60 s). Call stop() after. */
  waitForExit(timeoutMs?: number): Promise<void>;
  /** Powers the guest off (kills it after 15 s), waits for nspawn, removes the namespace. Idempotent. */
  stop(): Promise<void>;
}

const GUEST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const NETNS_PREFIX = 'meshvm-test-';

// ---------------------------------------------------------------------------------------------------------------
// Prerequisites

let canBootCache: Promise<{ ok: true } | { ok: false; reason: string }> | undefined;

/** Whether this machine can build and boot guests (root, tools, network namespaces); cached per process. */
export function canBootContainers(): Promise<{ ok: true } | { ok: false; reason: string }> {
  canBootCache ??= probe();
  return canBootCache;
}

async function probe(): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (process.env.MESHVM_TEST_NO_GUEST) return { ok: false, reason: 'MESHVM_TEST_NO_GUEST is set' };
  if (process.platform !== 'linux') return { ok: false, reason: `needs Linux, this is ${process.platform}` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'needs root (systemd-nspawn, ip netns, mmdebstrap --mode=root)' };
  const tools: [string, string[], string][] = [
    ['systemd-nspawn', ['--version'], 'systemd-container'],
    ['mmdebstrap', ['--version'], 'mmdebstrap'],
    ['nsenter', ['--version'], 'util-linux'],
    ['setpriv', ['--version'], 'util-linux'],
    ['flock', ['--version'], 'util-linux'],
    ['ip', ['-V'], 'iproute2'],
  ];
  const missing: string[] = [];
  for (const [cmd, args, pkg] of tools) {
    const r = await execa(cmd, args, { reject: false, timeout: 10_000 });
    if (r.exitCode !== 0) missing.push(`${cmd} (apt-get install ${pkg})`);
  }
  if (missing.length > 0) return { ok: false, reason: `missing ${missing.join(', ')}` };
  const probeNs = `meshvm-probe-${process.pid}-${randomBytes(3).toString('hex')}`;
  const add = await execa('ip', ['netns', 'add', probeNs], { reject: false, timeout: 10_000 });
  if (add.exitCode !== 0) return { ok: false, reason: `cannot create a network namespace: ${add.stderr.trim()}` };
  await execa('ip', ['netns', 'delete', probeNs], { reject: false, timeout: 10_000 });
  return { ok: true };
}

// ---------------------------------------------------------------------------------------------------------------
// Cleanup of guests this process started, on stop(), on exit, and on fatal signals

interface LiveGuest {
  name: string;
  netns: string;
  workDir: string;
  /** The guest's PID 1 and its start time (so a reused PID is never killed). */
  leader?: { pid: number; startTime: string | undefined };
  child?: ResultPromise;
  /** The guest's own stop(), once it exists. */
  stop?: () => Promise<void>;
}
const live = new Map<string, LiveGuest>();
let exitHooksInstalled = false;

/** Last resort when the process is exiting and cannot wait: kill, unmount the namespace, remove the work dir. */
function killSync(g: LiveGuest): void {
  // SIGKILL to the guest's PID 1 ends its whole PID namespace; nspawn then exits on its own.
  if (g.leader && g.leader.startTime !== undefined && processStartTime(g.leader.pid) === g.leader.startTime) {
    try {
      process.kill(g.leader.pid, 'SIGKILL');
    } catch {}
  }
  spawnSync('ip', ['netns', 'delete', g.netns], { stdio: 'ignore', timeout: 5000 });
  if (!process.env.MESHVM_TEST_KEEP) rmSync(g.workDir, { recursive: true, force: true });
}

/** Kills every live guest and waits (bounded) for each nspawn, so none is left a zombie under a non-reaping PID 1. */
async function killAll(): Promise<void> {
  const guests = [...live.values()];
  live.clear();
  await Promise.race([
    Promise.all(
      guests.map(async (g) => {
        killSync(g);
        await g.child?.catch(() => {});
      }),
    ),
    sleep(5000, undefined, { ref: false }),
  ]);
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  // The loop ran dry with guests still up (a test forgot stop()): stop them properly, then let the process end.
  process.on('beforeExit', () => {
    const forgotten = [...live.values()];
    if (forgotten.length > 0) void Promise.all(forgotten.map((g) => g.stop?.() ?? killSync(g)));
  });
  // process.exit() or a fatal error: only synchronous work is possible now.
  process.on('exit', () => {
    for (const g of live.values()) killSync(g);
    live.clear();
  });
  // Interrupted (Ctrl-C, ava's timeout kills its worker with SIGTERM): kill and reap, then die of the same signal.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      process.removeListener(signal, onSignal);
      void killAll().finally(() => {
        if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
      });
    };
    process.on(signal, onSignal);
  }
}

/** Removes namespaces and work dirs left by processes that died without cleaning up (their PID is in the name). */
function sweepStale(): void {
  const dead = (pid: string) => {
    if (Number(pid) === process.pid) return false;
    try {
      process.kill(Number(pid), 0);
      return false;
    } catch {
      return true;
    }
  };
  const list = (dir: string) => {
    try {
      return readdirSync(dir);
    } catch {
      return [];
    }
  };
  for (const name of list('/run/netns')) {
    // a guest's namespace, and the far side a lab adds past its NIC (<guest namespace>-far)
    const m = /^meshvm-(?:test|probe)-(\d+)-[0-9a-f]+(?:-far)?$/.exec(name);
    if (m?.[1] && dead(m[1])) spawnSync('ip', ['netns', 'delete', name], { stdio: 'ignore', timeout: 5000 });
  }
  for (const name of list(tmpdir())) {
    const m = /^meshvm-test-(\d+)-[0-9a-f]+-\w+$/.exec(name);
    if (m?.[1] && dead(m[1]) && !process.env.MESHVM_TEST_KEEP) rmSync(path.join(tmpdir(), name), { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Boot

/**
 * Boots a guest and returns once its systemd runs (call waitForBoot() before relying on services).
 *
 *   const guest = await bootContainer({ rootfs: { resolved: true }, seed: { userData: '#cloud-config\n...' } });
 *   try {
 *     await guest.waitForBoot();
 *     const { stdout } = await guest.exec(['systemctl', 'is-active', 'dnsmasq']);
 *   } finally {
 *     await guest.stop();
 *   }
 *
 * The image is shared and stays pristine (--volatile=overlay: guest writes go to a tmpfs). The guest's network
 * namespace has loopback only; host commands run in it with `guest.netnsArgv(argv)`. Guests left running are
 * stopped when the process ends, is interrupted, or dies (nspawn gets SIGTERM through PR_SET_PDEATHSIG).
 */
export async function bootContainer(opts: BootOptions = {}): Promise<Guest> {
  const rootfs = opts.rootfsDir ?? (await ensureRootfs(opts.rootfs));
  const id = randomBytes(4).toString('hex');
  const name = `meshvm-${id}`;
  const netns = `${NETNS_PREFIX}${process.pid}-${id}`;
  installExitHooks();
  sweepStale();

  for (const b of opts.binds ?? []) {
    if (!path.isAbsolute(b.host) || !path.isAbsolute(b.guest)) throw new Error(`bootContainer: bind paths must be absolute: ${b.host}:${b.guest}`);
    if (b.host.includes(':') || b.guest.includes(':')) throw new Error(`bootContainer: bind paths must not contain ':': ${b.host}:${b.guest}`);
    await stat(b.host); // fail here, not inside nspawn
  }

  const workDir = await mkdtemp(path.join(tmpdir(), `${netns}-`)); // the PID in the name lets a later sweep find it
  const record: LiveGuest = { name, netns, workDir };
  live.set(name, record);
  let child: ResultPromise | undefined;
  try {
    const nspawnArgs = [
      `--directory=${rootfs}`,
      `--machine=${name}`,
      `--hostname=${opts.hostname ?? name}`,
      '--boot',
      '--volatile=overlay',
      '--register=no',
      '--keep-unit',
      '--capability=CAP_NET_ADMIN',
      `--network-namespace-path=/run/netns/${netns}`,
      '--console=read-only',
      '--resolv-conf=off',
      '--timezone=off',
      '--link-journal=no',
      ...(opts.nspawnArgs ?? []),
    ];
    for (const b of opts.binds ?? []) nspawnArgs.push(`--${b.readOnly === false ? 'bind' : 'bind-ro'}=${b.host}:${b.guest}`);
    if (opts.node) nspawnArgs.push(`--bind-ro=${process.execPath}:/usr/local/bin/node`);
    if (opts.seed) {
      const seedDir = path.join(workDir, 'seed');
      await writeSeed(seedDir, opts.seed, name);
      nspawnArgs.push(`--bind-ro=${seedDir}:/var/lib/cloud/seed/nocloud`);
    }
    const initArgs = ['systemd.mask=systemd-networkd-wait-online.service', ...(opts.initArgs ?? [])];
    if (!(opts.cloudInit ?? opts.seed !== undefined)) initArgs.push('cloud-init=disabled');

    const add = await execa('ip', ['netns', 'add', netns], { reject: false, timeout: 10_000 });
    if (add.exitCode !== 0) throw new Error(`bootContainer: ip netns add ${netns}: ${add.stderr.trim()}`);
    await execa('ip', ['-n', netns, 'link', 'set', 'lo', 'up'], { timeout: 10_000 });

    const consolePath = path.join(workDir, 'console.log');
    const consoleFd = openSync(consolePath, 'a');
    const launched = Date.now();
    try {
      // setpriv: if this process dies, nspawn gets SIGTERM and powers the guest off.
      child = execa('setpriv', ['--pdeathsig', 'SIGTERM', '--', 'systemd-nspawn', ...nspawnArgs, '--', ...initArgs], {
        stdin: 'ignore',
        // Any fd number is handed to spawn() as is; execa's types only list 3-9.
        stdout: consoleFd as 3,
        stderr: consoleFd as 3,
        reject: false,
        env: { SYSTEMD_COLORS: '0' },
        // execa's own cleanup re-raises fatal signals at once; ours powers off and reaps first (installExitHooks).
        cleanup: false,
        // Own session: a signal sent to our process group (Ctrl-C, timeout(1)) must not kill nspawn before
        // its guest (the guest would be left to a PID 1 that does not reap).
        detached: true,
      });
    } finally {
      closeSync(consoleFd);
    }
    child.catch(() => {});
    child.unref(); // a forgotten guest must not keep the process alive (the beforeExit hook stops it)
    record.child = child;
    const nspawnPid = child.pid;
    if (nspawnPid === undefined) throw new Error('bootContainer: systemd-nspawn did not start');
    const leaderPid = await findLeader(nspawnPid, child, consolePath, opts.startTimeoutMs ?? 30_000);
    record.leader = { pid: leaderPid, startTime: processStartTime(leaderPid) };
    return makeGuest({ name, netns, rootfs, nspawnPid, leaderPid, workDir, consolePath, launched, child, record });
  } catch (error) {
    if (child) await terminate(child, record.leader);
    killSync(record);
    live.delete(name);
    throw error;
  }
}

async function writeSeed(dir: string, seed: NoCloudSeed, name: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const meta: Record<string, string> = {
    'instance-id': `iid-${name}-${Date.now()}`,
    'local-hostname': name,
    ...seed.metaData,
  };
  // JSON is YAML: quoting every value keeps odd strings safe.
  const metaText =
    Object.entries(meta)
      .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
      .join('\n') + '\n';
  await writeFile(path.join(dir, 'meta-data'), metaText);
  await writeFile(path.join(dir, 'user-data'), seed.userData);
  if (seed.networkConfig !== undefined) await writeFile(path.join(dir, 'network-config'), seed.networkConfig);
  if (seed.vendorData !== undefined) await writeFile(path.join(dir, 'vendor-data'), seed.vendorData);
}

/** The guest's PID 1: a child of nspawn that is PID 1 in its own PID namespace and has exec'd init. */
async function findLeader(nspawnPid: number, child: ResultPromise, consolePath: string, timeoutMs: number): Promise<number> {
  let exited = false;
  child
    .finally(() => {
      exited = true;
    })
    .catch(() => {});
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !exited) {
    for (const pid of await childrenOf(nspawnPid)) {
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
      const nspid = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? [];
      const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
      if (nspid.length >= 2 && nspid.at(-1) === '1' && comm !== '' && comm !== 'systemd-nspawn') return pid;
    }
    await sleep(50);
  }
  const log = await readFile(consolePath, 'utf8').catch(() => '');
  throw new Error(`bootContainer: ${exited ? 'systemd-nspawn exited' : `no guest PID 1 after ${timeoutMs} ms`}; console:\n${tail(log, 30)}`);
}

async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const task of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const text = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    for (const p of text.split(/\s+/)) if (p) out.push(Number(p));
  }
  return out;
}

function tail(text: string, lines: number): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** The start time of a process (field 22 of /proc/PID/stat), to tell it from a later process with the same PID. */
function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may contain spaces.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Orderly poweroff via nspawn (SIGTERM → SIGRTMIN+3 to the guest), then force; always waits for nspawn. */
async function terminate(child: ResultPromise, leader: { pid: number; startTime: string | undefined } | undefined, graceMs = 15_000): Promise<void> {
  child.ref();
  let done = false;
  const finished = child.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  // Unref'd timers: a guest that stopped quickly must not hold the process for the whole grace period.
  const waitFor = (ms: number) => Promise.race([finished, sleep(ms, undefined, { ref: false })]);
  const killLeader = () => {
    if (leader && leader.startTime !== undefined && processStartTime(leader.pid) === leader.startTime) {
      try {
        process.kill(leader.pid, 'SIGKILL'); // ends the guest's whole PID namespace
      } catch {}
    }
  };
  child.kill('SIGTERM');
  await waitFor(graceMs);
  if (!done) {
    killLeader();
    await waitFor(5000);
  }
  if (!done) {
    child.kill('SIGKILL');
    await finished;
  }
  // nspawn can exit before its guest (seen when the guest's shutdown hung): never leave a guest running.
  killLeader();
}

interface GuestParts {
  name: string;
  netns: string;
  rootfs: string;
  nspawnPid: number;
  leaderPid: number;
  workDir: string;
  consolePath: string;
  launched: number;
  child: ResultPromise;
  record: LiveGuest;
}

function makeGuest(p: GuestParts): Guest {
  let stopping: Promise<void> | undefined;

  const exec = async (argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> => {
    if (argv.length === 0) throw new Error('guest.exec: empty argv');
    if (stopping) throw new Error(`guest.exec: ${p.name} is stopped`);
    if (processStartTime(p.leaderPid) !== p.record.leader?.startTime) throw new Error(`guest.exec: ${p.name} has exited`);
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const env = { PATH: GUEST_PATH, HOME: '/root', LANG: 'C.UTF-8', TERM: 'dumb', SYSTEMD_PAGER: '', SYSTEMD_COLORS: '0', ...opts.env };
    // nsenter --no-fork execs the guest's timeout(1) directly: it has the guest's mount, net, UTS, IPC namespaces
    // and root, while the command it forks is in the guest's PID namespace too. Not forking matters: nsenter's
    // fork mode stops itself whenever its child stops, and systemd-shutdown SIGSTOPs every process before killing
    // it, so a command caught by a guest poweroff would leave nsenter stopped forever and its dead child unreaped
    // (the guest's shutdown then hangs 90 s). timeout(1) also bounds the command inside the guest (killing only
    // nsenter would orphan it there) and signals its whole process group.
    const inner = [
      '/usr/bin/timeout',
      '--kill-after=5',
      `${Math.max(1, Math.ceil(timeoutMs / 1000))}`,
      '/usr/bin/env',
      '-i',
      `--chdir=${opts.cwd ?? '/'}`,
      ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
      ...(opts.user ? ['runuser', '-u', opts.user, '--'] : []),
      ...argv,
    ];
    const started = Date.now();
    const r = await execa('nsenter', [`--target=${p.leaderPid}`, '--all', '--root', '--wd', '--no-fork', '--', ...inner], {
      ...(opts.input === undefined ? { stdin: 'ignore' as const } : { input: opts.input }),
      reject: false,
      timeout: timeoutMs + 10_000,
      stripFinalNewline: !opts.keepFinalNewline,
      cleanup: false, // see bootContainer: killing the guest ends the command anyway
    });
    // Killed by a signal (e.g. the guest powered off under it): report it the way a shell does.
    const signalNumber = r.signal ? constants.signals[r.signal] : undefined;
    const exitCode = r.exitCode ?? (signalNumber !== undefined ? 128 + signalNumber : -1);
    const elapsed = Date.now() - started;
    if (r.timedOut || ((exitCode === 124 || exitCode === 137) && elapsed >= timeoutMs)) {
      throw new Error(`guest.exec: ${JSON.stringify(argv)} timed out after ${timeoutMs} ms in ${p.name}; stderr: ${tail(r.stderr, 10)}`);
    }
    if (opts.check && exitCode !== 0) {
      throw new Error(`guest.exec: ${JSON.stringify(argv)} exited ${exitCode} in ${p.name}; stderr:\n${tail(r.stderr, 20)}`);
    }
    return { stdout: r.stdout, stderr: r.stderr, exitCode };
  };

  const guest: Guest = {
    name: p.name,
    netns: p.netns,
    rootfs: p.rootfs,
    nspawnPid: p.nspawnPid,
    leaderPid: p.leaderPid,
    workDir: p.workDir,
    exec,

    async waitForBoot(timeoutMs = 90_000): Promise<BootState> {
      const deadline = Date.now() + timeoutMs;
      let last = '';
      while (Date.now() < deadline) {
        const remaining = deadline - Date.now();
        // --wait blocks while the state is initializing/starting; early on the bus may not be up yet.
        const r = await exec(['systemctl', 'is-system-running', '--wait'], { timeoutMs: Math.max(1000, remaining) }).catch((e: Error) => ({
          stdout: '',
          stderr: e.message,
          exitCode: -1,
        }));
        const state = r.stdout.trim().split('\n').at(-1) ?? '';
        last = `${state} ${r.stderr.trim()}`.trim();
        if (state === 'running' || state === 'degraded') {
          const failed =
            state === 'degraded'
              ? (await exec(['systemctl', 'list-units', '--state=failed', '--plain', '--no-legend', '--no-pager'])).stdout
                  .split('\n')
                  .map((l) => l.trim().split(/\s+/)[0] ?? '')
                  .filter(Boolean)
              : [];
          return { state, failedUnits: failed, bootMs: Date.now() - p.launched };
        }
        if (state === 'maintenance' || state === 'stopping') break;
        await sleep(100);
      }
      throw new Error(`guest.waitForBoot: ${p.name} not up after ${timeoutMs} ms (last: ${last}); console:\n${tail(await guest.consoleLog(), 30)}`);
    },

    async waitForCloudInit(timeoutMs = 90_000): Promise<string> {
      const r = await exec(['cloud-init', 'status', '--wait', '--long'], { timeoutMs });
      if (r.exitCode !== 0 || !/status: done/.test(r.stdout)) {
        throw new Error(`guest.waitForCloudInit: exit ${r.exitCode}\n${r.stdout}\n${r.stderr}`);
      }
      return r.stdout;
    },

    async copyIn(hostPath: string, guestPath: string): Promise<void> {
      const st = await stat(hostPath);
      if (st.isDirectory()) {
        const tar = await execa('tar', ['-C', hostPath, '-cf', '-', '.'], { encoding: 'buffer', timeout: 60_000 });
        await exec(['sh', '-c', 'mkdir -p -- "$1" && tar -xf - -C "$1"', 'sh', guestPath], { input: tar.stdout, check: true });
      } else {
        await guest.writeFile(guestPath, await readFile(hostPath), { mode: st.mode & 0o7777 });
      }
    },

    async writeFile(guestPath: string, content: string | Uint8Array, opts: { mode?: number } = {}): Promise<void> {
      const mode = (opts.mode ?? 0o644).toString(8);
      await exec(['sh', '-c', 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" -- "$1"', 'sh', guestPath, mode], { input: content, check: true });
    },

    async readFile(guestPath: string): Promise<string | undefined> {
      const r = await exec(['sh', '-c', 'test -e "$1" || exit 3; cat -- "$1"', 'sh', guestPath], { keepFinalNewline: true });
      if (r.exitCode === 3) return undefined;
      if (r.exitCode !== 0) throw new Error(`guest.readFile(${guestPath}): ${r.stderr}`);
      return r.stdout;
    },

    netnsArgv(argv: readonly string[]): [string, ...string[]] {
      return ['ip', 'netns', 'exec', p.netns, ...argv];
    },

    async waitForExit(timeoutMs = 60_000): Promise<void> {
      p.child.ref();
      try {
        const exited = await Promise.race([
          p.child.then(
            () => true,
            () => true,
          ),
          sleep(timeoutMs, false, { ref: false }),
        ]);
        if (!exited) throw new Error(`guest.waitForExit: ${p.name} still running after ${timeoutMs} ms`);
      } finally {
        if (!stopping) p.child.unref();
      }
    },

    consoleLog(): Promise<string> {
      return readFile(p.consolePath, 'utf8').catch(() => '');
    },

    stop(): Promise<void> {
      stopping ??= (async () => {
        await terminate(p.child, p.record.leader);
        await execa('ip', ['netns', 'delete', p.netns], { reject: false, timeout: 10_000 });
        if (!process.env.MESHVM_TEST_KEEP) await rm(p.workDir, { recursive: true, force: true });
        live.delete(p.name);
      })();
      return stopping;
    },
  };
  p.record.stop = guest.stop;
  return guest;
}
