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
import { keptOriginal, ORIGINALS_DIR, originalRecord, readOriginal, renderOriginal, SHARED_PATHS, type Original } from './original.ts';

export * from './spec.ts';
export * from './detect.ts';
export { renderResolverFiles, type ResolverStrategy } from './strategies.ts';

/** What current() read: the strategy for this host (detected once, here), and whether meshvm wrote resolvconf's base file. */
export interface ResolvConfFacts {
  strategy: ResolverStrategy;
  /** Content of the files the strategy may remove (only meshvm's own are removed); with ensure absent, of every file of the strategy. */
  files: Record<string, string | undefined>;
  /** What the upstream file should be: a link (resolved's uplink list) or the servers kept. */
  upstream?: { link: string } | { content: string };
  /** Present: what the files meshvm is about to replace hold, kept (once) before they are replaced. */
  toKeep: Record<string, Original>;
  /** Absent: the originals kept, to put back; and whether the upstream file is meshvm's. */
  kept: Record<string, { original: Original; from: 'record' | 'backup' }>;
  upstreamOwn?: boolean;
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
    if (spec.ensure === 'absent') return readForUndo(host, spec, strategy);
    checkFits(spec, strategy);
    const files: Record<string, string | undefined> = {};
    const toKeep: Record<string, Original> = {};
    for (const p of layout(spec, strategy).paths) {
      const stat = await host.stat(p);
      if (stat && stat.type !== 'file' && stat.type !== 'symlink') throw new Error(`${p} is a ${stat.type}, not a file; move it away`);
      if (p === RESOLVCONF_BASE) files[p] = stat?.type === 'file' ? await host.readFile(p) : undefined;
      // a file the machine had before meshvm: kept on the first replacement, so offboarding can put it back
      if (SHARED_PATHS.has(p) && !(await host.stat(originalRecord(p)))) {
        const found = await readOriginal(host, p);
        if (found) toKeep[p] = found;
      }
    }
    return { strategy, files, toKeep, kept: {}, upstream: await readUpstream(host, spec, strategy, facts.resolvConf.content) };
  },

  /** Its state is its files'; the strategy is decided, not compared. */
  changes: (): Changes<ResolvConfFacts> => ({}),

  /** The strategy's files in order (their directories first), the service told after the file it reads. */
  children(spec: ResolvConfSpec, facts: ResolvConfFacts | undefined): (Declaration | Action)[] {
    if (!facts) throw new Error('the resolver was not read');
    if (spec.ensure === 'absent') return undoParts(spec, facts);
    const { strategy } = facts;
    const desired = renderResolverFiles(spec, strategy, facts.files);
    const { paths, action } = layout(spec, strategy);
    const parts: (Declaration | Action)[] = [];
    let keeping = false;
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
        const found = facts.toKeep[p];
        if (found) {
          if (!keeping) parts.push(Directory({ path: ORIGINALS_DIR, mode: 0o700 }));
          keeping = true;
          parts.push(File({ path: originalRecord(p), content: renderOriginal(found), mode: 0o600, owner: 'root', group: 'root', backup: false }));
        }
        parts.push(File({ path: p, content, mode: 0o644, owner: 'root', group: 'root' }));
      }
      if (action && p === action.after) parts.push(serviceAction(action, strategy));
    }
    return parts;
  },
};

/** The owner told of the change (restart resolved, reload NetworkManager, resolvconf -u), or why not here. */
function serviceAction(action: NonNullable<ReturnType<typeof layout>['action']>, strategy: ResolverStrategy): Action {
  const skip = strategy.notLive ?? (action.needsSystemd ? strategy.noSystemd : undefined);
  return {
    action: `${action.service} (\`${action.argv.join(' ')}\`)`,
    ...(skip && { skip }),
    run: async (host: Host) => void (await host.run(action.argv)),
  };
}

/** For the undo: each file of the strategy as it is, the originals kept, whether the upstream file is meshvm's. */
async function readForUndo(host: HostReader, spec: ResolvConfSpec, strategy: ResolverStrategy): Promise<ResolvConfFacts> {
  const files: Record<string, string | undefined> = {};
  const kept: ResolvConfFacts['kept'] = {};
  for (const p of layout(spec, strategy).paths) {
    files[p] = (await host.stat(p))?.type === 'file' ? await host.readFile(p) : undefined;
    if (!SHARED_PATHS.has(p)) continue;
    const found = await keptOriginal(host, p);
    if (found) kept[p] = found;
  }
  let upstreamOwn = false;
  if (spec.upstream) {
    const stat = await host.stat(spec.upstream.file);
    upstreamOwn =
      stat?.type === 'symlink'
        ? (await host.readLink(spec.upstream.file)) === RESOLVED_UPLINKS
        : stat?.type === 'file' && ((await host.readFile(spec.upstream.file)) ?? '').startsWith(UPSTREAM_HEADER);
  }
  return { strategy, files, toKeep: {}, kept, upstreamOwn };
}

/**
 * The undo, last file first: each file meshvm replaced put back as it was (where it still holds meshvm's text; one someone
 * rewrote since is theirs), its record dropped; meshvm's drop-ins and hook removed; the owner told; the upstream file removed.
 */
function undoParts(spec: ResolvConfSpec, facts: ResolvConfFacts): (Declaration | Action)[] {
  const { paths, action } = layout(spec, facts.strategy);
  const parts: (Declaration | Action)[] = [];
  for (const p of [...paths].reverse()) {
    const mine = facts.files[p]?.startsWith(MARKER) ?? false;
    const kept = facts.kept[p];
    if (!SHARED_PATHS.has(p)) {
      // meshvm's drop-in or hook, and the directory it made for it, once nothing else is in it
      if (mine) parts.push(File({ path: p, ensure: 'absent' }), Directory({ path: path.posix.dirname(p), ensure: 'absent' }));
      continue;
    }
    if (mine && kept) parts.push(restoreOriginal(p, kept.original));
    if (kept?.from === 'record') parts.push(File({ path: originalRecord(p), ensure: 'absent' }));
  }
  if (action) parts.push(serviceAction(action, facts.strategy));
  if (Object.values(facts.kept).some((k) => k.from === 'record')) parts.push(Directory({ path: ORIGINALS_DIR, ensure: 'absent' }));
  if (spec.upstream && facts.upstreamOwn) parts.push(File({ path: spec.upstream.file, ensure: 'absent' }));
  return parts;
}

function restoreOriginal(p: string, found: Original): Declaration {
  if (found.type === 'symlink') return Symlink({ path: p, target: found.target });
  if (found.type === 'missing') return File({ path: p, ensure: 'absent' });
  return File({ path: p, content: found.content, mode: found.mode, owner: found.owner, group: found.group });
}

export const ResolvConf = defineResource(resolvConfType);
