// Package: a Debian package present (optionally pinned), absent, or installed from a .deb fetched and checked in preflight; a failed upgrade puts the previous version back.
import { z } from 'zod';
import { defineResource, hasChanges, type Changes, type PrepareContext } from '../engine/resource.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { CommandError, errorMessage } from '../engine/errors.ts';
import { INSTALLED_DEBS_DIR, INSTALLED_PACKAGES_DIR } from '../engine/state-paths.ts';
import { unitName } from './systemd.ts';

/** Where .debs fetched by URL are kept, under their sha256 (the previous one too, for putting it back after a failed upgrade). */
export const DEB_CACHE = '/var/cache/meshvm/debs';
const INSTALLED_MARKS = INSTALLED_DEBS_DIR;

const sha256 = z
  .string()
  .regex(/^[0-9a-fA-F]{64}$/, 'expected a sha256 of 64 hex digits')
  .transform((s) => s.toLowerCase());

export const packageSpec = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9+.-]+$/, 'expected a Debian package name (lower case letters, digits, "+", "-", ".")'),
    ensure: z.enum(['present', 'absent']).default('present'),
    /** Pin an exact version (apt-get install name=version). */
    version: z
      .string()
      .regex(/^[A-Za-z0-9.+~:-]+$/, 'expected a Debian version string')
      .optional(),
    /** Install this .deb instead of the repository's: a local path or an https URL, with its sha256. */
    deb: z
      .union([
        z.strictObject({ path: z.string().startsWith('/', 'the .deb path must be absolute'), sha256: sha256.optional() }),
        z.strictObject({ url: z.url({ protocol: /^https$/, error: 'expected an https URL' }), sha256, caFile: z.string().optional() }),
      ])
      .optional(),
    /** Package lists older than this are refreshed before an install. */
    listsMaxAgeSeconds: z.number().int().min(0).default(86_400),
    /** How long to wait for another apt/dpkg to let go of the dpkg lock. */
    lockWaitSeconds: z.number().int().min(0).default(300),
    /** The service that runs what the package installs: a failed upgrade's error says whether it still runs the previous version. */
    service: unitName.optional(),
    /** With ensure: absent, its configuration files go too (apt-get purge). */
    purge: z.boolean().default(false),
  })
  .refine((s) => !(s.deb && s.ensure === 'absent'), 'a .deb source makes no sense with ensure: absent');
export type PackageSpec = z.output<typeof packageSpec>;

export interface PackageState {
  installed: boolean;
  version: string | undefined;
  /** sha256 of the .deb meshvm installed it from, if it did. */
  deb: string | undefined;
}

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

export const packageType = {
  kind: 'package',
  schema: packageSpec,
  key: (spec: PackageSpec) => spec.name,
  requires: () => [{ live: 'apt and dpkg install packages on the machine itself' }],

  async current(host: HostReader, spec: PackageSpec): Promise<PackageState> {
    if (!host.live) throw new Error(`packages can only be managed on the running system (root /), not under --root ${host.root}`);
    const found = await dpkgStatus(host, spec.name);
    const mark = spec.deb ? (await host.readFile(`${INSTALLED_MARKS}/${spec.name}.sha256`))?.trim() : undefined;
    return { installed: found?.installed ?? false, version: found?.installed ? found.version : undefined, deb: mark };
  },

  changes(spec: PackageSpec, current: PackageState | undefined): Changes<PackageState> {
    const have = current ?? { installed: false, version: undefined, deb: undefined };
    if (spec.ensure === 'absent') return have.installed ? { installed: { from: true, to: false } } : {};
    const changes: Changes<PackageState> = {};
    if (!have.installed) changes.installed = { from: false, to: true };
    if (spec.version && have.version !== spec.version) changes.version = { from: have.version, to: spec.version };
    const wantDeb = spec.deb?.sha256;
    if (wantDeb && have.deb !== wantDeb) changes.deb = { from: have.deb, to: wantDeb };
    return changes;
  },

  /** Preflight: the .deb this run will install, checked (a path) or fetched into the cache and checked (a URL; plan only hashes it). */
  async prepare(host: Host, spec: PackageSpec, context: PrepareContext): Promise<string | undefined> {
    if (spec.ensure === 'absent' || !hasChanges(packageType.changes(spec, await packageType.current(host, spec)))) return undefined;
    if (!spec.deb) return aptHas(host, spec);
    const deb = spec.deb;
    if ('path' in deb) {
      await checkLocalDeb(host, deb.path, deb.sha256);
      return `${deb.path}: ${deb.sha256 ? 'the sha256 required' : 'no sha256 given to check'}, ${await checkDebFields(host, spec, deb.path)}`;
    }
    const cached = cachedDeb(spec.name, deb.sha256);
    if ((await host.stat(cached))?.type === 'file' && (await fileSha256(host, cached)) === deb.sha256)
      return `${cached} (cached): the sha256 required, ${await checkDebFields(host, spec, cached)}`;
    if (context.mode === 'plan') {
      const got = await host.hashDownload(deb.url, { sha256: deb.sha256, caFile: deb.caFile });
      return `${deb.url}: ${got.bytes} bytes with the sha256 required (not kept in plan: its Package and Version fields are read when converge downloads it)`;
    }
    const got = await downloadToCache(host, spec, context);
    return `${deb.url}: ${got.bytes} bytes with the sha256 required, ${await checkDebFields(host, spec, cached)}, in ${cached}`;
  },

  async apply(host: Host, spec: PackageSpec, _changes: Changes<PackageState>, current: PackageState | undefined): Promise<void> {
    if (spec.ensure === 'absent') {
      await host.run(['apt-get', spec.purge ? 'purge' : 'remove', '-y', ...aptOptions(spec), spec.name], { env: APT_ENV });
      // the marks of what meshvm installed go with the package
      for (const mark of [`${INSTALLED_MARKS}/${spec.name}.sha256`, `${INSTALLED_PACKAGES_DIR}/${spec.name}`])
        if (await host.stat(mark)) await host.remove(mark);
      return;
    }
    if (spec.deb) {
      const file = await fetchDeb(host, spec);
      await installOrPutBack(host, spec, host.realPath(file), current);
      const sha = spec.deb.sha256;
      if (sha) {
        if (!(await host.stat(INSTALLED_MARKS))) await host.mkdir(INSTALLED_MARKS, { mode: 0o755 });
        await host.writeFile(`${INSTALLED_MARKS}/${spec.name}.sha256`, sha + '\n', { mode: 0o644, backup: false });
      }
      return;
    }
    if (await listsNeedUpdate(host, spec)) await host.run(['apt-get', 'update', ...aptOptions(spec)], { env: APT_ENV });
    await installOrPutBack(host, spec, spec.version ? `${spec.name}=${spec.version}` : spec.name, current);
    if (!current?.installed) {
      if (!(await host.stat(INSTALLED_PACKAGES_DIR))) await host.mkdir(INSTALLED_PACKAGES_DIR, { mode: 0o755, parents: true });
      await host.writeFile(`${INSTALLED_PACKAGES_DIR}/${spec.name}`, '', { mode: 0o644, backup: false });
    }
  },

  describe(field: string, change: { from: unknown; to: unknown }): string | undefined {
    if (field === 'installed') return change.to ? 'install' : 'remove';
    if (field === 'deb') return `install from the .deb with sha256 ${String(change.to).slice(0, 12)}…`;
    return undefined;
  },
};

const cachedDeb = (name: string, sha256: string) => `${DEB_CACHE}/${name}_${sha256}.deb`;

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
  const oldDeb = previous.deb && cachedDeb(spec.name, previous.deb);
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

/** A service's state and invocation (systemd's InvocationID changes with every start), when the package names one. */
async function serviceRun(host: HostReader, service: string | undefined): Promise<{ active: string; invocation: string } | undefined> {
  if (!service || !host.live) return undefined;
  const result = await host.query(['systemctl', 'show', '-p', 'ActiveState', '-p', 'InvocationID', service]);
  const values = Object.fromEntries(result.stdout.split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
  return { active: values.ActiveState ?? '', invocation: values.InvocationID ?? '' };
}

/** " and istio still runs it", or what became of the service during the failed install. */
async function stillRuns(host: HostReader, service: string | undefined, before: { active: string; invocation: string } | undefined): Promise<string> {
  const after = await serviceRun(host, service);
  if (!service || !before || !after) return '';
  const name = service.replace(/\.service$/, '');
  if (before.active !== 'active') return ` (${name} was not running)`;
  if (after.active === 'active' && after.invocation === before.invocation) return ` and ${name} still runs it`;
  return after.active === 'active' ? `; ${name} was restarted during the failed install` : `; ${name} is ${after.active} now`;
}

/** A local .deb: there, and of the sha256 required when one is given. */
async function checkLocalDeb(host: HostReader, file: string, sha256: string | undefined): Promise<void> {
  if (!(await host.stat(file))) throw new Error(`the .deb ${file} does not exist`);
  if (sha256) {
    const got = await fileSha256(host, file);
    if (got !== sha256) throw new Error(`${file} has sha256 ${got}, not ${sha256}; refusing to install it`);
  }
}

/** A .deb ready to install: a local file checked against its sha256, or the cached download (preflight put it there), checked again. */
async function fetchDeb(host: Host, spec: PackageSpec): Promise<string> {
  const deb = spec.deb!;
  if ('path' in deb) {
    await checkLocalDeb(host, deb.path, deb.sha256);
    return deb.path;
  }
  const cached = cachedDeb(spec.name, deb.sha256);
  if ((await host.stat(cached)) && (await fileSha256(host, cached)) === deb.sha256) return cached;
  await downloadToCache(host, spec);
  return cached;
}

/** Downloads the .deb into the cache (a wrong or corrupt cached copy replaced), recording what it created for preflight. */
async function downloadToCache(host: Host, spec: PackageSpec, context?: PrepareContext) {
  const deb = spec.deb as { url: string; sha256: string; caFile?: string | undefined };
  const cached = cachedDeb(spec.name, deb.sha256);
  if (context) await context.directory(DEB_CACHE);
  else if (!(await host.stat(DEB_CACHE))) await host.mkdir(DEB_CACHE, { mode: 0o755, parents: true });
  const existed = Boolean(await host.stat(cached));
  const got = await host.download(deb.url, cached, { sha256: deb.sha256, caFile: deb.caFile });
  if (!existed) context?.created(cached);
  return got;
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

async function fileSha256(host: HostReader, file: string): Promise<string | undefined> {
  const result = await host.query(['sha256sum', host.realPath(file)]);
  return result.exitCode === 0 ? result.stdout.split(/\s/)[0] : undefined;
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

/** Whether meshvm installed the package (from a .deb, or from apt where none was installed): its mark says so. */
export async function installedByMeshvm(host: HostReader, name: string): Promise<boolean> {
  return Boolean((await host.stat(`${INSTALLED_MARKS}/${name}.sha256`)) ?? (await host.stat(`${INSTALLED_PACKAGES_DIR}/${name}`)));
}

export const Package = defineResource(packageType);
