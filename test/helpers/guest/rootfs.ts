// Owns the cached Debian 12 root filesystem that guest tests boot: built once with mmdebstrap, keyed by its recipe.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';

/** Packages every guest image has (Debian 12 names; recommends are not installed). */
export const BASE_PACKAGES: readonly string[] = [
  'systemd',
  'systemd-sysv',
  'dbus',
  'udev',
  'cloud-init',
  'dnsmasq',
  'iptables',
  'openssh-server',
  'openssh-client',
  'bind9-dnsutils',
  'iproute2',
  'ca-certificates',
  'sudo',
];

/**
 * Packages downloaded into the image's local apt repository (file:/var/lib/meshvm-test/apt) but NOT installed,
 * so a test can `apt-get install` for real without a network. The image's only apt source is that repository.
 */
export const APT_REPO_PACKAGES: readonly string[] = ['hello', 'jq', 'tree'];

export const SUITE = 'bookworm';

/** Where the image's local apt repository lives inside the guest. */
export const GUEST_APT_REPO = '/var/lib/meshvm-test/apt';

export interface RootfsOptions {
  /** Also install Debian 12's separate `systemd-resolved` package (its /etc/resolv.conf points at the stub). */
  resolved?: boolean;
  /** More packages to install (changes the cache key). */
  extraPackages?: readonly string[];
  /** Packages for the image's local apt repository; defaults to APT_REPO_PACKAGES. */
  aptRepoPackages?: readonly string[];
  /** Cache root; defaults to $MESHVM_TEST_CACHE or /var/cache/meshvm-test. */
  cacheDir?: string;
  /** Progress lines (mmdebstrap output is always kept in <cacheDir>/build-<key>.log). */
  log?: (line: string) => void;
  /** Kill mmdebstrap after this long; default 20 minutes. */
  buildTimeoutMs?: number;
  /** Give up waiting for another process's build after this long; default 30 minutes. */
  lockTimeoutMs?: number;
}

export interface RootfsPlan {
  /** Hash of everything that shapes the image (suite, packages, hook). */
  key: string;
  /** The finished image's directory (may not exist yet). */
  dir: string;
  cacheDir: string;
  packages: string[];
  aptRepoPackages: string[];
  /** The customize hook script (part of the key). */
  hook: string;
}

/** Bumped whenever the build changes in a way the options, package lists and hook do not show. */
const RECIPE_VERSION = 1;

/** mmdebstrap options that shape the image (part of the key). */
const MMDEBSTRAP_OPTIONS: readonly string[] = [
  '--mode=root',
  '--variant=apt',
  '--format=directory',
  '--aptopt=APT::Install-Recommends "false"',
  '--skip=essential/unlink', // keep the downloaded .debs for the cache (sync-out)
  '--skip=cleanup/apt/lists', // the hook left only the local repository's lists
];

/** Images not used for this long are removed when another image is built. */
const PRUNE_AFTER_MS = 14 * 24 * 3600 * 1000;

export function testCacheDir(): string {
  return process.env.MESHVM_TEST_CACHE || '/var/cache/meshvm-test';
}

// Runs on the host as mmdebstrap's customize hook, with the chroot as $1 (mmdebstrap has mounted /proc, /dev there).
// Order matters: apt work first (it needs the chroot's build-time resolv.conf), resolv.conf last.
function customizeHook(aptRepoPackages: readonly string[]): string {
  return String.raw`set -eu
root="$1"
repo_packages='${aptRepoPackages.join(' ')}'

# Installing systemd-resolved links resolv.conf to its (absent) stub: resolve with the host's file meanwhile.
rm -f "$root/etc/resolv.conf"
cat /etc/resolv.conf > "$root/etc/resolv.conf"

# cloud-init: the NoCloud seed only, never the network, no locale or disk work (a container has neither).
mkdir -p "$root/etc/cloud/cloud.cfg.d"
cat > "$root/etc/cloud/cloud.cfg.d/99-meshvm-test.cfg" <<'EOF'
# meshvm test image
datasource_list: [ NoCloud, None ]
network: {config: disabled}
locale: false
resize_rootfs: false
# Keep the image's SSH host keys: generating new ones costs every boot a second.
ssh_deletekeys: false
ssh_genkeytypes: []
EOF

# Debian enables dnsmasq on install; the image starts with it disabled so a test can see meshvm enable it.
systemctl --root="$root" disable dnsmasq.service
# Never wait for a network that a loopback-only namespace cannot have.
systemctl --root="$root" mask systemd-networkd-wait-online.service

# No /etc/hostname: the guest keeps the hostname nspawn gives it (cloud-init may set its own).
rm -f "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"

# Local apt repository: download (not install) a few small packages plus their dependencies.
repo="$root/var/lib/meshvm-test/apt"
mkdir -p "$repo/partial"
if [ -n "$repo_packages" ]; then
  # shellcheck disable=SC2086
  chroot "$root" apt-get install --download-only --yes --no-install-recommends \
    -o Dir::Cache::Archives=/var/lib/meshvm-test/apt/ $repo_packages
fi
rm -rf "$repo/partial" "$repo/lock"
: > "$repo/Packages"
for deb in "$repo"/*.deb; do
  [ -e "$deb" ] || continue
  {
    dpkg-deb --field "$deb"
    echo "Filename: ./$(basename "$deb")"
    echo "Size: $(stat -c %s "$deb")"
    echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"
    echo
  } >> "$repo/Packages"
done
{
  echo "Origin: meshvm-test"
  echo "Label: meshvm-test"
  echo "Date: $(LC_ALL=C date -u -R)"
  echo "SHA256:"
  echo " $(sha256sum "$repo/Packages" | cut -d' ' -f1) $(stat -c %s "$repo/Packages") Packages"
} > "$repo/Release"
# The Debian mirror is unreachable from a guest: the local repository is its only source (lists kept, so
# 'apt-get install hello' works without 'apt-get update').
mv "$root/etc/apt/sources.list" "$root/etc/apt/sources.list.debian-mirror"
echo "deb [trusted=yes] file:/var/lib/meshvm-test/apt ./" > "$root/etc/apt/sources.list"
rm -rf "$root/var/lib/apt/lists/"*
chroot "$root" apt-get update

# Resolver: the stub when systemd-resolved is installed, else a static file with no nameserver.
rm -f "$root/etc/resolv.conf"
if [ -e "$root/lib/systemd/system/systemd-resolved.service" ]; then
  ln -s ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
else
  printf '# meshvm test image: static, no nameserver (the guest has loopback only)\noptions timeout:1 attempts:1\n' \
    > "$root/etc/resolv.conf"
fi
`;
}

export function planRootfs(opts: RootfsOptions = {}): RootfsPlan {
  const cacheDir = path.resolve(opts.cacheDir ?? testCacheDir());
  const packages = [...new Set([...BASE_PACKAGES, ...(opts.resolved ? ['systemd-resolved'] : []), ...(opts.extraPackages ?? [])])].sort();
  const aptRepoPackages = [...new Set(opts.aptRepoPackages ?? APT_REPO_PACKAGES)].sort();
  for (const name of [...packages, ...aptRepoPackages]) {
    if (!/^[a-z0-9][a-z0-9+.-]*$/.test(name)) throw new Error(`planRootfs: bad package name ${JSON.stringify(name)}`);
  }
  const hook = customizeHook(aptRepoPackages);
  const key = createHash('sha256')
    .update(JSON.stringify({ v: RECIPE_VERSION, suite: SUITE, options: MMDEBSTRAP_OPTIONS, packages, hook }))
    .digest('hex')
    .slice(0, 12);
  return { key, dir: path.join(cacheDir, `rootfs-${key}`), cacheDir, packages, aptRepoPackages, hook };
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Marks an image as used now (pruning removes images unused for two weeks). */
async function touch(dir: string): Promise<void> {
  const now = new Date();
  await utimes(dir, now, now).catch(() => {});
}

/**
 * Returns the directory of a finished Debian 12 root filesystem, building it first if the cache lacks it.
 * Safe to call from several processes at once: one builds (under a lock), the others wait and reuse it.
 */
export async function ensureRootfs(opts: RootfsOptions = {}): Promise<string> {
  const plan = planRootfs(opts);
  if (await exists(plan.dir)) {
    await touch(plan.dir);
    return plan.dir;
  }
  await mkdir(plan.cacheDir, { recursive: true });
  const log = opts.log ?? (() => {});
  const lock = await acquireLock(path.join(plan.cacheDir, 'build.lock'), opts.lockTimeoutMs ?? 30 * 60_000, log);
  try {
    if (await exists(plan.dir)) return plan.dir; // another process built it while we waited
    await removeStaleBuilds(plan.cacheDir);
    await build(plan, opts, log);
    await pruneOldImages(plan, log);
    return plan.dir;
  } finally {
    await lock.release();
  }
}

async function build(plan: RootfsPlan, opts: RootfsOptions, log: (line: string) => void): Promise<void> {
  const debs = path.join(plan.cacheDir, 'debs');
  const newDebs = path.join(plan.cacheDir, `.debs-new-${process.pid}`);
  const work = path.join(plan.cacheDir, `.build-${plan.key}-${process.pid}`);
  const logFile = path.join(plan.cacheDir, `build-${plan.key}.log`);
  const hookFile = path.join(plan.cacheDir, `.build-${plan.key}-${process.pid}.hook.sh`);
  // mmdebstrap splits sync-in/sync-out arguments on whitespace.
  if (/[\s'"\\]/.test(plan.cacheDir)) throw new Error(`ensureRootfs: cache dir must not contain spaces or quotes: ${plan.cacheDir}`);
  await mkdir(debs, { recursive: true });
  await rm(newDebs, { recursive: true, force: true });
  await mkdir(newDebs);
  await writeFile(hookFile, plan.hook);
  const started = Date.now();
  log(`building ${SUITE} rootfs ${plan.key} into ${work} (log: ${logFile})`);
  // mmdebstrap writes straight to the log file: if this process dies, it still gets SIGTERM (setpriv) and can
  // unmount and clean up instead of dying on a broken pipe.
  const logFd = openSync(logFile, 'w');
  const argv = [
    ...MMDEBSTRAP_OPTIONS,
    `--include=${plan.packages.join(',')}`,
    // Reuse downloaded .debs; afterwards keep exactly the ones this build used.
    '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
    `--setup-hook=sync-in ${debs} /var/cache/apt/archives/`,
    `--customize-hook=sh ${hookFile} "$1"`,
    `--customize-hook=sync-out /var/cache/apt/archives ${newDebs}`,
    SUITE,
    work,
  ];
  const spawnBuild = () => {
    try {
      return execa('setpriv', ['--pdeathsig', 'SIGTERM', '--', 'mmdebstrap', ...argv], {
        reject: false,
        stdin: 'ignore',
        // Any fd number is handed to spawn() as is; execa's types only list 3-9.
        stdout: logFd as 3,
        stderr: logFd as 3,
        timeout: opts.buildTimeoutMs ?? 20 * 60_000,
        killSignal: 'SIGTERM',
        env: { LC_ALL: 'C.UTF-8' },
      });
    } finally {
      closeSync(logFd);
    }
  };
  const proc = spawnBuild();
  const follower = followLog(logFile, (line) => log(`mmdebstrap: ${line}`));
  const result = await proc;
  follower.stop();
  await rm(hookFile, { force: true });
  if (result.exitCode !== 0) {
    await removeTree(work);
    await removeTree(newDebs);
    throw new Error(
      `ensureRootfs: mmdebstrap failed (${result.timedOut ? 'timed out' : result.exitCode === undefined ? result.shortMessage : `exit ${result.exitCode}`}); ` +
        `full log in ${logFile}; last lines:\n${(await readFile(logFile, 'utf8')).split('\n').slice(-30).join('\n')}`,
    );
  }
  const seconds = (Date.now() - started) / 1000;
  await mkdir(path.join(work, 'etc/meshvm-test'), { recursive: true });
  await writeFile(
    path.join(work, 'etc/meshvm-test/rootfs.json'),
    JSON.stringify(
      {
        key: plan.key,
        suite: SUITE,
        packages: plan.packages,
        aptRepoPackages: plan.aptRepoPackages,
        builtAt: new Date().toISOString(),
        buildSeconds: seconds,
      },
      null,
      2,
    ) + '\n',
  );
  await rename(work, plan.dir);
  // Swap the .deb cache only after a good build.
  const oldDebs = path.join(plan.cacheDir, `.debs-old-${process.pid}`);
  await rename(debs, oldDebs);
  await rename(newDebs, debs);
  await rm(oldDebs, { recursive: true, force: true });
  log(`built rootfs ${plan.key} in ${seconds.toFixed(1)} s`);
}

/** Calls back with each new line of a growing file, polled every 500 ms, until stop(). */
function followLog(file: string, onLine: (line: string) => void): { stop(): void } {
  let offset = 0;
  let partial = '';
  const poll = () => {
    let fd: number | undefined;
    try {
      fd = openSync(file, 'r');
      const buf = Buffer.alloc(64 * 1024);
      for (let n = readSync(fd, buf, 0, buf.length, offset); n > 0; n = readSync(fd, buf, 0, buf.length, offset)) {
        offset += n;
        const lines = (partial + buf.subarray(0, n).toString()).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) if (line) onLine(line);
      }
    } catch {
      // not there yet
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  };
  const timer = setInterval(poll, 500);
  return {
    stop() {
      clearInterval(timer);
      poll();
      if (partial) onLine(partial);
    },
  };
}

/** Unmounts whatever a killed mmdebstrap left mounted below dir, then removes it without crossing filesystems. */
async function removeTree(dir: string): Promise<void> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const mounts = mountinfo
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await execa('umount', ['--lazy', m], { reject: false });
  await execa('rm', ['-rf', '--one-file-system', '--', dir], { reject: false });
}

async function removeStaleBuilds(cacheDir: string): Promise<void> {
  for (const name of await readdir(cacheDir)) {
    if (name.startsWith('.build-') || name.startsWith('.debs-')) await removeTree(path.join(cacheDir, name));
  }
}

async function pruneOldImages(plan: RootfsPlan, log: (line: string) => void): Promise<void> {
  for (const name of await readdir(plan.cacheDir)) {
    if (!name.startsWith('rootfs-') || name === path.basename(plan.dir)) continue;
    const dir = path.join(plan.cacheDir, name);
    const st = await stat(dir).catch(() => undefined);
    if (st?.isDirectory() && Date.now() - st.mtimeMs > PRUNE_AFTER_MS) {
      log(`removing unused image ${dir}`);
      await removeTree(dir);
      await rm(path.join(plan.cacheDir, `build-${name.slice('rootfs-'.length)}.log`), { force: true });
    }
  }
}

/**
 * An exclusive flock(1) held by a child process for as long as its stdin stays open: released by release(),
 * and by the kernel if this process dies (the pipe closes, cat exits, the lock file is unlocked).
 */
async function acquireLock(file: string, timeoutMs: number, log: (line: string) => void) {
  const holder = execa('flock', ['--exclusive', '--timeout', String(Math.ceil(timeoutMs / 1000)), file, 'sh', '-c', 'echo locked; exec cat >/dev/null'], {
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'pipe',
    reject: false,
  });
  const waitingNote = setTimeout(() => log(`waiting for another build (lock ${file})`), 1000);
  try {
    await new Promise<void>((resolve, reject) => {
      let seen = '';
      holder.stdout?.on('data', (chunk: Buffer) => {
        seen += chunk.toString();
        if (seen.includes('locked')) resolve();
      });
      holder.then((r) => reject(new Error(`ensureRootfs: could not lock ${file}: ${r.stderr || `exit ${r.exitCode}`}`)), reject);
    });
  } finally {
    clearTimeout(waitingNote);
  }
  return {
    async release(): Promise<void> {
      holder.stdin?.end();
      await holder;
    },
  };
}
