// ResolvConf: points the host's resolver at meshvm's nameservers the way whoever owns the resolver expects it (resolved drop-in, managed file + dhclient hook, resolvconf head, NetworkManager told to keep off).
import { isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { defineResource, type Changes } from '../engine/resource.ts';
import { dnsName, unique } from '../engine/validate.ts';
import type { Host, HostReader } from '../engine/host.ts';

export const RESOLV_CONF = '/etc/resolv.conf';
const MARKER = '# Managed by meshvm';

/** "127.0.0.1", "127.0.0.1:5354" or "[::1]:5354" (the DNS= syntax of resolved.conf(5)); undefined when it is none of them. */
export function parseNameserver(value: string): { address: string; port: number } | undefined {
  if (isIP(value)) return { address: value, port: 53 };
  const match = /^\[([^\]]+)\]:(\d{1,5})$/.exec(value) ?? /^([^:[\]]+):(\d{1,5})$/.exec(value);
  if (!match) return undefined;
  const [whole, address, port] = match as unknown as [string, string, string];
  if (isIP(address) !== (whole.startsWith('[') ? 6 : 4) || Number(port) < 1 || Number(port) > 65535) return undefined;
  return { address, port: Number(port) };
}

const nameserver = z.string().refine((v) => parseNameserver(v) !== undefined, {
  message: 'expected an IP address, optionally with a port: "127.0.0.1", "127.0.0.1:5354", "[::1]:5354"',
});

// resolv.conf(5): glibc ignores an option it does not know, so a typo would pass silently; these are the ones it knows
const FLAG_OPTIONS = ['debug', 'rotate', 'no-check-names', 'inet6', 'edns0', 'single-request', 'single-request-reopen', 'no-tld-query', 'use-vc', 'no-reload', 'trust-ad', 'no-aaaa', 'ip6-bytestring', 'ip6-dotint', 'no-ip6-dotint'];
const resolverOption = z.string().refine((v) => FLAG_OPTIONS.includes(v) || /^(ndots|timeout|attempts):\d{1,2}$/.test(v), {
  message: `expected a resolv.conf option: ndots:N, timeout:N, attempts:N or one of ${FLAG_OPTIONS.join(', ')}`,
});

export const resolvConfSpec = z.strictObject({
  /** Names meshvm's drop-ins and hook: /etc/systemd/resolved.conf.d/<name>.conf, /etc/dhcp/dhclient-enter-hooks.d/<name>. */
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]*$/, 'expected lower case letters, digits, "_" or "-" (run-parts skips hook names with dots)')
    .max(64)
    .default('meshvm'),
  /** In order of preference; a port only where systemd-resolved manages the resolver (resolv.conf cannot say one). */
  nameservers: z
    .array(nameserver)
    .min(1, 'list at least one nameserver')
    .superRefine((list, ctx) => {
      const seen = new Map<string, number>();
      for (const [i, value] of list.entries()) {
        const parsed = parseNameserver(value);
        const id = parsed && `${canonicalIp(parsed.address)}#${parsed.port}`;
        if (id && seen.has(id)) ctx.addIssue({ code: 'custom', path: [i], message: `${value} is listed twice (nameservers[${seen.get(id)}] and nameservers[${i}])` });
        if (id) seen.set(id, i);
      }
    }),
  /** Search domains for single-label names. */
  search: unique(dnsName).default([]),
  /** resolv.conf options (ndots:5, timeout:2, edns0 ...); systemd-resolved cannot carry them. */
  options: unique(resolverOption).default([]),
  /** systemd-resolved only: domains sent to these nameservers (Domains=~cluster.local); also keeps .local names off mDNS. */
  routeDomains: unique(dnsName).default(['cluster.local']),
  /** auto: detect who owns the resolver. resolved: write the drop-in whatever else is there. file: own /etc/resolv.conf (replacing a symlink), with the dhclient hook where dhclient is installed. */
  manage: z.enum(['auto', 'resolved', 'file']).default('auto'),
});
export type ResolvConfSpec = z.output<typeof resolvConfSpec>;

// ---------------------------------------------------------------- detection

/** Things whose presence tells who may rewrite /etc/resolv.conf. */
export type Telltale = 'systemd-resolved' | 'resolvconf' | 'openresolv' | 'dhclient' | 'network-manager';

const TELLTALES: Record<Telltale, string[]> = {
  'systemd-resolved': ['/usr/lib/systemd/system/systemd-resolved.service', '/lib/systemd/system/systemd-resolved.service'],
  resolvconf: ['/etc/resolvconf/resolv.conf.d'],
  openresolv: ['/etc/resolvconf.conf'],
  dhclient: ['/sbin/dhclient', '/usr/sbin/dhclient', '/etc/dhcp/dhclient.conf'],
  'network-manager': ['/etc/NetworkManager/NetworkManager.conf', '/usr/sbin/NetworkManager'],
};
const LEASE_DIRS = ['/var/lib/dhcp', '/var/lib/dhclient'];

/** What the host shows about its resolver; gathered by readResolverFacts, judged by detectResolverOwner. */
export interface ResolverFacts {
  /** /etc/resolv.conf: its type, a symlink's target made absolute, and its content (read through links inside the root). */
  resolvConf: { type: 'file' | 'symlink' | 'missing' | 'other'; target?: string; content?: string };
  /** The telltales found. */
  has: readonly Telltale[];
  /** NetworkManager's [main] settings as its configuration files leave them, when it is installed. */
  networkManager?: { dns?: string; rcManager?: string; meshvmDropIn: boolean };
}

export type ResolverOwner =
  | { owner: 'systemd-resolved'; via: 'stub' | 'static' | 'uplink' | 'copy'; evidence: string }
  | { owner: 'resolvconf' | 'network-manager' | 'dhclient' | 'file'; evidence: string }
  | { owner: 'unsupported'; name: string; evidence: string; advice: string };

const RESOLVED_TARGETS: Record<string, 'stub' | 'static' | 'uplink'> = {
  '/run/systemd/resolve/stub-resolv.conf': 'stub',
  '/usr/lib/systemd/resolv.conf': 'static',
  '/lib/systemd/resolv.conf': 'static',
  '/run/systemd/resolve/resolv.conf': 'uplink',
};
const RESOLVCONF_TARGETS = ['/run/resolvconf/resolv.conf', '/etc/resolvconf/run/resolv.conf'];
const FORCE_FILE = 'if meshvm should own /etc/resolv.conf anyway, set manage: file';
const NETCONFIG_ADVICE = 'set NETCONFIG_DNS_STATIC_SERVERS in /etc/sysconfig/network/config, or set NETCONFIG_DNS_POLICY="" there and then manage: file';

/** Who owns the resolver, from the facts alone (pure). */
export function detectResolverOwner(facts: ResolverFacts): ResolverOwner {
  const rc = facts.resolvConf;
  const has = (t: Telltale) => facts.has.includes(t);
  if (rc.type === 'symlink') {
    const target = (rc.target ?? '').replace(/^\/var\/run\//, '/run/');
    const evidence = `/etc/resolv.conf is a symlink to ${rc.target}`;
    const via = RESOLVED_TARGETS[target];
    if (via) return { owner: 'systemd-resolved', via, evidence };
    if (RESOLVCONF_TARGETS.includes(target)) return { owner: 'resolvconf', evidence };
    if (target === '/run/NetworkManager/resolv.conf') return { owner: 'network-manager', evidence };
    if (target.startsWith('/run/connman/')) {
      return { owner: 'unsupported', name: 'connman', evidence, advice: `add the nameservers to connman's configuration, or ${FORCE_FILE}` };
    }
    if (target.startsWith('/run/netconfig/')) return { owner: 'unsupported', name: 'netconfig', evidence, advice: NETCONFIG_ADVICE };
    return { owner: 'unsupported', name: 'an unknown program', evidence, advice: `find what maintains ${rc.target}, or ${FORCE_FILE} (the symlink is replaced)` };
  }
  if (rc.type === 'other') {
    return { owner: 'unsupported', name: 'something meshvm does not know', evidence: '/etc/resolv.conf is neither a file nor a symlink', advice: 'move it away, then set manage: file' };
  }
  const text = rc.content ?? '';
  const servers = parseResolvConf(text).nameservers;
  if (facts.networkManager?.meshvmDropIn) return { owner: 'network-manager', evidence: "meshvm's NetworkManager drop-in is in place" };
  if (/^# Generated by NetworkManager/m.test(text)) return { owner: 'network-manager', evidence: '/etc/resolv.conf says "Generated by NetworkManager"' };
  const stubOnly = servers.length > 0 && servers.every((s) => s === '127.0.0.53' || s === '127.0.0.54');
  if (has('systemd-resolved') && (/managed by man:systemd-resolved/.test(text) || stubOnly)) {
    return { owner: 'systemd-resolved', via: 'copy', evidence: "/etc/resolv.conf is a copy of systemd-resolved's stub file (nameserver 127.0.0.53)" };
  }
  if (/^# Generated by dhcpcd/m.test(text)) {
    return { owner: 'unsupported', name: 'dhcpcd', evidence: '/etc/resolv.conf says "Generated by dhcpcd"', advice: `add "nohook resolv.conf" to /etc/dhcpcd.conf, then set manage: file` };
  }
  if (/^# Generated by resolvconf/m.test(text) || (has('openresolv') && !has('resolvconf'))) {
    return { owner: 'unsupported', name: 'openresolv', evidence: has('openresolv') ? '/etc/resolvconf.conf exists' : '/etc/resolv.conf says "Generated by resolvconf"', advice: `set name_servers= in /etc/resolvconf.conf, or set resolv_conf=/dev/null there and ${FORCE_FILE}` };
  }
  if (/autogenerated by netconfig/.test(text)) return { owner: 'unsupported', name: 'netconfig', evidence: '/etc/resolv.conf says "autogenerated by netconfig"', advice: NETCONFIG_ADVICE };
  const what = rc.type === 'missing' ? 'there is no /etc/resolv.conf' : text.startsWith(MARKER) ? 'meshvm wrote /etc/resolv.conf' : '/etc/resolv.conf is a plain file';
  if (has('dhclient')) return { owner: 'dhclient', evidence: `${what} and dhclient is installed` };
  return { owner: 'file', evidence: what };
}

export type StrategyKind = 'resolved' | 'file' | 'resolvconf' | 'network-manager';

/** How meshvm converges the owner it found (or the one the spec forces); throws with what to do when it cannot. */
export function chooseStrategy(owner: ResolverOwner, manage: ResolvConfSpec['manage'], facts: ResolverFacts): StrategyKind {
  if (manage === 'resolved' || manage === 'file') return manage;
  switch (owner.owner) {
    case 'systemd-resolved':
      return 'resolved';
    case 'resolvconf':
      return 'resolvconf';
    case 'network-manager':
      if (facts.networkManager?.dns === 'dnsmasq') {
        throw new Error(
          `NetworkManager runs its own dnsmasq for this host (dns=dnsmasq; ${owner.evidence}): put the forwarding in /etc/NetworkManager/dnsmasq.d/ instead of a second dnsmasq, or set dns=default in NetworkManager's configuration`,
        );
      }
      return 'network-manager';
    case 'dhclient':
    case 'file':
      return 'file';
    case 'unsupported':
      throw new Error(`/etc/resolv.conf is maintained by ${owner.name} (${owner.evidence}), which meshvm does not manage: ${owner.advice}`);
  }
}

/** nameserver, search and options lines of a resolv.conf (the last search/domain line wins, as in glibc). */
export function parseResolvConf(text: string): { nameservers: string[]; search: string[]; options: string[] } {
  const out = { nameservers: [] as string[], search: [] as string[], options: [] as string[] };
  for (const raw of text.split('\n')) {
    const [keyword, ...words] = raw.replace(/[#;].*$/, '').trim().split(/\s+/);
    if (keyword === 'nameserver' && words[0]) out.nameservers.push(words[0].replace(/%.*$/, ''));
    else if (keyword === 'search' || keyword === 'domain') out.search = words;
    else if (keyword === 'options') out.options.push(...words);
  }
  return out;
}

const NM_CONFIG_DIRS = ['/usr/lib/NetworkManager/conf.d', '/run/NetworkManager/conf.d', '/etc/NetworkManager/NetworkManager.conf', '/etc/NetworkManager/conf.d'];

/** Reads the facts detectResolverOwner judges. */
export async function readResolverFacts(host: HostReader, name: string): Promise<ResolverFacts> {
  const stat = await host.stat(RESOLV_CONF);
  let resolvConf: ResolverFacts['resolvConf'];
  if (!stat) resolvConf = { type: 'missing' };
  else if (stat.type === 'symlink') {
    const link = (await host.readLink(RESOLV_CONF)) ?? '';
    resolvConf = { type: 'symlink', target: path.posix.resolve('/etc', link), content: await host.readFile(RESOLV_CONF) };
  } else if (stat.type === 'file') resolvConf = { type: 'file', content: (await host.readFile(RESOLV_CONF)) ?? '' };
  else resolvConf = { type: 'other' };

  const has: Telltale[] = [];
  for (const [telltale, paths] of Object.entries(TELLTALES) as [Telltale, string[]][]) {
    for (const p of paths) {
      if (await host.stat(p)) {
        has.push(telltale);
        break;
      }
    }
  }
  if (!has.includes('dhclient')) {
    for (const dir of LEASE_DIRS) {
      if ((await host.listDir(dir))?.some((f) => /^dhclient.*\.leases$/.test(f))) {
        has.push('dhclient');
        break;
      }
    }
  }
  const facts: ResolverFacts = { resolvConf, has };
  if (has.includes('network-manager')) facts.networkManager = await readNetworkManager(host, name);
  return facts;
}

/** NetworkManager.conf(5): /usr/lib and /run conf.d first, then NetworkManager.conf, then /etc conf.d; later files win. */
async function readNetworkManager(host: HostReader, name: string): Promise<NonNullable<ResolverFacts['networkManager']>> {
  const files: string[] = [];
  for (const entry of NM_CONFIG_DIRS) {
    if (entry.endsWith('.conf')) files.push(entry);
    else files.push(...((await host.listDir(entry)) ?? []).filter((f) => f.endsWith('.conf')).sort().map((f) => `${entry}/${f}`));
  }
  const out: NonNullable<ResolverFacts['networkManager']> = { meshvmDropIn: false };
  for (const file of files) {
    const text = await host.readFile(file);
    if (text === undefined) continue;
    if (file === nmDropIn(name) && text.startsWith(MARKER)) out.meshvmDropIn = true;
    let section = '';
    for (const line of text.split('\n').map((l) => l.trim())) {
      if (/^\[.*\]$/.test(line)) section = line.slice(1, -1);
      const setting = /^([a-z-]+)\s*=\s*(.*)$/.exec(line);
      if (section !== 'main' || !setting) continue;
      if (setting[1] === 'dns') out.dns = setting[2];
      if (setting[1] === 'rc-manager') out.rcManager = setting[2];
    }
  }
  return out;
}

// ---------------------------------------------------------------- strategies

const resolvedDropIn = (name: string) => `/etc/systemd/resolved.conf.d/${name}.conf`;
const dhclientHook = (name: string) => `/etc/dhcp/dhclient-enter-hooks.d/${name}`;
const nmDropIn = (name: string) => `/etc/NetworkManager/conf.d/${name}.conf`;
const RESOLVCONF_HEAD = '/etc/resolvconf/resolv.conf.d/head';
const RESOLVCONF_BASE = '/etc/resolvconf/resolv.conf.d/base';

/** What current() found: the strategy for this host and what it can do about services. */
export interface ResolverStrategy {
  kind: StrategyKind;
  owner: ResolverOwner;
  /** dhclient is installed: the file strategy adds an enter-hook so leases do not rewrite /etc/resolv.conf. */
  dhclient: boolean;
  /** Why services cannot be restarted or reloaded on this root; undefined when they can. */
  notLive: string | undefined;
  /** Why systemctl cannot be used even on a live root; undefined when it can. */
  noSystemd: string | undefined;
}

export interface ResolvConfState {
  /** Decided by the host, never compared. */
  strategy: ResolverStrategy;
  /** Content of each file the strategy manages, by guest path; undefined when absent (or a symlink to be replaced). */
  files: Record<string, string | undefined>;
  /** The service action owed after the files changed; only ever part of changes. */
  service: string | undefined;
}

/** The files in the order they are written, and the service action that follows some of them. */
function layout(spec: ResolvConfSpec, strategy: ResolverStrategy): { paths: string[]; action?: { after: string; service: string; argv: string[]; needsSystemd: boolean } } {
  switch (strategy.kind) {
    case 'resolved':
      return { paths: [resolvedDropIn(spec.name)], action: { after: resolvedDropIn(spec.name), service: 'restart systemd-resolved', argv: ['systemctl', 'try-restart', 'systemd-resolved'], needsSystemd: true } };
    case 'network-manager':
      // NetworkManager lets go of /etc/resolv.conf before meshvm writes it
      return { paths: [nmDropIn(spec.name), RESOLV_CONF], action: { after: nmDropIn(spec.name), service: 'reload NetworkManager', argv: ['systemctl', 'try-reload-or-restart', 'NetworkManager'], needsSystemd: true } };
    case 'resolvconf':
      return { paths: [RESOLVCONF_HEAD, RESOLVCONF_BASE], action: { after: RESOLVCONF_BASE, service: 'regenerate /etc/resolv.conf', argv: ['resolvconf', '-u'], needsSystemd: false } };
    case 'file':
      // the hook first: a lease renewed between the two writes must not undo the file
      return { paths: [...(strategy.dhclient ? [dhclientHook(spec.name)] : []), RESOLV_CONF] };
  }
}

/** Refuses what the chosen strategy cannot express, saying what to do instead. */
function checkFits(spec: ResolvConfSpec, strategy: ResolverStrategy): void {
  const servers = spec.nameservers.map((n) => ({ text: n, ...parseNameserver(n)! }));
  if (strategy.kind === 'resolved') {
    if (spec.options.length) throw new Error(`options (${spec.options.join(' ')}) cannot be set through systemd-resolved, which writes its own stub file: drop them, or set manage: file`);
    const ported = servers.filter((s) => s.port !== 53);
    if (strategy.owner.owner === 'systemd-resolved' && strategy.owner.via === 'uplink' && ported.length) {
      throw new Error(
        `${strategy.owner.evidence}, so programs read the server list directly and a port cannot be given there (${ported.map((s) => s.text).join(', ')}): point /etc/resolv.conf at /run/systemd/resolve/stub-resolv.conf, or listen on port 53`,
      );
    }
    return;
  }
  const ported = servers.filter((s) => s.port !== 53);
  if (ported.length) {
    throw new Error(`resolv.conf cannot name a port, glibc always asks port 53 (${ported.map((s) => s.text).join(', ')}; ${strategy.owner.evidence}): make the server listen on port 53, or use systemd-resolved (manage: resolved)`);
  }
  if (strategy.kind !== 'resolvconf' && servers.length > 3) throw new Error(`glibc reads only the first 3 nameservers of /etc/resolv.conf; ${servers.length} are listed`);
}

function header(spec: ResolvConfSpec, why: string): string {
  return `${MARKER} (resolv_conf[${spec.name}]); edits here are overwritten on the next run.\n# ${why}\n`;
}

function resolvConfLines(spec: ResolvConfSpec, withSearch = true): string {
  const lines = spec.nameservers.map((n) => `nameserver ${parseNameserver(n)!.address}`);
  if (withSearch && spec.search.length) lines.push(`search ${spec.search.join(' ')}`);
  if (spec.options.length) lines.push(`options ${spec.options.join(' ')}`);
  return lines.join('\n') + '\n';
}

function resolvedServer(text: string): string {
  const { address, port } = parseNameserver(text)!;
  if (port === 53) return address;
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** The content each managed file should have (pure); undefined means the file should not exist. */
export function renderResolverFiles(spec: ResolvConfSpec, strategy: ResolverStrategy, currentFiles: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  switch (strategy.kind) {
    case 'resolved': {
      const domains = [...spec.routeDomains.map((d) => `~${d}`), ...spec.search];
      const body = ['[Resolve]', `DNS=${spec.nameservers.map(resolvedServer).join(' ')}`, ...(domains.length ? [`Domains=${domains.join(' ')}`] : [])];
      return { [resolvedDropIn(spec.name)]: header(spec, 'Route-only domains (~) go to these servers; without one, resolved sends .local names to mDNS.') + body.join('\n') + '\n' };
    }
    case 'file': {
      const files: Record<string, string | undefined> = {};
      if (strategy.dhclient) {
        files[dhclientHook(spec.name)] = header(spec, 'dhclient-script sources this: /etc/resolv.conf belongs to meshvm, so DHCP leases must not rewrite it.') + 'make_resolv_conf() { :; }\n';
      }
      files[RESOLV_CONF] = header(spec, strategy.dhclient ? `The dhclient hook ${dhclientHook(spec.name)} keeps DHCP leases from rewriting it.` : 'Nothing else on this host is known to rewrite it.') + resolvConfLines(spec);
      return files;
    }
    case 'network-manager':
      return {
        [nmDropIn(spec.name)]: header(spec, 'NetworkManager keeps writing /run/NetworkManager/resolv.conf (a resolv-file for dnsmasq) and leaves /etc/resolv.conf to meshvm.') + '[main]\nrc-manager=unmanaged\n',
        [RESOLV_CONF]: header(spec, 'NetworkManager is told to leave this file alone (rc-manager=unmanaged).') + resolvConfLines(spec),
      };
    case 'resolvconf': {
      // head is copied first, verbatim; a search line there would lose to the generated one, so search goes in base, which is merged
      const files: Record<string, string | undefined> = { [RESOLVCONF_HEAD]: header(spec, 'resolvconf puts these lines first in /etc/resolv.conf.') + resolvConfLines(spec, false) };
      if (spec.search.length) files[RESOLVCONF_BASE] = header(spec, 'resolvconf merges this search list with the ones it is given.') + `search ${spec.search.join(' ')}\n`;
      else if (currentFiles[RESOLVCONF_BASE]?.startsWith(MARKER)) files[RESOLVCONF_BASE] = undefined;
      return files;
    }
  }
}

/** The plan line for the service action, saying why it is skipped when it is. */
function serviceLine(strategy: ResolverStrategy, action: { service: string; argv: string[]; needsSystemd: boolean }): string {
  const skip = strategy.notLive ?? (action.needsSystemd ? strategy.noSystemd : undefined);
  if (skip) return `not going to ${action.service} (\`${action.argv.join(' ')}\`): ${skip}`;
  return `${action.service} (\`${action.argv.join(' ')}\`)`;
}

export const resolvConfType = {
  kind: 'resolv_conf',
  schema: resolvConfSpec,
  key: (spec: ResolvConfSpec) => spec.name ?? 'meshvm',

  async current(host: HostReader, spec: ResolvConfSpec): Promise<ResolvConfState> {
    const facts = await readResolverFacts(host, spec.name);
    const owner = detectResolverOwner(facts);
    const kind = chooseStrategy(owner, spec.manage, facts);
    const notLive = host.root === '/' ? undefined : `the root is ${host.root}, not the running system; the change takes effect when the service next starts`;
    const noSystemd = (await host.stat('/run/systemd/system'))?.type === 'directory' ? undefined : 'systemd is not running here (no /run/systemd/system); the change takes effect when the service next starts';
    const strategy: ResolverStrategy = { kind, owner, dhclient: facts.has.includes('dhclient'), notLive, noSystemd };
    checkFits(spec, strategy);
    const files: Record<string, string | undefined> = {};
    for (const p of layout(spec, strategy).paths) {
      const stat = await host.stat(p);
      if (stat && stat.type !== 'file' && stat.type !== 'symlink') throw new Error(`${p} is a ${stat.type}, not a file; move it away`);
      files[p] = stat?.type === 'file' ? await host.readFile(p) : undefined;
    }
    return { strategy, files, service: undefined };
  },

  changes(spec: ResolvConfSpec, current: ResolvConfState | undefined): Changes<ResolvConfState> {
    if (!current) throw new Error('the resolver was not read');
    const desired = renderResolverFiles(spec, current.strategy, current.files);
    const from: Record<string, string | undefined> = {};
    const to: Record<string, string | undefined> = {};
    for (const [p, content] of Object.entries(desired)) {
      if (current.files[p] === content) continue;
      from[p] = current.files[p];
      to[p] = content;
    }
    if (Object.keys(to).length === 0) return {};
    const changes: Changes<ResolvConfState> = { files: { from, to } };
    const { paths, action } = layout(spec, current.strategy);
    if (action && paths.slice(0, paths.indexOf(action.after) + 1).some((p) => p in to)) changes.service = { from: undefined, to: serviceLine(current.strategy, action) };
    return changes;
  },

  async apply(host: Host, spec: ResolvConfSpec, changes: Changes<ResolvConfState>, current: ResolvConfState | undefined): Promise<void> {
    const strategy = current!.strategy;
    const to = changes.files?.to ?? {};
    const { paths, action } = layout(spec, strategy);
    let owed = false;
    for (const p of paths) {
      if (p in to) {
        const content = to[p];
        if (content === undefined) await host.remove(p);
        else {
          const dir = path.posix.dirname(p);
          if (!(await host.stat(dir))) await host.mkdir(dir, { mode: 0o755 });
          await host.writeFile(p, content, { mode: 0o644, owner: 'root', group: 'root' });
        }
        owed = true;
      }
      if (action && p === action.after && owed && !strategy.notLive && !(action.needsSystemd && strategy.noSystemd)) await host.run(action.argv);
    }
  },

  describe(field: string, change: { from: unknown; to: unknown }): string | undefined {
    if (field === 'service') return String(change.to);
    if (field !== 'files') return undefined;
    const from = change.from as Record<string, string | undefined>;
    const to = change.to as Record<string, string | undefined>;
    const out: string[] = [];
    for (const [p, after] of Object.entries(to)) {
      if (after === undefined) {
        out.push(`remove ${p}`);
        continue;
      }
      const before = from[p];
      const was = before?.split('\n').filter(Boolean) ?? [];
      const now = after.split('\n').filter(Boolean);
      out.push(before === undefined ? `write ${p}` : `update ${p}`);
      for (const line of was) if (!now.includes(line)) out.push(`    - ${line}`);
      for (const line of now) if (!was.includes(line)) out.push(`    + ${line}`);
    }
    return out.join('\n');
  },
};

/** An IP address in one spelling (IPv6 compressed, lower case), so two spellings of one address compare equal. */
export function canonicalIp(address: string): string {
  return isIP(address) === 6 ? new URL(`http://[${address}]/`).hostname.slice(1, -1) : address;
}

export const ResolvConf = defineResource(resolvConfType);
