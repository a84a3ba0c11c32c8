// Which package manager a host's packages are under: apt/dpkg or dnf/rpm (yum where dnf is missing), from the root's os-release and package databases.
import type { HostReader } from '../../engine/host.ts';

export type PackageBackend = { kind: 'apt' } | { kind: 'dnf'; tool: 'dnf' | 'yum'; dbpath: string; why: string };

/** os-release IDs (ID, ID_LIKE) of the distributions whose packages are RPMs, and of those whose are .debs. */
const RPM_FAMILY = new Set(['rhel', 'fedora', 'centos', 'rocky', 'almalinux', 'amzn', 'ol', 'mariner', 'azurelinux']);
/** RPM-based too, but installed with zypper, which Package does not drive. */
const ZYPPER_FAMILY = new Set(['suse', 'opensuse', 'sles', 'sled', 'opensuse-leap', 'opensuse-tumbleweed']);
const DEB_FAMILY = new Set(['debian', 'ubuntu']);
/** Where rpm keeps its database: /usr/lib/sysimage/rpm since RHEL 9 and Fedora 36 (/var/lib/rpm links there), /var/lib/rpm before. */
const RPM_DATABASES = ['/usr/lib/sysimage/rpm', '/var/lib/rpm'];

/** `/etc/os-release` as its fields, quotes taken off (pure). */
export function parseOsRelease(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (match) fields[match[1]!] = match[2]!.replace(/^(["'])(.*)\1$/, '$2');
  }
  return fields;
}

/** The os-release IDs a host answers to: ID first, then ID_LIKE's (pure). */
export function osFamily(osRelease: Record<string, string>): string[] {
  return [osRelease.ID ?? '', ...(osRelease.ID_LIKE ?? '').split(/\s+/)].map((id) => id.toLowerCase()).filter(Boolean);
}

/**
 * apt where the root says Debian or Ubuntu, or has a dpkg database and no rpm one (a root with neither: apt, as before);
 * dnf where it says an RPM-family distribution or has only an rpm database. dnf runs on this machine (with --installroot
 * under --root), yum where dnf is missing; with neither the error says which tool is needed. Read once per run.
 */
export function packageBackend(host: HostReader): Promise<PackageBackend> {
  return host.memo('package-backend', async () => {
    const osRelease = parseOsRelease((await host.readFile('/etc/os-release')) ?? (await host.readFile('/usr/lib/os-release')) ?? '');
    const ids = osFamily(osRelease);
    const dpkgDb = Boolean(await host.stat('/var/lib/dpkg/status'));
    let rpmDb: string | undefined;
    for (const dir of RPM_DATABASES) if (!rpmDb && (await host.stat(dir))) rpmDb = dir;
    if (ids.some((id) => ZYPPER_FAMILY.has(id)))
      throw new Error(
        `this is a SUSE host (os-release ID ${osRelease.ID ?? '?'}): its packages are installed with zypper, which Package does not drive (apt and dnf)`,
      );
    const rpmFamily = ids.some((id) => RPM_FAMILY.has(id));
    if (ids.some((id) => DEB_FAMILY.has(id)) || !(rpmFamily || rpmDb) || (dpkgDb && !rpmFamily)) return { kind: 'apt' };
    const why = rpmFamily
      ? `an RPM-family host (os-release ID ${osRelease.ID ?? '?'}${osRelease.ID_LIKE ? `, like ${osRelease.ID_LIKE}` : ''})`
      : `a host with an rpm database (${rpmDb})`;
    const found = (await host.query(['sh', '-c', 'command -v dnf || command -v yum'])).stdout.trim();
    const tool = found.endsWith('/dnf') ? 'dnf' : found.endsWith('/yum') ? 'yum' : undefined;
    const where = host.live ? '' : ` on this machine (it installs into --root ${host.root} with --installroot)`;
    if (!tool) throw new Error(`this is ${why}: Package installs its packages with dnf (or yum), and neither is on PATH${where}; install dnf`);
    if ((await host.query(['sh', '-c', 'command -v rpm'])).exitCode !== 0)
      throw new Error(`this is ${why}: Package reads its packages with rpm, which is not on PATH${where}; install rpm`);
    return { kind: 'dnf', tool, dbpath: rpmDb ?? '/var/lib/rpm', why };
  });
}
