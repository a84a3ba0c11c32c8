// dnsmasq drop-ins (DnsmasqConfig, the dns recipe's kubedns file) under arbitrary names, addresses, paths and options: refused naming the field, or a parser that reads the file as dnsmasq's read_file does gives back exactly what was given; samples pass dnsmasq --test.
import test from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { dnsmasqConfigSpec, renderDnsmasqConfig, type DnsmasqConfigSpec } from '../../resources/dnsmasq-config.ts';
import { dnsAttributes, renderKubedns } from '../../recipes/dns.ts';
import { RenderError } from '../../engine/values.ts';
import { hostileText, ipOrHostile, nameOrHostile, Tally } from '../helpers/hostile.ts';

class Refused extends Error {}

/**
 * The options of a dnsmasq file as [name, value] (value undefined for a bare flag), read as dnsmasq's read_file reads
 * them: a double quote opens a quoted part (\" \\ \t \n \e \b \r escapes inside), white space becomes a space, "#" after
 * white space (or first) starts a comment, spaces stripped at both ends and around the first "=".
 */
function parseDnsmasqFile(text: string): [string, string | undefined][] {
  const out: [string, string | undefined][] = [];
  for (const raw of text.split('\n')) {
    let line = '';
    let white = true;
    for (let i = 0; i < raw.length; i++) {
      let c = raw[i]!;
      if (c === '"') {
        for (i++; i < raw.length && raw[i] !== '"'; i++) {
          const escaped = raw[i] === '\\' ? { '"': '"', t: '\t', n: '\n', e: '\x1b', b: '\b', r: '\r', '\\': '\\' }[raw[i + 1] ?? ''] : undefined;
          line += escaped ?? raw[i]!;
          if (escaped) i++;
        }
        if (i >= raw.length) throw new Error(`missing " in ${JSON.stringify(raw)}`);
        continue;
      }
      if (/[ \t\n\v\f\r]/.test(c)) {
        // C's isspace in dnsmasq's locale: ASCII white space only (not U+00A0 or U+FEFF, which JavaScript's \s includes)
        c = ' ';
        white = true;
      } else if (white && c === '#') break;
      else white = false;
      line += c;
    }
    line = line.replace(/^ +| +$/g, '');
    if (line === '') continue;
    const eq = line.indexOf('=');
    out.push(eq < 0 ? [line, undefined] : [line.slice(0, eq).replace(/[ =]+$/, ''), line.slice(eq + 1).replace(/^ +/, '')]);
  }
  return out;
}

/** What the options say, in the spec's terms. */
function readBack(options: [string, string | undefined][]) {
  const values = (name: string) => options.filter(([n]) => n === name).map(([, v]) => v!);
  const servers = values('server');
  const split = (v: string) => {
    const [, domain = '', target = ''] = v.split('/');
    const [server = '', port] = target.split('#');
    return { domain, server, ...(port ? { port: Number(port) } : {}) };
  };
  const plain = servers.filter((v) => !v.startsWith('/')).map((v) => split(`//${v}`));
  const port = values('port')[0];
  return {
    listenAddresses: values('listen-address'),
    port: port === undefined ? undefined : Number(port),
    bindInterfaces: options.some(([n]) => n === 'bind-interfaces'),
    upstream: options.some(([n]) => n === 'resolv-file')
      ? { from: 'resolv-file', path: values('resolv-file')[0] }
      : plain.length
        ? { from: 'servers', servers: plain.map(({ server, port: p }) => ({ server, ...(p ? { port: p } : {}) })) }
        : { from: 'none' },
    forward: servers.filter((v) => v.startsWith('/')).map(split),
    addresses: values('address').map((v) => ({ name: v.split('/')[1], address: v.split('/')[2] })),
    extraOptions: options
      .filter(([n]) => !['listen-address', 'port', 'bind-interfaces', 'resolv-file', 'no-resolv', 'server', 'address'].includes(n))
      .map(([n, v]) => (v === undefined ? n : `${n}=${v}`)),
  };
}

const sorted = <T>(list: T[]) => [...list].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
const port = fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined });
const hostilePath = fc.oneof(
  fc.constant('/etc/resolv.conf'),
  hostileText(6).map((s) => `/run/${s}`),
);
const input = fc.record({
  path: fc.oneof(
    fc.constant('/etc/dnsmasq.d/meshvm.conf'),
    hostileText(6).map((s) => `/etc/dnsmasq.d/${s}`),
  ),
  listenAddresses: fc.array(ipOrHostile, { minLength: 1, maxLength: 2 }),
  port,
  bindInterfaces: fc.boolean(),
  upstream: fc.oneof(
    fc.constant({ from: 'none' }),
    fc.record({ from: fc.constant('servers'), servers: fc.array(fc.record({ server: ipOrHostile, port }), { minLength: 1, maxLength: 2 }) }),
    fc.record({ from: fc.constant('resolv-file'), path: hostilePath }),
  ),
  forward: fc.array(fc.record({ domain: nameOrHostile, server: ipOrHostile, port }), { maxLength: 2 }),
  addresses: fc.array(fc.record({ name: nameOrHostile, address: ipOrHostile }), { maxLength: 2 }),
  extraOptions: fc.array(
    fc.oneof(
      fc.constant('log-queries'),
      hostileText(6).map((v) => `cache-size=${v}`),
      hostileText(8),
    ),
    { maxLength: 2 },
  ),
});
const strip = <T extends object>(o: T): T => JSON.parse(JSON.stringify(o));

function specOf(given: unknown): DnsmasqConfigSpec {
  const parsed = dnsmasqConfigSpec.safeParse(strip(given as object));
  if (!parsed.success) throw new Refused(parsed.error.message);
  return parsed.data;
}

test('DnsmasqConfig: arbitrary input is refused, or dnsmasq reads back exactly what was given', (t) => {
  const tally = new Tally();
  fc.assert(
    fc.property(input, (given) => {
      const spec = tally.attempt(() => specOf(given), Refused);
      if (!spec) return;
      const back = readBack(parseDnsmasqFile(renderDnsmasqConfig(spec)));
      const want = strip({ ...spec, path: undefined });
      assert.deepStrictEqual(strip({ ...back, forward: sorted(back.forward), addresses: sorted(back.addresses) }), {
        ...want,
        forward: sorted(want.forward),
        addresses: sorted(want.addresses),
      });
    }),
    { numRuns: 500 },
  );
  t.true(tally.accepted > 20 && tally.refused > 20, `both paths taken: ${tally.accepted} accepted, ${tally.refused} refused`);
});

const kubedns = fc.record({
  clusterDns: ipOrHostile,
  clusterDomain: nameOrHostile,
  systemNamespace: fc.oneof(fc.constant('istio-system'), hostileText(5)),
  controlPlane: fc.array(fc.record({ name: nameOrHostile, address: fc.oneof(ipOrHostile, fc.domain()) }), { maxLength: 3 }),
});

test('the kubedns file: arbitrary values from the cluster are refused naming the field, or read back exactly', (t) => {
  const tally = new Tally();
  fc.assert(
    fc.property(kubedns, (given) => {
      const text = tally.attempt(() => renderKubedns(given, '/etc/dnsmasq.d/kubedns'), RenderError);
      if (text === undefined) return;
      const options = parseDnsmasqFile(text);
      const answered = given.controlPlane.filter((e) => isIP(e.address) !== 0); // a name (an AWS load balancer's) gets no address= line
      assert.deepStrictEqual(options[0], ['server', `/${given.clusterDomain}/${given.clusterDns}`]);
      assert.deepStrictEqual(
        options.slice(1),
        [
          ...answered.map((e) => ['address', `/${e.name}/${e.address}`]),
          ...answered.map((e) => ['address', `/${e.name}.${given.systemNamespace}/${e.address}`]),
        ],
        text,
      );
    }),
    { numRuns: 400 },
  );
  t.true(tally.accepted > 20 && tally.refused > 20, `both paths taken: ${tally.accepted} accepted, ${tally.refused} refused`);
});

test('a kube-dns address with a newline is refused naming the file and field, not written as address=/#/ lines', (t) => {
  t.throws(
    () => renderKubedns({ clusterDns: '10.0.0.10\naddress=/#/6.6.6.6', clusterDomain: 'svc.cluster.local', controlPlane: [], systemNamespace: 'istio-system' }),
    {
      instanceOf: RenderError,
      message: 'refusing to write "10.0.0.10\\naddress=/#/6.6.6.6" into /etc/dnsmasq.d/kubedns (clusterDns): it is not an IP address',
    },
  );
  t.false(
    dnsAttributes.safeParse({ systemNamespace: 'istio.system' }).success,
    'the system namespace is a namespace name (a DNS label), as the kubedns lines need',
  );
  t.throws(() => DnsmasqConfigParse({ upstream: { from: 'resolv-file', path: '/run/a #b' } }), {
    message: /upstream\.path: "\/run\/a #b": it has a double quote, a " #"/,
  });
  t.throws(() => DnsmasqConfigParse({ upstream: { from: 'none' }, addresses: [{ name: 'a.example', address: 'fe80::1%eth0' }] }), {
    message: /addresses\[0\]\.address: expected an IP address without a zone/,
  });
});

function DnsmasqConfigParse(input: object): DnsmasqConfigSpec {
  const parsed = dnsmasqConfigSpec.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw new Error(`${issue.path.join('.').replace(/\.(\d+)/g, '[$1]')}: ${issue.message}`);
}

test('samples of what is accepted pass dnsmasq --test', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshvm-dnsmasq-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const accepted = fc
    .sample(input, { numRuns: 400, seed: 13 })
    .flatMap((given) => {
      // extra options are dnsmasq's to judge (an unknown option fails --test): only the typed fields here
      const parsed = dnsmasqConfigSpec.safeParse(strip({ ...given, extraOptions: ['log-queries', 'cache-size=1000'] }));
      return parsed.success ? [parsed.data] : [];
    })
    .slice(0, 12);
  t.true(accepted.length >= 5, `${accepted.length} samples`);
  for (const [i, spec] of accepted.entries()) {
    const file = path.join(dir, `${i}.conf`);
    fs.writeFileSync(file, renderDnsmasqConfig(spec));
    const out = execFileSync('dnsmasq', ['--test', `--conf-file=${file}`], { encoding: 'utf8', stdio: 'pipe' });
    t.regex(out + '', /^$|syntax check OK/);
  }
});
