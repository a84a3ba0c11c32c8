// Owns building the guest-test root filesystems ahead of the tests (CI): `node scripts/build-test-rootfs.ts [--install-deps] [--quiet]`.
import { execa } from 'execa';
import { ensureRootfs, planRootfs } from '../test/helpers/guest/rootfs.ts';
import type { RootfsOptions } from '../test/helpers/guest/rootfs.ts';

/** Host packages the guest harness needs (Debian names). */
const HOST_PACKAGES = ['mmdebstrap', 'systemd-container', 'iproute2', 'util-linux'];

const quiet = process.argv.includes('--quiet');
const variants: { name: string; opts: RootfsOptions }[] = [
  { name: 'default', opts: {} },
  { name: 'resolved', opts: { resolved: true } },
];

if (process.argv.includes('--install-deps')) {
  const missing: string[] = [];
  for (const pkg of HOST_PACKAGES) {
    const r = await execa('dpkg-query', ['-W', '-f=${Status}', pkg], { reject: false });
    if (!r.stdout.includes('install ok installed')) missing.push(pkg);
  }
  if (missing.length > 0) {
    console.log(`installing ${missing.join(' ')}`);
    // Another process may hold the dpkg lock for a while: wait for it rather than fail.
    const apt = ['-o', 'DPkg::Lock::Timeout=300', '-o', 'Acquire::Retries=3'];
    await execa('apt-get', [...apt, 'update', '-qq'], { stdio: 'inherit' });
    await execa('apt-get', [...apt, 'install', '-y', '-qq', '--no-install-recommends', ...missing], {
      stdio: 'inherit',
      env: { DEBIAN_FRONTEND: 'noninteractive' },
    });
  }
}

const total = Date.now();
for (const { name, opts } of variants) {
  const plan = planRootfs(opts);
  const started = Date.now();
  const dir = await ensureRootfs({ ...opts, log: quiet ? undefined : (line) => console.log(`[${name}] ${line}`) });
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const { stdout } = await execa('du', ['-sh', '--one-file-system', dir], { reject: false });
  console.log(`rootfs ${name}: ${dir} (key ${plan.key}, ${stdout.split('\t')[0] ?? '?'}) ready in ${seconds} s`);
}
console.log(`all test root filesystems ready in ${((Date.now() - total) / 1000).toFixed(1)} s`);
