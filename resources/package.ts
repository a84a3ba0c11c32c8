// Package: a package present (optionally pinned), absent, or installed from a .deb/.rpm fetched and checked in preflight, with apt or dnf as the host has; a failed upgrade puts the previous version back.
import { z } from 'zod';
import { defineResource, hasChanges, type Changes, type PrepareContext } from '../engine/resource.ts';
import type { Host, HostReader } from '../engine/host.ts';
import { INSTALLED_PACKAGES_DIR } from '../engine/state-paths.ts';
import { unitName } from './systemd.ts';
import { aptApply, aptCurrent, aptPrepare } from './package/apt.ts';
import { INSTALLED_MARKS, markOf } from './package/artifact.ts';
import { packageBackend } from './package/detect.ts';
import { dnfApply, dnfCurrent, dnfPrepare, rpmVersionMatches } from './package/dnf.ts';

export { dpkgErrors, parseDebFields, parseDpkgQuery } from './package/apt.ts';
export { DEB_CACHE, RPM_CACHE } from './package/artifact.ts';

const sha256 = z
  .string()
  .regex(/^[0-9a-fA-F]{64}$/, 'expected a sha256 of 64 hex digits')
  .transform((s) => s.toLowerCase());

/** A package file: a local path (its sha256 optional) or an https URL with its sha256. */
const packageFile = (ext: 'deb' | 'rpm') =>
  z.union([
    z.strictObject({ path: z.string().startsWith('/', `the .${ext} path must be absolute`), sha256: sha256.optional() }),
    z.strictObject({ url: z.url({ protocol: /^https$/, error: 'expected an https URL' }), sha256, caFile: z.string().optional() }),
  ]);

export const packageSpec = z
  .strictObject({
    name: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_+.-]+$/, 'expected a package name (letters, digits, "_", "+", "-", "."; Debian\'s are lower case)'),
    ensure: z.enum(['present', 'absent']).default('present'),
    /** Pin an exact version: apt-get install name=version (Debian: 1.2-3), dnf install name-version (RPM: [epoch:]version-release, or the version alone). */
    version: z
      .string()
      .regex(/^[A-Za-z0-9.+~:_^-]+$/, 'expected a version string (Debian: 1.2-3; RPM: [epoch:]version-release)')
      .optional(),
    /** Install this .deb instead of the repository's (apt hosts): a local path or an https URL, with its sha256. */
    deb: packageFile('deb').optional(),
    /** Install this .rpm instead of the repository's (dnf hosts): a local path or an https URL, with its sha256; its name, version and arch checked first. */
    rpm: packageFile('rpm').optional(),
    /** The .rpm's architecture (default: this machine's, or noarch). */
    arch: z
      .string()
      .regex(/^[a-z0-9_]+$/, 'expected an architecture (x86_64, aarch64, noarch)')
      .optional(),
    /** Package lists older than this are refreshed before an install (apt). */
    listsMaxAgeSeconds: z.number().int().min(0).default(86_400),
    /** How long to wait for another apt/dpkg (or dnf) to let go of its lock. */
    lockWaitSeconds: z.number().int().min(0).default(300),
    /** The service that runs what the package installs: a failed upgrade's error says whether it still runs the previous version. */
    service: unitName.optional(),
    /** With ensure: absent, its configuration files go too (apt-get purge; rpm keeps changed ones as .rpmsave either way). */
    purge: z.boolean().default(false),
  })
  .refine((s) => !((s.deb || s.rpm) && s.ensure === 'absent'), 'a .deb or .rpm source makes no sense with ensure: absent')
  .refine((s) => !(s.deb && s.rpm), 'give deb or rpm, not both: a host installs one kind')
  .refine((s) => !(s.arch && !s.rpm), 'arch is checked on an .rpm: give rpm with it');
export type PackageSpec = z.output<typeof packageSpec>;

export interface PackageState {
  installed: boolean;
  version: string | undefined;
  /** sha256 of the .deb meshvm installed it from, if it did. */
  deb: string | undefined;
  /** sha256 of the .rpm meshvm installed it from, if it did. */
  rpm?: string | undefined;
  /** Which backend read it (dnf: a pin of the version alone matches any release); not a state to converge. */
  backend?: 'apt' | 'dnf';
}

/** The host's backend, refused when the spec's package file is of the other kind, or apt under an offline root. */
async function backendFor(host: HostReader, spec: PackageSpec) {
  const backend = await packageBackend(host);
  if (backend.kind === 'apt') {
    if (!host.live)
      throw new Error(
        `needs the running system (apt and dpkg install packages on the machine itself), and --root ${host.root} is an offline root; nothing was changed`,
      );
    if (spec.rpm) throw new Error(`this host's packages are .debs (apt/dpkg): give deb, not rpm`);
  } else if (spec.deb) throw new Error(`this is ${backend.why}: its packages are .rpms (${backend.tool}): give rpm, not deb`);
  return backend;
}

export const packageType = {
  kind: 'package',
  schema: packageSpec,
  key: (spec: PackageSpec) => spec.name,
  // apt needs the running system; dnf also installs into an offline root (--installroot): current() decides, per host

  async current(host: HostReader, spec: PackageSpec): Promise<PackageState> {
    const backend = await backendFor(host, spec);
    return backend.kind === 'apt' ? aptCurrent(host, spec) : dnfCurrent(host, backend, spec);
  },

  changes(spec: PackageSpec, current: PackageState | undefined): Changes<PackageState> {
    const have = current ?? { installed: false, version: undefined, deb: undefined };
    if (spec.ensure === 'absent') return have.installed ? { installed: { from: true, to: false } } : {};
    const changes: Changes<PackageState> = {};
    if (!have.installed) changes.installed = { from: false, to: true };
    const pinned = have.backend === 'dnf' && have.version ? rpmVersionMatches(spec.version ?? '', have.version) : have.version === spec.version;
    if (spec.version && !pinned) changes.version = { from: have.version, to: spec.version };
    const wantDeb = spec.deb?.sha256;
    if (wantDeb && have.deb !== wantDeb) changes.deb = { from: have.deb, to: wantDeb };
    const wantRpm = spec.rpm?.sha256;
    if (wantRpm && have.rpm !== wantRpm) changes.rpm = { from: have.rpm, to: wantRpm };
    return changes;
  },

  /** Preflight: the package file this run will install, checked (a path) or fetched into the cache and checked (a URL; plan only hashes it). */
  async prepare(host: Host, spec: PackageSpec, context: PrepareContext): Promise<string | undefined> {
    if (spec.ensure === 'absent' || !hasChanges(packageType.changes(spec, await packageType.current(host, spec)))) return undefined;
    const backend = await backendFor(host, spec);
    return backend.kind === 'apt' ? aptPrepare(host, spec, context) : dnfPrepare(host, backend, spec, context);
  },

  async apply(host: Host, spec: PackageSpec, _changes: Changes<PackageState>, current: PackageState | undefined): Promise<void> {
    const backend = await backendFor(host, spec);
    if (backend.kind === 'apt') await aptApply(host, spec, current);
    else await dnfApply(host, backend, spec, current);
    if (spec.ensure === 'absent') {
      // the marks of what meshvm installed go with the package
      for (const mark of [markOf(spec.name), `${INSTALLED_PACKAGES_DIR}/${spec.name}`]) if (await host.stat(mark)) await host.remove(mark);
    }
  },

  describe(field: string, change: { from: unknown; to: unknown }): string | undefined {
    if (field === 'installed') return change.to ? 'install' : 'remove';
    if (field === 'deb' || field === 'rpm') return `install from the .${field} with sha256 ${String(change.to).slice(0, 12)}…`;
    return undefined;
  },
};

/** The version of a package installed, as the host's package manager spells it (dpkg's or rpm's), or undefined; offline Debian roots: undefined. */
export async function installedPackage(host: HostReader, name: string): Promise<string | undefined> {
  const backend = await packageBackend(host);
  if (backend.kind === 'apt' && !host.live) return undefined;
  const state = backend.kind === 'apt' ? await aptCurrent(host, packageSpec.parse({ name })) : await dnfCurrent(host, backend, packageSpec.parse({ name }));
  return state.installed ? state.version : undefined;
}

/** Whether meshvm installed the package (from a .deb/.rpm, or from apt/dnf where none was installed): its mark says so. */
export async function installedByMeshvm(host: HostReader, name: string): Promise<boolean> {
  return Boolean((await host.stat(`${INSTALLED_MARKS}/${name}.sha256`)) ?? (await host.stat(`${INSTALLED_PACKAGES_DIR}/${name}`)));
}

export const Package = defineResource(packageType);
