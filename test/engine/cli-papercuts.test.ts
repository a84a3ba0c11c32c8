// The command line as a newcomer meets it (issue 15): help, unknown commands, a scratch root that is not there yet,
// a failed run that leaves nothing behind, and a malformed-YAML message that ends in what is wrong.
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { meshvm, PROJECT, scratchRoot, snapshot, writeRunlist } from '../helpers/scratch.ts';

const DEMO = path.join(PROJECT, 'runlists/demo.yaml');
const COMMANDS = ['converge', 'plan', 'verify', 'runlist', 'schema'];

test('meshvm help prints the usage, with every command', async (t) => {
  const help = await meshvm(['help']);
  t.is(help.exitCode, 0, help.stderr);
  t.is(help.stdout, (await meshvm(['--help'])).stdout);
  for (const command of COMMANDS) t.regex(help.stdout, new RegExp(`^ {2}meshvm ${command}\\b`, 'm'), command);
});

test('an unknown command lists all the commands', async (t) => {
  const result = await meshvm(['converg', DEMO]);
  t.is(result.exitCode, 1);
  t.is(result.stdout, '');
  t.regex(result.stderr, /unknown command "converg"/);
  for (const command of COMMANDS) t.true(result.stderr.includes(command), command);
});

/** A directory under a scratch parent that does not exist yet: the README's `--root /tmp/x` on a fresh machine. */
async function freshRoot(t: Parameters<typeof scratchRoot>[0]): Promise<string> {
  return path.join(await scratchRoot(t, 'meshvm-fresh-'), 'x');
}

test('converge into a root that does not exist creates it, says so, and converges; a second run changes nothing', async (t) => {
  const root = await freshRoot(t);
  const first = await meshvm(['converge', DEMO, '--root', root, '--json']);
  t.is(first.exitCode, 0, first.stderr);
  t.regex(first.stderr, new RegExp(`created the root ${root.replaceAll('/', '\\/')}`));
  t.is(JSON.parse(first.stdout).outcome, 'changed');
  t.true((await fs.stat(path.join(root, 'var/lib/istio/envoy/cluster.env'))).isFile());
  const second = await meshvm(['converge', DEMO, '--root', root, '--json']);
  t.is(second.exitCode, 0, second.stderr);
  t.false(second.stderr.includes('created the root'));
  t.is(JSON.parse(second.stdout).outcome, 'unchanged');
});

for (const command of ['plan', 'verify']) {
  test(`${command} refuses a root that does not exist, and creates nothing`, async (t) => {
    const root = await freshRoot(t);
    const result = await meshvm([command, DEMO, '--root', root]);
    t.is(result.exitCode, 1);
    t.regex(result.stderr, new RegExp(`--root ${root.replaceAll('/', '\\/')}: no such directory \\(${command} does not create it; converge would\\)`));
    await t.throwsAsync(fs.access(root));
  });
}

test('converge creates only the last part of a root (a missing parent is a typo)', async (t) => {
  const root = path.join(await freshRoot(t), 'deeper');
  const result = await meshvm(['converge', DEMO, '--root', root]);
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /no such directory, nor its parent .* \(converge creates only the last part\)/);
  await t.throwsAsync(fs.access(path.dirname(root)));
});

test('a converge that fails on a bad runlist leaves no lock file, no run/ and no root it created', async (t) => {
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const bad = await writeRunlist(dir, 'bad.yaml', 'name: bad\nrecipes:\n  - recipe: no-such-recipe\n');
  const root = await freshRoot(t);
  const result = await meshvm(['converge', bad, '--root', root]);
  t.is(result.exitCode, 1);
  t.regex(result.stderr, /unknown recipe "no-such-recipe"/);
  await t.throwsAsync(fs.access(root), undefined, 'the root it would have created is not there');
});

test('the demo copied elsewhere converges (its certificates are written out in it)', async (t) => {
  // `meshvm runlist demo > demo.yaml && meshvm converge demo.yaml`, from another directory
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const printed = await meshvm(['runlist', 'demo']);
  t.is(printed.exitCode, 0, printed.stderr);
  t.false(printed.stdout.includes('yaml-language-server'), 'the schema line (relative to the source tree) is not printed');
  const copy = await writeRunlist(dir, 'demo.yaml', printed.stdout);
  const root = await freshRoot(t);
  const result = await meshvm(['converge', copy, '--root', root], { cwd: dir });
  t.is(result.exitCode, 0, result.stderr);
  t.regex(await fs.readFile(path.join(root, 'etc/certs/root-cert.pem'), 'utf8'), /-----BEGIN CERTIFICATE-----/);
});

test('a converge that fails while planning (certificate files not beside the runlist) leaves the root as it was', async (t) => {
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const copy = await writeRunlist(
    dir,
    'certs.yaml',
    'name: certs\nattributes: { flow: classic }\nrecipes:\n  - recipe: istio-proxy-user\n  - recipe: certs\n    attributes: { source: { from: files, rootCert: ../examples/demo-certs/root-cert.pem, key: ../examples/demo-certs/key.pem } }\n',
  );
  const root = await scratchRoot(t);
  const before = await snapshot(root);
  const result = await meshvm(['converge', copy, '--root', root], { cwd: dir });
  t.is(result.exitCode, 1, result.stdout);
  t.deepEqual(await snapshot(root), before);
  // snapshot() leaves the run lock out (runtime state of a run that converged): here it must not be there at all
  await t.throwsAsync(fs.access(path.join(root, 'run/meshvm.lock')), undefined, 'no run/meshvm.lock');
  t.deepEqual(await fs.readdir(root), [], 'no run/');
  // a fresh root is removed again
  const fresh = await freshRoot(t);
  const failed = await meshvm(['converge', copy, '--root', fresh], { cwd: dir });
  t.is(failed.exitCode, 1);
  t.regex(failed.stderr, /created the root .*\n.*cannot read the private key.*\n.*removed .*\/x again \(the run failed before it planned\)$/);
  await t.throwsAsync(fs.access(fresh));
});

test('a run that converged keeps its lock file (the machine state), released', async (t) => {
  const root = await scratchRoot(t);
  t.is((await meshvm(['converge', DEMO, '--root', root])).exitCode, 0);
  t.is(await fs.readFile(path.join(root, 'run/meshvm.lock'), 'utf8'), '');
});

test('the malformed-YAML message ends in what is wrong, not in a dangling colon', async (t) => {
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const file = await writeRunlist(dir, 'bad.yaml', 'name: bad\nrecipes: [\n');
  const result = await meshvm(['plan', file, '--root', os.tmpdir()]);
  t.is(result.exitCode, 1);
  const line = result.stderr.trim();
  t.regex(line, /bad\.yaml:3: malformed YAML: \S.* \(column \d+\)$/);
  t.false(line.endsWith(':'));
  t.is(line.split('\n').length, 1);
});
