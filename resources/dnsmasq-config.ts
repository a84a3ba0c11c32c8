// DnsmasqConfig: a dnsmasq drop-in rendered from a typed spec, checked by `dnsmasq --test` before it goes live, refused when dnsmasq would ask itself.
import { isIP } from 'node:net';
import { z } from 'zod';
import { defineResource, type Changes } from '../engine/resource.ts';
import { dnsName, guestPath, ipAddress, port, unique, zonelessIpAddress } from '../engine/validate.ts';
import { isDnsName, isIpAddress, lineProblem, RenderError, showValue } from '../engine/values.ts';
import type { HostReader } from '../engine/host.ts';
import { canonicalIp, parseResolvConf } from './resolv-conf/index.ts';
import { File } from './file.ts';

export const DEFAULT_DNSMASQ_DROP_IN = '/etc/dnsmasq.d/meshvm.conf';

const server = z.strictObject({ server: ipAddress, port: port.optional() });

const UPSTREAM_HELP =
  "say where dnsmasq sends the names not declared here: { from: 'none' }, { from: 'servers', servers: [{ server: IP }] } or { from: 'resolv-file', path }";

const upstream = z.discriminatedUnion(
  'from',
  [
    /** Only the declared names are answered (no-resolv). */
    z.strictObject({ from: z.literal('none') }),
    /** These servers, in order, and no resolv file (no-resolv + server=). */
    z.strictObject({ from: z.literal('servers'), servers: z.array(server).min(1, 'list at least one upstream server') }),
    /** The nameservers of a resolv.conf-style file, re-read when it changes (resolv-file=). */
    z.strictObject({ from: z.literal('resolv-file'), path: guestPath.default('/etc/resolv.conf') }),
  ],
  { error: (issue) => (issue.input === undefined ? UPSTREAM_HELP : "expected from: 'none', 'servers' or 'resolv-file'") },
);

/** Keywords the typed fields own: set through them, not through extraOptions. */
const OWNED: Record<string, string> = {
  server: 'forward or upstream',
  local: 'forward or upstream',
  address: 'addresses',
  'listen-address': 'listenAddresses',
  port: 'port',
  'bind-interfaces': 'bindInterfaces',
  'no-resolv': 'upstream',
  'resolv-file': 'upstream',
  'servers-file': 'upstream',
  'conf-file': 'a second DnsmasqConfig',
  'conf-dir': 'a second DnsmasqConfig',
};

export const dnsmasqConfigSpec = z
  .strictObject({
    /** The drop-in, in a directory the main configuration includes (conf-dir). */
    path: guestPath.default(DEFAULT_DNSMASQ_DROP_IN),
    /** listen-address=; keep off 127.0.0.53, where systemd-resolved's stub listens. */
    listenAddresses: unique(zonelessIpAddress).min(1, 'list at least one listen address').default(['127.0.0.1']),
    /** port=; dnsmasq's default (53) when unset, and then not written (a second port= anywhere is an error). */
    port: port.optional(),
    /** bind-interfaces: bind only the listen addresses, so another resolver can keep port 53 elsewhere. */
    bindInterfaces: z.boolean().default(true),
    upstream,
    /** server=/domain/IP[#port]: queries for the domain and its subdomains go to that server. */
    forward: z.array(z.strictObject({ domain: dnsName, server: ipAddress, port: port.optional() })).default([]),
    /** address=/name/IP: answered here for the name and its subdomains, never forwarded. */
    addresses: z.array(z.strictObject({ name: dnsName, address: zonelessIpAddress })).default([]),
    /** Further dnsmasq options, one per entry without "--" ("cache-size=1000", "log-queries"); dnsmasq --test checks them. */
    extraOptions: z
      .array(
        z
          .string()
          .regex(/^[a-z0-9][a-z0-9-]*(=[^\n]*)?$/, 'expected one dnsmasq option without "--", such as "cache-size=1000" or "log-queries"')
          .refine((v) => optionProblem(v) === undefined, { error: (issue) => `${showValue(issue.input)}: ${optionProblem(String(issue.input))}` })
          .refine((v) => !OWNED[v.split('=')[0]!], {
            error: (issue) => `"${String(issue.input).split('=')[0]}" is set through ${OWNED[String(issue.input).split('=')[0]!]}, not extraOptions`,
          }),
      )
      .default([]),
  })
  .superRefine((spec, ctx) => {
    const paths: [string[], string][] = [
      [['path'], spec.path],
      ...(spec.upstream.from === 'resolv-file' ? [[['upstream', 'path'], spec.upstream.path] as [string[], string]] : []),
    ];
    for (const [where, value] of paths) {
      const problem = dnsmasqValueProblem(value);
      if (problem) ctx.addIssue({ code: 'custom', path: where, message: `${showValue(value)}: ${problem}` });
    }
    const seen = new Map<string, string>();
    const once = (id: string, where: (string | number)[], what: string) => {
      const first = seen.get(id);
      const here = formatWhere(where.slice(0, where.findLastIndex((p) => typeof p === 'number') + 1));
      if (first) ctx.addIssue({ code: 'custom', path: where, message: `${what} is listed twice (${first} and ${here})` });
      else seen.set(id, here);
    };
    for (const [i, f] of spec.forward.entries())
      once(
        `forward ${f.domain} ${canonicalIp(f.server)}#${f.port ?? 53}`,
        ['forward', i],
        `forwarding ${f.domain} to ${f.server}${f.port ? `#${f.port}` : ''}`,
      );
    for (const [i, a] of spec.addresses.entries())
      once(`address ${a.name} v${isIP(a.address)}`, ['addresses', i, 'name'], `an IPv${isIP(a.address)} address for ${a.name}`);
    const forwarded = new Map(spec.forward.map((f, i) => [f.domain, i]));
    for (const [i, a] of spec.addresses.entries()) {
      const j = forwarded.get(a.name);
      if (j !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['addresses', i, 'name'],
          message: `${a.name} is both forwarded (forward[${j}]) and answered here (addresses[${i}]); keep one`,
        });
    }
    const servers = [
      ...spec.forward.map((f, i) => ({ ...f, where: ['forward', i, 'server'] })),
      ...(spec.upstream.from === 'servers' ? spec.upstream.servers.map((s, i) => ({ ...s, where: ['upstream', 'servers', i, 'server'] })) : []),
    ];
    if (spec.upstream.from === 'servers')
      for (const [i, s] of spec.upstream.servers.entries())
        once(`upstream ${canonicalIp(s.server)}#${s.port ?? 53}`, ['upstream', 'servers', i], `upstream ${s.server}`);
    for (const s of servers) {
      if (listensOn(spec, s.server, s.port ?? 53)) {
        ctx.addIssue({ code: 'custom', path: s.where, message: `${s.server}#${s.port ?? 53} is where this dnsmasq listens: it would forward to itself` });
      }
    }
  });
export type DnsmasqConfigSpec = z.output<typeof dnsmasqConfigSpec>;

function formatWhere(where: readonly (string | number)[]): string {
  return where.reduce<string>((out, part) => (typeof part === 'number' ? `${out}[${part}]` : out ? `${out}.${part}` : part), '');
}

/** True when a query to address:port would reach this dnsmasq. */
function listensOn(spec: Pick<DnsmasqConfigSpec, 'listenAddresses' | 'port'>, address: string, atPort: number): boolean {
  if (atPort !== (spec.port ?? 53)) return false;
  const ip = canonicalIp(address.replace(/%.*$/, ''));
  return spec.listenAddresses.some((listen) => {
    const l = canonicalIp(listen);
    if (l === '0.0.0.0') return ip === '0.0.0.0' || ip.startsWith('127.');
    if (l === '::') return ip === '::' || ip === '::1';
    return l === ip;
  });
}

const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const withPort = (ip: string, p: number | undefined) => (p === undefined ? ip : `${ip}#${p}`);

/**
 * Why a value cannot follow "option=" in a dnsmasq file as it is, or undefined: dnsmasq reads one line, takes "#" after
 * white space as a comment, removes double quotes (and reads backslash escapes inside them), turns tabs into spaces and
 * strips the white space at either end.
 */
export function dnsmasqValueProblem(value: string): string | undefined {
  const line = lineProblem(value);
  if (line) return `it has ${line}: dnsmasq reads one option a line`;
  if (/"|[ \t]#|^[ \t]|[ \t]$/.test(value)) return 'it has a double quote, a " #" or white space at an end, which dnsmasq reads differently';
  return undefined;
}

/** Why an extra option cannot be a line of its own as given ("name" or "name=value", the value as dnsmasqValueProblem says), or undefined. */
function optionProblem(option: string): string | undefined {
  const eq = option.indexOf('=');
  return eq < 0 ? dnsmasqValueProblem(option) : dnsmasqValueProblem(option.slice(eq + 1) || 'x');
}

/** The drop-in's text (pure, deterministic: forwards and addresses sorted, no timestamps); a value it cannot carry is refused. */
export function renderDnsmasqConfig(spec: DnsmasqConfigSpec): string {
  const ref = `dnsmasq_config[${spec.path}]`;
  const guard = (field: string, value: string, problem: string | undefined) => {
    if (problem) throw new RenderError(ref, field, value, problem);
  };
  guard('path', spec.path, dnsmasqValueProblem(spec.path));
  if (spec.upstream.from === 'resolv-file') guard('upstream.path', spec.upstream.path, dnsmasqValueProblem(spec.upstream.path));
  for (const [i, option] of spec.extraOptions.entries()) guard(`extraOptions[${i}]`, option, optionProblem(option));
  for (const [i, f] of spec.forward.entries()) {
    guard(`forward[${i}].domain`, f.domain, isDnsName(f.domain) ? undefined : 'it is not a DNS name');
    guard(`forward[${i}].server`, f.server, isIpAddress(f.server, 'zone allowed') ? undefined : 'it is not an IP address');
  }
  for (const [i, a] of spec.addresses.entries()) {
    guard(`addresses[${i}].name`, a.name, isDnsName(a.name) ? undefined : 'it is not a DNS name');
    guard(`addresses[${i}].address`, a.address, isIpAddress(a.address) ? undefined : 'it is not an IP address without a zone');
  }
  const lines = [`# Managed by meshvm (dnsmasq_config[${spec.path}]); edits here are overwritten on the next run.`, '', '# Where this dnsmasq answers'];
  for (const address of spec.listenAddresses) lines.push(`listen-address=${address}`);
  if (spec.port !== undefined) lines.push(`port=${spec.port}`);
  if (spec.bindInterfaces) lines.push('bind-interfaces');
  const up = spec.upstream;
  lines.push(
    '',
    up.from === 'resolv-file'
      ? `# Other names go to the nameservers listed in ${up.path}`
      : up.from === 'servers'
        ? '# Other names go to these servers'
        : '# Other names are refused: no upstream servers',
  );
  if (up.from === 'resolv-file') lines.push(`resolv-file=${up.path}`);
  else lines.push('no-resolv', ...(up.from === 'servers' ? up.servers.map((s) => `server=${withPort(s.server, s.port)}`) : []));
  if (spec.forward.length) {
    lines.push('', '# Forwarded domains (and their subdomains)');
    const sorted = [...spec.forward].sort((a, b) => byText(a.domain, b.domain) || byText(a.server, b.server) || (a.port ?? 53) - (b.port ?? 53));
    lines.push(...sorted.map((f) => `server=/${f.domain}/${withPort(f.server, f.port)}`));
  }
  if (spec.addresses.length) {
    lines.push('', '# Names answered here (and their subdomains)');
    const sorted = [...spec.addresses].sort((a, b) => byText(a.name, b.name) || byText(a.address, b.address));
    lines.push(...sorted.map((a) => `address=/${a.name}/${a.address}`));
  }
  if (spec.extraOptions.length) lines.push('', '# Further options', ...spec.extraOptions);
  return lines.join('\n') + '\n';
}

/** Refuses a resolv file that lists this dnsmasq itself: it would forward every unknown name to itself. */
async function checkNoLoop(host: HostReader, spec: DnsmasqConfigSpec): Promise<void> {
  if (spec.upstream.from !== 'resolv-file') return;
  const file = spec.upstream.path;
  const text = await host.readFile(file);
  if (text === undefined) return;
  const loops = parseResolvConf(text).nameservers.filter((ns) => listensOn(spec, ns, 53));
  if (loops.length === 0) return;
  throw new Error(
    `dnsmasq would ask itself: ${file} lists nameserver ${loops.join(', ')}, where this dnsmasq listens (port ${spec.port ?? 53}). ` +
      `Use upstream { from: 'servers', servers: [...] } (no-resolv and explicit servers), or a resolv-file that lists the real upstreams ` +
      `(/run/systemd/resolve/resolv.conf, /run/NetworkManager/resolv.conf, /run/dnsmasq/resolv.conf)`,
  );
}

/** `dnsmasq --test` on the staged drop-in alone (this machine's dnsmasq, given the staged file's real path). */
const DNSMASQ_TEST = ['dnsmasq', '--test', '--conf-file=%{path}'];

export const dnsmasqConfigType = {
  kind: 'dnsmasq_config',
  schema: dnsmasqConfigSpec,
  key: (spec: DnsmasqConfigSpec) => spec.path ?? DEFAULT_DNSMASQ_DROP_IN,

  /** Reads only what can make the drop-in wrong whatever its text: a resolv file that lists this dnsmasq itself. */
  async current(host: HostReader, spec: DnsmasqConfigSpec): Promise<Record<string, never>> {
    await checkNoLoop(host, spec);
    const stat = await host.stat(spec.path);
    if (stat && stat.type !== 'file') throw new Error(`${spec.path} is a ${stat.type}, not a file; move it away`);
    return {};
  },

  /** The drop-in's state is its file's. */
  changes: (): Changes<Record<string, never>> => ({}),

  /** The rendered drop-in, root's, checked by dnsmasq --test before it goes live. */
  children: (spec: DnsmasqConfigSpec) => [
    File({ path: spec.path, content: renderDnsmasqConfig(spec), mode: 0o644, owner: 'root', group: 'root', verify: DNSMASQ_TEST, verifyOnHost: true }),
  ],
};

export const DnsmasqConfig = defineResource(dnsmasqConfigType);
