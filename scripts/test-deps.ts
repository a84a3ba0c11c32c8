// npm test runs this first: the real tools the tests drive, installed from Debian's packages where missing (as root),
// so `npm install && npm test` works on a fresh Debian 12 machine. MESHVM_TEST_NO_INSTALL=1 only reports what is missing.
import { $ } from 'zx';

$.verbose = false;
$.quiet = true;

/** command → the Debian package that brings it */
const TOOLS: Record<string, string> = {
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
  openssl: 'openssl',
  objcopy: 'binutils', // the build drops the node binary's annobin notes with it (scripts/build.ts)
};

const missing: string[] = [];
for (const [tool, pkg] of Object.entries(TOOLS)) {
  const found = await $({ nothrow: true })`sh -c ${`command -v ${tool} || test -x /usr/sbin/${tool}`}`;
  if (found.exitCode !== 0 && !missing.includes(pkg)) missing.push(pkg);
}
if (missing.length === 0) process.exit(0);

const canInstall =
  process.getuid?.() === 0 && !process.env.MESHVM_TEST_NO_INSTALL && (await $({ nothrow: true })`sh -c ${'command -v apt-get'}`).exitCode === 0;
if (!canInstall) {
  console.log(
    `test tools missing (tests that need them say so and skip): ${missing.join(' ')}\n  install with: apt-get install --no-install-recommends ${missing.join(' ')}`,
  );
  process.exit(0);
}
console.log(`installing the tools the tests drive: ${missing.join(' ')}`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
for (let attempt = 1; ; attempt++) {
  // another apt may hold the dpkg lock for a while on a fresh machine: wait for it, then retry
  const update = await $({ env, nothrow: true })`apt-get -o DPkg::Lock::Timeout=120 update -qq`;
  const install =
    update.exitCode === 0 && (await $({ env, nothrow: true })`apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends ${missing}`);
  if (install && install.exitCode === 0) break;
  if (attempt === 4) {
    console.error(`apt-get failed: ${(install || update).stderr.trim().split('\n').slice(-3).join('\n')}`);
    process.exit(1);
  }
  await new Promise((resolve) => setTimeout(resolve, 15_000));
}
