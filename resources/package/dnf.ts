// Package's dnf/rpm backend: rpm's view of a package, dnf install/remove (--installroot under --root) with dnf's lock waited for, an .rpm's metadata checked before install.
import type { Host, HostReader } from '../../engine/host.ts';
import type { PrepareContext } from '../../engine/resource.ts';
import { CommandError, errorMessage } from '../../engine/errors.ts';
import { INSTALLED_PACKAGES_DIR, STATE_DIR } from '../../engine/state-paths.ts';
import type { PackageSpec, PackageState } from '../package.ts';
import { cachedCopy, cachedFile, checkLocalFile, downloadToCache, fetchFile, markInstalled, markOf } from './artifact.ts';
import type { PackageBackend } from './detect.ts';
import { serviceRun, stillRuns } from './service-run.ts';

type Dnf = Extract<PackageBackend, { kind: 'dnf' }>;

export interface RpmPackage {
  name: string;
  /** '' when the package has none */
  epoch: string;
  version: string;
  release: string;
  arch: string;
}

/** One line per package: what rpm -q and rpm -qp print with it (`rpm -q` says "package x is not installed" otherwise). */
export const RPM_QUERYFORMAT = '%{NAME}\\t%{EPOCH}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\n';

/** `rpm -q --queryformat RPM_QUERYFORMAT` output as packages; other lines ("package x is not installed") left out (pure). */
export function parseRpmQuery(text: string): RpmPackage[] {
  const out: RpmPackage[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split('\t');
    if (fields.length !== 5 || !fields[0]) continue;
    const [name, epoch, version, release, arch] = fields as [string, string, string, string, string];
    out.push({ name, epoch: epoch === '(none)' ? '' : epoch, version, release, arch: arch.trim() });
  }
  return out;
}

/** A package's version the way rpm and dnf spell it: [epoch:]version-release (an epoch of 0 left out) (pure). */
export function rpmVersion(p: Pick<RpmPackage, 'epoch' | 'version' | 'release'>): string {
  return `${p.epoch && p.epoch !== '0' ? `${p.epoch}:` : ''}${p.version}-${p.release}`;
}

/** Whether an installed version is the one pinned: version-release exactly, or a pin of the version alone (any release) (pure). */
export function rpmVersionMatches(pin: string, installed: string): boolean {
  if (pin === installed) return true;
  const withoutEpoch = (v: string) => v.replace(/^0:/, '');
  if (withoutEpoch(pin) === withoutEpoch(installed)) return true;
  return !pin.includes('-') && withoutEpoch(installed).startsWith(`${withoutEpoch(pin)}-`);
}

/** What dnf said went wrong: its "Error:"/"error:" lines and the problem lines they list, else the last lines (pure). */
export function dnfErrors(output: string): string {
  const lines = output.split(/\r?\n/);
  const picked = lines.filter(
    (line) => /^\s*(Error|error|Problem|- |No match for argument|Failed|The application with PID)/.test(line) || / already locked by \d+/.test(line),
  );
  return (picked.length ? picked : lines.filter(Boolean).slice(-8)).join('\n');
}

/** dnf's exit status when it found its lock held and was told (exit_on_lock) not to wait itself. */
const DNF_LOCKED = 200;
const RPM_HOME = `${STATE_DIR}/rpm`;
/** What dnf prints when a scriptlet of an install failed and it went on (a failed %post leaves the package installed). */
const SCRIPTLET_FAILED = /^Error in \w+ scriptlet in rpm package /m;

export async function dnfCurrent(host: HostReader, backend: Dnf, spec: PackageSpec): Promise<PackageState> {
  const found = await rpmStatus(host, backend, spec.name);
  const mark = spec.rpm ? (await host.readFile(markOf(spec.name)))?.trim() : undefined;
  return { installed: found !== undefined, version: found && rpmVersion(found), deb: undefined, rpm: mark, backend: 'dnf' };
}

/** Preflight: the .rpm this run will install, checked (name, version, arch) before anything is installed; from a repository, a line saying dnf resolves it at converge. */
export async function dnfPrepare(host: Host, backend: Dnf, spec: PackageSpec, context: PrepareContext): Promise<string> {
  if (!spec.rpm) return dnfHas(backend, spec);
  const rpm = spec.rpm;
  if ('path' in rpm) {
    await checkLocalFile(host, 'rpm', rpm.path, rpm.sha256);
    return `${rpm.path}: ${rpm.sha256 ? 'the sha256 required' : 'no sha256 given to check'}, ${await checkRpmFile(host, spec, rpm.path)}`;
  }
  const cached = cachedFile('rpm', spec.name, rpm.sha256);
  if (await cachedCopy(host, 'rpm', spec.name, rpm.sha256)) return `${cached} (cached): the sha256 required, ${await checkRpmFile(host, spec, cached)}`;
  if (context.mode === 'plan') {
    const got = await host.hashDownload(rpm.url, { sha256: rpm.sha256, caFile: rpm.caFile });
    return `${rpm.url}: ${got.bytes} bytes with the sha256 required (not kept in plan: its name, version and arch are read when converge downloads it)`;
  }
  const got = await downloadToCache(host, 'rpm', spec.name, rpm, context);
  return `${rpm.url}: ${got.bytes} bytes with the sha256 required, ${await checkRpmFile(host, spec, cached, rpm.url)}, in ${cached}`;
}

export async function dnfApply(host: Host, backend: Dnf, spec: PackageSpec, current: PackageState | undefined): Promise<void> {
  if (spec.ensure === 'absent') {
    await dnf(host, backend, spec, ['remove', spec.name]);
    return;
  }
  if (spec.rpm) {
    const file = await fetchFile(host, 'rpm', spec.name, spec.rpm);
    // checked again here: apply runs without a preflight too (runResources), and nothing is installed from a file that is another package
    await checkRpmFile(host, spec, file);
    await installOrPutBack(host, backend, spec, host.realPath(file), current);
    await markInstalled(host, spec.name, spec.rpm.sha256);
    return;
  }
  await installOrPutBack(host, backend, spec, spec.version ? `${spec.name}-${spec.version}` : spec.name, current);
  if (!current?.installed) {
    if (!(await host.stat(INSTALLED_PACKAGES_DIR))) await host.mkdir(INSTALLED_PACKAGES_DIR, { mode: 0o755, parents: true });
    await host.writeFile(`${INSTALLED_PACKAGES_DIR}/${spec.name}`, '', { mode: 0o644, backup: false });
  }
}

/** rpm's options for the root's database: none on the running system; under --root, the root and its database path. */
const rpmRoot = (host: HostReader, backend: Dnf) => (host.live ? [] : ['--root', host.root, '--dbpath', backend.dbpath]);

/** The package as rpm has it now (the last one listed where several are installed), or undefined. */
async function rpmStatus(host: HostReader, backend: Dnf, name: string): Promise<RpmPackage | undefined> {
  const result = await host.query(['rpm', ...rpmRoot(host, backend), '-q', '--queryformat', RPM_QUERYFORMAT, name]);
  return parseRpmQuery(result.stdout)
    .filter((p) => p.name === name)
    .at(-1);
}

/** The .rpm is the package the spec names, of the version pinned and an arch this machine runs (else it would never converge); says which. */
async function checkRpmFile(host: HostReader, spec: PackageSpec, file: string, label = file): Promise<string> {
  const result = await host.query(['rpm', '-qp', '--nosignature', '--nodigest', '--queryformat', RPM_QUERYFORMAT, host.realPath(file)]);
  const [found] = parseRpmQuery(result.stdout);
  if (result.exitCode !== 0 || !found)
    throw new Error(`${label} is not an .rpm rpm can read (${result.stderr.trim().split('\n')[0] || `exit ${result.exitCode}`})`);
  const version = rpmVersion(found);
  if (found.name !== spec.name)
    throw new Error(`${label} is the package ${found.name}, not ${spec.name}; installing it would leave ${spec.name} missing on every run`);
  if (spec.version && !rpmVersionMatches(spec.version, version)) throw new Error(`${label} is ${spec.name} ${version}, not the version ${spec.version} pinned`);
  const arches = spec.arch ? [spec.arch] : ['noarch', (await host.query(['uname', '-m'])).stdout.trim()];
  if (!arches.includes(found.arch))
    throw new Error(
      `${label} is ${spec.name} ${version} for ${found.arch}, not ${spec.arch ? `the arch ${spec.arch} asked` : `this machine's ${arches[1]} (or noarch)`}`,
    );
  return `package ${spec.name} ${version} ${found.arch}`;
}

/** Preflight of a dnf install from the repositories: not looked up (dnf writes its logs and cache even to read, and plan writes nothing). */
function dnfHas(backend: Dnf, spec: PackageSpec): string {
  const target = spec.version ? `${spec.name}-${spec.version}` : spec.name;
  return `${backend.tool} installs ${target} from its repositories at converge (not looked up in preflight, which writes nothing)`;
}

/** dnf (or yum) with its lock not waited for by itself, no weak dependencies, and --installroot under --root. */
const dnfBase = (host: HostReader, backend: Dnf) => [
  backend.tool,
  '-y',
  '--setopt=exit_on_lock=True',
  '--setopt=install_weak_deps=False',
  ...(host.live ? [] : [`--installroot=${host.root}`]),
];

/**
 * dnf under --root reads rpm's database where this machine's rpm macros say (Debian's rpm: ~/.rpmdb); when that is not
 * where the root keeps it, a ~/.rpmmacros in meshvm's state directory of the root says where (HOME pointed there).
 */
async function rpmEnv(host: HostReader, backend: Dnf): Promise<Record<string, string>> {
  if (host.live) return {};
  const hostDbpath = await host.memo('rpm-dbpath', async () => (await host.query(['rpm', '--eval', '%{_dbpath}'])).stdout.trim());
  return hostDbpath === backend.dbpath ? {} : { HOME: host.realPath(RPM_HOME) };
}

async function writeRpmMacros(host: Host, backend: Dnf): Promise<Record<string, string>> {
  const env = await rpmEnv(host, backend);
  if (!env.HOME) return env;
  const content = `# meshvm: dnf --installroot on this machine reads the root's rpm database here\n%_dbpath ${backend.dbpath}\n`;
  if ((await host.readFile(`${RPM_HOME}/.rpmmacros`)) !== content) {
    if (!(await host.stat(RPM_HOME))) await host.mkdir(RPM_HOME, { mode: 0o755, parents: true });
    await host.writeFile(`${RPM_HOME}/.rpmmacros`, content, { mode: 0o644, backup: false });
  }
  return env;
}

/**
 * Runs dnf; while another dnf holds its lock, tries again every 2 s for up to lockWaitSeconds (as apt waits for the dpkg
 * lock). A package its cached metadata does not have yet is asked for again once with the metadata refreshed.
 */
async function dnf(host: Host, backend: Dnf, spec: PackageSpec, args: string[]): Promise<void> {
  let argv = [...dnfBase(host, backend), ...args];
  const env = await writeRpmMacros(host, backend);
  const deadline = Date.now() + spec.lockWaitSeconds * 1000;
  for (;;) {
    const result = await host.run(argv, { env, allowFailure: true });
    const said = dnfErrors(`${result.stdout}\n${result.stderr}`);
    if (result.exitCode === 0) {
      // rpm keeps a package whose %post failed installed, and dnf calls that complete; dpkg would not, nor does meshvm
      if (args[0] === 'install' && SCRIPTLET_FAILED.test(result.stdout + result.stderr))
        throw new Error(
          `\`${argv.join(' ')}\` installed it, but a scriptlet of the package failed, so its setup did not finish:\n  ${said.split('\n').join('\n  ')}`,
        );
      return;
    }
    if (/^No match for argument/m.test(result.stdout + result.stderr) && !argv.includes('--refresh')) {
      argv = [...dnfBase(host, backend), '--refresh', ...args];
      continue;
    }
    if (result.exitCode !== DNF_LOCKED) throw new CommandError(argv, result.exitCode, said);
    if (Date.now() >= deadline)
      throw new CommandError(argv, result.exitCode, `another ${backend.tool} held its lock for longer than lockWaitSeconds (${spec.lockWaitSeconds}): ${said}`);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

/** Installs; when that fails with a version installed before, puts that version back (its cached .rpm, or dnf) and says what is installed now. */
async function installOrPutBack(host: Host, backend: Dnf, spec: PackageSpec, target: string, current: PackageState | undefined): Promise<void> {
  const before = await serviceRun(host, spec.service);
  try {
    await dnf(host, backend, spec, ['install', target]);
  } catch (error) {
    if (!current?.installed || !current.version) throw error;
    const what = `${spec.name} ${current.version}`;
    const now = await rpmStatus(host, backend, spec.name);
    let back = now && rpmVersion(now) === current.version ? `${what} is still installed` : '';
    if (!back) {
      const old = current.rpm && cachedFile('rpm', spec.name, current.rpm);
      const source = old && (await host.stat(old)) ? host.realPath(old) : `${spec.name}-${current.version}`;
      back = await dnf(host, backend, spec, ['install', source]).then(
        () => `${what} is installed again (put back from ${source})`,
        (again) => `${what} (installed before) could not be put back from ${source} (${errorMessage(again).split('\n')[0]})`,
      );
    }
    const runs = back.includes('could not') ? '' : await stillRuns(host, spec.service, before);
    throw new Error(`installing ${target} failed, and ${back}${runs}: ${errorMessage(error)}`);
  }
}
