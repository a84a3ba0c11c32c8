// How meshvm points each kind of resolver owner at its nameservers: which files, in which order, with what content (pure).
import { isIP } from 'node:net';
import { MARKER, RESOLV_CONF, parseNameserver, type ResolvConfSpec } from './spec.ts';
import type { ResolverOwner, StrategyKind } from './detect.ts';

export const resolvedDropIn = (name: string) => `/etc/systemd/resolved.conf.d/${name}.conf`;
export const dhclientHook = (name: string) => `/etc/dhcp/dhclient-enter-hooks.d/${name}`;
export const nmDropIn = (name: string) => `/etc/NetworkManager/conf.d/${name}.conf`;
const RESOLVCONF_HEAD = '/etc/resolvconf/resolv.conf.d/head';
export const RESOLVCONF_BASE = '/etc/resolvconf/resolv.conf.d/base';

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

/** The files in the order they are written, and the service action that follows some of them. */
export function layout(
  spec: ResolvConfSpec,
  strategy: ResolverStrategy,
): { paths: string[]; action?: { after: string; service: string; argv: string[]; needsSystemd: boolean } } {
  switch (strategy.kind) {
    case 'resolved':
      return {
        paths: [resolvedDropIn(spec.name)],
        action: {
          after: resolvedDropIn(spec.name),
          service: 'restart systemd-resolved',
          argv: ['systemctl', 'try-restart', 'systemd-resolved'],
          needsSystemd: true,
        },
      };
    case 'network-manager':
      // NetworkManager lets go of /etc/resolv.conf before meshvm writes it
      return {
        paths: [nmDropIn(spec.name), RESOLV_CONF],
        action: {
          after: nmDropIn(spec.name),
          service: 'reload NetworkManager',
          argv: ['systemctl', 'try-reload-or-restart', 'NetworkManager'],
          needsSystemd: true,
        },
      };
    case 'resolvconf':
      return {
        paths: [RESOLVCONF_HEAD, RESOLVCONF_BASE],
        action: { after: RESOLVCONF_BASE, service: 'regenerate /etc/resolv.conf', argv: ['resolvconf', '-u'], needsSystemd: false },
      };
    case 'file':
      // the hook first: a lease renewed between the two writes must not undo the file
      return { paths: [...(strategy.dhclient ? [dhclientHook(spec.name)] : []), RESOLV_CONF] };
  }
}

/** Refuses what the chosen strategy cannot express, saying what to do instead. */
export function checkFits(spec: ResolvConfSpec, strategy: ResolverStrategy): void {
  const servers = spec.nameservers.map((n) => ({ text: n, ...parseNameserver(n)! }));
  if (strategy.kind === 'resolved') {
    if (spec.options.length)
      throw new Error(
        `options (${spec.options.join(' ')}) cannot be set through systemd-resolved, which writes its own stub file: drop them, or set manage: file`,
      );
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
    throw new Error(
      `resolv.conf cannot name a port, glibc always asks port 53 (${ported.map((s) => s.text).join(', ')}; ${strategy.owner.evidence}): make the server listen on port 53, or use systemd-resolved (manage: resolved)`,
    );
  }
  if (strategy.kind !== 'resolvconf' && servers.length > 3)
    throw new Error(`glibc reads only the first 3 nameservers of /etc/resolv.conf; ${servers.length} are listed`);
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
export function renderResolverFiles(
  spec: ResolvConfSpec,
  strategy: ResolverStrategy,
  currentFiles: Record<string, string | undefined> = {},
): Record<string, string | undefined> {
  switch (strategy.kind) {
    case 'resolved': {
      const domains = [...spec.routeDomains.map((d) => `~${d}`), ...spec.search];
      const body = ['[Resolve]', `DNS=${spec.nameservers.map(resolvedServer).join(' ')}`, ...(domains.length ? [`Domains=${domains.join(' ')}`] : [])];
      return {
        [resolvedDropIn(spec.name)]:
          header(spec, 'Route-only domains (~) go to these servers; without one, resolved sends .local names to mDNS.') + body.join('\n') + '\n',
      };
    }
    case 'file': {
      const files: Record<string, string | undefined> = {};
      if (strategy.dhclient) {
        files[dhclientHook(spec.name)] =
          header(spec, 'dhclient-script sources this: /etc/resolv.conf belongs to meshvm, so DHCP leases must not rewrite it.') + 'make_resolv_conf() { :; }\n';
      }
      files[RESOLV_CONF] =
        header(
          spec,
          strategy.dhclient
            ? `The dhclient hook ${dhclientHook(spec.name)} keeps DHCP leases from rewriting it.`
            : 'Nothing else on this host is known to rewrite it.',
        ) + resolvConfLines(spec);
      return files;
    }
    case 'network-manager':
      return {
        [nmDropIn(spec.name)]:
          header(spec, 'NetworkManager keeps writing /run/NetworkManager/resolv.conf (a resolv-file for dnsmasq) and leaves /etc/resolv.conf to meshvm.') +
          '[main]\nrc-manager=unmanaged\n',
        [RESOLV_CONF]: header(spec, 'NetworkManager is told to leave this file alone (rc-manager=unmanaged).') + resolvConfLines(spec),
      };
    case 'resolvconf': {
      // head is copied first, verbatim; a search line there would lose to the generated one, so search goes in base, which is merged
      const files: Record<string, string | undefined> = {
        [RESOLVCONF_HEAD]: header(spec, 'resolvconf puts these lines first in /etc/resolv.conf.') + resolvConfLines(spec, false),
      };
      if (spec.search.length)
        files[RESOLVCONF_BASE] = header(spec, 'resolvconf merges this search list with the ones it is given.') + `search ${spec.search.join(' ')}\n`;
      else if (currentFiles[RESOLVCONF_BASE]?.startsWith(MARKER)) files[RESOLVCONF_BASE] = undefined;
      return files;
    }
  }
}
