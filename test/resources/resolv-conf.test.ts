// ResolvConf: who owns the resolver (a table over fixtures), and converging each owner's way on scratch roots built with its telltale files.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  ResolvConf,
  chooseStrategy,
  detectResolverOwner,
  readResolverFacts,
  resolvConfSpec,
  type ResolverFacts,
  type Telltale,
} from '../../resources/resolv-conf/index.ts';
import { localHost } from '../../engine/host-local.ts';
import type { Host } from '../../engine/host.ts';
import { converge, convergesOnce, scratchRoot, seed, snapshot } from '../helpers/scratch.ts';
import { fixture, hostRoot } from '../helpers/resolver-hosts.ts';

/** A stand-in for a booted machine: the scratch root posing as '/', systemd "running", commands recorded instead of run. */
function liveHost(root: string, ran: string[][], onRun?: (argv: readonly string[]) => Promise<void>): Host {
  const host = localHost({ root });
  return {
    ...host,
    root: '/',
    live: true,
    async run(argv) {
      ran.push([...argv]);
      await onRun?.(argv);
      return { stdout: '', stderr: '', exitCode: 0 };
    },
  };
}

const read = (root: string, file: string) => fs.readFile(path.join(root, file), 'utf8');
const HEADER = '# Managed by meshvm (resolv_conf[meshvm]); edits here are overwritten on the next run.\n';

test('detection: who owns the resolver, from the facts, as a table', async (t) => {
  const file = async (name: string) => ({ type: 'file' as const, content: await fixture(name) });
  const link = (target: string, content?: string) => ({ type: 'symlink' as const, target, ...(content !== undefined && { content }) });
  const cases: { name: string; facts: ResolverFacts; owner: string; strategy: string | RegExp }[] = [
    {
      name: 'resolved stub symlink',
      facts: { resolvConf: link('/run/systemd/resolve/stub-resolv.conf', await fixture('stub-resolv.conf')), has: ['systemd-resolved'] },
      owner: 'systemd-resolved/stub',
      strategy: 'resolved',
    },
    {
      name: 'resolved static file symlink',
      facts: { resolvConf: link('/usr/lib/systemd/resolv.conf'), has: [] },
      owner: 'systemd-resolved/static',
      strategy: 'resolved',
    },
    {
      name: 'resolved uplink symlink',
      facts: { resolvConf: link('/run/systemd/resolve/resolv.conf'), has: ['systemd-resolved'] },
      owner: 'systemd-resolved/uplink',
      strategy: 'resolved',
    },
    {
      name: 'resolved via /var/run',
      facts: { resolvConf: link('/var/run/systemd/resolve/stub-resolv.conf'), has: [] },
      owner: 'systemd-resolved/stub',
      strategy: 'resolved',
    },
    {
      name: 'a copy of the stub file',
      facts: { resolvConf: await file('stub-resolv.conf'), has: ['systemd-resolved'] },
      owner: 'systemd-resolved/copy',
      strategy: 'resolved',
    },
    {
      name: 'a stub copy without resolved installed is a plain file',
      facts: { resolvConf: await file('stub-resolv.conf'), has: [] },
      owner: 'file',
      strategy: 'file',
    },
    {
      name: 'resolvconf symlink',
      facts: { resolvConf: link('/run/resolvconf/resolv.conf'), has: ['resolvconf', 'dhclient'] },
      owner: 'resolvconf',
      strategy: 'resolvconf',
    },
    {
      name: 'NetworkManager marker',
      facts: { resolvConf: await file('networkmanager-resolv.conf'), has: ['network-manager'], networkManager: { meshvmDropIn: false } },
      owner: 'network-manager',
      strategy: 'network-manager',
    },
    {
      name: 'NetworkManager symlink (rc-manager=symlink)',
      facts: { resolvConf: link('/run/NetworkManager/resolv.conf'), has: ['network-manager'], networkManager: { meshvmDropIn: false } },
      owner: 'network-manager',
      strategy: 'network-manager',
    },
    {
      name: "meshvm's file with meshvm's NetworkManager drop-in stays NetworkManager's way",
      facts: {
        resolvConf: { type: 'file', content: HEADER + 'nameserver 127.0.0.1\n' },
        has: ['network-manager', 'dhclient'],
        networkManager: { meshvmDropIn: true, rcManager: 'unmanaged' },
      },
      owner: 'network-manager',
      strategy: 'network-manager',
    },
    {
      name: 'NetworkManager with its own dnsmasq is refused',
      facts: { resolvConf: await file('networkmanager-resolv.conf'), has: ['network-manager'], networkManager: { meshvmDropIn: false, dns: 'dnsmasq' } },
      owner: 'network-manager',
      strategy: /NetworkManager runs its own dnsmasq .*dns=dnsmasq.*\/etc\/NetworkManager\/dnsmasq\.d\//,
    },
    { name: 'dhclient-written file', facts: { resolvConf: await file('dhclient-resolv.conf'), has: ['dhclient'] }, owner: 'dhclient', strategy: 'file' },
    {
      name: "meshvm's own file, dhclient installed",
      facts: { resolvConf: { type: 'file', content: HEADER + 'nameserver 127.0.0.1\n' }, has: ['dhclient'] },
      owner: 'dhclient',
      strategy: 'file',
    },
    { name: 'plain file', facts: { resolvConf: await file('plain-resolv.conf'), has: [] }, owner: 'file', strategy: 'file' },
    { name: 'no /etc/resolv.conf', facts: { resolvConf: { type: 'missing' }, has: [] }, owner: 'file', strategy: 'file' },
    {
      name: 'dhcpcd',
      facts: { resolvConf: await file('dhcpcd-resolv.conf'), has: [] },
      owner: 'unsupported/dhcpcd',
      strategy: /maintained by dhcpcd .*add "nohook resolv\.conf" to \/etc\/dhcpcd\.conf, then set manage: file/,
    },
    {
      name: 'openresolv',
      facts: { resolvConf: await file('openresolv-resolv.conf'), has: ['openresolv'] },
      owner: 'unsupported/openresolv',
      strategy: /maintained by openresolv .*name_servers=/,
    },
    {
      name: 'netconfig',
      facts: { resolvConf: await file('netconfig-resolv.conf'), has: [] },
      owner: 'unsupported/netconfig',
      strategy: /maintained by netconfig .*NETCONFIG_DNS_STATIC_SERVERS/,
    },
    { name: 'connman', facts: { resolvConf: link('/run/connman/resolv.conf'), has: [] }, owner: 'unsupported/connman', strategy: /maintained by connman/ },
    {
      name: 'a symlink to who knows where',
      facts: { resolvConf: link('/mnt/wsl/resolv.conf'), has: [] },
      owner: 'unsupported/an unknown program',
      strategy: /symlink to \/mnt\/wsl\/resolv\.conf.*set manage: file \(the symlink is replaced\)/,
    },
  ];
  for (const c of cases) {
    const owner = detectResolverOwner(c.facts);
    const label =
      owner.owner === 'systemd-resolved' ? `${owner.owner}/${owner.via}` : owner.owner === 'unsupported' ? `unsupported/${owner.name}` : owner.owner;
    t.is(label, c.owner, c.name);
    if (typeof c.strategy === 'string') t.is<string, string>(chooseStrategy(owner, 'auto', c.facts), c.strategy, c.name);
    else t.throws(() => chooseStrategy(owner, 'auto', c.facts), { message: c.strategy }, c.name);
    t.is(chooseStrategy(owner, 'file', c.facts), 'file', `${c.name}: manage: file always wins`);
  }
});

test('detection: the facts read from scratch roots built like each owner leaves a host', async (t) => {
  const expected: Record<string, { owner: string; has: Telltale[] }> = {
    resolved: { owner: 'systemd-resolved', has: ['systemd-resolved'] },
    'resolved-uplink': { owner: 'systemd-resolved', has: ['systemd-resolved'] },
    dhclient: { owner: 'dhclient', has: ['dhclient'] },
    'dhclient-leases-only': { owner: 'dhclient', has: ['dhclient'] },
    plain: { owner: 'file', has: [] },
    missing: { owner: 'file', has: [] },
    resolvconf: { owner: 'resolvconf', has: ['resolvconf', 'dhclient'] },
    'network-manager': { owner: 'network-manager', has: ['network-manager'] },
    'network-manager-symlink': { owner: 'network-manager', has: ['network-manager'] },
    dhcpcd: { owner: 'unsupported', has: [] },
    openresolv: { owner: 'unsupported', has: ['openresolv'] },
    netconfig: { owner: 'unsupported', has: [] },
    'unknown-symlink': { owner: 'unsupported', has: [] },
  };
  for (const [kind, want] of Object.entries(expected)) {
    const root = await hostRoot(t, kind);
    const facts = await readResolverFacts(localHost({ root }), 'meshvm');
    t.is<string, string>(detectResolverOwner(facts).owner, want.owner, kind);
    t.deepEqual([...facts.has].sort(), [...want.has].sort(), kind);
  }
  const nm = await readResolverFacts(localHost({ root: await hostRoot(t, 'network-manager-dnsmasq') }), 'meshvm');
  t.deepEqual(nm.networkManager, { meshvmDropIn: false, dns: 'dnsmasq' }, "NetworkManager's conf.d is read");
  const resolved = await readResolverFacts(localHost({ root: await hostRoot(t, 'resolved') }), 'meshvm');
  t.regex(resolved.resolvConf.content ?? '', /nameserver 127\.0\.0\.53/, "the symlink is followed inside the root, not to this machine's /run");
});

test('systemd-resolved: a drop-in with DNS= and route-only Domains=, /etc/resolv.conf left alone, no restart under a scratch root', async (t) => {
  const root = await hostRoot(t, 'resolved');
  const declare = () => [ResolvConf({ nameservers: ['127.0.0.1:5354'], search: ['svc.cluster.local'] })];
  const plan = await converge(localHost({ root }), declare(), 'plan');
  // a composite: its parts' lines under their refs, then the action (skipped under a scratch root, and saying why)
  t.deepEqual(
    plan.resources[0]!.changes.map((l) => l.split('\n')[0]),
    [
      'directory[/etc/systemd/resolved.conf.d]:',
      'file[/etc/systemd/resolved.conf.d/meshvm.conf]:',
      `not going to restart systemd-resolved (\`systemctl try-restart systemd-resolved\`): the root is ${root}, not the running system; the change takes effect when the service next starts`,
    ],
  );
  t.regex(
    plan.resources[0]!.changes[1]!,
    /\n {2}set content \(5 lines\)\n(.*\n)* {4}\+DNS=127\.0\.0\.1:5354\n {4}\+Domains=~cluster\.local svc\.cluster\.local\n/,
  );
  t.deepEqual(plan.resources[0]!.actions, [plan.resources[0]!.changes[2]]);
  t.deepEqual(
    plan.resources[0]!.children?.map((c) => c.ref),
    ['resolv_conf[meshvm] > directory[/etc/systemd/resolved.conf.d]', 'resolv_conf[meshvm] > file[/etc/systemd/resolved.conf.d/meshvm.conf]'],
  );
  const commands: string[][] = [];
  await converge(localHost({ root, onCommand: (argv) => commands.push([...argv]) }), declare());
  t.deepEqual(commands, [], 'no systemctl under a scratch root');
  await fs.rm(path.join(root, 'etc/systemd'), { recursive: true });
  await convergesOnce(t, root, declare);
  t.is(
    await read(root, 'etc/systemd/resolved.conf.d/meshvm.conf'),
    HEADER +
      '# Route-only domains (~) go to these servers; without one, resolved sends .local names to mDNS.\n[Resolve]\nDNS=127.0.0.1:5354\nDomains=~cluster.local svc.cluster.local\n',
  );
  t.is(await fs.readlink(path.join(root, 'etc/resolv.conf')), '../run/systemd/resolve/stub-resolv.conf', 'the stub symlink stays');
});

test('systemd-resolved on a live root: try-restarted when the drop-in changed, and only then', async (t) => {
  const root = await hostRoot(t, 'resolved');
  await fs.mkdir(path.join(root, 'run/systemd/system'), { recursive: true });
  const ran: string[][] = [];
  const declare = (ip: string) => [ResolvConf({ nameservers: [ip, '[fd00::53]:5354'], routeDomains: ['cluster.local', 'consul'] })];
  const first = await converge(liveHost(root, ran), declare('127.0.0.1'));
  t.deepEqual(first.resources[0]!.actions, ['restart systemd-resolved (`systemctl try-restart systemd-resolved`)']);
  t.deepEqual(ran, [['systemctl', 'try-restart', 'systemd-resolved']]);
  t.regex(await read(root, 'etc/systemd/resolved.conf.d/meshvm.conf'), /^DNS=127\.0\.0\.1 \[fd00::53\]:5354\nDomains=~cluster\.local ~consul\n/m);
  await converge(liveHost(root, ran), declare('127.0.0.1'));
  t.is(ran.length, 1, 'unchanged: no restart');
  await converge(liveHost(root, ran), declare('127.0.0.2'));
  t.is(ran.length, 2);
});

test('systemd-resolved: options and, in uplink mode, ports are refused with what to do', async (t) => {
  const stub = await hostRoot(t, 'resolved');
  const options = await converge(localHost({ root: stub }), [ResolvConf({ nameservers: ['127.0.0.1'], options: ['ndots:5'] })], 'plan');
  t.regex(
    options.resources[0]!.error!,
    /options \(ndots:5\) cannot be set through systemd-resolved, which writes its own stub file: drop them, or set manage: file/,
  );
  const uplink = await hostRoot(t, 'resolved-uplink');
  const ported = await converge(localHost({ root: uplink }), [ResolvConf({ nameservers: ['127.0.0.1:5354'] })], 'plan');
  t.regex(
    ported.resources[0]!.error!,
    /symlink to \/run\/systemd\/resolve\/resolv\.conf, so programs read the server list directly .*point \/etc\/resolv\.conf at \/run\/systemd\/resolve\/stub-resolv\.conf/,
  );
  await convergesOnce(t, uplink, () => [ResolvConf({ nameservers: ['127.0.0.1'] })]);
});

test('dhclient: a managed /etc/resolv.conf plus an enter-hook, and no dhclient is ever started', async (t) => {
  const root = await hostRoot(t, 'dhclient');
  const commands: string[][] = [];
  const declare = () => [
    ResolvConf({ nameservers: ['127.0.0.1', '172.31.0.2'], search: ['ec2.internal', 'svc.cluster.local'], options: ['ndots:2', 'timeout:2'] }),
  ];
  const result = await converge(localHost({ root, onCommand: (argv) => commands.push([...argv]) }), declare());
  t.false(result.failed, result.resources[0]!.error);
  t.deepEqual(result.resources[0]!.fields, [
    'directory[/etc/dhcp/dhclient-enter-hooks.d]',
    'file[/etc/dhcp/dhclient-enter-hooks.d/meshvm]',
    // the machine's own /etc/resolv.conf kept before meshvm replaces it, for offboarding (test/resources/resolv-conf-undo.test.ts)
    'directory[/var/lib/meshvm/resolver-originals]',
    'file[/var/lib/meshvm/resolver-originals/%2Fetc%2Fresolv.conf.json]',
    'file[/etc/resolv.conf]',
  ]);
  t.regex(
    result.resources[0]!.changes.join('\n'),
    /^file\[\/etc\/dhcp\/dhclient-enter-hooks\.d\/meshvm\]:\n[\s\S]*file\[\/etc\/resolv\.conf\]:\n {2}update content\n(.*\n)* {4}-domain ec2\.internal\n/m,
  );
  const again = await converge(localHost({ root }), declare());
  t.deepEqual(
    again.resources.map((r) => r.status),
    ['unchanged'],
  );
  t.deepEqual(
    (await converge(localHost({ root }), declare(), 'plan')).resources.map((r) => r.status),
    ['unchanged'],
  );
  t.is(
    await read(root, 'etc/resolv.conf'),
    HEADER +
      '# The dhclient hook /etc/dhcp/dhclient-enter-hooks.d/meshvm keeps DHCP leases from rewriting it.\nnameserver 127.0.0.1\nnameserver 172.31.0.2\nsearch ec2.internal svc.cluster.local\noptions ndots:2 timeout:2\n',
  );
  t.regex(await read(root, 'etc/dhcp/dhclient-enter-hooks.d/meshvm'), /\nmake_resolv_conf\(\) \{ :; \}\n$/);
  t.is((await fs.stat(path.join(root, 'etc/resolv.conf'))).mode & 0o777, 0o644);
  t.deepEqual(commands, [], 'no command at all, so no dhclient (istio#1857)');
});

test('the dhclient hook really stops dhclient-script from rewriting /etc/resolv.conf', async (t) => {
  const root = await hostRoot(t, 'dhclient');
  await converge(localHost({ root }), [ResolvConf({ nameservers: ['127.0.0.1'] })]);
  const before = await read(root, 'etc/resolv.conf');
  // what Debian's dhclient-script does on a renewal: source the enter hooks, then call make_resolv_conf
  const script = [
    `make_resolv_conf() { echo "nameserver $new_domain_name_servers" > "${path.join(root, 'etc/resolv.conf')}"; }`,
    `for hook in "${path.join(root, 'etc/dhcp/dhclient-enter-hooks.d')}"/*; do . "$hook"; done`,
    'new_domain_name_servers=172.31.0.2 make_resolv_conf',
  ].join('\n');
  const { execa } = await import('execa');
  await execa('sh', ['-c', script]);
  t.is(await read(root, 'etc/resolv.conf'), before);
});

test('a plain file without dhclient: only /etc/resolv.conf; a missing one is created', async (t) => {
  for (const kind of ['plain', 'missing']) {
    const root = await hostRoot(t, kind);
    await convergesOnce(t, root, () => [ResolvConf({ nameservers: ['127.0.0.1'] })]);
    t.is(await read(root, 'etc/resolv.conf'), HEADER + '# Nothing else on this host is known to rewrite it.\nnameserver 127.0.0.1\n', kind);
    t.false(
      await fs.stat(path.join(root, 'etc/dhcp')).then(
        () => true,
        () => false,
      ),
      kind,
    );
  }
});

test('resolv.conf cannot carry a port or more than 3 nameservers: refused with what to do', async (t) => {
  const root = await hostRoot(t, 'dhclient');
  const before = await snapshot(root);
  const ported = await converge(localHost({ root }), [ResolvConf({ nameservers: ['127.0.0.1:5354'] })]);
  t.regex(
    ported.resources[0]!.error!,
    /read failed: resolv\.conf cannot name a port, glibc always asks port 53 \(127\.0\.0\.1:5354; .*\): make the server listen on port 53, or use systemd-resolved \(manage: resolved\)/,
  );
  const many = await converge(localHost({ root }), [ResolvConf({ nameservers: ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'] })]);
  t.regex(many.resources[0]!.error!, /glibc reads only the first 3 nameservers/);
  t.deepEqual(await snapshot(root), before);
});

test('resolvconf: nameservers in its head file, search domains in base, then `resolvconf -u` (skipped under a scratch root)', async (t) => {
  const root = await hostRoot(t, 'resolvconf');
  const declare = (search: string[]) => [ResolvConf({ nameservers: ['127.0.0.1'], search, options: ['ndots:2'] })];
  const plan = await converge(localHost({ root }), declare(['svc.cluster.local']), 'plan');
  t.regex(plan.resources[0]!.actions![0]!, /^not going to regenerate \/etc\/resolv\.conf \(`resolvconf -u`\): the root is /);
  await convergesOnce(t, root, () => declare(['svc.cluster.local']));
  t.is(
    await read(root, 'etc/resolvconf/resolv.conf.d/head'),
    HEADER + '# resolvconf puts these lines first in /etc/resolv.conf.\nnameserver 127.0.0.1\noptions ndots:2\n',
  );
  t.regex(await read(root, 'etc/resolvconf/resolv.conf.d/base'), /\nsearch svc\.cluster\.local\n$/);
  t.is(await fs.readlink(path.join(root, 'etc/resolv.conf')), '../run/resolvconf/resolv.conf');
  t.false(
    await fs.stat(path.join(root, 'etc/dhcp/dhclient-enter-hooks.d')).then(
      () => true,
      () => false,
    ),
    "resolvconf's own hook feeds it; no meshvm hook",
  );

  const ran: string[][] = [];
  await fs.mkdir(path.join(root, 'run/systemd/system'), { recursive: true });
  const dropped = await converge(liveHost(root, ran), declare([]));
  t.deepEqual(dropped.resources[0]!.changes[0], 'file[/etc/resolvconf/resolv.conf.d/base]:\n  remove');
  t.deepEqual(ran, [['resolvconf', '-u']]);
  t.false(
    await fs.stat(path.join(root, 'etc/resolvconf/resolv.conf.d/base')).then(
      () => true,
      () => false,
    ),
  );
});

test('NetworkManager: told to leave /etc/resolv.conf alone first (rc-manager=unmanaged), then the file is written', async (t) => {
  for (const kind of ['network-manager', 'network-manager-symlink']) {
    const root = await hostRoot(t, kind);
    await fs.mkdir(path.join(root, 'run/systemd/system'), { recursive: true });
    const ran: string[][] = [];
    let resolvConfAtReload = '';
    const host = liveHost(root, ran, async () => {
      resolvConfAtReload = (await localHost({ root }).readFile('/etc/resolv.conf')) ?? '';
    });
    const declare = () => [ResolvConf({ nameservers: ['127.0.0.1'] })];
    const result = await converge(host, declare());
    t.false(result.failed, result.resources[0]!.error);
    t.deepEqual(ran, [['systemctl', 'try-reload-or-restart', 'NetworkManager']], kind);
    t.regex(resolvConfAtReload, /Generated by NetworkManager/, `${kind}: NetworkManager is reloaded before meshvm writes the file`);
    t.regex(await read(root, 'etc/NetworkManager/conf.d/meshvm.conf'), /\n\[main\]\nrc-manager=unmanaged\n$/);
    t.regex(await read(root, 'etc/resolv.conf'), /^nameserver 127\.0\.0\.1$/m);
    t.false((await fs.lstat(path.join(root, 'etc/resolv.conf'))).isSymbolicLink(), kind);
    const again = await converge(liveHost(root, ran), declare());
    t.deepEqual(
      again.resources.map((r) => r.status),
      ['unchanged'],
      `${kind}: still NetworkManager's way after meshvm's file replaced its marker`,
    );
    t.is(ran.length, 1);
  }
});

test('owners meshvm does not manage are refused with what to do; manage: file takes over anyway', async (t) => {
  const cases: [string, RegExp][] = [
    ['network-manager-dnsmasq', /NetworkManager runs its own dnsmasq/],
    [
      'dhcpcd',
      /\/etc\/resolv\.conf is maintained by dhcpcd \(\/etc\/resolv\.conf says "Generated by dhcpcd"\), which meshvm does not manage: add "nohook resolv\.conf"/,
    ],
    ['openresolv', /maintained by openresolv/],
    ['netconfig', /maintained by netconfig/],
    ['unknown-symlink', /maintained by an unknown program \(\/etc\/resolv\.conf is a symlink to \/mnt\/wsl\/resolv\.conf\)/],
  ];
  for (const [kind, message] of cases) {
    const root = await hostRoot(t, kind);
    const before = await snapshot(root);
    const result = await converge(localHost({ root }), [ResolvConf({ nameservers: ['127.0.0.1'] })]);
    t.regex(result.resources[0]!.error ?? '', message, kind);
    t.deepEqual(await snapshot(root), before, `${kind}: nothing written`);
  }
  const root = await hostRoot(t, 'unknown-symlink');
  await convergesOnce(t, root, () => [ResolvConf({ nameservers: ['127.0.0.1'], manage: 'file' })]);
  t.false((await fs.lstat(path.join(root, 'etc/resolv.conf'))).isSymbolicLink(), 'the symlink is replaced by a file');
  t.is(await read(root, 'mnt/wsl/resolv.conf'), await fixture('plain-resolv.conf'), 'its old target is left alone');
});

test('manage: resolved writes the drop-in even where detection would not choose it, and leaves /etc/resolv.conf', async (t) => {
  const root = await hostRoot(t, 'plain');
  await convergesOnce(t, root, () => [ResolvConf({ nameservers: ['127.0.0.1'], manage: 'resolved', routeDomains: [] })]);
  t.regex(await read(root, 'etc/systemd/resolved.conf.d/meshvm.conf'), /\[Resolve\]\nDNS=127\.0\.0\.1\n$/);
  t.is(await read(root, 'etc/resolv.conf'), await fixture('plain-resolv.conf'));
});

test('bad specs are refused at declaration, naming the ref and the field', (t) => {
  t.throws(() => ResolvConf({ nameservers: [] }), { message: /resolv_conf\[meshvm\].*: nameservers: list at least one nameserver/ });
  t.throws(() => ResolvConf({ nameservers: ['127.0.0.300'] }), { message: /nameservers\[0\]: expected an IP address, optionally with a port/ });
  t.throws(() => ResolvConf({ nameservers: ['[127.0.0.1]:53'] }), { message: /nameservers\[0\]: expected an IP address/ });
  t.throws(() => ResolvConf({ nameservers: ['127.0.0.1', '127.0.0.1:53'] }), {
    message: /nameservers\[1\]: 127\.0\.0\.1:53 is listed twice \(nameservers\[0\] and nameservers\[1\]\)/,
  });
  t.throws(() => ResolvConf({ nameservers: ['127.0.0.1'], search: ['Bad_Domain'] }), { message: /search\[0\]: expected a DNS name/ });
  t.throws(() => ResolvConf({ nameservers: ['127.0.0.1'], options: ['ndot:5'] }), { message: /options\[0\]: expected a resolv\.conf option: ndots:N/ });
  t.throws(() => ResolvConf({ name: 'meshvm.sh', nameservers: ['127.0.0.1'] }), {
    message: /resolv_conf\[meshvm\.sh\].*name: expected lower case letters, digits, "_" or "-" \(run-parts skips hook names with dots\)/,
  });
  // @ts-expect-error only auto, resolved and file
  t.throws(() => ResolvConf({ nameservers: ['127.0.0.1'], manage: 'resolvconf' }), { message: /manage: Invalid option/ });
  t.deepEqual(resolvConfSpec.parse({ nameservers: ['127.0.0.1'] }), {
    name: 'meshvm',
    nameservers: ['127.0.0.1'],
    search: [],
    options: [],
    routeDomains: ['cluster.local'],
    manage: 'auto',
    ensure: 'present',
  });
});

test('the upstream file keeps only the addresses /etc/resolv.conf had, one spelling each, never its other words or meshvm own', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, {
    '/etc/resolv.conf': 'nameserver 10.0.0.2\nnameserver not-an-ip\nnameserver 127.0.0.1\nnameserver FD00::0053\nnameserver fd00::53\n',
    '/etc/dnsmasq.d/.keep': '',
  });
  const result = await converge(localHost({ root }), [
    ResolvConf({ nameservers: ['127.0.0.1'], manage: 'file', upstream: { file: '/etc/dnsmasq.d/upstream.conf' } }),
  ]);
  t.false(result.failed, result.resources[0]!.error);
  const kept = await fs.readFile(path.join(root, 'etc/dnsmasq.d/upstream.conf'), 'utf8');
  t.deepEqual(
    kept.split('\n').filter((l) => l.startsWith('nameserver')),
    ['nameserver 10.0.0.2', 'nameserver fd00::53'],
  );
});
