// meshvm verify's istiod-flow checks, each made to fail by breaking its thing. The VM's network is a throwaway namespace
// (its /etc/hosts from /etc/netns/<ns>/hosts, as `ip netns exec` mounts it): iptables there stands for the sidecar's own
// interception (ISTIO_OUTPUT returning uid/gid 1337, redirecting the rest to a listener on 15001 that stands for Envoy), TCP
// listeners for istiod and the east-west gateway, a tiny HTTP server for the agent's 15021. The VM's files are a scratch
// root (the agent-written certificates made with openssl). The WorkloadEntry lives in the Kubernetes API v1.33 stand-in.
// systemd is not what this is about (the guest tests boot it): `systemctl is-active` answers are canned.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa, type ResultPromise } from 'execa';
import { z } from 'zod';
import type { Check } from '../../engine/check.ts';
import type { HostReader } from '../../engine/host.ts';
import { localHost } from '../../engine/host-local.ts';
import type { Recipe } from '../../engine/recipe.ts';
import type { Declared } from '../../engine/resource.ts';
import { runChecks } from '../../engine/verify.ts';
import { KubernetesClient } from '../../clients/kubernetes.ts';
import { File } from '../../resources/file.ts';
import { Service } from '../../resources/service.ts';
import { WorkloadEntry } from '../../resources/workload-entry.ts';
import { WorkloadGroup } from '../../resources/workload-group.ts';
import { certsChecks } from '../../recipes/checks/certs.ts';
import { dnsCaptureCheck, parseNatRules } from '../../recipes/checks/interception.ts';
import { judgeAgentChain, parseEnvFile, parseMeshConfig } from '../../recipes/checks/istiod.ts';
import { probeArgv, probeError } from '../../recipes/checks/probe.ts';
import { autoEntryName, registrationChecks } from '../../recipes/checks/registration.ts';
import { servicesChecks } from '../../recipes/checks/services.ts';
import { until } from '../helpers/poll.ts';
import { scratchRoot, seed } from '../helpers/scratch.ts';
import { startKubernetes } from '../stand-ins/index.ts';

const GATEWAY = '10.150.0.6';
const VM_ADDRESS = '10.0.0.5';
const ISTIOD = 'istiod.istio-system.svc';
const TIMEOUT_MS = 1500;

// ---- the VM: a network namespace and a scratch root ----

/** Whether /etc/netns was there before this file's tests (asked once, at load): the last test to finish removes it if not. */
const NETNS_DIR_EXISTED = fs.stat('/etc/netns').then(
  () => true,
  () => false,
);

async function vmNetwork(t: ExecutionContext) {
  const ns = `meshvm-vm-${randomBytes(3).toString('hex')}`;
  const etc = `/etc/netns/${ns}`;
  await execa('ip', ['netns', 'add', ns]);
  const daemons: ResultPromise<{ reject: false }>[] = [];
  t.teardown(async () => {
    for (const d of daemons) d.kill('SIGKILL');
    await Promise.allSettled(daemons);
    await execa('ip', ['netns', 'del', ns], { reject: false });
    await fs.rm(etc, { recursive: true, force: true });
    // the host as it was: /etc/netns goes too when this test made it and no other namespace uses it now
    if (!(await NETNS_DIR_EXISTED)) await fs.rmdir('/etc/netns').catch(() => undefined);
  });
  const inside = (argv: string[]) => execa('ip', ['netns', 'exec', ns, ...argv]);
  await inside(['ip', 'link', 'set', 'lo', 'up']);
  await inside(['ip', 'addr', 'add', `${GATEWAY}/32`, 'dev', 'lo']);
  // the VM's own interface (a veth pair kept inside the namespace): its address is what `hostname --all-ip-addresses` gives
  await inside(['ip', 'link', 'add', 'vm0', 'type', 'veth', 'peer', 'name', 'vm1']);
  await inside(['ip', 'addr', 'add', `${VM_ADDRESS}/24`, 'dev', 'vm0']);
  for (const dev of ['vm0', 'vm1']) await inside(['ip', 'link', 'set', dev, 'up']);
  await fs.mkdir(etc, { recursive: true });
  /** The VM's /etc/hosts (with the certs recipe's istiod line, or without). */
  const hosts = (lines: string[]) => fs.writeFile(`${etc}/hosts`, ['127.0.0.1 localhost', ...lines, ''].join('\n'));
  await hosts([`${GATEWAY} ${ISTIOD}`]);
  const start = (argv: string[]) => {
    const d = execa('ip', ['netns', 'exec', ns, ...argv], { reject: false });
    daemons.push(d);
    return d;
  };
  /** A TCP listener (accepts, then closes) on address:port, once it listens; its process in a box (a bare one is a thenable). */
  const listen = async (address: string, port: number) => {
    const d = start([process.execPath, '-e', `require('net').createServer((s) => s.end()).listen(${port}, '${address}')`]);
    await listening(`tcp ${address}:${port}`);
    return { process: d };
  };
  /** The agent's status port: /healthz/ready answers `status` with `body`. */
  const agent = async (status: number, body: string) => {
    const script = `require('http').createServer((q, r) => { r.writeHead(q.url === '/healthz/ready' ? ${status} : 404); r.end(${JSON.stringify(body)}); }).listen(15021, '127.0.0.1')`;
    const d = start([process.execPath, '-e', script]);
    await listening('tcp 127.0.0.1:15021');
    return { process: d };
  };
  const stop = async ({ process: d }: { process: ResultPromise<{ reject: false }> }) => {
    d.kill('SIGKILL');
    await d;
  };
  const listening = (socket: string) =>
    until(
      async () => {
        const { stdout } = await inside(['ss', '-Hlnt']);
        return stdout.split('\n').some((line) => line.trim().split(/\s+/)[3] === socket.split(' ')[1]);
      },
      { what: `${socket} to listen in ${ns}`, timeoutMs: 10_000, intervalMs: 50 },
    );
  /** The sidecar's interception as istio-iptables installs it (REDIRECT mode): the proxy's uid and gid pass, the rest goes to 15001. */
  const sidecarRedirect = async () => {
    const nat = (...rule: string[]) => inside(['iptables', '-t', 'nat', ...rule]);
    for (const chain of ['ISTIO_INBOUND', 'ISTIO_REDIRECT', 'ISTIO_IN_REDIRECT', 'ISTIO_OUTPUT']) await nat('-N', chain);
    await nat('-A', 'ISTIO_REDIRECT', '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', '15001');
    await nat('-A', 'OUTPUT', '-j', 'ISTIO_OUTPUT');
    await nat('-A', 'ISTIO_OUTPUT', '-o', 'lo', '-s', '127.0.0.6/32', '-j', 'RETURN');
    await nat('-A', 'ISTIO_OUTPUT', '-m', 'owner', '--uid-owner', '1337', '-j', 'RETURN');
    await nat('-A', 'ISTIO_OUTPUT', '-m', 'owner', '--gid-owner', '1337', '-j', 'RETURN');
    await nat('-A', 'ISTIO_OUTPUT', '-d', '127.0.0.1/32', '-j', 'RETURN');
    await nat('-A', 'ISTIO_OUTPUT', '-p', 'tcp', '-j', 'ISTIO_REDIRECT');
    await listen('0.0.0.0', 15001); // Envoy's outbound listener: it accepts whatever is redirected to it
  };
  /** What istio-iptables adds with ISTIO_META_DNS_CAPTURE=true (its dns-uid-gid golden, IPv4, nameserver 127.0.0.53). */
  const dnsCapture = async () => {
    const nat = (...rule: string[]) => inside(['iptables', '-t', 'nat', ...rule]);
    await nat('-N', 'ISTIO_OUTPUT_DNS');
    await nat('-I', 'ISTIO_OUTPUT', '1', '-j', 'ISTIO_OUTPUT_DNS');
    await nat('-A', 'ISTIO_OUTPUT_DNS', '-p', 'tcp', '--dport', '53', '-d', '127.0.0.53/32', '-j', 'REDIRECT', '--to-ports', '15053');
    await nat('-A', 'ISTIO_OUTPUT_DNS', '-p', 'udp', '--dport', '53', '-m', 'owner', '--uid-owner', '1337', '-j', 'RETURN');
    await nat('-A', 'ISTIO_OUTPUT_DNS', '-p', 'udp', '--dport', '53', '-d', '127.0.0.53/32', '-j', 'REDIRECT', '--to-port', '15053');
  };
  /** bash's /dev/tcp as root, no uid switch: what the old check did. */
  const connectsAsRoot = async (address: string, port: number) =>
    (await execa('ip', ['netns', 'exec', ns, 'timeout', '2', 'bash', '-c', `exec 3<>/dev/tcp/${address}/${port}`], { reject: false })).exitCode === 0;
  return { ns, hosts, listen, agent, stop, sidecarRedirect, dnsCapture, connectsAsRoot };
}

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\nistio-proxy:x:1337:1337::/var/lib/istio:/bin/false\n';
const GROUP = 'root:x:0:\nistio-proxy:x:1337:\n';
const MESH_CONFIG = [
  'defaultConfig:',
  `  discoveryAddress: ${ISTIOD}:15012`,
  '  proxyMetadata:',
  '    ISTIO_META_DNS_CAPTURE: "true"',
  '    ISTIO_META_NETWORK: "vm-network"',
  '    POD_NAMESPACE: "vm-ns"',
  '    SERVICE_ACCOUNT: "vm-sa"',
  '    TRUST_DOMAIN: "cluster.local"',
  '',
].join('\n');

/** The VM's files in a scratch root, seen as the running machine (live) whose network is the namespace. */
async function vm(t: ExecutionContext, ns: string, files: Record<string, string> = {}) {
  const root = await scratchRoot(t);
  await seed(root, {
    '/etc/passwd': PASSWD,
    '/etc/group': GROUP,
    '/etc/istio/config/mesh': MESH_CONFIG,
    '/var/lib/istio/envoy/cluster.env': 'ISTIO_META_DNS_CAPTURE=true\nISTIO_META_NETWORK=vm-network\n',
    ...files,
  });
  const local = localHost({ root, netns: ns });
  const host: HostReader = {
    ...local,
    live: true,
    query: async (argv, opts) =>
      argv[0] === 'systemctl' ? { stdout: 'active\n', stderr: '', exitCode: 0 } : local.query(argv, { ...opts, ...(opts?.in ? { in: 'host' as const } : {}) }),
  };
  return { root, host };
}

const recipe = (name: string, checks: Recipe['checks']) =>
  ({ kind: 'recipe', name, description: '', attributes: z.object({}), declare: () => [], checks }) as Recipe;
const meshFile = () => File({ path: '/etc/istio/config/mesh', content: MESH_CONFIG, owner: 'root', group: 'root', mode: 0o644 });

/** The certs recipe's and sidecar-services' checks of an istiod-flow VM. */
async function verify(host: HostReader, declared: { certs?: Declared[]; services?: Declared[]; registration?: Declared[] } = {}): Promise<Check[]> {
  return runChecks(
    [
      {
        recipe: recipe('certs', certsChecks as unknown as Recipe['checks']),
        attributes: { dir: '/etc/certs', proxyUser: 'istio-proxy' },
        declared: declared.certs ?? [meshFile()],
      },
      {
        recipe: recipe('sidecar-services', servicesChecks as unknown as Recipe['checks']),
        attributes: { flow: 'istiod' },
        declared: declared.services ?? [Service({ name: 'istio', enabled: true, running: true })],
      },
      ...(declared.registration
        ? [{ recipe: recipe('registration', registrationChecks as Recipe['checks']), attributes: {}, declared: declared.registration }]
        : []),
    ],
    host,
    { timeoutMs: TIMEOUT_MS },
  );
}

const line = (c: Check) => `${c.ok ? (c.skipped ? 'skipped' : 'ok') : 'FAILED'} ${c.check}: ${c.detail}`;
const find = (checks: Check[], name: string) => checks.filter((c) => c.check === name).map(line);

// ---- the agent's certificates, made with openssl ----

interface Pki {
  rootPem: string;
  chainPem: string;
  otherChainPem: string;
  wrongIdentityPem: string;
}

async function workloadPki(t: ExecutionContext): Promise<Pki> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'meshvm-agent-pki-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const p = (name: string) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = async (name: string) =>
    execa('openssl', [
      'req',
      '-x509',
      ...ec,
      '-keyout',
      p(`${name}.key`),
      '-out',
      p(`${name}.pem`),
      '-days',
      '3650',
      '-subj',
      `/O=${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign',
    ]);
  const leaf = async (name: string, caName: string, spiffe: string) => {
    await execa('openssl', ['req', '-new', ...ec, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', '/']);
    await fs.writeFile(p(`${name}.cnf`), `subjectAltName=critical,URI:${spiffe}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n`);
    await execa('openssl', [
      'x509',
      '-req',
      '-in',
      p(`${name}.csr`),
      '-CA',
      p(`${caName}.pem`),
      '-CAkey',
      p(`${caName}.key`),
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      p(`${name}.cnf`),
      '-out',
      p(`${name}.pem`),
    ]);
    return fs.readFile(p(`${name}.pem`), 'utf8');
  };
  await ca('mesh-root');
  await ca('other-root');
  const chainPem = await leaf('workload', 'mesh-root', 'spiffe://cluster.local/ns/vm-ns/sa/vm-sa');
  const otherChainPem = await leaf('stranger', 'other-root', 'spiffe://cluster.local/ns/vm-ns/sa/vm-sa');
  const wrongIdentityPem = await leaf('someone', 'mesh-root', 'spiffe://cluster.local/ns/vm-ns/sa/other');
  return { rootPem: await fs.readFile(p('mesh-root.pem'), 'utf8'), chainPem, otherChainPem, wrongIdentityPem };
}

// ---- the tests ----

test('control plane: tried as istio-proxy it fails where a root connection is fooled by the sidecar redirect; passes once istiod listens', async (t) => {
  const net = await vmNetwork(t);
  const { host } = await vm(t, net.ns);
  await net.sidecarRedirect();
  t.true(await net.connectsAsRoot(GATEWAY, 15012), 'as root, the redirect to "Envoy" on 15001 accepts: the old check passed here');
  const closed = await verify(host);
  t.deepEqual(find(closed, 'control plane'), [
    `FAILED control plane: ${ISTIOD}:15012 (${GATEWAY}) does not accept a connection as istio-proxy (uid 1337, which the sidecar's redirect lets through): Connection refused`,
  ]);
  t.regex(closed.find((c) => c.check === 'control plane')!.fix!, /open port 15012 from this VM to 10\.150\.0\.6/);

  const istiod = await net.listen(GATEWAY, 15012);
  t.deepEqual(find(await verify(host), 'control plane'), [
    `ok control plane: ${ISTIOD}:15012 (${GATEWAY}) accepts a connection as istio-proxy (uid 1337, which the sidecar's redirect lets through)`,
  ]);

  // the hosts line gone: the name the sidecar dials does not resolve, and the fix says where it comes from
  await net.hosts([]);
  const unresolved = (await verify(host)).find((c) => c.check === 'control plane')!;
  t.is(line(unresolved), `FAILED control plane: ${ISTIOD}:15012 cannot be tried as istio-proxy: ${ISTIOD} does not resolve`);
  t.regex(unresolved.fix!, /\/etc\/hosts .*meshvm converge, then getent hosts istiod\.istio-system\.svc/);
  await net.stop(istiod);
});

test('the east-west gateway (multi-network): 15012 and 15443 both accept, as istio-proxy; one closed fails naming it', async (t) => {
  const net = await vmNetwork(t);
  const { host } = await vm(t, net.ns);
  await net.sidecarRedirect();
  await net.listen(GATEWAY, 15012);
  t.deepEqual(find(await verify(host), 'east-west gateway'), [
    `FAILED east-west gateway: network vm-network: the east-west gateway ${GATEWAY} does not accept on 15443 (Connection refused)`,
  ]);
  await net.listen(GATEWAY, 15443);
  t.deepEqual(find(await verify(host), 'east-west gateway'), [
    `ok east-west gateway: network vm-network: the east-west gateway ${GATEWAY} accepts connections on 15012 and 15443 as istio-proxy`,
  ]);
  // single network: no gateway line
  const { host: single } = await vm(t, net.ns, {
    '/var/lib/istio/envoy/cluster.env': '',
    '/etc/istio/config/mesh': MESH_CONFIG.replace(/ {4}ISTIO_META_NETWORK.*\n/, ''),
  });
  t.deepEqual(find(await verify(single), 'east-west gateway'), []);
});

test('sidecar readiness: localhost:15021/healthz/ready must answer 200 while istio runs; 503 and nothing listening fail', async (t) => {
  const net = await vmNetwork(t);
  const { host } = await vm(t, net.ns);
  await net.sidecarRedirect();
  t.deepEqual(find(await verify(host), 'sidecar'), ['FAILED sidecar: localhost:15021/healthz/ready does not answer: Connection refused']);
  const notReady = await net.agent(503, 'Envoy proxy is NOT ready: config not received from XDS server (is Istiod running?): cds updates: 0 successful');
  const failing = (await verify(host)).find((c) => c.check === 'sidecar')!;
  t.is(
    line(failing),
    'FAILED sidecar: localhost:15021/healthz/ready answers 503: Envoy proxy is NOT ready: config not received from XDS server (is Istiod running?): cds updates: 0 successful',
  );
  t.regex(failing.fix!, /is istiod reachable/);
  await net.stop(notReady);
  await net.agent(200, '');
  t.deepEqual(find(await verify(host), 'sidecar'), ['ok sidecar: localhost:15021/healthz/ready answers 200: the sidecar is ready']);
  // istio not running: the services line fails, readiness is not asked (it would only repeat it)
  const stopped: HostReader = {
    ...host,
    query: (argv, o) => (argv[0] === 'systemctl' ? Promise.resolve({ stdout: 'inactive\n', stderr: '', exitCode: 3 }) : host.query(argv, o)),
  };
  const checks = await verify(stopped);
  t.deepEqual(find(checks, 'sidecar'), []);
  t.deepEqual(find(checks, 'services'), ['FAILED services: istio.service is inactive']);
});

test('DNS capture: with ISTIO_META_DNS_CAPTURE=true in cluster.env, udp and tcp 53 must be redirected to 15053 from OUTPUT', async (t) => {
  const net = await vmNetwork(t);
  const { host } = await vm(t, net.ns);
  await net.sidecarRedirect();
  t.deepEqual(find(await verify(host), 'dns capture'), [
    'FAILED dns capture: ISTIO_META_DNS_CAPTURE is true, but no nat rule reached from OUTPUT redirects udp or tcp port 53 to the DNS proxy (15053)',
  ]);
  await net.dnsCapture();
  t.deepEqual(find(await verify(host), 'dns capture'), ["ok dns capture: udp and tcp port 53 are redirected to the sidecar's DNS proxy (15053)"]);
  t.deepEqual(find(await verify(host), 'interception'), ['ok interception: the ISTIO_INBOUND, ISTIO_OUTPUT and ISTIO_REDIRECT nat chains exist']);
  // DNS proxy off: nothing to check
  const { host: off } = await vm(t, net.ns, { '/var/lib/istio/envoy/cluster.env': 'ISTIO_META_DNS_CAPTURE=false\n' });
  t.deepEqual(find(await verify(off), 'dns capture'), []);
});

test('dnsCaptureCheck on captured iptables-save text: rules in an unreachable chain, or negated, do not count', (t) => {
  const saved = (rules: string) => `*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\n:ISTIO_OUTPUT_DNS - [0:0]\n${rules}COMMIT\n`;
  const udp = '-A ISTIO_OUTPUT_DNS -d 127.0.0.53/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053\n';
  const tcp = '-A ISTIO_OUTPUT_DNS -d 127.0.0.53/32 -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053\n';
  const jumps = '-A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS\n';
  t.true(dnsCaptureCheck(saved(jumps + udp + tcp)).ok);
  t.regex(dnsCaptureCheck(saved(udp + tcp)).detail, /redirects udp or tcp port 53/, 'not reached from OUTPUT');
  t.regex(dnsCaptureCheck(saved(jumps + udp)).detail, /redirects tcp port 53/);
  t.false(dnsCaptureCheck(saved(jumps + udp.replace('--dport 53', '! --dport 53') + tcp)).ok);
  // the older layout: the udp rule in OUTPUT itself, the tcp one in ISTIO_OUTPUT
  t.true(
    dnsCaptureCheck(
      saved(
        '-A OUTPUT -p udp -m udp --dport 53 -m owner --uid-owner 1337 -j RETURN\n-A OUTPUT -d 10.0.0.2/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053\n-A OUTPUT -p tcp -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -d 10.0.0.2/32 -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053\n',
      ),
    ).ok,
  );
  t.deepEqual(parseNatRules('-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT\n'), [
    { chain: 'ISTIO_OUTPUT', protocol: undefined, dport: undefined, target: 'ISTIO_IN_REDIRECT', toPort: undefined },
  ]);
});

test("the agent's certificate chain: missing, another CA's, another identity fail; the workload's passes", async (t) => {
  const pki = await workloadPki(t);
  const net = await vmNetwork(t);
  const check = async (files: Record<string, string>) => {
    const { host } = await vm(t, net.ns, files);
    return find(await verify(host), 'certs');
  };
  t.deepEqual(await check({}), ['FAILED certs: /etc/certs/cert-chain.pem (the workload certificate the agent writes) is missing']);
  t.deepEqual(await check({ '/etc/certs/root-cert.pem': pki.rootPem, '/etc/certs/cert-chain.pem': pki.chainPem }), [
    'ok certs: /etc/certs/cert-chain.pem (written by the agent) is valid, chains to the root and is not due',
  ]);
  t.deepEqual(await check({ '/etc/certs/root-cert.pem': pki.rootPem, '/etc/certs/cert-chain.pem': pki.otherChainPem }), [
    'FAILED certs: /etc/certs/cert-chain.pem (written by the agent) does not chain to root-cert.pem',
  ]);
  t.deepEqual(await check({ '/etc/certs/root-cert.pem': pki.rootPem, '/etc/certs/cert-chain.pem': pki.wrongIdentityPem }), [
    'FAILED certs: /etc/certs/cert-chain.pem (written by the agent) is for spiffe://cluster.local/ns/vm-ns/sa/other, not spiffe://cluster.local/ns/vm-ns/sa/vm-sa',
  ]);
  // OUTPUT_CERTS (sidecar.env or cluster.env) moves it, as istio-start.sh does
  t.deepEqual(
    await check({
      '/var/lib/istio/envoy/sidecar.env': 'OUTPUT_CERTS=/var/lib/istio/certs\n',
      '/var/lib/istio/certs/root-cert.pem': pki.rootPem,
      '/var/lib/istio/certs/cert-chain.pem': pki.chainPem,
    }),
    ['ok certs: /var/lib/istio/certs/cert-chain.pem (written by the agent) is valid, chains to the root and is not due'],
  );

  // time: not yet valid, renewal overdue (less than a quarter left; the agent renews at half), expired
  const { X509Certificate } = await import('node:crypto');
  const leaf = new X509Certificate(pki.chainPem);
  const from = Date.parse(leaf.validFrom);
  const to = Date.parse(leaf.validTo);
  const judge = (now: number) => judgeAgentChain(pki.chainPem, pki.rootPem, { now });
  t.deepEqual(judge(from + 3600_000), []);
  t.deepEqual(judge(from - 3600_000), [`is not valid before ${new Date(from).toISOString()}`]);
  t.deepEqual(judge(to - 3600_000), [
    `expires ${new Date(to).toISOString()}, with less than a quarter of its lifetime left (the agent renews at half: renewal is failing)`,
  ]);
  t.deepEqual(judge(to + 1000), [`expired ${new Date(to).toISOString()}`]);
  t.deepEqual(judgeAgentChain('not pem', pki.rootPem, { now: from }), ['holds no certificate']);
});

test('under --root the running-system checks are skipped, saying so', async (t) => {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/passwd': PASSWD, '/etc/group': GROUP });
  const checks = await verify(localHost({ root }));
  t.deepEqual(find(checks, 'control plane'), [
    `skipped control plane: istiod, the east-west gateway and the agent's certificates: not checked under --root ${root} (they are the running system's)`,
  ]);
  t.deepEqual(find(checks, 'sidecar'), []);
});

test('registration: the WorkloadEntry present and Healthy (status.conditions); absent, unhealthy, no condition with health checks on fail; no read access skips', async (t) => {
  const kube = await startKubernetes({
    tokens: { reader: { user: 'vm-reader' }, stranger: { user: 'nobody' } },
    rbac: { 'vm-reader': [{ verbs: ['get'], apiGroups: ['networking.istio.io'], resources: ['workloadentries'], namespaces: ['vm-ns'] }] },
  });
  t.teardown(() => kube.stop());
  const client = (token: string) => new KubernetesClient({ server: kube.url, caPem: kube.caPem, token, retry: { attempts: 1, baseMs: 0, maxMs: 0 } });
  const net = await vmNetwork(t);
  const { host } = await vm(t, net.ns);
  const name = `reviews-vm-${VM_ADDRESS}`;
  const manual = (token = 'reader') =>
    WorkloadEntry({ name, namespace: 'vm-ns', address: VM_ADDRESS, serviceAccount: 'vm-sa', healthChecks: true, connect: async () => client(token) });
  const registration = async (declared: Declared) => find(await verify(host, { registration: [declared] }), 'registration');

  t.deepEqual(await registration(manual()), [`FAILED registration: WorkloadEntry vm-ns/${name} does not exist`]);
  kube.objects.put({
    kind: 'WorkloadEntry',
    metadata: { name, namespace: 'vm-ns', annotations: { 'proxy.istio.io/health-checks-enabled': 'true' } },
    spec: { address: VM_ADDRESS, serviceAccount: 'vm-sa' },
  });
  t.deepEqual(await registration(manual()), [
    `FAILED registration: WorkloadEntry vm-ns/${name} exists, with health checks on, but has no Healthy condition: istiod has had no health report from the agent`,
  ]);
  kube.objects.setWorkloadEntryHealth('vm-ns', name, false, 'Get "http://10.0.0.5:9080/ready": connection refused');
  const [unhealthy] = await registration(manual());
  t.regex(
    unhealthy!,
    new RegExp(
      `^FAILED registration: WorkloadEntry vm-ns/${name} is not Healthy \\(Healthy=False, Get "http://10\\.0\\.0\\.5:9080/ready": connection refused since \\S+\\)$`,
    ),
  );
  kube.objects.setWorkloadEntryHealth('vm-ns', name, true);
  t.deepEqual(await registration(manual()), [`ok registration: WorkloadEntry vm-ns/${name} exists and is Healthy`]);
  t.deepEqual(await registration(manual('stranger')), [
    `skipped registration: WorkloadEntry vm-ns/${name}: not checked, the cluster access meshvm has may not read it (403); to check it, allow get on workloadentries (apiGroup networking.istio.io) in namespace vm-ns`,
  ]);

  // auto: the entry istiod made when the sidecar connected, named <group>-<INSTANCE_IP>-<network> (the address from the VM's interfaces)
  const group = WorkloadGroup({
    name: 'reviews-vm',
    namespace: 'vm-ns',
    serviceAccount: 'vm-sa',
    network: 'vm-network',
    connect: async () => client('reader'),
  });
  const auto = `reviews-vm-${VM_ADDRESS}-vm-network`;
  t.deepEqual(await registration(group), [`FAILED registration: WorkloadEntry vm-ns/${auto} does not exist`]);
  kube.objects.put({ kind: 'WorkloadEntry', metadata: { name: auto, namespace: 'vm-ns' }, spec: { address: VM_ADDRESS } });
  t.deepEqual(await registration(group), [
    `ok registration: WorkloadEntry vm-ns/${auto} exists (health checks are off: no probe, so no Healthy condition to wait for)`,
  ]);
  t.is(autoEntryName('g', '2001:db8::5', undefined), 'g-2001-db8--5');
  t.is(kube.calls.filter((c) => c.method !== 'GET').length, 0, 'verify wrote nothing to the cluster');
});

test('probe helpers: the argv switches uid and gid and drops groups; errors read as the reason', (t) => {
  t.deepEqual(probeArgv('exit 0', ['a'], { as: { name: 'istio-proxy', uid: 1337, gid: 1338 }, timeoutMs: 2500 }), [
    'setpriv',
    '--reuid=1337',
    '--regid=1338',
    '--clear-groups',
    '--',
    'timeout',
    '-k',
    '1',
    '3',
    'bash',
    '-c',
    'exit 0',
    'meshvm-probe',
    'a',
  ]);
  t.is(
    probeError(1, 'meshvm-probe: connect: Connection refused\nmeshvm-probe: line 4: /dev/tcp/10.0.0.1/1: Connection refused\n', { timeoutMs: 1 }),
    'Connection refused',
  );
  t.is(probeError(124, '', { timeoutMs: 1500 }), 'no answer within 1500 ms');
  t.regex(
    probeError(127, 'setpriv: setresuid failed: Operation not permitted\n', { as: { name: 'istio-proxy', uid: 1, gid: 1 }, timeoutMs: 1 }),
    /run meshvm verify as root/,
  );
  t.deepEqual(parseEnvFile('A=1\nexport B="two words"\n# C=3\nD=\'x\'\n'), { A: '1', B: 'two words', D: 'x' });
  t.deepEqual(parseMeshConfig(MESH_CONFIG)?.discoveryAddress, `${ISTIOD}:15012`);
});
