// npm run package: meshvm as a .deb (dpkg-deb) and an .rpm (rpmbuild), from dist/meshvm (npm run build), xz at its strongest.
// Both hold /usr/bin/meshvm, the converge-timer recipe's three units in /usr/lib/systemd/system (installed, not enabled),
// /etc/meshvm/node.yaml.example (a conffile), the man page and the JSON schemas under /usr/share/meshvm/schemas.
// Flags: --outdir DIR (default dist/), --executable FILE (default dist/meshvm), --fast (xz -1: for tests), --no-rpm.
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { $ } from 'zx';
import pkg from '../package.json' with { type: 'json' };
import { PACKAGE_COMMAND, PACKAGE_UNIT_DIR, units } from '../recipes/converge-timer.ts';
import { renderUnit } from '../resources/systemd-unit.ts';

$.quiet = true;

const root = path.resolve(import.meta.dirname, '..');
const ARCH: Record<string, { deb: string; rpm: string }> = { x64: { deb: 'amd64', rpm: 'x86_64' }, arm64: { deb: 'arm64', rpm: 'aarch64' } };
const DESCRIPTION = 'Idempotent provisioning engine that joins VMs to an Istio service mesh';
const MAINTAINER = 'meshvm maintainers <meshvm@example.com>';
const UNIT_HEADER = '# Installed by the meshvm package: enabled by the converge-timer recipe (or systemctl enable). Override with a drop-in.';

/** The files of the package, by their path on the machine: content or a file to copy, and a mode. */
export interface PackageFile {
  path: string;
  mode: number;
  from?: string;
  content?: string | Buffer;
  conffile?: boolean;
}

/** The packaged units: what the converge-timer recipe writes with the package's command, ordered before either flow's sidecar. */
export function packageUnits(): Record<string, string> {
  const specs = units({ command: PACKAGE_COMMAND, flow: 'classic', onBootSec: '2min', every: '30min', splay: '5min', bootTimeout: '90s' });
  return Object.fromEntries(specs.map((spec) => [spec.name, renderUnit(spec.sections ?? {}).replace(/^# Managed by meshvm[^\n]*/, UNIT_HEADER)]));
}

export async function packageFiles(executable: string): Promise<PackageFile[]> {
  const man = gzipSync(await fs.readFile(path.join(root, 'packaging/meshvm.1')), { level: 9 });
  const schemas = (await fs.readdir(path.join(root, 'schemas'))).filter((f) => f.endsWith('.json')).sort();
  return [
    { path: '/usr/bin/meshvm', mode: 0o755, from: executable },
    ...Object.entries(packageUnits()).map(([name, content]) => ({ path: `${PACKAGE_UNIT_DIR}/${name}`, mode: 0o644, content })),
    { path: '/etc/meshvm/node.yaml.example', mode: 0o644, from: path.join(root, 'packaging/node.yaml.example'), conffile: true },
    { path: '/usr/share/man/man1/meshvm.1.gz', mode: 0o644, content: man },
    ...schemas.map((f) => ({ path: `/usr/share/meshvm/schemas/${f}`, mode: 0o644, from: path.join(root, 'schemas', f) })),
    { path: '/usr/share/doc/meshvm/copyright', mode: 0o644, from: path.join(root, 'packaging/copyright') },
  ];
}

// daemon-reload where systemd runs (a chroot or image build has none); on removal the enabled units are disabled first
const POSTINST = 'if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi';
const PRERM = 'systemctl --no-reload disable --now meshvm.timer meshvm-boot.service >/dev/null 2>&1 || true';
/** Removed with the package: V8's compiled code of meshvm and its recipe modules (bin/compile-cache.js), a cache of this version. */
const FORGET_CACHE = 'rm -rf /var/cache/meshvm/compile-cache; rmdir /var/cache/meshvm 2>/dev/null || true';

async function stage(tree: string, files: readonly PackageFile[]): Promise<void> {
  await fs.mkdir(tree, { recursive: true });
  await fs.chmod(tree, 0o755); // mkdtemp made it 0700: it is the package's /
  for (const file of files) {
    const target = path.join(tree, file.path);
    await fs.mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
    if (file.from) await fs.copyFile(file.from, target);
    else await fs.writeFile(target, file.content ?? '');
    await fs.chmod(target, file.mode);
  }
}

async function treeBytes(dir: string): Promise<number> {
  let sum = 0;
  for (const entry of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) sum += (await fs.stat(path.join(entry.parentPath, entry.name))).size;
  }
  return sum;
}

export async function buildDeb(files: readonly PackageFile[], outdir: string, fast: boolean): Promise<string> {
  const arch = ARCH[process.arch]!.deb;
  const tree = await fs.mkdtemp(path.join(outdir, '.deb-'));
  try {
    await stage(tree, files);
    await fs.mkdir(path.join(tree, 'DEBIAN'));
    const control = [
      'Package: meshvm',
      `Version: ${pkg.version}`,
      `Architecture: ${arch}`,
      `Maintainer: ${MAINTAINER}`,
      `Installed-Size: ${Math.ceil((await treeBytes(tree)) / 1024)}`,
      'Depends: libc6 (>= 2.28), libstdc++6, libgcc-s1, util-linux, passwd',
      'Section: admin',
      'Priority: optional',
      `Description: ${DESCRIPTION}`,
      ' A self-contained executable (Node.js included): converges this machine to a YAML runlist; the built-in runlists',
      ' join it to an Istio mesh. meshvm.timer and meshvm-boot.service are installed, not enabled.',
      '',
    ].join('\n');
    await fs.writeFile(path.join(tree, 'DEBIAN/control'), control);
    await fs.writeFile(
      path.join(tree, 'DEBIAN/conffiles'),
      `${files
        .filter((f) => f.conffile)
        .map((f) => f.path)
        .join('\n')}\n`,
    );
    await fs.writeFile(path.join(tree, 'DEBIAN/postinst'), `#!/bin/sh\nset -e\nif [ "$1" = configure ]; then ${POSTINST}; fi\n`, { mode: 0o755 });
    await fs.writeFile(path.join(tree, 'DEBIAN/prerm'), `#!/bin/sh\nset -e\nif [ "$1" = remove ]; then ${PRERM}; fi\n`, { mode: 0o755 });
    await fs.writeFile(
      path.join(tree, 'DEBIAN/postrm'),
      `#!/bin/sh\nset -e\n${POSTINST}\nif [ "$1" = remove ] || [ "$1" = purge ]; then ${FORGET_CACHE}; fi\n`,
      { mode: 0o755 },
    );
    const deb = path.join(outdir, `meshvm_${pkg.version}_${arch}.deb`);
    const level = fast ? ['-z1'] : ['-z9', '-Sextreme'];
    await $`dpkg-deb --root-owner-group -Zxz ${level} --build ${tree} ${deb}`;
    return deb;
  } finally {
    await fs.rm(tree, { recursive: true, force: true });
  }
}

export async function buildRpm(files: readonly PackageFile[], outdir: string, fast: boolean): Promise<string> {
  const arch = ARCH[process.arch]!.rpm;
  const top = await fs.mkdtemp(path.join(outdir, '.rpm-'));
  try {
    const tree = path.join(top, 'tree');
    await stage(tree, files);
    const dirs = ['/etc/meshvm', '/usr/share/doc/meshvm', '/usr/share/meshvm', '/usr/share/meshvm/schemas'];
    const spec = [
      'Name: meshvm',
      `Version: ${pkg.version}`,
      'Release: 1',
      `Summary: ${DESCRIPTION}`,
      `License: ${pkg.license}`,
      `BuildArch: ${arch}`,
      'AutoReqProv: no',
      'Requires: util-linux, shadow-utils',
      // the executable is a Node.js single-executable application: no strip, no build-id links, no debuginfo split
      '%global debug_package %{nil}',
      '%global __os_install_post %{nil}',
      '%global _build_id_links none',
      `%global _binary_payload ${fast ? 'w1.xzdio' : 'w9.xzdio'}`,
      '%description',
      'A self-contained executable (Node.js included): converges this machine to a YAML runlist; the built-in runlists',
      'join it to an Istio mesh. meshvm.timer and meshvm-boot.service are installed, not enabled.',
      '%install',
      `cp -a ${tree}/. %{buildroot}/`,
      '%post',
      POSTINST,
      '%preun',
      `if [ "$1" -eq 0 ]; then ${PRERM}; fi`,
      '%postun',
      POSTINST,
      `if [ "$1" -eq 0 ]; then ${FORGET_CACHE}; fi`,
      '%files',
      ...dirs.map((d) => `%dir ${d}`),
      ...files.map((f) => `${f.conffile ? '%config(noreplace) ' : ''}%attr(${f.mode.toString(8).padStart(4, '0')},root,root) ${f.path}`),
      '',
    ].join('\n');
    await fs.writeFile(path.join(top, 'meshvm.spec'), spec);
    // HOME in the build directory: Debian's rpm keeps its database in ~/.rpmdb, which the build must not leave in root's home
    await $({
      env: { ...process.env, HOME: top },
    })`rpmbuild --quiet --define ${`_topdir ${top}`} --define ${`_rpmdir ${top}/out`} -bb ${path.join(top, 'meshvm.spec')}`;
    const rpm = path.join(outdir, `meshvm-${pkg.version}-1.${arch}.rpm`);
    await fs.rename(path.join(top, 'out', arch, path.basename(rpm)), rpm);
    return rpm;
  } finally {
    await fs.rm(top, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { outdir: { type: 'string' }, executable: { type: 'string' }, fast: { type: 'boolean' }, 'no-rpm': { type: 'boolean' } },
  });
  if (!ARCH[process.arch]) throw new Error(`npm run package: no package architecture for ${process.arch}`);
  const outdir = path.resolve(values.outdir ?? path.join(root, 'dist'));
  const executable = path.resolve(values.executable ?? path.join(root, 'dist/meshvm'));
  await fs.stat(executable).catch(() => {
    throw new Error(`npm run package: ${executable} is missing (npm run build makes it)`);
  });
  await fs.mkdir(outdir, { recursive: true });
  const files = await packageFiles(executable);
  const started = performance.now();
  const made = [await buildDeb(files, outdir, values.fast ?? false)];
  if (values['no-rpm']) {
    // asked for by the flag
  } else if ((await $({ nothrow: true })`sh -c ${'command -v rpmbuild'}`).exitCode === 0) {
    made.push(await buildRpm(files, outdir, values.fast ?? false));
  } else {
    console.log('no .rpm: rpmbuild is missing (Debian: apt-get install rpm)');
  }
  const sizes = await Promise.all(made.map(async (file) => `${path.relative(root, file)} ${((await fs.stat(file)).size / 2 ** 20).toFixed(1)} MiB`));
  console.log(`packaged in ${((performance.now() - started) / 1000).toFixed(1)} s:\n  ${sizes.join('\n  ')}`);
}

if (import.meta.filename === path.resolve(process.argv[1] ?? '')) await main();
