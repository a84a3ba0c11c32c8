// DnsmasqConfig: rendering as a table, converge once, a real dnsmasq answering from the converged file, dnsmasq --test guarding the live file, no loops.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { DnsmasqConfig, dnsmasqConfigSpec, renderDnsmasqConfig } from '../../resources/dnsmasq-config.ts';
import { Execute } from '../../resources/execute.ts';
import { localHost } from '../../engine/host-local.ts';
import { converge, convergesOnce, PROJECT, scratchRoot, seed, snapshot } from '../helpers/scratch.ts';

const FIXTURES = path.join(PROJECT, 'test/fixtures/dnsmasq');
const PORT = 5354;
const CLUSTER_DNS_PORT = 5355;

/** Starts dnsmasq in the foreground; killed and waited for when the test ends (PID 1 here reaps nothing). */
async function startDnsmasq(t: ExecutionContext, args: string[], probe: { address: string; port: number; name: string }): Promise<void> {
  const dir = await scratchRoot(t, 'meshvm-dnsmasq-');
  const child = spawn('dnsmasq', ['--keep-in-foreground', '--no-hosts', `--pid-file=${dir}/pid`, '--log-facility=-', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (chunk) => (log += chunk));
  const exited = once(child, 'exit');
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  });
  for (let i = 0; i < 50; i++) {
    if (child.exitCode !== null) throw new Error(`dnsmasq exited ${child.exitCode}:\n${log}`);
    if ((await dig(probe.address, probe.port, probe.name)).length) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`dnsmasq did not answer ${probe.name} on ${probe.address}#${probe.port}:\n${log}`);
}

async function dig(address: string, port: number, name: string, extra: string[] = ['+short']): Promise<string> {
  const result = await execa('dig', [...extra, '+time=1', '+tries=1', `@${address}`, '-p', String(port), name], { reject: false });
  return String(result.stdout).trim();
}

const base = { upstream: { from: 'none' as const } };

test('rendering is a pure function of the spec: a table of cases', async (t) => {
  const spec = (input: object) => dnsmasqConfigSpec.parse(input);
  const body = (input: object) =>
    renderDnsmasqConfig(spec(input))
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
  const cases: { name: string; input: object; lines: string[] }[] = [
    { name: 'defaults: loopback, bound, nothing upstream', input: base, lines: ['listen-address=127.0.0.1', 'bind-interfaces', 'no-resolv'] },
    {
      name: 'a port is written only when set',
      input: { ...base, port: 5354 },
      lines: ['listen-address=127.0.0.1', 'port=5354', 'bind-interfaces', 'no-resolv'],
    },
    {
      name: 'bindInterfaces off',
      input: { ...base, bindInterfaces: false, listenAddresses: ['127.0.0.1', '::1'] },
      lines: ['listen-address=127.0.0.1', 'listen-address=::1', 'no-resolv'],
    },
    {
      name: 'explicit upstream servers, in the order given',
      input: { upstream: { from: 'servers', servers: [{ server: '10.0.0.2' }, { server: 'fd00::53', port: 5353 }] } },
      lines: ['listen-address=127.0.0.1', 'bind-interfaces', 'no-resolv', 'server=10.0.0.2', 'server=fd00::53#5353'],
    },
    {
      name: 'a resolv-file (default /etc/resolv.conf)',
      input: { upstream: { from: 'resolv-file' } },
      lines: ['listen-address=127.0.0.1', 'bind-interfaces', 'resolv-file=/etc/resolv.conf'],
    },
    {
      name: 'forwards sorted by domain, with ports',
      input: {
        ...base,
        forward: [
          { domain: 'svc.cluster.local', server: '10.96.0.10', port: 10053 },
          { domain: 'consul', server: '127.0.0.1', port: 8600 },
        ],
      },
      lines: ['listen-address=127.0.0.1', 'bind-interfaces', 'no-resolv', 'server=/consul/127.0.0.1#8600', 'server=/svc.cluster.local/10.96.0.10#10053'],
    },
    {
      name: 'addresses sorted by name, IPv4 and IPv6 for one name',
      input: {
        ...base,
        addresses: [
          { name: 'istiod.istio-system.svc', address: 'fd00::6' },
          { name: 'istio-pilot', address: '10.150.0.6' },
          { name: 'istiod.istio-system.svc', address: '10.150.0.6' },
        ],
      },
      lines: [
        'listen-address=127.0.0.1',
        'bind-interfaces',
        'no-resolv',
        'address=/istio-pilot/10.150.0.6',
        'address=/istiod.istio-system.svc/10.150.0.6',
        'address=/istiod.istio-system.svc/fd00::6',
      ],
    },
    {
      name: 'extra options last, as given',
      input: { ...base, extraOptions: ['log-queries', 'cache-size=1000'] },
      lines: ['listen-address=127.0.0.1', 'bind-interfaces', 'no-resolv', 'log-queries', 'cache-size=1000'],
    },
  ];
  for (const c of cases) t.deepEqual(body(c.input), c.lines, c.name);

  const kubedns = {
    path: '/etc/dnsmasq.d/kubedns',
    upstream: { from: 'resolv-file', path: '/run/systemd/resolve/resolv.conf' },
    forward: [{ domain: 'svc.cluster.local', server: '10.63.240.10' }],
    addresses: ['istio-pilot', 'istio-policy', 'istio-telemetry', 'istio-citadel', 'istio-ca'].flatMap((name) => {
      const address = name === 'istio-pilot' ? '10.150.0.6' : name === 'istio-citadel' || name === 'istio-ca' ? '10.150.0.8' : '10.150.0.7';
      return [
        { name, address },
        { name: `${name}.istio-system`, address },
      ];
    }),
  };
  const golden = await fs.readFile(path.join(FIXTURES, 'istio-1.0-kubedns.conf'), 'utf8');
  t.is(renderDnsmasqConfig(spec(kubedns)), golden, "the equivalent of Istio 1.0's generateDnsmasq output");
  const shuffled = { ...kubedns, addresses: [...kubedns.addresses].reverse() };
  t.is(renderDnsmasqConfig(spec(shuffled)), golden, 'the order of the declaration does not matter');
  t.regex(golden, /^# Managed by meshvm \(dnsmasq_config\[\/etc\/dnsmasq\.d\/kubedns\]\)/);
  t.notRegex(golden, /\d{4}-\d\d-\d\d|\d\d:\d\d/, 'no timestamps');
});

test('converges once, then zero changes; plan before it changes nothing', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc/dnsmasq.d'), { recursive: true });
  const declare = () => [DnsmasqConfig({ path: '/etc/dnsmasq.d/kubedns', ...base, addresses: [{ name: 'istio-pilot', address: '10.150.0.6' }] })];
  const before = await snapshot(root);
  const plan = await converge(localHost({ root }), declare(), 'plan');
  t.is(plan.resources[0]!.status, 'would-change');
  t.regex(plan.resources[0]!.changes[0]!, /^file\[\/etc\/dnsmasq\.d\/kubedns\]:\n {2}create\n {2}set content \(\d+ lines\)\n/);
  t.deepEqual(await snapshot(root), before, 'plan wrote nothing');
  await convergesOnce(t, root, declare);
  const stat = await fs.stat(path.join(root, 'etc/dnsmasq.d/kubedns'));
  t.is(stat.mode & 0o7777, 0o644);
  t.is(stat.uid, 0);
});

test('a mode drift is repaired without rewriting the file', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc/dnsmasq.d'), { recursive: true });
  const declare = () => [DnsmasqConfig({ path: '/etc/dnsmasq.d/kubedns', ...base })];
  await converge(localHost({ root }), declare());
  const file = path.join(root, 'etc/dnsmasq.d/kubedns');
  await fs.chmod(file, 0o600);
  const inode = (await fs.stat(file)).ino;
  const result = await converge(localHost({ root }), declare());
  t.deepEqual(result.resources[0]!.changes, ['file[/etc/dnsmasq.d/kubedns]:\n  set mode to 0644 (was 0600)']);
  t.is((await fs.stat(file)).ino, inode);
});

test('a real dnsmasq started on the converged drop-in answers the declared names and forwards the cluster domain', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc/dnsmasq.d'), { recursive: true });
  const listen = '127.83.1.1';
  const clusterDns = '127.83.1.2';
  // the fake cluster DNS: a second dnsmasq answering one svc.cluster.local name
  await startDnsmasq(
    t,
    [
      `--listen-address=${clusterDns}`,
      `--port=${CLUSTER_DNS_PORT}`,
      '--bind-interfaces',
      '--no-resolv',
      '--conf-file=/dev/null',
      '--address=/kubernetes.default.svc.cluster.local/10.96.0.1',
    ],
    {
      address: clusterDns,
      port: CLUSTER_DNS_PORT,
      name: 'kubernetes.default.svc.cluster.local',
    },
  );
  await convergesOnce(t, root, () => [
    DnsmasqConfig({
      path: '/etc/dnsmasq.d/kubedns',
      listenAddresses: [listen],
      port: PORT,
      upstream: { from: 'none' },
      forward: [{ domain: 'svc.cluster.local', server: clusterDns, port: CLUSTER_DNS_PORT }],
      addresses: [
        { name: 'istio-pilot', address: '10.150.0.6' },
        { name: 'istio-pilot.istio-system', address: '10.150.0.6' },
      ],
    }),
  ]);
  // as a distribution starts it: the drop-in directory, nothing else
  await startDnsmasq(t, ['--conf-file=/dev/null', `--conf-dir=${path.join(root, 'etc/dnsmasq.d')}`], { address: listen, port: PORT, name: 'istio-pilot' });
  t.is(await dig(listen, PORT, 'istio-pilot.istio-system'), '10.150.0.6');
  t.is(await dig(listen, PORT, 'istio-pilot'), '10.150.0.6');
  t.is(await dig(listen, PORT, 'kubernetes.default.svc.cluster.local'), '10.96.0.1', 'forwarded to the cluster DNS');
  t.regex(await dig(listen, PORT, 'example.com', []), /status: REFUSED/, 'no upstream: other names are refused');
});

test('a config dnsmasq rejects never reaches the live file, and the error says what dnsmasq said', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc/dnsmasq.d'), { recursive: true });
  await converge(localHost({ root }), [DnsmasqConfig({ path: '/etc/dnsmasq.d/kubedns', ...base })]);
  const before = await snapshot(root);
  const result = await converge(localHost({ root }), [DnsmasqConfig({ path: '/etc/dnsmasq.d/kubedns', ...base, extraOptions: ['cache-size=lots'] })]);
  t.true(result.failed);
  const error = result.resources[0]!.error!;
  t.regex(
    error,
    /dnsmasq_config\[\/etc\/dnsmasq\.d\/kubedns\] > file\[\/etc\/dnsmasq\.d\/kubedns\]: apply failed: verify command `dnsmasq --test --conf-file=%\{path\}` refused the new content \(exit 1\)/,
  );
  t.regex(error, /dnsmasq: error at line \d+ of the new \/etc\/dnsmasq\.d\/kubedns\n {2}line \d+: cache-size=lots/);
  t.regex(error, /the live \/etc\/dnsmasq\.d\/kubedns was left untouched/);
  t.notRegex(error, /meshvm-new/, 'the staged file name is not shown');
  t.deepEqual(await snapshot(root), before, 'live file, directory and backups as they were');
});

test('notifies a restart only when the file changed, and not when dnsmasq refused it', async (t) => {
  const root = await scratchRoot(t);
  await fs.mkdir(path.join(root, 'etc/dnsmasq.d'), { recursive: true });
  const log = path.join(root, 'restarts');
  const restarts = async () => (await fs.readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  const declare = (extraOptions: string[]) => {
    // stands in for the dnsmasq Service resource recipes will notify
    const restart = Execute({ onHost: true, name: 'restart dnsmasq', command: ['sh', '-c', 'echo restart >> "$0"', log], onlyWhenNotified: true });
    return [DnsmasqConfig({ path: '/etc/dnsmasq.d/kubedns', ...base, extraOptions }, { notifies: restart }), restart];
  };
  await converge(localHost({ root }), declare([]));
  t.is(await restarts(), 1);
  await converge(localHost({ root }), declare([]));
  t.is(await restarts(), 1, 'unchanged: no restart');
  const refused = await converge(localHost({ root }), declare(['cache-size=lots']));
  t.true(refused.failed);
  t.deepEqual(refused.notifications, []);
  t.is(await restarts(), 1, 'refused: the live file is the old one, no restart');
  await converge(localHost({ root }), declare(['cache-size=1000']));
  t.is(await restarts(), 2);
});

test('dnsmasq never reads a resolv.conf that points back at itself', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, {
    '/etc/resolv.conf': '# from DHCP\nnameserver 127.0.0.1\nnameserver 10.0.0.2\n',
    '/run/systemd/resolve/resolv.conf': 'nameserver 10.0.0.2\n',
  });
  await fs.mkdir(path.join(root, 'etc/dnsmasq.d'));
  const looping = await converge(localHost({ root }), [DnsmasqConfig({ upstream: { from: 'resolv-file' } })], 'plan');
  t.true(looping.failed);
  t.regex(
    looping.resources[0]!.error!,
    /read failed: dnsmasq would ask itself: \/etc\/resolv\.conf lists nameserver 127\.0\.0\.1, where this dnsmasq listens \(port 53\)\. Use upstream \{ from: 'servers'/,
  );

  t.false((await converge(localHost({ root }), [DnsmasqConfig({ upstream: { from: 'resolv-file' }, port: 5354 })], 'plan')).failed, 'another port: no loop');
  t.false(
    (await converge(localHost({ root }), [DnsmasqConfig({ upstream: { from: 'resolv-file', path: '/run/systemd/resolve/resolv.conf' } })], 'plan')).failed,
  );
  t.false(
    (await converge(localHost({ root }), [DnsmasqConfig({ upstream: { from: 'resolv-file', path: '/run/missing.conf' } })], 'plan')).failed,
    'no file yet, no loop',
  );

  // a symlinked resolv.conf is followed inside the root, not out to this machine's files
  await fs.rm(path.join(root, 'etc/resolv.conf'));
  await fs.symlink('/run/systemd/resolve/resolv.conf', path.join(root, 'etc/resolv.conf'));
  await fs.writeFile(path.join(root, 'run/systemd/resolve/resolv.conf'), 'nameserver ::1\n');
  const viaLink = await converge(localHost({ root }), [DnsmasqConfig({ upstream: { from: 'resolv-file' }, listenAddresses: ['127.0.0.1', '::1'] })], 'plan');
  t.regex(viaLink.resources[0]!.error ?? '', /lists nameserver ::1/);
});

test('bad specs are refused at declaration, naming the ref and the field', (t) => {
  const ref = /dnsmasq_config\[\/etc\/dnsmasq\.d\/kubedns\] \(declared at test\/resources\/dnsmasq-config\.test\.ts:\d+\)/;
  const bad = (input: object) => () => DnsmasqConfig({ path: '/etc/dnsmasq.d/kubedns', ...input } as never);
  t.throws(bad({}), { message: new RegExp(ref.source + /: upstream: say where dnsmasq sends the names not declared here/.source) });
  t.throws(bad({ ...base, addresses: [{ name: 'istio-pilot', address: '10.150.0.300' }] }), { message: /addresses\[0\]\.address: expected an IP address/ });
  t.throws(bad({ ...base, addresses: [{ name: 'Istio_Pilot', address: '10.150.0.6' }] }), { message: /addresses\[0\]\.name: expected a DNS name/ });
  t.throws(bad({ ...base, forward: [{ domain: 'svc.cluster.local', server: '10.0.0.10', port: 0 }] }), {
    message: /forward\[0\]\.port: port must be between 1 and 65535/,
  });
  t.throws(bad({ ...base, port: 70000 }), { message: /port: port must be between 1 and 65535/ });
  t.throws(bad({ ...base, listenAddresses: ['127.0.0.1', '127.0.0.1'] }), { message: /listenAddresses\[1\]: 127\.0\.0\.1 is listed twice/ });
  t.throws(
    bad({
      ...base,
      forward: [
        { domain: 'svc.cluster.local', server: '10.0.0.10' },
        { domain: 'svc.cluster.local', server: '10.0.0.10' },
      ],
    }),
    { message: /forward\[1\]: forwarding svc\.cluster\.local to 10\.0\.0\.10 is listed twice \(forward\[0\] and forward\[1\]\)/ },
  );
  t.throws(
    bad({
      ...base,
      addresses: [
        { name: 'istio-pilot', address: '10.150.0.6' },
        { name: 'istio-pilot', address: '10.150.0.7' },
      ],
    }),
    { message: /addresses\[1\]\.name: an IPv4 address for istio-pilot is listed twice \(addresses\[0\] and addresses\[1\]\)/ },
  );
  t.throws(bad({ ...base, forward: [{ domain: 'svc.cluster.local', server: '10.0.0.10' }], addresses: [{ name: 'svc.cluster.local', address: '10.0.0.1' }] }), {
    message: /addresses\[0\]\.name: svc\.cluster\.local is both forwarded \(forward\[0\]\) and answered here/,
  });
  t.throws(bad({ ...base, forward: [{ domain: 'cluster.local', server: '127.0.0.1' }] }), {
    message: /forward\[0\]\.server: 127\.0\.0\.1#53 is where this dnsmasq listens: it would forward to itself/,
  });
  t.throws(bad({ upstream: { from: 'servers', servers: [{ server: '127.0.0.1', port: 5354 }] }, port: 5354 }), {
    message: /upstream\.servers\[0\]\.server: .*forward to itself/,
  });
  t.throws(bad({ upstream: { from: 'dhcp' } }), { message: /upstream\.from: expected from: 'none', 'servers' or 'resolv-file'/ });
  t.throws(bad({ ...base, extraOptions: ['address=/x/1.2.3.4'] }), { message: /extraOptions\[0\]: "address" is set through addresses, not extraOptions/ });
  t.throws(bad({ ...base, extraOptions: ['--log-queries'] }), { message: /extraOptions\[0\]: expected one dnsmasq option without "--"/ });
  t.throws(bad({ ...base, path: 'dnsmasq.d/kubedns' }), { message: /path: path must be absolute/ });
  // @ts-expect-error an unknown field is a type error, and refused at run time too
  t.throws(() => DnsmasqConfig({ ...base, servers: [] }), { message: /Unrecognized key: "servers"/ });
});
