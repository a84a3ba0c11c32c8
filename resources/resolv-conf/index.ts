// ResolvConf: points the host's resolver at meshvm's nameservers the way whoever owns the resolver expects it (resolved drop-in, managed file + dhclient hook, resolvconf head, NetworkManager told to keep off); a composite of Files and the service action.
import path from 'node:path';
import { isIP } from 'node:net';
import { defineResource, type Action, type Changes, type Declaration } from '../../engine/resource.ts';
import type { Host, HostReader } from '../../engine/host.ts';
import { Directory } from '../directory.ts';
import { File } from '../file.ts';
import { chooseStrategy, detectResolverOwner, parseResolvConf, readResolverFacts } from './detect.ts';
import { canonicalIp, MARKER, parseNameserver, resolvConfSpec, type ResolvConfSpec } from './spec.ts';
import { Symlink } from '../symlink.ts';
import { checkFits, layout, renderResolverFiles, RESOLVCONF_BASE, type ResolverStrategy } from './strategies.ts';

export * from './spec.ts';
export * from './detect.ts';
export { renderResolverFiles, type ResolverStrategy } from './strategies.ts';

/** What current() read: the strategy for this host (detected once, here), and whether meshvm wrote resolvconf's base file. */
export interface ResolvConfFacts {
  strategy: ResolverStrategy;
  /** Content of the files the strategy may remove (only meshvm's own are removed). */
  files: Record<string, string | undefined>;
  /** What the upstream file should be: a link (resolved's uplink list) or the servers kept. */
  upstream?: { link: string } | { content: string };
}

const RESOLVED_UPLINKS = '/run/systemd/resolve/resolv.conf';
const UPSTREAM_HEADER = '# Upstream nameservers for dnsmasq, kept by meshvm (the resolver itself now asks dnsmasq).\n';

/** The upstream file: given servers, resolved's uplink list, the file kept from an earlier run, or /etc/resolv.conf before meshvm. */
async function readUpstream(
  host: HostReader,
  spec: ResolvConfSpec,
  strategy: ResolverStrategy,
  resolvConf: string | undefined,
): Promise<ResolvConfFacts['upstream']> {
  const upstream = spec.upstream;
  if (!upstream) return undefined;
  if (upstream.servers) return { content: UPSTREAM_HEADER + upstream.servers.map((s) => `nameserver ${s}\n`).join('') };
  if (strategy.kind === 'resolved') return { link: RESOLVED_UPLINKS };
  const kept = (await host.stat(upstream.file))?.type === 'file' ? await host.readFile(upstream.file) : undefined;
  if (kept?.startsWith(UPSTREAM_HEADER)) return { content: kept };
  const own = new Set(['127.0.0.53', '127.0.0.54', '127.0.0.1', '::1', ...spec.nameservers.map((n) => canonicalIp(parseNameserver(n)!.address))]);
  // read from a file: only what is an IP address reaches the upstream file, in one spelling
  const servers = [
    ...new Set(
      parseResolvConf(resolvConf ?? '')
        .nameservers.filter((s) => isIP(s) !== 0)
        .map(canonicalIp),
    ),
  ].filter((s) => !own.has(s));
  if (servers.length === 0)
    throw new Error(
      `no upstream nameservers: /etc/resolv.conf lists none besides local ones and ${upstream.file} keeps none; give the servers (dns.dnsmasq.upstreamServers)`,
    );
  return { content: UPSTREAM_HEADER + servers.map((s) => `nameserver ${s}\n`).join('') };
}

export const resolvConfType = {
  kind: 'resolv_conf',
  schema: resolvConfSpec,
  key: (spec: ResolvConfSpec) => spec.name ?? 'meshvm',

  async current(host: HostReader, spec: ResolvConfSpec): Promise<ResolvConfFacts> {
    const facts = await readResolverFacts(host, spec.name);
    const owner = detectResolverOwner(facts);
    const kind = chooseStrategy(owner, spec.manage, facts);
    const notLive = host.live ? undefined : `the root is ${host.root}, not the running system; the change takes effect when the service next starts`;
    const noSystemd =
      (await host.stat('/run/systemd/system'))?.type === 'directory'
        ? undefined
        : 'systemd is not running here (no /run/systemd/system); the change takes effect when the service next starts';
    const strategy: ResolverStrategy = { kind, owner, dhclient: facts.has.includes('dhclient'), notLive, noSystemd };
    checkFits(spec, strategy);
    const files: Record<string, string | undefined> = {};
    for (const p of layout(spec, strategy).paths) {
      const stat = await host.stat(p);
      if (stat && stat.type !== 'file' && stat.type !== 'symlink') throw new Error(`${p} is a ${stat.type}, not a file; move it away`);
      if (p === RESOLVCONF_BASE) files[p] = stat?.type === 'file' ? await host.readFile(p) : undefined;
    }
    return { strategy, files, upstream: await readUpstream(host, spec, strategy, facts.resolvConf.content) };
  },

  /** Its state is its files'; the strategy is decided, not compared. */
  changes: (): Changes<ResolvConfFacts> => ({}),

  /** The strategy's files in order (their directories first), the service told after the file it reads. */
  children(spec: ResolvConfSpec, facts: ResolvConfFacts | undefined): (Declaration | Action)[] {
    if (!facts) throw new Error('the resolver was not read');
    const { strategy } = facts;
    const desired = renderResolverFiles(spec, strategy, facts.files);
    const { paths, action } = layout(spec, strategy);
    const parts: (Declaration | Action)[] = [];
    // the upstream list first: the forwarder must know where other names go before the resolver sends it everything
    if (spec.upstream && facts.upstream) {
      const file = spec.upstream.file;
      parts.push(Directory({ path: path.posix.dirname(file) }));
      parts.push(
        'link' in facts.upstream
          ? Symlink({ path: file, target: facts.upstream.link })
          : File({ path: file, content: facts.upstream.content, mode: 0o644, owner: 'root', group: 'root' }),
      );
    }
    for (const p of paths) {
      if (!(p in desired)) continue;
      const content = desired[p];
      if (content === undefined) {
        if (facts.files[p]?.startsWith(MARKER)) parts.push(File({ path: p, ensure: 'absent' }));
      } else {
        const dir = path.posix.dirname(p);
        if (dir !== '/etc') parts.push(Directory({ path: dir }));
        parts.push(File({ path: p, content, mode: 0o644, owner: 'root', group: 'root' }));
      }
      if (action && p === action.after) {
        const skip = strategy.notLive ?? (action.needsSystemd ? strategy.noSystemd : undefined);
        parts.push({
          action: `${action.service} (\`${action.argv.join(' ')}\`)`,
          ...(skip && { skip }),
          run: async (host: Host) => void (await host.run(action.argv)),
        });
      }
    }
    return parts;
  },
};

export const ResolvConf = defineResource(resolvConfType);
