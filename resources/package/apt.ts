// Package's apt/dpkg backend: dpkg's view of a package, apt-get install/remove with the dpkg lock waited for, a failed upgrade put back.
import type { Host, HostReader } from '../../engine/host.ts';
import type { PrepareContext } from '../../engine/resource.ts';
import { CommandError, errorMessage } from '../../engine/errors.ts';
import { INSTALLED_PACKAGES_DIR } from '../../engine/state-paths.ts';
import type { PackageSpec, PackageState } from '../package.ts';
import { cachedCopy, cachedFile, checkLocalFile, downloadToCache, fetchFile, markInstalled, markOf } from './artifact.ts';
import { serviceRun, stillRuns } from './service-run.ts';

/** `dpkg-query -W -f '${Package}\t${db:Status-Abbrev}\t${Version}\n'` lines as installed packages and versions. */
export function parseDpkgQuery(text: string): Map<string, { installed: boolean; version: string }> {
  const out = new Map<string, { installed: boolean; version: string }>();
  for (const line of text.split('\n')) {
    const [name, status, version] = line.split('\t');
    if (!name || status === undefined) continue;
    // db:Status-Abbrev is "ii " for installed; "rc " (config files only) and "un " are not
    out.set(name.split(':')[0]!, { installed: status.trim() === 'ii', version: version?.trim() ?? '' });
  }
  return out;
}

const APT_ENV = { DEBIAN_FRONTEND: 'noninteractive', NEEDRESTART_MODE: 'a' };
const aptOptions = (spec: PackageSpec) => [
  '-o',
  `DPkg::Lock::Timeout=${spec.lockWaitSeconds}`,
  '-o',
  'Dpkg::Options::=--force-confdef',
  '-o',
  'Dpkg::Options::=--force-confold',
];

export async function aptCurrent(host: HostReader, spec: PackageSpec): Promise<PackageState> {
  const found = await dpkgStatus(host, spec.name);
  const mark = spec.deb ? (await host.readFile(markOf(spec.name)))?.trim() : undefined;
  return { installed: found?.installed ?? false, version: found?.installed ? found.version : undefined, deb: mark };
}

/** Preflight: the .deb this run will install, checked (a path) or fetched into the cache and checked (a URL; plan only hashes it). */
export async function aptPrepare(host: Host, spec: PackageSpec, context: PrepareContext): Promise<string> {
  if (!spec.deb) return aptHas(host, spec);
  const deb = spec.deb;
  if ('path' in deb) {
    await checkLocalFile(host, 'deb', deb.path, deb.sha256);
    return `${deb.path}: ${deb.sha256 ? 'the sha256 required' : 'no sha256 given to check'}, ${await checkDebFields(host, spec, deb.path)}`;
  }
  const cached = cachedFile('deb', spec.name, deb.sha256);
  if (await cachedCopy(host, 'deb', spec.name, deb.sha256)) return `${cached} (cached): the sha256 required, ${await checkDebFields(host, spec, cached)}`;
  if (context.mode === 'plan') {
    const got = await host.hashDownload(deb.url, { sha256: deb.sha256, caFile: deb.caFile });
    return `${deb.url}: ${got.bytes} bytes with the sha256 required (not kept in plan: its Package and Version fields are read when converge downloads it)`;
  }
  const got = await downloadToCache(host, 'deb', spec.name, deb, context);
  return `${deb.url}: ${got.bytes} bytes with the sha256 required, ${await checkDebFields(host, spec, cached)}, in ${cached}`;
}

export async function aptApply(host: Host, spec: PackageSpec, current: PackageState | undefined): Promise<void> {
  if (spec.ensure === 'absent') {
    await host.run(['apt-get', spec.purge ? 'purge' : 'remove', '-y', ...aptOptions(spec), spec.name], { env: APT_ENV });
    return;
  }
  if (spec.deb) {
    const file = await fetchFile(host, 'deb', spec.name, spec.deb);
    await installOrPutBack(host, spec, host.realPath(file), current);
    await markInstalled(host, spec.name, spec.deb.sha256);
    return;
  }
  if (await listsNeedUpdate(host, spec)) await host.run(['apt-get', 'update', ...aptOptions(spec)], { env: APT_ENV });
  await installOrPutBack(host, spec, spec.version ? `${spec.name}=${spec.version}` : spec.name, current);
  if (!current?.installed) {
    if (!(await host.stat(INSTALLED_PACKAGES_DIR))) await host.mkdir(INSTALLED_PACKAGES_DIR, { mode: 0o755, parents: true });
    await host.writeFile(`${INSTALLED_PACKAGES_DIR}/${spec.name}`, '', { mode: 0o644, backup: false });
  }
}

/** The package as dpkg has it now (installed means "ii"), or undefined when dpkg does not know it. */
async function dpkgStatus(host: HostReader, name: string): Promise<{ installed: boolean; version: string } | undefined> {
  const result = await host.query(['dpkg-query', '-W', '-f', '${Package}\t${db:Status-Abbrev}\t${Version}\n', name]);
  return parseDpkgQuery(result.stdout).get(name);
}

/** apt-get install of a package (name, name=version) or a .deb file; downgrades allowed, as a rollback is one. */
async function aptInstall(host: Host, spec: PackageSpec, target: string): Promise<void> {
  const argv = ['apt-get', 'install', '-y', '--no-install-recommends', '--allow-downgrades', ...aptOptions(spec), target];
  const result = await host.run(argv, { env: APT_ENV, allowFailure: true });
  if (result.exitCode !== 0) throw new CommandError(argv, result.exitCode, dpkgErrors(`${result.stdout}\n${result.stderr}`));
}

/**
 * What dpkg and apt said went wrong (apt prints dpkg's errors on stdout): the failing maintainer script's own lines (after
 * "Setting up"/"Unpacking"), dpkg's and apt's error lines and the lines they indent; else the last lines (pure).
 */
export function dpkgErrors(output: string): string {
  const lines = output.split(/\r?\n/);
  const picked: string[] = [];
  let script: string[] = [];
  for (const [i, line] of lines.entries()) {
    if (/^(Setting up|Unpacking|Preparing to unpack) /.test(line)) script = [];
    else if (/^dpkg: error/.test(line)) {
      picked.push(...script.slice(-5), line);
      script = [];
    } else if (/^(E: |Errors were encountered)/.test(line) || (/^\s/.test(line) && /^(dpkg: error|Errors were)/.test(lines[i - 1] ?? ''))) picked.push(line);
    else if (line.trim() && !/^(debconf|W: |N: )/.test(line)) script.push(line);
  }
  return (picked.length ? picked : lines.filter(Boolean).slice(-8)).join('\n');
}

/**
 * Installs; when that fails with a version installed before (an upgrade, a downgrade), puts that version back, from its
 * cached .deb or apt, and fails saying what is installed now and whether the package's service still runs it.
 */
async function installOrPutBack(host: Host, spec: PackageSpec, target: string, current: PackageState | undefined): Promise<void> {
  const before = await serviceRun(host, spec.service);
  try {
    await aptInstall(host, spec, target);
  } catch (error) {
    if (!current?.installed || !current.version) throw error;
    const back = await putBack(host, spec, current as PackageState & { version: string });
    const runs = back.ok ? await stillRuns(host, spec.service, before) : '';
    throw new Error(`installing ${target} failed, and ${back.text}${runs}: ${errorMessage(error)}`);
  }
}

/** After a failed install: the version installed before, as dpkg left it or installed again; says which. */
async function putBack(host: Host, spec: PackageSpec, previous: PackageState & { version: string }): Promise<{ ok: boolean; text: string }> {
  const what = `${spec.name} ${previous.version}`;
  const now = await dpkgStatus(host, spec.name);
  if (now?.installed && now.version === previous.version) return { ok: true, text: `${what} is still installed` };
  const oldDeb = previous.deb && cachedFile('deb', spec.name, previous.deb);
  const source = oldDeb && (await host.stat(oldDeb)) ? host.realPath(oldDeb) : `${spec.name}=${previous.version}`;
  try {
    await aptInstall(host, spec, source);
  } catch (error) {
    const why = errorMessage(error).split('\n')[0];
    return {
      ok: false,
      text: `${what} (installed before) could not be put back from ${source} (${why}); dpkg has ${spec.name} ${now?.version ?? '?'} half-installed`,
    };
  }
  const again = await dpkgStatus(host, spec.name);
  return again?.installed && again.version === previous.version
    ? { ok: true, text: `${what} is installed again (put back from ${source})` }
    : { ok: false, text: `${what} was installed again from ${source}, yet dpkg has ${spec.name} ${again?.version ?? '?'} not fully installed` };
}

/** `dpkg-deb --field FILE Package Version` as a map of its fields (pure). */
export function parseDebFields(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z][A-Za-z0-9-]*):\s*(.*)$/.exec(line);
    if (match) fields[match[1]!] = match[2]!.trim();
  }
  return fields;
}

/** The .deb is the package the spec names (else installing it would never converge), of the version pinned if one is; says which. */
async function checkDebFields(host: HostReader, spec: PackageSpec, file: string): Promise<string> {
  const result = await host.query(['dpkg-deb', '--field', host.realPath(file), 'Package', 'Version']);
  if (result.exitCode !== 0) throw new Error(`${file} is not a .deb dpkg-deb can read (${result.stderr.trim().split('\n')[0]})`);
  const fields = parseDebFields(result.stdout);
  if (fields.Package !== spec.name)
    throw new Error(`${file} is the package ${fields.Package ?? '(none)'}, not ${spec.name}; installing it would leave ${spec.name} missing on every run`);
  if (spec.version && fields.Version !== spec.version) throw new Error(`${file} is ${spec.name} ${fields.Version}, not the version ${spec.version} pinned`);
  return `package ${spec.name} ${fields.Version}`;
}

/** Preflight of an apt install: whether apt's lists have the package (the version pinned); else says converge updates them first. */
async function aptHas(host: HostReader, spec: PackageSpec): Promise<string> {
  const policy = (await host.query(['apt-cache', 'policy', spec.name])).stdout;
  const candidate = /^\s*Candidate: (\S+)$/m.exec(policy)?.[1];
  const known = spec.version ? policy.includes(` ${spec.version} `) : candidate !== undefined && candidate !== '(none)';
  const what = `${spec.name}${spec.version ? ` ${spec.version}` : ''}`;
  if (known) return `apt has ${spec.version ? what : `${spec.name} ${candidate}`}`;
  return `apt's lists do not have ${what} yet: not checked here (preflight does not run apt-get update); converge updates them before it installs`;
}

/** apt-get update only when the package is unknown to apt or the lists are older than the bound. */
async function listsNeedUpdate(host: HostReader, spec: PackageSpec): Promise<boolean> {
  const policy = await host.query(['apt-cache', 'policy', spec.name]);
  if (!/Candidate: (?!\(none\))/.test(policy.stdout)) return true;
  if (spec.version && !policy.stdout.includes(` ${spec.version} `)) return true;
  const stamp = await host.query([
    'find',
    '/var/lib/apt/lists',
    '-maxdepth',
    '1',
    '-name',
    '*_Packages',
    '-mmin',
    `-${Math.ceil(spec.listsMaxAgeSeconds / 60)}`,
  ]);
  return stamp.stdout.trim() === '';
}
