// Package: a Debian package present (optionally pinned), absent, or installed from a .deb whose sha256 is checked first.
import { z } from 'zod';
import { defineResource, type Changes } from '../engine/resource.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { INSTALLED_DEBS_DIR, INSTALLED_PACKAGES_DIR } from '../engine/state-paths.ts';

const DEB_CACHE = '/var/cache/meshvm/debs';
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
    const result = await host.query(['dpkg-query', '-W', '-f', '${Package}\t${db:Status-Abbrev}\t${Version}\n', spec.name]);
    const found = parseDpkgQuery(result.stdout).get(spec.name);
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
      await host.run(['apt-get', 'install', '-y', '--no-install-recommends', ...aptOptions(spec), host.realPath(file)], { env: APT_ENV });
      const sha = spec.deb.sha256;
      if (sha) {
        if (!(await host.stat(INSTALLED_MARKS))) await host.mkdir(INSTALLED_MARKS, { mode: 0o755 });
        await host.writeFile(`${INSTALLED_MARKS}/${spec.name}.sha256`, sha + '\n', { mode: 0o644, backup: false });
      }
      return;
    }
    if (await listsNeedUpdate(host, spec)) await host.run(['apt-get', 'update', ...aptOptions(spec)], { env: APT_ENV });
    const target = spec.version ? `${spec.name}=${spec.version}` : spec.name;
    await host.run(['apt-get', 'install', '-y', '--no-install-recommends', ...(spec.version ? ['--allow-downgrades'] : []), ...aptOptions(spec), target], {
      env: APT_ENV,
    });
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

/** A .deb ready to install: a local file checked against its sha256, or a download into the cache, checked first. */
async function fetchDeb(host: Host, spec: PackageSpec): Promise<string> {
  const deb = spec.deb!;
  if ('path' in deb) {
    if (!(await host.stat(deb.path))) throw new Error(`the .deb ${deb.path} does not exist`);
    if (deb.sha256) await checkSha256(host, deb.path, deb.sha256);
    return deb.path;
  }
  const cached = `${DEB_CACHE}/${spec.name}_${deb.sha256}.deb`;
  if (!(await host.stat(cached))) {
    if (!(await host.stat(DEB_CACHE))) await host.mkdir(DEB_CACHE, { mode: 0o755 });
    await host.download(deb.url, cached, { sha256: deb.sha256, caFile: deb.caFile });
  } else {
    await checkSha256(host, cached, deb.sha256);
  }
  return cached;
}

async function checkSha256(host: HostReader, file: string, want: string): Promise<void> {
  const result = await host.query(['sha256sum', host.realPath(file)]);
  const got = result.stdout.split(/\s/)[0];
  if (got !== want) throw new Error(`${file} has sha256 ${got}, not ${want}; refusing to install it`);
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
