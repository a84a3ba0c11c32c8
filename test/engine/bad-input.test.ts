// Bad input: one clear message naming the file and YAML path (or the flag), exit 1, and nothing written.
import test from 'ava';
import { execa, execaSync } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { meshvm, scratchRoot, snapshot, writeRunlist } from '../helpers/scratch.ts';

const sidecar = (ports: string) => `name: bad\nrecipes:\n  - recipe: sidecar\n    attributes:\n      inboundPorts: ${ports}\n`;

const cases: { title: string; runlist?: string; args?: string[]; node?: string; expect: RegExp }[] = [
  { title: 'malformed YAML', runlist: 'name: bad\nrecipes: [\n  - recipe: x\n', expect: /bad\.yaml:\d+: malformed YAML: / },
  { title: 'a runlist that is not a mapping', runlist: '- just\n- a list\n', expect: /bad\.yaml:1: runlist: Invalid input: expected object, received array/ },
  { title: 'a missing name', runlist: 'recipes: []\n', expect: /bad\.yaml:1: name: runlist: Invalid input: expected string, received undefined/ },
  {
    title: 'an unknown recipe',
    runlist: 'name: bad\nrecipes:\n  - recipe: nope\n',
    expect: /bad\.yaml:3: recipes\[0\]\.recipe: unknown recipe "nope" \(built-in: .*cluster-env.*\)/,
  },
  {
    title: 'a missing recipe module',
    runlist: 'name: bad\nrecipes:\n  - recipe: ./nope.ts\n',
    expect: /bad\.yaml:3: recipes\[0\]\.recipe: recipe module \.\/nope\.ts not found/,
  },
  {
    title: 'an unknown attribute',
    runlist: 'name: bad\nrecipes:\n  - recipe: sidecar\n    attributes:\n      inboundPorts: [80]\n      colour: red\n',
    expect: /bad\.yaml:5: recipes\[0\]\.attributes: Unrecognized key: "colour" \(recipe sidecar\)/,
  },
  {
    title: 'a mistyped attribute',
    runlist: sidecar('[8080, "x"]'),
    expect: /bad\.yaml:5: recipes\[0\]\.attributes\.inboundPorts\[1\]: Invalid input: expected number, received string \(recipe sidecar\)/,
  },
  {
    title: 'a port out of range',
    runlist: sidecar('[8080, 70000]'),
    expect: /bad\.yaml:5: recipes\[0\]\.attributes\.inboundPorts\[1\]: port must be between 1 and 65535/,
  },
  { title: 'a port listed twice', runlist: sidecar('[8080, 8080]'), expect: /recipes\[0\]\.attributes\.inboundPorts\[1\]: 8080 is listed twice/ },
  {
    title: 'a missing required attribute',
    runlist: 'name: bad\nrecipes:\n  - recipe: sidecar\n',
    expect: /bad\.yaml:3: recipes\[0\]\.attributes\.inboundPorts: Invalid input: expected array, received undefined \(recipe sidecar\)/,
  },
  {
    title: 'a value neither given nor readable from a cluster',
    runlist: 'name: bad\nrecipes:\n  - recipe: cluster-env\n',
    expect:
      /bad\.yaml:3 recipes\[0\] \(recipe cluster-env\): cluster-env\.serviceCidr is not given, so it must be read from the cluster, but no "cluster" attribute says how to reach it/,
  },
  {
    title: 'an invalid CIDR',
    runlist: 'name: bad\nrecipes:\n  - recipe: cluster-env\n    attributes: { serviceCidr: 10.0.0.0/33 }\n',
    expect: /serviceCidr: expected a CIDR/,
  },
  {
    title: 'a relative path',
    runlist: 'name: bad\nrecipes:\n  - recipe: files\n    attributes:\n      files: [{ path: etc/motd, content: x }]\n',
    expect: /bad\.yaml:5: recipes\[0\]\.attributes\.files\[0\]\.path: path must be absolute \(got "etc\/motd"\)/,
  },
  {
    title: 'a path with ..',
    runlist: 'name: bad\nrecipes:\n  - recipe: dns\n    attributes: { clusterDns: 10.0.0.1, configFile: /etc/../x }\n',
    expect: /recipes\[0\]\.attributes\.configFile: path must not contain "\.\."/,
  },
  {
    title: 'a mode out of range',
    runlist: 'name: bad\nrecipes:\n  - recipe: files\n    attributes:\n      files: [{ path: /motd, content: x, mode: 0o17777 }]\n',
    expect: /recipes\[0\]\.attributes\.files\[0\]\.mode: mode must be between 0000 and 07777/,
  },
  {
    title: 'an owner that does not exist',
    runlist: 'name: bad\nrecipes:\n  - recipe: files\n    attributes:\n      files: [{ path: /motd, content: x, owner: nobody-here }]\n',
    expect:
      /file\[\/motd\] \(declared at recipes\/files\.ts:\d+\): owner "nobody-here" does not exist: it is not in .*\/etc\/passwd and no User in this runlist declares it/,
  },
  { title: 'a missing runlist', args: ['converge', '/nonexistent/runlist.yaml'], expect: /\/nonexistent\/runlist\.yaml: no such runlist file/ },
  { title: 'no runlist at all', args: ['converge'], expect: /meshvm converge: missing the RUNLIST argument/ },
  { title: 'an unknown flag', args: ['converge', 'x.yaml', '--colour'], expect: /Unknown option '--colour'/ },
  { title: 'a malformed --set', runlist: sidecar('[80]'), args: ['--set', 'inboundPorts'], expect: /--set inboundPorts: expected key=value/ },
  {
    title: 'an unknown --set key',
    runlist: sidecar('[80]'),
    args: ['--set', 'inboundPort=[81]'],
    expect:
      /--set inboundPort=\[81\]: unknown attribute "inboundPort": no recipe of this runlist takes it \(known: cluster, (\w+, )*inboundPorts, (\w+, )*proxyUser, /,
  },
  {
    title: 'a mistyped --set value',
    runlist: sidecar('[80]'),
    args: ['--set', 'inboundPorts=[80,x]'],
    expect: /--set inboundPorts=\[80,x\] \(inboundPorts\[1\]\): Invalid input: expected number, received string/,
  },
  {
    title: 'a mistyped node file',
    runlist: sidecar('[80]'),
    node: 'attributes:\n  sidecar:\n    inboundPorts: [80, 0]\n',
    expect: /node\.yaml:3: attributes\.sidecar\.inboundPorts\[1\]: port must be between 1 and 65535/,
  },
  { title: 'a node file that is not YAML', runlist: sidecar('[80]'), node: 'attributes: [\n', expect: /node\.yaml:\d+: malformed YAML/ },
  {
    title: 'a node file --node that is missing',
    runlist: sidecar('[80]'),
    args: ['--node', '/nonexistent/node.yaml'],
    expect: /--node \/nonexistent\/node\.yaml: cannot read the node file: ENOENT/,
  },
  {
    title: 'a root that does not exist',
    runlist: sidecar('[80]'),
    args: ['--root', '/nonexistent/root'],
    expect: /--root \/nonexistent\/root: no such directory/,
  },
  { title: 'a negative --lock-wait', runlist: sidecar('[80]'), args: ['--lock-wait=-1'], expect: /--lock-wait -1: expected a number of seconds/ },
];

for (const c of cases) {
  test(`bad input: ${c.title}`, async (t) => {
    const root = await scratchRoot(t);
    const dir = await scratchRoot(t, 'meshvm-runlists-');
    const args = c.runlist ? ['converge', await writeRunlist(dir, 'bad.yaml', c.runlist), '--root', root] : [];
    if (c.node) args.push('--node', await writeRunlist(dir, 'node.yaml', c.node));
    const before = await snapshot(root);
    const result = await meshvm([...args, ...(c.args ?? [])]);
    t.is(result.exitCode, 1, result.stdout);
    t.regex(result.stderr, c.expect);
    t.is(result.stderr.trim().split('\n').length <= 2, true, `one clear message, got:\n${result.stderr}`);
    t.deepEqual(await snapshot(root), before, 'nothing written');
  });
}

/** Whether a read-only tmpfs can be mounted here (root, or a user namespace that allows it): else the test counts as skipped. */
function readOnlyMountRefused(): string | undefined {
  const probe = fs.mkdtempSync(path.join(os.tmpdir(), 'meshvm-ro-probe-'));
  try {
    const mounted = execaSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', probe], { reject: false });
    if (mounted.exitCode !== 0) return mounted.stderr.trim() || `mount exited ${mounted.exitCode}`;
    execaSync('umount', [probe], { reject: false });
    return undefined;
  } finally {
    fs.rmSync(probe, { recursive: true, force: true });
  }
}
// decided before the tests are declared (ava declares them synchronously)
const mountRefused = readOnlyMountRefused();

(mountRefused ? test.skip : test)(
  `bad input: an unwritable root${mountRefused ? ` (cannot mount a read-only tmpfs here: ${mountRefused})` : ''}`,
  async (t) => {
    const root = await scratchRoot(t);
    const mounted = await execa('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', root], { reject: false });
    t.is(mounted.exitCode, 0, mounted.stderr);
    t.teardown(() => execa('umount', [root], { reject: false }));
    const dir = await scratchRoot(t, 'meshvm-runlists-');
    const result = await meshvm(['converge', await writeRunlist(dir, 'ok.yaml', sidecar('[80]')), '--root', root]);
    t.is(result.exitCode, 1);
    t.regex(result.stderr, /--root .*: is not writable \(EROFS\); converge needs to write there/);
  },
);
