// Input limits: runlists and node files are capped, alias bombs and non-UTF-8 refused naming the file, a bare decimal
// mode refused with what to write, and (as root) input another account can change refused, as sshd's StrictModes does.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { meshvm, PROJECT, scratchRoot, snapshot, writeRunlist } from '../helpers/scratch.ts';

const FILES = (file: string) => `name: files\nrecipes:\n  - recipe: files\n    attributes:\n      directories: [{ path: /etc }]\n      files:\n${file}`;
const OK = FILES('        - { path: /etc/motd, content: "hello\\n", mode: 0644 }\n');

/** Runs converge on a runlist (and node file) that must be refused: exit 1, the message asked for, nothing written. */
async function refused(
  t: Parameters<typeof scratchRoot>[0],
  runlist: string | Buffer,
  expect: RegExp,
  options: { node?: string | Buffer; prepare?: (dir: string) => Promise<void> } = {},
) {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const file = path.join(dir, 'bad.yaml');
  await fs.writeFile(file, runlist);
  const args = ['converge', file, '--root', root];
  if (options.node !== undefined) {
    await fs.writeFile(path.join(dir, 'node.yaml'), options.node);
    args.push('--node', path.join(dir, 'node.yaml'));
  }
  await options.prepare?.(dir);
  const before = await snapshot(root);
  const result = await meshvm(args);
  t.is(result.exitCode, 1, result.stdout);
  t.regex(result.stderr, expect);
  t.is(result.stderr.trim().split('\n').length, 1, `one line:\n${result.stderr}`);
  t.deepEqual(await snapshot(root), before, 'nothing written');
  return { dir, result };
}

test('a runlist over 4 MiB (a 20 MB scalar) is refused by its size before it is parsed', async (t) => {
  const scalar = 'x'.repeat(20 * 1024 * 1024);
  await refused(t, FILES(`        - { path: /etc/motd, content: "${scalar}" }\n`), /bad\.yaml: is 2097\d{4} bytes; a runlist may be at most 4 MiB$/m);
});

test('a node file over 4 MiB is refused by its size', async (t) => {
  await refused(t, OK, /node\.yaml: is 5242\d{3} bytes; a node file may be at most 4 MiB$/m, {
    node: `attributes:\n  pad: "${'y'.repeat(5 * 1024 * 1024)}"\n`,
  });
});

test('a YAML alias bomb is refused naming the file, not expanded', async (t) => {
  const levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
  for (const [i, name] of ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'].entries()) {
    const prev = String.fromCharCode(97 + i);
    levels.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(',')}]`);
  }
  await refused(t, `name: bomb\n${levels.join('\n')}\nrecipes: []\n`, /bad\.yaml: refused: its aliases \(\*name\) expand more than 100 times/);
});

test('a runlist or node file that is not UTF-8 is refused naming the file and line', async (t) => {
  const latin1 = Buffer.concat([Buffer.from('name: caf'), Buffer.from([0xe9]), Buffer.from('\nrecipes: []\n')]);
  await refused(t, latin1, /bad\.yaml:1: the runlist is not UTF-8 text \(save it as UTF-8\)/);
  const node = Buffer.concat([Buffer.from('attributes:\n  files:\n    - { path: /x, content: "'), Buffer.from([0xff, 0xfe]), Buffer.from('" }\n')]);
  await refused(t, OK, /node\.yaml:3: the node file is not UTF-8 text/, { node });
});

test('a bare decimal mode (mode: 644) is refused with "write 0644"; 0644, 0o644 and JSON\'s 420 are taken', async (t) => {
  await refused(
    t,
    FILES('        - { path: /etc/motd, content: x }\n        - { path: /etc/issue, content: x, mode: 644 }\n'),
    /bad\.yaml:8: mode: 644 would be read as the decimal number 644 \(01204\); a mode is octal: write 0644$/m,
  );
  await refused(
    t,
    FILES('        - { path: /etc/motd, content: x, mode: 493 }\n'),
    /bad\.yaml:7: mode: 493 is a decimal number; a mode is octal: write 0755 if that is the mode meant$/m,
  );
  await refused(
    t,
    'name: b\nrecipes:\n  - recipe: files\n    attributes:\n      blocks: [{ path: /etc/motd, name: x, lines: [a], createMode: 600 }]\n',
    /bad\.yaml:5: createMode: 600 would be read as the decimal number 600 \(01130\); a mode is octal: write 0600$/m,
  );

  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  // JSON (a generator's output: quoted keys, no octal) writes the decimal 420 for 0644, and is taken
  const json = JSON.stringify({
    name: 'json',
    recipes: [{ recipe: 'files', attributes: { directories: [{ path: '/etc' }], files: [{ path: '/etc/motd', content: 'x', mode: 0o644 }] } }],
  });
  const fromJson = await meshvm(['converge', await writeRunlist(dir, 'ok.json', json), '--root', root]);
  t.is(fromJson.exitCode, 0, fromJson.stderr);
  t.is((await fs.stat(path.join(root, 'etc/motd'))).mode & 0o7777, 0o644);
  for (const mode of ['0644', '0o644']) {
    const ok = await meshvm([
      'converge',
      await writeRunlist(dir, 'ok.yaml', FILES(`        - { path: /etc/motd, content: x, mode: ${mode} }\n`)),
      '--root',
      root,
    ]);
    t.is(ok.exitCode, 0, ok.stderr);
    t.is((await fs.stat(path.join(root, 'etc/motd'))).mode & 0o7777, 0o644);
  }
});

const asRoot = process.getuid?.() === 0;
const rootOnly = asRoot ? test : test.skip;
const skipped = asRoot ? '' : ' (skipped: the check applies when meshvm runs as root, and this test does not)';

const NOBODY = 65534;

rootOnly(`as root: a runlist another account can change is refused, naming its owner or mode${skipped}`, async (t) => {
  await refused(t, OK, /bad\.yaml: the runlist is writable by every account \(mode 0666\); meshvm runs as root and takes no input another account can change/, {
    prepare: (dir) => fs.chmod(path.join(dir, 'bad.yaml'), 0o666),
  });
  await refused(t, OK, /bad\.yaml: the runlist is owned by nobody \(uid 65534\), mode 0644; meshvm runs as root/, {
    prepare: (dir) => fs.chown(path.join(dir, 'bad.yaml'), NOBODY, 0),
  });
  await refused(t, OK, /bad\.yaml: the runlist is writable by group nogroup \(gid 65534\), mode 0664/, {
    prepare: async (dir) => {
      await fs.chown(path.join(dir, 'bad.yaml'), 0, NOBODY);
      await fs.chmod(path.join(dir, 'bad.yaml'), 0o664);
    },
  });
  // its directory: writable by every account (not sticky), then owned by another account
  await refused(t, OK, /bad\.yaml: the runlist's directory \/tmp\/meshvm-runlists-\w+ is writable by every account \(mode 0777\)/, {
    prepare: (dir) => fs.chmod(dir, 0o777),
  });
  await refused(t, OK, /bad\.yaml: the runlist's directory \/tmp\/meshvm-runlists-\w+ is owned by nobody/, { prepare: (dir) => fs.chown(dir, NOBODY, 0) });
});

rootOnly(`as root: a node file or a recipe module another account can change is refused; a sticky directory such as /tmp is fine${skipped}`, async (t) => {
  await refused(t, OK, /node\.yaml: the node file is writable by every account \(mode 0646\)/, {
    node: 'attributes: {}\n',
    prepare: (dir) => fs.chmod(path.join(dir, 'node.yaml'), 0o646),
  });
  const module = `export { default } from ${JSON.stringify(path.join(PROJECT, 'test/fixtures/recipes/phases.ts'))};\n`;
  await refused(
    t,
    'name: m\nrecipes:\n  - recipe: ./module.ts\n',
    /bad\.yaml:3: recipes\[0\]\.recipe: the recipe module \.\/module\.ts is owned by nobody \(uid 65534\), mode 0644; meshvm runs as root/,
    {
      prepare: async (dir) => {
        await fs.writeFile(path.join(dir, 'module.ts'), module);
        await fs.chown(path.join(dir, 'module.ts'), NOBODY, 0);
      },
    },
  );
  // a runlist in a sticky world-writable directory (as /tmp is) and owned by root: taken
  const root = await scratchRoot(t);
  const sticky = await scratchRoot(t, 'meshvm-sticky-');
  await fs.chmod(sticky, 0o1777);
  const ok = await meshvm(['converge', await writeRunlist(sticky, 'ok.yaml', OK), '--root', root]);
  t.is(ok.exitCode, 0, ok.stderr);
});
