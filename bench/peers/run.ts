// npm run bench:peers: the same desired state converged by meshvm, Ansible and Puppet side by side (wall time, peak RSS),
// each in its own scratch root and throwaway network namespace, never the host's own files or tables.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { openSync, closeSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { $ } from 'zx';

// the meshvm processes timed here keep V8's compile cache in the checkout, as the tests do (test/helpers/setup.ts),
// not in this machine's /var/cache/meshvm, where a root meshvm keeps it by default
process.env.MESHVM_COMPILE_CACHE ??= new URL('../../node_modules/.cache/meshvm-compile-cache', import.meta.url).pathname;

const HERE = import.meta.dirname;
const PROJECT = path.resolve(HERE, '../..');
const CERTS = path.join(PROJECT, 'examples/demo-certs');
$.verbose = false;
$.quiet = true;

const USAGE = `node bench/peers/run.ts [options]   (npm run bench:peers -- [options])

  --runs N          timed runs of each cell (default 3)
  --slow-runs N     runs of a cell whose first run took longer than --slow-after (default 1)
  --slow-after S    seconds (default 30)
  --limit S         stop a run after S seconds (default 120): its cell shows "> S" and how far it got; after a stopped
                    first converge the harness writes that tool's converged state itself (W2, W3) for the later phases
  --workloads LIST  W1,W2,W3 (default all)
  --tools LIST      ansible,meshvm,puppet (default all, run in that order, interleaved)
  --phases LIST     empty,first,noop,check (default all)
  --size N          files in W2, rules in W3 (default 1000)
  --meshvm PATH     what to time for meshvm: an executable (default dist/meshvm, what the .deb and .rpm install), or a
                    .mjs/.js entry run by this Node (dist/meshvm.mjs: the bundle, what npm installs)
  --no-build        time the existing build instead of running npm run build first
  --keep            keep the scratch directory (roots, logs) and print where it is
Needs root, iproute2, iptables, /usr/bin/time, ansible-core, puppet, puppet-module-puppetlabs-firewall and -stdlib.`;

const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    'slow-runs': { type: 'string', default: '1' },
    'slow-after': { type: 'string', default: '30' },
    limit: { type: 'string', default: '120' },
    workloads: { type: 'string', default: 'W1,W2,W3' },
    tools: { type: 'string', default: 'ansible,meshvm,puppet' },
    phases: { type: 'string', default: 'empty,first,noop,check' },
    size: { type: 'string', default: '1000' },
    meshvm: { type: 'string', default: 'dist/meshvm' },
    'no-build': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log(USAGE);
  process.exit(0);
}
const positive = (name: string, text: string) => {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: expected a whole number ≥ 1, got ${text}`);
  return n;
};
const RUNS = positive('runs', opts.runs);
const SLOW_RUNS = positive('slow-runs', opts['slow-runs']);
const SLOW_AFTER = Number(opts['slow-after']);
const LIMIT = positive('limit', opts.limit);
const SIZE = positive('size', opts.size);
const MESHVM_BUILT = path.resolve(PROJECT, opts.meshvm);
const DIST = path.join(PROJECT, 'dist');
/** The build is copied into the scratch directory first (a build running meanwhile must not change what is timed). */
let MESHVM = MESHVM_BUILT;
const meshvmArgv = () => (/\.[cm]?[jt]s$/.test(MESHVM) ? [process.execPath, MESHVM] : [MESHVM]);
const list = <T extends string>(name: string, text: string, known: readonly T[]): T[] => {
  const items = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const item of items) if (!known.includes(item as T)) throw new Error(`--${name}: unknown "${item}" (one of ${known.join(', ')})`);
  return known.filter((k) => items.includes(k));
};

type ToolName = 'ansible' | 'meshvm' | 'puppet';
type WorkloadName = 'W1' | 'W2' | 'W3';
type Phase = 'empty' | 'first' | 'noop' | 'check';
const TOOLS = list<ToolName>('tools', opts.tools, ['ansible', 'meshvm', 'puppet']);
const WORKLOADS = list<WorkloadName>('workloads', opts.workloads, ['W1', 'W2', 'W3']);
const PHASES = list<Phase>('phases', opts.phases, ['empty', 'first', 'noop', 'check']);

// ---------------------------------------------------------------- what must be installed

async function has(argv: string[]): Promise<boolean> {
  return (await $({ nothrow: true })`${argv}`.catch(() => ({ exitCode: 1 }))).exitCode === 0;
}

async function checkPrerequisites(): Promise<void> {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('run it as root: it creates network namespaces and sets owners');
  for (const [argv, what] of [
    [['ip', '-V'], 'iproute2 (ip netns)'],
    [['iptables', '--version'], 'iptables'],
    [['/usr/bin/time', '-f', '%M', 'true'], '/usr/bin/time (Debian package time)'],
  ] as const) {
    if (!(await has([...argv]))) problems.push(`missing ${what}`);
  }
  const peers: string[] = [];
  if (TOOLS.includes('ansible') && !(await has(['ansible-playbook', '--version']))) peers.push('ansible-core');
  if (TOOLS.includes('puppet')) {
    if (!(await has(['puppet', '--version']))) peers.push('puppet');
    for (const [dir, pkg] of [
      ['firewall', 'puppet-module-puppetlabs-firewall'],
      ['stdlib', 'puppet-module-puppetlabs-stdlib'],
    ]) {
      if (!(await fs.stat(`/usr/share/puppet/modules/${dir}`).catch(() => undefined))) peers.push(pkg!);
    }
    // puppetlabs-firewall saves the rules after every change with `service netfilter-persistent save`: that would write
    // the namespace's rules over the host's /etc/iptables/rules.v4
    for (const file of ['/usr/sbin/netfilter-persistent', '/etc/init.d/netfilter-persistent', '/etc/init.d/iptables-persistent']) {
      if (await fs.stat(file).catch(() => undefined)) {
        problems.push(
          `${file} exists: puppetlabs-firewall would save the benchmark's rules into the host's /etc/iptables; run the Puppet cells on a machine without netfilter-persistent (or leave Puppet out: --tools ansible,meshvm)`,
        );
      }
    }
  }
  if (peers.length) {
    problems.push(
      `missing ${peers.join(', ')}; install the peers from Debian with:\n    apt-get update && apt-get install -y --no-install-recommends ansible-core puppet puppet-module-puppetlabs-firewall puppet-module-puppetlabs-stdlib time`,
    );
  }
  if (problems.length) {
    console.error(`bench:peers cannot run:\n  ${problems.join('\n  ')}`);
    process.exit(1);
  }
}

// ---------------------------------------------------------------- scratch roots and namespaces

const TAG = randomBytes(4).toString('hex');
let work = '';
const namespaces = new Set<string>();
let running: ChildProcess | undefined;
let stopping = false;

/** Foreign rules of the kind a VM already has (Docker's), put into every fresh namespace before a tool converges it. */
const FOREIGN_RULES = [
  ['-t', 'nat', '-N', 'DOCKER'],
  ['-t', 'nat', '-A', 'PREROUTING', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER'],
  ['-t', 'nat', '-A', 'POSTROUTING', '-s', '172.17.0.0/16', '!', '-o', 'docker0', '-j', 'MASQUERADE'],
  ['-t', 'nat', '-A', 'DOCKER', '-i', 'docker0', '-j', 'RETURN'],
];
const HOSTS = '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n';

interface Lab {
  tool: ToolName;
  workload: WorkloadName | 'empty';
  /** The scratch root the tool converges. */
  root: string;
  ns: string;
  /** The tool's own state (Puppet's vardir and confdir, Ansible's home and temporary files), new with each clean machine. */
  state: string;
}

async function freshNamespace(ns: string): Promise<void> {
  if (namespaces.has(ns)) await $`ip netns del ${ns}`;
  namespaces.delete(ns);
  await $`ip netns add ${ns}`;
  namespaces.add(ns);
  await $`ip netns exec ${ns} ip link set lo up`;
  for (const rule of FOREIGN_RULES) await $`ip netns exec ${ns} iptables -w ${rule}`;
}

/** A clean machine for one tool and workload: an empty root holding only /etc/hosts, a namespace holding only foreign rules. */
async function reset(lab: Lab): Promise<void> {
  await fs.rm(lab.root, { recursive: true, force: true });
  await fs.rm(lab.state, { recursive: true, force: true });
  await fs.mkdir(path.join(lab.state, 'tmp'), { recursive: true, mode: 0o700 });
  await fs.mkdir(path.join(lab.root, 'etc'), { recursive: true, mode: 0o755 });
  await fs.writeFile(path.join(lab.root, 'etc/hosts'), HOSTS, { mode: 0o644 });
  await freshNamespace(lab.ns);
}

const groupAlive = (pgid: number) => {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Stops a run's whole process group (a tool may outlive GNU time, which exits on SIGTERM at once) and waits until it is gone. */
async function stopGroup(pgid: number): Promise<void> {
  for (const [signal, wait] of [
    ['SIGTERM', 5_000],
    ['SIGKILL', 5_000],
  ] as const) {
    if (!groupAlive(pgid)) return;
    try {
      process.kill(-pgid, signal);
    } catch {}
    for (let waited = 0; waited < wait && groupAlive(pgid); waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function cleanup(): Promise<void> {
  if (running?.pid) await stopGroup(running.pid);
  for (const ns of namespaces) await $({ nothrow: true })`ip netns del ${ns}`;
  namespaces.clear();
  if (work && !opts.keep) await fs.rm(work, { recursive: true, force: true });
}

// ---------------------------------------------------------------- the three tools

interface Outcome {
  exitCode: number;
  log: string;
  /** Stopped at --limit. */
  stopped: boolean;
}

interface Tool {
  name: ToolName;
  label: string;
  /** argv of one run (run inside the lab's namespace), and its environment. */
  command(lab: Lab, phase: Phase): { argv: string[]; env: NodeJS.ProcessEnv };
  /** What the run reported: 'changed', 'unchanged', or a reason it failed. */
  verdict(lab: Lab, phase: Phase, outcome: Outcome): Promise<'changed' | 'unchanged' | { failed: string }>;
}

const lastLines = (log: string, n = 15) => log.trimEnd().split('\n').slice(-n).join('\n');

const meshvm: Tool = {
  name: 'meshvm',
  label: 'meshvm',
  command(lab, phase) {
    const runlist = path.join(HERE, 'meshvm', `${lab.workload === 'empty' ? 'empty' : lab.workload.toLowerCase()}.yaml`);
    const sets = lab.workload === 'W2' || lab.workload === 'W3' ? ['--set', `count=${SIZE}`] : [];
    const mode = phase === 'check' ? ['plan', runlist, '--detailed-exitcode'] : ['converge', runlist];
    return { argv: [...meshvmArgv(), ...mode, '--root', lab.root, ...sets], env: { ...process.env, NO_COLOR: '1' } };
  },
  async verdict(lab, phase, { exitCode, log }) {
    if (phase === 'check') return exitCode === 0 ? 'unchanged' : exitCode === 2 ? 'changed' : { failed: `plan exited ${exitCode}:\n${lastLines(log)}` };
    if (exitCode !== 0) return { failed: `converge exited ${exitCode}:\n${lastLines(log)}` };
    const report = JSON.parse(await fs.readFile(path.join(lab.root, 'var/lib/meshvm/last-run.json'), 'utf8')) as { summary: { changed: number } };
    return report.summary.changed > 0 ? 'changed' : 'unchanged';
  },
};

const ansible: Tool = {
  name: 'ansible',
  label: 'Ansible',
  command(lab, phase) {
    const home = lab.state;
    const playbook = path.join(HERE, 'ansible', `${lab.workload === 'empty' ? 'empty' : lab.workload.toLowerCase()}.yml`);
    const argv = ['ansible-playbook', '-i', 'localhost,', '-c', 'local', '-e', `root=${lab.root}`, '-e', `count=${SIZE}`, playbook];
    if (phase === 'check') argv.push('--check');
    const env = {
      ...process.env,
      HOME: home,
      ANSIBLE_CONFIG: path.join(HERE, 'ansible/ansible.cfg'),
      ANSIBLE_HOME: home,
      ANSIBLE_LOCAL_TEMP: path.join(home, 'tmp'),
      ANSIBLE_REMOTE_TEMP: path.join(home, 'remote-tmp'),
    };
    return { argv, env };
  },
  async verdict(_lab, phase, { exitCode, log }) {
    // a play without tasks prints no recap line for the host
    if (phase === 'empty' && exitCode === 0) return 'unchanged';
    const recap = /^localhost\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)/m.exec(log);
    if (exitCode !== 0 || !recap || recap[2] !== '0' || recap[3] !== '0') return { failed: `ansible-playbook exited ${exitCode}:\n${lastLines(log)}` };
    return recap[1] === '0' ? 'unchanged' : 'changed';
  },
};

const puppet: Tool = {
  name: 'puppet',
  label: 'Puppet',
  command(lab, phase) {
    const state = lab.state;
    const manifest = path.join(HERE, 'puppet', `${lab.workload === 'empty' ? 'empty' : lab.workload.toLowerCase()}.pp`);
    const dirs = ['confdir', 'vardir', 'codedir', 'logdir', 'rundir', 'publicdir'].flatMap((d) => [`--${d}`, path.join(state, d)]);
    const argv = ['puppet', 'apply', '--detailed-exitcodes', '--color=false', ...dirs, '--modulepath', '/usr/share/puppet/modules', manifest];
    if (phase === 'check') argv.splice(2, 0, '--noop');
    const env = { ...process.env, HOME: state, FACTER_peers_root: lab.root, FACTER_peers_count: String(SIZE), FACTER_peers_certs: CERTS };
    return { argv, env };
  },
  async verdict(_lab, phase, { exitCode, log }) {
    // --detailed-exitcodes: 0 nothing changed, 2 changes, 4 failures, 6 both; --noop reports pending changes as 0 or 2
    if (exitCode !== 0 && exitCode !== 2) return { failed: `puppet apply exited ${exitCode}:\n${lastLines(log)}` };
    if (phase === 'check') return /current_value .*, should be|\(noop\)/.test(log) ? 'changed' : 'unchanged';
    return exitCode === 2 ? 'changed' : 'unchanged';
  },
};

const TOOL_BY_NAME: Record<ToolName, Tool> = { ansible, meshvm, puppet };

/**
 * After a first converge stopped at --limit, the harness writes the converged state itself, as the tool would have left it,
 * so that the no-op and check phases can still be timed (their verdicts then check the tool finds nothing to do). W2: the
 * files. W3: the rules in the tool's own spelling (Ansible's as given; Puppet's with its names as comments and multiport),
 * restored in one go. False when there is no such shortcut (W1).
 */
async function completeState(lab: Lab): Promise<boolean> {
  if (lab.workload === 'W2') {
    const dir = path.join(lab.root, 'srv/files');
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    await fs.chmod(path.join(lab.root, 'srv'), 0o755);
    await fs.chmod(dir, 0o755);
    for (let i = 0; i < SIZE; i++) {
      const file = path.join(dir, `f${String(i).padStart(4, '0')}.conf`);
      await fs.writeFile(file, `key=${i}\nvalue=${'x'.repeat(40)}\n`);
      await fs.chmod(file, 0o644);
    }
    return true;
  }
  if (lab.workload !== 'W3' || lab.tool === 'meshvm') return false;
  const puppetSpelling = lab.tool === 'puppet';
  const rules = Array.from({ length: SIZE }, (_, i) => {
    const port = puppetSpelling
      ? `-m multiport --dports ${10000 + i} -m comment --comment "${String(i).padStart(5, '0')} MESHVM_W3 rule"`
      : `-m tcp --dport ${10000 + i}`;
    return `-A MESHVM_W3 -d 10.${i >> 8}.${i & 255}.1/32 -p tcp ${port} -j REDIRECT --to-ports 15001`;
  });
  const jump = puppetSpelling ? '-p tcp -m comment --comment "000 jump to MESHVM_W3" -j MESHVM_W3' : '-p tcp -j MESHVM_W3';
  const saved = (await $`ip netns exec ${lab.ns} iptables-save -t nat`).stdout;
  const text = ['*nat', ':MESHVM_W3 - [0:0]', ...rules, ...(saved.includes(`-A OUTPUT ${jump}`) ? [] : [`-I OUTPUT 1 ${jump}`]), 'COMMIT', ''].join('\n');
  await $({ input: text })`ip netns exec ${lab.ns} iptables-restore --noflush`;
  return true;
}

/** How far a stopped run got. */
async function progress(lab: Lab, phase: Phase, log: string): Promise<string> {
  if (phase === 'first' && lab.workload === 'W2') {
    const files = await fs.readdir(path.join(lab.root, 'srv/files')).catch(() => []);
    return `${files.filter((f) => f.endsWith('.conf')).length} of ${SIZE} files`;
  }
  if (phase === 'first' && lab.workload === 'W3')
    return `${(await snapshotTables(lab.ns)).filter((l) => l.startsWith('-A MESHVM_W3 ')).length} of ${SIZE} rules`;
  // Ansible prints a line per loop item as it goes
  const items = log.match(/^(ok|changed): \[localhost\] => \(item=/gm)?.length;
  return items ? `${items} of ${SIZE} items` : 'unfinished';
}

// ---------------------------------------------------------------- one timed run

interface Sample {
  seconds: number;
  /** GNU time's %M: the peak resident set of the largest single process of the run. */
  rssMiB: number;
  /** The most the whole process tree held at once: PSS summed over its processes, sampled every SAMPLE_MS (at least rssMiB). */
  treeMiB: number;
  load: number;
}

const SAMPLE_MS = 50;

/** PSS (KiB) of every process in the process group `pgid`; only pids from `pgid` up are read (new processes get higher pids). */
function groupPss(pgid: number): number {
  let total = 0;
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!(pid >= pgid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]) !== pgid) continue;
      total += Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
    } catch {
      // the process ended meanwhile
    }
  }
  return total;
}

async function timed(tool: Tool, lab: Lab, phase: Phase): Promise<{ sample: Sample; outcome: Outcome }> {
  const { argv, env } = tool.command(lab, phase);
  const logFile = path.join(work, 'logs', `${lab.workload}-${phase}-${tool.name}.log`);
  const timeFile = path.join(work, 'logs', 'time');
  const fd = openSync(logFile, 'w');
  let treeKiB = 0;
  let sampler: NodeJS.Timeout | undefined;
  let limiter: NodeJS.Timeout | undefined;
  let stopped = false;
  const started = performance.now();
  const exitCode = await new Promise<number>((resolve, reject) => {
    // GNU time reports the peak RSS (ru_maxrss) of the largest single process it waited for in the tree; detached, the
    // tree is a process group of its own, which the sampler sums up
    const child = spawn('/usr/bin/time', ['-f', '%M', '-o', timeFile, 'ip', 'netns', 'exec', lab.ns, ...argv], {
      env,
      stdio: ['ignore', fd, fd],
      detached: true,
      cwd: work,
    });
    running = child;
    sampler = setInterval(() => (treeKiB = Math.max(treeKiB, groupPss(child.pid!))), SAMPLE_MS);
    limiter = setTimeout(() => {
      stopped = true;
      void stopGroup(child.pid!);
    }, LIMIT * 1000);
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  clearTimeout(limiter);
  // nothing of the run may go on behind the harness's back (a stopped Puppet still writes its report, a rule...)
  if (running?.pid) await stopGroup(running.pid);
  running = undefined;
  closeSync(fd);
  // a stopped time writes "Command terminated by signal 15" before %M, and maybe nothing at all
  const rssKiB = Number(/(\d+)\s*$/.exec(await fs.readFile(timeFile, 'utf8').catch(() => ''))?.[1] ?? 0);
  const log = await fs.readFile(logFile, 'utf8');
  return { sample: { seconds, rssMiB: rssKiB / 1024, treeMiB: Math.max(treeKiB, rssKiB) / 1024, load: os.loadavg()[0]! }, outcome: { exitCode, log, stopped } };
}

// ---------------------------------------------------------------- end states

const STATE_DIRS = ['var/lib/meshvm', 'run'];
/** The parts of a root each workload declares (and the seeded /etc/hosts): meshvm's own state is not compared. */
const COMPARED: Record<WorkloadName, string[]> = { W1: ['etc', 'var'], W2: ['etc', 'srv'], W3: ['etc'] };
const HOSTS_MARKERS = new Set(['# BEGIN meshvm mesh', '# END meshvm mesh']);

async function snapshotRoot(root: string, workload: WorkloadName): Promise<string[]> {
  const lines: string[] = [];
  async function walk(rel: string): Promise<void> {
    const full = path.join(root, rel);
    const st = await fs.lstat(full);
    const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'link' : 'other';
    let what = '';
    if (type === 'file') {
      let content = await fs.readFile(full, 'utf8');
      // Puppet's file_line writes the hosts line without the markers meshvm's block and Ansible's blockinfile put around it
      if (rel === 'etc/hosts')
        content = content
          .split('\n')
          .filter((l) => !HOSTS_MARKERS.has(l))
          .join('\n');
      what = createHash('sha256').update(content).digest('hex').slice(0, 16);
    } else if (type === 'link') what = await fs.readlink(full);
    lines.push(`${rel} ${type} ${(st.mode & 0o7777).toString(8).padStart(4, '0')} ${st.uid}:${st.gid} ${what}`.trimEnd());
    if (type !== 'dir') return;
    for (const name of (await fs.readdir(full)).sort()) {
      const child = rel ? `${rel}/${name}` : name;
      if (STATE_DIRS.includes(child)) continue;
      if (!rel && !COMPARED[workload].includes(name)) continue;
      await walk(child);
    }
  }
  await walk('');
  return lines.slice(1);
}

/** One rule line as the three tools' rules compare: no comments (meshvm's tags, Puppet's names), no counters, Puppet's single-port multiport as tcp. */
export function normaliseRule(line: string): string {
  return line
    .replace(/ -m comment --comment ("(?:[^"\\]|\\.)*"|\S+)/g, '')
    .replace(/ -m multiport --dports (\d+)(?= )/, ' -m tcp --dport $1')
    .replace(/ -m multiport --sports (\d+)(?= )/, ' -m tcp --sport $1');
}

async function snapshotTables(ns: string): Promise<string[]> {
  const out: string[] = [];
  for (const save of ['iptables-nft-save', 'iptables-legacy-save', 'ip6tables-nft-save', 'ip6tables-legacy-save']) {
    const text = (await $({ nothrow: true })`ip netns exec ${ns} ${save}`).stdout;
    let table: string[] = [];
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (!line || line.startsWith('#')) continue;
      if (line.startsWith('*')) table = [`${save} ${line}`];
      else if (line === 'COMMIT') {
        // an empty table (built-in chains, default policies, no rule) is the same as no table
        if (table.some((l) => l.startsWith('-A ') || (l.startsWith(':') && !/ ACCEPT$/.test(l)))) out.push(...table);
      } else table.push(line.startsWith(':') ? line.replace(/ \[\d+:\d+\]$/, '') : normaliseRule(line));
    }
  }
  return out;
}

async function endState(lab: Lab): Promise<{ files: string[]; tables: string[] }> {
  return { files: await snapshotRoot(lab.root, lab.workload as WorkloadName), tables: await snapshotTables(lab.ns) };
}

function difference(a: string[], b: string[]): string {
  const sa = new Set(a);
  const sb = new Set(b);
  const lines = [...a.filter((x) => !sb.has(x)).map((x) => `  - ${x}`), ...b.filter((x) => !sa.has(x)).map((x) => `  + ${x}`)];
  if (!lines.length && a.join('\n') !== b.join('\n')) return '  (the same lines in another order)';
  return lines.slice(0, 20).join('\n');
}

/** Every tool's converge left the same files (content, mode, owner) and the same rules as the first tool's. */
async function verifySame(labs: Lab[], when: string): Promise<void> {
  const states = await Promise.all(labs.map(async (lab) => ({ lab, ...(await endState(lab)) })));
  const [base, ...others] = states;
  for (const other of others) {
    for (const key of ['files', 'tables'] as const) {
      if (base![key].join('\n') !== other[key].join('\n')) {
        throw new Error(
          `${when}: ${other.lab.tool} left other ${key} than ${base!.lab.tool} in ${other.lab.workload} (- ${base!.lab.tool}, + ${other.lab.tool}):\n${difference(base![key], other[key])}`,
        );
      }
    }
  }
  const counts = `${base!.files.length} paths, ${base!.tables.filter((l) => l.startsWith('-A ')).length} rules`;
  const who = labs.map((l) => (completed.has(l) ? `${l.tool} (written by the harness)` : l.tool)).join(', ');
  console.error(`  ✓ ${when}: ${who} left the same end state (${counts})`);
}

// ---------------------------------------------------------------- the schedule

const PHASE_LABEL: Record<Phase, string> = { empty: 'empty run (floor)', first: 'first converge', noop: 'no-op converge', check: 'plan / check mode' };
const WORKLOAD_LABEL = (w: WorkloadName) => ({ W1: 'W1 mesh VM', W2: `W2 ${SIZE.toLocaleString('en')} files`, W3: `W3 ${SIZE.toLocaleString('en')} rules` })[w];
const EXPECT: Record<Phase, 'changed' | 'unchanged'> = { empty: 'unchanged', first: 'changed', noop: 'unchanged', check: 'unchanged' };

interface Cell {
  caseLabel: string;
  tool: Tool;
  samples: Sample[];
  /** Cut to --slow-runs after a first run longer than --slow-after. */
  slow: boolean;
  /** Its first run was stopped at --limit: what it had done by then. */
  stopped?: { sample: Sample; done: string };
}
const cells: Cell[] = [];
/** Labs whose tool was stopped before it converged them: left out of later phases and comparisons. */
const unfinished = new Set<Lab>();
/** Labs whose converged state the harness wrote after their tool was stopped. */
const completed = new Set<Lab>();

function labFor(tool: ToolName, workload: WorkloadName | 'empty'): Lab {
  const name = `${workload}-${tool}`;
  return {
    tool,
    workload,
    root: path.join(work, 'roots', name),
    state: path.join(work, 'state', name),
    ns: `meshvm-peers-${TAG}-${workload.toLowerCase()}-${tool}`,
  };
}

/** Runs one phase: round r runs each tool in turn (A, M, P, A, M, P, ...), each as many rounds as its cell is given. */
async function phase(workload: WorkloadName | 'empty', ph: Phase, labs: Lab[], afterFirstRound?: () => Promise<void>): Promise<void> {
  const caseLabel = workload === 'empty' ? PHASE_LABEL.empty : `${WORKLOAD_LABEL(workload)}: ${PHASE_LABEL[ph]}`;
  const mine = labs.map((lab) => {
    const cell: Cell = { caseLabel, tool: TOOL_BY_NAME[lab.tool], samples: [], slow: false };
    cells.push(cell);
    return { lab, cell };
  });
  for (let round = 0; round < RUNS; round++) {
    for (const { lab, cell } of mine) {
      if (cell.stopped || round >= (cell.slow ? SLOW_RUNS : RUNS) || unfinished.has(lab)) continue;
      if (ph === 'first') await reset(lab);
      const { sample, outcome } = await timed(cell.tool, lab, ph);
      if (outcome.stopped) {
        const done = await progress(lab, ph, outcome.log);
        cell.stopped = { sample, done };
        console.error(`  ${caseLabel.padEnd(38)} ${cell.tool.label.padEnd(8)} stopped after ${LIMIT} s (${done})`);
        if (ph === 'first') {
          if (await completeState(lab)) {
            completed.add(lab);
            console.error(`  ${cell.tool.label}'s ${lab.workload} state written by the harness instead, for the phases that follow`);
          } else {
            unfinished.add(lab);
            console.error(`  ${cell.tool.label} leaves ${lab.workload} here`);
          }
        }
        continue;
      }
      const verdict = await cell.tool.verdict(lab, ph, outcome);
      if (typeof verdict === 'object') throw new Error(`${caseLabel}, ${cell.tool.label}: ${verdict.failed}`);
      if (verdict !== EXPECT[ph])
        throw new Error(`${caseLabel}, ${cell.tool.label}: expected ${EXPECT[ph]}, the run reported ${verdict}:\n${lastLines(outcome.log)}`);
      cell.samples.push(sample);
      if (round === 0 && sample.seconds > SLOW_AFTER) cell.slow = true;
      const limit = cell.slow ? SLOW_RUNS : RUNS;
      console.error(
        `  ${caseLabel.padEnd(38)} ${cell.tool.label.padEnd(8)} ${round + 1}/${limit}  ${sample.seconds.toFixed(3).padStart(8)} s  ${sample.rssMiB.toFixed(0).padStart(4)} MiB  tree ${sample.treeMiB.toFixed(0).padStart(4)} MiB  load ${sample.load.toFixed(2)}`,
      );
    }
    if (round === 0) await afterFirstRound?.();
  }
}

// ---------------------------------------------------------------- report

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length / 2;
  return { min: s[0]!, median: s.length % 2 ? s[Math.floor(mid)]! : (s[mid - 1]! + s[mid]!) / 2, max: s.at(-1)! };
};
const ratio = (x: number, base: number) => (x / base >= 10 ? `${(x / base).toFixed(0)}×` : `${(x / base).toFixed(1)}×`);

function tables(versions: Record<ToolName, string>): string {
  const out: string[] = [];
  out.push('| case | tool | runs | min s | median s | max s | median ÷ meshvm | peak RSS MiB | tree MiB |');
  out.push('|---|---|---|---|---|---|---|---|---|');
  const byCase = new Map<string, Cell[]>();
  for (const cell of cells) if (cell.samples.length || cell.stopped) byCase.set(cell.caseLabel, [...(byCase.get(cell.caseLabel) ?? []), cell]);
  for (const [label, group] of byCase) {
    const base = group.find((c) => c.tool.name === 'meshvm');
    const baseMedian = base?.samples.length ? stats(base.samples.map((s) => s.seconds)).median : undefined;
    for (const tool of ['meshvm', 'ansible', 'puppet'] as const) {
      const cell = group.find((c) => c.tool.name === tool);
      if (!cell) continue;
      if (cell.stopped) {
        const { sample, done } = cell.stopped;
        const vs = tool === 'meshvm' || !baseMedian ? '' : `> ${ratio(LIMIT, baseMedian)}`;
        out.push(
          `| ${label} | ${versions[tool]} | stopped | > ${LIMIT} (${done}) | | | ${vs} | ${sample.rssMiB ? sample.rssMiB.toFixed(0) : '–'} | ${sample.treeMiB.toFixed(0)} |`,
        );
        continue;
      }
      const t = stats(cell.samples.map((s) => s.seconds));
      const rss = Math.max(...cell.samples.map((s) => s.rssMiB));
      const tree = Math.max(...cell.samples.map((s) => s.treeMiB));
      const vs = tool === 'meshvm' || !baseMedian ? '' : ratio(t.median, baseMedian);
      out.push(
        `| ${label} | ${versions[tool]} | ${cell.samples.length}${cell.slow && cell.samples.length < RUNS ? '*' : ''} | ${t.min.toFixed(3)} | ${t.median.toFixed(3)} | ${t.max.toFixed(3)} | ${vs} | ${rss.toFixed(0)} | ${tree.toFixed(0)} |`,
      );
    }
  }
  return out.join('\n');
}

// ---------------------------------------------------------------- main

await checkPrerequisites();
const versions: Record<ToolName, string> = {
  meshvm: 'meshvm',
  ansible: TOOLS.includes('ansible') ? `Ansible ${/core ([\d.]+)/.exec((await $`ansible-playbook --version`).stdout)?.[1] ?? '?'}` : 'Ansible',
  puppet: TOOLS.includes('puppet') ? `Puppet ${(await $`puppet --version`).stdout.trim()}` : 'Puppet',
};
if (!opts['no-build']) await $({ cwd: PROJECT })`npm run -s build`;
await fs.access(MESHVM_BUILT).catch(() => {
  throw new Error(`${MESHVM_BUILT} is missing: run npm run build (or leave out --no-build)`);
});

work = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-peers-'));
if (MESHVM_BUILT.startsWith(DIST + path.sep)) {
  const copy = path.join(work, 'dist');
  // the bundle and its chunks; an executable only when it is what is timed
  await fs.cp(DIST, copy, {
    recursive: true,
    filter: (src) => src === DIST || src === MESHVM_BUILT || /\.m?js$/.test(src) || src === path.join(DIST, 'chunks'),
  });
  MESHVM = path.join(copy, path.relative(DIST, MESHVM_BUILT));
}
// The executable's pages out of the page cache (GNU dd's nocache: posix_fadvise DONTNEED), as after a reboot: pages of a
// file just written (the build, the copy) are cached in large folios, and mapping them counted up to 17 MiB more peak
// RSS for the same run (the same executable measured 56 MiB running an empty script, 39 MiB once evicted)
if (meshvmArgv().length === 1) await $`dd if=${MESHVM} iflag=nocache count=0 status=none`;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    stopping = true;
    console.error(`\n${sig}: stopping the run in flight, deleting the namespaces${opts.keep ? '' : ' and the scratch directory'}`);
    void cleanup().finally(() => process.exit(130));
  });
}
await fs.mkdir(path.join(work, 'logs'), { recursive: true });

const firewallVersion = TOOLS.includes('puppet')
  ? (JSON.parse(await fs.readFile('/usr/share/puppet/modules/firewall/metadata.json', 'utf8')) as { version: string }).version
  : '';
const iptablesVersion = (await $`iptables --version`).stdout.trim();
const head = (await $({ cwd: PROJECT, nothrow: true })`git rev-parse --short HEAD`).stdout.trim();
const dirty = (await $({ cwd: PROJECT, nothrow: true })`git status --porcelain --untracked-files=no`).stdout.trim() !== '';
const startedAt = Date.now();
const loadBefore = os.loadavg();
const header = [
  `${
    TOOLS.length === 1
      ? versions[TOOLS[0]!]
      : `meshvm vs ${TOOLS.filter((t) => t !== 'meshvm')
          .map((t) => versions[t])
          .join(' and ')}`
  }: ${RUNS} runs per cell (${SLOW_RUNS} for a cell whose first run took over ${SLOW_AFTER} s), interleaved ${TOOLS.map((t) => versions[t].split(' ')[0]).join(', ')}`,
  `meshvm ${head || '?'}${dirty ? ' with uncommitted changes' : ''}: ${meshvmArgv().length > 1 ? `Node ${process.version} running ` : ''}${path.relative(PROJECT, MESHVM_BUILT)}${firewallVersion ? `, puppetlabs-firewall ${firewallVersion}` : ''}, ${iptablesVersion}, Linux ${os.release()}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'})`,
];
console.error(header.join('\n'));
console.error(`scratch directory ${work}; namespaces meshvm-peers-${TAG}-*\n`);

try {
  if (PHASES.includes('empty')) {
    const labs = TOOLS.map((t) => labFor(t, 'empty'));
    for (const lab of labs) {
      await reset(lab);
      await timed(TOOL_BY_NAME[lab.tool], lab, 'empty'); // warm-up: page cache, bytecode and compile caches
    }
    await phase('empty', 'empty', labs);
  }
  for (const workload of WORKLOADS) {
    const labs = TOOLS.map((t) => labFor(t, workload));
    const verify = (when: string) =>
      verifySame(
        labs.filter((lab) => !unfinished.has(lab)),
        `${workload} ${when}`,
      );
    // first converge from a clean root and namespace; the end states are compared after the first round, before any further timing
    if (PHASES.includes('first')) await phase(workload, 'first', labs, () => verify('after the first converge'));
    else {
      for (const lab of labs) {
        await reset(lab);
        const { outcome } = await timed(TOOL_BY_NAME[lab.tool], lab, 'first');
        if (outcome.stopped) {
          if (await completeState(lab)) completed.add(lab);
          else unfinished.add(lab);
          continue;
        }
        const verdict = await TOOL_BY_NAME[lab.tool].verdict(lab, 'first', outcome);
        if (typeof verdict === 'object') throw new Error(`${workload} untimed converge, ${lab.tool}: ${verdict.failed}`);
      }
      await verify('after an untimed first converge');
    }
    if (PHASES.includes('noop')) await phase(workload, 'noop', labs);
    if (PHASES.includes('check')) await phase(workload, 'check', labs);
    await verify('after every phase');
  }
} catch (error) {
  if (stopping) await new Promise(() => {}); // the signal handler cleans up and exits
  console.error(`\nbench:peers failed: ${error instanceof Error ? error.message : String(error)}`);
  await cleanup();
  process.exit(1);
}

const minutes = (Date.now() - startedAt) / 60_000;
const loads = cells.flatMap((c) => c.samples.map((s) => s.load));
const load = loads.length ? stats(loads) : { min: 0, median: 0, max: 0 };
const command = `node bench/peers/run.ts${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(' ')}` : ''}`;
console.log(`\n${header.join('\n')}`);
console.log(
  `${minutes.toFixed(1)} minutes; 1-minute load average ${loadBefore[0]!.toFixed(2)} at the start, ${load.min.toFixed(2)} / ${load.median.toFixed(2)} / ${load.max.toFixed(2)} (min / median / max) after each run.`,
);
console.log(`Command: \`${command}\` (as root, from the repository).\n`);
console.log(tables(versions));
console.log(`\nWall time: from spawn to exit of \`/usr/bin/time ip netns exec NS <tool> ...\`, the same wrapper for all three.`);
console.log(
  `Peak RSS: GNU time's %M, the largest resident set of any single process of the run. Tree: the most the whole process tree held at once, PSS summed over its processes every ${SAMPLE_MS} ms (never less than the peak RSS; a peak between two samples is missed). Both the maximum over the runs.`,
);
if (cells.some((c) => c.slow && c.samples.length < RUNS))
  console.log(`* fewer runs: the cell's first run took over ${SLOW_AFTER} s (--slow-runs ${SLOW_RUNS}).`);
await cleanup();
if (opts.keep) console.error(`kept ${work}`);
