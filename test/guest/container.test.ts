// Owns the smoke tests of the booted-guest harness: systemd, dnsmasq, apt, stand-ins in the namespace, cloud-init at boot.
import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { bootContainer, canBootContainers } from '../helpers/guest/container.ts';
import type { Guest } from '../helpers/guest/container.ts';
import { ensureRootfs } from '../helpers/guest/rootfs.ts';

const gate = await canBootContainers();
const guestTest = gate.ok ? test : test.skip;
if (!gate.ok) {
  const reason = gate.reason;
  // a skip is a skip: counted as skipped, the reason in its title
  test.skip(`guest tests are skipped on this machine (${reason})`, () => {});
}

const guests: Guest[] = [];
async function boot(...args: Parameters<typeof bootContainer>): Promise<Guest> {
  const guest = await bootContainer(...args);
  guests.push(guest);
  return guest;
}

if (gate.ok) {
  test.before('build or reuse the guest images', async (t) => {
    t.timeout(20 * 60_000, 'building the Debian 12 images (run scripts/build-test-rootfs.ts ahead in CI)');
    const started = Date.now();
    await ensureRootfs({ log: (line) => t.log(line) });
    await ensureRootfs({ resolved: true, log: (line) => t.log(line) });
    t.log(`images ready in ${Date.now() - started} ms`);
  });
  test.after.always('stop every guest', async () => {
    await Promise.all(guests.map((g) => g.stop()));
  });
}

guestTest('a booted guest runs systemd, and dnsmasq enabled there answers dig on loopback', async (t) => {
  const guest = await boot();
  const state = await guest.waitForBoot();
  t.log(`boot ${state.bootMs} ms, ${state.state}`);
  for (const unit of state.failedUnits) t.log((await guest.exec(['journalctl', '-b', '--no-pager', '-u', unit])).stdout);
  t.is((await guest.exec(['systemctl', 'is-active', 'dbus.service'])).stdout, 'active');
  t.is((await guest.exec(['systemctl', 'is-enabled', 'dnsmasq.service'])).stdout, 'disabled');

  await guest.writeFile('/etc/dnsmasq.d/meshvm-test.conf', 'address=/istio-pilot.istio-system/10.150.0.6\n');
  const enable = await guest.exec(['systemctl', 'enable', '--now', 'dnsmasq.service']);
  t.is(enable.exitCode, 0, enable.stderr);
  t.is((await guest.exec(['systemctl', 'is-active', 'dnsmasq.service'])).stdout, 'active');
  const dig = await guest.exec(['dig', '+short', '+time=2', '+tries=1', '@127.0.0.1', 'istio-pilot.istio-system']);
  t.is(dig.stdout, '10.150.0.6', dig.stderr);

  // exec semantics: exit code and stderr come back; a timeout rejects and kills the command in the guest.
  const failed = await guest.exec(['sh', '-c', 'echo oops >&2; exit 3']);
  t.deepEqual(failed, { stdout: '', stderr: 'oops', exitCode: 3 });
  await t.throwsAsync(guest.exec(['sleep', '30'], { timeoutMs: 1000 }), { message: /timed out/ });
  t.is((await guest.exec(['pgrep', '-x', 'sleep'])).exitCode, 1);
  t.is(await guest.readFile('/etc/dnsmasq.d/meshvm-test.conf'), 'address=/istio-pilot.istio-system/10.150.0.6\n');
  t.is(await guest.readFile('/etc/no-such-file'), undefined);

  const dir = await mkdtemp(path.join(tmpdir(), 'meshvm-copy-'));
  try {
    await mkdir(path.join(dir, 'sub'));
    await writeFile(path.join(dir, 'sub', 'run.sh'), '#!/bin/sh\necho copied\n', { mode: 0o755 });
    await guest.copyIn(dir, '/opt/copied');
    t.is((await guest.exec(['/opt/copied/sub/run.sh'])).stdout, 'copied');
    await guest.copyIn(path.join(dir, 'sub', 'run.sh'), '/usr/local/bin/run-copied');
    t.is((await guest.exec(['run-copied'])).stdout, 'copied');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  await guest.stop();
  t.false((await execa('ip', ['netns', 'list'])).stdout.includes(guest.netns));
  await guest.stop(); // idempotent
});

guestTest("apt installs a package from the image's local repository", async (t) => {
  const guest = await boot();
  await guest.waitForBoot();
  t.is((await guest.exec(['dpkg-query', '-W', '-f=${Status}', 'hello'])).exitCode, 1);
  const install = await guest.exec(['apt-get', 'install', '--yes', 'hello'], {
    env: { DEBIAN_FRONTEND: 'noninteractive' },
    timeoutMs: 120_000,
  });
  t.is(install.exitCode, 0, install.stderr);
  t.is((await guest.exec(['hello'])).stdout, 'Hello, world!');
  t.is((await guest.exec(['apt-get', 'update'], { timeoutMs: 60_000 })).exitCode, 0);
  await guest.stop();
});

guestTest("a stand-in started in the guest's namespace is reachable from the guest on 127.0.0.1", async (t) => {
  const guest = await boot({ node: true });
  await guest.waitForBoot();
  const script = `require('node:http').createServer((req, res) => res.end('stand-in ' + req.url))
    .listen(18080, '127.0.0.1', () => console.log('listening'));`;
  const [cmd, ...args] = guest.netnsArgv([process.execPath, '-e', script]);
  const server = execa(cmd, args, { reject: false });
  try {
    await new Promise<void>((resolve, reject) => {
      server.stdout?.on('data', (d: Buffer) => {
        if (d.toString().includes('listening')) resolve();
      });
      server.then((r) => reject(new Error(`stand-in exited: ${r.stderr}`)), reject);
    });
    const r = await guest.exec(['node', '-e', 'fetch("http://127.0.0.1:18080/v1/x").then(r => r.text()).then(console.log)']);
    t.is(r.stdout, 'stand-in /v1/x', r.stderr);
  } finally {
    server.kill('SIGTERM');
    await server; // PID 1 here does not reap: always wait for what we start
  }
  await guest.stop();
});

guestTest("cloud-init runs the NoCloud seed's runcmd at boot", async (t) => {
  const results = await mkdtemp(path.join(tmpdir(), 'meshvm-results-'));
  try {
    const guest = await boot({
      binds: [{ host: results, guest: '/mnt/results', readOnly: false }],
      seed: {
        userData: [
          '#cloud-config',
          'runcmd:',
          '  - [sh, -c, "cloud-init query instance_id > /mnt/results/instance-id"]',
          '  - [sh, -c, "hostname > /mnt/results/hostname"]',
          '',
        ].join('\n'),
      },
    });
    const state = await guest.waitForBoot();
    t.log(`boot with cloud-init ${state.bootMs} ms`);
    t.regex(await guest.waitForCloudInit(), /DataSourceNoCloud/);
    t.regex(await readFile(path.join(results, 'instance-id'), 'utf8'), new RegExp(`^iid-${guest.name}-\\d+\\n$`));
    t.is(await readFile(path.join(results, 'hostname'), 'utf8'), `${guest.name}\n`);
    await guest.stop();
  } finally {
    await rm(results, { recursive: true, force: true });
  }
});

guestTest('a guest that powers itself off after cloud-init (boot, run, power off) is waited for', async (t) => {
  const results = await mkdtemp(path.join(tmpdir(), 'meshvm-results-'));
  try {
    const started = Date.now();
    const guest = await boot({
      binds: [{ host: results, guest: '/mnt/results', readOnly: false }],
      seed: {
        userData: [
          '#cloud-config',
          'runcmd:',
          '  - |',
          '    systemctl is-system-running > /mnt/results/state || true',
          'power_state: {mode: poweroff, condition: true}',
          '',
        ].join('\n'),
      },
    });
    await guest.waitForExit(60_000);
    t.log(`boot, run, power off: ${Date.now() - started} ms`);
    t.regex(await readFile(path.join(results, 'state'), 'utf8'), /^(starting|running)\n$/);
    await guest.stop();
  } finally {
    await rm(results, { recursive: true, force: true });
  }
});

guestTest('the resolved image runs systemd-resolved with the stub in /etc/resolv.conf', async (t) => {
  const guest = await boot({ rootfs: { resolved: true } });
  await guest.waitForBoot();
  t.is((await guest.exec(['systemctl', 'is-active', 'systemd-resolved.service'])).stdout, 'active');
  t.is((await guest.exec(['readlink', '/etc/resolv.conf'])).stdout, '../run/systemd/resolve/stub-resolv.conf');
  t.regex((await guest.exec(['resolvectl', 'status'])).stdout, /resolv\.conf mode: stub/);
  await guest.stop();
});
