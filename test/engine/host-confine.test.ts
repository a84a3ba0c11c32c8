// Commands under a root: in: 'root' runs confined to the root (unshare --root) or is refused; in: 'host' runs on this machine.
import test from 'ava';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { localHost } from '../../engine/host-local.ts';
import { ROOT_PATH } from '../../engine/host/confine.ts';

import { canaryOutside, exists, minimalRoot, random } from '../helpers/minimal-root.ts';

const BASIC = ['/bin/sh', '/usr/bin/touch', '/usr/bin/env'];

test('in: root under a scratch root writes inside the root, never on this machine', async (t) => {
  const root = await minimalRoot(t, BASIC);
  const canary = await canaryOutside(t);
  const seen: (readonly string[])[] = [];
  const host = localHost({ root, onCommand: (argv) => seen.push(argv) });
  await host.run(['touch', canary], { in: 'root' });
  t.true(await exists(path.join(root, canary)), 'the canary is under the root');
  t.false(await exists(canary), 'no canary on this machine');
  t.deepEqual(seen, [['unshare', `--root=${root}`, '--wd=/', '--', 'touch', canary]]);
});

test('in: root with a cwd starts there, inside the root, and cd / stays in the root', async (t) => {
  const root = await minimalRoot(t, BASIC);
  const atTop = await canaryOutside(t, '/');
  const inTmp = await canaryOutside(t);
  const inWork = await canaryOutside(t, '/work'); // where a relative path would land if cwd were not mapped
  const host = localHost({ root });
  const out = await host.run(['sh', '-c', `touch ${atTop} ${path.basename(inWork)} ${inTmp}; echo $PWD; cd / ; echo $PWD; pwd`], { in: 'root', cwd: '/work' });
  t.is(out.stdout, '/work\n/\n/\n');
  t.true(await exists(path.join(root, atTop)));
  t.true(await exists(path.join(root, inWork)));
  t.true(await exists(path.join(root, inTmp)));
  t.false(await exists(atTop));
  t.false(await exists(inTmp));
  t.false(await exists(inWork));
  await t.throwsAsync(host.run(['sh', '-c', 'true'], { in: 'root', cwd: '/nowhere' }), {
    message: `cannot run \`sh -c true\` inside the root ${root}: its working directory /nowhere does not exist there`,
  });
});

test('in: root keeps LC_ALL=C and the env given, and sets the standard PATH', async (t) => {
  const root = await minimalRoot(t, BASIC);
  const out = await localHost({ root }).query(['env'], { in: 'root', env: { GREETING: 'hello' } });
  const env = new Map(
    out.stdout
      .trim()
      .split('\n')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
  t.is(env.get('PATH'), ROOT_PATH);
  t.is(env.get('LC_ALL'), 'C');
  t.is(env.get('GREETING'), 'hello');
});

test('a program the root does not have is refused, naming the root and onHost, and nothing runs', async (t) => {
  const root = await minimalRoot(t, BASIC);
  await fs.writeFile(path.join(root, 'usr/bin/data'), 'not a program', { mode: 0o644 });
  const canary = await canaryOutside(t);
  const seen: (readonly string[])[] = [];
  const host = localHost({ root, onCommand: (argv) => seen.push(argv) });
  const byName = await t.throwsAsync(host.run(['mkdir', canary], { in: 'root' }));
  t.is(
    byName?.message,
    `the command \`mkdir ${canary}\` runs inside the root ${root} (confined, as the machine being built would run it), ` +
      `but the root has no mkdir (looked in ${ROOT_PATH}); set onHost: true in the spec to run it on this machine instead`,
  );
  const byPath = await t.throwsAsync(host.query(['/usr/bin/mkdir', canary], { in: 'root' }));
  t.regex(byPath?.message ?? '', /runs inside the root .* but the root has no \/usr\/bin\/mkdir; set onHost: true in the spec/);
  const relative = await t.throwsAsync(host.run(['bin/mkdir', canary], { in: 'root', cwd: '/usr' }));
  t.regex(relative?.message ?? '', /the root has no \/usr\/bin\/mkdir;/);
  const notExecutable = await t.throwsAsync(host.run(['data'], { in: 'root' }));
  t.regex(notExecutable?.message ?? '', /the root has no data \(looked in/);
  const notExecutableByPath = await t.throwsAsync(host.run(['/usr/bin/data'], { in: 'root' }));
  t.regex(notExecutableByPath?.message ?? '', /but \/usr\/bin\/data in the root is not an executable file;/);
  t.deepEqual(seen, [], 'nothing was run');
  t.false(await exists(canary));
  t.false(await exists(path.join(root, canary)));
});

test('in: host (the default) runs on this machine, its cwd mapped under the root', async (t) => {
  const root = await minimalRoot(t, BASIC);
  const outside = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-outside-'));
  t.teardown(() => fs.rm(outside, { recursive: true, force: true }));
  const canary = path.join(outside, 'canary');
  const seen: (readonly string[])[] = [];
  const host = localHost({ root, onCommand: (argv) => seen.push(argv) });
  await host.run(['touch', canary]);
  t.true(await exists(canary), 'the canary is on this machine');
  t.false(await exists(path.join(root, canary)));
  await fs.rm(canary);
  await host.run(['touch', canary], { in: 'host' });
  t.true(await exists(canary));
  const pwd = await host.query(['pwd'], { cwd: '/work' });
  t.is(pwd.stdout, `${path.join(root, 'work')}\n`);
  t.deepEqual(seen, [['touch', canary], ['touch', canary], ['pwd']]);
  await t.throwsAsync(host.run(['pwd'], { cwd: '/nowhere' }), { message: /its working directory \/nowhere does not exist \(.*\/nowhere under the root / });
});

test('on root / in: root runs on this machine as given, cwd as given', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-live-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const seen: (readonly string[])[] = [];
  const host = localHost({ onCommand: (argv) => seen.push(argv) });
  t.true(host.live);
  await host.run(['touch', 'made-here'], { in: 'root', cwd: dir });
  t.true(await exists(path.join(dir, 'made-here')));
  t.is((await host.query(['pwd'], { in: 'root', cwd: dir })).stdout, `${dir}\n`);
  t.deepEqual(seen, [['touch', 'made-here'], ['pwd']]);
});

test('a symlink to a program outside the root resolves inside it', async (t) => {
  const withTouch = await minimalRoot(t, BASIC);
  const withoutTouch = await minimalRoot(t, ['/bin/sh']);
  for (const root of [withTouch, withoutTouch]) {
    await fs.mkdir(path.join(root, 'usr/bin'), { recursive: true });
    await fs.symlink('/usr/bin/touch', path.join(root, 'usr/bin/evil'));
    await fs.symlink('../../../../../../../../usr/bin/touch', path.join(root, 'usr/bin/evil-relative'));
  }
  const canary = await canaryOutside(t);
  const refuse = localHost({ root: withoutTouch });
  for (const program of ['evil', '/usr/bin/evil', 'evil-relative', '/usr/bin/evil-relative']) {
    const error = await t.throwsAsync(refuse.run([program, canary], { in: 'root' }), undefined, program);
    t.regex(error?.message ?? '', new RegExp(`the root has no ${program.replace(/\//g, '\\/')}[ ;]`), program);
  }
  t.false(await exists(canary));
  t.false(await exists(path.join(withoutTouch, canary)));
  // the root's own /usr/bin/touch is what the link names: it runs, inside
  await localHost({ root: withTouch }).run(['evil', canary], { in: 'root' });
  t.true(await exists(path.join(withTouch, canary)));
  t.false(await exists(canary));
});

test('query in: root returns a non-zero exit; run throws it', async (t) => {
  const root = await minimalRoot(t, BASIC);
  const host = localHost({ root });
  const out = await host.query(['sh', '-c', 'echo oops >&2; exit 3'], { in: 'root' });
  t.is(out.exitCode, 3);
  t.is(out.stderr, 'oops\n');
  await t.throwsAsync(host.run(['sh', '-c', 'echo oops >&2; exit 3'], { in: 'root' }), {
    message: /^`unshare --root=.* -- sh -c echo oops >&2; exit 3` exited 3:\n {2}oops$/,
  });
});

test('with a netns the confined command runs in both: inside the root and in the namespace', async (t) => {
  const root = await minimalRoot(t, [...BASIC, '/bin/bash']);
  const netns = `meshvm-confine-${random()}`;
  const add = await execa('ip', ['netns', 'add', netns], { reject: false });
  if (add.exitCode !== 0) return t.fail(`ip netns add ${netns}: ${add.stderr}`);
  t.teardown(() => execa('ip', ['netns', 'del', netns], { reject: false }).then(() => undefined));
  // a listener on this machine's loopback: reachable from the machine's network, not from the new namespace
  let connections = 0;
  let connected: () => void = () => {};
  const reached = new Promise<void>((resolve) => (connected = resolve));
  const server = net.createServer((socket) => {
    connections++;
    socket.destroy();
    connected();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as net.AddressInfo).port;
  const canary = await canaryOutside(t);
  const script = `touch ${canary} && echo > /dev/tcp/127.0.0.1/${port}`;

  const seen: (readonly string[])[] = [];
  const inNetns = await localHost({ root, netns, onCommand: (argv) => seen.push(argv) }).query(['bash', '-c', script], { in: 'root' });
  t.deepEqual(seen, [['ip', 'netns', 'exec', netns, 'unshare', `--root=${root}`, '--wd=/', '--', 'bash', '-c', script]]);
  t.true(await exists(path.join(root, canary)), 'it ran inside the root');
  t.false(await exists(canary), 'and not on this machine');
  t.not(inNetns.exitCode, 0, 'the machine loopback is not reachable from the namespace');
  t.regex(inNetns.stderr, /unreachable|refused/i);

  // the same command without the namespace does reach it: the probe tells the two apart
  await fs.rm(path.join(root, canary));
  const control = await localHost({ root }).query(['bash', '-c', script], { in: 'root' });
  t.is(control.exitCode, 0, control.stderr);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([reached, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no connection within 10 s')), 10_000)))]).finally(() =>
    clearTimeout(timer),
  );
  t.is(connections, 1, 'only the command outside the namespace connected');
  t.true(await exists(path.join(root, canary)));
  t.false(await exists(canary));
});

test('a program or working directory reached through a link in a directory anyone can write is refused naming the path; nothing runs', async (t) => {
  const root = await minimalRoot(t, BASIC);
  // a program of the root's own, in /srv/bin, reached three ways through links in /usr/local and /tmp (sticky, 1777)
  await fs.mkdir(path.join(root, 'srv/bin'), { recursive: true });
  await fs.writeFile(path.join(root, 'srv/bin/tool'), '#!/bin/sh\ntouch "$1"\n', { mode: 0o755 });
  await fs.mkdir(path.join(root, 'usr/local'), { recursive: true });
  for (const dir of ['usr/local', 'tmp']) await fs.chmod(path.join(root, dir), 0o1777);
  await fs.symlink('/srv/bin', path.join(root, 'usr/local/bin'));
  await fs.symlink('/srv/bin/tool', path.join(root, 'tmp/tool'));
  await fs.symlink('/srv', path.join(root, 'tmp/work'));
  const canary = `/canary-${random()}`;
  const seen: (readonly string[])[] = [];
  const host = localHost({ root, onCommand: (argv) => seen.push(argv) });
  const anyone = (at: string, to: string, dir: string) =>
    new RegExp(
      `^refusing .*: ${at.replace(/\//g, '\\/')} is a link \\(to ${to.replace(/\//g, '\\/')}\\) in ${dir.replace(/\//g, '\\/')}, a directory anyone can write; .*unsafe path transition`,
    );
  await t.throwsAsync(host.run(['tool', canary], { in: 'root' }), { message: anyone('/usr/local/bin', '/srv/bin', '/usr/local') });
  await t.throwsAsync(host.run(['./tool', canary], { in: 'root', cwd: '/tmp' }), {
    message: /^refusing \/tmp\/tool .*: it is a link \(to \/srv\/bin\/tool\) in \/tmp, a directory anyone can write/,
  });
  await t.throwsAsync(host.run(['/usr/bin/touch', canary], { in: 'root', cwd: '/tmp/work' }), { message: anyone('/tmp/work', '/srv', '/tmp') });
  t.deepEqual(seen, [], 'nothing was run');
  t.false(await exists(path.join(root, canary)));
  // the same program reached through links root owns runs, inside
  await fs.chmod(path.join(root, 'tmp'), 0o755);
  await host.run(['./tool', canary], { in: 'root', cwd: '/tmp' });
  t.true(await exists(path.join(root, canary)));
});
