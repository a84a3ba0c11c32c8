// npm test runs this first: the real tools the tests drive, installed from Debian's packages where missing (as root),
// so `npm install && npm test` works on a fresh Debian 12 machine. MESHVM_TEST_NO_INSTALL=1 only reports what is missing.
// The install changes no service of the machine: a policy-rc.d that says 101 ("not allowed") keeps invoke-rc.d and
// deb-systemd-invoke from starting anything, and the enable links the packages' scripts add are taken away again.
import fs from 'node:fs/promises';
import path from 'node:path';
import { $ } from 'zx';

$.verbose = false;
$.quiet = true;

/** command → the Debian package that brings it */
export const TOOLS: Record<string, string> = {
  flock: 'util-linux',
  unshare: 'util-linux',
  fallocate: 'util-linux',
  mkswap: 'util-linux',
  blkid: 'util-linux',
  'systemd-tmpfiles': 'systemd',
  useradd: 'passwd',
  ip: 'iproute2',
  iptables: 'iptables',
  dnsmasq: 'dnsmasq-base',
  dig: 'bind9-dnsutils',
  socat: 'socat',
  sshd: 'openssh-server',
  ssh: 'openssh-client',
  mmdebstrap: 'mmdebstrap',
  'systemd-nspawn': 'systemd-container',
  'dpkg-deb': 'dpkg',
  rpmbuild: 'rpm', // npm run package builds the .rpm with it (scripts/package.ts)
  dnf: 'dnf', // Package's dnf backend installs into an rpm-managed --installroot (test/resources/package-dnf.test.ts)
  createrepo_c: 'createrepo-c', // the local RPM repository that test installs from
  openssl: 'openssl',
  'prometheus-node-exporter': 'prometheus-node-exporter', // serves meshvm.prom from its textfile collector (test/engine/metrics.test.ts)
  promtool: 'prometheus', // checks and unit-tests the example alert rules (examples/prometheus/)
  podman: 'podman', // the sidecar in a container: its image store and a real container run (test/recipes/sidecar-container.test.ts)
  objcopy: 'binutils', // the build drops the node binary's annobin notes with it (scripts/build.ts)
};

/** What invoke-rc.d and deb-systemd-invoke ask before they start or restart a service. */
export const POLICY_RC_D = '/usr/sbin/policy-rc.d';
export const POLICY_DENY = '#!/bin/sh\n# meshvm scripts/test-deps.ts: the packages installed for the tests start no service\nexit 101\n';
/** Where enabling a service leaves its links: systemd's wants/requires/aliases, and the SysV runlevel links. */
export const SERVICE_LINK_DIRS = ['/etc/systemd/system', ...['0', '1', '2', '3', '4', '5', '6', 'S'].map((level) => `/etc/rc${level}.d`)];

/** Every symlink under the given directories (recursively): path → target. */
export async function serviceLinks(dirs: readonly string[] = SERVICE_LINK_DIRS): Promise<Map<string, string>> {
  const links = new Map<string, string>();
  for (const dir of dirs) {
    const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      if (!entry.isSymbolicLink()) continue;
      const file = path.join(entry.parentPath, entry.name);
      links.set(file, await fs.readlink(file));
    }
  }
  return links;
}

/**
 * Runs `install` with services held: policy-rc.d denies every start while it runs (a policy-rc.d already there is put
 * back as it was, or ours removed), and the enable links it added are removed afterwards, also when it fails.
 * Returns the links it took away.
 */
export async function withServicesHeld<T>(
  install: () => Promise<T>,
  opts: { policy?: string; linkDirs?: readonly string[] } = {},
): Promise<{ result: T; undone: string[] }> {
  const policy = opts.policy ?? POLICY_RC_D;
  const before = await serviceLinks(opts.linkDirs);
  const saved = await fs.readFile(policy).then(
    async (content) => ({ content, mode: (await fs.stat(policy)).mode & 0o7777 }),
    () => undefined,
  );
  await fs.writeFile(policy, POLICY_DENY, { mode: 0o755 });
  await fs.chmod(policy, 0o755);
  const undone: string[] = [];
  try {
    return { result: await install(), undone };
  } finally {
    if (saved) {
      await fs.writeFile(policy, saved.content);
      await fs.chmod(policy, saved.mode);
    } else {
      await fs.rm(policy, { force: true });
    }
    for (const link of (await serviceLinks(opts.linkDirs)).keys()) {
      if (before.has(link)) continue;
      await fs.rm(link, { force: true });
      undone.push(link);
    }
    if (undone.length > 0 && (await systemdRunning())) await $({ nothrow: true })`systemctl daemon-reload`;
  }
}

async function systemdRunning(): Promise<boolean> {
  return fs.stat('/run/systemd/system').then(
    () => true,
    () => false,
  );
}

/** The systemd units a package ships (from `dpkg -L`). */
export function unitsIn(dpkgList: string): string[] {
  return dpkgList
    .split('\n')
    .filter((file) => /^\/(usr\/)?lib\/systemd\/system\/[^/]+\.(service|socket|timer|path)$/.test(file))
    .map((file) => path.basename(file));
}

/**
 * `apt-get install` of packages (names or .deb paths) with services held; afterwards none of their units is enabled,
 * and where systemd runs, none is active (one that is, was started despite the policy: it is stopped and named).
 */
export async function aptInstall(
  packages: readonly string[],
  names: readonly string[] = packages,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ undone: string[]; stopped: string[] }> {
  const aptEnv = { ...env, DEBIAN_FRONTEND: 'noninteractive' };
  const { result: install, undone } = await withServicesHeld(
    () => $({ env: aptEnv, nothrow: true })`apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends ${packages}`,
  );
  if (install.exitCode !== 0) throw new Error(`apt-get install failed: ${install.stderr.trim().split('\n').slice(-3).join('\n')}`);
  const stopped: string[] = [];
  if (await systemdRunning()) {
    for (const name of names) {
      for (const unit of unitsIn((await $({ nothrow: true })`dpkg -L ${name}`).stdout)) {
        if ((await $({ nothrow: true })`systemctl is-active --quiet ${unit}`).exitCode !== 0) continue;
        await $({ nothrow: true })`systemctl stop ${unit}`;
        stopped.push(unit);
      }
    }
  }
  return { undone, stopped };
}

async function main(): Promise<void> {
  const missing: string[] = [];
  for (const [tool, pkg] of Object.entries(TOOLS)) {
    const found = await $({ nothrow: true })`sh -c ${`command -v ${tool} || test -x /usr/sbin/${tool}`}`;
    if (found.exitCode !== 0 && !missing.includes(pkg)) missing.push(pkg);
  }
  if (missing.length === 0) return;

  const canInstall =
    process.getuid?.() === 0 && !process.env.MESHVM_TEST_NO_INSTALL && (await $({ nothrow: true })`sh -c ${'command -v apt-get'}`).exitCode === 0;
  if (!canInstall) {
    console.log(
      `test tools missing (tests that need them say so and skip): ${missing.join(' ')}\n  install with: apt-get install --no-install-recommends ${missing.join(' ')}`,
    );
    return;
  }
  console.log(`installing the tools the tests drive (their services neither started nor enabled): ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (let attempt = 1; ; attempt++) {
    // another apt may hold the dpkg lock for a while on a fresh machine: wait for it, then retry
    const update = await $({ env, nothrow: true })`apt-get -o DPkg::Lock::Timeout=120 update -qq`;
    try {
      if (update.exitCode !== 0) throw new Error(`apt-get update failed: ${update.stderr.trim().split('\n').slice(-3).join('\n')}`);
      const { undone, stopped } = await aptInstall(missing);
      if (undone.length > 0) console.log(`  left disabled as they were: ${undone.map((link) => path.basename(link)).join(' ')}`);
      if (stopped.length > 0) console.log(`  started despite policy-rc.d, stopped again: ${stopped.join(' ')}`);
      return;
    } catch (error) {
      if (attempt === 4) {
        console.error((error as Error).message);
        process.exit(1);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 15_000));
  }
}

if (import.meta.main) await main();
