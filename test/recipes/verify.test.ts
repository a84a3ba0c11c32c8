// meshvm verify and the checks recipes own: the CLI on a converged root in a throwaway network namespace (a real dnsmasq
// answers from the converged kubedns, a second one stands for the cluster DNS, a TCP listener for pilot's load balancer);
// the certs recipe's files and token on scratch roots; services and interception on the live system in a namespace.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa, type ResultPromise } from 'execa';
import type { Check, CheckContext } from '../../engine/check.ts';
import type { HostReader } from '../../engine/host.ts';
import { localHost } from '../../engine/host-local.ts';
import { flatten, type Recipe } from '../../engine/recipe.ts';
import type { Declared } from '../../engine/resource.ts';
import { runChecks } from '../../engine/verify.ts';
import { File } from '../../resources/file.ts';
import { IstioToken } from '../../resources/istio-token.ts';
import { Service } from '../../resources/service.ts';
import { certs } from '../../recipes/certs.ts';
import type { DeclaredToken } from '../../recipes/checks/certs.ts';
import { parseKubedns } from '../../recipes/checks/dns.ts';
import { interceptionChecks } from '../../recipes/checks/interception.ts';
import { sidecarServices } from '../../recipes/sidecar-services.ts';
import { BIN, PROJECT, meshvm, scratchRoot, seed, writeRunlist } from '../helpers/scratch.ts';
import { until } from '../helpers/poll.ts';

type Context = Parameters<typeof scratchRoot>[0];

async function namespace(t: Context) {
  const ns = `meshvm-verify-${randomBytes(3).toString('hex')}`;
  await execa('ip', ['netns', 'add', ns]);
  await execa('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  const daemons: ResultPromise[] = [];
  t.teardown(async () => {
    for (const d of daemons) d.kill('SIGKILL');
    await Promise.allSettled(daemons);
    await execa('ip', ['netns', 'del', ns], { reject: false });
  });
  const start = (argv: string[]) => {
    const d = execa('ip', ['netns', 'exec', ns, ...argv], { reject: false });
    daemons.push(d);
    return d;
  };
  /** Waits until every "proto address:port" listens in the namespace (ss), not a fixed time. */
  const listening = async (sockets: string[]) => {
    await until(
      async () => {
        const { stdout } = await execa('ip', ['netns', 'exec', ns, 'ss', '-Hlntu']);
        const have = stdout
          .split('\n')
          .map((line) => line.trim().split(/\s+/))
          .map((f) => `${f[0]} ${f[4]}`);
        return sockets.every((s) => have.includes(s));
      },
      { what: `${sockets.join(', ')} to listen in ${ns}`, timeoutMs: 10_000, intervalMs: 50 },
    );
  };
  return { ns, start, listening };
}

/** `meshvm verify --resolver 127.0.0.1 --json` inside the namespace; its exit code agrees with its report. */
async function verifyIn(t: Context, ns: string, file: string, root: string): Promise<Check[]> {
  const result = await execa('ip', ['netns', 'exec', ns, process.execPath, BIN, 'verify', file, '--root', root, '--resolver', '127.0.0.1', '--json'], {
    reject: false,
    timeout: 60_000,
  });
  const report = JSON.parse(String(result.stdout)) as { ok: boolean; failed: number; checks: Check[] };
  t.is(result.exitCode, report.ok ? 0 : 1, String(result.stderr));
  t.is(report.failed, report.checks.filter((c) => !c.ok).length);
  return report.checks;
}

const demoCert = (name: string) => path.join(PROJECT, 'examples/demo-certs', name);
const runlist = (dns: Record<string, unknown> = {}) =>
  JSON.stringify({
    name: 'verify-lab',
    attributes: { flow: 'classic' },
    recipes: [
      { recipe: 'istio-proxy-user' },
      {
        recipe: 'dns',
        attributes: {
          clusterDns: '127.0.0.2',
          controlPlane: [
            { name: 'istio-pilot', address: '127.0.0.3' },
            { name: 'istio-ca', address: '127.0.0.5' },
          ],
          dnsmasq: { manage: false },
          resolver: 'none',
          ...dns,
        },
      },
      {
        recipe: 'certs',
        attributes: { source: { from: 'files', rootCert: demoCert('root-cert.pem'), certChain: demoCert('cert-chain.pem'), key: demoCert('key.pem') } },
      },
    ],
  });

/** A converged root in a namespace with the cluster DNS (127.0.0.2), dnsmasq on 127.0.0.1 reading the directory of dns.configFile, pilot on 127.0.0.3:15011. */
async function lab(t: Context, dns: Record<string, unknown> = {}) {
  const root = await scratchRoot(t);
  const dir = await scratchRoot(t, 'meshvm-runlists-');
  const file = await writeRunlist(dir, 'verify.yaml', runlist(dns));
  const converged = await meshvm(['converge', file, '--root', root]);
  t.is(converged.exitCode, 0, converged.stderr);
  const { ns, start, listening } = await namespace(t);
  const clusterDns = path.join(dir, 'cluster-dns');
  await fs.mkdir(clusterDns);
  await fs.writeFile(path.join(clusterDns, 'svc'), 'address=/kubernetes.default.svc.cluster.local/10.96.0.1\n');
  const dnsmasq = (address: string, confDir: string) =>
    start([
      'dnsmasq',
      '--keep-in-foreground',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      `--listen-address=${address}`,
      '--port=53',
      `--conf-dir=${confDir}`,
      '--pid-file=',
    ]);
  dnsmasq('127.0.0.2', clusterDns);
  const configFile = String(dns.configFile ?? '/etc/dnsmasq.d/kubedns');
  const local = dnsmasq('127.0.0.1', path.join(root, path.dirname(configFile)));
  const pilot = start([process.execPath, '-e', "require('net').createServer((s) => s.end()).listen(15011, '127.0.0.3')"]);
  await listening(['udp 127.0.0.2:53', 'udp 127.0.0.1:53', 'tcp 127.0.0.3:15011']);
  return { root, file, ns, local, pilot, verify: () => verifyIn(t, ns, file, root) };
}

const lines = (checks: readonly Check[]) => checks.map((c) => `${c.check}: ${c.detail}`);
const failedLines = (checks: readonly Check[]) => lines(checks.filter((c) => !c.ok));

test('verify: every check passes on a converged VM, and a closed control-plane port fails with the port fix', async (t) => {
  const { root, pilot, verify } = await lab(t);
  const good = await verify();
  t.deepEqual(failedLines(good), []);
  t.deepEqual(
    good.map((c) => c.check),
    ['dns', 'dns', 'dns', 'dns', 'dns', 'control plane', 'certs', 'certs', 'certs'],
  );
  t.regex(good[0]!.detail, /istio-pilot resolves to 127\.0\.0\.3/);
  t.regex(good[4]!.detail, /kubernetes\.default\.svc\.cluster\.local \(a cluster name\) resolves to 10\.96\.0\.1/);
  t.is(good[5]!.detail, 'istio-pilot.istio-system:15011 (127.0.0.3) accepts a connection');

  pilot.kill('SIGKILL');
  await pilot;
  await fs.chmod(path.join(root, 'etc/certs/key.pem'), 0o644);
  const bad = await verify();
  t.deepEqual(failedLines(bad), [
    'control plane: istio-pilot.istio-system:15011 (127.0.0.3) does not accept a connection: connect ECONNREFUSED 127.0.0.3:15011',
    'certs: /etc/certs/key.pem mode 0644, not 0600',
  ]);
  const controlPlane = bad.find((c) => c.check === 'control plane')!;
  t.regex(controlPlane.fix!, /the name resolves, the port does not answer: open port 15011 .*firewall/);
});

test('verify: a dns.configFile outside /etc/dnsmasq.d keeps its DNS checks; a name that does not resolve gets DNS advice, not firewall advice', async (t) => {
  const { local, verify } = await lab(t, { configFile: '/etc/mesh-dns/kubedns' });
  const good = await verify();
  t.deepEqual(failedLines(good), []);
  t.deepEqual(
    good.map((c) => c.check),
    ['dns', 'dns', 'dns', 'dns', 'dns', 'control plane', 'certs', 'certs', 'certs'],
  );
  t.deepEqual(lines(good).slice(0, 4), [
    'dns: istio-pilot resolves to 127.0.0.3',
    'dns: istio-ca resolves to 127.0.0.5',
    'dns: istio-pilot.istio-system resolves to 127.0.0.3',
    'dns: istio-ca.istio-system resolves to 127.0.0.5',
  ]);

  // dnsmasq down: nothing resolves, and the control-plane line says why without blaming the firewall
  local.kill('SIGKILL');
  await local;
  const bad = await verify();
  const failed = bad.filter((c) => !c.ok);
  t.deepEqual(
    failed.map((c) => c.check),
    ['dns', 'dns', 'dns', 'dns', 'dns', 'control plane'],
  );
  t.regex(failed[0]!.detail, /^istio-pilot resolves to an error \(ECONNREFUSED\), not 127\.0\.0\.3$/);
  for (const c of failed.filter((c) => c.check === 'dns').slice(0, 4)) t.regex(c.fix!, /dnsmasq running with \/etc\/mesh-dns\/kubedns/);
  const controlPlane = failed.at(-1)!;
  t.regex(controlPlane.detail, /^istio-pilot\.istio-system:15011 cannot be tried: the name does not resolve through the DNS server 127\.0\.0\.1/);
  t.regex(controlPlane.fix!, /^make istio-pilot\.istio-system resolve first: is dnsmasq running with \/etc\/mesh-dns\/kubedns/);
  t.notRegex(controlPlane.fix!, /firewall|security group|open port/i);
});

test('parseKubedns reads the answered names and the forwarded domain', (t) => {
  t.deepEqual(parseKubedns('server=/svc.cluster.local/10.0.0.10\naddress=/istiod/10.0.0.5\naddress=/istiod.istio-system/10.0.0.5\n'), {
    answers: [
      { name: 'istiod', ip: '10.0.0.5' },
      { name: 'istiod.istio-system', ip: '10.0.0.5' },
    ],
    forward: { domain: 'svc.cluster.local', server: '10.0.0.10' },
  });
  t.deepEqual(parseKubedns(''), { answers: [], forward: undefined });
});

// -- certs: the istio-token judged by its own declaration (kind istio_token), never against planned content

const TOKEN = '/var/run/secrets/tokens/istio-token';
const jwt = (claims: Record<string, unknown>) =>
  ['{"alg":"RS256"}', JSON.stringify(claims), 'signature'].map((p) => Buffer.from(p).toString('base64url')).join('.');
const inHours = (hours: number) => Math.floor(Date.now() / 1000 + hours * 3600);
/** The certs recipe's istio_token declaration (its minter is never called by a check). */
const declaredToken = (spec: Partial<DeclaredToken> = {}) =>
  IstioToken({
    path: TOKEN,
    owner: 'root',
    group: 'root',
    mode: 0o600,
    renewBeforeSeconds: 6 * 3600,
    namespace: 'vm',
    serviceAccount: 'default',
    ...spec,
    mint: () => Promise.reject(new Error('a check minted a token')),
  });
const certsEntry = (declared: Declared[]) => ({ recipe: certs as unknown as Recipe, attributes: { dir: '/etc/certs' }, declared });

async function tokenChecks(t: Context, content: string | undefined, spec: Partial<DeclaredToken> = {}): Promise<string[]> {
  const root = await scratchRoot(t);
  await seed(root, { '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\n', '/etc/group': 'root:x:0:\n' });
  if (content !== undefined) {
    await seed(root, { [TOKEN]: content });
    await fs.chmod(path.join(root, TOKEN), 0o600);
  }
  return lines(await runChecks([certsEntry([declaredToken(spec)])], localHost({ root })));
}

test('certs: the istio-token (its istio_token declaration) is valid for its service account and audience until it is due for renewal', async (t) => {
  const ok = jwt({ sub: 'system:serviceaccount:vm:default', aud: ['istio-ca'], exp: inHours(12) });
  const sub = 'system:serviceaccount:vm:default';
  t.deepEqual(await tokenChecks(t, ok + '\n'), [`certs: ${TOKEN} is in place and valid`]);
  const due = inHours(2);
  t.deepEqual(await tokenChecks(t, jwt({ sub, aud: 'istio-ca', exp: due })), [
    `certs: ${TOKEN} is due for renewal (expires ${new Date(due * 1000).toISOString()})`,
  ]);
  const expired = inHours(-1);
  t.deepEqual(await tokenChecks(t, jwt({ sub, aud: 'istio-ca', exp: expired })), [`certs: ${TOKEN} expired ${new Date(expired * 1000).toISOString()}`]);
  t.deepEqual(await tokenChecks(t, jwt({ sub: 'system:serviceaccount:vm:other', aud: 'istio-ca', exp: inHours(12) })), [
    `certs: ${TOKEN} is for system:serviceaccount:vm:other, not system:serviceaccount:vm:default`,
  ]);
  t.deepEqual(await tokenChecks(t, jwt({ sub, aud: ['kubernetes'], exp: inHours(12) })), [`certs: ${TOKEN} is for the audiences kubernetes, not istio-ca`]);
  t.deepEqual(await tokenChecks(t, '(a new token)\n'), [`certs: ${TOKEN} is not a token`]);
  t.deepEqual(await tokenChecks(t, undefined), [`certs: ${TOKEN} is missing`]);
  t.deepEqual(await tokenChecks(t, ok, { mode: 0o640 }), [`certs: ${TOKEN} mode 0600, not 0640`]);
  // a short renewal window: the same 2-hour token is fine
  t.deepEqual(await tokenChecks(t, jwt({ sub, aud: 'istio-ca', exp: due }), { renewBeforeSeconds: 3600 }), [`certs: ${TOKEN} is in place and valid`]);
});

test('certs: only the .pem files this recipe declared under its dir are checked, and a cert-chain must be signed by root-cert', async (t) => {
  const root = await scratchRoot(t);
  const rootCert = await fs.readFile(demoCert('root-cert.pem'), 'utf8');
  const chain = await fs.readFile(demoCert('cert-chain.pem'), 'utf8');
  // a chain "signed" by a certificate that did not sign it: the root checked against itself passes, the chain against the chain fails
  await seed(root, {
    '/srv/certs/root-cert.pem': chain,
    '/srv/certs/cert-chain.pem': chain,
    '/etc/certs/other.pem': 'not checked',
    '/srv/certs/notes.txt': 'x',
  });
  const declared = ['/srv/certs/root-cert.pem', '/srv/certs/cert-chain.pem', '/etc/certs/other.pem', '/srv/certs/notes.txt'].map((p) => File({ path: p }));
  const checks = await runChecks([{ ...certsEntry(declared), attributes: { dir: '/srv/certs/' } }], localHost({ root }));
  t.deepEqual(lines(checks), ['certs: /srv/certs/root-cert.pem is in place and valid', 'certs: /srv/certs/cert-chain.pem is not signed by root-cert.pem']);
  await seed(root, { '/srv/certs/root-cert.pem': rootCert });
  t.deepEqual(failedLines(await runChecks([{ ...certsEntry(declared), attributes: { dir: '/srv/certs' } }], localHost({ root }))), []);
});

// -- services and interception: skipped under --root, asked of systemd and the nat table on the live system

const servicesEntry = async (flow: 'classic' | 'istiod') => ({
  recipe: sidecarServices as unknown as Recipe,
  attributes: { flow },
  declared: flatten(await sidecarServices.declare({ flow }, {} as never)),
});

test('services and interception are skipped under --root, saying so', async (t) => {
  const root = await scratchRoot(t);
  const checks = await runChecks([await servicesEntry('classic')], localHost({ root }));
  t.deepEqual(checks, [
    { check: 'services', ok: true, skipped: true, detail: `istio.service: not checked under --root ${root}` },
    { check: 'services', ok: true, skipped: true, detail: `istio-auth-node-agent.service: not checked under --root ${root}` },
    { check: 'interception', ok: true, skipped: true, detail: `not checked under --root ${root} (the rules live in the running kernel)` },
  ]);
});

test('services: systemctl is-active on the live system; interception: the nat chains in the kernel (a throwaway namespace)', async (t) => {
  const { ns, start, listening } = await namespace(t);
  const live = localHost({ netns: ns });
  t.true(live.live);
  // systemd is not what this test is about (the guest tests boot it): systemctl's answers are canned, iptables-save is real
  const asked: string[][] = [];
  const host: HostReader = {
    ...live,
    query: async (argv, opts) => {
      if (argv[0] !== 'systemctl') return live.query(argv, opts);
      asked.push([...argv]);
      return { stdout: argv.at(-1) === 'istio.service' ? 'active\n' : 'failed\n', stderr: '', exitCode: argv.at(-1) === 'istio.service' ? 0 : 3 };
    },
  };
  const missing = await runChecks([await servicesEntry('classic')], host);
  t.deepEqual(asked, [
    ['systemctl', 'is-active', 'istio.service'],
    ['systemctl', 'is-active', 'istio-auth-node-agent.service'],
  ]);
  t.deepEqual(lines(missing), [
    'services: istio.service is active',
    'services: istio-auth-node-agent.service is failed',
    'interception: nat chains missing: ISTIO_INBOUND, ISTIO_OUTPUT, ISTIO_REDIRECT',
  ]);
  t.is(missing[1]!.fix, 'journalctl -u istio-auth-node-agent.service; systemctl status istio-auth-node-agent.service');
  t.regex(missing[2]!.fix!, /systemctl restart istio/);

  for (const chain of ['ISTIO_INBOUND', 'ISTIO_OUTPUT', 'ISTIO_REDIRECT']) await execa('ip', ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-N', chain]);
  // the sidecar's readiness endpoint, as the agent serves it while istio runs
  start([process.execPath, '-e', "require('http').createServer((q, r) => r.end()).listen(15021, '127.0.0.1')"]);
  await listening(['tcp 127.0.0.1:15021']);
  const present = await runChecks([await servicesEntry('istiod')], host);
  t.deepEqual(failedLines(present), []);
  t.deepEqual(lines(present), [
    'services: istio.service is active',
    'sidecar: localhost:15021/healthz/ready answers 200: the sidecar is ready',
    'interception: the ISTIO_INBOUND, ISTIO_OUTPUT and ISTIO_REDIRECT nat chains exist',
  ]);
});

test('interception: nothing to check when the recipe declared no istio service', async (t) => {
  const declared = [Service({ name: 'dnsmasq', running: true })];
  const context: CheckContext = { host: localHost({ netns: 'unused' }), declared, recipes: ['sidecar-services'], timeoutMs: 100 };
  t.deepEqual(await interceptionChecks({ flow: 'istiod' }, context), []);
});

// -- the runner

test('runChecks: entries in runlist order, recipes without checks contribute nothing, a check that throws is one failed line', async (t) => {
  const host = localHost({ root: await scratchRoot(t) });
  const seen: CheckContext[] = [];
  const recipe = (name: string, checks?: Recipe['checks']) =>
    ({ kind: 'recipe', name, description: '', attributes: {} as Recipe['attributes'], declare: () => [], ...(checks ? { checks } : {}) }) as Recipe;
  const declared = [File({ path: '/etc/x' })];
  const checks = await runChecks(
    [
      {
        recipe: recipe('first', async (a, ctx) => (seen.push(ctx), [{ check: 'first', ok: true, detail: `n=${String(a.n)}` }])),
        attributes: { n: 1 },
        declared,
      },
      { recipe: recipe('quiet'), attributes: {}, declared: [] },
      {
        recipe: recipe('broken', async () => {
          throw new Error('boom');
        }),
        attributes: {},
        declared: [],
      },
      { recipe: recipe('last', async (_a, ctx) => (seen.push(ctx), [{ check: 'last', ok: false, detail: 'no', fix: 'yes' }])), attributes: {}, declared: [] },
    ],
    host,
    { resolver: '127.0.0.9:5353' },
  );
  t.deepEqual(lines(checks), ['first: n=1', 'broken: the checks of recipe broken stopped: boom', 'last: no']);
  t.false(checks[1]!.ok);
  t.deepEqual(seen[0]!.recipes, ['first', 'quiet', 'broken', 'last']);
  t.is(seen[0]!.declared, declared, 'each recipe sees what its own entry declared');
  t.deepEqual(seen[1]!.declared, []);
  t.is(seen[0]!.resolver, '127.0.0.9:5353');
  t.is(seen[0]!.timeoutMs, 3000);
  t.is(seen[0]!.host, host);
});
