// npm run package (scripts/package.ts), run for real into a scratch directory: the .deb read back with dpkg-deb, the .rpm
// with rpm -qpi / -qpl; the man page names what --help names; the packaged units are the converge-timer recipe's, and
// the recipe only enables them where the package installed them. A small stand-in takes the executable's place here
// (the packages of the real 114 MiB one are installed into a booted guest by test/e2e/package.test.ts).
import test from 'ava';
import { execa, execaSync } from 'execa';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pkg from '../../package.json' with { type: 'json' };
import { packageUnits } from '../../scripts/package.ts';
import { meshvm, PROJECT, scratchRoot } from '../helpers/scratch.ts';

const SCRIPT = path.join(PROJECT, 'scripts/package.ts');
const UNITS = ['meshvm-boot.service', 'meshvm.service', 'meshvm.timer'];
const FILES = [
  '/etc/meshvm/node.yaml.example',
  '/usr/bin/meshvm',
  ...UNITS.map((u) => `/usr/lib/systemd/system/${u}`),
  '/usr/share/doc/meshvm/copyright',
  '/usr/share/man/man1/meshvm.1.gz',
  '/usr/share/meshvm/schemas/node.schema.json',
  '/usr/share/meshvm/schemas/runlist.schema.json',
];
const hasRpm = execaSync('sh', ['-c', 'command -v rpmbuild && command -v rpm'], { reject: false }).exitCode === 0;

/** Both packages, made once for the file's tests (the .rpm only where rpmbuild is). */
const made = (async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-package-'));
  const executable = path.join(dir, 'meshvm-stand-in');
  await fs.writeFile(executable, '#!/bin/sh\necho 0.0.0-stand-in\n', { mode: 0o755 });
  const out = path.join(dir, 'out');
  const run = await execa(process.execPath, [SCRIPT, '--fast', '--outdir', out, '--executable', executable, ...(hasRpm ? [] : ['--no-rpm'])], {
    reject: false,
  });
  return { dir, out, run, deb: path.join(out, `meshvm_${pkg.version}_amd64.deb`), rpm: path.join(out, `meshvm-${pkg.version}-1.x86_64.rpm`) };
})();
test.after.always(async () => fs.rm((await made).dir, { recursive: true, force: true }));

test('the .deb: control fields, conffile, maintainer scripts, xz data, and the file list with owners and modes', async (t) => {
  const { run, deb } = await made;
  t.is(run.exitCode, 0, String(run.stderr));
  t.regex(String(run.stdout), /meshvm_[\d.]+_amd64\.deb [\d.]+ MiB/);
  const field = async (name: string) => (await execa('dpkg-deb', ['--field', deb, name])).stdout;
  t.is(await field('Package'), 'meshvm');
  t.is(await field('Version'), pkg.version);
  t.is(await field('Architecture'), 'amd64');
  t.regex(await field('Depends'), /util-linux/);
  const control = await scratchRoot(t, 'meshvm-deb-control-');
  await execa('dpkg-deb', ['--control', deb, control]);
  t.is(await fs.readFile(path.join(control, 'conffiles'), 'utf8'), '/etc/meshvm/node.yaml.example\n');
  t.regex(await fs.readFile(path.join(control, 'postinst'), 'utf8'), /systemctl daemon-reload/);
  t.notRegex(await fs.readFile(path.join(control, 'postinst'), 'utf8'), /enable|start/, 'the package enables and starts nothing');
  t.regex(await fs.readFile(path.join(control, 'prerm'), 'utf8'), /disable --now meshvm\.timer meshvm-boot\.service/);
  t.regex((await execa('ar', ['t', deb])).stdout, /^data\.tar\.xz$/m);

  const listing = (await execa('dpkg-deb', ['--contents', deb])).stdout.split('\n');
  const files = listing.filter((line) => line.startsWith('-')).map((line) => line.split(/\s+/));
  t.deepEqual(files.map((cols) => cols.at(-1)!.replace(/^\./, '')).sort(), FILES);
  for (const cols of files) t.is(cols[1], 'root/root', `${cols.at(-1)} is root's`);
  t.is(files.find((cols) => cols.at(-1) === './usr/bin/meshvm')?.[0], '-rwxr-xr-x');
  t.true(
    listing.filter((line) => line.startsWith('d')).every((line) => line.startsWith('drwxr-xr-x')),
    'every directory is 0755, the package root too',
  );
  const root = await scratchRoot(t, 'meshvm-deb-root-');
  await execa('dpkg-deb', ['--extract', deb, root]);
  t.is((await execa(path.join(root, 'usr/bin/meshvm'))).stdout, '0.0.0-stand-in', 'the executable given, as it was');
  const unit = (await execa('sh', ['-c', `dpkg-deb --fsys-tarfile "$1" | tar -xO ./usr/lib/systemd/system/meshvm.service`, 'sh', deb])).stdout;
  t.is(`${unit}\n`, packageUnits()['meshvm.service'] ?? 'missing');
  t.regex(unit, /^ExecStart=\/usr\/bin\/meshvm converge \/etc\/meshvm\/runlist\.yaml$/m);
});

(hasRpm ? test : test.skip)(
  `the .rpm: rpm -qpi metadata, rpm -qpl file list, config file, scriptlets${hasRpm ? '' : ' (skipped: no rpmbuild/rpm; apt-get install rpm)'}`,
  async (t) => {
    const { run, rpm } = await made;
    t.is(run.exitCode, 0, String(run.stderr));
    // HOME in a scratch directory: Debian's rpm would otherwise make ~/.rpmdb in this machine's root home
    const home = await scratchRoot(t, 'meshvm-rpm-home-');
    const query = async (...args: string[]) => (await execa('rpm', ['-qp', ...args, rpm], { env: { HOME: home } })).stdout;
    const info = await query('-i');
    t.regex(info, /^Name\s*: meshvm$/m);
    t.regex(info, new RegExp(`^Version\\s*: ${pkg.version.replaceAll('.', '\\.')}$`, 'm'));
    t.regex(info, /^Architecture: x86_64$/m);
    t.regex(info, /^License\s*: Apache-2\.0$/m);
    t.is(await query('--qf', '%{PAYLOADCOMPRESSOR}'), 'xz');
    const dirs = ['/etc/meshvm', '/usr/share/doc/meshvm', '/usr/share/meshvm', '/usr/share/meshvm/schemas'];
    t.deepEqual((await query('-l')).split('\n').sort(), [...FILES, ...dirs].sort(), 'no build-id links, no stray files');
    t.is(await query('-c'), '/etc/meshvm/node.yaml.example');
    const modes = Object.fromEntries(
      (await query('--qf', '[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME}\n]'))
        .split('\n')
        .map((line) => [line.split(' ')[0], line.split(' ').slice(1).join(' ')]),
    );
    t.is(modes['/usr/bin/meshvm'], '-rwxr-xr-x root');
    t.is(modes['/usr/lib/systemd/system/meshvm.timer'], '-rw-r--r-- root');
    // installed into an empty rpm database under a scratch root (no scriptlets: the root has no shell), then verified
    const root = await scratchRoot(t, 'meshvm-rpm-root-');
    await execa('rpm', ['--root', root, '--initdb']);
    const installed = await execa('rpm', ['--root', root, '-i', '--nodeps', '--noscripts', rpm], { reject: false });
    t.is(installed.exitCode, 0, installed.stderr);
    t.is((await execa('rpm', ['--root', root, '-V', '--nodeps', 'meshvm'], { reject: false })).stdout, '', 'rpm -V: every file as the package says');
    t.is((await execa(path.join(root, 'usr/bin/meshvm'))).stdout, '0.0.0-stand-in');
    const scripts = await query('--scripts');
    t.regex(scripts, /postinstall scriptlet[\s\S]*systemctl daemon-reload/);
    t.regex(scripts, /preuninstall scriptlet[\s\S]*"\$1" -eq 0[\s\S]*disable --now meshvm\.timer/);
  },
);

/** The commands and long options a text names (--help's usage, or the man page with roff's escapes taken out). */
function commandsAndOptions(text: string): { commands: string[]; options: string[] } {
  const commands = [...text.matchAll(/^(?: +|\.B )meshvm ([a-z]+)/gm)].map((m) => m[1]!);
  const options = [...text.matchAll(/--[a-z][a-z-]*/g)].map((m) => m[0]);
  return { commands: [...new Set(commands)].sort(), options: [...new Set(options)].sort() };
}

test('the man page names the same commands and options as meshvm --help', async (t) => {
  const help = await meshvm(['--help']);
  t.is(help.exitCode, 0, help.stderr);
  const man = (await fs.readFile(path.join(PROJECT, 'packaging/meshvm.1'), 'utf8')).replaceAll('\\-', '-');
  const fromHelp = commandsAndOptions(help.stdout);
  t.true(fromHelp.commands.includes('converge') && fromHelp.commands.includes('runlist'), fromHelp.commands.join(' '));
  t.true(fromHelp.options.length >= 10, fromHelp.options.join(' '));
  t.deepEqual(commandsAndOptions(man), fromHelp);
  const sections = [...man.matchAll(/^\.TP\n\.B (\w+)$/gm)].map((m) => m[1]);
  t.deepEqual(sections.filter((s) => fromHelp.commands.includes(s!)).sort(), fromHelp.commands, 'each command has its own entry under COMMANDS');
});

const runlist = (attributes: Record<string, unknown>) => JSON.stringify({ name: 'timer', recipes: [{ recipe: 'converge-timer', attributes }] });

test('the packaged units are what converge-timer writes with the package command (header aside)', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'usr/bin'), { recursive: true });
  await fs.writeFile(path.join(root, 'usr/bin/meshvm'), '');
  const file = path.join(root, 'timer.yaml');
  await fs.writeFile(file, runlist({ units: 'write', flow: 'classic' }));
  const result = await meshvm(['converge', file, '--root', root]);
  t.is(result.exitCode, 0, result.stderr);
  const body = (text: string) => text.split('\n').slice(1).join('\n');
  for (const [name, content] of Object.entries(packageUnits())) {
    t.is(body(await fs.readFile(path.join(root, 'etc/systemd/system', name), 'utf8')), body(content), name);
  }
});

test('where the package installed the units, converge-timer enables them and writes no copy; other timings write the override', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'usr/lib/systemd/system'), { recursive: true });
  await fs.mkdir(path.join(root, 'usr/bin'), { recursive: true });
  await fs.writeFile(path.join(root, 'usr/bin/meshvm'), '');
  for (const [name, content] of Object.entries(packageUnits())) await fs.writeFile(path.join(root, 'usr/lib/systemd/system', name), content);
  const file = path.join(root, 'timer.yaml');
  await fs.writeFile(file, runlist({}));
  const first = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(first.exitCode, 0, first.stderr);
  const report = JSON.parse(first.stdout) as { resources: { ref: string; status: string }[] };
  t.deepEqual(
    report.resources.map((r) => r.ref),
    ['service[meshvm.timer]', 'service[meshvm-boot.service]'],
  );
  t.deepEqual((await fs.readdir(path.join(root, 'etc/systemd/system'), { recursive: true })).sort(), [
    'multi-user.target.wants',
    'multi-user.target.wants/meshvm-boot.service',
    'timers.target.wants',
    'timers.target.wants/meshvm.timer',
  ]);
  t.is(await fs.readlink(path.join(root, 'etc/systemd/system/timers.target.wants/meshvm.timer')), '/usr/lib/systemd/system/meshvm.timer');
  const again = await meshvm(['converge', file, '--root', root, '--json']);
  t.is(JSON.parse(again.stdout).summary.changed, 0, 'the second converge changes nothing');

  await fs.writeFile(file, runlist({ every: '15min' }));
  const other = await meshvm(['converge', file, '--root', root]);
  t.is(other.exitCode, 0, other.stderr);
  const timer = await fs.readFile(path.join(root, 'etc/systemd/system/meshvm.timer'), 'utf8');
  t.regex(timer, /^OnUnitActiveSec=15min$/m);
  t.regex(
    await fs.readFile(path.join(root, 'etc/systemd/system/meshvm.service'), 'utf8'),
    /^ExecStart=\/usr\/bin\/meshvm converge/m,
    'the packaged executable',
  );
});
