// Owns building the guest-test root filesystems ahead of the tests (CI): `node scripts/build-test-rootfs.ts [--quiet]`;
// the host tools it needs (mmdebstrap, systemd-nspawn, ...) are scripts/test-deps.ts's to install, services held.
import { execa } from 'execa';
import { ensureRootfs, planRootfs } from '../test/helpers/guest/rootfs.ts';
import type { RootfsOptions } from '../test/helpers/guest/rootfs.ts';

const quiet = process.argv.includes('--quiet');
const variants: { name: string; opts: RootfsOptions }[] = [
  { name: 'default', opts: {} },
  { name: 'resolved', opts: { resolved: true } },
];

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
